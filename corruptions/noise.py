"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper) and speckle noise.

Every image draws its noise from its own generator (see :mod:`robustbench_lite.seeding`), so a
batch gives the same result as its images one at a time. Functionals take one generator per
image; the clipping to [0, 1] that the originals do last is left to ``Corruption.__call__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from corruptions.base import Corruption, register_corruption


def _per_image(
    images: torch.Tensor,
    generators: Sequence[torch.Generator],
    draw: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
) -> torch.Tensor:
    if len(generators) != images.shape[0]:
        raise ValueError(
            f"need one generator per image: {images.shape[0]} images, {len(generators)} generators"
        )
    if not generators:
        return torch.zeros_like(images)
    return torch.stack([draw(x, g) for x, g in zip(images, generators, strict=True)])


def _randn(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    return _per_image(
        images, generators, lambda x, g: torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    )


def gaussian_noise(images: torch.Tensor, sigma: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``x + N(0, sigma²)`` independently per pixel and channel (not clipped)."""
    return images + sigma * _randn(images, generators)


def shot_noise(images: torch.Tensor, scale: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Poisson (shot) noise: ``poisson(x * scale) / scale``; a larger ``scale`` is milder."""
    counts = _per_image(images, generators, lambda x, g: torch.poisson(x * scale, generator=g))
    return counts / scale


def impulse_noise(
    images: torch.Tensor, amount: float, generators: Sequence[torch.Generator], salt_vs_pepper: float = 0.5
) -> torch.Tensor:
    """Salt & pepper noise as ``skimage.util.random_noise(mode='s&p')`` (scikit-image >= 0.19).

    Each element (pixel and channel) is replaced with probability ``amount``; a replaced element
    becomes 1 (salt) with probability ``salt_vs_pepper``, else 0 (pepper). Scikit-image before
    0.19, which CIFAR-10-C / ImageNet-C were made with, instead set exactly
    ``ceil(amount * size * salt_vs_pepper)`` coordinates drawn with replacement (and never the
    last row, column or channel, an off-by-one in its ``randint``); the expected fraction of
    replaced elements is the same up to those collisions.
    """

    def draw(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        u = torch.rand((2, *x.shape), generator=g, device=x.device, dtype=x.dtype)
        flipped, salted = u[0] < amount, u[1] < salt_vs_pepper
        return torch.where(flipped, salted.to(x.dtype), x)

    return _per_image(images, generators, draw)


def speckle_noise(images: torch.Tensor, sigma: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, sigma²)`` (not clipped)."""
    return images + images * (sigma * _randn(images, generators))


@register_corruption
class GaussianNoise(Corruption):
    """Additive Gaussian noise with standard deviation ``c``."""

    name = "gaussian_noise"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return gaussian_noise(images, float(self.params), generators or [])


@register_corruption
class ShotNoise(Corruption):
    """Poisson noise ``poisson(x c) / c``."""

    name = "shot_noise"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return shot_noise(images, float(self.params), generators or [])


@register_corruption
class ImpulseNoise(Corruption):
    """Salt & pepper noise replacing a fraction ``c`` of the elements."""

    name = "impulse_noise"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return impulse_noise(images, float(self.params), generators or [])


@register_corruption
class SpeckleNoise(Corruption):
    """Multiplicative Gaussian noise ``x + x N(0, c²)``."""

    name = "speckle_noise"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return speckle_noise(images, float(self.params), generators or [])
