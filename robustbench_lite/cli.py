"""``robust-eval``: argument parsing only. Builds a config, calls the API, maps errors to exit codes.

    robust-eval [--model M] [--dataset D] [--suite S[,S...]] [...]   evaluate (the default command)
                [--json PATH] [--html PATH] [--gate EXPR ...] [--baseline RESULTS|run:ID] [--junit PATH]
    robust-eval train --model M --dataset D [--defence D[,D]] [...]  train a checkpoint (defences: list defences)
    robust-eval compare A.pt B.pt [RESULTS.json ...] [--suite full]    one table, deltas against the first
    robust-eval sweep [CONFIG.yaml] [--models A,B --datasets X --suites S] [--resume]   cached grid of cells
    robust-eval list models|datasets|suites|attacks|corruptions|shifts|defences [PATTERN]
    robust-eval report RESULTS [RESULTS ...] [-o PATH]                HTML report from results JSON / history runs
    robust-eval gate RESULTS --gate EXPR [...]                        check gates on saved results
    robust-eval history [--model P] [--dataset P] [--suite S] [--limit N] [--show ID]

Exit codes: 0 ok, 1 a robustness gate failed, 2 a user error (one line, no traceback unless
``--debug``), 3 some sweep cells failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from robustbench_lite import __version__
from robustbench_lite.errors import GateFailure, RobustEvalError

PROG = "robust-eval"
COMMANDS = ("eval", "train", "compare", "sweep", "list", "report", "gate", "history")


def _attack_budgets() -> str:
    import attacks

    defaults = ", ".join(f"{d} {v['Linf']:.4g}/{v['L2']:.4g}" for d, v in sorted(attacks.DEFAULT_EPS.items()))
    return f"default eps (Linf/L2) per dataset: {defaults}"


class _Listed(NamedTuple):
    """What ``robust-eval list WHAT`` lists: a registry (imported when listed) and a last line under it."""

    module: str
    registry: str
    footer: Callable[[], str] | None = None


LISTABLE = {
    "models": _Listed("robustbench_lite.models", "MODELS"),
    "datasets": _Listed("robustbench_lite.data", "DATASETS"),
    "suites": _Listed("robustbench_lite.suites", "SUITES"),
    "attacks": _Listed("attacks", "ATTACKS", _attack_budgets),
    "corruptions": _Listed("corruptions", "CORRUPTIONS"),
    "shifts": _Listed("robustbench_lite.shift", "SHIFTS"),
    "defences": _Listed("robustbench_lite.defences", "DEFENCES"),
}


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
                epilog="other commands: 'robust-eval train --help', 'robust-eval compare --help',\n"
                       "  'robust-eval list models', 'robust-eval report --help',"
                       " 'robust-eval gate --help', 'robust-eval history --help'")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="model name (default: the checkpoint's model, else shufflenetv2); "
                        "see 'robust-eval list models'")
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
                   help="suites to run, repeatable or comma-separated; 'full' runs every suite "
                        "(default: clean,efficiency); see 'robust-eval list suites'")
    from robustbench_lite.suites import SUITES

    for name, suite in SUITES.items():
        suite.add_arguments(p.add_argument_group(f"{name} suite"))
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="PATH", help="write the results JSON here (default: none)")
    g.add_argument("--html", default=None, metavar="PATH",
                   help="write the HTML stress-test report here: one self-contained file (default: none)")
    g.add_argument("--examples", type=_positive_int, default=8, metavar="N",
                   help="with --html: test images in the report's clean/corrupted/adversarial example grid, "
                        "also stored in the JSON under 'examples' (default: 8; 0: no grid)")
    g.add_argument("--no-history", action="store_true",
                   help="do not record this run in the run history ($ROBUST_EVAL_HOME/history.sqlite)")
    _gate_arguments(p)
    _common(p)
    return p


GATE_HELP = """gate syntax: PATH OP THRESHOLD
  PATH       a number in the results JSON, keys joined by dots: clean.accuracy, corruptions.mean_accuracy,
             corruptions.accuracy.fog.3, efficiency.latency_ms, shift.worst_accuracy, timings.total,
             adversarial.<attack>.<norm>[<eps>].robust_accuracy (eps as 0.1 or 8/255),
             adversarial.worst_case.Linf[0.1]; a wrong path lists the valid ones
  OP         >= <= > < == !=
  THRESHOLD  a number (0.88, 88%, 8/255), or baseline / baseline.PATH with an optional + - * NUMBER
examples:
  --gate 'clean.accuracy >= 0.88' --gate 'adversarial.pgd.Linf[0.1].robust_accuracy >= 0.30'
  --gate 'corruptions.mean_accuracy >= baseline - 0.02' --baseline run:12
exit codes: 0 all gates passed, 1 a gate failed (results, report and history are written first),
2 a malformed gate or a path not in the results (the valid paths are listed)"""


def _gate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("gates (exit 1 when one fails; see the syntax below)")
    g.add_argument("--gate", action="append", default=None, metavar="EXPR",
                   help="a threshold on a result, e.g. 'clean.accuracy >= 0.9'; repeatable (default: none)")
    g.add_argument("--baseline", default=None, metavar="RESULTS|run:ID",
                   help="what 'baseline' in a gate refers to: a results JSON, or a run from 'robust-eval history' "
                        "as run:ID or just ID (default: none)")
    g.add_argument("--junit", default=None, metavar="PATH", help="write the gate outcomes as JUnit XML here")
    p.epilog = ((p.epilog + "\n\n") if p.epilog else "") + GATE_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def train_parser() -> argparse.ArgumentParser:
    from robustbench_lite.train import QUICK

    p = _Parser(prog=f"{PROG} train", description="Train a model with the standard recipe, optionally with defences "
                "(adversarial training, augmentation), and write a checkpoint that records the full recipe.",
                epilog="defences: 'robust-eval list defences'. Examples:\n"
                       "  robust-eval train --defence pgd-at --eps 0.1 --epochs 4 --output pgd.pt\n"
                       "  robust-eval train --defence augmix,trades --beta 6 --output at.pt\n"
                       "  robust-eval train --defence fgsm-rs --output fast.pt --resume   # after an interruption",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="shufflenetv2", help="model name (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    init = g.add_mutually_exclusive_group()
    init.add_argument("--pretrained", action="store_true",
                      help="fine-tune torchvision's ImageNet weights (the transfer path; needs the weights file)")
    init.add_argument("--from-scratch", action="store_true", help="random initialisation (the default)")
    g.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images (default: all)")
    g.add_argument("--eval-limit", type=_positive_int, default=None, metavar="N",
                   help="measure test accuracy on the first N test images (default: all)")
    g = p.add_argument_group("optimisation (default: the quick recipe)")
    g.add_argument("--epochs", type=_positive_int, default=None, help=f"epochs (default: {QUICK.epochs})")
    g.add_argument("--batch-size", type=_positive_int, default=None, help=f"batch size (default: {QUICK.batch_size})")
    g.add_argument("--lr", type=float, default=None, help=f"peak learning rate, AdamW one-cycle (default: {QUICK.lr})")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay (default: {QUICK.weight_decay})")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing (default: 0)")
    g = p.add_argument_group("defences (see 'robust-eval list defences')")
    g.add_argument("--defence", "--defense", action="append", default=None, metavar="NAME[,NAME]",
                   help="defences to train with, comma-separated or repeated: fgsm-rs, pgd-at, trades, augmix, "
                        "autoaugment, randaugment, trivialaugment, cutmix, mixup, gaussian-noise (default: none)")
    g.add_argument("--eps", type=_eps_value, default=None,
                   help="adversarial training budget, Linf pixel units, e.g. 0.1 or 8/255 (default: the dataset's)")
    g.add_argument("--steps", type=_positive_int, default=None,
                   help="attack steps for pgd-at and trades (default: 5)")
    g.add_argument("--alpha", type=_eps_value, default=None,
                   help="attack step size (default: 1.25*eps for fgsm-rs, 2.5*eps/steps for pgd-at and trades)")
    g.add_argument("--beta", type=float, default=None, help="TRADES robustness weight (default: 6)")
    g.add_argument("--severity", type=_positive_int, default=None, help="AugMix severity 1-10 (default: 3)")
    g.add_argument("--jsd", action="store_true", default=None,
                   help="AugMix with its Jensen-Shannon consistency loss (3 views per image)")
    g.add_argument("--magnitude", type=_positive_int, default=None, help="RandAugment magnitude 0-30 (default: 9)")
    g.add_argument("--mix-alpha", type=float, default=None, help="cutmix/mixup Beta(alpha, alpha) (default: 1)")
    g.add_argument("--noise-std", type=float, default=None, help="gaussian-noise sigma, pixel units (default: 0.1)")
    g.add_argument("--noise-p", type=float, default=None,
                   help="fraction of images gaussian-noise perturbs (default: 0.5)")
    g.add_argument("--monitor-images", type=_positive_int, default=None,
                   help="held-out training images for the per-epoch PGD check of adversarial defences "
                        "(default: 1000, at most 10%% of the training set)")
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="PATH",
                   help="checkpoint path (default: the cache for the plain quick recipe, which becomes the "
                        "(model, dataset) baseline; ./checkpoints/<model>--<dataset>--<defences>... otherwise)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run whose state file (<output>.resume) is next to the checkpoint")
    _common(p)
    return p


DEFENCE_FLAGS = ("eps", "steps", "alpha", "beta", "severity", "jsd", "magnitude", "mix_alpha", "noise_std",
                 "noise_p", "monitor_images")


def _eps_value(text: str) -> float:
    """A budget as a number or fraction: 0.1, 8/255."""
    from attacks.defaults import parse_eps

    try:
        values = parse_eps(text)
    except RobustEvalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one value, got '{text}'")
    return values[0]


def compare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} compare",
                description="Compare models side by side: checkpoints are evaluated here with the same suites, "
                            "images and seed; saved results JSON files (or history runs) are read as they are. "
                            "One table: clean, adversarial, corruption, shift and efficiency scores per model, "
                            "with deltas against the first.",
                epilog="example:\n  robust-eval compare standard.pt pgd.pt augmix.pt --suite full --limit 1000 "
                       "-o reports/defences.md --html reports/defences.html",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT|RESULTS",
                   help="checkpoints (evaluated now), results JSON files, or history runs as run:ID")
    p.add_argument("--suite", action="append", default=None, metavar="NAME[,NAME]",
                   help="suites for the checkpoints (default: full, i.e. every suite)")
    p.add_argument("--dataset", default=None, help="evaluate on this dataset (default: each checkpoint's own)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate the first N test images (default: all)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--labels", default=None, metavar="A,B,...", help="column names (default: file names)")
    from robustbench_lite.suites import SUITES

    for name, suite in SUITES.items():
        suite.add_arguments(p.add_argument_group(f"{name} suite"))
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="reports/compare.md", metavar="PATH",
                   help="the table, as .md, .csv, .json or .txt by extension (default: reports/compare.md)")
    g.add_argument("--json", default=None, metavar="PATH", help="every run's full results and the table in one JSON")
    g.add_argument("--html", default=None, metavar="PATH", help="HTML report of every run with the comparison")
    g.add_argument("--no-history", action="store_true", help="do not record the evaluations in the run history")
    _common(p)
    return p


def sweep_parser() -> argparse.ArgumentParser:
    from robustbench_lite.sweep import EXIT_CELLS_FAILED

    p = _Parser(prog=f"{PROG} sweep",
                description="Run every (model, dataset, init) x suite cell, each cached by (checkpoint hash, dataset, "
                            "suite options, images, seed); finish with one comparison table, one results file and "
                            "one HTML report. A failing cell is recorded and the sweep goes on.",
                epilog="examples:\n"
                       "  robust-eval sweep --models shufflenetv2,resnet18,mobilenetv3_small --suites clean,corruptions"
                       " --limit 1000\n"
                       "  robust-eval sweep sweep.yaml   # keys: models datasets suites init checkpoints launcher "
                       "limit seed suite_options output_dir\n"
                       "  robust-eval sweep --resume --output-dir reports/sweep   # after an interruption\n"
                       f"exit codes: 0 every cell done, {EXIT_CELLS_FAILED} some cells failed (see results.json), "
                       "2 a user error",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config_file", nargs="?", default=None, metavar="CONFIG.yaml", help="the sweep as YAML")
    p.add_argument("--models", default=None, metavar="A,B", help="models (default: shufflenetv2)")
    p.add_argument("--datasets", default=None, metavar="X,Y", help="datasets (default: fashion-mnist)")
    p.add_argument("--suites", "--suite", default=None, metavar="S,T",
                   help="suites, 'full' for every one (default: clean,efficiency)")
    p.add_argument("--init", default=None, metavar="scratch,pretrained",
                   help="baselines trained from scratch and/or fine-tuned from ImageNet weights (default: scratch)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="first N test images (default: all)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="evaluation batch size (default: 256)")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="cells cache and outputs (default: reports/sweep)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep saved in --output-dir (its sweep.yaml); finished cells are not rerun")
    p.add_argument("--launcher", default=None, metavar="CMD",
                   help="run each cell as its own job under CMD, e.g. 'torchrun --nproc-per-node 4' "
                        "(default: cells run in this process)")
    from robustbench_lite.suites import SUITES

    for name, suite in SUITES.items():
        suite.add_arguments(p.add_argument_group(f"{name} suite"))
    group = p.add_argument_group("run")
    group.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--seed", type=_positive_int, default=None, help="seed for every random choice (default: 0)")
    group.add_argument("--data-dir", default=None, help="searched first for dataset files")
    group.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def list_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} list", description="List registered models, datasets, suites, attacks or corruptions.")
    p.add_argument("what", choices=LISTABLE, help="which registry")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'mobilenet*' (default: all)")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} report", description="Render the HTML stress-test report from saved results: one run, "
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


def gate_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} gate", description="Check gates on saved results (a results JSON or a history run) "
                "without evaluating again; exit 1 when one fails.")
    p.add_argument("results", metavar="RESULTS", help="a results JSON, or a history run as run:ID")
    _gate_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def history_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} history", description="List past evaluations from the run history "
                "($ROBUST_EVAL_HOME/history.sqlite), newest first. Any run can be re-rendered with "
                "'robust-eval report run:ID' and used as a gate baseline with '--baseline run:ID' (or just ID).")
    p.add_argument("--model", default=None, metavar="PATTERN", help="only these models, fnmatch (default: all)")
    p.add_argument("--dataset", default=None, metavar="PATTERN", help="only these datasets, fnmatch (default: all)")
    p.add_argument("--suite", default=None, metavar="NAME", help="only runs that ran this suite (default: all)")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                   help="show the newest N matching runs (default: 20; 0: all)")
    p.add_argument("--show", type=_positive_int, default=None, metavar="ID",
                   help="print run ID's full results JSON instead of the list")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
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
                f"config file {args.config} has unknown options: {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        for action in parser._actions:  # repeatable flags (--suite, --defence...) take a list
            if isinstance(action, argparse._AppendAction) and isinstance(values.get(action.dest), str):
                values[action.dest] = [values[action.dest]]
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


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _suite_options(args: argparse.Namespace) -> dict[str, Any]:
    """Per-suite options from the suite flags the user set."""
    from robustbench_lite.suites import SUITES

    return {name: opts for name, suite in SUITES.items() if (opts := suite.options_from_args(args))}


def _load_gates(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any] | None, str | None]:
    """Parse --gate and load --baseline before any work: their mistakes exit 2 at once."""
    from robustbench_lite import gates, history

    parsed = gates.parse_all(args.gate or [])
    baseline, label = (None, None)
    if args.baseline:
        baseline, label = history.load_results(args.baseline)
    gates.validate_baseline(parsed, baseline, label or "--baseline")
    return parsed, baseline, label


def _finish_gates(gate_list: Sequence[Any], outcomes: Sequence[Any], junit: str | None, subject: str,
                  properties: dict[str, Any]) -> None:
    """Print the gate table, write JUnit, raise GateFailure (exit 1) when a gate failed."""
    from robustbench_lite import gates

    if not gate_list:
        if junit:
            gates.write_junit(junit, [], properties=properties)
        return
    failed = sum(not o.passed for o in outcomes)
    print(f"\ngates: {len(outcomes) - failed} of {len(outcomes)} passed\n{gates.table(outcomes)}")
    if junit:
        path = gates.write_junit(junit, outcomes, suite_name=f"robust-eval gates: {subject}", properties=properties)
        print(f"junit: {Path(path).resolve()}")
    error = gates.failure(outcomes, subject)
    if error is not None:
        raise error


def _build_examples(config: Any, data: dict[str, Any], n: int, debug: bool) -> dict[str, Any] | None:
    """The report's example grid needs the model, which evaluate() does not return: load it again (cached)."""
    from robustbench_lite import data as data_mod
    from robustbench_lite.api import resolve_model
    from robustbench_lite.engine import resolve_device
    from robustbench_lite.report.examples import build_examples

    try:
        dataset = data_mod.load(config.dataset, "test", config.data_dir).limit(config.limit)
        model, _, _ = resolve_model(config, dataset.num_classes, _log)
        device = resolve_device(config.device)
        return build_examples(model.to(device).eval(), dataset, data, device, n=n, seed=config.seed)
    except Exception as exc:  # the grid is an illustration: losing it must not lose the run's results
        if debug:
            raise
        _log(f"{PROG}: warning: the report's example grid was left out ({type(exc).__name__}: {exc})")
        return None


def run_eval(argv: Sequence[str]) -> int:
    from robustbench_lite import gates, history
    from robustbench_lite.api import evaluate
    from robustbench_lite.config import DEFAULT_SUITES, RunConfig
    from robustbench_lite.results import atomic_write
    from robustbench_lite.suites import expand_suites

    args = _parse(eval_parser(), argv)
    if args.examples < 0:
        raise RobustEvalError(f"--examples must be >= 0, got {args.examples}; 0 leaves the example grid out")
    suites = expand_suites(_split_list(args.suite)) or list(DEFAULT_SUITES)
    gate_list, baseline, baseline_label = _load_gates(args)
    gates.validate_suites(gate_list, suites)
    suite_options = _suite_options(args)
    config = RunConfig(
        model=args.model, dataset=args.dataset, suites=suites,
        checkpoint=args.checkpoint, pretrained=args.pretrained, limit=args.limit, batch_size=args.batch_size,
        device=args.device, seed=args.seed, data_dir=args.data_dir, json=args.json,
        show_progress=not args.no_progress and sys.stderr.isatty(), suite_options=suite_options,
    )
    result = evaluate(config, log=_log)
    if _leave_group():
        return 0  # a torchrun rank other than 0: rank 0 writes every output
    data = result.to_dict()
    data["command"] = [PROG, *argv]
    if args.html and args.examples:
        examples = _build_examples(config, data, args.examples, args.debug)
        if examples is not None:
            data["examples"] = examples
    # Gates are computed now so their outcomes land in the JSON, the report and the history, but a
    # failure is raised only after everything is written: a failing run still leaves its report.
    outcomes: list[Any] = []
    gate_error: RobustEvalError | None = None
    if gate_list:
        try:
            outcomes = gates.check(gate_list, data, baseline, baseline_label or "--baseline")
        except RobustEvalError as exc:
            gate_error = exc
        else:
            data["gates"] = gates.gates_block(outcomes, baseline_label)

    _print_table(result)
    if args.json:
        text = json.dumps(data, indent=2, allow_nan=False)
        path = atomic_write(args.json, lambda f: f.write(text + "\n"))
        print(f"\nresults: {Path(path).resolve()}")
    if args.html:
        from robustbench_lite.report import write_html

        path = write_html(args.html, [data])
        print(f"report: {Path(path).resolve()}")
    if not args.no_history:
        run_id = history.record(data, args.json, args.html)
        print(f"history: run {run_id} (use as --baseline run:{run_id})")
    if gate_error is not None:
        raise gate_error
    _finish_gates(gate_list, outcomes, args.junit, f"{result.model} on {result.dataset}",
                  {"model": result.model, "dataset": result.dataset, "n_examples": result.n_examples,
                   "seed": result.seed})
    return 0


def run_report(argv: Sequence[str]) -> int:
    from robustbench_lite import history
    from robustbench_lite.report import write_html

    args = report_parser().parse_args(argv)
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
    path = write_html(output, runs, title=args.title)
    missing = [lbl for lbl, r in zip(labels, runs, strict=True) if "examples" not in r]
    print(f"report: {Path(path).resolve()}")
    if missing:
        print(f"note: no example-image grid for {', '.join(missing)} (made without --html; the JSON holds no images)")
    return 0


def _compare_input(spec: str) -> str:
    """'results' (a results JSON or history run) or 'checkpoint'; a missing file is an error now."""
    from robustbench_lite import history

    if history.run_id(spec) is not None:
        return "results"
    path = Path(spec)
    if not path.is_file():
        raise RobustEvalError(f"{spec} does not exist; pass checkpoints, results JSON files or run:ID")
    return "results" if path.suffix == ".json" else "checkpoint"


def run_compare(argv: Sequence[str]) -> int:
    from robustbench_lite import compare, history
    from robustbench_lite.api import evaluate
    from robustbench_lite.compare import FORMATS
    from robustbench_lite.config import RunConfig
    from robustbench_lite.results import atomic_write
    from robustbench_lite.suites import SUITES, expand_suites, full_suites

    args = _parse(compare_parser(), argv)
    kinds = [_compare_input(spec) for spec in args.inputs]  # every input checked before any work
    if Path(args.output).suffix not in FORMATS:
        raise RobustEvalError(f"--output {args.output}: use a table file ending in {', '.join(FORMATS)}")
    labels = [lbl.strip() for lbl in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.inputs):
        raise RobustEvalError(f"--labels has {len(labels)} names for {len(args.inputs)} inputs; give one per input")
    suites = expand_suites(_split_list(args.suite)) or full_suites()
    for name in suites:
        SUITES.entry(name)
    suite_options = _suite_options(args)
    runs, names = [], []
    for spec, kind in zip(args.inputs, kinds, strict=True):
        if kind == "results":
            data, label = history.load_results(spec)
            names.append(label if label.startswith("run:") else Path(label).stem)
        else:
            _log(f"== {spec}")
            config = RunConfig(dataset=args.dataset, suites=suites, checkpoint=spec, limit=args.limit,
                               batch_size=args.batch_size, device=args.device, seed=args.seed, data_dir=args.data_dir,
                               show_progress=not args.no_progress and sys.stderr.isatty(),
                               suite_options=suite_options)
            data = evaluate(config, log=_log).to_dict()
            data["command"] = [PROG, "compare", *argv]
            if not args.no_history:
                history.record(data)
            names.append(Path(spec).stem)
        runs.append(data)
    table = compare.compare(runs, labels or names)
    print(table.to_text())
    path = table.write(args.output)
    print(f"table: {Path(path).resolve()}")
    if args.json:
        text = json.dumps({"comparison": table.to_dict(), "runs": runs}, indent=2, allow_nan=False)
        print(f"results: {Path(atomic_write(args.json, lambda f: f.write(text + chr(10)))).resolve()}")
    if args.html:
        from robustbench_lite.report import write_html

        print(f"report: {Path(write_html(args.html, runs, title='robust-eval compare')).resolve()}")
    return 0


def run_sweep(argv: Sequence[str]) -> int:
    from robustbench_lite import sweep
    from robustbench_lite.config import load_yaml

    args = sweep_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config_file:
        values = load_yaml(args.config_file)
    elif args.resume:
        saved = Path(args.output_dir or "reports/sweep") / "sweep.yaml"
        if not saved.is_file():
            raise RobustEvalError(f"--resume: no sweep to resume in {saved.parent} (no sweep.yaml); "
                                  "pass --output-dir of the interrupted sweep, or its CONFIG.yaml")
        values = load_yaml(saved)
    flags = {"models": args.models, "datasets": args.datasets, "suites": args.suites, "init": args.init,
             "limit": args.limit, "batch_size": args.batch_size, "output_dir": args.output_dir, "device": args.device,
             "seed": args.seed, "data_dir": args.data_dir, "launcher": args.launcher}
    values.update({k: v for k, v in flags.items() if v is not None})
    options = _suite_options(args)
    if options:
        merged = dict(values.get("suite_options") or {})
        for name, opts in options.items():
            merged[name] = {**merged.get(name, {}), **opts}
        values["suite_options"] = merged
    cfg = sweep.SweepConfig.from_dict(values, f"sweep config {args.config_file}" if args.config_file else "the sweep")
    outcome = sweep.run_sweep(cfg, log=_log)
    print(f"cells: {outcome.computed} computed, {outcome.cached} cached, {len(outcome.failures)} failed")
    for path in (outcome.table_path, outcome.results_path, outcome.report_path):
        if path is not None:
            print(f"{Path(path).name.split('.')[0]}: {Path(path).resolve()}")
    if outcome.failures:
        for f in outcome.failures:
            print(f"failed: {f['cell']}: {f['error']}", file=sys.stderr)
        return sweep.EXIT_CELLS_FAILED
    return 0


def run_gate(argv: Sequence[str]) -> int:
    from robustbench_lite import gates, history

    args = gate_parser().parse_args(argv)
    if not args.gate:
        raise RobustEvalError("no gate given; pass --gate EXPR, e.g. --gate 'clean.accuracy >= 0.9'")
    gate_list, baseline, baseline_label = _load_gates(args)
    data, label = history.load_results(args.results)
    outcomes = gates.check(gate_list, data, baseline, baseline_label or "--baseline")
    subject = f"{data.get('model')} on {data.get('dataset')} ({label})"
    _finish_gates(gate_list, outcomes, args.junit, subject,
                  {"model": data.get("model"), "dataset": data.get("dataset"), "results": label})
    return 0


def run_history(argv: Sequence[str]) -> int:
    from robustbench_lite import history
    from robustbench_lite.formatting import format_value

    args = history_parser().parse_args(argv)
    if args.show is not None:
        print(json.dumps(history.get(args.show), indent=2))
        return 0
    if args.limit < 0:
        raise RobustEvalError(f"--limit must be >= 0, got {args.limit}; 0 shows all runs")
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


def _leave_group() -> bool:
    """After distributed work: leave the torchrun group; True on ranks other than 0 (they stop)."""
    from robustbench_lite import distributed

    if not distributed.active():
        return False
    main = distributed.is_main()
    distributed.teardown()
    return not main


def run_train(argv: Sequence[str]) -> int:
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.train import train

    args = _parse(train_parser(), argv)
    cfg = TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=args.seed, output=args.output,
        device=args.device, data_dir=args.data_dir, pretrained=args.pretrained, limit=args.limit,
        eval_limit=args.eval_limit, show_progress=not args.no_progress and sys.stderr.isatty(),
        defence=",".join(_split_list(args.defence)) or None, resume=args.resume,
        defence_options={k: getattr(args, k) for k in DEFENCE_FLAGS if getattr(args, k) is not None},
    )
    _, meta, path = train(cfg, log=lambda m: print(m, file=sys.stderr))
    if _leave_group():
        return 0
    print(f"checkpoint: {path}\ntest accuracy: {meta['clean_accuracy']:.4f}")
    return 0


def _listing(what: str, pattern: str) -> list[tuple[str, str]]:
    listed = LISTABLE[what]
    rows = getattr(importlib.import_module(listed.module), listed.registry).listing(pattern)
    return rows + [("", listed.footer())] if listed.footer else rows


def run_list(argv: Sequence[str]) -> int:
    args = list_parser().parse_args(argv)
    rows = _listing(args.what, args.pattern)
    if not rows:
        raise RobustEvalError(f"no {args.what} match '{args.pattern}'; try 'robust-eval list {args.what}'")
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0


HANDLERS: dict[str, Callable[[Sequence[str]], int]] = {
    "eval": run_eval, "train": run_train, "compare": run_compare, "sweep": run_sweep, "list": run_list,
    "report": run_report,
    "gate": run_gate, "history": run_history,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in HANDLERS else "eval"
    rest = argv[1:] if argv and argv[0] in HANDLERS else argv
    debug = "--debug" in rest
    try:
        from robustbench_lite.distributed import launched

        if launched() and command not in ("eval", "train"):
            raise RobustEvalError(f"'{command}' does not run under torchrun; launch the evaluation or 'train' "
                                  "with torchrun (robust-eval sweep --launcher 'torchrun ...' hands its cells to it)")
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
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
