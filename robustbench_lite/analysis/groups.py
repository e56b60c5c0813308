"""Class groups by training images: the frequent, medium and rare thirds of a stressed checkpoint's classes.

A checkpoint trained under data stress records its per-class training counts
(:mod:`robustbench_lite.training.stressors`); the suites report accuracy per group beside their
headlines, so a reader sees whether the rare classes lose more than the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: The class groups by training images, most first.
GROUPS = ("frequent", "medium", "rare")


def class_groups(meta: Mapping[str, Any], classes: list[str]) -> dict[str, list[str]] | None:
    """Classes in thirds by their training images (the checkpoint's stress record), most first; None without
    a record or when the classes' counts are within 10% of each other."""
    stress = meta.get("stress") if isinstance(meta, Mapping) else None
    counts = stress.get("class_counts") if isinstance(stress, Mapping) else None
    if not isinstance(counts, list) or len(counts) != len(classes) or len(classes) < 3:
        return None
    if max(counts) <= 1.1 * min(counts):  # a balanced training set (label noise, stratified subsets): no rare classes
        return None
    order = sorted(range(len(classes)), key=lambda c: (-counts[c], c))
    cuts = [round(i * len(classes) / 3) for i in range(4)]
    return {g: [classes[c] for c in order[cuts[i]:cuts[i + 1]]] for i, g in enumerate(GROUPS)}


def group_masks(meta: Mapping[str, Any], classes: list[str], labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Each class group's test images (:func:`class_groups`) as a boolean mask; None without a stress record."""
    groups = class_groups(meta, classes)
    if groups is None:
        return None
    return {g: torch.isin(labels, torch.tensor([classes.index(n) for n in names])) for g, names in groups.items()}


def group_means(correct: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy of each group's images from per-image correctness (NaN for a group without test images)."""
    return {g: float(correct[m].float().mean()) if bool(m.any()) else float("nan") for g, m in masks.items()}


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Accuracy of each class's images from per-image correctness (NaN for a class without images)."""
    labels = labels.cpu()
    total = torch.bincount(labels, minlength=classes).double()
    right = torch.bincount(labels[correct.cpu().bool()], minlength=classes).double()
    return torch.where(total > 0, right / total.clamp_min(1), torch.full_like(total, float("nan")))


def worst_class(per_class: torch.Tensor | list[float], classes: list[str]) -> tuple[float | None, str | None]:
    """(lowest per-class accuracy, its class), classes without images (NaN) left out; (None, None) without any."""
    values = [(float(a), classes[i]) for i, a in enumerate(per_class) if a == a]
    return min(values) if values else (None, None)
