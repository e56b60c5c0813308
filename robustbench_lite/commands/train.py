"""``robust-eval train``: train a checkpoint with the standard recipe and optional defences."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError


def parser() -> argparse.ArgumentParser:
    from robustbench_lite.training import QUICK, defences

    p = a.Parser(prog=f"{a.PROG} train", description="Train a model with the standard recipe, optionally with defences "
                "(adversarial training, augmentation), and write a checkpoint that records the full recipe.",
                epilog="defences: 'robust-eval list defences'. Examples:\n"
                       "  robust-eval train --defence pgd-at --eps 0.1 --epochs 4 --output pgd.pt\n"
                       "  robust-eval train --defence augmix,trades --beta 6 --output at.pt\n"
                       "  robust-eval train --defence fgsm-rs --output fast.pt --resume   # after an interruption\n"
                       "  robust-eval train --defence pgd-at --seeds 0,1,2 --output pgd.pt  # pgd-seed0.pt ... + sd",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="shufflenetv2", help="model name (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    init = g.add_mutually_exclusive_group()
    init.add_argument("--pretrained", action="store_true",
                      help="fine-tune torchvision's ImageNet weights (the transfer path; needs the weights file)")
    init.add_argument("--from-scratch", action="store_true", help="random initialisation (the default)")
    g.add_argument("--limit", type=a.positive_int, default=None, metavar="N",
                   help="train on the first N training images (default: all)")
    g.add_argument("--eval-limit", type=a.positive_int, default=None, metavar="N",
                   help="measure test accuracy on the first N test images (default: all)")
    g = p.add_argument_group("training-data stress (on the training split only; recorded in the checkpoint)")
    g.add_argument("--train-fraction", type=float, default=None, metavar="F",
                   help="keep this fraction of each class's training images, stratified and seeded (default: all)")
    g.add_argument("--train-per-class", type=a.positive_int, default=None, metavar="N",
                   help="keep N training images of each class (default: all)")
    g.add_argument("--imbalance", type=float, default=None, metavar="RATIO",
                   help="long-tailed classes: the most frequent keeps its images, the rarest 1/RATIO of them "
                        "(default: none)")
    g.add_argument("--imbalance-profile", default="exp", metavar="exp|step",
                   help="exp: exponential decay over the classes (CIFAR-10-LT); step: half the classes rare "
                        "(default: exp)")
    g.add_argument("--label-noise", default=None, metavar="KIND:RATE",
                   help="sym:R (each label flipped with probability R to another class), pair:R (to the next "
                        "class: systematic), confusion:FILE (a class-to-class matrix, rows summing to 1, or a "
                        "robust-eval --suite clean --json results file: that model's confusions), "
                        "confusion:FILE@R (its pattern of errors at rate R) (default: none)")
    g = p.add_argument_group("optimisation (default: the quick recipe)")
    g.add_argument("--epochs", type=a.positive_int, default=None, help=f"epochs (default: {QUICK.epochs})")
    g.add_argument("--batch-size", type=a.positive_int, default=None, help=f"batch size (default: {QUICK.batch_size})")
    g.add_argument("--lr", type=float, default=None, help=f"peak learning rate, AdamW one-cycle (default: {QUICK.lr})")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay (default: {QUICK.weight_decay})")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing (default: 0)")
    defences.add_arguments(p.add_argument_group("defences (see 'robust-eval list defences')"))
    g = p.add_argument_group("output")
    g.add_argument("--output", default=None, metavar="PATH",
                   help="checkpoint path (default: the cache for the plain quick recipe, which becomes the "
                        "(model, dataset) baseline; ./checkpoints/<model>--<dataset>--<defences>... otherwise)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run whose state file (<output>.resume) is next to the checkpoint")
    g.add_argument("--seeds", default=None, metavar="N,N[,N]",
                   help="train the same recipe once per seed (at least two, instead of --seed), each checkpoint "
                        "named with -seed<N> before the suffix of --output, and print the mean and standard "
                        "deviation over seeds of what training reports (default: one run, --seed)")
    a.add_run_arguments(p)
    p.set_defaults(seed=None)  # None: --seed not given, so --seeds may be; it means 0 otherwise
    return p


def _summary(runs: list[tuple[dict, Path]], seeds: list[int]) -> str:
    """Per-seed checkpoints, then a table: each metric per seed, its mean and standard deviation."""
    from robustbench_lite.training.seeds import summarise

    lines = [f"checkpoint (seed {s}): {path}" for s, (_, path) in zip(seeds, runs, strict=True)]
    table = [["metric", *[f"seed {s}" for s in seeds], "mean", "sd"]]
    for name, row in summarise([meta for meta, _ in runs]).items():
        table.append([name, *[f"{v:.4f}" for v in row["values"]], f"{row['mean']:.4f}", f"{row['sd']:.4f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines.append(f"over {len(seeds)} seeds ({', '.join(map(str, seeds))}):")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines)


def run(argv: Sequence[str]) -> int:
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.training import train
    from robustbench_lite.training.defences import DefenceOptions
    from robustbench_lite.training.stressors import StressOptions

    args = a.parse(parser(), argv)
    if args.output is not None:
        a.check_outputs({"--output": args.output})
    seeds = None
    if args.seeds is not None:
        from robustbench_lite.training.seeds import parse_seeds

        if args.seed is not None:
            raise RobustEvalError(f"--seeds {args.seeds} and --seed {args.seed} both given; --seeds trains one run "
                                  "per seed, so drop --seed")
        seeds = parse_seeds(args.seeds)
    cfg = TrainConfig(
        model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=args.seed or 0, output=args.output,
        device=args.device, data_dir=args.data_dir, pretrained=args.pretrained, limit=args.limit,
        eval_limit=args.eval_limit, show_progress=a.show_progress(args),
        defences=DefenceOptions.from_args(args), resume=args.resume,
        stress=StressOptions(fraction=args.train_fraction, per_class=args.train_per_class, imbalance=args.imbalance,
                             profile=args.imbalance_profile, label_noise=args.label_noise).validate(),
    )
    if seeds is not None:
        from robustbench_lite.training.seeds import train_seeds

        runs = train_seeds(cfg, seeds, log=a.log)
        if a.leave_group():
            return 0
        print(_summary(runs, seeds))
        return 0
    _, meta, path = train(cfg, log=a.log)
    if a.leave_group():
        return 0
    print(f"checkpoint: {path}\ntest accuracy: {meta['clean_accuracy']:.4f}")
    return 0
