"""``robust-eval``: argument parsing only. Builds a config, calls the API, maps errors to exit codes.

    robust-eval [--model M] [--dataset D] [--suite S[,S...]] [...]   evaluate (the default command)
    robust-eval train --model M --dataset D [...]                    train a checkpoint
    robust-eval list models|datasets|suites|attacks|corruptions [PATTERN]

Exit codes: 0 ok, 1 a robustness gate failed, 2 a user error (one line, no traceback unless
``--debug``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from robustbench_lite import __version__
from robustbench_lite.errors import GateFailure, RobustEvalError

PROG = "robust-eval"
COMMANDS = ("eval", "train", "list")
LISTABLE = ("models", "datasets", "suites", "attacks", "corruptions")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse's own print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        raise RobustEvalError(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def _split_list(values: Sequence[str] | None) -> list[str]:
    """``--suite a,b --suite c`` -> [a, b, c], order kept, duplicates dropped."""
    out: list[str] = []
    for value in values or []:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--seed", type=_positive_int, default=0, help="seed for every random choice (default: 0)")
    group.add_argument("--data-dir", default=None,
                       help="searched first for dataset files (then $ROBUST_EVAL_DATA, system locations, download)")
    group.add_argument("--config", default=None, metavar="FILE",
                       help="YAML file of option: value defaults; the command line wins")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def eval_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Evaluate an image classifier's robustness and efficiency.",
                epilog="Other commands: 'robust-eval train --help', 'robust-eval list models'.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="model name (default: the checkpoint's model, else shufflenetv2); see 'robust-eval list models'")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="weights to evaluate (default: the cached quick baseline, trained on first use)")
    g.add_argument("--pretrained", action="store_true",
                   help="without --checkpoint: use the quick baseline fine-tuned from ImageNet weights")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="dataset name (default: the checkpoint's dataset, else fashion-mnist); "
                        "see 'robust-eval list datasets'")
    g.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate the first N test images (default: all)")
    g.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch size (default: 256)")
    g = p.add_argument_group("suites")
    g.add_argument("--suite", action="append", default=None, metavar="NAME[,NAME]",
                   help="suites to run, repeatable or comma-separated (default: clean,efficiency); "
                        "see 'robust-eval list suites'")
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="PATH", help="write the results JSON here")
    _common(p)
    return p


def train_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} train", description="Train a model with the standard recipe and write a checkpoint.")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="shufflenetv2", help="model name (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    g.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    g.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images (default: all)")
    g.add_argument("--eval-limit", type=_positive_int, default=None, metavar="N",
                   help="measure test accuracy on the first N test images (default: all)")
    g = p.add_argument_group("optimisation (default: the quick recipe)")
    g.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: 2)")
    g.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: 128)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate, AdamW one-cycle (default: 0.004)")
    g.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: 0.0005)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing (default: 0)")
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="PATH",
                   help="checkpoint path (default: the cache, as the (model, dataset) baseline)")
    _common(p)
    return p


def list_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} list", description="List registered models, datasets, suites, attacks or corruptions.")
    p.add_argument("what", choices=LISTABLE, help="which registry")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'mobilenet*' (default: all)")
    return p


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse twice when --config is given: the file sets defaults, the command line wins."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        from robustbench_lite.config import load_yaml

        values = load_yaml(args.config)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RobustEvalError(
                f"config file {args.config} has unknown options: {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        if isinstance(values.get("suite"), str):
            values["suite"] = [values["suite"]]
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args


def _print_table(result: Any) -> None:
    print(f"\n{result.model} on {result.dataset} ({result.n_examples} test images, seed {result.seed})")
    for name, suite in result.suites.items():
        summary = suite.summary()
        if not summary:
            continue
        cells = "  ".join(f"{k} {v}" for k, v in summary.items())
        print(f"  {name:<12} {cells}   [{result.timings.get(name, 0):.1f} s]")


def run_eval(argv: Sequence[str]) -> int:
    from robustbench_lite.api import evaluate
    from robustbench_lite.config import DEFAULT_SUITES, RunConfig

    args = _parse(eval_parser(), argv)
    config = RunConfig(
        model=args.model, dataset=args.dataset, suites=_split_list(args.suite) or list(DEFAULT_SUITES),
        checkpoint=args.checkpoint, pretrained=args.pretrained, limit=args.limit, batch_size=args.batch_size,
        device=args.device, seed=args.seed, data_dir=args.data_dir, json=args.json,
        show_progress=not args.no_progress and sys.stderr.isatty(),
    )
    result = evaluate(config, log=lambda m: print(m, file=sys.stderr))
    _print_table(result)
    if args.json:
        path = result.write_json(args.json)
        print(f"\nresults: {Path(path).resolve()}")
    return 0


def run_train(argv: Sequence[str]) -> int:
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.train import train

    args = _parse(train_parser(), argv)
    cfg = TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=args.seed, output=args.output,
        device=args.device, data_dir=args.data_dir, pretrained=args.pretrained, limit=args.limit,
        eval_limit=args.eval_limit, show_progress=not args.no_progress and sys.stderr.isatty(),
    )
    _, meta, path = train(cfg, log=lambda m: print(m, file=sys.stderr))
    print(f"checkpoint: {path}\ntest accuracy: {meta['clean_accuracy']:.4f}")
    return 0


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
        from attacks import ATTACKS

        return [(n, (ATTACKS.entry(n).__doc__ or "").strip().splitlines()[0]) for n in ATTACKS.list(pattern)]
    from corruptions import CORRUPTIONS

    return [(n, f"{CORRUPTIONS.entry(n)().family}") for n in CORRUPTIONS.list(pattern)]


def run_list(argv: Sequence[str]) -> int:
    args = list_parser().parse_args(argv)
    rows = _listing(args.what, args.pattern)
    if not rows:
        raise RobustEvalError(f"no {args.what} match '{args.pattern}'; try 'robust-eval list {args.what}'")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


HANDLERS: dict[str, Callable[[Sequence[str]], int]] = {"eval": run_eval, "train": run_train, "list": run_list}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in HANDLERS else "eval"
    rest = argv[1:] if argv and argv[0] in HANDLERS else argv
    debug = "--debug" in rest
    try:
        return HANDLERS[command](rest)
    except RobustEvalError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except GateFailure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
