"""What a shift split is: its options, the run it is built against, what it returns, the registry.

A split is built against a :class:`ShiftEnv` (the test data, the options and callables that run
the model); it returns :class:`SplitData` (logits and labels per intensity) that the shift suite
scores. :class:`ShiftOptions` lives here with the registry rather than in a module of its own:
parsing checks the split names against :data:`SHIFTS`, whose entries are built against a
:class:`ShiftEnv` that carries the options, so the two are one unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from robustbench_lite.data import ImageDataset
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options, comma_list, int_in, option
from robustbench_lite.registry import Registry

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

INTENSITIES = (1, 2, 3, 4, 5)
DEFAULT_ALPHAS = (0.1, 1.0, 10.0)
DEFAULT_DRAWS = 20


# ---------------------------------------------------------------------------------------------
# Options


def _alphas(value: Any) -> tuple[float, ...]:
    return tuple(_parse_alpha(a) for a in comma_list(value, "--shift-alpha", "0.1,1,10"))


def _intensities(value: Any) -> tuple[int, ...]:
    parse = int_in("--shift-intensities", 1, len(INTENSITIES))
    return tuple(sorted({parse(v) for v in comma_list(value, "--shift-intensities", "1,3,5")}))


def _natural(value: Any) -> tuple[str, ...]:
    folders = comma_list(value, "--shift-natural", "~/data/my-shifted-set")
    for spec in folders:
        path = Path(spec.removeprefix("imagefolder:")).expanduser()
        if not path.is_dir():
            raise RobustEvalError(f"--shift-natural: {path} is not a directory; expected "
                                  f"{path}/<class>/<image files> with the model's class names")
    return folders


@dataclass(frozen=True)
class ShiftOptions(Options):
    """The shift suite's settings (CLI flags ``--shift-*``; YAML/API keys are the field names).

    Attributes:
        splits: fnmatch patterns over :data:`SHIFTS` names; a name without wildcards is "named
            explicitly": it must apply and its files must exist (otherwise it is an error, where a
            pattern's inapplicable matches are reported as skipped).
        alphas: Dirichlet concentrations for ``label/dirichlet`` (> 0; small = skewed priors).
        draws: resampled test sets per alpha.
        intensities: which of the five covariate intensities to run.
        natural: image folders (``PATH`` or ``imagefolder:PATH``) scored as ``natural/folder:NAME``.
    """

    owner: ClassVar[str] = "shift"

    splits: tuple[str, ...] = option(
        "--shift-splits", "shift splits, fnmatch patterns, e.g. 'covariate/*,label/dirichlet' (default: every "
        "split that applies to the dataset); see 'robust-eval list shifts'", default=("*",),
        parse=lambda v: comma_list(v, "--shift-splits", "'covariate/*'"), metavar="PATTERN[,PATTERN]",
        repeatable=True, example="covariate/*,label/dirichlet")
    alphas: tuple[float, ...] = option(
        "--shift-alpha", "Dirichlet concentrations for label/dirichlet, > 0 "
        f"(default: {','.join(f'{a:g}' for a in DEFAULT_ALPHAS)})", default=DEFAULT_ALPHAS, parse=_alphas,
        metavar="A[,A]", example="0.5,2")
    draws: int = option("--shift-draws", f"resampled test sets per alpha (default: {DEFAULT_DRAWS})",
                        default=DEFAULT_DRAWS, parse=int_in("--shift-draws", 1), metavar="N", example="3")
    intensities: tuple[int, ...] = option(
        "--shift-intensities", "covariate intensities to run, 1-5 (default: 1,2,3,4,5)", default=INTENSITIES,
        parse=_intensities, metavar="I[,I]", example="1,5")
    natural: tuple[str, ...] = option(
        "--shift-natural", "your own shifted test set: a folder of <class>/<images> with the model's class "
        "names; repeatable (default: none)", default=(), parse=_natural, metavar="PATH", repeatable=True,
        example="natural-set")

    def validate(self) -> None:
        select(self)  # unknown split names fail here, before any model pass


def _parse_alpha(value: Any) -> float:
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise RobustEvalError(f"--shift-alpha: '{value}' is not a number; give concentrations > 0, e.g. 0.1,1,10") \
            from None
    if not (alpha > 0 and math.isfinite(alpha)):
        raise RobustEvalError(f"--shift-alpha must be > 0 (a Dirichlet concentration), got {value}; e.g. 0.1,1,10")
    return alpha


# ---------------------------------------------------------------------------------------------
# What a split is built against, and what it returns


@dataclass
class ShiftEnv:
    """The run as a split sees it.

    Attributes:
        dataset: the in-distribution test split (already limited); its classes are the model's.
        options: the validated suite options.
        clean_logits: the model's logits on ``dataset`` (computed once per run).
        predict: ``predict(transform, desc)`` -> logits on ``dataset`` through a per-batch
            ``transform(images, indices)``.
        predict_dataset: ``predict_dataset(dataset, desc)`` -> logits on another dataset.
        seed, limit, data_dir: the run's settings (limit applies to every test set loaded here).
        cache: what a split's ``skip_reason`` loaded, for its ``build``.
    """

    dataset: ImageDataset
    options: ShiftOptions
    clean_logits: Callable[[], torch.Tensor]
    predict: Callable[[Transform, str], torch.Tensor]
    predict_dataset: Callable[[ImageDataset, str], torch.Tensor]
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The registry name of the test data without a view (``fashion-mnist:subpop-source`` -> ``fashion-mnist``)."""
        return self.dataset.name.partition(":")[0]


@dataclass
class Level:
    """One scored setting of a split: an intensity, an alpha, or the whole split.

    Attributes:
        name: ``"3"`` (intensity), ``"alpha=0.1"``, or ``""`` for a split with one setting.
        params: the setting's parameters (shown in results).
        logits, labels: N x C logits and N labels.
        draws: resampled index sets into ``logits``/``labels``, each scored on its own (label shift).
        priors: the class prior of each draw.
        indices: dataset indices of the level's own images (natural and subpopulation sets, for
            per-image records); None: the run's test images, in order.
    """

    name: str
    params: dict[str, Any]
    logits: torch.Tensor
    labels: torch.Tensor
    draws: list[torch.Tensor] | None = None
    priors: list[list[float]] | None = None
    indices: torch.Tensor | None = None


@dataclass
class SplitData:
    """A built split, ready to score.

    Attributes:
        name: key in the results (``covariate/rotation``, ``natural/folder:mydata``).
        kind: ``natural``, ``subpop``, ``covariate`` or ``label``.
        classes: class names of ``levels``' labels (coarse groups for subpopulation splits).
        levels: one or more scored settings; the split's numbers are their means.
        reference: the in-distribution level to compare with; None: the clean test split.
        reference_name: what ``reference`` is called in results.
        shifted: False for an in-distribution reference split (``subpop/source``).
        in_summary: whether the split enters mean/worst accuracy (False when its task differs
            from the model's, e.g. fine predictions mapped to coarse groups).
        notes: how the numbers were obtained, for the report.
        extra: split-specific details (per-fine-class accuracy, file paths...).
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    levels: list[Level]
    reference: Level | None = None
    reference_name: str = "clean"
    shifted: bool = True
    in_summary: bool = True
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class ShiftSplit:
    """A registered split: ``skip_reason`` says why it cannot run here, ``build`` makes its data.

    ``skip_reason`` runs for every selected split before any is built, so a bad input (missing
    files, mismatched class names) fails before the first model pass; it may raise
    :class:`RobustEvalError` for input the user gave explicitly.
    """

    name: str
    kind: str
    description: str

    def skip_reason(self, env: ShiftEnv) -> str | None:
        """Why this split does not apply to ``env`` (wrong dataset, files missing); None if it does."""
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        raise NotImplementedError


SHIFTS: Registry[ShiftSplit] = Registry("shift split", "robust-eval list shifts")


def register_shift(split: ShiftSplit) -> ShiftSplit:
    return SHIFTS.register(split.name, split)


def select(options: ShiftOptions) -> list[tuple[ShiftSplit, bool]]:
    """The splits ``options`` choose, in registry order, each with "named explicitly"."""
    chosen: dict[str, bool] = {}
    for pattern in options.splits:
        if any(ch in pattern for ch in "*?["):
            names = SHIFTS.list(pattern)
            if not names:
                raise RobustEvalError(f"no shift split matches '{pattern}'; valid: {', '.join(SHIFTS.list())}")
            for name in names:
                chosen.setdefault(name, False)
        else:
            SHIFTS.entry(pattern)  # unknown names raise with the valid ones
            chosen[pattern] = True
    if options.natural:
        chosen["natural/folder"] = True
    return [(SHIFTS.entry(name), chosen[name]) for name in SHIFTS.list() if name in chosen]

