"""Batch mixing (cutmix, mixup: soft labels) and pixel noise (gaussian-noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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


@dataclass(frozen=True)
class MixParams(Params):
    """Beta(mix_alpha, mix_alpha) of the mixing ratio (1.0)."""

    mix_alpha: float = param(1.0, Flag("cutmix/mixup Beta(alpha, alpha)", float))

    def __post_init__(self) -> None:
        self._set("mix_alpha", positive("mix_alpha", self.mix_alpha))


class _Mix(Defence):
    stage = "mix"
    Params = MixParams
    #: The torchvision.transforms.v2 class doing the mixing.
    v2_class: ClassVar[str] = ""

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        from torchvision.transforms import v2

        super().__init__(params, ctx)
        self.transform = getattr(v2, self.v2_class)(alpha=self.params.mix_alpha,  # type: ignore[attr-defined]
                                                    num_classes=ctx.num_classes)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(x, y)


@register_defence
class CutMix(_Mix):
    name = "cutmix"
    summary = "paste a random box from another image; labels mixed by area"
    reference = "Yun et al. 2019, CutMix, https://arxiv.org/abs/1905.04899"
    v2_class = "CutMix"


@register_defence
class MixUp(_Mix):
    name = "mixup"
    summary = "convex combination of image pairs and of their labels"
    reference = "Zhang et al. 2018, mixup, https://arxiv.org/abs/1710.09412"
    v2_class = "MixUp"


@dataclass(frozen=True)
class NoiseParams(Params):
    """gaussian-noise's parameters.

    Attributes:
        noise_std: standard deviation, pixel units (0.1).
        noise_p: probability that an image gets noise (0.5: half the batch stays clean, so clean
            accuracy is kept).
    """

    noise_std: float = param(0.1, Flag("gaussian-noise sigma, pixel units", float))
    noise_p: float = param(0.5, Flag("fraction of images gaussian-noise perturbs", float))

    def __post_init__(self) -> None:
        self._set("noise_std", positive("noise_std", self.noise_std, upper=1))
        self._set("noise_p", positive("noise_p", self.noise_p, upper=1))


@register_defence
class GaussianNoise(Defence):
    name = "gaussian-noise"
    stage = "pixel"
    summary = "add N(0, noise_std^2) pixel noise to a random noise_p of the images"
    reference = "Rusak et al. 2020, A simple way to make neural networks robust against diverse image " \
                "corruptions, https://arxiv.org/abs/2001.06057"
    Params = NoiseParams

    def pixel(self, x: torch.Tensor) -> torch.Tensor:
        p: NoiseParams = self.params  # type: ignore[assignment]
        chosen = (torch.rand(x.shape[0]) < p.noise_p).to(x.device).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape).to(x.device) * p.noise_std
        return torch.where(chosen, (x + noise).clamp_(0, 1), x)
