"""``robust-eval gate RESULTS --gate EXPR``: check gates on saved results."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustbench_lite import outputs
from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} gate", description="Check gates on saved results (a results JSON or a history run) "
                "without evaluating again; exit 1 when one fails.")
    p.add_argument("results", metavar="RESULTS", help="a results JSON, or a history run as run:ID")
    a.add_gate_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import history
    from robustbench_lite.gate_modes import GateMode

    args = a.parse(parser(), argv)
    if not args.gate:
        raise RobustEvalError("no gate given; pass --gate EXPR, e.g. --gate 'clean.accuracy >= 0.9'")
    a.check_outputs({"--junit": args.junit}, {args.results: args.results, "--baseline": args.baseline})
    mode = GateMode.parse(args.gate_mode)
    gate_list, baseline, baseline_label = outputs.load_gates(args.gate, args.baseline)
    data, label = history.load_results(args.results)
    json_path = None if history.run_id(args.results) is not None else args.results
    outcomes = outputs.check_gates(gate_list, data, baseline, baseline_label, mode, json_path=json_path)
    subject = f"{data.get('model')} on {data.get('dataset')} ({label})"
    outputs.finish_gates(gate_list, outcomes, args.junit, subject,
                  {"model": data.get("model"), "dataset": data.get("dataset"), "results": label})
    return 0
