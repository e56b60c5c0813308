"""Numbers for people, written and read: headline values, report cells, thresholds.

A leaf: suites format their own report sections with it, and the gates, the report, the
comparison table and the history listing format headline metrics with it, so a metric reads the
same everywhere. :func:`parse_number` reads what people write (``88%``, ``8/255``).
"""

from __future__ import annotations

import math
import re
from typing import Any

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"^(?P<num>[+-]?{_NUMBER})(?:/(?P<den>{_NUMBER}))?(?P<pct>%)?$")


def parse_number(text: str) -> float | None:
    """``0.88``, ``88%``, ``-1e-3``, ``8/255`` -> float; None if ``text`` is not a number."""
    m = _NUMBER_RE.match(text.strip())
    if not m:
        return None
    value = float(m["num"])
    if m["den"] is not None:
        den = float(m["den"])
        if den == 0:
            return None
        value /= den
    return value / 100 if m["pct"] else value


def finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage (``0.873`` -> ``87.3%``); ``n/a`` for anything else."""
    return f"{100 * value:.{digits}f}%" if finite(value) else "n/a"


def num(value: Any, digits: int = 4) -> str:
    """Whole numbers with thousands separators, others to ``digits`` significant digits."""
    if not finite(value):
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def si(value: Any) -> str:
    """Large counts with k/M/G (``780000`` -> ``780 k``)."""
    if not finite(value):
        return "n/a"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def signed(value: Any) -> str:
    """A difference with its sign (``+0.012``)."""
    return f"{value:+.4g}" if finite(value) else "n/a"


def format_value(value: float | None, unit: str) -> str:
    """A headline value: fractions as percent, ratios to 3 decimals, ms/MB with their unit, counts with k/M/G."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit in ("ms", "MB"):
        return f"{value:.3g} {unit}"
    return si(value)
