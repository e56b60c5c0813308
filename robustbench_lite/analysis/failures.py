"""What each failure becomes: where images a condition breaks are pushed, and which classes lose most.

For one condition (a corruption at a severity, a shift split's level) and the clean predictions of
the same images:

* ``newly_wrong``: images right when clean and wrong under the condition;
* ``into``: the classes those images are now predicted as (the most frequent first);
* ``losing``: the classes whose accuracy falls most (clean minus condition, in points of accuracy);
* :func:`flow_matrix`: true class x new prediction counts of the newly wrong images, summed over
  conditions into one compact figure (a confusion shift against clean).
"""

from __future__ import annotations

from typing import Any

import torch

#: Classes listed per condition under ``into`` and ``losing``.
TOP = 3


def flow_matrix(clean_pred: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts: row = true class, column = the new prediction, of the newly wrong images."""
    newly = (clean_pred == labels) & (pred != labels)
    flat = labels[newly] * classes + pred[newly]
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def class_drop(clean_pred: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes,) each class's accuracy when clean minus its accuracy under the condition."""
    per_class = torch.bincount(labels, minlength=classes).clamp_min(1).float()
    clean_acc = torch.bincount(labels[clean_pred == labels], minlength=classes) / per_class
    return clean_acc - torch.bincount(labels[pred == labels], minlength=classes) / per_class


def top(values: torch.Tensor, names: list[str], digits: int | None = None) -> dict[str, float]:
    """The :data:`TOP` largest positive entries by name, largest first (rounded to ``digits``)."""
    order = [int(c) for c in values.argsort(descending=True, stable=True)[:TOP] if float(values[c]) > 0]
    return {names[c]: (round(float(values[c]), digits) if digits is not None else int(values[c])) for c in order}


def failure_flow(clean_pred: torch.Tensor, pred: torch.Tensor, labels: torch.Tensor,
                 classes: list[str]) -> dict[str, Any]:
    """One condition's flow (see the module docstring); class names as keys, most affected first."""
    n = len(classes)
    matrix = flow_matrix(clean_pred, pred, labels, n)
    return {"newly_wrong": int(matrix.sum()), "into": top(matrix.sum(0), classes),
            "losing": top(class_drop(clean_pred, pred, labels, n), classes, 4)}
