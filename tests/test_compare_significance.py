"""compare: every cell with its interval, every delta tested (McNemar, paired bootstrap, or unpaired intervals)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy.stats import binomtest

from robustbench_lite import compare, statistics
from robustbench_lite.records import Records
from robustbench_lite.suites import SUITES

N = 200


def _clean_run(correct: np.ndarray, seed: int = 0, **extra) -> dict:
    k = int(correct.sum())
    return {"model": "m", "dataset": "digits", "n_examples": len(correct), "seed": seed, "suites": ["clean"],
            "clean": {"accuracy": k / len(correct), "ci": {"accuracy": list(statistics.wilson(k, len(correct)))}},
            **extra}


def _clean_records(correct: np.ndarray, indices: np.ndarray | None = None) -> Records:
    rec = Records()
    idx = np.arange(len(correct)) if indices is None else indices
    rec.add_images("test", idx, np.zeros(len(correct), dtype=np.int64))
    rec.add("clean.accuracy", correct=correct)
    return rec


def _pair(only_first: int, only_second: int, both: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Two (N,) outcome vectors with the given discordant pairs (and ``both`` images right in both)."""
    a, b = np.zeros(N, bool), np.zeros(N, bool)
    a[:both] = b[:both] = True
    a[both:both + only_first] = True
    b[both + only_first:both + only_first + only_second] = True
    return a, b


def test_mcnemar_p_matches_scipy_and_significant_delta_is_marked():
    a, b = _pair(only_first=5, only_second=17)
    table = compare.compare([_clean_run(a), _clean_run(b)], ["a", "b"], [_clean_records(a), _clean_records(b)])
    row = next(r for r in table.rows if r.path == "clean.accuracy")
    test = row.tests[1]
    expected = binomtest(5, 22, 0.5).pvalue
    assert test.test == "mcnemar" and test.p_value == pytest.approx(expected, rel=1e-9) and expected < 0.05
    assert test.significant and test.ci[0] < row.delta(1) < test.ci[1]
    text = table.to_text()
    lo, hi = statistics.wilson(int(b.sum()), N)
    assert f"{100 * b.mean():.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (+6.0 pts)*" in text
    assert "unpaired" not in text
    # JSON and CSV carry the p-value and the test
    metric = {m["path"]: m for m in table.to_dict()["metrics"]}["clean.accuracy"]
    assert metric["tests"][0] == {"test": "mcnemar", "p_value": pytest.approx(expected), "significant": True,
                                  "ci": [pytest.approx(test.ci[0]), pytest.approx(test.ci[1])]}
    assert metric["ci"][1] == [pytest.approx(lo), pytest.approx(hi)]
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(table.to_csv()))}
    assert float(rows["clean accuracy"]["p b"]) == pytest.approx(expected)
    assert rows["clean accuracy"]["test b"] == "mcnemar" and rows["clean accuracy"]["significant b"] == "True"
    json.dumps(table.to_dict(), allow_nan=False)


def test_non_significant_delta_says_no_detectable_difference():
    a, b = _pair(only_first=9, only_second=11)
    table = compare.compare([_clean_run(a), _clean_run(b)], ["a", "b"], [_clean_records(a), _clean_records(b)])
    test = next(r for r in table.rows if r.path == "clean.accuracy").tests[1]
    assert test.p_value == pytest.approx(binomtest(9, 20, 0.5).pvalue) and not test.significant
    for text in (table.to_text(), table.to_markdown()):
        assert "(+1.0 pts) n.s." in text and "no detectable difference" in text
        assert "pts)*" not in text.replace("\\*", "*")


def _corruption_run(rec: Records, seed: int) -> dict:
    """A corruptions block as the suite writes it (values recomputed from the records)."""
    names, severities = ["gaussian_noise", "fog"], [1, 2]
    suite = SUITES.entry("corruptions")
    block = {"corruptions": names, "severities": severities, "normalised": False,
             "clean_accuracy": rec.accuracy("corruptions.clean_accuracy"),
             "accuracy": {c: {str(s): rec.accuracy(f"corruptions.accuracy.{c}.{s}") for s in severities}
                          for c in names}}
    derived = suite.derived(block, {c.path: c.accuracy for c in rec})
    block.update(mean_accuracy=derived["mean_accuracy"], mce=derived["mce"])
    block["ci"] = {"mean_accuracy": [derived["mean_accuracy"] - 0.05, derived["mean_accuracy"] + 0.05],
                   "mce": [derived["mce"] - 0.05, derived["mce"] + 0.05]}
    return {"model": "m", "dataset": "digits", "n_examples": N, "seed": seed, "suites": ["corruptions"],
            "corruptions": block}


def _corruption_records(rate: float, rng: np.random.Generator, indices: np.ndarray | None = None) -> Records:
    rec = Records()
    rec.add_images("test", np.arange(N) if indices is None else indices, np.zeros(N, dtype=np.int64))
    rec.add("corruptions.clean_accuracy", correct=rng.random(N) < 0.9)
    for c in ("gaussian_noise", "fog"):
        for s in (1, 2):
            rec.add(f"corruptions.accuracy.{c}.{s}", correct=rng.random(N) < rate)
    return rec


def test_derived_headline_gets_a_paired_bootstrap_from_one_resampler_seeded_by_the_first_run():
    rng = np.random.default_rng(0)
    ra, rb = _corruption_records(0.5, rng), _corruption_records(0.7, rng)
    runs = [_corruption_run(ra, seed=7), _corruption_run(rb, seed=3)]
    table = compare.compare(runs, ["a", "b"], [ra, rb])
    row = next(r for r in table.rows if r.path == "corruptions.mean_accuracy")
    test = row.tests[1]
    assert test.test == "paired bootstrap" and test.significant and test.p_value < 0.01
    # the same draws for both runs, from the first run's seed: the difference of the derived replicates
    suite, resampler = SUITES.entry("corruptions"), statistics.Resampler(seed=7)
    reps = [suite.derived(run["corruptions"], rec.replicates(resampler))["mean_accuracy"]
            for run, rec in zip(runs, (ra, rb), strict=True)]
    expected = statistics.paired_difference(reps[0], reps[1], row.delta(1))
    assert test.p_value == pytest.approx(expected.p_value) and test.ci == pytest.approx(expected.ci)
    mce = next(r for r in table.rows if r.path == "corruptions.mce").tests[1]
    assert mce.test == "paired bootstrap" and mce.significant
    assert "*" in table.to_text() and "unpaired" not in table.to_text()


def test_derived_headline_with_no_real_difference_is_not_significant():
    rng = np.random.default_rng(1)
    ra = _corruption_records(0.6, rng)
    rb = Records()  # the same outcomes, relabelled images: a mean equal in expectation
    rb.add_images("test", np.arange(N), np.zeros(N, dtype=np.int64))
    for c in ra:
        rb.add(c.path, correct=np.roll(c.correct, 1))
    table = compare.compare([_corruption_run(ra, 0), _corruption_run(rb, 0)], ["a", "b"], [ra, rb])
    test = next(r for r in table.rows if r.path == "corruptions.mean_accuracy").tests[1]
    assert test.test == "paired bootstrap" and not test.significant and 0.05 <= test.p_value <= 1


def test_different_images_fall_back_to_unpaired_intervals_with_the_reason():
    a, b = _pair(only_first=5, only_second=17)
    other_images = _clean_records(b, indices=np.arange(N) + N)
    table = compare.compare([_clean_run(a), _clean_run(b)], ["a", "b"], [_clean_records(a), other_images])
    test = next(r for r in table.rows if r.path == "clean.accuracy").tests[1]
    assert test.test == compare.UNPAIRED and test.p_value is None
    assert not test.significant  # the intervals of 62.5% and 68.5% on 200 images overlap
    reason = table.unpaired["b"]
    assert reason == ["the two runs scored clean.accuracy on different images"]
    text = table.to_text()
    assert "b unpaired: the two runs scored clean.accuracy on different images" in text
    assert "conservative" in text and "(+6.0 pts) n.s." in text
    assert table.to_dict()["metrics"][0]["tests"][0]["test"] == "unpaired intervals"


def test_unpaired_delta_is_significant_only_when_the_intervals_do_not_overlap():
    low, high = np.arange(N) < 100, np.arange(N) < 180  # 50% vs 90%: intervals far apart
    runs = [_clean_run(low), _clean_run(high), _clean_run(np.arange(N) < 110)]
    table = compare.compare(runs, ["a", "b", "c"], [None, None, None],
                            reasons=["a history run keeps no per-image records", "", ""])
    row = next(r for r in table.rows if r.path == "clean.accuracy")
    assert [t.test for t in row.tests[1:]] == [compare.UNPAIRED] * 2
    assert row.tests[1].significant and not row.tests[2].significant
    assert "b unpaired: the baseline a has no per-image records (a history run keeps no per-image records)" \
        in table.to_text()
    assert "(+40.0 pts)*" in table.to_text() and "(+5.0 pts) n.s." in table.to_text()


def test_missing_records_say_why_and_headlines_without_interval_stay_untested():
    a, b = _pair(only_first=5, only_second=17)
    runs = [_clean_run(a), _clean_run(b)]
    for run, latency in zip(runs, (2.0, 3.0), strict=True):
        run["suites"].append("efficiency")
        run["efficiency"] = {"latency_ms": latency}
    table = compare.compare(runs, ["a", "b"], [_clean_records(a), None],
                            reasons=["", "its results were saved without --records"])
    rows = {r.path: r for r in table.rows}
    assert rows["efficiency.latency_ms"].tests == [None, None]
    assert rows["clean.accuracy"].tests[1].test == compare.UNPAIRED
    text = table.to_text()
    assert "b unpaired: its results were saved without --records" in text
    assert "3 ms (+50%)" in text and "(+50%)*" not in text and "(+50%) n.s." not in text


def _seed_run(seed: int, accuracy: float, epochs: int = 1) -> dict:
    return {"model": "m", "dataset": "digits", "n_examples": 100, "seed": 0, "suites": ["clean"],
            "clean": {"accuracy": accuracy},
            "checkpoint": {"seed": seed, "dataset": "digits", "created": f"2024-01-0{seed + 1}",
                           "train_seconds": 10.0 + seed, "clean_accuracy": accuracy,
                           "recipe": {"name": "custom", "epochs": epochs, "lr": 0.01},
                           "defence": {"names": [], "label": "standard", "settings": {}, "selected_epoch": seed}}}


def test_seeds_of_one_recipe_get_mean_and_sd_and_other_recipes_do_not():
    runs = [_seed_run(0, 0.80), _seed_run(1, 0.90), _seed_run(2, 0.70, epochs=3), _seed_run(2, 0.85)]
    assert compare.recipe_key(runs[0]) == compare.recipe_key(runs[1]) != compare.recipe_key(runs[2])
    assert compare.recipe_key({"model": "m", "checkpoint": {}}) is None
    table = compare.compare(runs, ["s0", "s1", "other", "s2"])
    assert [(g.runs, g.seeds) for g in table.groups] == [([0, 1, 3], [0, 1, 2])]
    header, body = table.cells()
    assert header[-1] == "mean ± sd over seeds (3)"
    cells = {r[0]: r[-1] for r in body}
    assert cells["clean accuracy"] == f"85.0% ± {100 * np.std([0.8, 0.9, 0.85], ddof=1):.1f}"
    assert cells["train seed"] == "0, 1, 2"
    group = table.to_dict()["seed_groups"][0]
    assert group["runs"] == ["s0", "s1", "s2"] and group["metrics"]["clean.accuracy"]["n"] == 3
    assert group["metrics"]["clean.accuracy"]["sd"] == pytest.approx(np.std([0.8, 0.9, 0.85], ddof=1))
    assert "mean ± sd over seeds" in table.to_markdown()
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(table.to_csv()))}
    assert float(rows["clean accuracy"]["mean mean ± sd over seeds (3)"]) == pytest.approx(0.85)


def test_one_seed_per_recipe_is_no_group():
    assert compare.compare([_seed_run(0, 0.8), _seed_run(0, 0.9)], ["a", "b"]).groups == []


def test_compare_command_pairs_results_files_through_their_records(tmp_path, capsys, monkeypatch):
    from robustbench_lite import cli
    from robustbench_lite.files import sha256_file
    from robustbench_lite.results import SCHEMA_VERSION

    a, b = _pair(only_first=5, only_second=17)
    paths = []
    for name, correct, tamper in (("a", a, False), ("b", b, False), ("c", b, True)):
        npz = _clean_records(correct).save(tmp_path / f"{name}.npz")
        digest = "0" * 64 if tamper else sha256_file(npz)
        run = {**_clean_run(correct), "schema_version": SCHEMA_VERSION,
               "records": {"path": npz.name, "sha256": digest}}  # relative: found beside the JSON
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    monkeypatch.chdir(tmp_path.parent)
    table = tmp_path / "t.json"
    assert cli.main(["compare", *map(str, paths), "-o", str(table), "--no-history"]) == 0
    out = capsys.readouterr().out
    data = json.loads(table.read_text())
    tests = next(m for m in data["metrics"] if m["path"] == "clean.accuracy")["tests"]
    assert tests[0]["test"] == "mcnemar" and tests[0]["p_value"] == pytest.approx(binomtest(5, 22, 0.5).pvalue)
    assert tests[1]["test"] == "unpaired intervals" and list(data["unpaired"]) == ["c"]
    assert "changed since the run" in data["unpaired"]["c"][0]
    assert "c unpaired: the records file" in out


def test_a_corruption_mean_pairs_even_when_the_runs_worst_classes_differ():
    """Two runs (a model and its compressed child, say) whose worst class under corruptions differs: the mean
    over corruptions is on the same images and pairs; the worst class's mean is not, and says so."""
    from robustbench_lite import paired

    labels = np.arange(N) % 4
    rng = np.random.default_rng(0)

    def run(worst: int) -> tuple[dict, Records]:
        rec = Records()
        rec.add_images("test", np.arange(N), labels)
        rec.add("corruptions.clean_accuracy", correct=rng.random(N) < 0.9)
        fog = rng.random(N) < 0.7
        rec.add("corruptions.accuracy.fog.1", correct=fog)
        rec.add("corruptions.worst_class_accuracy.fog.1", correct=fog, weights=labels == worst)
        block = {"corruptions": ["fog"], "severities": [1], "mean_accuracy": float(fog.mean()),
                 "worst_class": str(worst), "worst_class_mean_accuracy": float(fog[labels == worst].mean())}
        return {"corruptions": block, "seed": 0}, rec

    (a, ra), (b, rb) = run(worst=1), run(worst=2)
    diff, why = paired.difference("corruptions.mean_accuracy", b, rb, "corruptions.mean_accuracy", a, ra,
                                  b["corruptions"]["mean_accuracy"], a["corruptions"]["mean_accuracy"])
    assert why == "" and diff is not None and diff.test == "paired bootstrap"
    assert diff.delta == pytest.approx(b["corruptions"]["mean_accuracy"] - a["corruptions"]["mean_accuracy"])
    diff, why = paired.difference("corruptions.worst_class_mean_accuracy", b, rb,
                                  "corruptions.worst_class_mean_accuracy", a, ra,
                                  b["corruptions"]["worst_class_mean_accuracy"],
                                  a["corruptions"]["worst_class_mean_accuracy"])
    assert diff is None and "worst_class_accuracy.fog.1 on different images" in why
