"""Wall time of whole suites on today's eager path and on the new forward paths, in one run.

Runs the cached ShuffleNetV2 quick baseline on Fashion-MNIST's test images (``--n``, default all
10,000) through ``--suites`` (default ``clean,corruptions``: 15 corruptions x 5 severities) three
ways, in rotation over ``--rounds`` rounds (medians kept):

* ``eager fp32``: ``--inference eager``, the module as given (today's path);
* ``auto fp32``: ``--inference auto``, the default: the fastest path whose predictions equal eager's;
* ``auto bf16``: ``--precision bf16``, opt-in.

Beside each: the suites' wall seconds, the speed-up over eager and how many predictions differ
from eager fp32 over every condition the run scores (every image of every corruption and
severity): the default must change none; bf16 reports what it changes (and its agreement with
fp32 on the clean set).

Usage::

    python benchmarks/bench_suites.py                          # clean,corruptions on 10,000 images
    python benchmarks/bench_suites.py --suites full --n 2000    # every suite

Goals (issue 19): the corruption suite on 10,000 images in at most 150 s in fp32 and 100 s in bf16
on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a script from a checkout
    sys.path.insert(0, str(ROOT))

from robustbench_lite.api import evaluate  # noqa: E402

WAYS = {"eager fp32": {"inference": "eager"}, "auto fp32": {"inference": "auto"},
        "auto bf16": {"inference": "auto", "precision": "bf16"}}
GOALS = {"auto fp32": 150.0, "auto bf16": 100.0}


def predictions(result) -> dict[str, np.ndarray]:
    return {c.path: np.asarray(c.predicted) for c in result.records if c.predicted is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="clean,corruptions")
    parser.add_argument("--n", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ways = args.ways.split(",")
    print(f"suites {args.suites}, {args.n or 'all'} images, threads {args.threads}, load {os.getloadavg()[0]:.2f} "
          "at start")
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    suite_seconds: dict[str, dict[str, list[float]]] = {w: {} for w in ways}
    results = {}
    for r in range(args.rounds):
        for way in ways[r % len(ways):] + ways[:r % len(ways)]:
            t0 = time.perf_counter()
            result = evaluate("shufflenetv2", "fashion-mnist", args.suites, limit=args.n, **WAYS[way])
            seconds[way].append(time.perf_counter() - t0)
            for name in result.suites:
                suite_seconds[way].setdefault(name, []).append(result.timings[name])
            results[way] = result
            print(f"  round {r + 1}: {way} {seconds[way][-1]:.1f} s ({results[way].inference['path']})", flush=True)
    reference = predictions(results[ways[0]])
    base = statistics.median(seconds[ways[0]])
    names = list(results[ways[0]].suites)
    print(f"\n  {'way':12s} {'path':14s} {'total s':>8s} {'x eager':>8s} "
          + " ".join(f"{n + ' s':>14s}" for n in names) + f" {'changed':>20s}  agreement with fp32")
    missed = []
    for way in ways:
        got = predictions(results[way])
        changed = sum(int((got[k] != v).sum()) for k, v in reference.items())
        total = sum(v.size for v in reference.values())
        sec = statistics.median(seconds[way])
        agreement = results[way].inference.get("agreement_with_fp32")
        per_suite = {n: statistics.median(v) for n, v in suite_seconds[way].items()}
        print(f"  {way:12s} {results[way].inference['path']:14s} {sec:8.1f} {base / sec:7.2f}x "
              + " ".join(f"{per_suite[n]:14.1f}" for n in names)
              + f" {changed:9d} / {total:<9d}  "
              + (f"{agreement['agreement']:.4f} ({agreement['changed']} changed)" if agreement else "-"))
        if way.endswith("fp32") and changed:
            missed.append(f"{way} changed {changed} predictions")
        if way in GOALS and "corruptions" in per_suite and per_suite["corruptions"] > GOALS[way]:
            missed.append(f"{way}: corruptions {per_suite['corruptions']:.0f} s > goal {GOALS[way]:.0f} s")
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")
    if missed:
        print("missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
