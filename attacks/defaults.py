"""Budgets: the conventional eps per dataset and threat model, and the ``--eps`` parser.

All budgets are in pixel units of [0, 1] images. Where the literature has a convention it is used
(MNIST 0.3 / 2.0 from Madry et al.; CIFAR 8/255 / 0.5 from RobustBench). For the others the L2
budget keeps the per-pixel RMS of a comparable benchmark: ``L2 = rms * sqrt(pixels)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from attacks.base import NORMS, check_norm
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import suggest

DEFAULT_EPS: dict[str, dict[str, float]] = {
    # Fashion-MNIST: Linf 0.1 is the common choice (0.3 breaks every model); L2 1.5 as in
    # robustness papers on 28x28 grey images.
    "fashion-mnist": {"Linf": 0.1, "L2": 1.5},
    "mnist": {"Linf": 0.3, "L2": 2.0},
    # scikit-learn digits: 8x8 images with 17 grey levels (steps of 1/16). Linf 0.1 is ~1.6 levels;
    # L2 0.5 over 64 pixels is an RMS of 0.0625, close to MNIST-L2's 2.0 over 784 pixels (0.071).
    "digits": {"Linf": 0.1, "L2": 0.5},
    "cifar10": {"Linf": 8 / 255, "L2": 0.5},
    "cifar100": {"Linf": 8 / 255, "L2": 0.5},
    # Tiny-ImageNet: 64x64 RGB, 4x the pixels of CIFAR, so L2 doubles to keep CIFAR's RMS.
    "tiny-imagenet": {"Linf": 8 / 255, "L2": 1.0},
}


def default_eps(dataset: str, norm: str = "Linf") -> float:
    """The conventional budget for a dataset and threat model.

    Args:
        dataset: dataset registry name; an argument after ':' is ignored (``imagefolder:/x`` has none).
        norm: ``"Linf"`` or ``"L2"``.

    Example:
        >>> default_eps("cifar10", "Linf")
        0.03137254901960784
    """
    norm = check_norm(norm)
    base = dataset.split(":", 1)[0] if isinstance(dataset, str) else dataset
    if base not in DEFAULT_EPS:
        raise RobustEvalError(
            f"no default eps for dataset {dataset!r}.{suggest(str(base), DEFAULT_EPS)} "
            "Datasets with defaults: "
            f"{', '.join(sorted(DEFAULT_EPS))}; pass the budget explicitly, e.g. --eps 8/255"
        )
    return DEFAULT_EPS[base][norm]


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


__all__ = ["DEFAULT_EPS", "NORMS", "default_eps", "parse_eps"]
