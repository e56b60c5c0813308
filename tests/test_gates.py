"""Gates: the expression parser, paths over every suite's JSON shape, baselines, JUnit, and the CLI exit codes."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET

import pytest

from robustbench_lite import cli, gates
from robustbench_lite.errors import GateFailure, RobustEvalError
from robustbench_lite.junit import write_junit
from robustbench_lite.results import EvaluationResult
from robustbench_lite.suites import full_suites
from robustbench_lite.suites.adversarial import AdversarialResult, AttackResult, RobustnessCurve, result_key


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def adversarial_block() -> dict:
    """The adversarial suite's own dataclasses, so the paths follow its real JSON shape."""
    entries = [AttackResult(key=result_key(a, "Linf", e), attack=a, norm="Linf", eps=e, steps=s, alpha=None, restarts=1,
                            robust_accuracy=acc, attack_success_rate=0.5, mean_perturbation=e)
               for a, s, e, acc in [("fgsm", 1, 0.1, 0.6), ("pgd", 10, 8 / 255, 0.5), ("pgd", 10, 0.1, 0.3)]]
    return AdversarialResult(
        clean_accuracy=0.9, n_examples=100, results=entries,
        robust_accuracy={r.key: r.robust_accuracy for r in entries},
        worst_case={"Linf[0.1]": 0.25}, curve={"pgd.Linf": RobustnessCurve([8 / 255, 0.1], [0.5, 0.3], 0.55, {})},
    ).to_dict()


@pytest.fixture
def results() -> dict:
    data = EvaluationResult(model="m", dataset="digits", n_examples=100, seed=0, config={}, environment={}).to_dict()
    data["suites"] = ["clean", "adversarial", "corruptions", "efficiency"]
    data["clean"] = {"accuracy": 0.9, "ece": float("nan"), "per_class_accuracy": [1.0, 0.8],
                     "confusion_matrix": [[1, 0], [0, 1]], "reliability": {"count": [1, 2]}}
    data["adversarial"] = adversarial_block()
    data["corruptions"] = {"mean_accuracy": 0.7, "accuracy": {"fog": {"3": 0.5}}, "normalised": False}
    data["efficiency"] = {"latency_ms": 4.0, "params": 350000, "device": "cpu"}
    data["timings"] = {"total": 12.0}
    return data


@pytest.mark.parametrize("expr, path, op, number", [
    ("clean.accuracy >= 0.88", "clean.accuracy", ">=", 0.88),
    ("corruptions.mean_accuracy>=70%", "corruptions.mean_accuracy", ">=", 0.7),
    ("  efficiency.latency_ms <= 5  ", "efficiency.latency_ms", "<=", 5.0),
    ("adversarial.pgd.Linf[8/255].robust_accuracy > 1e-1", "adversarial.pgd.Linf[0.0313725].robust_accuracy", ">", 0.1),
    ("clean.per_class_accuracy[1] != 0", "clean.per_class_accuracy[1]", "!=", 0.0),
    ("timings.total < 60", "timings.total", "<", 60.0),
    ("shift.splits.label/dirichlet.levels.alpha=0.1.accuracy>=0.5",  # a level's name holds '='
     "shift.splits.label/dirichlet.levels.alpha=0.1.accuracy", ">=", 0.5),
])
def test_parse_numbers(expr, path, op, number):
    g = gates.parse(expr)
    assert (g.path, g.op, g.number, g.uses_baseline) == (path, op, number, False)


@pytest.mark.parametrize("expr, base_path, adjust_op, adjust, threshold", [
    ("corruptions.mean_accuracy >= baseline - 0.02", "corruptions.mean_accuracy", "-", 0.02, 0.68),
    ("corruptions.mean_accuracy >= baseline", "corruptions.mean_accuracy", None, 0.0, 0.7),
    ("efficiency.latency_ms <= baseline * 1.1", "efficiency.latency_ms", "*", 1.1, 0.77),
    ("clean.accuracy >= baseline.corruptions.mean_accuracy + 2%", "corruptions.mean_accuracy", "+", 0.02, 0.72),
])
def test_parse_baseline(expr, base_path, adjust_op, adjust, threshold):
    g = gates.parse(expr)
    assert (g.baseline_path, g.adjust_op, g.adjust) == (base_path, adjust_op, adjust)
    assert g.threshold(0.7) == pytest.approx(threshold)


@pytest.mark.parametrize("expr", [
    "", "clean.accuracy", "clean.accuracy >= ", "clean.accuracy => 0.9", "clean accuracy >= 0.9", ">= 0.9",
    "clean.accuracy >= high", "clean.accuracy >= baseline + x", "__import__('os').system('x') >= 1",
    "clean.accuracy >= 1/0", "clean.accuracy >= 0.9; rm -rf /", "clean.accuracy=0.9", "clean.accuracy = 0.9",
])
def test_malformed_expressions_name_the_syntax(expr):
    with pytest.raises(RobustEvalError, match="malformed gate.*PATH OP NUMBER"):
        gates.parse(expr)


def test_paths_cover_every_suite_shape(results):
    paths = gates.metric_paths(results)
    for p in ["clean.accuracy", "clean.per_class_accuracy[1]", "corruptions.mean_accuracy",
              "corruptions.accuracy.fog.3", "efficiency.latency_ms", "efficiency.params", "timings.total",
              "adversarial.pgd.Linf[0.1].robust_accuracy", "adversarial.pgd.Linf[0.1]",
              "adversarial.pgd.Linf[0.0313725].attack_success_rate", "adversarial.worst_case.Linf[0.1]",
              "adversarial.curve.pgd.Linf.auc", "adversarial.robust_accuracy.fgsm.Linf[0.1]"]:
        assert p in paths, p
    assert paths["clean.ece"] is None  # NaN: present but undefined
    assert not any("reliability" in p or "confusion" in p or "device" in p for p in paths)


def test_check_values_thresholds_and_case(results):
    exprs = ["clean.accuracy >= 0.88", "adversarial.pgd.linf[8/255].robust_accuracy >= 0.6",
             "efficiency.latency_ms <= 5", "adversarial.worst_case.Linf[0.1] >= 25%"]
    outcomes = gates.check(gates.parse_all(exprs), results)
    assert [o.passed for o in outcomes] == [True, False, True, True]
    assert outcomes[1].path == "adversarial.pgd.Linf[0.0313725].robust_accuracy"  # case folded to the real key
    assert outcomes[1].value == 0.5 and outcomes[1].margin == pytest.approx(-0.1)
    assert "FAIL" in gates.table(outcomes)


def test_undefined_metric_fails_with_reason(results):
    (o,) = gates.check([gates.parse("clean.ece <= 0.1")], results)
    assert not o.passed and o.value is None and "undefined" in o.reason


def test_unknown_path_lists_valid_paths_and_suggests(results):
    with pytest.raises(RobustEvalError) as exc:
        gates.check([gates.parse("clean.acuracy >= 0.9")], results)
    msg = str(exc.value)
    assert "'clean.acuracy' is not a number" in msg and "Did you mean clean.accuracy" in msg
    assert "Valid paths:" in msg and "adversarial.pgd.Linf[0.1].robust_accuracy" in msg


def test_baseline_gates(results):
    base = json.loads(json.dumps(results))
    base["corruptions"]["mean_accuracy"] = 0.71
    ok = gates.check(gates.parse_all(["corruptions.mean_accuracy >= baseline - 0.02"]), results, base)
    bad = gates.check(gates.parse_all(["corruptions.mean_accuracy >= baseline"]), results, base)
    assert ok[0].passed and ok[0].baseline_value == 0.71 and ok[0].threshold == pytest.approx(0.69)
    assert not bad[0].passed
    with pytest.raises(RobustEvalError, match="none was given"):
        gates.check(gates.parse_all(["clean.accuracy >= baseline"]), results, None)
    with pytest.raises(RobustEvalError, match="baseline"):
        gates.check(gates.parse_all(["clean.accuracy >= baseline.shift.mean_accuracy"]), results, base)


def test_validate_suites_before_a_run():
    with pytest.raises(RobustEvalError, match="add --suite shift"):
        gates.validate_suites(gates.parse_all(["shift.mean_accuracy >= 0.5"]), ["clean"])
    gates.validate_suites(gates.parse_all(["timings.total < 9", "clean.accuracy > 0"]), ["clean"])


def test_failure_and_junit(results, tmp_path):
    outcomes = gates.check(gates.parse_all(["clean.accuracy >= 0.95", "efficiency.latency_ms <= 5"]), results)
    err = gates.failure(outcomes, "m on digits")
    assert isinstance(err, GateFailure) and "1 of 2 gate(s) failed" in str(err) and "clean.accuracy >= 0.95" in str(err)
    assert "latency" not in str(err)  # only the failed gates are listed
    path = write_junit(tmp_path / "j.xml", outcomes, properties={"model": "m"})
    root = ET.parse(path).getroot()
    assert root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["clean.accuracy >= 0.95", "efficiency.latency_ms <= 5"]
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_headline_and_gate_block(results):
    heads = {h.path: h for h in gates.headline(results)}
    assert heads["adversarial.worst_case.Linf[0.1]"].value == 0.25  # all attacks at the largest budget
    assert heads["efficiency.latency_ms"].text == "4 ms" and heads["clean.accuracy"].text == "90.0%"
    suites = [h.suite for h in gates.headline(results)]  # suite by suite, in the order of --suite full
    assert suites == sorted(suites, key=full_suites().index) and len(set(suites)) >= 3
    block = gates.gates_block(gates.check(gates.parse_all(["clean.accuracy > 0.5"]), results), "run:3")
    assert block["passed"] and block["baseline"] == "run:3" and block["results"][0]["margin"] == pytest.approx(0.4)
    assert not math.isnan(json.loads(json.dumps(block))["results"][0]["value"])


# ---------------------------------------------------------------------------------------------
# CLI: exit 0 / 1 / 2, results and report written before a failure


def eval_args(checkpoint, tmp_path, name="r"):
    return ["--checkpoint", str(checkpoint), "--suite", "clean", "--limit", "40", "--no-progress",
            "--json", str(tmp_path / f"{name}.json")]


def test_cli_gates_pass_and_fail(digits_checkpoint, tmp_path, capsys):
    code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path, "ok"), "--gate", "clean.accuracy >= 0.1",
                         "--gate", "timings.total < 100000", "--junit", str(tmp_path / "ok.xml"))
    assert code == 0, err
    assert "gates: 2 of 2 passed" in out
    data = json.loads((tmp_path / "ok.json").read_text())
    assert data["gates"]["passed"] and data["gates"]["total"] == 2
    assert ET.parse(tmp_path / "ok.xml").getroot().get("failures") == "0"

    html = tmp_path / "fail.html"
    code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path, "fail"), "--gate", "clean.accuracy >= 0.999",
                         "--gate", "clean.accuracy >= 0.1", "--html", str(html), "--examples", "0",
                         "--junit", str(tmp_path / "fail.xml"))
    assert code == 1
    assert "1 of 2 gate(s) failed" in err and "clean.accuracy >= 0.999" in err and "FAIL" in err
    assert "Traceback" not in err
    data = json.loads((tmp_path / "fail.json").read_text())  # written despite the failure
    assert data["gates"]["failed"] == 1 and [g["passed"] for g in data["gates"]["results"]] == [False, True]
    assert html.is_file() and "1 of 2 gates failed" in html.read_text()
    assert ET.parse(tmp_path / "fail.xml").getroot().get("failures") == "1"

    # The same gates on the saved results, without evaluating again; relative to a baseline file.
    code, out, err = run(capsys, "gate", str(tmp_path / "fail.json"), "--gate", "clean.accuracy >= baseline - 0.01",
                         "--baseline", str(tmp_path / "ok.json"))
    assert code == 0, err
    code, out, err = run(capsys, "gate", str(tmp_path / "fail.json"), "--gate", "clean.accuracy > baseline",
                         "--baseline", str(tmp_path / "ok.json"))
    assert code == 1 and "clean.accuracy > baseline" in err


def test_cli_gate_errors_exit_2(digits_checkpoint, tmp_path, capsys):
    # Malformed, a suite that does not run, a missing baseline: refused before any evaluation.
    for gate, needle in [("clean.accuracy >> 0.9", "malformed gate"), ("shift.mean_accuracy >= 0.5", "--suite shift"),
                         ("clean.accuracy >= baseline", "none was given")]:
        code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path), "--gate", gate)
        assert code == 2 and needle in err and "Traceback" not in err, (gate, err)
        assert not (tmp_path / "r.json").exists()
    code, _, err = run(capsys, *eval_args(digits_checkpoint, tmp_path), "--baseline", str(tmp_path / "none.json"),
                       "--gate", "clean.accuracy >= baseline")
    assert code == 2 and "does not exist" in err
    # A metric the suite never writes (a typo, an attack that does not run): refused before the work, with the fix.
    for gate, needle in [("clean.acuracy >= 0.5", "Did you mean clean.accuracy"),
                         ("clean >= 0.5", "'clean' is not a number"),
                         ("clean.Acuracy >= 0.5", "Valid: clean.accuracy")]:
        code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path), "--gate", gate)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (gate, err)
        assert not (tmp_path / "r.json").exists()
    code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path), "--suite", "clean,adversarial",
                         "--attack", "fgsm", "--gate", "adversarial.pgd.Linf[0.1] >= 0.1")
    assert code == 2 and "'adversarial.pgd' is not a number" in err and "adversarial.fgsm" in err
    assert not (tmp_path / "r.json").exists()
    # A key deeper down (a class index) is only known after the run: the results are kept, then exit 2 with the
    # valid paths.
    code, out, err = run(capsys, *eval_args(digits_checkpoint, tmp_path),
                         "--gate", "clean.per_class_accuracy[99] >= 0.5")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("robust-eval: error: gate 'clean.per_class_accuracy[99] >= 0.5'")
    assert "Valid paths: clean.accuracy" in last
    assert (tmp_path / "r.json").is_file()
    code, out, err = run(capsys, "gate", str(tmp_path / "r.json"))
    assert code == 2 and "no gate given" in err


def test_gate_roots_cover_every_path_a_real_run_writes(digits_checkpoint):
    """What is refused before a run is exactly what a run never writes: every gateable number of a real run
    of every suite starts with a key its suite declares (or the check would refuse a good gate)."""
    from robustbench_lite.api import evaluate
    from robustbench_lite.suites import SUITES
    from robustbench_lite.suites.base import options_of

    opts = {"adversarial": {"attack": "fgsm,pgd", "steps": 2}, "corruptions": {"severities": "1"},
            "efficiency": {"latency_runs": 1, "throughput_batch_size": 8}}
    result = evaluate(str(digits_checkpoint), "digits", full_suites(), limit=24, suite_options=opts)
    paths = gates.metric_paths(result.to_dict())
    for suite in full_suites():
        roots = SUITES.entry(suite).gate_roots(options_of(opts, suite))
        mine = [p[len(suite) + 1:] for p in paths if p.startswith(suite + ".")]
        assert mine, suite
        assert {re.split(r"[.\\[]", p, maxsplit=1)[0] for p in mine} <= roots, suite
    # and the gates the check lets through are found in the results
    gates.validate_metrics(gates.parse_all([f"{p} >= 0" for p in paths if not p.startswith("timings")]),
                           {s: options_of(opts, s) for s in full_suites()})
    # the suites 'full' leaves out (monitor) alike
    monitor_opts = {"monitor": {"monitor_corruptions": "fog", "monitor_severities": "1", "monitor_trials": 1,
                                "monitor_sizes": "20", "monitor_shifts": "covariate/rotation,label/dirichlet"}}
    result = evaluate(str(digits_checkpoint), "digits", ["monitor"], limit=100, suite_options=monitor_opts)
    paths = [p for p in gates.metric_paths(result.to_dict()) if p.startswith("monitor.")]
    roots = SUITES.entry("monitor").gate_roots(options_of(monitor_opts, "monitor"))
    assert paths and {re.split(r"[.\[]", p[len("monitor."):], maxsplit=1)[0] for p in paths} <= roots
    assert "monitor.conditions.label/dirichlet.alpha=0.1.sizes.20.detection_rate" in paths
    gates.validate_metrics(gates.parse_all([f"{p} >= 0" for p in paths]),
                           {"monitor": options_of(monitor_opts, "monitor")})
