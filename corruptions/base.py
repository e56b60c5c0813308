"""The corruption contract: a class per corruption over a deterministic functional and a kernel.

Three layers, like torchvision's transforms v2:

1. ``Corruption`` subclasses validate arguments and map (profile, severity) to parameters from
   :mod:`corruptions.profiles`; ``__call__`` does the bookkeeping shared by all of them.
2. A functional per corruption (``gaussian_noise(images, sigma, generators)``...), deterministic
   given its generators.
3. Pure tensor kernels underneath (convolutions, colour conversions) with no randomness.

Images are float NCHW in [0, 1], 1 or 3 channels, on any device. A corruption that only makes
sense in colour (``needs_rgb``) sees a grey image as three equal channels and returns it to one
channel with ITU-R 601 luma weights. Randomness is drawn per image from generators seeded by
(seed, dataset index, corruption name, severity), so batching never changes a result.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from corruptions.profiles import check_profile, severity_params
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.pixels import check_images, to_gray
from robustbench_lite.registry import Registry
from robustbench_lite.seeding import default_indices, generators

CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption", "robust-eval list corruptions")

#: The 15 ImageNet-C / CIFAR-10-C benchmark corruptions, in the benchmark's order.
BENCHMARK = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The 4 held-out extra corruptions (not in the benchmark mean).
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "spatter"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}


def family_of(name: str) -> str:
    return next(f for f, names in FAMILIES.items() if name in names)


def register_corruption(cls: type[Corruption]) -> type[Corruption]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name not in BENCHMARK + EXTRA:
        raise ValueError(f"'{cls.name}' is not an ImageNet-C corruption name")
    return CORRUPTIONS.register(cls.name, cls)


class Corruption:
    """Base class: one corruption at one severity of one profile.

    Args:
        severity: 1 (mild) .. 5 (strong).
        profile: ``cifar`` (CIFAR-10-C constants, images up to 64 px) or ``imagenet``.
        seed: run seed; each image's randomness is derived from (seed, index, name, severity).

    Subclasses set ``name`` (and ``random`` / ``needs_rgb`` when they apply) and implement
    :meth:`apply`; ``self.params`` holds the severity's parameter from the profile table.
    """

    name: ClassVar[str]
    random: ClassVar[bool] = False
    needs_rgb: ClassVar[bool] = False

    def __init__(self, severity: int = 1, profile: str = "cifar", seed: int = 0) -> None:
        self.profile = check_profile(profile)
        self.params: Any = severity_params(self.name, profile, severity)
        self.severity = severity
        self.seed = int(seed)

    @property
    def family(self) -> str:
        return family_of(self.name)

    @classmethod
    def describe(cls) -> str:
        """The line ``robust-eval list corruptions`` shows: the corruption's family."""
        return family_of(cls.name)

    @classmethod
    def availability(cls) -> str | None:
        """``None`` when usable; otherwise why not and how to fix it (e.g. missing textures)."""
        return None

    def __call__(self, images: torch.Tensor, indices: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """Corrupt a batch. ``indices`` are the images' dataset indices (default 0..n-1).

        Returns a new tensor with the input's shape, dtype and device, values in [0,1].
        """
        check_images(images, channels=(1, 3))
        reason = self.availability()
        if reason is not None:
            raise RobustEvalError(f"corruption '{self.name}' is unavailable: {reason}")
        if images.shape[0] == 0:
            return images.clone()
        idx = default_indices(images.shape[0], indices)
        gens = generators(self.seed, idx, self.name, self.severity, device=images.device) if self.random else None
        x = images.float()
        gray = x.shape[1] == 1 and self.needs_rgb
        if gray:
            x = x.expand(-1, 3, -1, -1)
        out = self.apply(x, gens)
        if gray:
            out = to_gray(out)
        return out.clamp_(0, 1).to(images.dtype)

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        """Corrupt float images in [0,1] (not modifying them); one generator per image if random."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(severity={self.severity}, profile='{self.profile}', seed={self.seed})"
