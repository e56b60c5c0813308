"""``robust-eval list WHAT [PATTERN]``: the registries."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError

LISTABLE = ("models", "datasets", "suites", "attacks", "corruptions", "shifts", "defences")


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} list", description="List registered models, datasets, suites, attacks or corruptions.")
    p.add_argument("what", choices=LISTABLE, help="which registry")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'mobilenet*' (default: all)")
    return p


def _listing(what: str, pattern: str) -> list[tuple[str, str]]:
    if what == "models":
        from robustbench_lite.models import MODELS

        return [(n, MODELS.entry(n).reference) for n in MODELS.list(pattern)]
    if what == "datasets":
        from robustbench_lite.data import DATASETS

        return [(n + (":PATH" if DATASETS.entry(n).takes_arg else ""), DATASETS.entry(n).description)
                for n in DATASETS.list(pattern)]
    if what == "suites":
        from robustbench_lite.suites import SUITES

        return [(n, SUITES.entry(n).description) for n in SUITES.list(pattern)]
    if what == "attacks":
        import attacks
        from robustbench_lite.data import default_eps_table

        rows = [(n, attacks.describe(n)) for n in attacks.available(pattern)]
        defaults = ", ".join(f"{d} {v['Linf']:.4g}/{v['L2']:.4g}" for d, v in default_eps_table().items())
        return rows + [("", f"default eps (Linf/L2) per dataset: {defaults}")]
    if what == "defences":
        from robustbench_lite.training.defences import DEFENCES

        return [(n, DEFENCES.entry(n).describe()) for n in DEFENCES.list(pattern)]
    if what == "shifts":
        from robustbench_lite.shift import SHIFTS

        return [(n, SHIFTS.entry(n).description) for n in SHIFTS.list(pattern)]
    from corruptions import CORRUPTIONS

    return [(n, f"{CORRUPTIONS.entry(n)().family}") for n in CORRUPTIONS.list(pattern)]


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    rows = _listing(args.what, args.pattern)
    if not rows:
        raise RobustEvalError(f"no {args.what} match '{args.pattern}'; try 'robust-eval list {args.what}'")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0
