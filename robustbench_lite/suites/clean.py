"""Clean suite: accuracy, macro-F1, per-class accuracy, confusion matrix, ECE and NLL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustbench_lite.analysis.groups import class_groups, group_masks, group_means, worst_class
from robustbench_lite.formatting import num, pct
from robustbench_lite.metrics import classification_report
from robustbench_lite.results import SuiteResult
from robustbench_lite.suites.base import EvalContext, HeadlineMetric, Suite, block_interval, register_suite, stats


@dataclass
class CleanResult(SuiteResult):
    accuracy: float
    f1_macro: float
    ece: float
    nll: float
    n_examples: int
    classes: list[str]
    per_class_accuracy: list[float]
    confusion_matrix: list[list[int]]
    reliability: dict[str, Any] = field(default_factory=dict)
    #: what the model computed in, and for a model cast from fp32 (``--precision``) the share of clean
    #: images whose prediction is the fp32 model's
    precision: str = "fp32"
    agreement_with_fp32: float | None = None
    #: with ``--calibrate``: the fold temperatures and ECE/NLL before and after
    #: (:mod:`robustbench_lite.analysis.calibration`)
    calibration: dict[str, Any] | None = None
    #: the lowest per-class accuracy (recall) and its class
    worst_class_accuracy: float | None = None
    worst_class: str | None = None
    #: when the checkpoint records its per-class training counts (a stressed run): accuracy of the frequent,
    #: medium and rare thirds of the classes by training images, and which classes are in each
    group_accuracy: dict[str, float] | None = None
    groups: dict[str, list[str]] | None = None
    #: per class, the share of the images predicted as that class that are of it (NaN: never predicted);
    #: per-class accuracy is each class's recall
    per_class_precision: list[float] | None = None

    def summary(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"accuracy": round(self.accuracy, 4), "macro-F1": round(self.f1_macro, 4),
                                             "ECE": round(self.ece, 4), "NLL": round(self.nll, 4)}
        if self.worst_class_accuracy is not None:
            out["worst class"] = f"{self.worst_class} {self.worst_class_accuracy:.4f}"
        if self.group_accuracy:
            out.update({f"{g} classes": round(a, 4) for g, a in self.group_accuracy.items()})
        return out


@register_suite
class CleanSuite(Suite):
    name = "clean"
    Result = CleanResult
    description = "accuracy, macro-F1, per-class accuracy, confusion matrix, ECE, NLL on the test split"
    title = "Clean"
    order = 10
    robustness_rank = 4
    headline_metrics = (HeadlineMetric("accuracy", "accuracy"),
                        HeadlineMetric("ECE", "ece", higher_is_better=False, unit="ratio"))

    @classmethod
    def forward_passes(cls, options: Any) -> int:
        return 1

    def run(self, ctx: EvalContext) -> CleanResult:
        logits = ctx.clean_logits()
        labels = ctx.dataset.labels
        report = classification_report(logits, labels, ctx.dataset.num_classes)
        predicted = logits.argmax(dim=1)
        ctx.records.add("clean.accuracy", predicted=predicted)
        for c in range(ctx.dataset.num_classes):  # per-class accuracy: the images of class c
            if bool((labels == c).any()):
                ctx.records.add(f"clean.per_class_accuracy[{c}]", predicted=predicted, weights=labels == c)
        agreement = ctx.fp32_agreement()
        calibration = None
        temperatures = ctx.temperatures()
        if temperatures is not None:
            from robustbench_lite.analysis.calibration import before_after

            calibration = {"method": "temperature scaling, cross-fitted on the clean test split's two folds",
                           "temperatures": list(temperatures), **before_after(logits, labels, temperatures)}
        classes = list(ctx.dataset.classes)
        worst = worst_class(report["per_class_accuracy"], classes)
        if worst[1] is not None:  # the worst class's interval: its own images' outcomes
            ctx.records.add("clean.worst_class_accuracy", predicted=predicted,
                            weights=labels == classes.index(worst[1]))
        groups, masks = class_groups(ctx.meta, classes), group_masks(ctx.meta, classes, labels)
        group_accuracy = group_means(predicted == labels, masks) if masks else None
        for group, mask in (masks or {}).items():  # each group's interval, from its images' outcomes
            ctx.records.add(f"clean.group_accuracy.{group}", predicted=predicted, weights=mask)
        cm = np.asarray(report["confusion_matrix"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(cm.sum(0) > 0, np.diag(cm) / np.maximum(cm.sum(0), 1), np.nan).tolist()
        return CleanResult(n_examples=len(ctx.dataset), classes=classes, **report,
                           worst_class_accuracy=worst[0], worst_class=worst[1], group_accuracy=group_accuracy,
                           groups=groups, per_class_precision=precision,
                           precision=ctx.plan.precision if ctx.plan is not None else "fp32",
                           agreement_with_fp32=agreement["agreement"] if agreement is not None else None,
                           calibration=calibration)

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        from robustbench_lite import figures  # matplotlib is loaded only when a report is drawn

        classes = [str(c) for c in block.get("classes", [])]
        per_class = block.get("per_class_accuracy") or []
        precision = block.get("per_class_precision") or []
        out: dict[str, Any] = {
            "stats": stats(("accuracy", pct(block.get("accuracy")), block_interval(block, "accuracy")),
                           ("macro-F1", num(block.get("f1_macro"), 3)),
                           ("ECE", num(block.get("ece"), 3)), ("NLL", num(block.get("nll"), 3)),
                           ("images", num(block.get("n_examples"))),
                           *((("worst class", f"{pct(block['worst_class_accuracy'])} ({block.get('worst_class')})",
                               block_interval(block, "worst_class_accuracy")),)
                             if block.get("worst_class_accuracy") is not None else ()),
                           *((f"{g} classes", pct(a), block_interval(block, f"group_accuracy.{g}"))
                             for g, a in (block.get("group_accuracy") or {}).items()),
                           *((("ECE after temperature scaling", num(block["calibration"]["ece_after"], 3)),
                              ("NLL after temperature scaling", num(block["calibration"]["nll_after"], 3)))
                             if block.get("calibration") else ()),
                           *((("agreement with fp32", pct(block["agreement_with_fp32"])),)
                             if block.get("agreement_with_fp32") is not None else ())),
            "per_class": [{"name": classes[i] if i < len(classes) else str(i), "accuracy": pct(a), "value": a,
                           "ci": block_interval(block, f"per_class_accuracy[{i}]"),
                           "precision": pct(precision[i]) if i < len(precision) else "—"}
                          for i, a in enumerate(per_class)],
            "confusion": None, "reliability": None,
        }
        if block.get("confusion_matrix"):
            out["confusion"] = figures.confusion_matrix(block["confusion_matrix"], classes or
                                                        [str(i) for i in range(len(block["confusion_matrix"]))])
        if block.get("reliability"):
            out["reliability"] = figures.reliability([("clean", block["reliability"])])
        return out
