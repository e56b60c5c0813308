"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper) and speckle noise.

Every image draws its noise from its own generator (see :mod:`robustbench_lite.seeding`), so a
batch gives the same result as its images one at a time. Functionals take one generator per
image; the clipping to [0, 1] that the originals do last is left to ``Corruption.__call__``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from corruptions.base import Corruption, register_corruption
from robustbench_lite.seeding import sample_rows


def _check_generators(images: torch.Tensor, generators: Sequence[torch.Generator]) -> None:
    if len(generators) != images.shape[0]:
        raise ValueError(
            f"need one generator per image: {images.shape[0]} images, {len(generators)} generators"
        )


def _draw(
    images: torch.Tensor,
    generators: Sequence[torch.Generator],
    fill: Callable[[torch.Tensor, torch.Generator], object],
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """(N, *shape) random numbers (default: the images' shape), see :func:`sample_rows`."""
    _check_generators(images, generators)
    shape = tuple(images.shape[1:]) if shape is None else shape
    return sample_rows(generators, shape, fill, images.device, images.dtype)


def _randn(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    return _draw(images, generators, lambda row, g: row.normal_(generator=g))


def gaussian_noise(images: torch.Tensor, sigma: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``x + N(0, sigma²)`` independently per pixel and channel (not clipped)."""
    return _randn(images, generators).mul_(sigma).add_(images)  # images + sigma * noise


def shot_noise(images: torch.Tensor, scale: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Poisson (shot) noise: ``poisson(x * scale) / scale``; a larger ``scale`` is milder."""
    _check_generators(images, generators)
    if not generators:
        return torch.zeros_like(images)
    # torch.poisson (a sequential rejection sampler per element) is the cost; it has no out=
    rates = images * scale
    counts = torch.empty_like(rates)
    for i, g in enumerate(generators):
        counts[i] = torch.poisson(rates[i], generator=g)
    return counts.div_(scale)


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
    u = _draw(images, generators, lambda row, g: row.uniform_(generator=g), (2, *images.shape[1:]))
    flipped, salted = u[:, 0] < amount, u[:, 1] < salt_vs_pepper
    return torch.where(flipped, salted.to(images.dtype), images)


def speckle_noise(images: torch.Tensor, sigma: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, sigma²)`` (not clipped)."""
    return _randn(images, generators).mul_(sigma).mul_(images).add_(images)  # x + x * (sigma * noise)


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
