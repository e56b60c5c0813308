"""``robust-eval compress``: a parent checkpoint -> the artefact that is shipped (int8 ONNX, fp16, bf16)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustbench_lite.commands import args as a


def parser() -> argparse.ArgumentParser:
    from robustbench_lite.training.compression import CompressOptions

    p = a.Parser(prog=f"{a.PROG} compress",
                 description="Compress a checkpoint into the artefact you ship, recording its parent (path and "
                             "sha256), the method, its settings and the calibration images; then evaluate it like "
                             "any model file and compare it with its parent.",
                 epilog="methods: 'robust-eval list compression'. Examples:\n"
                        "  robust-eval compress --checkpoint net.pt --method int8 --output net.int8.onnx\n"
                        "  robust-eval compress --method bf16            # the quick baseline -> <baseline>.bf16.pt\n"
                        "  robust-eval compress --checkpoint net.pt --method prune-channels:0.3 --epochs 2\n"
                        "  robust-eval compress --method distill:shufflenetv2_x0_5 --defence pgd-at\n"
                        "  robust-eval compare net.pt net.int8.onnx --suite clean,corruptions --limit 1000",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("parent")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="the robust-eval checkpoint to compress (default: the quick baseline of --model on "
                        "--dataset, trained on first use)")
    g.add_argument("--model", default="shufflenetv2", help="model of the quick baseline (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset of the quick baseline (default: fashion-mnist)")
    CompressOptions.add_arguments(p.add_argument_group("method"))
    from robustbench_lite.training import defences

    defences.add_arguments(p.add_argument_group("defences to fine-tune or distil with (default: the parent's own; "
                                                "see 'robust-eval list defences')"))
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="PATH",
                   help="artefact path (default: beside the parent, <parent>.<method><suffix>)")
    a.add_run_arguments(p)
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite.errors import RobustEvalError
    from robustbench_lite.training.compression import METHODS, CompressConfig, CompressOptions, compress
    from robustbench_lite.training.defences import FLAGS, DefenceOptions

    args = a.parse(parser(), argv)
    if args.output is not None:
        a.check_outputs({"--output": args.output})
    options = CompressOptions.from_args(args)  # every option checked before any model or data is loaded
    chosen = None
    if getattr(args, "defence", None) or any(getattr(args, k, None) is not None for k in FLAGS):
        chosen = DefenceOptions.from_args(args)
        trains = [n for n, m in METHODS.items() if "epochs" in m.reads]
        if options.entry.name not in trains:
            raise RobustEvalError(f"--defence and its options apply to methods that train ({', '.join(trains)}), "
                                  f"not --method {options.method}; drop them")
    artefact = compress(CompressConfig(checkpoint=args.checkpoint, options=options, output=args.output,
                                       model=args.model, dataset=args.dataset, seed=args.seed,
                                       data_dir=args.data_dir, show_progress=a.show_progress(args),
                                       defences=chosen), log=a.log)
    print(artefact.summary())
    return 0
