"""``robust-eval compare A.pt B.pt|R.json|run:ID ...``: one table, deltas against the first."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustbench_lite.commands import args as a
from robustbench_lite.errors import RobustEvalError, first_line


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=f"{a.PROG} compare",
                description="Compare models side by side: checkpoints are evaluated here with the same suites, "
                            "images and seed; saved results JSON files (or history runs) are read as they are. "
                            "One table: clean, adversarial, corruption, shift and efficiency scores per model, "
                            "with deltas against the first. Each delta is tested: on the same images (checkpoints "
                            "evaluated here, or results saved with --records) by McNemar's test or the paired "
                            "bootstrap, otherwise by whether the 95% intervals overlap; * marks a significant delta, "
                            "n.s. one with no detectable difference. Seeds of one recipe get their mean ± sd.",
                epilog="example:\n  robust-eval compare standard.pt pgd.pt augmix.pt --suite full --limit 1000 "
                       "-o reports/defences.md --html reports/defences.html",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT|RESULTS",
                   help="checkpoints (evaluated now), results JSON files, or history runs as run:ID")
    p.add_argument("--suite", action="append", default=None, metavar="NAME[,NAME]",
                   help="suites for the checkpoints (default: full, i.e. every suite)")
    p.add_argument("--dataset", default=None, help="evaluate on this dataset (default: each checkpoint's own)")
    p.add_argument("--limit", type=a.positive_int, default=None, metavar="N",
                   help="evaluate the first N test images (default: all)")
    p.add_argument("--batch-size", type=a.positive_int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--labels", default=None, metavar="A,B,...", help="column names (default: file names)")
    a.add_suite_arguments(p)
    a.add_inference_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", default="reports/compare.md", metavar="PATH",
                   help="the table, as .md, .csv, .json or .txt by extension (default: reports/compare.md)")
    g.add_argument("--json", default=None, metavar="PATH", help="every run's full results and the table in one JSON")
    g.add_argument("--html", default=None, metavar="PATH", help="HTML report of every run with the comparison")
    g.add_argument("--no-history", action="store_true", help="do not record the evaluations in the run history")
    a.add_run_arguments(p)
    return p


def _compare_input(spec: str) -> str:
    """'results' (a results JSON or history run) or 'checkpoint'; a missing file is an error now."""
    from robustbench_lite import history

    if history.run_id(spec) is not None:
        return "results"
    path = Path(spec)
    if not path.is_file():
        raise RobustEvalError(f"{spec} does not exist; pass checkpoints, results JSON files or run:ID")
    return "results" if path.suffix == ".json" else "checkpoint"


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import compare, history
    from robustbench_lite.api import evaluate, prepare
    from robustbench_lite.compare import FORMATS
    from robustbench_lite.config import RunConfig
    from robustbench_lite.outputs import attempt, write_json
    from robustbench_lite.records import load_records_for
    from robustbench_lite.suites import SUITES, expand_suites, full_suites, options_from_args

    args = a.parse(parser(), argv)
    kinds = [_compare_input(spec) for spec in args.inputs]  # every input checked before any work
    if Path(args.output).suffix not in FORMATS:
        raise RobustEvalError(f"--output {args.output}: use a table file ending in {', '.join(FORMATS)}")
    a.check_outputs({"--output": args.output, "--json": args.json, "--html": args.html},
                    {spec: spec for spec in args.inputs})
    labels = [lbl.strip() for lbl in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.inputs):
        raise RobustEvalError(f"--labels has {len(labels)} names for {len(args.inputs)} inputs; give one per input")
    suites = expand_suites(a.names(args.suite, "--suite", "clean,corruptions")) or full_suites()
    for name in suites:
        SUITES.entry(name)
    suite_options = options_from_args(args, suites)
    configs = {spec: RunConfig(dataset=args.dataset, suites=suites, checkpoint=spec, limit=args.limit,
                               batch_size=args.batch_size, device=args.device, seed=args.seed, data_dir=args.data_dir,
                               show_progress=a.show_progress(args), suite_options=suite_options,
                               precision=args.precision, inference=args.inference)
               for spec, kind in zip(args.inputs, kinds, strict=True) if kind == "checkpoint"}
    for config in configs.values():
        prepare(config)  # every checkpoint's refusals (an ONNX file with --precision, ...) before the first run
    runs, names, records, reasons = [], [], [], []
    for spec, kind in zip(args.inputs, kinds, strict=True):
        if kind == "results":
            data, label = history.load_results(spec)
            if label.startswith("run:"):
                names.append(label)
                found, why = None, "a history run keeps no per-image records"
            else:
                names.append(Path(label).stem)
                found, why = load_records_for(data, label)
            records.append(found)
            reasons.append(why)
        else:
            a.log(f"== {spec}")
            result = evaluate(configs[spec], log=a.log)
            result.command = [a.PROG, "compare", *argv]
            data = result.to_dict()
            if not args.no_history:
                _, why = history.try_record(data)
                if why:
                    a.log(f"robust-eval: warning: {Path(spec).name}'s run is not in the history ({why})")
            names.append(Path(spec).stem)
            records.append(result.records)  # evaluated here: the records are in memory
            reasons.append("" if result.records is not None else "no per-image records")
        runs.append(data)
    table = compare.compare(runs, labels or names, records, reasons=reasons)
    print(table.to_text())
    # every output is attempted; one that fails is a warning, not the comparison
    attempt(f"--output {args.output}", lambda: table.write(args.output), "table")
    if args.json:
        attempt(f"--json {args.json}", lambda: write_json(args.json, {"comparison": table.to_dict(), "runs": runs}),
                "results")
    if args.html:
        from robustbench_lite.report import write_html

        flips = flip_report(table, runs[0].get("dataset"), args.data_dir)
        attempt(f"--html {args.html}", lambda: write_html(args.html, runs, title="robust-eval compare", flips=flips),
                "report")
    return 0


#: Flipped clean images shown per run in the HTML report.
FLIP_EXAMPLES = 12


def flip_report(table: Any, dataset: str | None, data_dir: str | None) -> list[dict[str, Any]]:
    """The comparison's flip sets for the HTML report, with the first flipped clean images (lost first).

    The images are an illustration: when they cannot be drawn (the dataset is gone), a warning and
    the tables alone.
    """
    out = []
    test = None
    for label, sets in table.flip_rows().items():
        rows = [{"path": f.path, "images": f.images, "flips": f.count, "rate": f.rate, "lost": f.lost,
                 "gained": f.gained} for f in sets]
        examples: list[dict[str, Any]] = []
        clean = next((f for f in sets if f.path == "clean.accuracy" and f.by == "prediction" and f.count), None)
        if clean is not None and dataset:
            try:
                examples = _flip_examples(clean, table.classes, test := test or _test_set(dataset, data_dir))
            except Exception as exc:  # noqa: BLE001 - losing the pictures must not lose the report
                a.log(f"robust-eval: warning: the flipped images were left out of the report ({first_line(exc)})")
        out.append({"label": label, "against": table.labels[0], "rows": rows, "examples": examples})
    return out


def _test_set(dataset: str, data_dir: str | None) -> Any:
    from robustbench_lite import data as data_mod

    return data_mod.load(dataset, "test", data_dir)


def _flip_examples(flips: Any, classes: Sequence[str] | None, test: Any) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from robustbench_lite.analysis.examples import png_data

    def name(c: int) -> str:
        return str(classes[c]) if classes is not None and 0 <= c < len(classes) else str(c)

    lost = (flips.before == flips.labels) & (flips.after != flips.labels)
    gained = (flips.after == flips.labels) & (flips.before != flips.labels)
    order = np.concatenate([np.flatnonzero(lost), np.flatnonzero(gained), np.flatnonzero(~lost & ~gained)])
    chosen = order[:FLIP_EXAMPLES]
    images = test.float_images(torch.as_tensor(flips.flipped[chosen], dtype=torch.long))
    return [{"png": png_data(img), "index": int(flips.flipped[k]), "label": name(int(flips.labels[k])),
             "before": name(int(flips.before[k])), "after": name(int(flips.after[k])), "lost": bool(lost[k])}
            for img, k in zip(images, chosen, strict=True)]
