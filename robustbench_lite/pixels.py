"""The pixel-space contract, in one leaf: float NCHW images in [0, 1], and the luma weights.

Every image tensor that crosses a module boundary (attacks, corruptions, shifts, models) is
checked here, so the error a user sees for a bad batch is the same wherever it enters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from robustbench_lite.errors import RobustEvalError

#: ITU-R 601-2 luma weights (R, G, B), as PIL's ``convert('L')`` and torchvision's ``rgb_to_grayscale``.
LUMA = (0.299, 0.587, 0.114)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """N3HW -> N1HW luma."""
    r, g, b = images.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def check_images(images: object, channels: Sequence[int] | None = None) -> torch.Tensor:
    """Float NCHW images with values in [0, 1] (the project's pixel-space contract).

    Args:
        images: the batch to check.
        channels: the channel counts the caller supports (None: any).

    Returns:
        ``images`` itself.
    """
    if not isinstance(images, torch.Tensor):
        raise RobustEvalError(
            f"images must be a torch.Tensor (float32, NCHW, values in [0,1]), got {type(images).__name__}; "
            "convert with torch.as_tensor(x, dtype=torch.float32)"
        )
    if not images.is_floating_point():
        raise RobustEvalError(
            f"images must be floating point in [0,1], got dtype {images.dtype}; "
            "convert uint8 images with images.float() / 255"
        )
    if images.ndim != 4:
        raise RobustEvalError(
            f"images must be 4-D (N, C, H, W), got shape {tuple(images.shape)}; "
            "add the batch dimension with images.unsqueeze(0)"
        )
    if channels is not None and images.shape[1] not in channels:
        raise RobustEvalError(
            f"images must have {' or '.join(map(str, channels))} channels (NCHW), got shape {tuple(images.shape)}; "
            "pass channels first"
        )
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise RobustEvalError("images contain NaN or inf; pass finite pixel values in [0,1]")
        if lo < 0 or hi > 1:
            raise RobustEvalError(
                f"images must be in [0,1] (models normalise inside), got values in [{lo:.4g}, {hi:.4g}]; "
                "pass un-normalised images (undo Normalize, or divide uint8 by 255)"
            )
    return images
