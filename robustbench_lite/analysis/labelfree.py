"""Accuracy and class priors of unlabelled data, estimated from the model's own outputs.

* ATC, average thresholded confidence (Garg et al. 2022): on labelled in-distribution data, find
  the threshold ``t`` of a confidence score above which the fraction of images equals the accuracy
  there; on new data, the estimated accuracy is the fraction of images scoring above ``t``. The
  score is the negative entropy of the softmax (ATC-NE, the paper's better variant).
* AC, average confidence: the mean of the largest softmax probability (the baseline; exact for a
  calibrated model).
* BBSE, black-box shift estimation (Lipton et al. 2018): under label shift, the new class priors
  ``w`` solve ``C w = mu``, with ``C[i, j] = P(prediction i | class j)`` on the reference data and
  ``mu`` the new data's prediction frequencies.

Intervals are percentile bootstraps that resample the reference images (refitting ``t``) and the new
images together, so both the threshold's and the new sample's uncertainty are in them. They bound
the accuracy of the distribution the new images come from; the realised accuracy of a small sample
scatters around that by its own binomial error as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustbench_lite.statistics import LEVEL, percentile_interval

#: Bootstrap replicates of an estimate's interval.
BOOTSTRAP = 500


def max_confidence(logits: torch.Tensor) -> torch.Tensor:
    """The largest softmax probability of each row."""
    return logits.float().softmax(1).amax(1)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Sum of p log p of each row's softmax: 0 for a certain prediction, -log(C) for a uniform one."""
    logp = logits.float().log_softmax(1)
    return (logp.exp() * logp).sum(1)


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The score threshold above which the fraction of images equals their accuracy.

    With the scores sorted, the ``k = round(accuracy * n)`` highest lie above a threshold halfway
    between the k-th highest and the next one (the extremes: below the lowest, above the highest).
    """
    n = len(scores)
    if n == 0:
        raise ValueError("ATC needs labelled reference images")
    k = int(round(float(np.mean(correct)) * n))
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if k >= n:
        return float(ordered[0] - 1.0)
    if k <= 0:
        return float(ordered[-1] + 1.0)
    return float((ordered[n - k - 1] + ordered[n - k]) / 2)


def atc_estimate(scores: np.ndarray, threshold: float) -> float:
    """Estimated accuracy: the fraction of images scoring above the threshold."""
    return float(np.mean(np.asarray(scores) > threshold)) if len(scores) else float("nan")


@dataclass(frozen=True)
class Estimate:
    """An estimated accuracy with its bootstrap interval."""

    method: str
    value: float
    interval: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "value": self.value, "ci": list(self.interval)}


def estimate_accuracy(ref_scores: np.ndarray, ref_correct: np.ndarray, new_scores: np.ndarray,
                      new_confidence: np.ndarray, *, bootstrap: int = BOOTSTRAP, seed: int = 0,
                      level: float = LEVEL) -> dict[str, Estimate]:
    """ATC-NE and average-confidence accuracy estimates of the new images, each with its interval.

    Args:
        ref_scores, ref_correct: negative entropies and correctness of the labelled reference images.
        new_scores, new_confidence: negative entropies and largest probabilities of the new images.
        bootstrap: replicates of the intervals (0: no interval, NaN ends; the monitor suite's many
            trials need the estimates alone).
    """
    ref_scores, ref_correct = np.asarray(ref_scores, np.float64), np.asarray(ref_correct, bool)
    new_scores, new_confidence = np.asarray(new_scores, np.float64), np.asarray(new_confidence, np.float64)
    rng = np.random.default_rng(seed)
    threshold = atc_threshold(ref_scores, ref_correct)
    atc, ac = np.full(bootstrap, np.nan), np.full(bootstrap, np.nan)
    n, m = len(ref_scores), len(new_scores)
    for b in range(bootstrap):
        r, s = rng.integers(0, n, n), rng.integers(0, m, m)
        atc[b] = atc_estimate(new_scores[s], atc_threshold(ref_scores[r], ref_correct[r]))
        ac[b] = float(new_confidence[s].mean())
    return {
        "atc": Estimate("atc-ne", atc_estimate(new_scores, threshold), percentile_interval(atc, level)),
        "average_confidence": Estimate("average-confidence", float(new_confidence.mean()),
                                       percentile_interval(ac, level)),
    }


def confusion_given_class(predictions: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """``C[i, j]`` = P(prediction i | class j) on labelled data (a class without images: its column uniform)."""
    counts = np.zeros((classes, classes))
    np.add.at(counts, (np.asarray(predictions), np.asarray(labels)), 1)
    totals = counts.sum(0, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1), 1.0 / classes)


def bbse_priors(confusion: np.ndarray, new_predictions: np.ndarray) -> np.ndarray:
    """Class priors of the new data by black-box shift estimation: least squares ``C w = mu``, then clipped
    at 0 and normalised to sum to 1."""
    classes = len(confusion)
    mu = np.bincount(np.asarray(new_predictions), minlength=classes)[:classes] / max(len(new_predictions), 1)
    w, *_ = np.linalg.lstsq(confusion, mu, rcond=None)
    w = np.clip(w, 0, None)
    return w / w.sum() if w.sum() > 0 else np.full(classes, 1.0 / classes)
