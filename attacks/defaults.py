"""Budgets as users write them: the ``--eps`` parser (``"1/255,2/255,0.1"``).

All budgets are in pixel units of [0, 1] images. The conventional budget of each dataset is a
fact about the dataset and lives on its registry entry: :func:`robustbench_lite.data.default_eps`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from attacks.base import check_norm
from robustbench_lite.errors import RobustEvalError


def _parse_token(token: object, text: str) -> float:
    if isinstance(token, bool):
        raise RobustEvalError(
            f"eps value {token!r} is not a number; write decimals (0.03) or fractions (8/255)"
        )
    if isinstance(token, numbers.Real):
        return float(token)
    if not isinstance(token, str):
        raise RobustEvalError(
            f"eps value {token!r} is not a number; write decimals (0.03) or fractions (8/255)"
        )
    t = token.strip()
    if not t:
        raise RobustEvalError(
            f"empty eps value in {text!r}; separate budgets with single commas, e.g. '1/255,2/255'"
        )
    num, slash, den = t.partition("/")
    try:
        value = float(num) / (float(den) if slash else 1.0)
    except ValueError:
        raise RobustEvalError(
            f"eps value {t!r} in {text!r} is not a number; write decimals (0.03) or fractions (8/255) "
            "separated by commas"
        ) from None
    except ZeroDivisionError:
        raise RobustEvalError(f"eps value {t!r} in {text!r} divides by zero; write e.g. 8/255") from None
    return value


def parse_eps(spec: str | float | Iterable[float | str], norm: str | None = None) -> list[float]:
    """Budgets from ``"1/255,2/255,0.1"``, a number or a list of numbers / strings: sorted, unique.

    Args:
        spec: comma-separated decimals or ``a/b`` fractions, a number, or a sequence of either.
        norm: when ``"Linf"``, budgets above 1 are rejected (images are in [0, 1]).

    Returns:
        Ascending list of distinct positive floats.

    Example:
        >>> parse_eps("2/255, 1/255,0.1")
        [0.00392156862745098, 0.00784313725490196, 0.1]
    """
    if norm is not None:
        norm = check_norm(norm)
    text = spec if isinstance(spec, str) else repr(spec)
    if isinstance(spec, str):
        tokens: list[object] = spec.split(",")
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        tokens = [spec]
    elif isinstance(spec, Iterable):
        tokens = list(spec)
    else:
        raise RobustEvalError(f"eps must be a number, a list or a string like '1/255,2/255', got {spec!r}")
    if not tokens:
        raise RobustEvalError("no eps given; pass at least one budget, e.g. '8/255'")
    values = []
    for token in tokens:
        v = _parse_token(token, text)
        if not math.isfinite(v):
            raise RobustEvalError(
                f"eps value {token!r} in {text!r} is not finite; pass a budget such as 8/255"
            )
        if v <= 0:
            raise RobustEvalError(
                f"eps value {token!r} in {text!r} must be > 0; budgets are positive, e.g. 1/255"
            )
        if norm == "Linf" and v > 1:
            raise RobustEvalError(
                f"eps value {token!r} in {text!r} is {v:g} > 1 for Linf; images are in [0,1], "
                "so pass a fraction "
                f"such as {v:g}/255"
            )
        values.append(v)
    return sorted(set(values))


__all__ = ["parse_eps"]
