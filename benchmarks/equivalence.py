"""Same command, same numbers: record the JSON of a fixed set of commands, then diff two recordings.

Used to check that a refactor changes no result (issue 13): record on the old commit, record on
the new one, diff. Every number is compared exactly except wall-clock measurements (timings,
latency, throughput, memory, seconds, dates, paths of temporary files).

    python benchmarks/equivalence.py record OUT_DIR [--only NAME,NAME] [--home DIR]
    python benchmarks/equivalence.py diff BEFORE_DIR AFTER_DIR

``record`` runs the commands with *this checkout's* code (its root goes first on PYTHONPATH), so
the script can be copied into an old worktree and run from there. The quick shufflenetv2 /
Fashion-MNIST baseline is taken from (or trained into) ``--home`` (default: ``$ROBUST_EVAL_HOME``
or the usual cache); two small digits checkpoints are trained by each recording, so training is
checked too (their tensors are hashed into ``checkpoints.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Keys whose values are wall-clock measurements or run-specific text, compared by presence only.
VOLATILE = {
    "timings", "seconds", "train_seconds", "latency_ms", "latency_ms_std", "throughput", "throughput_img_s",
    "peak_memory_mb", "peak_memory", "memory", "created", "date", "when", "environment", "command",
    "corruption_seconds", "inference_seconds", "time", "wall_seconds", "duration", "dir", "path", "json",
    "output_dir", "cache_corruptions", "checkpoint", "checkpoints", "data_dir", "file", "source",
    "results_path", "report", "table", "latency", "elapsed", "started", "finished", "history", "latency_ms_p90",
    "train minutes",
}
#: Keys that hold the run's settings as given, not results: their differences are listed apart (a refactor may
#: change how options are written, e.g. typed lists for comma strings) and do not fail the diff.
SETTINGS = ("config", "sweep")


def _commands(work: Path) -> dict[str, list[str]]:
    a, b = str(work / "a.pt"), str(work / "b.pt")
    cache = str(work / "ccache")
    sweep_yaml = work / "sweep.yaml"
    sweep_yaml.write_text(
        "models: [shufflenetv2_x0_5, resnet18]\n"
        "datasets: [digits]\n"
        "suites: [clean, adversarial, corruptions, shift]\n"
        f"checkpoints:\n  shufflenetv2_x0_5/digits: {a}\n  resnet18/digits: {b}\n"
        "suite_options:\n"
        "  adversarial: {attack: 'fgsm,pgd', steps: 5}\n"
        "  corruptions: {corruptions: 'noise,blur', severities: '1,3'}\n"
        f"output_dir: {work / 'sweep'}\n"
    )
    return {
        "full": ["--suite", "full", "--limit", "500"],
        "adv_linf": ["--suite", "adversarial", "--attack", "fgsm,pgd", "--norm", "Linf", "--eps", "0.05,0.1",
                     "--limit", "300"],
        "adv_l2": ["--suite", "adversarial", "--attack", "fgsm,pgd", "--norm", "L2", "--eps", "0.5,1",
                   "--limit", "300"],
        "adv_both_norms": ["--suite", "adversarial", "--attack", "fgsm,pgd", "--norm", "Linf,L2", "--limit", "300"],
        "corruptions_cold": ["--suite", "corruptions", "--corruptions", "all", "--limit", "200",
                             "--cache-corruptions", cache],
        "corruptions_warm": ["--suite", "corruptions", "--corruptions", "all", "--limit", "200",
                             "--cache-corruptions", cache],
        "shift": ["--suite", "shift", "--limit", "500"],
        "compare": ["compare", a, b, "--suite", "clean,adversarial,corruptions,shift", "--limit", "300",
                    "--corruptions", "noise,digital", "--severities", "2,4", "-o", str(work / "compare.md"),
                    "--no-history"],
        "sweep": ["sweep", str(sweep_yaml), "--limit", "200"],
    }


def _run(args: list[str], env: dict[str, str], log: Path) -> None:
    cmd = [sys.executable, "-m", "robustbench_lite", *args]
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}; see {log}")


def _tensor_hashes(path: Path) -> dict[str, str]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = state.get("state_dict", state.get("model", state))
    return {k: hashlib.sha256(v.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
            for k, v in sorted(tensors.items()) if hasattr(v, "detach")}


def record(out: Path, only: list[str] | None, home: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="equiv-"))
    # One thread: results must not depend on how a shared machine schedules OpenMP threads, and
    # both recordings of a diff must run with the same thread count.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "ROBUST_EVAL_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if home:
        env["ROBUST_EVAL_HOME"] = home
    log = out / "log.txt"
    log.write_text("")
    for name, model in (("a", "shufflenetv2_x0_5"), ("b", "resnet18")):
        _run(["train", "--model", model, "--dataset", "digits", "--epochs", "8", "--batch-size", "64",
              "--lr", "0.01", "--output", str(work / f"{name}.pt"), "--no-progress"], env, log)
    (out / "checkpoints.json").write_text(json.dumps(
        {n: _tensor_hashes(work / f"{n}.pt") for n in ("a", "b")}, indent=1) + "\n")
    for name, args in _commands(work).items():
        if only and name not in only:
            continue
        target = out / f"{name}.json"
        if args[0] == "compare":
            _run([*args, "--json", str(target)], env, log)
        elif args[0] == "sweep":
            _run(args, env, log)
            shutil.copy(work / "sweep" / "results.json", target)
        else:
            _run([*args, "--json", str(target), "--no-history", "--no-progress"], env, log)
    shutil.rmtree(work, ignore_errors=True)


def _walk(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{sub}: only in {'after' if key not in a else 'before'}")
            elif key not in VOLATILE:
                _walk(a[key], b[key], sub, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):  # a length difference is reported above
            _walk(x, y, f"{path}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: {a!r} != {b!r}")


def diff(before: Path, after: Path) -> int:
    problems: list[str] = []
    settings: list[str] = []
    names = sorted({p.name for p in before.glob("*.json")} | {p.name for p in after.glob("*.json")})
    for name in names:
        if not (before / name).is_file() or not (after / name).is_file():
            problems.append(f"{name}: missing in {'after' if (before / name).is_file() else 'before'}")
            continue
        found: list[str] = []
        _walk(json.loads((before / name).read_text()), json.loads((after / name).read_text()), "", found)
        setting = [p for p in found if any(part in SETTINGS for part in p.split(":")[0].replace("[", ".").split("."))]
        settings += [f"{name}: {p}" for p in setting]
        problems += [f"{name}: {p}" for p in found if p not in setting]
        print(f"{name}: {len(found) - len(setting)} result differences, {len(setting)} settings written differently")
    for p in settings[:200]:
        print("  setting: " + p)
    for p in problems[:200]:
        print("  RESULT: " + p)
    print("equivalent: every result is identical" if not problems else f"{len(problems)} result differences")
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--only", default=None, help="comma-separated command names")
    r.add_argument("--home", default=None, help="ROBUST_EVAL_HOME for the runs (the baseline cache)")
    d = sub.add_parser("diff")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    args = p.parse_args()
    if args.cmd == "record":
        record(args.out, args.only.split(",") if args.only else None, args.home)
        return 0
    return diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
