"""Flip sets: which images two runs disagree on, counted from their records."""

from __future__ import annotations

import numpy as np

from robustbench_lite.flips import flip_set, flip_sets
from robustbench_lite.records import Records

LABELS = [0, 1, 2, 3, 0, 2]


def runs(first_pred, second_pred, *, indices=(10, 11, 12, 13, 14, 15), weights=None):
    out = []
    for pred in (first_pred, second_pred):
        r = Records()
        r.add_images("test", list(indices), LABELS)
        r.add("clean.accuracy", predicted=pred, weights=weights)
        r.add("adversarial.robust_accuracy.pgd.Linf[0.1]", correct=np.asarray(pred) == np.asarray(LABELS))
        out.append(r)
    return out


def test_flips_split_into_lost_gained_and_changed_mistakes():
    # image 11 and 13 go right -> wrong, 14 wrong -> right, 15 wrong -> another wrong class; 10, 12 stay.
    a, b = runs([0, 1, 2, 3, 1, 0], [0, 2, 2, 0, 0, 1])
    flips = {f.path: f for f in flip_sets(a, b)}
    clean = flips["clean.accuracy"]
    assert clean.by == "prediction" and clean.flipped.tolist() == [11, 13, 14, 15]
    assert (clean.lost, clean.gained, clean.count, clean.images) == (2, 1, 4, 6)
    assert clean.before.tolist() == [1, 3, 1, 0] and clean.after.tolist() == [2, 0, 0, 1]
    assert clean.per_class[0] == {"images": 2, "flips": 1, "lost": 0, "gained": 1}
    assert clean.per_class[2] == {"images": 2, "flips": 1, "lost": 0, "gained": 0}
    # An attack condition records verdicts only: a wrong class changing to another wrong one is no flip.
    attack = flips["adversarial.robust_accuracy.pgd.Linf[0.1]"]
    assert attack.by == "verdict" and attack.flipped.tolist() == [11, 13, 14] and attack.before.tolist() == [-1] * 3
    d = clean.to_dict(classes=["a", "b", "c", "d"])
    assert d["flips"] == 4 and d["per_class"]["a"]["gained"] == 1
    assert d["examples"][0] == {"index": 11, "label": "b", "before": "b", "after": "c"}


def test_no_flip_set_across_different_images_or_resampled_weights():
    a, _ = runs([0, 1, 2, 3, 1, 0], [0, 1, 2, 3, 1, 0])
    _, other = runs([0, 1, 2, 3, 1, 0], [0, 1, 2, 3, 1, 0], indices=(20, 21, 22, 23, 24, 25))
    assert flip_sets(a, other) == []
    w1, w2 = runs([0, 1, 2, 3, 1, 0], [0, 2, 2, 3, 1, 0], weights=[2, 0, 1, 1, 1, 1])
    assert flip_set(w1["clean.accuracy"], w2["clean.accuracy"], w1, w2) is None
    # 0/1 weights pick a subset: flips are counted on it only.
    s1, s2 = runs([0, 1, 2, 3, 1, 0], [1, 2, 2, 3, 1, 0], weights=[0, 1, 1, 1, 1, 1])
    sub = flip_set(s1["clean.accuracy"], s2["clean.accuracy"], s1, s2)
    assert sub is not None and sub.flipped.tolist() == [11] and sub.images == 5
