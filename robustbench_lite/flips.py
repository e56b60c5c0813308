"""Flip sets: the images on which two models of the same task disagree, condition by condition.

A compressed model (int8, pruned, distilled) often keeps its parent's top-1 accuracy while its
predictions change on a long tail of images (Hooker et al. 2019, "What do compressed deep neural
networks forget?", https://arxiv.org/abs/1911.05248): the accuracy delta hides them, because
images lost and images gained cancel. The flip set counts them: for every condition both runs
recorded on the same images (``--records``), the images whose predicted class changed (where the
condition records predictions: clean, corruptions, shift) or whose verdict changed (attacks:
robust or not), split into lost (right -> wrong) and gained (wrong -> right), overall and per
class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustbench_lite.records import Condition, Records


@dataclass
class FlipSet:
    """Where two runs disagree on one condition.

    Attributes:
        path: the condition (a gate path, e.g. ``corruptions.accuracy.fog.3``).
        images: images compared (the condition's, those of weight 1 if it weights its images).
        by: ``prediction`` (the predicted class changed) or ``verdict`` (right/wrong changed;
            conditions that record no class, such as attacks).
        flipped: dataset indices of the images that flipped, in image-set order.
        labels: their true classes.
        before, after: their predicted classes in the first and the second run (-1 where the
            condition records none).
        lost, gained: flips from right to wrong and from wrong to right.
    """

    path: str
    images: int
    by: str
    flipped: np.ndarray
    labels: np.ndarray
    before: np.ndarray
    after: np.ndarray
    lost: int
    gained: int
    per_class: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.flipped.shape[0])

    @property
    def rate(self) -> float:
        return self.count / self.images if self.images else float("nan")

    def to_dict(self, classes: Sequence[str] | None = None, examples: int = 20) -> dict[str, Any]:
        """Plain JSON: counts, per class (by name when ``classes`` is given), the first ``examples`` flips."""
        def name(c: int) -> str | int:
            return classes[c] if classes is not None and 0 <= c < len(classes) else int(c)

        return {
            "path": self.path, "images": self.images, "by": self.by, "flips": self.count, "rate": self.rate,
            "lost": self.lost, "gained": self.gained,
            "per_class": {str(name(c)): v for c, v in self.per_class.items()},
            "examples": [{"index": int(i), "label": name(int(y)), "before": name(int(b)) if b >= 0 else None,
                          "after": name(int(a)) if a >= 0 else None}
                         for i, y, b, a in zip(self.flipped[:examples], self.labels[:examples],
                                               self.before[:examples], self.after[:examples], strict=True)],
        }


def flip_set(first: Condition, second: Condition, first_records: Records, second_records: Records) -> FlipSet | None:
    """The flips between two recordings of one condition; None when they are not on the same images."""
    images_a = first_records.image_sets[first.images]
    images_b = second_records.image_sets[second.images]
    if not images_a.same_as(images_b):
        return None
    keep_a, keep_b = first.subset, second.subset
    if keep_a is None or keep_b is None or not np.array_equal(keep_a, keep_b):
        return None  # truly weighted (a resampled draw): no image-by-image comparison
    by = "prediction" if first.predicted is not None and second.predicted is not None else "verdict"
    if by == "prediction":
        assert first.predicted is not None and second.predicted is not None
        changed = first.predicted.astype(np.int64) != second.predicted.astype(np.int64)
    else:
        changed = first.correct != second.correct
    changed &= keep_a
    lost = changed & first.correct & ~second.correct
    gained = changed & ~first.correct & second.correct
    labels = images_a.labels
    per_class: dict[int, dict[str, int]] = {}
    for c in np.unique(labels[keep_a]):
        mine = keep_a & (labels == c)
        per_class[int(c)] = {"images": int(mine.sum()), "flips": int((changed & mine).sum()),
                             "lost": int((lost & mine).sum()), "gained": int((gained & mine).sum())}
    none = np.full(int(changed.sum()), -1, dtype=np.int64)
    return FlipSet(
        path=first.path, images=int(keep_a.sum()), by=by, flipped=images_a.indices[changed],
        labels=labels[changed],
        before=first.predicted[changed].astype(np.int64) if by == "prediction" else none,  # type: ignore[index]
        after=second.predicted[changed].astype(np.int64) if by == "prediction" else none.copy(),  # type: ignore[index]
        lost=int(lost.sum()), gained=int(gained.sum()), per_class=per_class,
    )


def flip_sets(first: Records, second: Records) -> list[FlipSet]:
    """Every condition both runs recorded on the same images, in the first run's order."""
    out = []
    for cond in first:
        if cond.path in second:
            found = flip_set(cond, second[cond.path], first, second)
            if found is not None:
                out.append(found)
    return out
