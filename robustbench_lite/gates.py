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

An accuracy-like number with a 95% interval (the block's ``ci``) has its ends as paths of their own:
``clean.accuracy.ci_low``, ``corruptions.mean_accuracy.ci_high``. With ``--gate-mode strict|lenient``
the interval decides instead of the point (:mod:`robustbench_lite.gate_modes`); a baseline gate on
two runs recorded on the same images is compared pair by pair (:mod:`robustbench_lite.paired`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from robustbench_lite import paired
from robustbench_lite.errors import GateFailure, RobustEvalError
from robustbench_lite.formatting import parse_number
from robustbench_lite.gate_modes import GateMode, decide
from robustbench_lite.records import Records
from robustbench_lite.results import plain
from robustbench_lite.suites import SUITES, Headline, incomparable, ordered_suites

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
#: Top-level keys of a results JSON that hold numbers worth gating, besides the suites.
EXTRA_ROOTS = ("timings",)
#: Keys whose contents are plotting data, settings or bookkeeping, not metrics.
SKIP_KEYS = frozenset({"reliability", "per_image", "histogram", "settings", "options", "cache", "draws", "passes",
                       "extra", "spread", "results", "levels", "classes_losing_most", "input_shape", "ci"})
#: Suffixes of the gate paths of an interval's ends (``clean.accuracy.ci_low``), from each block's ``ci``.
CI_LOW, CI_HIGH = "ci_low", "ci_high"
EXAMPLE = "clean.accuracy >= 0.9"

# names may hold '=' (a shift level: ``alpha=0.1``); one '=' followed by a name character is not an operator
_PATH_RE = re.compile(r"^[A-Za-z_][\w\-/=]*(?:\[[^\[\]\s]+\])?(?:\.[\w\-/=]+(?:\[[^\[\]\s]+\])?)*$")
_GATE_RE = re.compile(r"^\s*(?P<path>(?:[^\s<>=!]|=(?=[\w.\-]))+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<rhs>\S.*?)\s*$")
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
        ci = block.get("ci")
        if isinstance(ci, Mapping):  # each interval's ends as numbers of their own: clean.accuracy.ci_low
            for key, pair in ci.items():
                if isinstance(pair, (list, tuple)) and len(pair) == 2:
                    _flatten(pair[0], f"{root}.{key}.{CI_LOW}", out)
                    _flatten(pair[1], f"{root}.{key}.{CI_HIGH}", out)
    return out


def interval_of(paths: Mapping[str, float | None], path: str) -> tuple[float, float] | None:
    """The 95% interval of the number at ``path`` (its ``.ci_low``/``.ci_high`` paths), or None."""
    lo, hi = paths.get(f"{path}.{CI_LOW}"), paths.get(f"{path}.{CI_HIGH}")
    return None if lo is None or hi is None else (float(lo), float(hi))


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


def validate_metrics(gates: Sequence[Gate], options: Mapping[str, Any]) -> None:
    """Before a run: each gate reads a key its suite will write (``clean.acuracy`` is refused at once,
    not after hours of work). Checked to the first key under the suite (what the suite's options
    decide, such as which attacks run); deeper parts (a corruption's name, a budget) are checked
    against the results.

    Args:
        options: each suite's typed options by name (:meth:`EvalContext.options`' defaults where unset).
    """
    for gate in gates:
        if gate.suite not in SUITES or gate.suite not in options:
            continue
        roots = SUITES.entry(gate.suite).gate_roots(options[gate.suite])
        if roots is None:
            continue
        valid = sorted(r for r in roots if r not in SKIP_KEYS)
        rest = gate.path[len(gate.suite):].lstrip(".")
        first = re.split(r"[.\[]", rest, maxsplit=1)[0]
        if first in valid or first.lower() in {r.lower() for r in valid}:
            continue
        close = difflib.get_close_matches(first, valid, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(f'{gate.suite}.{c}' for c in close)}?" if close else ""
        what = f"{gate.suite}.{first}" if first else gate.suite
        raise RobustEvalError(
            f"gate {gate.expr!r}: {what!r} is not a number this run's {gate.suite} suite writes.{hint} "
            f"Valid: {', '.join(f'{gate.suite}.{r}' for r in valid)} (see 'robust-eval gate --help' for paths)"
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
    """One gate checked. ``value``/``threshold`` are None where undefined (a NaN metric fails).

    Attributes:
        mode: the gate mode it was checked in (:class:`GateMode`).
        interval: the value's 95% interval, or None (a number without one).
        baseline_interval: the baseline value's own interval (a baseline gate), or None.
        decided_by: what decided it: ``point``, ``ci_low``/``ci_high`` (the value's interval, against
            the baseline's opposite end for a baseline gate) or ``paired ci_low``/``paired ci_high``
            (the interval of the paired difference with the baseline).
        difference: run minus baseline, where the two were paired on the same images; else None.
        difference_ci: its paired interval; p_value: "no difference" (``test``: ``mcnemar`` for one
            recorded accuracy, ``paired bootstrap`` for a derived number).
        note: how the interval entered (or why it did not: no interval, images not paired).
    """

    expr: str
    path: str
    op: str
    value: float | None
    threshold: float | None
    passed: bool
    baseline_value: float | None = None
    reason: str = ""
    mode: str = GateMode.POINT.value
    interval: tuple[float, float] | None = None
    baseline_interval: tuple[float, float] | None = None
    decided_by: str = "point"
    difference: float | None = None
    difference_ci: tuple[float, float] | None = None
    p_value: float | None = None
    test: str | None = None
    note: str = ""

    @property
    def margin(self) -> float | None:
        """value - threshold: positive is headroom for >=/>, negative for <=/<."""
        if self.value is None or self.threshold is None:
            return None
        return self.value - self.threshold

    @property
    def value_text(self) -> str:
        """``0.912 [0.906, 0.917]`` with the interval, else the value alone."""
        if self.interval is None or self.value is None:
            return _fmt(self.value)
        return f"{_fmt(self.value)} [{_fmt(self.interval[0])}, {_fmt(self.interval[1])}]"

    @property
    def explanation(self) -> str:
        """The reason it failed (if one) and the note, as one clause."""
        return "; ".join(t for t in (self.reason, self.note) if t)

    def to_dict(self) -> dict[str, Any]:
        return plain({**asdict(self), "margin": self.margin})


#: Records for :func:`check`: the Records, (Records or None, why none), or None (none given).
RecordsArg = Records | tuple[Records | None, str] | None


def _records(arg: RecordsArg, why_none: str) -> tuple[Records | None, str]:
    if isinstance(arg, Records):
        return arg, ""
    if arg is None:
        return None, why_none
    rec, why = arg
    return rec, "" if rec is not None else (why or why_none)


def check(gates: Sequence[Gate], results: Mapping[str, Any],
          baseline: Mapping[str, Any] | None = None, baseline_label: str = "--baseline",
          mode: GateMode | str = GateMode.POINT, records: RecordsArg = None,
          baseline_records: RecordsArg = None) -> list[GateOutcome]:
    """Check every gate against ``results`` (a results JSON dict); unknown paths raise RobustEvalError.

    Args:
        gates: parsed gates.
        results, baseline: results JSON dicts (the baseline: what ``baseline`` in a gate reads).
        mode: what decides a number with an interval (:class:`GateMode`).
        records, baseline_records: the two runs' per-image records (or ``(None, why not)``): a
            baseline gate on a number recorded on the same images in both is compared pair by pair
            (McNemar / paired bootstrap); its outcome carries the difference and its p-value.
    """
    mode = GateMode.parse(mode, "gate mode")
    paths = metric_paths(results)
    validate_baseline(gates, baseline, baseline_label)
    base_paths = metric_paths(baseline) if baseline is not None else {}
    run_records = _records(records, "the run's per-image records are not available")
    base_records = _records(baseline_records, f"the baseline ({baseline_label}) has no per-image records "
                                              "(run it with --records PATH)")
    outcomes = []
    for gate in gates:
        found = _lookup(paths, gate.path)
        if found is None:
            raise unknown_path_error(gate.path, paths, gate.expr)
        value = paths[found]
        base_value, base_key = None, None
        if gate.uses_baseline:
            base_key = _lookup(base_paths, gate.baseline_path or "")
            assert base_key is not None  # validate_baseline
            base_value = base_paths[base_key]
            check_comparable(gate.expr, found, results, base_key, baseline or {}, baseline_label)
        threshold = None if gate.uses_baseline and base_value is None else gate.threshold(base_value)
        o = GateOutcome(gate.expr, found, gate.op, None if value is None else float(value), threshold, False,
                        base_value, mode=mode.value, interval=interval_of(paths, found),
                        baseline_interval=None if base_key is None else interval_of(base_paths, base_key))
        if value is None:
            o.reason = "the metric is undefined (NaN) in the results"
        elif threshold is None:
            o.reason = "the baseline's metric is undefined (NaN)"
        else:
            margin_ci = None
            if base_key is not None and base_value is not None and o.interval is not None:
                margin_ci = _pair(o, gate, base_key, (results, run_records), (baseline or {}, base_records))
            _decide(o, gate, mode, margin_ci)
        outcomes.append(o)
    return outcomes


def check_comparable(expr: str, path: str, results: Mapping[str, Any], base_path: str,
                     baseline: Mapping[str, Any], baseline_label: str) -> None:
    """A baseline gate on a mean (``corruptions.mean_accuracy``) compares two means over the same
    conditions, or refuses in one line: 14 corruptions against 15 is another quantity, not a drop."""
    why = incomparable(path, results, baseline, base_path)
    if why is not None:
        raise RobustEvalError(f"gate {expr!r}: {path} of this run and of the baseline ({baseline_label}) are not the "
                              f"same quantity: {why}; run both with the same --corruptions and --severities")


def _pair(o: GateOutcome, gate: Gate, base_key: str, run: tuple[Mapping[str, Any], tuple[Records | None, str]],
          base: tuple[Mapping[str, Any], tuple[Records | None, str]]) -> tuple[float, float] | None:
    """Compare a baseline gate's number pair by pair: fill the difference and its p-value, and return the
    interval of value - threshold (None, with a note saying why, when the runs are not paired)."""
    (results, (rec, why)), (baseline, (base_rec, base_why)) = run, base
    assert o.value is not None and o.baseline_value is not None
    diff = None
    if rec is not None and base_rec is not None:
        diff, why = paired.difference(o.path, results, rec, base_key, baseline, base_rec, o.value, o.baseline_value)
    elif rec is not None:
        why = base_why
    if diff is None:
        o.note = f"not paired with the baseline: {why}"
        return None
    assert rec is not None and base_rec is not None
    o.difference, o.difference_ci, o.p_value, o.test = diff.delta, diff.ci, diff.p_value, diff.test
    o.note = paired.describe(diff) + " (paired, same images)"
    return paired.margin_interval(diff, o.path, results, rec, base_key, baseline, base_rec, o.value, o.baseline_value,
                                  gate.threshold, linear=gate.adjust_op != "*")


def _decide(o: GateOutcome, gate: Gate, mode: GateMode, margin_ci: tuple[float, float] | None) -> None:
    assert o.value is not None and o.threshold is not None
    base = (o.baseline_value, o.baseline_interval) if o.baseline_value is not None else None
    o.passed, o.decided_by, note = decide(OPS[gate.op], gate.op, mode, o.value, o.threshold, o.interval, base,
                                          gate.threshold if base is not None else None, margin_ci)
    o.note = "; ".join(t for t in (o.note, note) if t)


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
        why = o.explanation
        rows.append((o.expr, o.value_text, _fmt(o.threshold), "n/a" if margin is None else f"{margin:+.4g}",
                     ("pass" if o.passed else "FAIL") + (f" ({why})" if why else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
                     for r in rows)


def detail_text(o: GateOutcome) -> str:
    """``clean.accuracy = 0.9 [0.85, 0.94], threshold >= 0.88 (strict mode: ci_low): note`` for one outcome."""
    detail = f"{o.path} = {o.value_text}, threshold {o.op} {_fmt(o.threshold)}"
    if o.baseline_value is not None:
        base = _fmt(o.baseline_value)
        if o.baseline_interval is not None:
            base += f" [{_fmt(o.baseline_interval[0])}, {_fmt(o.baseline_interval[1])}]"
        detail += f" (baseline {base})"
    if o.mode != GateMode.POINT.value:
        detail += f" ({o.mode} mode: {o.decided_by})"
    return detail + (f": {o.explanation}" if o.explanation else "")


def failure(outcomes: Sequence[GateOutcome], subject: str = "") -> GateFailure | None:
    """A GateFailure listing the failed gates, or None when all passed."""
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return None
    about = f" for {subject}" if subject else ""
    return GateFailure(f"{len(failed)} of {len(outcomes)} gate(s) failed{about}:\n{table(failed)}")


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
