"""``robust-eval report RESULTS ...``: the HTML report rebuilt from saved results."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from robustbench_lite.commands import args as a


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} report", description="Render the HTML stress-test report from saved results: one run, "
                "or several with a comparison table and a Pareto plot. The report is rebuilt from the JSON alone; "
                "the example-image grid appears when the run was made with --html (it is stored in the JSON).")
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results JSON files, or history runs as run:ID (see 'robust-eval history')")
    p.add_argument("-o", "--output", default=None, metavar="PATH",
                   help="where to write the HTML (default: the first results file with .html, "
                        "else reports/run-ID.html)")
    p.add_argument("--title", default=None, help="page title (default: from the models and datasets)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import history
    from robustbench_lite.report import write_html

    args = a.parse(parser(), argv)
    if args.output is not None:
        a.check_outputs({"--output": args.output}, {spec: spec for spec in args.results})
    runs, labels = [], []
    for spec in args.results:
        data, label = history.load_results(spec)
        runs.append(data)
        labels.append(label)
    output = args.output
    if output is None:
        first = args.results[0]
        output = (f"reports/{labels[0].replace(':', '-')}.html" if history.run_id(first) is not None
                  else str(Path(first).with_suffix(".html")))
        a.check_outputs({"--output": output}, {spec: spec for spec in args.results})  # the default path too
    path = write_html(output, runs, title=args.title)
    missing = [lbl for lbl, r in zip(labels, runs, strict=True) if "examples" not in r]
    print(f"report: {Path(path).resolve()}")
    if missing:
        print(f"note: no example-image grid for {', '.join(missing)} (made without --html; the JSON holds no images)")
    return 0
