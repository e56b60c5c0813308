"""Images per second of every forward path the evaluator can take, against today's eager fp32, in one run.

For each model (three zoo models) and input (Fashion-MNIST 28 px grey; 32 px colour made from
the same images, resized and tinted per channel), every path of
:mod:`robustbench_lite.engine.plans` is timed on the same images in rotation (``--rounds``
rounds, each path once per round, the median kept: drift on a shared machine hits them alike):

* ``eager``: the module as given, batches of ``--batch`` on all threads (today's path);
* ``channels-last``, ``traced``: the fp32 paths ``--inference auto`` may pick, on batches of
  ``plans.CPU_BATCH`` (what a run feeds them);
* ``... x2``: the same with the batches spread over two workers of one thread each (what a run
  with two threads does);
* ``bf16 ...``: the model cast to bf16 (``--precision bf16``), eager and on its fast paths.

Beside each: the speed-up over eager, GFLOP/s (the efficiency suite's FLOP count x images/s) and
how many predictions differ from eager fp32 over every image and condition scored (clean and
``--corruptions`` at each severity): fp32 paths must change none; bf16 is opt-in and says how many.

A trained quick baseline is used for a model when ``$ROBUST_EVAL_HOME`` holds one for the
dataset (``robust-eval --model NAME`` makes it); otherwise a seeded random network (its near-tied
logits make the change count a harsher test).

Usage::

    python benchmarks/bench_inference.py                        # 3 models x 2 inputs, 1,000 images (~25 min)
    python benchmarks/bench_inference.py --models shufflenetv2 --inputs grey28 --n 10000

Goals (issue 19, ShuffleNetV2 on Fashion-MNIST): fp32 at least 2x eager with identical
predictions, bf16 at least 3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a checkout
    sys.path.insert(0, str(ROOT))

from robustbench_lite import data, models  # noqa: E402
from robustbench_lite.distributed import map_units  # noqa: E402
from robustbench_lite.efficiency import count_flops  # noqa: E402
from robustbench_lite.engine import plans  # noqa: E402

MODELS = ("shufflenetv2", "resnet18", "mobilenetv3_small")
INPUTS = ("grey28", "rgb32")
GOAL_FP32, GOAL_BF16 = 2.0, 3.0


def images(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.load("fashion-mnist").limit(n)
    x, y = ds.float_images(), ds.labels
    if kind == "rgb32":
        tint = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1) * tint
    return x.contiguous(), y


def load_model(name: str, kind: str) -> tuple[torch.nn.Module, str]:
    from robustbench_lite.training.recipes import baseline_path

    if kind == "grey28":
        path = baseline_path(name, "fashion-mnist", 0)
        if path.is_file():
            from robustbench_lite.sources.checkpoints import load_checkpoint

            return load_checkpoint(path)[0].eval(), "trained quick baseline"
    torch.manual_seed(0)
    channels, size = (1, 28) if kind == "grey28" else (3, 32)
    return models.build(name, 10, channels, size, pretrained=False).eval(), "random init (seed 0)"


def conditions(x: torch.Tensor, names: list[str]) -> list[tuple[str, torch.Tensor]]:
    from corruptions import CORRUPTIONS

    idx = torch.arange(len(x))
    out = [("clean", x)]
    for name in names:
        for severity in (1, 3, 5):
            corrupt = CORRUPTIONS.get(name, severity=severity, profile="cifar", seed=0)
            out.append((f"{name}{severity}", corrupt(x, idx).mul(255).round().div(255)))
    return out


def run(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int, workers: int,
        threads: int) -> torch.Tensor:
    starts = list(range(0, len(x), batch))

    def one(k: int) -> torch.Tensor:
        with torch.inference_mode():
            return forward(x[starts[k]:starts[k] + batch]).float()

    return torch.cat(map_units(one, range(len(starts)), workers, threads if workers > 1 else None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--n", type=int, default=1000, help="images per condition (default: 1000)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corruptions", default="gaussian_noise,defocus_blur,fog,contrast",
                        help="conditions the prediction changes are counted on, besides clean (severities 1,3,5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch}, {args.n} images, load {os.getloadavg()[0]:.2f} at start, "
          f"torch {torch.__version__}")
    failed = []
    for kind in args.inputs.split(","):
        x, _ = images(kind, args.n)
        sets = conditions(x, [c for c in args.corruptions.split(",") if c])
        for name in args.models.split(","):
            model, what = load_model(name, kind)
            flops = count_flops(model, x[:1])
            probe = x[:plans.CPU_BATCH]
            reference = {c: run(model, s, args.batch, 1, args.threads) for c, s in sets}
            bf16 = plans.cast(model, "bf16")
            paths: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int, int]] = {
                "eager": (model, 1, args.batch)}
            for label, net in (("", model), ("bf16 ", bf16)):
                if label:
                    paths["bf16 eager"] = (net, 1, args.batch)
                for path, (builder, _) in plans.BUILDERS.items():
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        forward = builder(net, probe)
                        forward(probe)
                    build = time.perf_counter() - t0
                    paths[f"{label}{path}"] = (forward, 1, plans.CPU_BATCH)
                    paths[f"{label}{path} x{args.threads}"] = (forward, args.threads, plans.CPU_BATCH)
                    if path == "traced":
                        print(f"  {name} {kind}: {label}traced built in {build:.1f} s")
            times: dict[str, list[float]] = {p: [] for p in paths}
            for _ in range(args.rounds):
                for p, (forward, workers, batch) in paths.items():
                    t0 = time.perf_counter()
                    run(forward, x, batch, workers, max(1, args.threads // workers))
                    times[p].append(time.perf_counter() - t0)
            base = statistics.median(times["eager"])
            print(f"\n{name} on {kind} ({what}; {flops / 1e6:.1f} MFLOPs an image)")
            print(f"  {'path':24s} {'img/s':>8s} {'x eager':>8s} {'GFLOP/s':>8s} {'changed':>16s}")
            for p, (forward, workers, batch) in paths.items():
                sec = statistics.median(times[p])
                changed = sum(int((run(forward, s, batch, workers, max(1, args.threads // workers)).argmax(1)
                                   != reference[c].argmax(1)).sum()) for c, s in sets)
                total = len(x) * len(sets)
                print(f"  {p:24s} {len(x) / sec:8.0f} {base / sec:7.2f}x {flops * len(x) / sec / 1e9:8.1f} "
                      f"{changed:7d} / {total:<7d}")
                if not p.startswith("bf16") and changed:
                    failed.append(f"{name} {kind} {p}: {changed} predictions changed")
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")
    if failed:
        print("fp32 paths that changed predictions:\n  " + "\n  ".join(failed))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
