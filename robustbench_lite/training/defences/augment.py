"""Per-image augmentation defences on ``torchvision.transforms.v2``: each image draws its own operations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.defences.base import (
    Defence,
    DefenceContext,
    Flag,
    Params,
    Prepared,
    int_value,
    param,
    positive,
    register_defence,
)


def per_image(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each (C, H, W) image on its own: every image draws its own operations."""
    return torch.stack([transform(img) for img in images])


class _ImageAugmentation(Defence):
    stage = "image"

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        super().__init__(params, ctx)
        self.transform = self.build()

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-image uint8 transform."""
        raise NotImplementedError

    def image(self, img: torch.Tensor) -> torch.Tensor:
        return self.transform(img)


@dataclass(frozen=True)
class AugMixParams(Params):
    """AugMix's parameters.

    Attributes:
        severity: operation strength, 1-10 (3, torchvision's and the paper's).
        jsd: train with the Jensen-Shannon consistency loss over (clean, augmix, augmix).
        jsd_weight: weight of the consistency term (12, the paper's); no flag.
    """

    severity: int = param(3, Flag("AugMix severity 1-10", int_value))
    jsd: bool = param(False, Flag("AugMix with its Jensen-Shannon consistency loss (3 views per image)"))
    jsd_weight: float = param(12.0)

    def __post_init__(self) -> None:
        self._set("severity", positive("severity", self.severity, integer=True, upper=10))
        if not isinstance(self.jsd, bool):
            raise RobustEvalError(f"jsd must be true or false, got {self.jsd!r}")
        self._set("jsd_weight", positive("jsd_weight", self.jsd_weight))


@register_defence
class AugMix(_ImageAugmentation):
    name = "augmix"
    summary = "mix chains of augmentations with the original (optionally with the JSD consistency loss)"
    reference = "Hendrycks et al. 2020, AugMix, https://arxiv.org/abs/1912.02781"
    Params = AugMixParams
    loss_when = "with --jsd"

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        super().__init__(params, ctx)
        self.stage = self.stage_for(params)  # type: ignore[misc]

    @classmethod
    def stage_for(cls, params: Params) -> str:
        # With the consistency loss AugMix owns the loss (it needs the clean view and two augmix views).
        return "loss" if params.jsd else "image"  # type: ignore[attr-defined]

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.AugMix(severity=self.params.severity)  # type: ignore[attr-defined]

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy on the clean view + weight * JSD(clean, augmix, augmix) (the paper's loss)."""
        n = batch.x.shape[0]
        views = [batch.x] + [per_image(self.transform, batch.raw).float().div_(255) for _ in range(2)]
        logits = model(torch.cat(views))
        clean, a1, a2 = logits[:n], logits[n:2 * n], logits[2 * n:]
        loss = self.ctx.loss(clean, batch.targets)
        p = [F.softmax(v, dim=1) for v in (clean, a1, a2)]
        mixture = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1).log()
        jsd = sum(F.kl_div(mixture, q, reduction="batchmean") for q in p) / 3.0
        return loss + self.params.jsd_weight * jsd, clean, batch.y  # type: ignore[attr-defined]


@register_defence
class AutoAugment(_ImageAugmentation):
    name = "autoaugment"
    summary = "AutoAugment's learned policy (the ImageNet policy)"
    reference = "Cubuk et al. 2019, AutoAugment, https://arxiv.org/abs/1805.09501"

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)


@dataclass(frozen=True)
class RandAugmentParams(Params):
    """RandAugment's magnitude, 0-30 (9)."""

    magnitude: int = param(9, Flag("RandAugment magnitude 0-30", int_value))

    def __post_init__(self) -> None:
        self._set("magnitude", positive("magnitude", self.magnitude, integer=True, upper=30, allow_zero=True))


@register_defence
class RandAugment(_ImageAugmentation):
    name = "randaugment"
    summary = "two random operations per image at a fixed magnitude"
    reference = "Cubuk et al. 2020, RandAugment, https://arxiv.org/abs/1909.13719"
    Params = RandAugmentParams

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.RandAugment(num_ops=2, magnitude=self.params.magnitude)  # type: ignore[attr-defined]


@register_defence
class TrivialAugment(_ImageAugmentation):
    name = "trivialaugment"
    summary = "one random operation per image at a random magnitude (TrivialAugment Wide)"
    reference = "Mueller & Hutter 2021, TrivialAugment, https://arxiv.org/abs/2103.10158"

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide()
