"""Training criteria for imbalanced and mislabelled training sets (the ``criterion`` stage).

A criterion replaces the cross-entropy that plain training and every loss owner (pgd-at, fgsm-rs,
TRADES' natural term, AugMix's clean term) minimise, so ``--defence balanced-softmax,pgd-at``
trains adversarially with the balanced loss. Each takes (N, classes) logits and (N, classes)
target distributions (hard labels arrive one-hot, with the run's label smoothing applied; mixup
and cutmix arrive mixed) and returns the batch mean.

- For imbalance: ``balanced-softmax`` (the logit-adjusted loss: cross-entropy of logits + tau *
  log class prior) and ``class-balanced`` (cross-entropy weighted by the inverse effective number
  of images per class). Both read the class counts of the labels the model trains on; the model
  predicts with its plain logits.
- For label noise: ``gce`` (generalized cross-entropy) and ``sce`` (symmetric cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.defences.base import (
    Defence,
    DefenceContext,
    Flag,
    Params,
    param,
    positive,
    register_defence,
)


def class_counts(ctx: DefenceContext) -> torch.Tensor:
    """The training labels' images per class, float64, at least 1 (all equal before the data is read)."""
    if ctx.class_counts is None:
        return torch.ones(ctx.num_classes, dtype=torch.float64)
    return torch.tensor(ctx.class_counts, dtype=torch.float64).clamp_min(1)  # a class with no image: count 1


def class_prior(ctx: DefenceContext) -> torch.Tensor:
    """The training labels' class frequencies (uniform before the data is read)."""
    counts = class_counts(ctx)
    return (counts / counts.sum()).float()


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al.'s class weights: (1 - beta) / (1 - beta^n_c), scaled to sum to the number of classes."""
    counts = counts.to(torch.float64).clamp_min(1)
    w = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w * len(counts) / w.sum()).float()


class _Criterion(Defence):
    stage = "criterion"


@dataclass(frozen=True)
class BalancedSoftmaxParams(Params):
    """balanced-softmax: tau, the weight of the log prior (1.0: Ren et al.'s balanced softmax)."""

    la_tau: float = param(1.0, Flag("logit-adjustment strength tau", float))

    def __post_init__(self) -> None:
        self._set("la_tau", positive("la_tau", self.la_tau, upper=10))


@register_defence
class BalancedSoftmax(_Criterion):
    name = "balanced-softmax"
    corrects = "imbalance"
    summary = "cross-entropy of logits + tau * log(class prior): the logit-adjusted loss for imbalance"
    reference = "Menon et al. 2021, Long-tail learning via logit adjustment, https://arxiv.org/abs/2007.07314; " \
                "Ren et al. 2020, Balanced Meta-Softmax, https://arxiv.org/abs/2007.10740"
    Params = BalancedSoftmaxParams

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        super().__init__(params, ctx)
        self.shift = self.params.la_tau * class_prior(ctx).log()  # type: ignore[attr-defined]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "class_prior": [round(float(p), 6) for p in class_prior(self.ctx)]}

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.shift.to(logits), targets)


@dataclass(frozen=True)
class ClassBalancedParams(Params):
    """class-balanced: beta of the effective number (0.9999, Cui et al.'s choice for long tails)."""

    cb_beta: float = param(0.9999, Flag("class-balanced effective-number beta, in (0, 1)", float))

    def __post_init__(self) -> None:
        beta = positive("cb_beta", self.cb_beta, upper=1)
        if beta >= 1:
            raise RobustEvalError(f"--cb-beta must be below 1, got {beta}; 0.9999 weights rare classes strongly, "
                                  "0.99 mildly")
        self._set("cb_beta", beta)


@register_defence
class ClassBalanced(_Criterion):
    name = "class-balanced"
    corrects = "imbalance"
    summary = "cross-entropy weighted per class by 1 / effective number of images (reweighting for imbalance)"
    reference = "Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples, " \
                "https://arxiv.org/abs/1901.05555"
    Params = ClassBalancedParams

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        super().__init__(params, ctx)
        self.weights = effective_number_weights(class_counts(ctx), self.params.cb_beta)  # type: ignore[attr-defined]

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "class_weights": [round(float(w), 6) for w in self.weights]}

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # -sum_c w_c t_c log p_c: w_y * CE for a one-hot target; averaged over the batch, not the weights.
        return -(F.log_softmax(logits, dim=1) * targets * self.weights.to(logits)).sum(1).mean()


@dataclass(frozen=True)
class GCEParams(Params):
    """gce: q (0.7, the paper's): q -> 0 is cross-entropy, q = 1 the mean absolute error."""

    gce_q: float = param(0.7, Flag("generalized cross-entropy exponent q, in (0, 1]", float))

    def __post_init__(self) -> None:
        self._set("gce_q", positive("gce_q", self.gce_q, upper=1))


@register_defence
class GeneralizedCrossEntropy(_Criterion):
    name = "gce"
    summary = "generalized cross-entropy (1 - p_y^q) / q: bounded, so mislabelled images pull less"
    reference = "Zhang & Sabuncu 2018, Generalized Cross Entropy Loss for Training Deep Neural Networks " \
                "with Noisy Labels, https://arxiv.org/abs/1805.07836"
    Params = GCEParams

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        q = self.params.gce_q  # type: ignore[attr-defined]
        p = F.softmax(logits.float(), dim=1).clamp_min(1e-7)
        return ((1 - (targets * p.pow(q)).sum(1)) / q).mean()


@dataclass(frozen=True)
class SCEParams(Params):
    """sce: alpha (0.1) on cross-entropy and beta (1.0) on reverse cross-entropy (the paper's CIFAR-10 values)."""

    sce_alpha: float = param(0.1, Flag("symmetric cross-entropy: weight of the cross-entropy term", float))
    sce_beta: float = param(1.0, Flag("symmetric cross-entropy: weight of the reverse cross-entropy term", float))

    def __post_init__(self) -> None:
        self._set("sce_alpha", positive("sce_alpha", self.sce_alpha, upper=100))
        self._set("sce_beta", positive("sce_beta", self.sce_beta, upper=100))


@register_defence
class SymmetricCrossEntropy(_Criterion):
    name = "sce"
    summary = "alpha * cross-entropy + beta * reverse cross-entropy -sum p log(target), log 0 taken as log 1e-4"
    reference = "Wang et al. 2019, Symmetric Cross Entropy for Robust Learning with Noisy Labels, " \
                "https://arxiv.org/abs/1908.06112"
    Params = SCEParams

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p: SCEParams = self.params  # type: ignore[assignment]
        ce = -(targets * F.log_softmax(logits, dim=1)).sum(1)
        pred = F.softmax(logits, dim=1).clamp(1e-7, 1)
        rce = -(pred * targets.clamp(1e-4, 1).log()).sum(1)
        return (p.sce_alpha * ce + p.sce_beta * rce).mean()
