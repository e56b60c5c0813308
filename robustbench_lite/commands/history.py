"""``robust-eval history``: past evaluations, newest first."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from robustbench_lite.commands import args as a


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} history", description="List past evaluations from the run history "
                "($ROBUST_EVAL_HOME/history.sqlite), newest first. Any run can be re-rendered with "
                "'robust-eval report run:ID' and used as a gate baseline with '--baseline run:ID' (or just ID).")
    p.add_argument("--model", default=None, metavar="PATTERN", help="only these models, fnmatch (default: all)")
    p.add_argument("--dataset", default=None, metavar="PATTERN", help="only these datasets, fnmatch (default: all)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only runs that ran this suite (default: all)")
    p.add_argument("--limit", type=a.non_negative_int, default=20, metavar="N",
                   help="show the newest N matching runs (default: 20; 0: all)")
    p.add_argument("--show", type=a.positive_int, default=None, metavar="ID",
                   help="print run ID's full results JSON instead of the list")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import history
    from robustbench_lite.formatting import format_value

    args = a.parse(parser(), argv)
    if args.suite is not None:
        from robustbench_lite.suites import SUITES

        SUITES.entry(args.suite)  # a suite no run can have ran is a typo: one line, with the valid names
    if args.show is not None:
        print(json.dumps(history.get(args.show), indent=2))
        return 0
    runs = history.list_runs(args.model, args.dataset, args.suite, args.limit or None)
    if not runs:
        filters = ", ".join(f"{k} {v}" for k, v in (("model", args.model), ("dataset", args.dataset),
                                                     ("suite", args.suite)) if v)
        print(f"no runs {'match ' + filters if filters else 'recorded yet'} in {history.db_path()}"
              + ("" if filters else "; every evaluation adds one"))
        return 0
    rows = [("id", "date", "model", "dataset", "images", "suites", "gates", "headline")]
    for r in runs:
        gates_text = "—" if not r.gates_total else ("pass" if not r.gates_failed else f"{r.gates_failed} failed")
        heads = "  ".join(f"{k} {format_value(v[0], v[1])}" for k, v in list(r.headline.items())[:4])
        rows.append((str(r.id), r.when, r.model, r.dataset, str(r.n_examples), ",".join(r.suites), gates_text, heads))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    return 0
