"""Defences side by side: standard vs fgsm-rs vs pgd-at vs trades vs augmix, each trained from scratch.

For each defence this trains shufflenetv2 on Fashion-MNIST (by default) with ``robustbench_lite.training``
(the same code as ``robust-eval train --defence NAME``), then measures with the evaluator:

* clean accuracy on the whole test set (10,000 images),
* PGD-20 Linf robust accuracy at eps 0.1 on the first ``--n`` test images,
* mean corruption accuracy (the 15 benchmark corruptions x 5 severities) on the same images,
* training minutes (wall clock, the loop only; the per-epoch held-out PGD check included).

Each defence's epochs are set so that its training fits in about 15 minutes on 2 CPU cores; the
table says how many epochs each ran. Training time depends on the machine's load: run it alone.

Usage:
    python benchmarks/bench_defences.py                       # all five, about 50 minutes on 2 cores
    python benchmarks/bench_defences.py --epochs fgsm-rs=8,pgd-at=4,trades=3   # longer runs
    python benchmarks/bench_defences.py --defences standard,augmix --n 500
    python benchmarks/bench_defences.py --out reports/bench_defences   # .md and .json written there
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustbench_lite.api import evaluate  # noqa: E402
from robustbench_lite.config import RunConfig, TrainConfig  # noqa: E402
from robustbench_lite.training import train  # noqa: E402
from robustbench_lite.training.defences import DEFENCES, DefenceOptions  # noqa: E402

#: Epochs per defence: what fits in 15 training minutes on 2 idle CPU cores (standard and augmix
#: use the quick recipe's 3 epochs). Measured per 235-step epoch, per-epoch PGD-10 check on 1,000
#: held-out images included: standard 55 s, augmix 76 s, fgsm-rs ~120 s, pgd-at 265 s, trades 315 s.
EPOCHS = {"standard": 3, "augmix": 3, "fgsm-rs": 6, "pgd-at": 3, "trades": 2}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shufflenetv2")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--defences", default="standard,fgsm-rs,pgd-at,trades,augmix",
                   help="comma-separated; 'standard' is no defence (default: all five)")
    p.add_argument("--epochs", default=None, metavar="NAME=N[,NAME=N]",
                   help=f"override epochs per defence (default: {EPOCHS})")
    p.add_argument("--eps", type=float, default=0.1, help="training and evaluation Linf budget (default: 0.1)")
    p.add_argument("--n", type=int, default=1000, help="test images for PGD-20 and corruptions (default: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="reports/bench_defences", help="checkpoints and results (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the table as OUT.md and OUT.json (default: WORKDIR/table)")
    return p.parse_args(argv)


def run_one(name: str, epochs: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ckpt = workdir / f"{args.model}--{name}.pt"
    defence = None if name == "standard" else name
    options = {"eps": args.eps} if defence is not None and DEFENCES.entry(defence).adversarial else {}
    cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=epochs, seed=args.seed, output=str(ckpt),
                      defences=DefenceOptions.from_mapping({"defence": defence, **options}), show_progress=False)
    t0 = time.perf_counter()
    _, meta, _ = train(cfg, log=lambda m: print(f"  [{name}] {m}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    run = RunConfig(checkpoint=str(ckpt), suites=["adversarial", "corruptions"], limit=args.n, seed=args.seed,
                    show_progress=False, suite_options={
                        "adversarial": {"attack": "pgd", "eps": str(args.eps), "steps": 20}})
    result = evaluate(run, log=lambda m: print(f"  [{name}] {m}", file=sys.stderr, flush=True)).to_dict()
    adv = next(r for r in result["adversarial"]["results"] if r["attack"] == "pgd")
    return {
        "defence": name,
        "epochs": epochs,
        "selected_epoch": meta["defence"]["selected_epoch"],
        "clean_accuracy": meta["clean_accuracy"],
        "pgd20_robust_accuracy": adv["robust_accuracy"],
        "mean_corruption_accuracy": result["corruptions"]["mean_accuracy"],
        "train_minutes": meta["train_seconds"] / 60,
        "wall_minutes": wall / 60,
        "history": meta["history"],
    }


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (f"| defence | epochs (kept) | clean acc (10k) | PGD-20 Linf {args.eps:g} acc (n={args.n}) | "
            f"mean corruption acc (n={args.n}) | train min |\n|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['defence']} | {r['epochs']} ({r['selected_epoch']}) | {100 * r['clean_accuracy']:.2f}% | "
        f"{100 * r['pgd20_robust_accuracy']:.2f}% | {100 * r['mean_corruption_accuracy']:.2f}% | "
        f"{r['train_minutes']:.1f} |\n" for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    epochs = dict(EPOCHS)
    for item in (args.epochs or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            epochs[key.strip()] = int(value)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else workdir / "table"
    rows = []
    for name in [d.strip() for d in args.defences.split(",") if d.strip()]:
        print(f"== {name}: {epochs.get(name, 3)} epochs", file=sys.stderr, flush=True)
        rows.append(run_one(name, epochs.get(name, 3), args, workdir))
        text = table(rows, args)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"rows": rows, "torch_threads": torch.get_num_threads(),
                                                        "args": vars(args)}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
