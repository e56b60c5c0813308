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


def interval_lines(result: EvaluationResult) -> dict[str, str]:
    """Per suite, its headline metrics that have an interval (``accuracy 91.2% [90.6, 91.7]``); suites
    without intervals (older results, efficiency) are left out."""
    from robustbench_lite import gates
    from robustbench_lite.statistics import interval_text
    from robustbench_lite.suites.base import block_interval

    if not any(result.intervals.values()):
        return {}
    data = result.to_dict()
    lines: dict[str, list[str]] = {}
    for head in gates.headline(data):
        block = data.get(head.suite)
        # a suite's own headline may not carry its interval (adversarial aliases): look its path up in the block
        ci = head.ci or (block_interval(block, head.path.removeprefix(f"{head.suite}."))
                         if isinstance(block, dict) else None)
        if ci is not None and head.unit in ("fraction", "ratio"):
            lines.setdefault(head.suite, []).append(f"{head.label} {interval_text(head.value, ci, head.unit)}")
    return {suite: "  ".join(parts) for suite, parts in lines.items()}


def print_table(result: EvaluationResult, out: Print = print) -> None:
    """One line per suite (its summary and time), and under it its headline metrics with their intervals."""
    out(f"\n{result.model} on {result.dataset} ({result.n_examples} test images, seed {result.seed})")
    intervals = interval_lines(result)
    for name, suite in result.suites.items():
        summary = suite.summary()
        if not summary:
            continue
        cells = "  ".join(f"{k} {v}" for k, v in summary.items())
        out(f"  {name:<12} {cells}   [{result.timings.get(name, 0):.1f} s]")
        if name in intervals:
            out(f"  {'':<12} {intervals[name]}")
    if intervals:
        from robustbench_lite.statistics import LEVEL

        level = result.statistics.get("level", LEVEL)
        out(f"  [...] = {100 * level:g}% interval (Wilson; means: paired bootstrap over images)")


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


# ---------------------------------------------------------------------------------------------
# The Python API's result: the typed result with the output step's methods


def explain(outcomes: Sequence[Any], subject: str) -> str:
    """Every gate with its metric, threshold and margin; failures marked FAIL."""
    failed = sum(not o.passed for o in outcomes)
    lines = [f"{failed} of {len(outcomes)} robustness gate(s) failed for {subject}:"]
    for o in outcomes:
        value = "n/a" if o.value is None else f"{o.value:.4g}"
        threshold = "n/a" if o.threshold is None else f"{o.threshold:.4g}"
        lines.append(f"  {'FAIL' if not o.passed else 'pass'}  {o.expr}")
        detail = f"        {o.path} = {value}, needs {o.op} {threshold}"
        if o.baseline_value is not None:
            detail += f" (baseline {o.baseline_value:.4g})"
        if o.margin is not None and o.op in (">=", ">", "<=", "<"):
            gap = o.margin if o.op in (">=", ">") else -o.margin
            detail += f"; {'short by' if gap < 0 else 'margin'} {abs(gap):.4g}"
        if o.reason:
            detail += f"; {o.reason}"
        lines.append(detail)
    return "\n".join(lines)


def baseline_data(baseline: Any) -> tuple[dict[str, Any] | None, str | None]:
    """What ``baseline`` in a gate refers to: an evaluation, a results dict, a JSON path or ``run:ID``."""
    if baseline is None:
        return None, None
    if isinstance(baseline, EvaluationResult):
        return baseline.to_dict(), f"{baseline.model} on {baseline.dataset}"
    if isinstance(baseline, dict):
        return dict(baseline), "baseline results"
    from robustbench_lite.history import load_results

    return load_results(str(baseline))


class Evaluation(EvaluationResult):
    """What :func:`robustbench_lite.evaluate` returns: the typed result, plus metrics by path, gates and writers.

    ``run["clean.accuracy"]`` reads one metric (the gate paths: ``robust-eval gate --help``);
    ``run.check("clean.accuracy >= 0.9")`` raises :class:`~robustbench_lite.errors.GateFailure`
    listing each metric against its threshold; ``run.write_json(path)`` / ``run.write_html(path)``
    write the results and the report (atomically).
    """

    @classmethod
    def of(cls, result: EvaluationResult) -> Evaluation:
        import dataclasses

        return cls(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})

    @property
    def subject(self) -> str:
        return f"{self.model} on {self.dataset} ({self.n_examples} test images)"

    def __getitem__(self, path: str) -> float | None:
        from robustbench_lite import gates

        paths = gates.metric_paths(self.to_dict())
        key = gates.normalise_path(path)
        if key not in paths:
            raise gates.unknown_path_error(key, paths, path)
        return paths[key]

    def outcomes(self, *exprs: str, baseline: Any = None) -> list[Any]:
        """Gate outcomes, pass or fail, without raising."""
        from robustbench_lite import gates

        if not exprs:
            raise RobustEvalError("check needs at least one gate expression, e.g. 'clean.accuracy >= 0.9'")
        base, label = baseline_data(baseline)
        return gates.check(gates.parse_all(exprs), self.to_dict(), base, label or "baseline")

    def check(self, *exprs: str, baseline: Any = None) -> list[Any]:
        """Check gates; raise :class:`GateFailure` with every metric against its threshold when one fails."""
        from robustbench_lite.errors import GateFailure

        outcomes = self.outcomes(*exprs, baseline=baseline)
        if not all(o.passed for o in outcomes):
            raise GateFailure(explain(outcomes, self.subject))
        return outcomes

    def write_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def write_html(self, path: str | Path) -> Path:
        from robustbench_lite.report import write_html

        return Path(write_html(path, [self.to_dict()]))


def evaluate(model: Any, /, data: Any = None, suites: Sequence[str] | str | None = None,
             **options: Any) -> Evaluation:
    """``robustbench_lite.evaluate``: :func:`robustbench_lite.api.evaluate`, returning an :class:`Evaluation`.

    Example::

        import robustbench_lite
        run = robustbench_lite.evaluate(net, (images, labels), suites=["clean", "corruptions"])
        run.check("clean.accuracy >= 0.9")
        run.write_html("report.html")
    """
    from robustbench_lite import api

    return Evaluation.of(api.evaluate(model, data, suites, **options))
