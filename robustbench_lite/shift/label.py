"""Label (prior) shift: the test set resampled with Dirichlet class priors.

Lipton et al. 2018 (arXiv:1802.03916). Scored from the clean logits, so it costs no model pass.
"""

from __future__ import annotations

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.seeding import derive_seed
from robustbench_lite.shift.base import Level, ShiftEnv, ShiftSplit, SplitData, register_shift


def dirichlet_resample(labels: torch.Tensor, num_classes: int, alpha: float, seed: int, draw: int,
                       size: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """One prior-shifted resample of a labelled set, keeping sample identities.

    A class prior p ~ Dirichlet(alpha, ..., alpha) over the classes present in ``labels``; class
    counts ~ Multinomial(size, p); each class's samples drawn with replacement from that class.

    Args:
        labels: N labels.
        alpha: concentration > 0 (0.1: nearly one class; 10: close to uniform).
        seed, draw: the draw's randomness is a function of (seed, draw, alpha) only.
        size: samples per draw (default N).

    Returns:
        Sorted indices into ``labels`` (length ``size``) and the prior (``num_classes`` values).
    """
    if not alpha > 0:
        raise RobustEvalError(f"Dirichlet alpha must be > 0, got {alpha}")
    labels_np = labels.cpu().numpy()
    size = len(labels_np) if size is None else size
    present = np.unique(labels_np)
    rng = np.random.default_rng(derive_seed(seed, draw, "label/dirichlet", repr(float(alpha))))
    prior = np.zeros(num_classes)
    prior[present] = rng.dirichlet(np.full(len(present), float(alpha)))
    counts = rng.multinomial(size, prior[present] / prior[present].sum())
    picks = [rng.choice(np.flatnonzero(labels_np == c), k, replace=True)
             for c, k in zip(present, counts, strict=True) if k]
    idx = np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(idx.astype(np.int64)), prior


class LabelShift(ShiftSplit):
    name = "label/dirichlet"
    kind = "label"
    description = "test set resampled with Dirichlet class priors (alphas x draws), from the clean logits"

    def build(self, env: ShiftEnv) -> list[SplitData]:
        logits, labels = env.clean_logits(), env.dataset.labels
        levels = []
        for alpha in env.options.alphas:
            draws, priors = [], []
            for d in range(env.options.draws):
                idx, prior = dirichlet_resample(labels, env.dataset.num_classes, alpha, env.seed, d)
                draws.append(idx)
                priors.append([round(float(p), 6) for p in prior])
            levels.append(Level(f"alpha={alpha:g}", {"alpha": alpha, "draws": env.options.draws}, logits, labels,
                                draws, priors))
        return [SplitData(self.name, self.kind, env.dataset.classes, levels)]


register_shift(LabelShift())
