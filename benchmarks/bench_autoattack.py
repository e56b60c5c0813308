"""AutoAttack Linf: our native ensemble vs the original AutoAttack and torchattacks', same model, same images.

One run of each on the first ``--n`` test images, in this order:

* ours ``autoattack`` (standard: apgd-ce, apgd-t, square; fab-t is not native and is left out),
  ``apgd-ce`` alone and ``pgd`` with 20 steps x 5 restarts, all through ``attacks.evaluate_attack``;
* the original AutoAttack (Croce & Hein's code, not on PyPI: put it on ``PYTHONPATH``, e.g.
  ``PYTHONPATH=/path/to/auto-attack``), ``version='standard'`` (apgd-ce, apgd-t, fab-t, square),
  and its APGD-CE alone (``version='custom', attacks_to_run=['apgd-ce']``); skipped with a line
  saying so when ``autoattack`` is not importable;
* torchattacks' ``AutoAttack`` (``version='standard', n_classes=10``).

Prints a table: robust accuracy, seconds, the original AutoAttack's time divided by the row's
(higher is faster than the original), and forward/backward passes in images: ours as counted by
``evaluate_attack``, the references' counted by a thin wrapper around the model (every image through
``forward``, every image whose logits are backpropagated); the floor line is the passes early exit
cannot avoid for our ensemble (``floor_passes``). Models are loaded as in ``bench_attacks.py``.

On a shared machine whose speed drifts by tens of percent over an hour, ``--interleave 4`` runs
every row on each quarter of the images in turn (the order rotating), so the drift slows every row
alike; times and pass counts are summed and accuracies pooled over the chunks.

Usage:
    PYTHONPATH=/path/to/auto-attack python benchmarks/bench_autoattack.py --n 200
    python benchmarks/bench_autoattack.py --checkpoint ck.pt --n 1000 --interleave 4 --json aa.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attacks import LOCAL_MODEL, load, sync  # noqa: E402

from attacks import APGD, PGD, AutoAttack, broken_by_counts, evaluate_attack  # noqa: E402
from attacks.torchattacks_adapter import import_torchattacks  # noqa: E402
from robustbench_lite.errors import RobustEvalError  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="shufflenetv2",
                   help=f"model name, or {LOCAL_MODEL} for a small CNN trained here (default: shufflenetv2)")
    g.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: fashion-mnist)")
    g.add_argument("--checkpoint", default=None, help="checkpoint for --model (default: the cached quick baseline)")
    g.add_argument("--n", type=int, default=200, help="number of test images (default: 200)")
    g = p.add_argument_group("attack")
    g.add_argument("--eps", type=float, default=0.1, help="Linf budget in pixel units (default: 0.1)")
    g.add_argument("--seed", type=int, default=0, help="seed for every attack (default: 0)")
    g.add_argument("--skip", default="", help="comma-separated rows to skip: " + ", ".join(ROWS) + " (default: none)")
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, default=250, help="images per batch (default: 250, AutoAttack's)")
    g.add_argument("--interleave", type=int, default=1, metavar="K",
                   help="split the images into K chunks and run every row on each chunk in turn (the order "
                        "rotating), so a machine whose speed drifts over the hour slows every row alike; times and "
                        "counts are summed, accuracies pooled (default: 1, each row on all images at once)")
    g.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    g.add_argument("--json", default=None, help="also write the result dict here (default: none)")
    return p.parse_args(argv)


class CountingModel(nn.Module):
    """The model, counting images through forward and images whose logits get a gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0

    def _backward(self, n: int) -> Callable[[torch.Tensor], None]:
        def hook(_grad: torch.Tensor) -> None:
            self.backward_images += n

        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forward_images += len(x)
        if out.requires_grad:
            out.register_hook(self._backward(len(x)))
        return out


# ---------------------------------------------------------------------------------------------
# The contenders: each returns robust accuracy, seconds and passes where known.


def _ours(attack, model, images, labels, indices, args, device) -> dict[str, Any]:
    sync(device)
    start = time.perf_counter()
    res = evaluate_attack(model, attack, images, labels, indices, batch_size=args.batch_size)
    sync(device)
    out = {"seconds": time.perf_counter() - start, "robust_accuracy": res.robust_accuracy[0],
           "clean_accuracy": res.clean_accuracy, "forward": res.forward_passes, "backward": res.backward_passes,
           "floor": res.floor_passes, "attack": res.attack}  # fmt: skip
    if res.broken_by is not None:
        out["broken_by"] = broken_by_counts(res.broken_by)
    return out


def ours_autoattack(model, images, labels, indices, args, device):
    attack = AutoAttack(args.eps, seed=args.seed, version="standard")
    out = _ours(attack, model, images, labels, indices, args, device)
    out["components"] = list(attack.components)
    out["missing"] = list(attack.missing)
    out["component_seconds"] = {k: round(v, 2) for k, v in attack.seconds.items()}
    return out


def ours_apgd_ce(model, images, labels, indices, args, device):
    return _ours(APGD(args.eps, seed=args.seed), model, images, labels, indices, args, device)


def ours_pgd(model, images, labels, indices, args, device):
    return _ours(PGD(args.eps, steps=20, restarts=5, seed=args.seed), model, images, labels, indices, args, device)


def _reference(make_attack, run, model, images, labels, args, device) -> dict[str, Any]:
    """Time ``run(attack, x, y) -> adversarial`` over all images, then score the adversarials."""
    counted = CountingModel(model).eval()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # the original prints its settings and progress; keep the table clean
        attack = make_attack(counted)
        torch.manual_seed(args.seed)
        sync(device)
        start = time.perf_counter()
        adv = run(attack, images, labels)
        sync(device)
        seconds = time.perf_counter() - start
    with torch.no_grad():
        robust = sum(int((model(adv[i : i + args.batch_size]).argmax(1) == labels[i : i + args.batch_size]).sum())
                     for i in range(0, len(images), args.batch_size))  # fmt: skip
    return {"seconds": seconds, "robust_accuracy": robust / len(images),
            "forward": counted.forward_images, "backward": counted.backward_images,
            "log": log.getvalue().strip().splitlines()[-8:]}  # fmt: skip


def _original_run(attack, images, labels):
    return attack.run_standard_evaluation(images, labels, bs=attack.bench_bs)


def _original(model, images, labels, args, device, version: str) -> dict[str, Any]:
    from autoattack import AutoAttack as OriginalAutoAttack

    def make(counted):
        if version == "standard":
            a = OriginalAutoAttack(counted, norm="Linf", eps=args.eps, version="standard", seed=args.seed,
                                   device=str(device))
        else:
            a = OriginalAutoAttack(counted, norm="Linf", eps=args.eps, version="custom", attacks_to_run=["apgd-ce"],
                                   seed=args.seed, device=str(device))
        a.bench_bs = args.batch_size
        return a

    return _reference(make, _original_run, model, images, labels, args, device)


def original_autoattack(model, images, labels, indices, args, device):
    return _original(model, images, labels, args, device, "standard")


def original_apgd_ce(model, images, labels, indices, args, device):
    return _original(model, images, labels, args, device, "apgd-ce")


def torchattacks_autoattack(model, images, labels, indices, args, device):
    ta = import_torchattacks()

    def make(counted):
        return ta.AutoAttack(counted, norm="Linf", eps=args.eps, version="standard", n_classes=10, seed=args.seed)

    def run(attack, x, y):
        return torch.cat([attack(x[i : i + args.batch_size], y[i : i + args.batch_size])
                          for i in range(0, len(x), args.batch_size)])  # fmt: skip

    return _reference(make, run, model, images, labels, args, device)


ROWS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "ours-autoattack": ("ours autoattack (apgd-ce, apgd-t, square)", ours_autoattack),
    "ours-apgd-ce": ("ours apgd-ce", ours_apgd_ce),
    "ours-pgd": ("ours pgd-20 x 5 restarts", ours_pgd),
    "original-autoattack": ("original AutoAttack standard (+fab-t)", original_autoattack),
    "original-apgd-ce": ("original APGD-CE", original_apgd_ce),
    "torchattacks-autoattack": ("torchattacks AutoAttack standard", torchattacks_autoattack),
}
ORIGINAL_ROWS = ("original-autoattack", "original-apgd-ce")


def original_available() -> str | None:
    """None when the original AutoAttack imports, else why not."""
    try:
        from autoattack import AutoAttack as _  # noqa: F401
    except ImportError as exc:
        return f"{exc} (put Croce & Hein's auto-attack checkout on PYTHONPATH)"
    return None


def pooled(parts: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """One row from its runs on consecutive chunks: seconds and pass counts summed, accuracies pooled."""
    if len(parts) == 1:
        return parts[0][0]
    n = sum(size for _, size in parts)
    out = dict(parts[0][0])
    for key in ("seconds", "forward", "backward", "floor"):
        values = [r.get(key) for r, _ in parts]
        out[key] = None if any(v is None for v in values) else sum(values)
    for key in ("robust_accuracy", "clean_accuracy"):
        if all(key in r for r, _ in parts):
            out[key] = sum(r[key] * size for r, size in parts) / n
    for key in ("broken_by", "component_seconds"):
        if all(key in r for r, _ in parts):
            merged: dict[str, float] = {}
            for r, _ in parts:
                for name, value in r[key].items():
                    merged[name] = merged.get(name, 0) + value
            out[key] = {name: round(v, 2) if isinstance(v, float) else v for name, v in merged.items()}
    out["chunks"] = [{"images": size, "seconds": round(r["seconds"], 2), "robust_accuracy": r["robust_accuracy"]}
                     for r, size in parts]
    out["load_average_before"] = [r.get("load_average_before") for r, _ in parts]
    return out


def uptime() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def table(results: dict[str, dict[str, Any]], n: int) -> str:
    orig = results.get("original-autoattack", {}).get("seconds")
    lines = [f"  {'attack':<40} {'robust acc':>10} {'seconds':>9} {'orig AA/row':>11} {'fwd':>9} {'bwd':>9} "
             f"{'fwd+bwd':>9}"]  # fmt: skip
    for key, r in results.items():
        ratio = f"{orig / r['seconds']:.2f}x" if orig else "-"
        fwd, bwd = r.get("forward"), r.get("backward")
        total = "-" if fwd is None else f"{fwd + bwd}"
        lines.append(f"  {ROWS[key][0]:<40} {r['robust_accuracy']:>10.4f} {r['seconds']:>9.2f} {ratio:>11} "
                     f"{'-' if fwd is None else fwd:>9} {'-' if bwd is None else bwd:>9} {total:>9}")  # fmt: skip
    if "ours-autoattack" in results:
        lines.append(f"  {'floor for ours autoattack':<40} {'':>10} {'':>9} {'':>11} {'':>9} {'':>9} "
                     f"{results['ours-autoattack']['floor']:>9}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(ROWS):
        print(f"error: --skip {','.join(sorted(skip - set(ROWS)))} is not a row; valid: {', '.join(ROWS)}",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        import_torchattacks()
        model, images, labels, indices, setup_s = load(args)
    except RobustEvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    model = model.to(device).eval()
    images, labels = images.to(device), labels.to(device)
    missing_original = original_available()
    print(f"AutoAttack Linf eps={args.eps:g} on {len(images)} images ({args.model}/{args.dataset}"
          f"{', ' + args.checkpoint if args.checkpoint else ''}; {device}, {torch.get_num_threads()} threads, "
          f"one run each{f', interleaved in {args.interleave} chunks' if args.interleave > 1 else ''}; load average "
          f"before {uptime()})", flush=True)  # fmt: skip
    if missing_original:
        print(f"  original AutoAttack rows skipped: autoattack is not importable: {missing_original}", flush=True)
        skip |= set(ORIGINAL_ROWS)

    # Warm up our code path and the model (allocator, kernels) on a small batch before timing.
    warm = slice(0, min(16, len(images)))
    evaluate_attack(model, APGD(args.eps, steps=2), images[warm], labels[warm], indices[warm])

    results: dict[str, dict[str, Any]] = {}
    active = [key for key in ROWS if key not in skip]
    k = max(1, min(args.interleave, len(images)))
    chunks = [slice(round(i * len(images) / k), round((i + 1) * len(images) / k)) for i in range(k)]
    parts: dict[str, list[tuple[dict[str, Any], int]]] = {key: [] for key in active}
    for c, rows in enumerate(chunks):
        for key in active[c % len(active):] + active[:c % len(active)]:  # each row first in turn
            load_before = uptime()
            r = ROWS[key][1](model, images[rows], labels[rows], indices[rows], args, device)
            r["load_average_before"] = load_before
            parts[key].append((r, rows.stop - rows.start))
            where = f" (chunk {c + 1}/{k}: images {rows.start}-{rows.stop - 1})" if k > 1 else ""
            print(f"  done {ROWS[key][0]}{where}: robust accuracy {r['robust_accuracy']:.4f} in {r['seconds']:.2f} s "
                  f"(load average before {load_before})", flush=True)
    for key in active:
        results[key] = pooled(parts[key])
    clean = next((r["clean_accuracy"] for r in results.values() if "clean_accuracy" in r), float("nan"))
    print(f"clean accuracy {clean:.4f}\n{table(results, len(images))}")
    checks = {}
    if "ours-autoattack" in results and "original-autoattack" in results:
        ours, orig = results["ours-autoattack"], results["original-autoattack"]
        checks["robust_accuracy_gap_points"] = round(100 * (ours["robust_accuracy"] - orig["robust_accuracy"]), 2)
        checks["speedup_vs_original"] = round(orig["seconds"] / ours["seconds"], 2)
        print(f"  ours autoattack - original: {checks['robust_accuracy_gap_points']:+.2f} points (check <= +0.5); "
              f"original / ours time = {checks['speedup_vs_original']:.2f}x (goal >= 3x)")
    if "ours-apgd-ce" in results and "original-apgd-ce" in results:
        a, b = results["ours-apgd-ce"], results["original-apgd-ce"]
        checks["apgd_ce_speedup_vs_original"] = round(b["seconds"] / a["seconds"], 2)
        print(f"  apgd-ce: ours {a['robust_accuracy']:.4f} vs original {b['robust_accuracy']:.4f}; "
              f"original / ours time = {checks['apgd_ce_speedup_vs_original']:.2f}x")
    if "ours-autoattack" in results and "ours-pgd" in results:
        checks["autoattack_le_pgd"] = results["ours-autoattack"]["robust_accuracy"] <= results["ours-pgd"][
            "robust_accuracy"]
        print(f"  ours autoattack <= pgd-20x5: {checks['autoattack_le_pgd']}")
    if "ours-autoattack" in results:
        r = results["ours-autoattack"]
        print(f"  ours autoattack broken by: {r.get('broken_by')}; left out: {', '.join(r['missing']) or 'none'}; "
              f"seconds per component: {r.get('component_seconds')}")
    result = {"model": args.model, "dataset": args.dataset, "checkpoint": args.checkpoint, "n": len(images),
              "eps": args.eps, "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "interleave": args.interleave, "setup_seconds": round(setup_s, 3),
              "clean_accuracy": clean,
              "original_available": missing_original is None, "results": results, "checks": checks}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
