"""Finding wrong training labels: out-of-fold probabilities and confident learning.

- :func:`out_of_fold_probe`: every image's class probabilities from a classifier that never saw its
  label: a multinomial logistic regression (L2, L-BFGS) on frozen features, fitted K times, each
  time on the other K-1 stratified folds.
- :func:`find_label_issues`: confident learning (Northcutt, Jiang & Chuang 2021, JAIR): per-class
  thresholds (the mean self-confidence of the class), the confident joint of given and likely
  true labels, calibrated to the label counts, then, for each off-diagonal cell (given i, true j),
  the images labelled i with the largest margin p_j - p_i, as many as the cell holds
  (``prune_by_noise_rate``), or every image in an off-diagonal cell (``confident_learning``);
  images the model predicts as labelled are never flagged. The arithmetic is cleanlab 2.x's
  (``cleanlab.filter.find_label_issues``), written here without its pandas/scikit-learn
  dependencies; the tests check that both flag the same images.
- :func:`detection`: precision and recall of the flagged images against labels known to be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_lite.errors import RobustEvalError

FILTERS = ("prune_by_noise_rate", "confident_learning")
FOLDS = 5
#: L2 weight of the probe (mean cross-entropy + l2/2 * |W|^2 on standardised features).
PROBE_L2 = 1e-3
_TINY = 1e-6  # cleanlab's FLOATING_POINT_COMPARISON


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold of each image: each class shuffled (seeded) and dealt round-robin, so folds share the class mix."""
    if folds < 2:
        raise RobustEvalError(f"--folds {folds}: out-of-fold probabilities need at least 2 folds, e.g. 5")
    gen = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    dealt = 0  # the deal goes on from class to class, so fold sizes differ by at most one
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        fold[members] = (torch.arange(len(members)) + dealt) % folds
        dealt += len(members)
    return fold


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float = PROBE_L2,
                 iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising mean cross-entropy(x W + b, y) + l2/2 |W|^2 (scikit-learn's C = 1 / (n l2)).

    In ``x``'s precision: float64 converges to scikit-learn's solution; float32 (the audit) is twice
    as fast and agrees to about 1e-4 in probability.
    """
    w = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    tight = x.dtype == torch.float64
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, tolerance_grad=1e-9 if tight else 1e-6,
                            tolerance_change=1e-12 if tight else 1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def out_of_fold_probe(features: torch.Tensor, labels: torch.Tensor, classes: int, folds: int = FOLDS,
                      seed: int = 0, l2: float = PROBE_L2, iterations: int = 100,
                      fold: torch.Tensor | None = None) -> torch.Tensor:
    """(N, classes) probabilities of each image from a probe fitted on the other folds (standardised per fit).

    ``fold``: each image's fold (default: :func:`stratified_folds` of the labels).
    """
    fold = stratified_folds(labels, folds, seed) if fold is None else fold
    probs = torch.zeros(len(labels), classes)
    features = features.float()
    for k in range(folds):
        held = fold == k
        train = ~held
        mean = features[train].mean(0)
        std = features[train].std(0).clamp_min(1e-6)
        w, b = fit_logistic((features[train] - mean) / std, labels[train], classes, l2, iterations)
        probs[held] = F.softmax(((features[held] - mean) / std) @ w + b, dim=1)
    return probs


def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Integers nearest ``values`` whose sum is the rounded sum (the largest remainders move first)."""
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target = np.sum(floats).round()
    total = np.sum(ints).round()
    while abs(total - target) > _TINY:
        diff = np.round(target - total)
        step = -1 if diff < 0 else 1
        changes = min(int(abs(diff)), len(floats))
        for i in np.argsort(floats - ints)[::-step][:changes]:
            ints[i] += step
        total = np.sum(ints).round()
    return ints.astype(int)


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    return np.stack([_round_preserving_sum(row) for row in matrix]).astype(int)


@dataclass
class LabelIssues:
    """What confident learning found.

    Attributes:
        mask: (N,) bool, the images whose given label is probably wrong.
        suggested: (N,) the likely true label (the most probable class).
        score: (N,) label quality: the probability of the given label (low: suspect).
        thresholds: per-class confidence thresholds.
        joint: (C, C) calibrated confident joint, rows the given label, columns the likely true one.
    """

    mask: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    thresholds: np.ndarray
    joint: np.ndarray

    @property
    def estimated_noise_rate(self) -> float:
        """Off-diagonal mass of the calibrated joint: the estimated fraction of wrong labels."""
        total = self.joint.sum()
        return float((total - np.trace(self.joint)) / total) if total else 0.0


def find_label_issues(labels: Any, probs: Any, filter_by: str = "prune_by_noise_rate") -> LabelIssues:
    """Confident learning on given ``labels`` (N,) and out-of-fold ``probs`` (N, C); see the module docstring."""
    if filter_by not in FILTERS:
        raise RobustEvalError(f"--filter {filter_by!r} is not a filter; valid: {', '.join(FILTERS)}")
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    n, classes = probs.shape
    counts = np.bincount(labels, minlength=classes)
    thresholds = np.array([probs[labels == k, k].mean() if counts[k] else 2.0 for k in range(classes)])
    thresholds = np.clip(thresholds, 2 * _TINY, None)
    confident = probs >= thresholds - _TINY
    n_confident = confident.sum(1)
    guess = np.where(n_confident > 1, probs.argmax(1), confident.argmax(1))
    some = n_confident > 0
    joint = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(joint, (labels[some], guess[some]), 1)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    calibrated = (joint.T / np.clip(joint.sum(1), 1e-100, None) * counts).T
    calibrated = _round_rows(calibrated / np.clip(calibrated.sum(), 1e-100, None) * counts.sum())
    mask = np.zeros(n, dtype=bool)
    if filter_by == "confident_learning":
        mask[np.nonzero(some)[0][guess[some] != labels[some]]] = True
    else:
        prune = _keep_at_least_one(calibrated.T)  # prune[j, i]: images labelled i whose true class is j
        for i in range(classes):
            members = np.nonzero(labels == i)[0]
            if len(members) <= 1:
                continue
            for j in range(classes):
                if j != i and prune[j, i] > 0:
                    margin = probs[members, j] - probs[members, i]
                    mask[members[np.argsort(-margin, kind="quicksort")[:prune[j, i]]]] = True
    bumped = probs.copy()
    bumped[np.arange(n), labels] += _TINY
    mask[bumped.argmax(1) == labels] = False  # the model agrees with the given label: not an issue
    return LabelIssues(mask=mask, suggested=probs.argmax(1), score=probs[np.arange(n), labels],
                       thresholds=thresholds, joint=calibrated)


def _keep_at_least_one(prune: np.ndarray) -> np.ndarray:
    """Each class keeps at least one image: diagonal raised to 1, the rise taken evenly from the column's noise."""
    diagonal = np.diagonal(prune)
    new_diagonal = np.maximum(diagonal, 1)
    rise = new_diagonal - diagonal
    nonzero = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    out = prune - rise / nonzero
    out[out < 0] = 0
    np.fill_diagonal(out, new_diagonal)
    return out.astype(int)  # cleanlab truncates here (its rounding of the integer rows changes nothing)


def detection(mask: np.ndarray, wrong: np.ndarray, score: np.ndarray | None = None) -> dict[str, Any]:
    """Precision, recall and F1 of ``mask`` against the known-wrong labels ``wrong`` (both (N,) bool).

    With ``score`` also the precision of the ``wrong.sum()`` lowest-scored images (no threshold to choose).
    """
    flagged, injected = int(mask.sum()), int(wrong.sum())
    hit = int((mask & wrong).sum())
    precision = hit / flagged if flagged else None
    recall = hit / injected if injected else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    out: dict[str, Any] = {"flagged": flagged, "injected": injected, "true_positives": hit,
                           "precision": precision, "recall": recall, "f1": f1}
    if score is not None and injected:
        lowest = np.argsort(score, kind="stable")[:injected]
        out["precision_at_injected"] = float(wrong[lowest].mean())
    return out
