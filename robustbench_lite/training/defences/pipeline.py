"""The selected defences built for one run and applied to each training batch, stage by stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from robustbench_lite.training.defences.augment import per_image
from robustbench_lite.training.defences.base import DEFENCES, STAGES, DefenceContext, Prepared
from robustbench_lite.training.defences.options import DefenceOptions


class Pipeline:
    """The defences of ``options``, built for ``ctx`` and ordered by stage.

    Args:
        options: the selected defences and their parameters (already validated).
        ctx: what the defences may know about the run (default: 10 classes, fashion-mnist).
    """

    def __init__(self, options: DefenceOptions | None = None, ctx: DefenceContext | None = None) -> None:
        options = options or DefenceOptions()
        ctx = ctx or DefenceContext(num_classes=10, dataset="fashion-mnist")
        self.options = options
        self.names = options.names
        self.defences = [DEFENCES.entry(n)(p, ctx) for n, p in options.params.items()]
        self.monitor_images = options.monitor_images
        by_stage = {s: [d for d in self.defences if d.stage == s] for s in STAGES}
        self.loss_owner = by_stage["loss"][0] if by_stage["loss"] else None
        self.sampler = by_stage["sampler"][0] if by_stage["sampler"] else None
        self.image_stage = by_stage["image"]
        self.pixel_stage = by_stage["pixel"]
        self.mixers = by_stage["mix"]
        # The criterion defence (at most one) is what every loss owner and plain training minimise.
        self.criterion = by_stage["criterion"][0] if by_stage["criterion"] else None
        ctx.criterion = self.criterion.criterion if self.criterion is not None else None
        self.ctx = ctx

    @property
    def adversarial(self) -> bool:
        return any(d.adversarial for d in self.defences)

    @property
    def label(self) -> str:
        return self.options.label

    def settings(self) -> dict[str, dict[str, Any]]:
        """Each defence's resolved hyperparameters, as the checkpoint records them."""
        return {d.name: d.settings() for d in self.defences}

    def start_epoch(self, epoch: int) -> None:
        for d in self.defences:
            d.start_epoch(epoch)

    def early_stop(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> str | None:
        """The first defence's reason to stop training after this epoch, or None."""
        for d in self.defences:
            reason = d.early_stop(history, best)
            if reason is not None:
                return reason
        return None

    def heldout_accuracy(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: list[int],
                         seed: int) -> tuple[float, float]:
        """(clean, PGD-10 robust) accuracy on held-out images, at the first adversarial defence's eps."""
        owner = next(d for d in self.defences if d.adversarial)
        return owner.heldout_accuracy(model, images, labels, indices, seed)  # type: ignore[attr-defined]

    def epoch_order(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One epoch's positions into the training images whose labels are ``labels``: the sampler's
        draws, or else a permutation of every image."""
        if self.sampler is not None:
            return self.sampler.order(labels, generator)
        return torch.randperm(len(labels), generator=generator)

    def prepare(self, raw: torch.Tensor, y: torch.Tensor, indices: Sequence[int],
                device: torch.device | None = None) -> Prepared:
        """Image, pixel and mix stages for a uint8 (N, C, H, W) batch. Uses the global torch RNG."""
        images = raw
        for d in self.image_stage:
            images = per_image(d.image, images)
        device = device or raw.device
        x = images.to(device).float().div_(255)
        for d in self.pixel_stage:
            x = d.pixel(x)
        y = y.to(device)
        targets = y
        if self.mixers:
            mixer = self.mixers[int(torch.randint(len(self.mixers), ())) if len(self.mixers) > 1 else 0]
            x, targets = mixer.mix(x, y)
        return Prepared(x=x, y=y, targets=targets, raw=raw, indices=[int(i) for i in indices])

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits for the running accuracy, labels for them); the model is in train mode."""
        if self.loss_owner is not None:
            return self.loss_owner.loss(model, batch, attack_model)
        logits = model(batch.x)
        loss = self.ctx.loss(logits, batch.targets)
        labels = batch.targets.argmax(1) if batch.targets.ndim == 2 else batch.targets
        return loss, logits, labels
