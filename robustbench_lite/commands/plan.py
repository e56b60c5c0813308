"""``robust-eval plan --margin 0.01``: how many test images an interval of a given half-width needs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError

#: Half-widths of the short table (fractions), besides the one asked for.
MARGINS = (0.005, 0.01, 0.02, 0.03, 0.05)
#: The accuracy whose interval is widest for a given number of images.
WORST = 0.5


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} plan",
                 description="How many test images a 95%% interval of +-MARGIN on an accuracy needs (Wilson score "
                             "interval): at the accuracy you expect and at the worst case, 50%%. Use it to pick "
                             "--limit, or to see what a difference between two models needs to be seen.",
                 epilog="examples:\n  robust-eval plan --margin 0.01               # +-1 point\n"
                        "  robust-eval plan --margin 2% --accuracy 0.95",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--margin", required=True, metavar="M",
                   help="the interval's half-width as a fraction (0.01 is +-1 point) or a percentage (1%%)")
    p.add_argument("--accuracy", default="0.9", metavar="A",
                   help="the accuracy you expect, a fraction or a percentage (default: 0.9)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _fraction(text: str, flag: str, lo: float, hi: float, closed: bool, what: str, example: str) -> float:
    from robustbench_lite.formatting import parse_number

    value = parse_number(text)
    inside = value is not None and ((lo <= value <= hi) if closed else (lo < value < hi))
    if value is None or not inside:
        bounds = f"in [{lo:g}, {hi:g}]" if closed else f"between {lo:g} and {hi:g} (exclusive)"
        raise RobustEvalError(f"{flag} {text}: {what} must be a fraction {bounds}, or a percentage; "
                              f"e.g. {flag} {example}")
    return value


def run(argv: Sequence[str]) -> int:
    from robustbench_lite.statistics import LEVEL, sample_size

    args = a.parse(parser(), argv)
    margin = _fraction(args.margin, "--margin", 0.0, 0.5, False, "the half-width (0.01 is +-1 point)", "0.01")
    accuracy = _fraction(args.accuracy, "--accuracy", 0.0, 1.0, True, "the expected accuracy", "0.9")
    level = f"{100 * LEVEL:.0f}%"
    points = f"{100 * margin:g} point" + ("" if 100 * margin == 1 else "s")
    print(f"a {level} interval of +-{points} on an accuracy needs:")
    print(f"  {sample_size(margin, accuracy):,} test images at an accuracy near {100 * accuracy:g}%")
    print(f"  {sample_size(margin, WORST):,} test images at {100 * WORST:g}% (the worst case: the widest interval)")
    accuracies = [accuracy] if accuracy == WORST else [accuracy, WORST]
    rows = [("+-points", *(f"at {100 * acc:g}%" for acc in accuracies))]
    for m in sorted({*MARGINS, margin}):
        rows.append((f"{100 * m:g}", *(f"{sample_size(m, acc):,}" for acc in accuracies)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\ntest images by half-width:")
    for r in rows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print("\n(Wilson score interval; a run with --limit N prints its own width)")
    return 0
