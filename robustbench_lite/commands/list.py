"""``robust-eval list WHAT [PATTERN]``: one loop over the registries (each entry answers ``describe()``)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError

Rows = list[tuple[str, str]]


def _attack_rows(pattern: str) -> Rows:
    """The attack catalogue: native attacks and the ``torchattacks:`` provider's."""
    import attacks

    return [(n, attacks.describe(n)) for n in attacks.available(pattern)]


def _model_rows(pattern: str) -> Rows:
    """Zoo models and one row per model family (``torchvision:NAME``), or one family's names (``'timm:*'``)."""
    from robustbench_lite.sources import architectures

    return architectures.listing(pattern)


def _attack_budgets() -> str:
    from robustbench_lite.data import default_eps_table

    defaults = ", ".join(f"{d} {v['Linf']:.4g}/{v['L2']:.4g}" for d, v in default_eps_table().items())
    return f"default eps (Linf/L2) per dataset: {defaults}"


class _Listed(NamedTuple):
    """What ``robust-eval list WHAT`` lists: a registry (imported when listed) and a last line under it."""

    module: str
    registry: str
    footer: Callable[[], str] | None = None
    rows: Callable[[str], Rows] | None = None  # instead of the registry's own listing


LISTABLE = {
    "models": _Listed("robustbench_lite.sources.architectures", "FAMILIES", rows=_model_rows),
    "datasets": _Listed("robustbench_lite.data", "DATASETS"),
    "suites": _Listed("robustbench_lite.suites", "SUITES"),
    "attacks": _Listed("attacks", "ATTACKS", _attack_budgets, _attack_rows),
    "corruptions": _Listed("corruptions", "CORRUPTIONS"),
    "shifts": _Listed("robustbench_lite.shift", "SHIFTS"),
    "defences": _Listed("robustbench_lite.training.defences", "DEFENCES"),
    "compression": _Listed("robustbench_lite.training.compression", "METHODS"),
    "formats": _Listed("robustbench_lite.sources", "FORMATS"),
}


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} list", description="List registered models, datasets, suites, attacks, "
                 "corruptions, shifts, defences, compression methods or model file formats.")
    p.add_argument("what", choices=list(LISTABLE), help="which registry")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'mobilenet*', or a model "
                   "family's names: 'timm:*', 'torchvision:res*' (default: all)")
    return p


def _listing(what: str, pattern: str) -> Rows:
    listed = LISTABLE[what]
    rows = (listed.rows(pattern) if listed.rows
            else getattr(importlib.import_module(listed.module), listed.registry).listing(pattern))
    return rows + [("", listed.footer())] if rows and listed.footer else rows


def run(argv: Sequence[str]) -> int:
    args = a.parse(parser(), argv)
    rows = _listing(args.what, args.pattern)
    if not rows:
        raise RobustEvalError(f"no {args.what} match '{args.pattern}'; try 'robust-eval list {args.what}'")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0
