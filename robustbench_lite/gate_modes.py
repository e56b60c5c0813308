"""Gate modes: what decides a gate on a number that has a confidence interval.

A gate ``clean.accuracy >= 0.9`` on 500 images reads a number that is 0.90 +- 0.026: whether
its point estimate lands above 0.9 is close to a coin flip. ``--gate-mode`` says what decides:

* ``point`` (the default): the point estimate, as before intervals existed;
* ``strict``: the whole interval must pass (``>=``/``>`` read its low end, ``<=``/``<`` its high
  end): a pass means the model is better than the threshold, not merely lucky;
* ``lenient``: fails only when the whole interval fails (the other end): a failure means the model
  is worse, not merely unlucky.

For a baseline gate (``>= baseline - 0.01``) the interval is that of the paired difference with
the baseline when both runs were recorded on the same images; otherwise each run's own interval,
the value's deciding end against the baseline's opposite end. ``==`` and ``!=`` compare the point
value in every mode.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from robustbench_lite.errors import RobustEvalError


class GateMode(enum.Enum):
    """``point``, ``strict`` or ``lenient`` (see the module docstring); parse user text with :meth:`parse`."""

    POINT = "point"
    STRICT = "strict"
    LENIENT = "lenient"

    @classmethod
    def parse(cls, value: GateMode | str, flag: str = "--gate-mode") -> GateMode:
        """The mode named by ``value``; a RobustEvalError naming the choices otherwise."""
        if isinstance(value, GateMode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise RobustEvalError(
                f"{flag} {value!r} is not a gate mode; choose point (the estimate decides), strict (the whole 95% "
                "interval must pass) or lenient (fails only if the whole interval fails), e.g. --gate-mode strict"
            ) from None

    def bound(self, op: str) -> str | None:
        """Which end of the interval decides ``op`` in this mode (``low``, ``high``), or None (the point)."""
        if self is GateMode.POINT or op not in (">=", ">", "<=", "<"):
            return None
        upward = op in (">=", ">")
        return "low" if upward == (self is GateMode.STRICT) else "high"


def decide(compare: Callable[[float, float], bool], op: str, mode: GateMode, value: float, threshold: float,
           interval: tuple[float, float] | None = None,
           baseline: tuple[float, tuple[float, float] | None] | None = None,
           threshold_of: Callable[[float], float] | None = None,
           margin_interval: tuple[float, float] | None = None) -> tuple[bool, str, str]:
    """Decide one gate.

    Args:
        compare: the gate's comparison (``operator.ge``...); op: its text (``>=``...).
        mode: the gate mode.
        value, threshold: the point value and the threshold it is compared with.
        interval: the value's interval, or None.
        baseline: for a baseline gate, the baseline's value and its own interval (or None).
        threshold_of: for a baseline gate, the threshold as a function of the baseline's value.
        margin_interval: for a baseline gate paired on the same images, the interval of
            ``value - threshold`` from the paired difference; it decides when given.

    Returns:
        (passed, what decided: ``point``, ``ci_low``, ``ci_high``, ``paired ci_low``, ``paired ci_high``,
        a note for the outcome, "" when there is nothing to add).
    """
    side = mode.bound(op)
    if side is None:
        note = "" if mode is GateMode.POINT else f"{op} compares the point value (an interval does not decide it)"
        return compare(value, threshold), "point", note
    if margin_interval is not None and all(math.isfinite(m) for m in margin_interval):
        return compare(margin_interval[0] if side == "low" else margin_interval[1], 0.0), f"paired ci_{side}", ""
    base_interval = baseline[1] if baseline is not None else None
    if interval is None and base_interval is None:
        return compare(value, threshold), "point", "no interval: decided on the point value"
    v_lo, v_hi = interval or (value, value)
    if baseline is not None and threshold_of is not None:
        b_lo, b_hi = base_interval or (baseline[0], baseline[0])
        ends = (threshold_of(b_lo), threshold_of(b_hi))
        note = "each run's own interval decides" + ("" if interval is not None else " (the value has none)")
    else:
        ends, note = (threshold, threshold), ""
    # the value's deciding end against the threshold's opposite end: both pessimistic (strict) or optimistic
    passed = compare(v_lo, max(ends)) if side == "low" else compare(v_hi, min(ends))
    return passed, f"ci_{side}", note
