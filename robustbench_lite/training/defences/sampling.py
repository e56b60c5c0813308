"""Epoch samplers for imbalanced training sets (the ``sampler`` stage).

A sampler decides which training images an epoch shows and in what order, in place of a
shuffled pass over every image. ``balanced-sampler`` draws each epoch's images with replacement,
image ``i`` with weight ``1 / n_c^q`` for its class ``c`` (``n_c`` images): class ``c`` is drawn
with probability proportional to ``n_c^(1-q)``, so ``q = 1`` shows every class equally often
(class-balanced sampling) and ``q = 0.5`` is square-root sampling (Mahajan et al. 2018; both
compared by Kang et al. 2020). An epoch keeps its length (as many draws as images), so the recipe's
steps and schedule are unchanged; rare images repeat within an epoch and frequent ones are left
out of it. The draws come from the loop's per-(seed, epoch) generator, identical on every
torchrun process, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustbench_lite.training.defences.base import (
    Defence,
    DefenceContext,
    Flag,
    Params,
    param,
    positive,
    register_defence,
)


def class_probabilities(counts: torch.Tensor, power: float) -> torch.Tensor:
    """Each class's share of the draws, proportional to n_c^(1 - power); 0 for a class with no image."""
    counts = counts.to(torch.float64)
    share = torch.where(counts > 0, counts.clamp_min(1).pow(1 - power), torch.zeros_like(counts))
    return share / share.sum()


@dataclass(frozen=True)
class BalancedSamplerParams(Params):
    """balanced-sampler: q (1.0, class-balanced sampling; 0.5 square-root sampling)."""

    sampler_power: float = param(1.0, Flag("balanced-sampler: each image drawn with weight 1 / (its class's "
                                           "images)^q, in (0, 1]; 1 every class equally often, 0.5 square-root "
                                           "sampling", float))

    def __post_init__(self) -> None:
        self._set("sampler_power", positive("sampler_power", self.sampler_power, upper=1))


@register_defence
class BalancedSampler(Defence):
    name = "balanced-sampler"
    stage = "sampler"
    corrects = "imbalance"
    summary = "each epoch draws images with replacement, class c with probability ~ n_c^(1-q): rare classes " \
              "seen as often as frequent ones (q = 1)"
    reference = "Kang et al. 2020, Decoupling Representation and Classifier for Long-Tailed Recognition, " \
                "https://arxiv.org/abs/1910.09217"
    Params = BalancedSamplerParams

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        super().__init__(params, ctx)
        self.power: float = self.params.sampler_power  # type: ignore[attr-defined]

    def settings(self) -> dict[str, Any]:
        if self.ctx.class_counts is None:
            return super().settings()
        share = class_probabilities(torch.tensor(self.ctx.class_counts), self.power)
        return {**super().settings(), "class_probability": [round(float(p), 6) for p in share]}

    def order(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        counts = torch.bincount(labels)
        # each image carries its class's share split evenly over the class's images: n_c^(1-q) / n_c = n_c^-q
        weights = (class_probabilities(counts, self.power) / counts.clamp_min(1))[labels]
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
