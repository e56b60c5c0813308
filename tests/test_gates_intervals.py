"""Gates that respect noise: interval paths, --gate-mode point|strict|lenient, baseline gates paired by image."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from robustbench_lite import cli, gates, statistics
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.gate_modes import GateMode
from robustbench_lite.junit import write_junit
from robustbench_lite.records import Records

scipy_stats = pytest.importorskip("scipy.stats")
N = 400


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def results_with(clean: float, ci: tuple[float, float]) -> dict:
    """A results dict: clean accuracy with its interval, a corruption cell with one, latency without."""
    return {"schema_version": 1, "model": "m", "dataset": "digits", "seed": 0,
            "suites": ["clean", "corruptions", "efficiency"],
            "clean": {"accuracy": clean, "ci": {"accuracy": list(ci)}},
            "corruptions": {"mean_accuracy": 0.7, "accuracy": {"fog": {"3": 0.6}},
                            "ci": {"mean_accuracy": [0.66, 0.74], "accuracy.fog.3": [0.55, 0.65]}},
            "efficiency": {"latency_ms": 4.0}, "timings": {"total": 1.0}}


def recorded(correct: np.ndarray, indices: np.ndarray | None = None) -> tuple[dict, Records]:
    """A run on N digits images whose clean accuracy is ``correct``: its results dict (with Wilson ci) and records."""
    rec = Records()
    idx = np.arange(N) if indices is None else indices
    rec.add_images("test", idx, np.zeros(N, dtype=np.int64))
    cond = rec.add("clean.accuracy", correct=correct)
    data = results_with(cond.accuracy, cond.interval())
    return data, rec


# ---------------------------------------------------------------------------------------------
# Paths and modes


def test_interval_ends_are_gate_paths():
    paths = gates.metric_paths(results_with(0.92, (0.88, 0.95)))
    assert paths["clean.accuracy.ci_low"] == 0.88 and paths["clean.accuracy.ci_high"] == 0.95
    assert paths["corruptions.accuracy.fog.3.ci_low"] == 0.55 and paths["corruptions.mean_accuracy.ci_high"] == 0.74
    assert not any(".ci." in p or "ci[" in p for p in paths)  # the raw pairs are not walked as ci.<key>[0]
    assert gates.interval_of(paths, "clean.accuracy") == (0.88, 0.95)
    assert gates.interval_of(paths, "efficiency.latency_ms") is None
    (o,) = gates.check([gates.parse("clean.accuracy.ci_low >= 0.9")], results_with(0.92, (0.88, 0.95)))
    assert not o.passed and o.value == 0.88  # a bound named in the gate decides in any mode


@pytest.mark.parametrize(("expr", "point", "strict", "lenient"), [
    ("clean.accuracy >= 0.9", True, False, True),   # point passes, the interval [0.88, 0.95] straddles 0.9
    ("clean.accuracy > 0.93", False, False, True),  # point fails, the interval straddles 0.93
    ("clean.accuracy <= 0.93", True, False, True),
    ("clean.accuracy < 0.9", False, False, True),
    ("clean.accuracy >= 0.85", True, True, True),   # the whole interval passes
    ("clean.accuracy <= 0.85", False, False, False),  # the whole interval fails
])
def test_modes_decide_differently_when_the_interval_straddles(expr, point, strict, lenient):
    data = results_with(0.92, (0.88, 0.95))
    got = {m: gates.check([gates.parse(expr)], data, mode=m)[0] for m in ("point", "strict", "lenient")}
    assert [got[m].passed for m in ("point", "strict", "lenient")] == [point, strict, lenient]
    assert got["point"].decided_by == "point" and got["point"].note == ""
    up = ">" in expr
    assert got["strict"].decided_by == ("ci_low" if up else "ci_high")
    assert got["lenient"].decided_by == ("ci_high" if up else "ci_low")
    assert all(o.interval == (0.88, 0.95) and o.value_text == "0.92 [0.88, 0.95]" for o in got.values())


def test_paths_without_an_interval_use_the_point_and_say_so():
    data = results_with(0.92, (0.88, 0.95))
    lat, eq = gates.check(gates.parse_all(["efficiency.latency_ms <= 5", "clean.accuracy != 0.5"]), data,
                          mode=GateMode.STRICT)
    assert lat.passed and lat.decided_by == "point" and "no interval" in lat.note and lat.interval is None
    assert eq.passed and eq.decided_by == "point" and "point value" in eq.note


def test_failure_table_and_junit_show_the_interval(tmp_path):
    outcomes = gates.check([gates.parse("clean.accuracy >= 0.9")], results_with(0.92, (0.88, 0.95)), mode="strict")
    err = gates.failure(outcomes, "m on digits")
    assert err is not None and "0.92 [0.88, 0.95]" in str(err) and "FAIL" in str(err)
    root = ET.parse(write_junit(tmp_path / "j.xml", outcomes)).getroot()
    message = root.find(".//failure").get("message")
    assert "clean.accuracy = 0.92 [0.88, 0.95]" in message and "strict mode: ci_low" in message
    block = json.loads(json.dumps(gates.gates_block(outcomes, None)))  # plain JSON, no NaN, tuples as lists
    assert block["results"][0]["interval"] == [0.88, 0.95] and block["results"][0]["mode"] == "strict"


def test_bad_mode_is_one_line_naming_the_choices(tmp_path, capsys):
    with pytest.raises(RobustEvalError, match="'loose' is not a gate mode; choose point.*strict.*lenient"):
        GateMode.parse("loose")
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(results_with(0.92, (0.88, 0.95))))
    code, _, err = run(capsys, "gate", str(saved), "--gate", "clean.accuracy >= 0.9", "--gate-mode", "loose")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "--gate-mode 'loose'" in err
    # on an evaluation it is refused before any data is read or model built
    code, _, err = run(capsys, "--checkpoint", str(tmp_path / "none.pt"), "--gate-mode", "tight")
    assert code == 2 and "--gate-mode 'tight' is not a gate mode" in err
    code, out, err = run(capsys, "gate", str(saved), "--gate", "clean.accuracy >= 0.9", "--gate-mode", "strict")
    assert code == 1 and "strict mode" in out and "0.92 [0.88, 0.95]" in err


# ---------------------------------------------------------------------------------------------
# Baseline gates: paired on the same images, or each run's own interval


def pair_of_runs(only_base: int, only_run: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and run right/wrong per image: both right on 330, then the discordant pairs, the rest wrong."""
    base, mine = np.zeros(N, bool), np.zeros(N, bool)
    base[:330] = mine[:330] = True
    base[330:330 + only_base] = True
    mine[330 + only_base:330 + only_base + only_run] = True
    return base, mine


def test_paired_baseline_gate_uses_mcnemar():
    base_correct, run_correct = pair_of_runs(only_base=14, only_run=6)  # the run is 2 points lower
    base, base_rec = recorded(base_correct)
    mine, rec = recorded(run_correct)
    gate = gates.parse("clean.accuracy >= baseline - 0.03")
    outcomes = {m: gates.check([gate], mine, base, mode=m, records=rec, baseline_records=base_rec)[0]
                for m in ("point", "strict", "lenient")}
    ref = scipy_stats.binomtest(14, 20, 0.5).pvalue  # McNemar's exact test on the discordant pairs
    want = statistics.mcnemar_difference(base_correct, run_correct)
    for o in outcomes.values():  # every mode reports the paired difference and its p-value
        assert o.test == "mcnemar" and o.p_value == pytest.approx(ref, rel=1e-9)
        assert o.difference == pytest.approx(-0.02) and o.difference_ci == pytest.approx(want.ci)
        assert "difference -2.0 pts" in o.note and f"p={ref:.2g} McNemar" in o.note
    # point: -0.02 >= -0.03 passes; the paired interval of the difference straddles -0.03
    assert want.ci[0] < -0.03 < want.ci[1]
    assert [outcomes[m].passed for m in ("point", "strict", "lenient")] == [True, False, True]
    assert outcomes["strict"].decided_by == "paired ci_low" and outcomes["lenient"].decided_by == "paired ci_high"


def test_paired_gate_on_a_derived_number_uses_the_paired_bootstrap():
    rng = np.random.default_rng(3)

    def corruption_run(flip: float) -> tuple[dict, Records]:
        rec = Records()
        rec.add_images("test", np.arange(N), np.zeros(N, dtype=np.int64))
        base = np.random.default_rng(7).random((N, 2)) < 0.7  # the same hard images for both runs
        cells = base ^ (rng.random((N, 2)) < flip)
        rec.add("corruptions.clean_accuracy", correct=np.ones(N, bool))
        acc = {}
        for j, name in enumerate(["fog", "contrast"]):
            acc[name] = {"1": rec.add(f"corruptions.accuracy.{name}.1", correct=cells[:, j]).accuracy}
        block = {"corruptions": ["fog", "contrast"], "severities": [1], "normalised": False, "clean_accuracy": 1.0,
                 "accuracy": acc, "mean_accuracy": (acc["fog"]["1"] + acc["contrast"]["1"]) / 2}
        from robustbench_lite.suites.base import suite_intervals
        from robustbench_lite.suites.corruptions import CorruptionSuite

        block["ci"] = suite_intervals(CorruptionSuite, block, rec, statistics.Resampler(seed=0))
        return {"schema_version": 1, "suites": ["corruptions"], "corruptions": block, "seed": 0}, rec

    base, base_rec = corruption_run(0.0)
    mine, rec = corruption_run(0.1)
    (o,) = gates.check([gates.parse("corruptions.mean_accuracy >= baseline - 0.01")], mine, base, mode="strict",
                       records=rec, baseline_records=base_rec)
    resampler = statistics.Resampler(seed=0)
    paths = ["corruptions.accuracy.fog.1", "corruptions.accuracy.contrast.1"]
    mean = [sum(r.replicates(resampler, paths).values()) / 2 for r in (base_rec, rec)]
    delta = mine["corruptions"]["mean_accuracy"] - base["corruptions"]["mean_accuracy"]
    want = statistics.paired_difference(mean[0], mean[1], delta)
    assert o.test == "paired bootstrap" and o.p_value == pytest.approx(want.p_value)
    assert o.difference_ci == pytest.approx(want.ci) and o.decided_by == "paired ci_low"
    assert o.passed == (want.ci[0] >= -0.01) and "paired bootstrap" in o.note


def test_unpaired_baseline_gates_say_why_and_use_each_runs_interval():
    base_correct, run_correct = pair_of_runs(only_base=14, only_run=6)
    base, base_rec = recorded(base_correct)
    mine, rec = recorded(run_correct)
    gate = gates.parse("clean.accuracy >= baseline - 0.03")
    (o,) = gates.check([gate], mine, base, mode="strict", records=rec)  # the baseline kept no records
    assert o.p_value is None and o.difference is None and o.decided_by == "ci_low"
    assert "not paired with the baseline" in o.note and "no per-image records" in o.note
    assert "each run's own interval" in o.note
    # strict: the run's low end against the baseline's high end - 0.03
    assert o.passed == (o.interval[0] >= o.baseline_interval[1] - 0.03) and o.passed is False
    (o,) = gates.check([gate], mine, base, mode="lenient", records=rec)
    assert o.passed == (o.interval[1] >= o.baseline_interval[0] - 0.03) and o.passed is True
    # records of other images: no pairing
    other, other_rec = recorded(base_correct, indices=np.arange(N) + 1000)
    (o,) = gates.check([gate], mine, other, mode="strict", records=rec, baseline_records=other_rec)
    assert o.p_value is None and "different images" in o.note
    # the point mode decides as before, and still says the comparison was not paired
    (o,) = gates.check([gate], mine, base)
    assert o.passed and o.decided_by == "point" and "not paired" in o.note


def test_python_api_and_pytest_plugin_take_the_mode():
    from dataclasses import dataclass

    from robustbench_lite.errors import GateFailure
    from robustbench_lite.outputs import Evaluation
    from robustbench_lite.pytest_plugin import check_gates
    from robustbench_lite.results import SuiteResult

    @dataclass
    class Clean(SuiteResult):
        accuracy: float

    def evaluation(correct: np.ndarray) -> Evaluation:
        data, rec = recorded(correct)
        return Evaluation(model="m", dataset="digits", n_examples=N, seed=0, config={}, environment={},
                          suites={"clean": Clean(data["clean"]["accuracy"])},
                          intervals={"clean": data["clean"]["ci"]}, records=rec)

    base_correct, run_correct = pair_of_runs(only_base=14, only_run=6)
    run, base = evaluation(run_correct), evaluation(base_correct)
    run.check("clean.accuracy >= 0.82")  # point: 0.84 passes
    with pytest.raises(GateFailure, match=r"0\.84 \[0\.8009, 0\.8727\].*strict mode, decided by ci_low"):
        run.check("clean.accuracy >= 0.82", mode="strict")
    (o,) = run.outcomes("clean.accuracy >= baseline - 0.03", baseline=base, mode="lenient")  # in-memory records
    assert o.passed and o.test == "mcnemar" and o.p_value == pytest.approx(scipy_stats.binomtest(14, 20).pvalue)
    with pytest.raises(pytest.fail.Exception, match="paired ci_low"):
        check_gates(run, "clean.accuracy >= baseline - 0.03", baseline=base, mode="strict")
    with pytest.raises(RobustEvalError, match="not a gate mode"):
        run.check("clean.accuracy >= 0.82", mode="careful")
