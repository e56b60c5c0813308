"""Temperature scaling (Guo et al. 2017), fitted so that no image is scored with a temperature fitted on it.

A single temperature ``T`` divides the logits; it is the value minimising the negative
log-likelihood on labelled images (:func:`fit_temperature`: a golden-section search over ``log T``,
the NLL being convex in ``1 / T``). It changes no prediction, only confidences.

Which images to fit on: a checkpoint trained by robust-eval has seen every training image, and a
temperature fitted on images the model fits too well is too low. So the clean test split is cut in
two folds (even and odd positions); each fold's images are scaled by the temperature fitted on the
other fold (cross-fitting). Every corrupted or shifted image is scaled by the temperature of its
clean image's fold. ECE and NLL before and after on clean data and under every condition then show
whether calibration that holds in distribution holds under shift (it usually does not).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_lite.metrics import expected_calibration_error

#: The search interval of the temperature, and the search's tolerance on log T.
T_MIN, T_MAX = 0.05, 20.0
TOLERANCE = 1e-5


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under ``softmax(logits / temperature)``."""
    return float(F.cross_entropy(logits.double() / temperature, labels, reduction="mean"))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in [T_MIN, T_MAX] minimising the NLL of ``labels`` (1.0 without images)."""
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.double(), labels.long()
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    while hi - lo > TOLERANCE:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def folds(n: int) -> torch.Tensor:
    """(n,) the fold (0 or 1) of each image position: even positions 0, odd 1."""
    return torch.arange(n) % 2


def cross_fit(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(temperature for fold 0, temperature for fold 1): each fitted on the other fold's images."""
    fold = folds(len(labels))
    t_for_0 = fit_temperature(logits[fold == 1], labels[fold == 1])
    t_for_1 = fit_temperature(logits[fold == 0], labels[fold == 0])
    return t_for_0, t_for_1


def scale(logits: torch.Tensor, temperatures: tuple[float, float]) -> torch.Tensor:
    """The logits of images in test-split order, each divided by its fold's temperature."""
    per_image = torch.tensor(temperatures, dtype=logits.dtype)[folds(len(logits))]
    return logits / per_image.view(-1, 1).to(logits.device)


def mean_calibration(by_condition: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-condition before/after numbers and their means over the conditions."""
    keys = ("ece_before", "ece_after", "nll_before", "nll_after")
    n = max(len(by_condition), 1)
    return {**{k: sum(c[k] for c in by_condition.values()) / n for k in keys}, "by_condition": by_condition}


def calibration_stats(block: Any, where: str) -> tuple[tuple[str, str], ...]:
    """Report rows ``ECE before -> after`` and ``NLL before -> after`` of a calibration block (none without)."""
    if not isinstance(block, dict) or "ece_before" not in block:
        return ()
    return ((f"ECE {where}, before -> after temperature scaling",
             f"{block['ece_before']:.3f} -> {block['ece_after']:.3f}"),
            (f"NLL {where}, before -> after", f"{block['nll_before']:.3f} -> {block['nll_after']:.3f}"))


def ece_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(ECE, NLL) of the logits."""
    return expected_calibration_error(logits.double().softmax(1), labels), nll(logits, labels)


def before_after(logits: torch.Tensor, labels: torch.Tensor, temperatures: tuple[float, float]) -> dict[str, Any]:
    """ECE and NLL of images in test-split order, as the model gives them and cross-fit temperature-scaled."""
    (ece0, nll0), (ece1, nll1) = ece_nll(logits, labels), ece_nll(scale(logits.double(), temperatures), labels)
    return {"ece_before": ece0, "ece_after": ece1, "nll_before": nll0, "nll_after": nll1}
