"""``robust-eval sweep``: models x datasets x inits x suites, each cell cached."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError


def parser() -> argparse.ArgumentParser:
    from robustbench_lite.sweep import EXIT_CELLS_FAILED

    p = a.Parser(prog=f"{a.PROG} sweep",
                description="Run every (model, dataset, init) x suite cell, each cached by (checkpoint hash, dataset, "
                            "suite options, images, seed); finish with one comparison table, one results file and "
                            "one HTML report. A failing cell is recorded and the sweep goes on.",
                epilog="examples:\n"
                       "  robust-eval sweep --models shufflenetv2,resnet18,mobilenetv3_small --suites clean,corruptions"
                       " --limit 1000\n"
                       "  robust-eval sweep sweep.yaml   # keys: models datasets suites init compress checkpoints "
                       "launcher limit seed suite_options output_dir\n"
                       "  robust-eval sweep --compress int8,prune-channels:0.3 --suites clean,corruptions,efficiency\n"
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
    p.add_argument("--compress", default=None, metavar="M,N",
                   help="also evaluate each checkpoint's compressed artefacts, e.g. int8,prune:0.5,"
                        "distill:shufflenetv2_x0_5 (see 'robust-eval list compression'; default: none)")
    p.add_argument("--precision", default=None, metavar="P,Q",
                   help="evaluate each checkpoint cast to these precisions (fp32, bf16, fp16; ONNX artefacts run as "
                        "shipped); more than one is an axis of the grid (default: as shipped)")
    p.add_argument("--stress", default=None, metavar="S,T",
                   help="training-data stress as an axis: imb10,imb100,pair0.3,frac0.1 ('+' joins stressors, 'none' "
                        "is the baseline's data); each cell with stress or --defence trains its own checkpoint with "
                        "the quick recipe (default: none)")
    p.add_argument("--defence", "--defense", default=None, metavar="D,E",
                   help="defences as an axis, crossed with --stress: none,balanced-softmax,gce ('+' joins defences "
                        "trained together, e.g. augmix+pgd-at; default: none)")
    p.add_argument("--inference", default=None, metavar="MODE",
                   help="auto: the fastest forward path whose predictions equal eager PyTorch's; eager: the module "
                        "as given (default: auto)")
    p.add_argument("--limit", type=a.positive_int, default=None, metavar="N", help="first N test images (default: all)")
    p.add_argument("--batch-size", type=a.positive_int, default=None, help="evaluation batch size (default: 256)")
    p.add_argument("--output-dir", default=None, metavar="DIR", help="cells cache and outputs (default: reports/sweep)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep saved in --output-dir (its sweep.yaml); finished cells are not rerun")
    p.add_argument("--launcher", default=None, metavar="CMD",
                   help="run each cell as its own job under CMD, e.g. 'torchrun --nproc-per-node 4' "
                        "(default: cells run in this process)")
    a.add_suite_arguments(p)
    group = p.add_argument_group("run")
    group.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--seed", type=a.seed_int, default=None,
                       help="seed for every random choice (default: 0)")
    group.add_argument("--data-dir", default=None, help="searched first for dataset files")
    group.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import sweep
    from robustbench_lite.config import load_yaml

    args = a.parse(parser(), argv)
    if args.output_dir is not None:
        from robustbench_lite.output_paths import check_output

        check_output(args.output_dir, "--output-dir", folder=True)
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
             "compress": args.compress, "precision": args.precision, "inference": args.inference,
             "stress": args.stress, "defence": args.defence,
             "limit": args.limit, "batch_size": args.batch_size, "output_dir": args.output_dir, "device": args.device,
             "seed": args.seed, "data_dir": args.data_dir, "launcher": args.launcher}
    values.update({k: v for k, v in flags.items() if v is not None})
    from robustbench_lite.suites import SUITES

    options = {name: opts for name, suite in SUITES.items() if (opts := suite.Options.from_args(args).to_dict())}
    if options:  # flags win over the YAML file's suite_options, option by option
        merged = dict(values.get("suite_options") or {})
        for name, opts in options.items():
            merged[name] = {**(merged.get(name) or {}), **opts}
        values["suite_options"] = merged
    cfg = sweep.SweepConfig.from_dict(values, f"sweep config {args.config_file}" if args.config_file else "the sweep")
    outcome = sweep.run_sweep(cfg, log=a.log)
    print(f"cells: {outcome.computed} computed, {outcome.cached} cached, {len(outcome.failures)} failed")
    for path in (outcome.table_path, outcome.results_path, outcome.report_path):
        if path is not None:
            print(f"{Path(path).name.split('.')[0]}: {Path(path).resolve()}")
    if outcome.failures:
        for f in outcome.failures:
            print(f"failed: {f['cell']}: {f['error']}", file=sys.stderr)
        return sweep.EXIT_CELLS_FAILED
    return 0
