"""The one output step: a typed :class:`EvaluationResult` -> console table, JSON, HTML, history, gates, JUnit.

Gates are computed first so their outcomes land in the JSON, the report and the history, but a
failing gate is raised only after everything is written: a failing run still leaves its report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.results import EvaluationResult

Print = Callable[[str], None]


@dataclass(frozen=True)
class OutputSpec:
    """Where a run's results go.

    Attributes:
        json: results JSON path (None: none).
        html: HTML report path (None: none).
        junit: JUnit XML of the gate outcomes (None: none).
        history: record the run in the run history.
        gates: parsed gates (:func:`robustbench_lite.gates.parse_all`).
        baseline: the results gates compare against, and its label.
    """

    json: str | None = None
    html: str | None = None
    junit: str | None = None
    history: bool = True
    gates: Sequence[Any] = ()
    baseline: dict[str, Any] | None = None
    baseline_label: str | None = None


def load_gates(exprs: Sequence[str] | None, baseline_spec: str | None,
               suites: Sequence[str] | None = None) -> tuple[list[Any], dict[str, Any] | None, str | None]:
    """Parse gates and load their baseline before any work: their mistakes exit 2 at once."""
    from robustbench_lite import gates, history

    parsed = gates.parse_all(exprs or [])
    baseline, label = (None, None)
    if baseline_spec:
        baseline, label = history.load_results(baseline_spec)
    gates.validate_baseline(parsed, baseline, label or "--baseline")
    if suites is not None:
        gates.validate_suites(parsed, list(suites))
    return parsed, baseline, label


def print_table(result: EvaluationResult, out: Print = print) -> None:
    out(f"\n{result.model} on {result.dataset} ({result.n_examples} test images, seed {result.seed})")
    for name, suite in result.suites.items():
        summary = suite.summary()
        if not summary:
            continue
        cells = "  ".join(f"{k} {v}" for k, v in summary.items())
        out(f"  {name:<12} {cells}   [{result.timings.get(name, 0):.1f} s]")


def write_json(path: str | Path, data: Any) -> Path:
    from robustbench_lite.files import atomic_write

    text = json.dumps(data, indent=2, allow_nan=False)
    return atomic_write(path, lambda f: f.write(text + "\n"))


def write(result: EvaluationResult, spec: OutputSpec, out: Print = print) -> dict[str, Any]:
    """Write every output of one evaluation; raise the gate failure (exit 1) last.

    Returns:
        The results dict as written to JSON (with ``gates`` when gates were given).
    """
    from robustbench_lite import gates, history

    data = result.to_dict()
    outcomes: list[Any] = []
    gate_error: RobustEvalError | None = None
    if spec.gates:
        try:
            outcomes = gates.check(spec.gates, data, spec.baseline, spec.baseline_label or "--baseline")
        except RobustEvalError as exc:
            gate_error = exc
        else:
            data["gates"] = gates.gates_block(outcomes, spec.baseline_label)

    print_table(result, out)
    if spec.json:
        out(f"\nresults: {write_json(spec.json, data).resolve()}")
    if spec.html:
        from robustbench_lite.report import write_html

        out(f"report: {Path(write_html(spec.html, [data])).resolve()}")
    if spec.history:
        run_id = history.record(data, spec.json, spec.html)
        out(f"history: run {run_id} (use as --baseline run:{run_id})")
    if gate_error is not None:
        raise gate_error
    finish_gates(spec.gates, outcomes, spec.junit, f"{result.model} on {result.dataset}",
                 {"model": result.model, "dataset": result.dataset, "n_examples": result.n_examples,
                  "seed": result.seed}, out)
    return data


def finish_gates(gate_list: Sequence[Any], outcomes: Sequence[Any], junit: str | None, subject: str,
                 properties: dict[str, Any], out: Print = print) -> None:
    """Print the gate table, write JUnit, raise GateFailure (exit 1) when a gate failed."""
    from robustbench_lite import gates

    if not gate_list:
        if junit:
            gates.write_junit(junit, [], properties=properties)
        return
    failed = sum(not o.passed for o in outcomes)
    out(f"\ngates: {len(outcomes) - failed} of {len(outcomes)} passed\n{gates.table(outcomes)}")
    if junit:
        path = gates.write_junit(junit, outcomes, suite_name=f"robust-eval gates: {subject}", properties=properties)
        out(f"junit: {Path(path).resolve()}")
    error = gates.failure(outcomes, subject)
    if error is not None:
        raise error
