"""Covariate shift: seeded pixel-space transforms at five graded intensities.

Three layers, as the corruptions (:mod:`corruptions.base`): :class:`CovariateShift` maps an
intensity to its parameter and does the bookkeeping (the pixel contract, per-image draws); the
kernels below are pure functions ``kernel(images, parameter, uniforms) -> images``. Each image's
uniforms come from its own generator, seeded by (seed, dataset index, split name, intensity)
through :mod:`robustbench_lite.seeding`, so batching never changes a result.

The kernels are not the corruptions' ones, on purpose: ``covariate/brightness`` adds a signed
per-image delta to every channel (the ``brightness`` corruption adds to the HSV value),
``covariate/contrast`` scales about the whole image's mean (the ``contrast`` corruption, about
each channel's mean), and ``covariate/resolution`` averages areas and interpolates bilinearly
(``pixelate`` reproduces PIL's box resize); sharing them would change the shift numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from robustbench_lite.pixels import LUMA, check_images
from robustbench_lite.seeding import default_indices, generators, uniform_rows
from robustbench_lite.shift.base import INTENSITIES, Level, ShiftEnv, ShiftSplit, SplitData, Transform, register_shift

# ---------------------------------------------------------------------------------------------
# Pure kernels (images, parameter, uniforms) -> images, all in [0, 1] NCHW


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(u.dtype)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample through ``theta`` (N x 2 x 3, output -> input in normalised coordinates); zero fill."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, degrees: float, u: torch.Tensor) -> torch.Tensor:
    """Rotate by ``degrees`` about the centre, direction from ``u[:, 0]``; corners filled with 0."""
    h, w = images.shape[-2:]
    angle = torch.deg2rad(degrees * _sign(u[:, 0]))
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    # Normalised coordinates scale x and y differently on non-square images.
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    return _affine(images, theta)


def translate(images: torch.Tensor, fraction: float, u: torch.Tensor) -> torch.Tensor:
    """Shift by ``fraction`` of the image size in the direction ``2 pi u[:, 0]``."""
    phi = 2 * math.pi * u[:, 0]
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = 2 * fraction * phi.cos(), 2 * fraction * phi.sin()
    return _affine(images, theta)


def scale(images: torch.Tensor, factor: float, u: torch.Tensor) -> torch.Tensor:
    """Zoom in (crop) or out (border of 0) by ``factor`` about the centre; which one from ``u[:, 0]``."""
    zoom = torch.where(u[:, 0] < 0.5, factor, 1 / factor).to(images.dtype)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    return _affine(images, theta)


def brightness(images: torch.Tensor, delta: float, u: torch.Tensor) -> torch.Tensor:
    """Add ``delta`` (darker or brighter from ``u[:, 0]``), clipped to [0, 1]."""
    return (images + delta * _sign(u[:, 0]).view(-1, 1, 1, 1)).clamp(0, 1)


def contrast(images: torch.Tensor, factor: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each image's deviation from its mean by ``factor`` (< 1 lowers contrast)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * factor + mean).clamp(0, 1)


_RGB_TO_YIQ = torch.tensor([LUMA, [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])


def hue(images: torch.Tensor, degrees: float, u: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``degrees`` (direction from ``u[:, 0]``) in YIQ space; luma is kept. RGB only."""
    angle = torch.deg2rad(degrees * _sign(u[:, 0])).double()
    rot = torch.zeros(len(images), 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = angle.cos(), -angle.sin()
    rot[:, 2, 1], rot[:, 2, 2] = angle.sin(), angle.cos()
    to_yiq = _RGB_TO_YIQ.double()
    matrix = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(images.dtype).to(images.device)
    return torch.einsum("nij,njhw->nihw", matrix, images).clamp(0, 1)


def invert(images: torch.Tensor, threshold: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Solarise: invert every pixel at or above ``threshold`` (0 inverts the whole image)."""
    return torch.where(images >= threshold, 1 - images, images)


def resolution(images: torch.Tensor, factor: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Down-sample by ``factor`` (area average), then up-sample back (bilinear)."""
    h, w = images.shape[-2:]
    small = (max(2, round(h / factor)), max(2, round(w / factor)))
    down = F.interpolate(images, size=small, mode="area")
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


class CovariateShift(ShiftSplit):
    """A pixel-space transform at five graded intensities, seeded per image.

    Args:
        name: registry name (``covariate/rotation``).
        family: ``geometric``, ``photometric`` or ``resolution``.
        kernel: ``kernel(images, parameter, uniforms) -> images``; ``uniforms`` is N x ``randoms``
            numbers in [0, 1) drawn from each image's own generator (None when ``randoms`` is 0).
        parameter: the parameter's name (``degrees``); ``params`` its value at intensities 1-5.
        needs_rgb: only for colour images.
    """

    kind = "covariate"

    def __init__(self, name: str, family: str, kernel: Callable[..., torch.Tensor], parameter: str,
                 params: Sequence[float], description: str, randoms: int = 1, needs_rgb: bool = False) -> None:
        if len(params) != len(INTENSITIES):
            raise ValueError(f"{name}: need {len(INTENSITIES)} parameters, got {len(params)}")
        self.name, self.family, self.kernel, self.parameter = name, family, kernel, parameter
        self.params, self.description, self.randoms, self.needs_rgb = tuple(params), description, randoms, needs_rgb

    def transform(self, intensity: int, seed: int) -> Transform:
        """The ``(images, indices) -> images`` transform at ``intensity`` (1-5)."""
        param = self.params[intensity - 1]

        def apply(images: torch.Tensor, indices: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
            check_images(images, channels=(3,) if self.needs_rgb else None)
            if images.shape[0] == 0:
                return images.clone()
            u = None
            if self.randoms:
                gens = generators(seed, default_indices(len(images), indices), "shift", self.name, intensity)
                # drawn on the CPU (the generators' device), so a GPU run draws the CPU run's numbers
                u = uniform_rows(gens, (self.randoms,)).to(images.device)
            return self.kernel(images, param, u)

        return apply

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if self.needs_rgb and env.dataset.channels != 3:
            return f"needs colour images; {env.dataset.name} has {env.dataset.channels} channel(s)"
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        levels = []
        for intensity in env.options.intensities:
            logits = env.predict(self.transform(intensity, env.seed), f"{self.name} {intensity}")
            params = {"intensity": intensity, self.parameter: self.params[intensity - 1]}
            levels.append(Level(str(intensity), params, logits, env.dataset.labels))
        return [SplitData(self.name, self.kind, env.dataset.classes, levels, extra={"family": self.family})]


for _split in (
    CovariateShift("covariate/rotation", "geometric", rotate, "degrees", (10, 20, 30, 45, 60),
                   "rotation by +-10..60 degrees (zero fill)"),
    CovariateShift("covariate/translation", "geometric", translate, "fraction", (0.05, 0.1, 0.15, 0.2, 0.3),
                   "translation by 5..30% of the image size in a random direction (zero fill)"),
    CovariateShift("covariate/scale", "geometric", scale, "factor", (1.1, 1.2, 1.35, 1.5, 1.75),
                   "zoom in or out by 1.1..1.75x about the centre"),
    CovariateShift("covariate/brightness", "photometric", brightness, "delta", (0.1, 0.2, 0.3, 0.4, 0.5),
                   "brightness -+0.1..0.5 (clipped)"),
    CovariateShift("covariate/contrast", "photometric", contrast, "factor", (0.8, 0.6, 0.45, 0.3, 0.2),
                   "contrast lowered to 80..20% about the image mean", randoms=0),
    CovariateShift("covariate/colour", "photometric", hue, "degrees", (30, 60, 90, 135, 180),
                   "hue rotation by +-30..180 degrees in YIQ (colour images only)", needs_rgb=True),
    CovariateShift("covariate/inversion", "photometric", invert, "threshold", (0.9, 0.75, 0.5, 0.25, 0.0),
                   "solarisation: pixels above 0.9..0 inverted (intensity 5 = negative image)", randoms=0),
    CovariateShift("covariate/resolution", "resolution", resolution, "factor", (1.5, 2, 3, 4, 6),
                   "down-sampled by 1.5..6x (area), up-sampled back (bilinear)", randoms=0),
):
    register_shift(_split)
