"""What every subcommand's parser shares: one-line errors, value types, the run and gate flags, --config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import MAX_SEED, comma_list

PROG = "robust-eval"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse's own print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        raise RobustEvalError(f"{message} (see '{self.prog} --help')")


def _at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value

    return parse


#: argparse types: counts, limits and batch sizes (>= 1); seeds and counts where 0 means none or all (>= 0).
positive_int = _at_least(1)
non_negative_int = _at_least(0)

def seed_int(text: str) -> int:
    """A seed: an integer in [0, MAX_SEED]."""
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63 - 1], got {value}")
    return value


def names(values: Sequence[str] | str | None, flag: str, example: str) -> list[str]:
    """``--suite a,b --suite c`` -> [a, b, c] (order kept, duplicates dropped); None -> []."""
    return [] if not values else list(comma_list(values, flag, example))


def add_run_arguments(parser: argparse.ArgumentParser, *, config: bool = True, progress: bool = True) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--seed", type=seed_int, default=0, help="seed for every random choice (default: 0)")
    group.add_argument("--data-dir", default=None,
                       help="searched first for dataset files (then $ROBUST_EVAL_DATA, system locations, download)")
    if config:
        group.add_argument("--config", default=None, metavar="FILE",
                           help="YAML file of option: value defaults; the command line wins")
    if progress:
        group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--inference``: what the model computes in, and on which path."""
    from robustbench_lite.engine.plans import MODES, PRECISIONS

    group = parser.add_argument_group("inference")
    group.add_argument("--precision", choices=tuple(PRECISIONS), default=None,
                       help="compute in this precision: a cast copy of a PyTorch model, attacks included; bf16/fp16 "
                            "report their agreement with fp32 on the clean set (default: as shipped)")
    group.add_argument("--inference", choices=MODES, default="auto",
                       help="auto: the fastest forward path whose predictions equal eager PyTorch's on a probe "
                            "batch (traced and frozen graph, channels-last, parallel batches); eager: the module "
                            "as given (default: auto)")


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Every registered suite's option flags, one argument group per suite."""
    from robustbench_lite.suites import SUITES

    for name, suite in SUITES.items():
        suite.Options.add_arguments(parser.add_argument_group(f"{name} suite"))


GATE_HELP = """gate syntax: PATH OP THRESHOLD
  PATH       a number in the results JSON, keys joined by dots: clean.accuracy, corruptions.mean_accuracy,
             corruptions.accuracy.fog.3, efficiency.latency_ms, shift.worst_accuracy, timings.total,
             adversarial.<attack>.<norm>[<eps>].robust_accuracy (eps as 0.1 or 8/255),
             adversarial.worst_case.Linf[0.1]; a wrong path lists the valid ones
  OP         >= <= > < == !=
  THRESHOLD  a number (0.88, 88%, 8/255), or baseline / baseline.PATH with an optional + - * NUMBER
  intervals  an accuracy's 95% interval ends are paths too: clean.accuracy.ci_low >= 0.9;
             --gate-mode strict|lenient lets the whole interval decide; a baseline gate on two runs
             recorded on the same images (--records) is compared pair by pair (McNemar, p-value shown)
examples:
  --gate 'clean.accuracy >= 0.88' --gate 'adversarial.pgd.Linf[0.1].robust_accuracy >= 0.30'
  --gate 'corruptions.mean_accuracy >= baseline - 0.02' --baseline run:12
exit codes: 0 all gates passed, 1 a gate failed (results, report and history are written first),
2 a malformed gate or a path not in the results (the valid paths are listed)"""


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gates (exit 1 when one fails; see the syntax below)")
    g.add_argument("--gate", action="append", default=None, metavar="EXPR",
                   help="a threshold on a result, e.g. 'clean.accuracy >= 0.9'; repeatable (default: none)")
    g.add_argument("--baseline", default=None, metavar="RESULTS|run:ID",
                   help="what 'baseline' in a gate refers to: a results JSON, or a run from 'robust-eval history' "
                        "as run:ID or just ID (default: none)")
    g.add_argument("--gate-mode", default="point", metavar="point|strict|lenient",
                   help="what decides a gate on a number with a 95%% interval: point (the estimate), strict (the "
                        "whole interval must pass) or lenient (fails only if the whole interval fails) "
                        "(default: point)")
    g.add_argument("--junit", default=None, metavar="PATH", help="write the gate outcomes as JUnit XML here")
    p.epilog = ((p.epilog + "\n\n") if p.epilog else "") + GATE_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse twice when --config is given: the file sets defaults, the command line wins."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        from robustbench_lite.config import load_yaml

        values = load_yaml(args.config)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RobustEvalError(
                f"config file {args.config} has unknown options: {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        values = {dest: _config_value(parser, args.config, dest, value) for dest, value in values.items()}
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    check_values(parser, args)
    return args


def check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No flag of any command takes an empty value or a NaN/infinite number (one line, before any work)."""
    import math

    for action in parser._actions:
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.strip():
                raise RobustEvalError(f"{flag} is empty; give a value, or leave {flag} out (see '{parser.prog} "
                                      "--help')")
            if isinstance(item, float) and not math.isfinite(item):
                raise RobustEvalError(f"{flag} {item} is not a finite number; give a number")


def _config_value(parser: argparse.ArgumentParser, path: str, dest: str, value: Any) -> Any:
    """A --config file's value checked and typed exactly as the flag's text would be (one line if wrong)."""
    action = next(a for a in parser._actions if a.dest == dest)
    flag = action.option_strings[-1] if action.option_strings else dest
    where = f"config file {path}: {dest}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise RobustEvalError(f"{where} is a switch ({flag}): write true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction) or action.nargs not in (None, "?"):  # flags that take a list
        items = value if isinstance(value, list) else [value]
        return [_config_scalar(action, where, flag, v) for v in items]
    if (isinstance(value, list) and action.type is None and value
            and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value)):
        value = ",".join(map(str, value))  # a list option (--severities 1,3,5) written as a YAML list
    if isinstance(value, (list, dict)):
        raise RobustEvalError(f"{where} takes one value ({flag} {action.metavar or 'VALUE'}), got a "
                              f"{'list' if isinstance(value, list) else 'mapping'}: {value!r}")
    return _config_scalar(action, where, flag, value)


def _config_scalar(action: argparse.Action, where: str, flag: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, dict)) or isinstance(value, bool) and action.type is not None:
        raise RobustEvalError(f"{where} takes a single {('number' if action.type else 'value')} ({flag}), got "
                              f"{value!r}")
    text = str(value)
    try:
        typed = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise RobustEvalError(f"{where}: {exc} (as {flag} would be)") from None
    except RobustEvalError as exc:
        raise RobustEvalError(f"{where}: {exc}") from None
    if action.choices is not None and typed not in action.choices:
        raise RobustEvalError(f"{where} is {value!r}; valid: {', '.join(map(str, action.choices))}")
    return typed


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None] | None = None) -> None:
    """Every output path writable, none twice, none over an input: before any work (one line, exit 2)."""
    from robustbench_lite.output_paths import check_distinct, check_output

    for flag, path in outputs.items():
        if path is not None:
            check_output(path, flag)
    check_distinct(outputs, inputs)


def show_progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def log(message: str) -> None:
    print(message, file=sys.stderr)


def leave_group() -> bool:
    """After distributed work: leave the torchrun group; True on ranks other than 0 (they stop)."""
    from robustbench_lite import distributed

    if not distributed.active():
        return False
    main = distributed.is_main()
    distributed.teardown()
    return not main
