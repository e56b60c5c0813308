"""Compress, then re-test: each compression method on each parent, side by side with the parent, one run.

For every parent checkpoint (standard and adversarially trained, one or more zoo models) and every
method (``robust-eval compress --method``), the artefact is made (or reused from ``--out-dir``
while its record names this parent and method) and evaluated with the parent on the same test
images: file size, batch-1 latency on the artefact's own runtime, clean accuracy, ECE, mean
corruption accuracy, robust accuracy (the worst case over the attacks run; a gradient-free
artefact is attacked by transfer from its float parent plus Square), and the flip set against the
parent (clean images whose prediction changed, lost / gained). Not a timed test: the table is for
the closing note and the README.

Usage:
    python benchmarks/bench_compression.py --parents A.pt,B.pt --limit 1000 --out-dir /tmp/bench-compress
    python benchmarks/bench_compression.py --parents A.pt --methods int8,prune-channels:0.3 --json out.json
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
from robustbench_lite.config import RunConfig  # noqa: E402
from robustbench_lite.flips import flip_sets  # noqa: E402
from robustbench_lite.gates import headline  # noqa: E402
from robustbench_lite.training.compression import CompressOptions, ensure_artefact  # noqa: E402
from robustbench_lite.training.compression.run import default_output  # noqa: E402

METHODS = "int8,fp16,bf16,prune:0.5,prune-channels:0.3,distill:shufflenetv2_x0_5"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parents", required=True, help="comma-separated parent checkpoints")
    p.add_argument("--methods", default=METHODS, help=f"comma-separated methods (default: {METHODS})")
    p.add_argument("--limit", type=int, default=1000, help="test images (default: 1000)")
    p.add_argument("--eps", type=float, default=0.1, help="Linf budget of the attacks (default: 0.1)")
    p.add_argument("--square-queries", type=int, default=1000, help="Square's query budget (default: 1000)")
    p.add_argument("--severities", default="1,3,5", help="corruption severities (default: 1,3,5)")
    p.add_argument("--out-dir", default="benchmarks/out/compression", help="artefacts (kept and reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write every row here")
    return p.parse_args(argv)


def artefact(parent: Path, spec: str, out_dir: Path, seed: int) -> tuple[Path, float]:
    """The artefact of ``parent`` by ``spec`` (made now, or kept from an earlier run); seconds spent."""
    path = out_dir / default_output(parent, spec, CompressOptions(method=spec).entry.suffix).name
    t0 = time.perf_counter()
    made = ensure_artefact(parent, spec, path, seed=seed, log=lambda m: print(f"    {m}", flush=True))
    return path, time.perf_counter() - t0 if made else 0.0


def measure(path: Path, args: argparse.Namespace) -> Any:
    """Every suite on one model file; PGD is white-box, or (no gradients) transfer from the recorded parent."""
    config = RunConfig(checkpoint=str(path), suites=["clean", "corruptions", "adversarial", "efficiency"],
                       limit=args.limit, seed=args.seed, show_progress=False,
                       suite_options={"corruptions": {"severities": args.severities},
                                      "adversarial": {"attack": "pgd,square", "eps": args.eps,
                                                      "queries": args.square_queries}})
    return evaluate(config, log=lambda m: None)


def row(label: str, result: Any, parent: Any | None, seconds: float) -> dict[str, Any]:
    data = result.to_dict()
    heads = {(h.suite, h.label): h.value for h in headline(data)}
    robust = [v for (suite, label_), v in heads.items() if suite == "adversarial" and "(all attacks)" in label_]
    eff = data.get("efficiency") or {}
    out = {"run": label, "file_mb": eff.get("file_mb") or eff.get("size_mb"), "latency_ms": eff.get("latency_ms"),
           "params": eff.get("params"), "sparsity": eff.get("sparsity"), "clean": data["clean"]["accuracy"],
           "ece": data["clean"]["ece"], "corruptions": data["corruptions"]["mean_accuracy"],
           "robust": min(robust) if robust else None,
           "transfer": bool((data["adversarial"].get("settings") or {}).get("transfer_from")),
           "compress_seconds": round(seconds, 1)}
    if parent is not None and parent.records is not None and result.records is not None:
        flips = {f.path: f for f in flip_sets(parent.records, result.records)}
        clean = flips.get("clean.accuracy")
        out["flips"] = None if clean is None else {"flips": clean.count, "lost": clean.lost, "gained": clean.gained}
        out["flips_all_conditions"] = sum(f.count for f in flips.values())
    return out


def table(rows: list[dict[str, Any]]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["| run | file MB | latency ms | clean % | ECE | corruptions % | robust % | clean flips (lost/gained) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.get("flips")
        flips = "-" if f is None else f"{f['flips']} ({f['lost']}/{f['gained']})"
        robust = pct(r["robust"]) + (" (transfer+square)" if r["transfer"] else "")
        lines.append(f"| {r['run']} | {r['file_mb']:.2f} | {r['latency_ms']:.2f} | {pct(r['clean'])} | "
                     f"{r['ece']:.3f} | {pct(r['corruptions'])} | {robust} | {flips} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        CompressOptions(method=m)  # every method checked before any work
    rows = []
    for parent in (Path(p.strip()) for p in args.parents.split(",") if p.strip()):
        print(f"== {parent.name}", flush=True)
        base = measure(parent, args)
        rows.append(row(parent.stem, base, None, 0.0))
        print(table(rows[-1:]).splitlines()[-1], flush=True)  # every row as soon as it is measured
        for spec in methods:
            path, seconds = artefact(parent, spec, out_dir, args.seed)
            result = measure(path, args)
            rows.append(row(f"{parent.stem} {spec}", result, base, seconds))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            if args.json:  # kept up to date: a long run stopped half-way keeps its rows
                Path(args.json).write_text(json.dumps(rows, indent=2))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
