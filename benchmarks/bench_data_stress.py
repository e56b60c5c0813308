"""Training-data stress side by side: what small, imbalanced and mislabelled training sets cost, and what buys it back.

For each condition this trains ShuffleNetV2 on Fashion-MNIST (by default) with the quick recipe
through ``robustbench_lite.training`` (the same code as ``robust-eval train --imbalance 100
--defence balanced-softmax``), once without and once with the condition's remedy, then measures
with the evaluator:

* clean accuracy and worst-class accuracy on the whole test set (10,000 images), and for imbalance
  the rare third of the classes (by training images);
* mean corruption accuracy (15 corruptions x 5 severities) on the first ``--n`` test images;
* PGD-20 Linf robust accuracy at the dataset's eps (0.1) and at 0.01 on the same images (no model
  trained without adversarial examples keeps any accuracy at 0.1);
* for label noise, the label audit (``robust-eval audit-labels``): precision and recall of the
  flagged training images against the injected noise, with the out-of-fold probe (the default) and,
  for contrast, the model's own in-sample softmax (``--method model``).

Conditions (``--conditions``): none; imb10, imb100 (exponential profile; remedy balanced-softmax, or
class-balanced or balanced-sampler with ``--remedies``);
sym0.2, sym0.4, pair0.2, pair0.4, conf0.2, conf0.4 (remedy gce; ``confR`` is the unstressed model's
own confusion matrix scaled to rate R, ``--label-noise confusion:RESULTS.json@R``: errors between
the classes the model itself confuses, the realistic systematic kind); frac0.1, frac0.01 (remedy trivialaugment: strong
augmentation; ImageNet transfer, the other small-data remedy, needs weights this machine cannot
download). Small-data runs take as many optimisation steps as the full run (epochs x 1/fraction,
at most 300 epochs), so that they differ in data, not in training length.

Checkpoints and per-run results are cached in ``--workdir``: an interrupted run resumes where it
stopped. Not a timed benchmark: accuracies only (the table lists training minutes for reference).

Usage:
    python benchmarks/bench_data_stress.py                         # everything, about 90 minutes on 2 cores
    python benchmarks/bench_data_stress.py --conditions none,pair0.4 --n 500
    python benchmarks/bench_data_stress.py --remedies imbalance=class-balanced,noise=sce
    python benchmarks/bench_data_stress.py --conditions sym0.4,pair0.4 --only-remedy
    python benchmarks/bench_data_stress.py --conditions imb10,imb100 --remedies imbalance=balanced-sampler --only-remedy
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustbench_lite.api import evaluate  # noqa: E402
from robustbench_lite.config import RunConfig, TrainConfig  # noqa: E402
from robustbench_lite.training import train  # noqa: E402
from robustbench_lite.training.defences import DefenceOptions  # noqa: E402
from robustbench_lite.training.recipes import QUICK  # noqa: E402
from robustbench_lite.training.stressors import StressOptions  # noqa: E402

CONDITIONS = ("none", "imb10", "imb100", "sym0.2", "sym0.4", "pair0.2", "pair0.4", "conf0.2", "conf0.4", "frac0.1",
              "frac0.01")
REMEDIES = {"imbalance": "balanced-softmax", "noise": "gce", "small": "trivialaugment"}
MAX_EPOCHS = 300
#: PGD-20 budgets: Fashion-MNIST's standard eps (0.1), where a model without adversarial training is at
#: 0%, and a small one (0.01) where models without adversarial training still differ.
EPS, SMALL_EPS = 0.1, 0.01


def stress_of(condition: str, confusions: str = "") -> tuple[StressOptions | None, str]:
    """(the stressors, the family whose remedy applies) of a condition name (``confusions``: a results file
    whose clean confusion matrix ``confR`` scales)."""
    if condition == "none":
        return None, ""
    if condition.startswith("conf") and condition[4:].replace(".", "", 1).isdigit():
        return StressOptions(label_noise=f"confusion:{confusions}@{float(condition[4:]):g}").validate(), "noise"
    for prefix, family in (("imb", "imbalance"), ("sym", "noise"), ("pair", "noise"), ("frac", "small")):
        if condition.startswith(prefix):
            value = float(condition[len(prefix):])
            if family == "imbalance":
                return StressOptions(imbalance=value).validate(), family
            if family == "small":
                return StressOptions(fraction=value).validate(), family
            return StressOptions(label_noise=f"{prefix}:{value:g}").validate(), family
    raise SystemExit(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shufflenetv2")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated (default: all)")
    p.add_argument("--remedies", default=None, metavar="FAMILY=DEFENCE[,...]",
                   help=f"remedy per family (default: {REMEDIES})")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--no-remedy", action="store_true", help="train only without the remedies")
    only.add_argument("--only-remedy", action="store_true",
                      help="train only with the remedies (the stressed runs without them are measured elsewhere)")
    p.add_argument("--n", type=int, default=1000, help="test images for PGD-20 and corruptions (default: 1000)")
    p.add_argument("--audit", action=argparse.BooleanOptionalAction, default=True,
                   help="audit the labels of the noisy runs (default: on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="reports/bench_data_stress",
                   help="checkpoints and results (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the table as OUT.md and OUT.json (default: WORKDIR/table)")
    return p.parse_args(argv)


def epochs_for(stress: StressOptions | None) -> int:
    if stress is None or stress.fraction is None:
        return QUICK.epochs
    return min(MAX_EPOCHS, math.ceil(QUICK.epochs / stress.fraction))


def log_to_stderr(tag: str):
    return lambda m: print(f"  [{tag}] {m}", file=sys.stderr, flush=True)


def run_one(condition: str, remedy: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    tag = f"{condition}{'+' + remedy if remedy else ''}"
    cached = workdir / f"{tag}.json"
    stress, family = stress_of(condition, str(unstressed_results(args, workdir)) if condition.startswith("conf")
                               else "")
    row = json.loads(cached.read_text()) if cached.is_file() else measure(condition, remedy, tag, stress, family, args,
                                                                          workdir)
    row["train_minutes"] = train_minutes(row["checkpoint"])
    cached.write_text(json.dumps(row, indent=2))
    if family == "noise" and args.audit and "audit_precision" not in row:
        from robustbench_lite.auditing import audit_labels

        report = audit_labels(row["checkpoint"], log=log_to_stderr(tag))
        detection = report["detection"]
        row.update({"audit_flagged": report["flagged"], "audit_precision": detection["precision"],
                    "audit_recall": detection["recall"], "noise_changed": detection["injected"],
                    "audit_naive_precision": report["detection_predicted_neq_given"]["precision"],
                    "audit_naive_recall": report["detection_predicted_neq_given"]["recall"]})
        in_sample = audit_labels(row["checkpoint"], method="model", log=log_to_stderr(tag))["detection"]
        row.update({"audit_model_precision": in_sample["precision"], "audit_model_recall": in_sample["recall"]})
        cached.write_text(json.dumps(row, indent=2))
    return row


def unstressed_results(args: argparse.Namespace, workdir: Path) -> Path:
    """The unstressed run's clean results (trained and measured first when missing): its confusion matrix."""
    path = workdir / "none.clean.json"
    if not path.is_file():
        row = run_one("none", None, args, workdir)
        run = RunConfig(checkpoint=row["checkpoint"], suites=["clean"], seed=args.seed, show_progress=False)
        path.write_text(json.dumps(evaluate(run, log=log_to_stderr("none")).to_dict()))
    return path


def train_minutes(checkpoint: str) -> float | None:
    """The training loop's minutes as the checkpoint records them (not this run's: it may have reused the file)."""
    from robustbench_lite.sources.checkpoints import read_checkpoint

    seconds = read_checkpoint(checkpoint)["meta"].get("train_seconds")
    return None if seconds is None else seconds / 60


def measure(condition: str, remedy: str | None, tag: str, stress: StressOptions | None, family: str,
            args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train (unless the checkpoint is there) and evaluate one run."""
    ckpt = workdir / f"{args.model}--{tag}.pt"
    epochs = epochs_for(stress)
    if not ckpt.is_file():
        cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=epochs, seed=args.seed, output=str(ckpt),
                          defences=DefenceOptions.from_mapping({"defence": remedy}), stress=stress,
                          show_progress=False)
        train(cfg, log=log_to_stderr(tag))
    run = RunConfig(checkpoint=str(ckpt), suites=["clean"], seed=args.seed, show_progress=False)
    clean = evaluate(run, log=log_to_stderr(tag)).to_dict()["clean"]
    run = RunConfig(checkpoint=str(ckpt), suites=["adversarial", "corruptions"], limit=args.n, seed=args.seed,
                    show_progress=False, suite_options={"adversarial": {"attack": "pgd", "steps": 20,
                                                                         "eps": f"{SMALL_EPS:g},{EPS:g}"}})
    result = evaluate(run, log=log_to_stderr(tag)).to_dict()
    pgd = {r["eps"]: r["robust_accuracy"] for r in result["adversarial"]["results"] if r["attack"] == "pgd"}
    small_key = next(r["key"] for r in result["adversarial"]["results"]
                     if r["attack"] == "pgd" and r["eps"] == SMALL_EPS)
    robust_groups = (result["adversarial"].get("group_robust_accuracy") or {}).get(small_key) or {}
    return {
        "condition": condition, "remedy": remedy or "-", "family": family, "epochs": epochs,
        "clean_accuracy": clean["accuracy"], "worst_class_accuracy": clean.get("worst_class_accuracy"),
        "worst_class": clean.get("worst_class"),
        "rare_accuracy": (clean.get("group_accuracy") or {}).get("rare"),
        "rare_corruption_accuracy": (result["corruptions"].get("group_mean_accuracy") or {}).get("rare"),
        "rare_pgd20_small_eps_robust_accuracy": robust_groups.get("rare"),
        "mean_corruption_accuracy": result["corruptions"]["mean_accuracy"],
        "pgd20_robust_accuracy": pgd[EPS], "pgd20_small_eps_robust_accuracy": pgd[SMALL_EPS],
        "checkpoint": str(ckpt),
    }


def pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = ("| condition | remedy | epochs | clean acc | worst class | rare third: clean / corr. / PGD at "
            f"{SMALL_EPS:g} | mean corruption acc "
            f"(n={args.n}) | PGD-20 acc at {SMALL_EPS:g} / {EPS:g} | audit P / R (probe; model's softmax) | "
            "train min |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['condition']} | {r['remedy']} | {r['epochs']} | {pct(r['clean_accuracy'])} | "
        f"{pct(r['worst_class_accuracy'])} ({r['worst_class']}) | "
        + (f"{pct(r['rare_accuracy'])} / {pct(r.get('rare_corruption_accuracy'))} / "
           f"{pct(r.get('rare_pgd20_small_eps_robust_accuracy'))} | " if r['family'] == 'imbalance' else "- | ")
        + f"{pct(r['mean_corruption_accuracy'])} | {pct(r['pgd20_small_eps_robust_accuracy'])} / "
        f"{pct(r['pgd20_robust_accuracy'])} | "
        + (f"{pct(r['audit_precision'])} / {pct(r['audit_recall'])}; {pct(r.get('audit_model_precision'))} / "
           f"{pct(r.get('audit_model_recall'))} | " if 'audit_precision' in r else "- | ")
        + (f"{r['train_minutes']:.1f} |\n" if r.get("train_minutes") is not None else "- |\n") for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    remedies = dict(REMEDIES)
    for item in (args.remedies or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            remedies[key.strip()] = value.strip()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else workdir / "table"
    rows = []
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    # every name checked before any training (this file stands in for the results a confR row reads)
    families = {condition: stress_of(condition, __file__)[1] for condition in conditions}
    for condition, family in families.items():
        with_remedy = [remedies[family]] if family and not args.no_remedy else []
        for remedy in ([] if args.only_remedy and with_remedy else [None]) + with_remedy:
            print(f"== {condition}{' + ' + remedy if remedy else ''}", file=sys.stderr, flush=True)
            rows.append(run_one(condition, remedy, args, workdir))
            text = table(rows, args)
            out.with_suffix(".md").write_text(text)
            out.with_suffix(".json").write_text(json.dumps({"rows": rows, "torch_threads": torch.get_num_threads(),
                                                            "args": vars(args)}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
