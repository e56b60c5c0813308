"""Frost textures: the photographs of frost from ImageNet-C, shipped with this package.

The five textures the originals draw from are in ``corruptions/frost/`` with their licence
(Apache 2.0, as published in Hendrycks & Dietterich's ImageNet-C repository and the
imagecorruptions package, byte for byte the files imagecorruptions 1.1.2 installs), so every
install scores the same 15 corruptions: a mean over 14 on one machine and 15 on another would be
two different quantities. A copy whose files are missing falls back to an installed
imagecorruptions (located with :func:`importlib.util.find_spec`, which does not import it: its
modules need a NumPy-1 era stack); the images are read with PIL.

Both originals pick ``np.random.randint(5)`` of the six listed files, so ``frost6.jpg`` is never
used; neither is it here (nor shipped). Textures are RGB, 0..255 values (uint8), cached in memory
once scaled:

- ``cifar`` (``make_cifar_c.py``): ``cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)`` (bilinear, which
  for an exact factor 5 samples pixel ``5 i + 2``). Where that is too small for the image
  (above 62 px) the texture is then fitted as for ``imagenet``.
- ``imagenet`` (imagecorruptions): scaled so that both sides cover the image, times 1.1, side
  ``ceil(side * factor)``, ``cv2.INTER_CUBIC`` (``torch`` bicubic uses the same a = -0.75).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
#: How many of :data:`FROST_FILES` the originals draw from (``np.random.randint(5)``).
FROST_USED = 5
UNAVAILABLE = (
    "frost needs its textures, shipped in corruptions/frost/ (this copy lacks them) or with imagecorruptions: "
    "reinstall robustbench-lite, or pip install 'robustbench-lite[imagecorruptions]'"
)
CIFAR_SCALE = 0.2


#: The textures shipped with this package.
SHIPPED = Path(__file__).resolve().parent / "frost"


def frost_dir() -> Path | None:
    """The folder holding the textures: the shipped one, else an installed imagecorruptions', else ``None``."""
    if all((SHIPPED / name).is_file() for name in FROST_FILES[:FROST_USED]):
        return SHIPPED
    try:
        spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "frost"
        if all((folder / name).is_file() for name in FROST_FILES[:FROST_USED]):
            return folder
    return None


def frost_unavailable() -> str | None:
    """``None`` when the textures can be read, else why not and how to fix it."""
    return None if frost_dir() is not None else UNAVAILABLE


@functools.cache
def _raw(index: int) -> torch.Tensor:
    """Texture ``index`` as read, (3, H, W) uint8 RGB (PNG alpha dropped, as ``cv2.imread``)."""
    from PIL import Image

    folder = frost_dir()
    if folder is None:
        raise FileNotFoundError(UNAVAILABLE)
    with Image.open(folder / FROST_FILES[index]) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _resize_linear_exact(tex: torch.Tensor, factor: float) -> torch.Tensor:
    """``cv2.resize(tex, (0, 0), fx=factor, fy=factor)``: size ``round(side * factor)``, bilinear
    at source ``(i + .5) / factor - .5`` clamped to the image (what OpenCV does with ``fx``)."""
    _, h, w = tex.shape
    oh, ow = round(h * factor), round(w * factor)
    ys = ((torch.arange(oh, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(0, h - 1)
    xs = ((torch.arange(ow, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(0, w - 1)
    gy, gx = torch.meshgrid(2 * ys / (h - 1) - 1, 2 * xs / (w - 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(tex[None].double(), grid[None], mode="bilinear", align_corners=True)
    return _to_uint8(out[0])


def _fit(tex: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """imagecorruptions' fit: cover (h, w) on both sides, times 1.1, bicubic."""
    _, th, tw = tex.shape
    factor = max(1.0, h / th, w / tw) * 1.1
    size = (math.ceil(th * factor), math.ceil(tw * factor))
    return _to_uint8(F.interpolate(tex[None].double(), size=size, mode="bicubic", align_corners=False)[0])


@functools.lru_cache(maxsize=16)
def frost_textures(profile: str, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """The :data:`FROST_USED` textures scaled for ``profile`` and an image of (height, width).

    Each is (3, H', W') uint8 with ``H' > height`` and ``W' > width`` (a random crop needs room).

    Raises:
        FileNotFoundError: imagecorruptions (and with it the textures) is not installed.
    """
    out = []
    for index in range(FROST_USED):
        tex = _raw(index)
        if profile == "cifar":
            tex = _resize_linear_exact(tex, CIFAR_SCALE)
            if tex.shape[1] <= height or tex.shape[2] <= width:
                tex = _fit(tex, height, width)
        else:
            tex = _fit(tex, height, width)
        out.append(tex)
    return tuple(out)
