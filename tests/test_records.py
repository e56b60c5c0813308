"""Per-image records: exact round trip, no pickles, every recorded accuracy recomputes the JSON's."""

from __future__ import annotations

import numpy as np
import pytest

import robustbench_lite
from robustbench_lite import records, statistics
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.gates import metric_paths


def _records() -> records.Records:
    rng = np.random.default_rng(0)
    r = records.Records()
    r.add_images("test", np.arange(10, 60), rng.integers(0, 10, 50))
    r.add_images("natural/folder", np.arange(7), np.arange(7) % 3)
    labels = r.image_sets["test"].labels
    r.add("clean.accuracy", predicted=np.where(rng.random(50) < 0.8, labels, (labels + 1) % 10))
    r.add("adversarial.robust_accuracy.pgd.Linf[0.1]", correct=rng.random(50) < 0.4,
          min_eps=np.where(rng.random(50) < 0.5, np.nan, 0.1), broken_by=["apgd-ce", None] * 25)
    r.add("shift.splits.label/dirichlet.levels.alpha=1.draws.0", correct=rng.random(50) < 0.7,
          weights=rng.integers(0, 3, 50))
    r.add("shift.splits.natural/folder.levels.all", images="natural/folder", predicted=[0, 1, 2, 0, 0, 0, 0])
    return r


def test_round_trip_is_exact(tmp_path):
    r = _records()
    path = r.save(tmp_path / "r.npz")
    back = records.load(path)
    assert list(back.conditions) == list(r.conditions) and list(back.image_sets) == list(r.image_sets)
    for name, s in r.image_sets.items():
        assert np.array_equal(back.image_sets[name].indices, s.indices)
        assert np.array_equal(back.image_sets[name].labels, s.labels)
    for c in r:
        b = back[c.path]
        assert b.images == c.images and back.accuracy(c.path) == r.accuracy(c.path)
        for field in ("correct", "predicted", "weights", "min_eps", "broken_by"):
            mine, theirs = getattr(c, field), getattr(b, field)
            assert (mine is None) == (theirs is None), field
            if mine is not None:
                assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs, equal_nan=mine.dtype.kind == "f")
    assert back["shift.splits.natural/folder.levels.all"].accuracy == pytest.approx(5 / 7)
    assert list(back["adversarial.robust_accuracy.pgd.Linf[0.1]"].broken_by[:2]) == ["apgd-ce", ""]


def test_replicates_pair_conditions_and_weighted_intervals():
    r = _records()
    reps = r.replicates(statistics.Resampler(resamples=300))
    assert set(reps) == set(r.conditions) and all(v.shape == (300,) for v in reps.values())
    again = r.replicates(statistics.Resampler(resamples=300), ["clean.accuracy"])
    assert np.array_equal(again["clean.accuracy"], reps["clean.accuracy"])
    lo, hi = r["clean.accuracy"].interval()
    k, n = int(r["clean.accuracy"].correct.sum()), 50
    assert (lo, hi) == statistics.wilson(k, n)
    weighted = r["shift.splits.label/dirichlet.levels.alpha=1.draws.0"]
    wlo, whi = weighted.interval(statistics.Resampler(resamples=300))
    assert 0 <= wlo <= weighted.accuracy <= whi <= 1


def test_bad_records_are_refused(tmp_path):
    r = records.Records()
    r.add_images("test", [0, 1, 2], [1, 1, 0])
    with pytest.raises(ValueError, match="shape"):
        r.add("clean.accuracy", correct=[True, False])
    with pytest.raises(ValueError, match="declare"):
        r.add("x.y", images="elsewhere", correct=[True])
    with pytest.raises(ValueError, match="other images"):
        r.add_images("test", [0, 1, 3], [1, 1, 0])
    pickled = tmp_path / "evil.npz"
    np.savez(pickled, meta=np.array([{"format": "robust-eval records"}], dtype=object))
    with pytest.raises(RobustEvalError, match="not a readable records file"):
        records.load(pickled)
    with pytest.raises(RobustEvalError, match="does not exist"):
        records.load(tmp_path / "missing.npz")
    with pytest.raises(RobustEvalError, match=r"\.npz"):
        records.check_path(tmp_path / "r.json")


def test_every_recorded_accuracy_is_the_json_number(digits_checkpoint):
    run = robustbench_lite.evaluate(str(digits_checkpoint), "digits", suites=["clean", "corruptions"], limit=90,
                                    corruptions="fog,gaussian_noise", severities="1,3")
    data = run.to_dict()
    paths = metric_paths(data)
    rec = run.records
    # clean, per class, the worst class, corruptions' clean, 2 x 2 corruptions, the worst class under each
    assert len(rec) == 1 + 10 + 1 + 1 + 4 + 4
    for c in rec:
        assert rec.accuracy(c.path) == pytest.approx(paths[c.path], abs=1e-6), c.path  # the JSON: float32 means
    # the derived numbers are the suite's own arithmetic on the recorded accuracies
    from robustbench_lite.suites import SUITES

    point = {c.path: c.accuracy for c in rec}
    derived = SUITES.entry("corruptions").derived(data["corruptions"], point)
    for key, value in derived.items():
        assert value == pytest.approx(paths[f"corruptions.{key}"], abs=1e-6), key
    ci = data["corruptions"]["ci"]
    assert set(derived) <= set(ci) and "accuracy.fog.3" in ci and "accuracy" in data["clean"]["ci"]
    for key, (lo, hi) in ci.items():
        value = paths[f"corruptions.{key}"]
        assert lo <= value + 1e-6 and value <= hi + 1e-6, key
    assert data["statistics"]["level"] == 0.95
