"""Severity tables: the parameter ``c`` of each corruption at severities 1..5, per profile.

Sources (see shared/reference/corruption-constants.md):

- ``cifar``: Hendrycks & Dietterich's CIFAR-10-C generator, hendrycks/robustness
  ``ImageNet-C/create_c/make_cifar_c.py`` (commit ca36008). For images up to 64 px.
- ``imagenet``: ``make_imagenet_c.py`` of the same repository, as the imagecorruptions 1.1.2
  package follows it (where imagecorruptions differs, its values are used and marked).

Each entry is a tuple of five values, index 0 = severity 1.
"""

from __future__ import annotations

from typing import Any

from robustbench_lite.errors import RobustEvalError

PROFILES = ("cifar", "imagenet")
#: Largest image side (px) for which the ``cifar`` profile is chosen automatically.
CIFAR_MAX_SIZE = 64

TABLES: dict[str, dict[str, tuple[Any, ...]]] = {
    "cifar": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        # (sigma, max_delta, iterations)
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        # (radius, alias_blur)
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        # (radius, sigma); angle ~ U(-45, 45) degrees
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        # (end, step): zoom factors = arange(1, end, step)
        "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        # (a, b): S * a + b in HSV
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        # 32 * (alpha, sigma, affine) in make_cifar_c.py; stored as multiples of the image size
        "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                              (0.1, 0.03, 0.03)),
        # (strength, wibbledecay); plasma map size 32
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        # (image weight, frost weight); textures scaled x0.2, random crop
        "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        # (loc, scale, sigma, threshold, c4, mode 0 water / 1 mud)
        "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    },
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
        "jpeg_compression": (25, 18, 15, 10, 7),
        # imagecorruptions upsamples with NEAREST (make_imagenet_c.py uses BOX)
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        # imagecorruptions: alpha = 250 * (...), sigma = 0.01 * size, max_dx = 0.005 * size, no
        # affine; stored here as (alpha / 250, sigma / size, max_dx / size)
        "elastic_transform": ((0.05, 0.01, 0.005), (0.065, 0.01, 0.005), (0.085, 0.01, 0.005),
                              (0.1, 0.01, 0.005), (0.12, 0.01, 0.005)),
        # (strength, wibbledecay); map = next power of two >= image side
        "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)),
    },
}


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise RobustEvalError(
            f"unknown corruption profile '{profile}'; valid profiles: {', '.join(PROFILES)} "
            f"(cifar for images up to {CIFAR_MAX_SIZE} px, imagenet above)"
        )
    return profile


def profile_for_size(height: int, width: int) -> str:
    """The profile chosen by resolution: ``cifar`` up to 64 px, ``imagenet`` above."""
    return "cifar" if max(height, width) <= CIFAR_MAX_SIZE else "imagenet"


def severity_params(name: str, profile: str, severity: int) -> Any:
    """The parameter ``c`` for ``name`` at ``severity`` (1..5) in ``profile``."""
    check_profile(profile)
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise RobustEvalError(f"severity must be an integer 1..5, got {severity!r}; e.g. --severities 1,3,5")
    return TABLES[profile][name][severity - 1]
