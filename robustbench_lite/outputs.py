"""The one output step: a typed :class:`EvaluationResult` -> records, console table, JSON, HTML, history, gates, JUnit.

The per-image records are written first, so the JSON can point to them (path, sha256); a records
file that cannot be written costs a warning, never the run. Gates are computed next so their
outcomes land in the JSON, the report and the history, but a failing gate is raised only after
everything is written: a failing run still leaves its report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.gate_modes import GateMode
from robustbench_lite.records import Records, load_records_for
from robustbench_lite.results import EvaluationResult

Print = Callable[[str], None]


@dataclass(frozen=True)
class OutputSpec:
    """Where a run's results go.

    Attributes:
        json: results JSON path (None: none).
        records: per-image records path, a ``.npz`` (None: none; :func:`robustbench_lite.records.check_path`).
        html: HTML report path (None: none).
        junit: JUnit XML of the gate outcomes (None: none).
        history: record the run in the run history.
        gates: parsed gates (:func:`robustbench_lite.gates.parse_all`).
        baseline: the results gates compare against, and its label.
        gate_mode: what decides a gate on a number with an interval (:class:`~robustbench_lite.gate_modes.GateMode`).
    """

    json: str | None = None
    records: str | None = None
    html: str | None = None
    junit: str | None = None
    history: bool = True
    gates: Sequence[Any] = ()
    baseline: dict[str, Any] | None = None
    baseline_label: str | None = None
    gate_mode: GateMode = GateMode.POINT


def load_gates(exprs: Sequence[str] | None, baseline_spec: str | None, suites: Sequence[str] | None = None,
               options: Mapping[str, Any] | None = None) -> tuple[list[Any], dict[str, Any] | None, str | None]:
    """Parse gates and load their baseline before any work: their mistakes exit 2 at once.

    Args:
        suites: the suites the run will run: each gate must read one of them.
        options: with ``suites``, the run's ``suite_options``: each gate must read a key they write.
    """
    from robustbench_lite import gates, history
    from robustbench_lite.suites.base import options_of

    parsed = gates.parse_all(exprs or [])
    baseline, label = (None, None)
    if baseline_spec:
        baseline, label = history.load_results(baseline_spec)
    gates.validate_baseline(parsed, baseline, label or "--baseline")
    if suites is not None:
        gates.validate_suites(parsed, list(suites))
        if options is not None:
            gates.validate_metrics(parsed, {s: options_of(options, s) for s in suites if s in gates.SUITES})
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


#: How each gate mode decides, for the console line above the gate table.
MODE_TEXT = {"strict": "a gate passes only if its whole 95% interval passes",
             "lenient": "a gate fails only if its whole 95% interval fails", "point": "the point estimate decides"}


def write_records(result: EvaluationResult, path: str | Path) -> Path | None:
    """Save the run's per-image records and point ``result.records_file`` at them (path, sha256, conditions).

    Returns the absolute path, or None after a one-line warning on stderr when they cannot be
    written: the run's other outputs are written all the same.
    """
    from robustbench_lite.files import sha256_file

    records = result.records
    if not isinstance(records, Records):
        print(f"robust-eval: warning: --records {path}: this run kept no per-image records; nothing written",
              file=sys.stderr)
        return None
    try:
        written = records.save(path).resolve()
        digest = sha256_file(written)
    except OSError as exc:
        print(f"robust-eval: warning: the per-image records could not be written to {path} "
              f"({exc.strerror or exc}); the other outputs are written without them", file=sys.stderr)
        return None
    result.records_file = {"path": str(written), "sha256": digest, "conditions": len(records)}
    return written


def check_gates(gate_list: Sequence[Any], data: Mapping[str, Any], baseline: Mapping[str, Any] | None,
                baseline_label: str | None, mode: GateMode | str = GateMode.POINT, records: Any = None,
                baseline_records: Any = None, json_path: str | None = None) -> list[Any]:
    """:func:`robustbench_lite.gates.check` with both runs' per-image records, so baseline gates are paired.

    Args:
        records: the run's records (in memory), or None: the ones its JSON points to (``data["records"]``;
            its file is looked for beside ``json_path`` too).
        baseline_records: the baseline's, or None: the ones the baseline JSON points to (its file is
            looked for beside ``baseline_label`` when that is a path).
    """
    from robustbench_lite import gates

    if any(g.uses_baseline for g in gate_list):  # records matter only to pair a baseline gate
        if records is None:
            records = load_records_for(data, json_path)
        if baseline_records is None and baseline is not None:
            where = baseline_label if baseline_label and Path(baseline_label).is_file() else None
            baseline_records = load_records_for(baseline, where)
    return gates.check(gate_list, data, baseline, baseline_label or "--baseline", mode, records, baseline_records)


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


def attempt(what: str, write: Callable[[], Any], say: str | None = None, out: Print = print) -> Path | None:
    """Run one output's ``write`` after the work is done: the path it wrote (resolved; with ``say``, also
    printed as ``say: PATH``), or None after a one-line warning on stderr; never the run lost for it: the
    other outputs and the gate verdict still come."""
    try:
        written = write()
    except Exception as exc:  # noqa: BLE001 - any failure of one output (disk, permissions, a renderer bug)
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        print(f"robust-eval: warning: {what} was not written ({reason})", file=sys.stderr)
        return None
    path = Path(written).resolve()
    if say is not None:
        out(f"{say}: {path}")
    return path


def write(result: EvaluationResult, spec: OutputSpec, out: Print = print) -> dict[str, Any]:
    """Write every output of one evaluation; raise the gate failure (exit 1) last.

    Every output is attempted even when another failed (each failure one warning line); the
    history is best-effort (:func:`robustbench_lite.history.try_record`); the exit code stays the
    gates' verdict.

    Returns:
        The results dict as written to JSON (with ``gates`` when gates were given).
    """
    from robustbench_lite import gates, history

    if spec.records:
        written = write_records(result, spec.records)
        if written is not None:
            out(f"records: {written}")
    data = result.to_dict()
    outcomes: list[Any] = []
    gate_error: RobustEvalError | None = None
    if spec.gates:
        try:
            outcomes = check_gates(spec.gates, data, spec.baseline, spec.baseline_label, spec.gate_mode,
                                   result.records)
        except RobustEvalError as exc:
            gate_error = exc
        else:
            data["gates"] = gates.gates_block(outcomes, spec.baseline_label)

    print_table(result, out)
    json_path = html_path = None
    if spec.json:
        json_path = attempt(f"--json {spec.json}", lambda: write_json(spec.json, data), "\nresults", out)
    if spec.html:
        from robustbench_lite.report import write_html

        html_path = attempt(f"--html {spec.html}", lambda: write_html(spec.html, [data]), "report", out)
    if spec.history:
        run_id, why = history.try_record(data, json_path, html_path)
        if run_id is not None:
            out(f"history: run {run_id} (use as --baseline run:{run_id})")
        else:
            print(f"robust-eval: warning: this run is not in the history ({why}); its results are in the outputs "
                  "above", file=sys.stderr)
    if gate_error is not None:
        raise gate_error
    finish_gates(spec.gates, outcomes, spec.junit, f"{result.model} on {result.dataset}",
                 {"model": result.model, "dataset": result.dataset, "n_examples": result.n_examples,
                  "seed": result.seed}, out)
    return data


def finish_gates(gate_list: Sequence[Any], outcomes: Sequence[Any], junit: str | None, subject: str,
                 properties: dict[str, Any], out: Print = print) -> None:
    """Print the gate table, write JUnit (best-effort: :func:`attempt`), raise GateFailure (exit 1) when a
    gate failed."""
    from robustbench_lite import gates
    from robustbench_lite.junit import write_junit

    if not gate_list:
        if junit:
            attempt(f"--junit {junit}", lambda: write_junit(junit, [], properties=properties))
        return
    failed = sum(not o.passed for o in outcomes)
    mode = outcomes[0].mode if outcomes else GateMode.POINT.value
    how = "" if mode == GateMode.POINT.value else f" ({mode} mode: {MODE_TEXT[mode]})"
    out(f"\ngates: {len(outcomes) - failed} of {len(outcomes)} passed{how}\n{gates.table(outcomes)}")
    if junit:
        attempt(f"--junit {junit}", lambda: write_junit(
            junit, outcomes, suite_name=f"robust-eval gates: {subject}", properties=properties), "junit", out)
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
        threshold = "n/a" if o.threshold is None else f"{o.threshold:.4g}"
        lines.append(f"  {'FAIL' if not o.passed else 'pass'}  {o.expr}")
        detail = f"        {o.path} = {o.value_text}, needs {o.op} {threshold}"
        if o.baseline_value is not None:
            detail += f" (baseline {o.baseline_value:.4g})"
        if o.margin is not None and o.op in (">=", ">", "<=", "<"):
            gap = o.margin if o.op in (">=", ">") else -o.margin
            detail += f"; {'short by' if gap < 0 else 'margin'} {abs(gap):.4g}"
        if o.mode != GateMode.POINT.value:
            detail += f"; {o.mode} mode, decided by {o.decided_by}"
        if o.explanation:
            detail += f"; {o.explanation}"
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

    def outcomes(self, *exprs: str, baseline: Any = None, mode: GateMode | str = GateMode.POINT) -> list[Any]:
        """Gate outcomes, pass or fail, without raising (``mode``: point, strict or lenient)."""
        from robustbench_lite import gates

        if not exprs:
            raise RobustEvalError("check needs at least one gate expression, e.g. 'clean.accuracy >= 0.9'")
        mode = GateMode.parse(mode, "mode")
        base, label = baseline_data(baseline)
        return check_gates(gates.parse_all(exprs), self.to_dict(), base, label or "baseline", mode,
                           self.records, getattr(baseline, "records", None))

    def check(self, *exprs: str, baseline: Any = None, mode: GateMode | str = GateMode.POINT) -> list[Any]:
        """Check gates; raise :class:`GateFailure` with every metric against its threshold when one fails."""
        from robustbench_lite.errors import GateFailure

        outcomes = self.outcomes(*exprs, baseline=baseline, mode=mode)
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
