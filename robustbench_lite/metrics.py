"""Classification metrics on logits: accuracy, macro-F1, per-class accuracy, confusion, ECE, NLL.

F1 and the confusion matrix come from scikit-learn; ECE and NLL are computed here and tested
against direct computations (and scikit-learn's ``log_loss``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): sum_b |B|/n * |acc(B) - conf(B)|."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(conf.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    # Right-closed bins (lo, hi] as in Guo et al.; a confidence of exactly 0 cannot occur.
    bins = torch.bucketize(conf, edges[1:-1], right=False)
    ece = torch.zeros((), dtype=torch.float64)
    n = len(labels)
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.sum().double() / n * (correct[mask].mean() - conf[mask].mean()).abs().double()
    return float(ece)


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list[Any]]:
    """Per-bin confidence, accuracy and count for reliability diagrams."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(conf.dtype)
    edges = torch.linspace(0, 1, n_bins + 1)
    bins = torch.bucketize(conf, edges[1:-1], right=False)
    out: dict[str, list[Any]] = {"bin_upper": edges[1:].tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        mask = bins == b
        k = int(mask.sum())
        out["count"].append(k)
        out["confidence"].append(float(conf[mask].mean()) if k else None)
        out["accuracy"].append(float(correct[mask].mean()) if k else None)
    return out


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), labels))


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """All clean-suite metrics from logits (N x C) and labels (N)."""
    from sklearn.metrics import confusion_matrix, f1_score

    logits = logits.float().cpu()
    labels = labels.cpu()
    preds = logits.argmax(dim=1)
    probs = logits.double().softmax(dim=1)
    cm = confusion_matrix(labels.numpy(), preds.numpy(), labels=np.arange(num_classes))
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return {
        "accuracy": accuracy(logits, labels),
        "f1_macro": float(f1_score(labels.numpy(), preds.numpy(), labels=np.arange(num_classes),
                                   average="macro", zero_division=0)),
        "ece": expected_calibration_error(probs, labels),
        "nll": negative_log_likelihood(logits, labels),
        "per_class_accuracy": per_class.tolist(),
        "confusion_matrix": cm.tolist(),
        "reliability": reliability(probs, labels),
    }
