"""Clean suite: accuracy, macro-F1, per-class accuracy, confusion matrix, ECE and NLL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustbench_lite.metrics import classification_report
from robustbench_lite.results import SuiteResult
from robustbench_lite.suites.base import EvalContext, Suite, register_suite


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

    def summary(self) -> dict[str, float | int | str]:
        return {"accuracy": round(self.accuracy, 4), "macro-F1": round(self.f1_macro, 4),
                "ECE": round(self.ece, 4), "NLL": round(self.nll, 4)}


@register_suite
class CleanSuite(Suite):
    name = "clean"
    description = "accuracy, macro-F1, per-class accuracy, confusion matrix, ECE, NLL on the test split"

    def run(self, ctx: EvalContext) -> CleanResult:
        logits = ctx.clean_logits()
        report = classification_report(logits, ctx.dataset.labels, ctx.dataset.num_classes)
        return CleanResult(n_examples=len(ctx.dataset), classes=list(ctx.dataset.classes), **report)
