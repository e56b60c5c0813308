"""Training: the loop (:class:`Trainer`, :func:`train`), recipes, the cached baseline, defences.

- :mod:`.loop`: :class:`Trainer` with its phases (setup, epoch, select, finish), :func:`train`,
  :func:`load_or_train_baseline`.
- :mod:`.recipes`: :class:`Recipe`, :data:`QUICK`, checkpoint paths and the baseline cache path.
- :mod:`.resume`: the resume state file and stopping between steps.
- :mod:`.defences`: the defence registry, each defence's typed parameters and flags, the pipeline.
- :mod:`.seeds`: one recipe under several seeds (``train --seeds``) and the spread of its results.
"""

from robustbench_lite import shift as _shift  # noqa: F401  (registers the <dataset>:subpop-* views --dataset takes)
from robustbench_lite.training.loop import Trainer, load_or_train_baseline, train
from robustbench_lite.training.recipes import (
    QUICK,
    Recipe,
    baseline_path,
    channel_stats,
    default_output,
    recipe_digest,
    resolve_recipe,
)
from robustbench_lite.training.resume import state_path

__all__ = [
    "QUICK", "Recipe", "Trainer", "baseline_path", "channel_stats", "default_output", "load_or_train_baseline",
    "recipe_digest", "resolve_recipe", "state_path", "train",
]
