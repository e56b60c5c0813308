"""``robust-eval monitor fit|check``: a model's reference profile; drift and label-free accuracy of new images."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from robustbench_lite.commands import args as a
from robustbench_lite.errors import GateFailure, RobustEvalError

DESCRIPTION = ("Watch a deployed model without labels. 'fit' keeps a reference profile of the model on labelled "
               "in-distribution images (penultimate features, confidences, a fingerprint of the model) in a small "
               "safetensors file; 'check' tests new, unlabelled images against it (kernel MMD with a permutation "
               "p-value, per-feature KS tests with a Bonferroni correction, a KS test on the confidences) and "
               "estimates their accuracy (ATC, Garg et al. 2022; average confidence) and class priors (BBSE).")


def _model_arguments(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--checkpoint", default=None, metavar="PATH", help=f"the model file, any format ({default_help})")
    p.add_argument("--model", default=None,
                   help="architecture: of a state_dict file, or whose quick baseline is profiled without --checkpoint")


def parser_fit() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} monitor fit", description=DESCRIPTION,
                 epilog="example:\n  robust-eval monitor fit --checkpoint model.pt -o model.monitor.safetensors",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_arguments(p, "default: the --model's quick baseline")
    p.add_argument("--dataset", default=None,
                   help="labelled in-distribution images (default: the checkpoint's dataset, else fashion-mnist)")
    p.add_argument("--images", type=a.positive_int, default=None, metavar="N",
                   help="reference images kept: the first N of the test split (default: 2000)")
    p.add_argument("-o", "--output", default=None, metavar="PATH",
                   help="the profile (default: reports/<model>.monitor.safetensors)")
    p.add_argument("--batch-size", type=a.positive_int, default=256, help="batch size (default: 256)")
    a.add_run_arguments(p, config=False, progress=False)
    return p


def parser_check() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} monitor check", description=DESCRIPTION,
                 epilog="examples:\n"
                        "  robust-eval monitor check --profile model.monitor.safetensors --data imagefolder:new/\n"
                        "  robust-eval monitor check --profile P --data imagefolder:new/ --gate   # exit 1 on drift\n"
                        "exit codes: 0 checked (1 with --gate when drift is detected), 2 a user error",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True, metavar="PATH", help="the profile from 'robust-eval monitor fit'")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="the new images: imagefolder:PATH (a folder of images, or of class folders) or a dataset name")
    _model_arguments(p, "default: the file the profile records")
    p.add_argument("--alpha", type=float, default=None, metavar="P",
                   help="false-positive rate of the drift decision on in-distribution data (default: 0.05)")
    p.add_argument("--permutations", type=a.positive_int, default=None, metavar="N",
                   help="permutations of the MMD test (default: 500)")
    p.add_argument("--limit", type=a.positive_int, default=None, metavar="N", help="check the first N images")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON here")
    p.add_argument("--gate", action="store_true", help="exit 1 when drift is detected (after writing the report)")
    p.add_argument("--batch-size", type=a.positive_int, default=256, help="batch size (default: 256)")
    a.add_run_arguments(p, config=False, progress=False)
    return p


#: The actions and their parsers (the fault table of the tests is generated from them).
ACTIONS: dict[str, Callable[[], argparse.ArgumentParser]] = {"fit": parser_fit, "check": parser_check}


def parser() -> argparse.ArgumentParser:
    """``robust-eval monitor --help``: the actions."""
    p = a.Parser(prog=f"{a.PROG} monitor", description=DESCRIPTION,
                 epilog="actions:\n  fit    make a reference profile   (robust-eval monitor fit --help)\n"
                        "  check  test new images against it  (robust-eval monitor check --help)",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=tuple(ACTIONS), help="fit or check")
    return p


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] not in ACTIONS:
        a.parse(parser(), argv[:1] or [])  # --help, or one line naming the valid actions
        raise RobustEvalError(f"monitor needs an action: {', '.join(ACTIONS)} (see 'robust-eval monitor --help')")
    action, rest = argv[0], argv[1:]
    args = a.parse(ACTIONS[action](), rest)
    return _fit(args) if action == "fit" else _check(args)


def _options(args: argparse.Namespace) -> dict[str, object]:
    return {k: v for k, v in {"device": args.device, "model": args.model}.items() if v is not None}


def _fit(args: argparse.Namespace) -> int:
    from robustbench_lite.analysis.monitor import REFERENCE_IMAGES
    from robustbench_lite.monitoring import monitor_fit

    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise RobustEvalError(f"--checkpoint {args.checkpoint} does not exist")
    name = Path(args.checkpoint).stem if args.checkpoint else (args.model or "shufflenetv2")
    output = args.output or str(Path("reports") / f"{name}.monitor.safetensors")
    if Path(output).suffix != ".safetensors":
        raise RobustEvalError(f"-o {output}: a profile is a .safetensors file; pass e.g. -o {Path(output).stem}"
                              ".safetensors")
    a.check_outputs({"--output": output}, {"--checkpoint": args.checkpoint})
    profile = monitor_fit(args.checkpoint, args.dataset, images=args.images or REFERENCE_IMAGES,
                          batch_size=args.batch_size, data_dir=args.data_dir, log=a.log, **_options(args))
    path = profile.save(output)
    meta = profile.meta
    print(f"profile: {meta['images']} images of {meta['dataset']}, accuracy {meta['accuracy']:.1%}, features "
          f"{meta['features']} -> {meta['components']} components")
    print(f"written: {Path(path).resolve()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from robustbench_lite.analysis import drift
    from robustbench_lite.analysis.monitor import Profile, summary
    from robustbench_lite.monitoring import monitor_check
    from robustbench_lite.outputs import write_json

    alpha = drift.ALPHA if args.alpha is None else args.alpha
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise RobustEvalError(f"--checkpoint {args.checkpoint} does not exist")
    if args.json:
        a.check_outputs({"--json": args.json}, {"--profile": args.profile, "--checkpoint": args.checkpoint})
    profile = Profile.load(args.profile)
    report = monitor_check(profile, args.data, args.checkpoint, alpha=alpha,
                           permutations=args.permutations or drift.PERMUTATIONS, seed=args.seed, limit=args.limit,
                           batch_size=args.batch_size, data_dir=args.data_dir, log=a.log, **_options(args))
    for line in summary(report):
        print(line)
    if args.json:
        from robustbench_lite.outputs import attempt

        attempt(f"--json {args.json}", lambda: write_json(args.json, report), "json")
    if args.gate and report["drift"]:
        raise GateFailure(f"monitor: drift detected on {report['images']} images of {report['data']} "
                          f"({report['decision']})")
    return 0
