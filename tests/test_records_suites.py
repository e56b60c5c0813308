"""The adversarial and shift suites record every accuracy they report, image by image.

One run (clean, adversarial, shift on 120 digits) and its records: each condition recomputes the
JSON number at its path, each suite's ``derived`` recomputes its means, worst cases and ratios
from those accuracies, and every accuracy-like number has a sane interval in ``<suite>.ci``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import robustbench_lite
from robustbench_lite import data, gates, shift, statistics
from robustbench_lite.suites import SUITES
from robustbench_lite.suites.shift import level_path

LIMIT = 120
SUITES_RUN = ("clean", "adversarial", "shift")
#: Paths of numbers that are accuracies (fractions of images), drops or ratios of them.
ACCURACY_LIKE = ("accuracy", "attack_success_rate", "auc", "drop", "ratio")


@pytest.fixture(scope="module")
def run(digits_checkpoint, tmp_path_factory):
    """Two attacks at two budgets (a curve and a worst case); covariate, label, subpop and natural shift."""
    folder = tmp_path_factory.mktemp("natural") / "next-month"
    rng = np.random.default_rng(0)
    for c in ("3", "7"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(folder / c / f"{i}.png")
    h = shift.Hierarchy.from_groups("digits", tuple(str(i) for i in range(10)),
                                    {"even": (("0", "2", "4"), ("6", "8")), "odd": (("1", "3", "5"), ("7", "9"))},
                                    "test grouping")
    with pytest.MonkeyPatch.context() as mp:  # digits grouped into even / odd: subpop/target on the digits
        mp.setitem(shift.HIERARCHIES._entries, "digits", h)
        for part in ("source", "target"):
            mp.setitem(data.VIEWS._entries, f"digits:subpop-{part}", h.view(part))
        return robustbench_lite.evaluate(
            str(digits_checkpoint), "digits", suites=list(SUITES_RUN), limit=LIMIT, device="cpu",
            attack="fgsm,pgd", steps=3, eps="0.05,0.1",
            shift_splits="covariate/rotation,label/dirichlet,subpop/target", shift_intensities="2,4",
            shift_alpha="0.5,2", shift_draws=2, shift_natural=[str(folder)])


@pytest.fixture(scope="module")
def results(run):
    return run.to_dict()


def level_values(results) -> dict[str, float | None]:
    """Shift level and draw accuracies by condition path (levels are not gate paths)."""
    out = {}
    for name, split in results["shift"]["splits"].items():
        for lv in split["levels"]:
            path = level_path(name, lv["name"])
            out[path] = lv["accuracy"]
            for d in lv["draws"]:
                out[f"{path}.draws.{d['draw']}"] = d["accuracy"]
    return out


def json_numbers(results) -> dict[str, float | None]:
    """Every number of the run a condition or derived key may name: gate paths and shift levels."""
    return {**gates.metric_paths(results), **level_values(results)}


def test_every_condition_recomputes_its_json_number(run, results):
    numbers = json_numbers(results)
    conditions = [c for c in run.records if c.suite in ("adversarial", "shift")]
    assert len(conditions) > 20
    for cond in conditions:
        assert cond.path in numbers, f"{cond.path} names no number in the results"
        # the suites' clean accuracies are float32 means; the records recompute them in float64
        assert run.records.accuracy(cond.path) == pytest.approx(numbers[cond.path], abs=1e-6), cond.path
    paths = {c.path for c in conditions}
    assert {"adversarial.clean_accuracy", "adversarial.robust_accuracy.pgd.Linf[0.1]",
            "adversarial.fgsm.Linf[0.05].attack_success_rate", "adversarial.worst_case.Linf[0.1]",
            "shift.clean_accuracy", "shift.splits.covariate/rotation.levels.4",
            "shift.splits.label/dirichlet.levels.alpha=0.5.draws.1",
            "shift.splits.subpop/target.accuracy", "shift.splits.subpop/target.reference_accuracy",
            "shift.splits.natural/folder:next-month.accuracy"} <= paths


def test_image_sets_of_the_shifted_splits(run, digits_test):
    rec = run.records
    test = rec.image_sets["test"]
    assert rec["shift.splits.covariate/rotation.levels.2"].images == "test"
    draw = rec["shift.splits.label/dirichlet.levels.alpha=2.draws.0"]
    assert draw.images == "test" and draw.weights.sum() == len(test)  # a resample of the test set, same size
    # subpop/target (a fine model: the target digits of the test split) against subpop/source's images
    target, source = rec.image_sets["shift:subpop/target"], rec.image_sets["shift:subpop/source"]
    assert set(test.indices[np.isin(test.labels, [6, 7, 8, 9])]) == set(target.indices)
    assert np.array_equal(target.labels, digits_test.labels[target.indices].numpy() % 2)
    assert rec["shift.splits.subpop/target.reference_accuracy"].images == "shift:subpop/source"
    assert set(source.indices).isdisjoint(target.indices)
    assert len(rec.image_sets["shift:natural/folder:next-month"]) == 6


def test_derived_numbers_reproduce_the_json(results):
    numbers = json_numbers(results)
    for suite in SUITES_RUN:
        acc = {p: v for p, v in numbers.items() if p.startswith(suite + ".")}
        found = SUITES.entry(suite).derived(results[suite], acc)
        for key, value in found.items():
            assert numbers[f"{suite}.{key}"] == pytest.approx(float(value), abs=1e-9), f"{suite}.{key}"
        if suite == "adversarial":
            assert set(found) == {"curve.fgsm.Linf.auc", "curve.pgd.Linf.auc"}
        if suite == "shift":
            assert {"mean_accuracy", "worst_accuracy", "accuracy_ratio", "worst_ratio",
                    "splits.covariate/rotation.accuracy", "splits.covariate/rotation.drop",
                    "splits.label/dirichlet.levels.alpha=0.5", "splits.subpop/target.drop",
                    "splits.subpop/target.accuracy_ratio"} <= set(found)


def test_every_accuracy_has_a_sane_interval(results):
    numbers = json_numbers(results)
    for suite in ("adversarial", "shift"):
        ci = results[suite]["ci"]
        for key, (low, high) in ci.items():
            value = numbers[f"{suite}.{key}"]
            assert low <= value <= high, (key, low, value, high)
            if "drop" in key:
                assert -1 <= low <= high <= 1
            elif "ratio" in key:
                assert 0 <= low <= high
            else:
                assert 0 <= low <= high <= 1, key
        # every accuracy-like gate path of the block has an interval, under its own key or its alias's
        for path in gates.metric_paths(results):
            key = path.removeprefix(suite + ".")
            if not path.startswith(suite + ".") or key.startswith("ci.") or key.endswith((".ci_low", ".ci_high")):
                continue  # not this suite's, or an interval's bound
            if not any(re.search(rf"{w}(?![a-z])", key) for w in ACCURACY_LIKE):  # "ratio", not "calibration"
                continue
            if numbers.get(path) is None:
                continue  # not a number in this run (class groups of a checkpoint without a stress record)
            canonical = _canonical(results[suite], key)
            assert canonical in ci or canonical is None, f"{path} has no interval"


def _canonical(block, key: str) -> str | None:
    """The ci key of a number that repeats another (aliases, the curve's points), else ``key``."""
    for entry in block.get("results") or []:
        if key in (entry["key"], f"{entry['key']}.robust_accuracy"):
            return f"robust_accuracy.{entry['key']}"
    name, found, rest = key.removeprefix("curve.").rpartition(".robust_accuracy[")
    if key.startswith("curve.") and found:
        curve = block["curve"][name]
        eps = curve["eps"][int(rest.rstrip("]"))]
        attack, norm = name.rsplit(".", 1)
        return next(f"robust_accuracy.{e['key']}" for e in block["results"]
                    if e["attack"] == attack and e["norm"] == norm and e["eps"] == eps)
    return key


def test_intervals_are_wilson_on_the_images_they_count(run, results):
    ev_correct = run.records["adversarial.robust_accuracy.pgd.Linf[0.1]"].correct
    ci = results["adversarial"]["ci"]
    assert ci["robust_accuracy.pgd.Linf[0.1]"] == pytest.approx(statistics.wilson(int(ev_correct.sum()), LIMIT))
    # the success rate counts the attacked images only: those the attack's clean pass got right
    asr = run.records["adversarial.pgd.Linf[0.1].attack_success_rate"]
    attacked = asr.weights == 1
    assert ci["pgd.Linf[0.1].attack_success_rate"] == pytest.approx(
        statistics.wilson(int(asr.correct[attacked].sum()), int(attacked.sum())))
    assert not asr.correct[~attacked].any()


def test_worst_case_records_the_smallest_budget_and_who_needed_it(run):
    rec = run.records
    worst = rec["adversarial.worst_case.Linf[0.1]"]
    per_attack = [rec[f"adversarial.robust_accuracy.{a}.Linf[0.1]"] for a in ("fgsm", "pgd")]
    assert np.array_equal(worst.correct, per_attack[0].correct & per_attack[1].correct)
    assert np.array_equal(worst.min_eps, np.fmin(per_attack[0].min_eps, per_attack[1].min_eps), equal_nan=True)
    clean = rec["adversarial.clean_accuracy"].correct
    fooled = clean & ~worst.correct
    assert fooled.any() and set(worst.broken_by[fooled]) <= {"fgsm", "pgd"}
    assert set(worst.broken_by[~fooled]) <= {""}
    for who in ("fgsm", "pgd"):
        mine = worst.broken_by == who
        assert np.array_equal(worst.min_eps[mine], rec[f"adversarial.robust_accuracy.{who}.Linf[0.1]"].min_eps[mine])


def test_headlines_carry_intervals_that_contain_them(run, results):
    paths = gates.metric_paths(results)
    headlines = [h for s in SUITES_RUN for h in SUITES.entry(s).headline(results[s], paths)]
    assert {h.suite for h in headlines} == set(SUITES_RUN)
    for h in headlines:
        if h.unit == "fraction" and h.value is not None:
            assert h.ci is not None and h.ci[0] <= h.value <= h.ci[1], h
            assert "[" in h.text_with_interval


def test_gates_reach_the_bounds_of_robust_accuracy(run, results):
    low, high = results["adversarial"]["ci"]["robust_accuracy.pgd.Linf[0.1]"]
    assert run["adversarial.pgd.Linf[0.1].robust_accuracy.ci_low"] == low == run["adversarial.pgd.Linf[0.1].ci_low"]
    assert run["adversarial.pgd.Linf[8/80].ci_high"] == high
    [outcome] = run.outcomes(f"adversarial.pgd.Linf[0.1].ci_low <= {run['adversarial.pgd.Linf[0.1]']}")
    assert outcome.passed and outcome.value == low
