"""PGD-10 Linf: our early-exit evaluation vs torchattacks.PGD, same model, same images, one run.

Prints both robust accuracies, wall-clock times and their ratio, and the compute floor: the clean
forward pass plus the forward/backward passes that early exit cannot avoid (every pass up to the
iterate that first fools an image, all of them for images that resist), next to the passes we did
and the passes torchattacks does (steps x (forward + backward) for every image, plus the clean and
final evaluation passes a robust-accuracy number needs).

Models:
    --model local-cnn (default): a small CNN trained here for a few seconds on scikit-learn digits
        (offline; --n beyond the 1,797 digits repeats them under distinct dataset indices).
    --model NAME --dataset NAME [--checkpoint FILE]: a model of the suite through
        ``robustbench_lite.models`` / ``robustbench_lite.data``: the checkpoint when given, else
        the suite's cached quick baseline (``robustbench_lite.training.load_or_train_baseline``).

Usage:
    python benchmarks/bench_attacks.py --n 2000 --steps 10 --eps 0.1
    python benchmarks/bench_attacks.py --model shufflenetv2 --dataset fashion-mnist --checkpoint ck.pt

The AutoAttack ensemble (ours vs the original and torchattacks') is benchmarked by
``benchmarks/bench_autoattack.py``, which reuses this script's model loading.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import PGD, evaluate_attack  # noqa: E402
from attacks.torchattacks_adapter import import_torchattacks  # noqa: E402
from robustbench_lite.errors import RobustEvalError  # noqa: E402

LOCAL_MODEL = "local-cnn"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="shufflenetv2",
                   help=f"model name, or {LOCAL_MODEL} for a small CNN trained here (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    g.add_argument("--checkpoint", default=None, help="checkpoint for --model (default: none)")
    g.add_argument("--n", type=int, default=2000, help="number of test images (default: 2000)")
    g = p.add_argument_group("attack")
    g.add_argument("--eps", type=float, default=0.1, help="Linf budget in pixel units (default: 0.1)")
    g.add_argument("--steps", type=int, default=10, help="PGD steps (default: 10)")
    g.add_argument("--alpha", type=float, default=None, help="step size (default: 2.5 * eps / steps)")
    g.add_argument("--seed", type=int, default=0, help="seed for both attacks (default: 0)")
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    g.add_argument("--repeats", type=int, default=3, help="timed runs of each, best kept (default: 3)")
    g.add_argument("--json", default=None, help="also write the result dict here (default: none)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Models


def local_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, 10),
    )  # fmt: skip


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(labels), generator=g)
    train, test = perm[:1200], perm[1200:]
    return images[train], labels[train], images[test], labels[test]


def train_local(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN on digits (4 epochs of Adam, seconds on CPU); returns it with the test split."""
    x_train, y_train, x_test, y_test = digits_split()
    torch.manual_seed(seed)
    model = local_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for idx in torch.randperm(len(x_train)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval(), x_test, y_test


def suite_model(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model and test images through the suite's APIs (e.g. shufflenetv2 on fashion-mnist).

    The checkpoint when given, else the suite's cached quick baseline (trained on first use).
    """
    from robustbench_lite import data
    from robustbench_lite.sources import checkpoints

    ds = data.load(args.dataset, split="test").limit(args.n)
    if args.checkpoint:
        model, _ = checkpoints.load_checkpoint(args.checkpoint, model=args.model, num_classes=ds.num_classes)
    else:
        try:
            from robustbench_lite.training import load_or_train_baseline
        except ImportError:
            raise RobustEvalError(
                f"no checkpoint for {args.model} on {args.dataset}: pass --checkpoint FILE "
                "(robustbench_lite.training.load_or_train_baseline is not available)"
            ) from None
        model, _, _ = load_or_train_baseline(args.model, args.dataset, args.seed, args.device, None)
    return model.eval(), ds.float_images(), ds.labels, ds.indices


def load(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    start = time.perf_counter()
    if args.model != LOCAL_MODEL:
        model, images, labels, indices = suite_model(args)
        return model, images, labels, indices, time.perf_counter() - start
    model, x_test, y_test = train_local(args.seed)
    reps = -(-args.n // len(x_test))
    images, labels = x_test.repeat(reps, 1, 1, 1)[: args.n], y_test.repeat(reps)[: args.n]
    return model, images, labels, torch.arange(len(images)), time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The two contenders


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, images, labels, indices, args, device) -> dict[str, Any]:
    attack = PGD(args.eps, steps=args.steps, alpha=args.alpha, seed=args.seed)
    sync(device)
    start = time.perf_counter()
    res = evaluate_attack(model, attack, images, labels, indices, batch_size=args.batch_size)
    sync(device)
    return {"seconds": time.perf_counter() - start, "robust_accuracy": res.robust_accuracy[0],
            "clean_accuracy": res.clean_accuracy, "passes": res.passes, "floor": res.floor_passes,
            "forward": res.forward_passes, "backward": res.backward_passes}  # fmt: skip


def run_torchattacks(model, images, labels, args, device) -> dict[str, Any]:
    """What a torchattacks user does: clean pass, attack every image, evaluate the adversarials."""
    ta = import_torchattacks()
    alpha = 2.5 * args.eps / args.steps if args.alpha is None else args.alpha
    attack = ta.PGD(model, eps=args.eps, alpha=alpha, steps=args.steps, random_start=True)
    torch.manual_seed(args.seed)
    sync(device)
    start = time.perf_counter()
    clean = robust = 0
    for i in range(0, len(images), args.batch_size):
        x, y = images[i : i + args.batch_size].to(device), labels[i : i + args.batch_size].to(device)
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        adv = attack(x, y)
        with torch.no_grad():
            robust += int((ok & (model(adv).argmax(1) == y)).sum())
        clean += int(ok.sum())
    sync(device)
    n = len(images)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "robust_accuracy": robust / n, "clean_accuracy": clean / n,
            "passes": n * (2 + 2 * args.steps)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        import_torchattacks()
        model, images, labels, indices, setup_s = load(args)
    except RobustEvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    model = model.to(device)
    images, labels = images.to(device), labels.to(device)

    # Warm up both code paths (allocator, kernels) on a small batch before timing.
    warm = slice(0, min(64, len(images)))
    warm_args = argparse.Namespace(**{**vars(args), "steps": 2})
    run_ours(model, images[warm], labels[warm], indices[warm], warm_args, device)
    run_torchattacks(model, images[warm], labels[warm], warm_args, device)

    # Alternate the two and keep each one's best time: the machine may be shared.
    ours_runs, theirs_runs = [], []
    for _ in range(max(args.repeats, 1)):
        ours_runs.append(run_ours(model, images, labels, indices, args, device))
        theirs_runs.append(run_torchattacks(model, images, labels, args, device))
    ours = min(ours_runs, key=lambda r: r["seconds"])
    theirs = min(theirs_runs, key=lambda r: r["seconds"])
    result = {
        "model": args.model, "dataset": args.dataset, "n": len(images), "eps": args.eps, "steps": args.steps,
        "device": str(device), "threads": torch.get_num_threads(), "repeats": len(ours_runs),
        "setup_seconds": round(setup_s, 3), "clean_accuracy": ours["clean_accuracy"],
        "ours_robust_accuracy": ours["robust_accuracy"],
        "torchattacks_robust_accuracy": theirs["robust_accuracy"],
        "ours_seconds": round(ours["seconds"], 4), "torchattacks_seconds": round(theirs["seconds"], 4),
        "speedup": round(theirs["seconds"] / ours["seconds"], 3),
        "ours_passes": ours["passes"], "ours_forward": ours["forward"], "ours_backward": ours["backward"],
        "floor_passes": ours["floor"], "torchattacks_passes": theirs["passes"],
    }  # fmt: skip
    print(
        f"PGD-{args.steps} Linf eps={args.eps:g} on {len(images)} images ({args.model}/{args.dataset}, "
        f"{device}, {result['threads']} threads, best of {len(ours_runs)}); "
        f"clean accuracy {ours['clean_accuracy']:.4f}\n"
        f"  robust accuracy   ours {ours['robust_accuracy']:.4f}   "
        f"torchattacks {theirs['robust_accuracy']:.4f}\n"
        f"  time              ours {ours['seconds']:.3f} s   torchattacks {theirs['seconds']:.3f} s   "
        f"(torchattacks / ours = {result['speedup']:.2f}x)\n"
        f"  passes (images)   ours {ours['passes']} ({ours['forward']} fwd + {ours['backward']} bwd)   "
        f"floor {ours['floor']}   torchattacks {theirs['passes']}\n"
        f"  ours / floor = {ours['passes'] / max(ours['floor'], 1):.3f}   "
        f"torchattacks / floor = {theirs['passes'] / max(ours['floor'], 1):.2f}"
    )
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
