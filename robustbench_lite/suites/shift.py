"""Shift suite: accuracy and calibration on shifted test splits, and a distributional robustness summary.

Splits come from :mod:`robustbench_lite.shift` (``--shift-splits``; default: every split that
applies to the run's dataset; the others are listed under ``skipped`` with the reason). Each
split is scored like the clean suite (accuracy, ECE, NLL, macro-F1, per-class accuracy,
reliability-diagram bins) at each of its settings (covariate intensities, Dirichlet alphas);
its headline numbers are the means over settings, ``drop`` is its reference accuracy minus its
accuracy (the clean test split, or ``subpop/source`` for ``subpop/target``).

Label shift is scored per draw; a level reports the mean and the spread (std, min, max) over
draws. Macro-F1 is averaged over the classes present in the split (a resample at alpha 0.1 holds
few classes, and absent classes would count as F1 = 0).

Summary over the shifted splits that score the model's own task: ``mean_accuracy``,
``worst_accuracy`` (+ ``worst_split``), and ``accuracy_ratio`` = the mean of accuracy / reference
accuracy (= mean accuracy / clean accuracy when every reference is the clean split).

Per-image records (conditions; see :mod:`robustbench_lite.records`), ``<split>`` as in ``splits``:

* ``shift.clean_accuracy``: the clean predictions on the test images (image set ``test``).
* ``shift.splits.<split>.levels.<level>``: one named level (covariate intensity ``3``), or
  ``shift.splits.<split>.accuracy`` for a split with one unnamed level (natural, subpopulation).
  Covariate levels are on ``test``; natural and subpopulation sets have their own images, the
  image set ``shift:<split>`` (dataset indices of that set).
* ``shift.splits.<split>.levels.<level>.draws.<d>``: a label-shift draw, on ``test`` with each
  image weighted by how often the draw holds it; the level's accuracy is the mean over draws.
* ``shift.splits.<split>.reference_accuracy``: the reference's images (``test`` for the clean
  split, ``shift:subpop/source`` for ``subpop/target``).

Derived from them (paired bootstrap intervals, each image set resampled on its own): each
level's mean over draws, each split's ``accuracy`` (over levels), ``drop``, ``accuracy_ratio`` and
``worst_level_accuracy``, and the summary ``mean_accuracy``, ``worst_accuracy``,
``accuracy_ratio`` and ``worst_ratio``. Per-class accuracies are not recorded.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np
import torch

from robustbench_lite import shift
from robustbench_lite.analysis.groups import class_groups, worst_class
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import finite, num, pct
from robustbench_lite.metrics import (
    accuracy,
    classification_report,
    expected_calibration_error,
    negative_log_likelihood,
)
from robustbench_lite.records import TEST, Records
from robustbench_lite.results import SuiteResult
from robustbench_lite.suites.base import EvalContext, HeadlineMetric, Suite, register_suite, stats

#: How many of the classes that lose most accuracy each split lists.
TOP_CLASSES = 3
#: Shift splits drawn in the report's reliability diagram besides the clean split (the worst ones).
RELIABILITY_SPLITS = 4


@dataclass
class LevelScore:
    """One setting of a split (an intensity, an alpha, or the whole split).

    ``spread`` (std/min/max per metric) and ``draws`` (prior and metrics per draw) are filled for
    label shift; ``per_class_accuracy`` and ``reliability`` then pool every draw.
    """

    name: str
    params: dict[str, Any]
    n_examples: int
    accuracy: float
    ece: float
    nll: float
    f1_macro: float
    drop: float
    per_class_accuracy: list[float]
    reliability: dict[str, Any]
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    draws: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SplitScore:
    """One split: means over its levels, the drop from its reference, the classes that lose most."""

    name: str
    kind: str
    description: str
    accuracy: float
    ece: float
    nll: float
    f1_macro: float
    drop: float
    reference: str
    reference_accuracy: float
    accuracy_ratio: float
    worst_level: str
    worst_level_accuracy: float
    classes: list[str]
    classes_losing_most: list[dict[str, Any]]
    levels: list[LevelScore]
    shifted: bool = True
    in_summary: bool = True
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: with ``--calibrate``: ECE/NLL before and after temperature scaling, per level and their means
    calibration: dict[str, Any] | None = None
    #: a stressed checkpoint's frequent/medium/rare classes: the mean of their per-class accuracies
    group_accuracy: dict[str, float] | None = None


@dataclass
class ShiftResult(SuiteResult):
    n_examples: int
    classes: list[str]
    clean_accuracy: float
    clean_ece: float
    clean_nll: float
    clean_f1_macro: float
    mean_accuracy: float
    worst_accuracy: float
    worst_split: str | None
    accuracy_ratio: float
    worst_ratio: float
    splits: dict[str, SplitScore] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: a stressed checkpoint's class groups: their accuracy averaged over the summary's splits
    group_mean_accuracy: dict[str, float] | None = None

    def summary(self) -> dict[str, float | int | str]:
        return {"splits": sum(s.in_summary and s.shifted for s in self.splits.values()),
                "mean acc": round(self.mean_accuracy, 4), "worst acc": round(self.worst_accuracy, 4),
                "worst split": self.worst_split or "-", "acc ratio": round(self.accuracy_ratio, 4),
                "skipped": len(self.skipped),
                **{f"{g} classes": round(a, 4) for g, a in (self.group_mean_accuracy or {}).items()}}


def _group_means(per_split: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Each class group's accuracy averaged over the splits that have it."""
    present = [g for g in per_split if g]
    if not present:
        return None
    return {group: _mean([g[group] for g in present]) for group in present[0]}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def level_path(split: str, level: str) -> str:
    """The condition of one level: ``shift.splits.<split>.levels.<level>``; the split's own accuracy
    (``shift.splits.<split>.accuracy``) when it has one unnamed level."""
    return f"shift.splits.{split}.levels.{level}" if level else f"shift.splits.{split}.accuracy"


def _image_set(records: Records, owner: str, level: shift.Level) -> str:
    """The image set a level is scored on: the run's test images, or its own (declared here)."""
    if level.indices is None:
        return TEST
    name = f"shift:{owner}" + (f".{level.name}" if level.name else "")
    records.add_images(name, level.indices, level.labels)
    return name


def record_split(records: Records, data: shift.SplitData) -> None:
    """Record every level (and label-shift draw) of a built split, and its reference's images."""
    for level in data.levels:
        images = _image_set(records, data.name, level)
        predicted = level.logits.argmax(dim=1)
        path = level_path(data.name, level.name)
        if not level.draws:
            records.add(path, predicted=predicted, images=images)
        for d, idx in enumerate(level.draws or ()):
            weights = np.bincount(idx.cpu().numpy(), minlength=len(level.labels))  # the draw resamples the set
            records.add(f"{path}.draws.{d}", predicted=predicted, images=images, weights=weights)
    if data.reference is None:
        records.add(f"shift.splits.{data.name}.reference_accuracy", correct=records["shift.clean_accuracy"].correct)
    else:
        ref = data.reference
        records.add(f"shift.splits.{data.name}.reference_accuracy", correct=ref.logits.argmax(dim=1) == ref.labels,
                    images=_image_set(records, data.reference_name, ref))


def _mean_of(values: list[Any]) -> Any:
    return sum(values) / len(values)


def _min_of(values: list[Any]) -> Any:
    return reduce(np.minimum, values)


def derived(block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
    """The shift suite's means, drops, ratios and worst cases from the recorded accuracies.

    Works on floats and bootstrap replicate arrays alike. A number the JSON has as undefined
    (None: a level without images, a zero reference accuracy) is left out, and the means skip
    it as :func:`_mean` does.
    """
    out: dict[str, Any] = {}
    summary_acc: list[Any] = []
    summary_ratio: list[Any] = []
    for name, s in (block.get("splits") or {}).items():
        if not isinstance(s, Mapping):
            continue
        prefix = f"splits.{name}"
        levels = []
        for lv in s.get("levels") or []:
            path = level_path(name, str(lv.get("name", "")))
            if lv.get("draws"):
                value = _mean_of([acc[f"{path}.draws.{d['draw']}"] for d in lv["draws"]])
                out[path.removeprefix("shift.")] = value
            else:
                value = acc[path]
            if finite(lv.get("accuracy")):
                levels.append(value)
        if not levels:
            continue
        accuracy = _mean_of(levels)
        if level_path(name, str(s["levels"][0].get("name", ""))) != f"shift.{prefix}.accuracy":
            out[f"{prefix}.accuracy"] = accuracy  # (else it is the split's one level, a condition)
        out[f"{prefix}.worst_level_accuracy"] = _min_of(levels)
        reference = acc[f"shift.{prefix}.reference_accuracy"]
        out[f"{prefix}.drop"] = reference - accuracy
        in_summary = s.get("shifted", True) and s.get("in_summary", True)
        if in_summary:
            summary_acc.append(accuracy)
        if finite(s.get("accuracy_ratio")):
            out[f"{prefix}.accuracy_ratio"] = accuracy / reference
            if in_summary:
                summary_ratio.append(out[f"{prefix}.accuracy_ratio"])
    summary = {"mean_accuracy": (_mean_of, summary_acc), "worst_accuracy": (_min_of, summary_acc),
               "accuracy_ratio": (_mean_of, summary_ratio), "worst_ratio": (_min_of, summary_ratio)}
    for key, (reduce_by, values) in summary.items():
        if values and finite(block.get(key)):
            out[key] = reduce_by(values)
    return out


def _f1_present(logits: torch.Tensor, labels: torch.Tensor) -> float:
    from sklearn.metrics import f1_score

    y = labels.cpu().numpy()
    return float(f1_score(y, logits.argmax(dim=1).cpu().numpy(), labels=np.unique(y), average="macro",
                          zero_division=0))


def score_level(level: shift.Level, num_classes: int, reference_accuracy: float) -> LevelScore:
    """Metrics of one level (per draw, then pooled, when it has draws)."""
    logits, labels = level.logits.float().cpu(), level.labels.cpu()
    if not level.draws:
        report = classification_report(logits, labels, num_classes)
        return LevelScore(level.name, level.params, len(labels), report["accuracy"], report["ece"], report["nll"],
                          _f1_present(logits, labels), reference_accuracy - report["accuracy"],
                          report["per_class_accuracy"], report["reliability"])
    per_draw = []
    for d, idx in enumerate(level.draws):
        x, y = logits[idx], labels[idx]
        per_draw.append({"draw": d, "prior": level.priors[d] if level.priors else None, "accuracy": accuracy(x, y),
                         "ece": expected_calibration_error(x.double().softmax(dim=1), y),
                         "nll": negative_log_likelihood(x, y), "f1_macro": _f1_present(x, y)})
    pooled = torch.cat(level.draws)
    report = classification_report(logits[pooled], labels[pooled], num_classes)
    spread = {}
    for metric in ("accuracy", "ece", "nll", "f1_macro"):
        values = np.array([d[metric] for d in per_draw])
        spread[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                          "min": float(values.min()), "max": float(values.max())}
    acc = spread["accuracy"]["mean"]
    return LevelScore(level.name, level.params, len(level.draws[0]), acc, spread["ece"]["mean"], spread["nll"]["mean"],
                      spread["f1_macro"]["mean"], reference_accuracy - acc, report["per_class_accuracy"],
                      report["reliability"], spread, per_draw)


def _mean_split_calibration(splits: Mapping[str, Any]) -> dict[str, float] | None:
    """The mean of the splits' before/after calibration numbers (None when the run did not calibrate)."""
    blocks = [s["calibration"] for s in splits.values() if isinstance(s, Mapping) and s.get("calibration")]
    if not blocks:
        return None
    return {k: _mean([b[k] for b in blocks]) for k in ("ece_before", "ece_after", "nll_before", "nll_after")}


def calibrate_split(data: shift.SplitData, temperatures: tuple[float, float]) -> dict[str, Any]:
    """ECE/NLL before and after temperature scaling per level (a level with draws: the mean over its draws).

    Levels of the run's own test images are scaled fold by fold (each image by the temperature its clean
    fold did not fit; draws keep their images' folds); other images (natural and subpopulation sets) were
    fitted on by neither temperature and take their geometric mean.
    """
    from robustbench_lite.analysis.calibration import before_after, ece_nll, mean_calibration, scale

    by_level: dict[str, dict[str, float]] = {}
    for level in data.levels:
        logits, labels = level.logits.float().cpu(), level.labels.cpu()
        temps = temperatures if level.indices is None else (math.sqrt(temperatures[0] * temperatures[1]),) * 2
        if not level.draws:
            by_level[level.name or "all"] = before_after(logits, labels, temps)
            continue
        scaled = scale(logits, temps)  # folds by position before resampling
        before = [ece_nll(logits[idx], labels[idx]) for idx in level.draws]
        after = [ece_nll(scaled[idx], labels[idx]) for idx in level.draws]
        by_level[level.name or "all"] = {"ece_before": _mean([b[0] for b in before]),
                                         "ece_after": _mean([a[0] for a in after]),
                                         "nll_before": _mean([b[1] for b in before]),
                                         "nll_after": _mean([a[1] for a in after])}
    return mean_calibration(by_level)


def score_split(data: shift.SplitData, description: str, reference: LevelScore,
                groups: Mapping[str, list[str]] | None = None) -> SplitScore:
    """A built split against its reference: level scores, their means, the classes that lose most.

    ``groups``: class groups (a stressed checkpoint's frequent, medium and rare classes); a split
    over the same classes gets each group's accuracy, the mean of its classes' accuracies.
    """
    levels = [score_level(level, len(data.classes), reference.accuracy) for level in data.levels]
    acc = _mean([lv.accuracy for lv in levels])
    worst = min(levels, key=lambda lv: lv.accuracy)
    per_class = _level_mean([lv.per_class_accuracy for lv in levels])
    ref_class = np.array(reference.per_class_accuracy, dtype=float)
    losing = []
    for c in np.argsort(-(ref_class - per_class), kind="stable"):
        loss = ref_class[c] - per_class[c]
        if math.isfinite(loss) and loss > 0 and len(losing) < TOP_CLASSES:
            losing.append({"class": data.classes[c], "reference_accuracy": float(ref_class[c]),
                           "accuracy": float(per_class[c]), "drop": float(loss)})
    ratio = acc / reference.accuracy if reference.accuracy > 0 else float("nan")
    return SplitScore(
        name=data.name, kind=data.kind, description=description, accuracy=acc,
        ece=_mean([lv.ece for lv in levels]), nll=_mean([lv.nll for lv in levels]),
        f1_macro=_mean([lv.f1_macro for lv in levels]), drop=reference.accuracy - acc,
        reference=data.reference_name, reference_accuracy=reference.accuracy, accuracy_ratio=ratio,
        worst_level=worst.name, worst_level_accuracy=worst.accuracy, classes=list(data.classes),
        classes_losing_most=losing, levels=levels, shifted=data.shifted, in_summary=data.in_summary,
        notes=list(data.notes), extra=data.extra, group_accuracy=_group_accuracy(per_class, data.classes, groups),
    )


def _group_accuracy(per_class: np.ndarray, classes: Sequence[str],
                    groups: Mapping[str, list[str]] | None) -> dict[str, float] | None:
    """Each group's mean per-class accuracy (NaN classes skipped); None without groups or for other classes."""
    if not groups or any(name not in classes for names in groups.values() for name in names):
        return None
    out = {}
    for group, names in groups.items():
        values = [per_class[list(classes).index(n)] for n in names]
        values = [v for v in values if math.isfinite(v)]
        out[group] = float(np.mean(values)) if values else float("nan")
    return out


@register_suite
class ShiftSuite(Suite):
    name = "shift"
    Result = ShiftResult
    description = "accuracy and calibration under natural, subpopulation, covariate and label shift"
    title = "Shift"
    order = 40
    robustness_rank = 3
    headline_metrics = (HeadlineMetric("mean accuracy", "mean_accuracy"),
                        HeadlineMetric("worst accuracy", "worst_accuracy"))

    Options = shift.ShiftOptions

    @classmethod
    def forward_passes(cls, options: Any) -> int:
        opts = options or shift.ShiftOptions()
        return sum(len(opts.intensities) if split.kind == "covariate" else 1 for split, _ in shift.select(opts))

    def run(self, ctx: EvalContext) -> ShiftResult:
        options: shift.ShiftOptions = ctx.options(self.name)
        dataset = ctx.dataset
        env = shift.ShiftEnv(
            dataset=dataset, options=options, clean_logits=ctx.clean_logits,
            predict=lambda transform, desc: ctx.predict(transform=transform, desc=desc),
            predict_dataset=lambda ds, desc: _predict_on(ctx, ds, desc),
            seed=ctx.config.seed, limit=ctx.config.limit, data_dir=ctx.config.data_dir,
        )
        # Every check before the first model pass: a bad input fails in seconds, not after an hour.
        selected: list[shift.ShiftSplit] = []
        skipped: dict[str, str] = {}
        for split, explicit in shift.select(options):
            reason = split.skip_reason(env)
            if reason is None:
                selected.append(split)
            elif explicit:
                raise RobustEvalError(f"shift split {split.name} cannot run: {reason}")
            else:
                skipped[split.name] = reason
        if not selected:
            raise RobustEvalError(
                f"no shift split applies to {dataset.name}: "
                + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ". Choose splits with --shift-splits"
            )
        clean = score_level(shift.Level("clean", {}, ctx.clean_logits(), dataset.labels), dataset.num_classes,
                            float("nan"))
        clean.drop = 0.0
        ctx.records.add("shift.clean_accuracy", predicted=ctx.clean_logits().argmax(dim=1))
        splits: dict[str, SplitScore] = {}
        groups = class_groups(ctx.meta, [str(c) for c in dataset.classes])
        for split in selected:
            t0 = time.perf_counter()
            for data in split.build(env):
                reference = clean
                if data.reference is not None:
                    reference = score_level(data.reference, len(data.classes), float("nan"))
                splits[data.name] = score_split(data, split.description, reference, groups)
                if ctx.temperatures() is not None:
                    splits[data.name].calibration = calibrate_split(data, ctx.temperatures())
                record_split(ctx.records, data)
                ctx.log(f"shift: {data.name}: accuracy {splits[data.name].accuracy:.4f} "
                        f"(drop {splits[data.name].drop:+.4f}) [{time.perf_counter() - t0:.1f} s]")
        summary = [s for s in splits.values() if s.shifted and s.in_summary]
        worst = min(summary, key=lambda s: s.accuracy) if summary else None
        ratios = [s.accuracy_ratio for s in summary]
        return ShiftResult(
            n_examples=len(dataset), classes=list(dataset.classes), clean_accuracy=clean.accuracy,
            clean_ece=clean.ece, clean_nll=clean.nll, clean_f1_macro=clean.f1_macro,
            mean_accuracy=_mean([s.accuracy for s in summary]),
            worst_accuracy=worst.accuracy if worst else float("nan"), worst_split=worst.name if worst else None,
            accuracy_ratio=_mean(ratios), worst_ratio=min(ratios) if ratios else float("nan"),
            splits=splits, skipped=skipped, options=options.to_dict(full=True),
            group_mean_accuracy=_group_means([s.group_accuracy for s in summary]) if groups else None,
        )

    @classmethod
    def derived(cls, block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
        with np.errstate(divide="ignore", invalid="ignore"):  # a replicate with no right answer on a reference
            return derived(block, acc)

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        from robustbench_lite import figures  # matplotlib is loaded only when a report is drawn
        from robustbench_lite.analysis.calibration import calibration_stats
        from robustbench_lite.suites.base import block_interval

        def ci(key: str) -> tuple[float, float] | None:
            return block_interval(block, key)

        clean = run.get("clean") if isinstance(run.get("clean"), Mapping) else None
        clean_reliability = (clean or {}).get("reliability")
        splits = {k: v for k, v in (block.get("splits") or {}).items() if isinstance(v, Mapping)}
        rows = []
        for name, s in splits.items():
            rows.append({"name": name, "kind": s.get("kind", ""), "accuracy": pct(s.get("accuracy")),
                         "ci": ci(f"splits.{name}.accuracy"),
                         "reference": f"{s.get('reference', 'clean')} {pct(s.get('reference_accuracy'))}",
                         "drop": pct(s.get("drop")), "ece": num(s.get("ece"), 3),
                         "worst_level": f"{s.get('worst_level', '')} {pct(s.get('worst_level_accuracy'))}",
                         "worst_class": _worst_class_text(s),
                         "losing": ", ".join(f"{c.get('class')} ({pct(c.get('drop'))})"
                                             for c in s.get("classes_losing_most") or []),
                         "in_summary": bool(s.get("in_summary", True)) and bool(s.get("shifted", True)),
                         "notes": "; ".join(map(str, s.get("notes") or []))})
        curves: list[tuple[str, Mapping[str, Any]]] = []
        if clean_reliability:
            curves.append(("clean", clean_reliability))
        ranked = sorted(splits.items(), key=lambda kv: kv[1].get("accuracy") if finite(kv[1].get("accuracy")) else 9)
        for name, s in ranked[:RELIABILITY_SPLITS]:
            pooled = _pooled_reliability(s.get("levels") or [])
            if pooled:
                curves.append((name, pooled))
        worst = block.get("worst_split")
        split_ci = {n: ci(f"splits.{n}.accuracy") for n in splits}
        return {
            "stats": stats(("mean accuracy", pct(block.get("mean_accuracy")), ci("mean_accuracy")),
                           ("worst accuracy",
                            f"{pct(block.get('worst_accuracy'))}" + (f" ({worst})" if worst else ""),
                            ci("worst_accuracy")),
                           ("accuracy ratio", num(block.get("accuracy_ratio"), 3), ci("accuracy_ratio"), "ratio"),
                           ("clean accuracy", pct(block.get("clean_accuracy")), ci("clean_accuracy")),
                           ("clean ECE", num(block.get("clean_ece"), 3)), ("splits", str(len(splits))),
                           *((f"{g} classes: mean accuracy", pct(a))
                             for g, a in (block.get("group_mean_accuracy") or {}).items()),
                           *calibration_stats(_mean_split_calibration(splits), "under shift")),
            "rows": rows,
            "bars": figures.shift_bars([(n, s.get("accuracy"), s.get("reference_accuracy"))
                                        for n, s in splits.items()], split_ci) if splits else None,
            "bar_intervals": any(split_ci.values()),
            "reliability": figures.reliability(curves) if len(curves) > (1 if clean_reliability else 0) else None,
            "skipped": [{"name": k, "reason": v} for k, v in (block.get("skipped") or {}).items()],
        }


def _level_mean(per_class_rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Each class's accuracy averaged over a split's levels (None/NaN: no image of the class at that level)."""
    rows = np.array([[np.nan if v is None else v for v in row] for row in per_class_rows], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every level: NaN is the answer
        return np.nanmean(rows, axis=0)


def _worst_class_text(split: Mapping[str, Any]) -> str:
    """The split's class with the lowest accuracy (its levels' per-class accuracies averaged), for the report."""
    rows = [lv.get("per_class_accuracy") for lv in split.get("levels") or [] if isinstance(lv, Mapping)]
    rows = [r for r in rows if r]
    if not rows:
        return "—"
    per_class = _level_mean(rows)
    low, name = worst_class(per_class.tolist(), [str(c) for c in split.get("classes") or range(len(per_class))])
    return "—" if name is None else f"{name} {pct(low)}"


def _predict_on(ctx: EvalContext, ds: Any, desc: str) -> torch.Tensor:
    """Logits of the run's model on another dataset (natural sets, the other subpopulation view)."""
    return ctx.predict(desc=desc, dataset=ds)


def _pooled_reliability(levels: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]] | None:
    """One reliability diagram for a split: its levels' bins pooled, weighted by image count."""
    rels = [lv.get("reliability") for lv in levels if isinstance(lv, Mapping) and lv.get("reliability")]
    if not rels:
        return None
    n_bins = len(rels[0].get("count", []))
    out: dict[str, list[Any]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        total = conf = acc = 0.0
        for rel in rels:
            k = rel["count"][b] if b < len(rel.get("count", [])) else 0
            if k and rel["confidence"][b] is not None and rel["accuracy"][b] is not None:
                total += k
                conf += k * rel["confidence"][b]
                acc += k * rel["accuracy"][b]
        out["count"].append(int(total))
        out["confidence"].append(conf / total if total else None)
        out["accuracy"].append(acc / total if total else None)
    return out
