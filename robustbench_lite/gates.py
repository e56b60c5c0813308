"""Gates: pass/fail thresholds over a results JSON, for CI (``--gate``, ``--baseline``, ``--junit``).

A gate is one line, ``PATH OP RHS``, parsed by a tiny parser (no ``eval`` of user text)::

    clean.accuracy >= 0.88
    corruptions.mean_accuracy >= 70%
    adversarial.pgd.Linf[8/255].robust_accuracy >= 0.30
    efficiency.latency_ms <= 5
    corruptions.mean_accuracy >= baseline - 0.02
    efficiency.latency_ms <= baseline * 1.10
    shift.worst_accuracy >= baseline.clean.accuracy - 0.2

PATH names a number in the results JSON: the keys from the suite down, joined by dots.

* ``clean.accuracy``, ``clean.per_class_accuracy[3]`` (lists of numbers take ``[index]``),
  ``corruptions.mean_accuracy``, ``corruptions.accuracy.gaussian_noise.3`` (corruption, severity),
  ``corruptions.accuracy_by_family.noise``, ``shift.mean_accuracy``,
  ``shift.splits.covariate/gaussian_noise.accuracy``, ``efficiency.latency_ms``, ``timings.total``.
* Adversarial results: ``adversarial.<attack>.<norm>[<eps>].<field>`` with field
  ``robust_accuracy``, ``attack_success_rate`` or ``mean_perturbation`` (no field: robust accuracy);
  ``adversarial.worst_case.<norm>[<eps>]`` (all attacks together) and
  ``adversarial.curve.<attack>.<norm>.auc`` (sweeps). ``<eps>`` may be written as a decimal or a
  fraction (``[0.1]``, ``[8/255]``): any number in brackets is matched to 6 significant digits,
  the key format of the adversarial suite.
* Names match case-insensitively when that is unambiguous (``linf`` finds ``Linf``).

OP is one of ``>= <= > < == !=``. RHS is a number (``0.88``, ``88%``, ``1e-3``, ``8/255``), or
``baseline`` (the same path in the ``--baseline`` results) or ``baseline.PATH`` (another path
there), optionally followed by ``+ N``, ``- N`` or ``* N``.

A path that is not a number in the results, or a malformed expression, is a
:class:`~robustbench_lite.errors.RobustEvalError` (exit 2) that lists the valid paths. A gate
whose metric is undefined (NaN, written as null) fails.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robustbench_lite.errors import GateFailure, RobustEvalError
from robustbench_lite.formatting import parse_number
from robustbench_lite.suites import SUITES, Headline, ordered_suites

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
#: Top-level keys of a results JSON that hold numbers worth gating, besides the suites.
EXTRA_ROOTS = ("timings",)
#: Keys whose contents are plotting data, settings or bookkeeping, not metrics.
SKIP_KEYS = frozenset({"reliability", "per_image", "histogram", "settings", "options", "cache", "draws", "passes",
                       "extra", "spread", "results", "levels", "classes_losing_most", "input_shape"})
EXAMPLE = "clean.accuracy >= 0.9"

_PATH_RE = re.compile(r"^[A-Za-z_][\w\-/]*(?:\[[^\[\]\s]+\])?(?:\.[\w\-/]+(?:\[[^\[\]\s]+\])?)*$")
_GATE_RE = re.compile(r"^\s*(?P<path>[^\s<>=!]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<rhs>\S.*?)\s*$")
_RHS_RE = re.compile(r"^baseline(?:\.(?P<path>\S+?))?\s*(?:(?P<op>[-+*])\s*(?P<num>\S+))?$")
_BRACKET_RE = re.compile(r"\[([^\[\]]+)\]")


def _key_number(text: str) -> str:
    """A bracketed number as the adversarial suite writes keys (``%.6g``); other text unchanged."""
    value = parse_number(text)
    return text if value is None else format(value, ".6g")


def normalise_path(path: str) -> str:
    return _BRACKET_RE.sub(lambda m: f"[{_key_number(m.group(1))}]", path.strip())


@dataclass(frozen=True)
class Gate:
    """One parsed gate. ``baseline_path`` is set when the threshold comes from the baseline run."""

    expr: str
    path: str
    op: str
    number: float | None = None
    baseline_path: str | None = None
    adjust_op: str | None = None
    adjust: float = 0.0

    @property
    def uses_baseline(self) -> bool:
        return self.baseline_path is not None

    @property
    def suite(self) -> str:
        return self.path.split(".", 1)[0].split("[", 1)[0]

    def threshold(self, baseline_value: float | None = None) -> float:
        if not self.uses_baseline:
            assert self.number is not None
            return self.number
        assert baseline_value is not None
        if self.adjust_op == "+":
            return baseline_value + self.adjust
        if self.adjust_op == "-":
            return baseline_value - self.adjust
        if self.adjust_op == "*":
            return baseline_value * self.adjust
        return baseline_value


def _syntax_error(expr: str, why: str) -> RobustEvalError:
    return RobustEvalError(
        f"malformed gate {expr!r}: {why}; write PATH OP NUMBER or PATH OP baseline[+-* NUMBER], e.g. "
        f"'{EXAMPLE}' or 'corruptions.mean_accuracy >= baseline - 0.02' (ops: {' '.join(OPS)})"
    )


def parse(expr: str) -> Gate:
    """Parse one gate expression (syntax only; paths are checked against results by :func:`check`)."""
    if not isinstance(expr, str) or not expr.strip():
        raise _syntax_error(str(expr), "it is empty")
    m = _GATE_RE.match(expr)
    if not m:
        raise _syntax_error(expr, "expected a path, a comparison and a threshold")
    path, op, rhs = m["path"], m["op"], m["rhs"]
    if not _PATH_RE.match(path):
        raise _syntax_error(expr, f"{path!r} is not a path (dot-separated names, [index] or [eps] allowed)")
    path = normalise_path(path)
    number = parse_number(rhs)
    if number is not None:
        if not math.isfinite(number):
            raise _syntax_error(expr, f"threshold {rhs!r} is not finite")
        return Gate(expr.strip(), path, op, number=number)
    b = _RHS_RE.match(rhs)
    if not b:
        raise _syntax_error(expr, f"threshold {rhs!r} is neither a number nor baseline[.PATH] [+-* NUMBER]")
    base_path = path
    if b["path"]:
        if not _PATH_RE.match(b["path"]):
            raise _syntax_error(expr, f"baseline.{b['path']} does not name a path")
        base_path = normalise_path(b["path"])
    adjust = 0.0
    if b["op"]:
        value = parse_number(b["num"])
        if value is None or not math.isfinite(value):
            raise _syntax_error(expr, f"{b['num']!r} after '{b['op']}' is not a number")
        adjust = value
    return Gate(expr.strip(), path, op, baseline_path=base_path, adjust_op=b["op"], adjust=adjust)


def parse_all(exprs: Iterable[str]) -> list[Gate]:
    return [parse(e) for e in exprs]


# ---------------------------------------------------------------------------------------------
# Paths: every number in a results JSON, by its gate path


def _flatten(value: Any, prefix: str, out: dict[str, float | None]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)) or value is None:
        out[prefix] = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in SKIP_KEYS:
                _flatten(item, f"{prefix}.{key}", out)
    elif isinstance(value, (list, tuple)) and value and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)


def metric_paths(results: Mapping[str, Any]) -> dict[str, float | None]:
    """Every gateable number in a results JSON by path (None where the metric is undefined)."""
    out: dict[str, float | None] = {}
    roots = [s for s in results.get("suites", []) if isinstance(s, str)] + list(EXTRA_ROOTS)
    for root in roots:
        block = results.get(root)
        if not isinstance(block, Mapping):
            continue
        if root in SUITES:  # a suite's own aliases first (adversarial.<key>...), then the generic walk
            for path, value in SUITES.entry(root).gate_paths(block):
                _flatten(value, path, out)
        _flatten(block, root, out)
    return out


def _lookup(paths: Mapping[str, float | None], path: str) -> str | None:
    if path in paths:
        return path
    folded = [p for p in paths if p.lower() == path.lower()]
    return folded[0] if len(folded) == 1 else None


def unknown_path_error(path: str, paths: Mapping[str, Any], expr: str, where: str = "the results") -> RobustEvalError:
    close = difflib.get_close_matches(path, list(paths), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listing = ", ".join(paths) if paths else "(none: the results hold no metrics)"
    return RobustEvalError(f"gate {expr!r}: {path!r} is not a number in {where}.{hint} Valid paths: {listing}")


def validate_suites(gates: Sequence[Gate], suites: Sequence[str]) -> None:
    """Before a run: each gate names a suite that will run (or ``timings``)."""
    roots = list(suites) + list(EXTRA_ROOTS)
    for gate in gates:
        if gate.suite not in roots:
            raise RobustEvalError(
                f"gate {gate.expr!r} reads suite {gate.suite!r}, which this run does not run; add "
                f"--suite {gate.suite} or drop the gate (running: {', '.join(suites)})"
            )


def validate_baseline(gates: Sequence[Gate], baseline: Mapping[str, Any] | None, label: str = "--baseline") -> None:
    """Before a run: gates that use a baseline have one, and their baseline paths exist in it."""
    needing = [g for g in gates if g.uses_baseline]
    if not needing:
        return
    if baseline is None:
        raise RobustEvalError(
            f"gate {needing[0].expr!r} compares with a baseline, but none was given; pass --baseline RESULTS.json "
            "or --baseline run:ID (see 'robust-eval history')"
        )
    paths = metric_paths(baseline)
    for gate in needing:
        assert gate.baseline_path is not None
        if _lookup(paths, gate.baseline_path) is None:
            raise unknown_path_error(gate.baseline_path, paths, gate.expr, f"the baseline ({label})")


# ---------------------------------------------------------------------------------------------
# Checking


@dataclass
class GateOutcome:
    """One gate checked. ``value``/``threshold`` are None where undefined (a NaN metric fails)."""

    expr: str
    path: str
    op: str
    value: float | None
    threshold: float | None
    passed: bool
    baseline_value: float | None = None
    reason: str = ""

    @property
    def margin(self) -> float | None:
        """value - threshold: positive is headroom for >=/>, negative for <=/<."""
        if self.value is None or self.threshold is None:
            return None
        return self.value - self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "margin": self.margin}


def check(gates: Sequence[Gate], results: Mapping[str, Any],
          baseline: Mapping[str, Any] | None = None, baseline_label: str = "--baseline") -> list[GateOutcome]:
    """Check every gate against ``results`` (a results JSON dict); unknown paths raise RobustEvalError."""
    paths = metric_paths(results)
    validate_baseline(gates, baseline, baseline_label)
    base_paths = metric_paths(baseline) if baseline is not None else {}
    outcomes = []
    for gate in gates:
        found = _lookup(paths, gate.path)
        if found is None:
            raise unknown_path_error(gate.path, paths, gate.expr)
        value = paths[found]
        base_value = None
        if gate.uses_baseline:
            base_key = _lookup(base_paths, gate.baseline_path or "")
            assert base_key is not None  # validate_baseline
            base_value = base_paths[base_key]
        threshold = None if gate.uses_baseline and base_value is None else gate.threshold(base_value)
        if value is None:
            outcomes.append(GateOutcome(gate.expr, found, gate.op, None, threshold, False, base_value,
                                        "the metric is undefined (NaN) in the results"))
        elif threshold is None:
            outcomes.append(GateOutcome(gate.expr, found, gate.op, float(value), None, False, base_value,
                                        "the baseline's metric is undefined (NaN)"))
        else:
            passed = OPS[gate.op](float(value), threshold)
            outcomes.append(GateOutcome(gate.expr, found, gate.op, float(value), threshold, passed, base_value))
    return outcomes


def gates_block(outcomes: Sequence[GateOutcome], baseline_label: str | None) -> dict[str, Any]:
    """What lands under ``gates`` in the results JSON."""
    return {"passed": all(o.passed for o in outcomes), "total": len(outcomes),
            "failed": sum(not o.passed for o in outcomes), "baseline": baseline_label,
            "results": [o.to_dict() for o in outcomes]}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def table(outcomes: Sequence[GateOutcome]) -> str:
    """A plain-text table: gate, value, threshold, margin, result."""
    rows = [("gate", "value", "threshold", "margin", "result")]
    for o in outcomes:
        margin = o.margin
        rows.append((o.expr, _fmt(o.value), _fmt(o.threshold), "n/a" if margin is None else f"{margin:+.4g}",
                     ("pass" if o.passed else "FAIL") + (f" ({o.reason})" if o.reason else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
                     for r in rows)


def failure(outcomes: Sequence[GateOutcome], subject: str = "") -> GateFailure | None:
    """A GateFailure listing the failed gates, or None when all passed."""
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return None
    about = f" for {subject}" if subject else ""
    return GateFailure(f"{len(failed)} of {len(outcomes)} gate(s) failed{about}:\n{table(failed)}")


def write_junit(path: str | Path, outcomes: Sequence[GateOutcome], suite_name: str = "robust-eval gates",
                properties: Mapping[str, Any] | None = None) -> Path:
    """JUnit XML (one testcase per gate), written atomically."""
    from robustbench_lite.files import atomic_write

    failures = sum(not o.passed for o in outcomes)
    root = ET.Element("testsuites", name="robust-eval", tests=str(len(outcomes)), failures=str(failures),
                      errors="0")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(outcomes)), failures=str(failures),
                          errors="0", skipped="0", time="0",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()))
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value=str(value))
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"robust_eval.gates.{o.path.split('.', 1)[0]}",
                             name=o.expr, time="0")
        detail = f"{o.path} = {_fmt(o.value)}, threshold {o.op} {_fmt(o.threshold)}"
        if o.baseline_value is not None:
            detail += f" (baseline {_fmt(o.baseline_value)})"
        if o.reason:
            detail += f": {o.reason}"
        if o.passed:
            ET.SubElement(case, "system-out").text = detail
        else:
            ET.SubElement(case, "failure", message=detail, type="GateFailure").text = detail
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    return atomic_write(path, lambda f: f.write('<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n"))


# ---------------------------------------------------------------------------------------------
# Headline metrics: the few numbers the scorecard, the comparison table and the history show


def headline(results: Mapping[str, Any]) -> list[Headline]:
    """The headline metrics of every suite present, suite by suite in order (missing ones are left out)."""
    paths = metric_paths(results)
    out: list[Headline] = []
    for suite in ordered_suites():
        block = results.get(suite.name)
        if isinstance(block, Mapping):
            out += suite.headline(block, paths)
    return out


def robustness_order() -> list[str]:
    """Suites whose headline accuracies can stand for a run's robustness, first choice first."""
    ranked = [s for s in ordered_suites() if s.robustness_rank is not None]
    return [s.name for s in sorted(ranked, key=lambda s: s.robustness_rank)]


def robustness_score(results: Mapping[str, Any], suite: str | None = None) -> tuple[str, float | None]:
    """One robustness number per run: the lowest headline accuracy of ``suite`` (default: the first
    present in :func:`robustness_order`: corruptions, adversarial, shift, clean), with its label."""
    heads = headline(results)
    for name in (suite,) if suite else robustness_order():
        values = [h for h in heads if h.suite == name and h.unit == "fraction" and h.higher_is_better]
        if values:
            worst = min(values, key=lambda h: math.inf if h.value is None else h.value)
            return f"{name} {worst.label}", worst.value
    return "none", None
