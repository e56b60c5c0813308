"""Speed of the native batched corruptions against imagecorruptions (one image at a time).

Corrupts Fashion-MNIST test images (resized to 32 px) with every benchmark corruption at all
five severities, once with ours (one batched call per corruption and severity) and once with the
imagecorruptions reference (per image, as it works), and prints a table per corruption and the
total speed-up. imagecorruptions implements the ImageNet-C constants only, so the reference
always runs the ``imagenet`` profile; ours runs ``--profile`` (default ``imagenet``, the
like-for-like comparison; ``both`` adds a column for the ``cifar`` profile).

Usage::

    python benchmarks/bench_corruptions.py --n 1000
    python benchmarks/bench_corruptions.py --n 200 --corruptions 'gaussian_*,fog' --profile both

Unless ``--no-inference``, it also times the model inference a corruption suite runs on the same
corrupted images (shufflenetv2 for the images' channels and size, eval mode, batches of 256 under
``torch.inference_mode``, once per corruption and severity) and prints the suite's corruption
time as a fraction of it (goal: below one half).
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a checkout
    sys.path.insert(0, str(ROOT))

import corruptions  # noqa: E402
from corruptions import reference  # noqa: E402
from corruptions.base import BENCHMARK  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
GOAL = 20.0
#: The corruption suite's corruption time should stay below this fraction of its inference time.
INFERENCE_GOAL = 0.5
INFERENCE_MODEL = "shufflenetv2"
INFERENCE_BATCH = 256
SEVERITIES = (1, 2, 3, 4, 5)


def read_idx_images(path: str | Path, n: int) -> np.ndarray:
    """The first ``n`` images of an IDX3 ubyte file (gzip or plain), as uint8 N x H x W."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"no images at {path}; pass --data PATH to an *-images-idx3-ubyte(.gz) file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        magic, count, rows, cols = np.frombuffer(f.read(16), dtype=">u4")
        if magic != 2051:
            raise SystemExit(f"{path} is not an IDX3 image file (magic {magic}, expected 2051)")
        n = min(n, int(count))
        return np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows, cols)


def load_images(path: str | Path, n: int, size: int = 32) -> torch.Tensor:
    """Float N x 1 x size x size in [0,1] (bilinear resize, as the dataset loaders do)."""
    x = torch.from_numpy(read_idx_images(path, n).copy()).float().div_(255)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(0, 1)


def select(patterns: str | None) -> list[str]:
    if not patterns:
        return list(BENCHMARK)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    known = BENCHMARK + corruptions.EXTRA
    names = [n for n in known if any(fnmatch.fnmatchcase(n, p) for p in wanted)]
    if not names:
        raise SystemExit(f"error: --corruptions {patterns!r} matches none of: {', '.join(known)}")
    return names


def time_native(
    name: str, images: torch.Tensor, profile: str, repeat: int = 1
) -> tuple[float, dict[int, torch.Tensor]]:
    """Best of ``repeat`` timings of all five severities, each one batched call."""
    corruptions.CORRUPTIONS.get(name, severity=1, profile=profile)(images[:4])  # warm-up
    best, outs = float("inf"), {}
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        for s in SEVERITIES:
            outs[s] = corruptions.CORRUPTIONS.get(name, severity=s, profile=profile, seed=0)(images)
        best = min(best, time.perf_counter() - start)
    return best, outs


def time_reference(name: str, images: torch.Tensor) -> tuple[float, dict[int, torch.Tensor]]:
    outs = {}
    reference.reference_corrupt(images[:1], name, 1, seed=0)  # warm-up
    start = time.perf_counter()
    for s in SEVERITIES:
        outs[s] = reference.reference_corrupt(images, name, s, seed=0, profile=reference.REFERENCE_PROFILE)
    return time.perf_counter() - start, outs


def time_inference(images: torch.Tensor, repeat: int = 1, model: str = INFERENCE_MODEL,
                   batch_size: int = INFERENCE_BATCH) -> float:
    """Best of ``repeat`` timings of one inference pass over ``images`` (as a suite runs it per
    corruption and severity): ``model`` built for the images' channels and size, eval mode,
    ``torch.inference_mode``, batches of ``batch_size``."""
    from robustbench_lite.models import build

    net = build(model, 10, images.shape[1], max(images.shape[-2:])).eval()
    best = float("inf")
    with torch.inference_mode():
        net(images[:batch_size])  # warm-up
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            for i in range(0, images.shape[0], batch_size):
                net(images[i : i + batch_size])
            best = min(best, time.perf_counter() - start)
    return best


def mean_change(images: torch.Tensor, outs: dict[int, torch.Tensor]) -> float:
    return float(np.mean([(o - images).abs().mean().item() for o in outs.values()]))


def run(
    images: torch.Tensor, names: list[str], profiles: list[str], repeat: int = 1, log=print
) -> dict[str, float]:
    """Time every corruption; returns a flat dict: seconds per ``<name>/<backend>`` and the totals.

    ``native_<profile>`` is ours at that profile, ``reference`` imagecorruptions (always imagenet).
    ``change`` is ours' mean |corrupted - clean| over the reference's, at the imagenet profile.
    """
    results: dict[str, float] = {}
    n = images.shape[0] * len(SEVERITIES)
    header = f"{'corruption':18s} {'reference (s)':>13s}"
    header += "".join(f" {'ours ' + p + ' (s)':>17s} {'img/s':>8s} {'speed-up':>9s}" for p in profiles)
    header += f" {'change ours/ref':>16s}" if reference.REFERENCE_PROFILE in profiles else ""
    log(header)
    log("-" * len(header))
    for name in names:
        cls = corruptions.CORRUPTIONS.entry(name) if name in corruptions.CORRUPTIONS else None
        if cls is None or cls.availability() is not None:
            log(f"{name:18s} skipped: {'not registered' if cls is None else cls.availability()}")
            continue
        ref_s, ref_out = time_reference(name, images)
        results[f"{name}/reference"] = ref_s
        row = f"{name:18s} {ref_s:13.3f}"
        change = None
        for p in profiles:
            ours_s, ours_out = time_native(name, images, p, repeat)
            results[f"{name}/native_{p}"] = ours_s
            row += f" {ours_s:17.3f} {n / ours_s:8.0f} {ref_s / ours_s:8.1f}x"
            if p == reference.REFERENCE_PROFILE:
                change = mean_change(images, ours_out) / max(mean_change(images, ref_out), 1e-12)
                results[f"{name}/change_ratio"] = change
        log(row + (f" {change:16.2f}" if change is not None else ""))
    ref = sum(v for k, v in results.items() if k.endswith("/reference"))
    if ref:
        log("-" * len(header))
        row = f"{'total':18s} {ref:13.3f}"
        results["total/reference"] = ref
        for p in profiles:
            ours = sum(v for k, v in results.items() if k.endswith(f"/native_{p}"))
            results[f"total/native_{p}"], results[f"total/speedup_{p}"] = ours, ref / ours
            done = sum(1 for k in results if k.endswith(f"/native_{p}") and not k.startswith("total/"))
            row += f" {ours:17.3f} {done * n / ours:8.0f} {ref / ours:8.1f}x"
        log(row)
        for p in profiles:
            speedup = results[f"total/speedup_{p}"]
            log(f"profile {p}: {speedup:.1f}x total speed-up ({'meets' if speedup >= GOAL else 'BELOW'} "
                f"the {GOAL:.0f}x goal)")
    return results


def report_inference(images: torch.Tensor, results: dict[str, float], profiles: list[str], repeat: int = 1,
                     log=print) -> dict[str, float]:
    """Time the suite's inference on ``images`` and log each profile's corruption / inference time."""
    per_pass = time_inference(images, repeat)
    results["inference/pass"] = per_pass
    log(f"inference: {INFERENCE_MODEL} on {images.shape[0]} images {tuple(images.shape[1:])}, batch "
        f"{INFERENCE_BATCH}: {per_pass:.3f} s per pass ({images.shape[0] / per_pass:.0f} img/s)")
    for p in profiles:
        timed = [v for k, v in results.items() if k.endswith(f"/native_{p}") and not k.startswith("total/")]
        passes = len(timed) * len(SEVERITIES)
        if not passes:
            continue
        corrupt = sum(timed)
        infer = per_pass * passes
        fraction = corrupt / infer
        results[f"inference/{p}"], results[f"inference/fraction_{p}"] = infer, fraction
        log(f"profile {p}: corruption {corrupt:.3f} s / inference {infer:.3f} s ({passes} passes) = "
            f"{fraction:.2f} ({'meets' if fraction < INFERENCE_GOAL else 'ABOVE'} the < {INFERENCE_GOAL:g} goal)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of test images (default: 1000)")
    parser.add_argument("--profile", choices=("imagenet", "cifar", "both"), default="imagenet",
                        help="profile of our corruptions; the reference is always imagenet "
                             "(default: imagenet)")
    parser.add_argument("--corruptions", default=None,
                        help="comma-separated names or fnmatch patterns "
                             "(default: the 15 benchmark corruptions)")
    parser.add_argument("--data", default=FASHION_MNIST, help=f"IDX3 images file (default: {FASHION_MNIST})")
    parser.add_argument("--size", type=int, default=32, help="image side in px, >= 32 (default: 32)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time ours this many times, keep the best; the reference runs once (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-inference", dest="inference", action="store_false",
                        help=f"skip timing the suite's {INFERENCE_MODEL} inference on the same images")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size < reference.MIN_SIZE:
        parser.error(f"--size must be at least {reference.MIN_SIZE} (imagecorruptions' minimum)")
    if not reference.is_available():
        print(reference.INSTALL_HINT, file=sys.stderr)
        return 2
    names = select(args.corruptions)
    images = load_images(args.data, args.n, args.size)
    profiles = ["imagenet", "cifar"] if args.profile == "both" else [args.profile]
    print(f"{images.shape[0]} images {tuple(images.shape[1:])} from {args.data}; torch threads: "
          f"{torch.get_num_threads()}; severities 1-5 each")
    print(f"reference: imagecorruptions (per image, profile imagenet, one run); ours: batched, profile "
          f"{' and '.join(profiles)}, best of {args.repeat}")
    results = run(images, names, profiles, repeat=args.repeat)
    if args.inference:
        report_inference(images, results, profiles, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
