"""Geometric corruptions: ``elastic_transform``.

Two originals share the name:

- ``cifar`` profile, ``make_cifar_c.py``: a random affine warp (each corner of a triangle around
  the centre moved by up to ``c[2] * size`` px, ``cv2.warpAffine`` with reflect-101 borders),
  then an elastic displacement field ``gaussian(U(-1, 1), sigma=c[1] * size) * c[0] * size``
  resampled with ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``.
- ``imagenet`` profile, imagecorruptions 1.1.2: no affine; the field is
  ``gaussian(U(-max_dx, max_dx), sigma=0.01 * (H, W)) * alpha`` with ``alpha = 250 * c[0]`` and
  ``max_dx = 0.005 * H``.

Both resampling steps are ``torch.nn.functional.grid_sample`` (bilinear, reflection padding):
``align_corners=True`` reflects about the edge pixel centres (OpenCV's reflect-101) and
``align_corners=False`` about the image edges (SciPy's ``reflect``), so the two borders match
the originals; the tests hold both profiles equal to them (OpenCV and SciPy) on the same draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corruptions import _kernels as K
from corruptions.base import Corruption, register_corruption
from robustbench_lite.seeding import uniform_rows

__all__ = [
    "ElasticTransform", "affine_from_points", "displace", "elastic_kernel", "elastic_transform",
    "filter_matrix", "gaussian_smooth", "warp_affine",
]


def _pixel_grid(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=like.device, dtype=like.dtype)
    xs = torch.arange(w, device=like.device, dtype=like.dtype)
    return torch.meshgrid(ys, xs, indexing="ij")


def filter_matrix(
    kernel: torch.Tensor, size: int, mode: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(size, size) matrix of correlating a line with the odd 1-D ``kernel`` under SciPy border ``mode``."""
    taps = kernel.numel()
    src = K.pad_index(size, taps // 2, taps // 2, mode, device).unfold(0, taps, 1)  # size, taps
    weights = kernel.to(device=device, dtype=torch.float64).expand(size, taps)
    return torch.zeros(size, size, dtype=torch.float64, device=device).scatter_add_(1, src, weights)


def gaussian_smooth(
    images: torch.Tensor, sigma: float | tuple[float, float], mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over H and W, one sigma or (rows, cols), SciPy border ``mode``.

    :func:`corruptions._kernels.gaussian_filter` up to float rounding, but anisotropic and computed
    as two small matrix products: on CPU a single-channel ``conv2d`` is an order of magnitude slower.
    """
    sy, sx = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    h, w = images.shape[-2:]
    rows = filter_matrix(K.gaussian_kernel1d(sy, truncate), h, mode, images.device)
    cols = filter_matrix(K.gaussian_kernel1d(sx, truncate), w, mode, images.device)
    return K.resample(images, rows, cols)


def affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The (N, 2, 3) affine matrices taking three ``src`` points to ``dst`` (``cv2.getAffineTransform``).

    Args:
        src: (N, 3, 2) points as (x, y).
        dst: (N, 3, 2) points as (x, y).
    """
    a = torch.cat([src, torch.ones_like(src[..., :1])], dim=-1)  # N,3,3
    return torch.linalg.solve(a, dst).transpose(1, 2)


def warp_affine(images: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Warp with bilinear interpolation and reflect-101 borders, as ``cv2.warpAffine``.

    Args:
        images: (N, C, H, W).
        inverse: (N, 2, 3) matrices mapping an output pixel (x, y) to its source position, pixel
            centres at integer coordinates (what ``cv2.warpAffine`` computes by inverting ``M``).
    """
    n, _, h, w = images.shape
    ys, xs = _pixel_grid(h, w, images)
    inv = inverse.to(images)[:, :, :, None, None]
    # grid[..., k] = 2 * (inv[k, 0] x + inv[k, 1] y + inv[k, 2]) / (size - 1) - 1, computed in place
    grid = images.new_empty((n, h, w, 2))
    for k, size in ((0, w), (1, h)):
        g = grid[..., k]
        torch.mul(inv[:, k, 0], xs, out=g)
        g.add_(inv[:, k, 1] * ys).add_(inv[:, k, 2]).mul_(2).div_(max(size - 1, 1)).sub_(1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def displace(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Sample each image at (y + dy, x + dx), as ``map_coordinates(order=1, mode='reflect')``.

    Args:
        images: (N, C, H, W).
        dx: (N, H, W) column displacement in pixels.
        dy: (N, H, W) row displacement in pixels.
    """
    n, _, h, w = images.shape
    ys, xs = _pixel_grid(h, w, images)
    # grid[..., k] = (2 * (pos + d) + 1) / size - 1, computed in place
    grid = images.new_empty((n, h, w, 2))
    for k, pos, d, size in ((0, xs, dx, w), (1, ys, dy, h)):
        torch.add(pos, d, out=grid[..., k]).mul_(2).add_(1).div_(size).sub_(1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _triangle(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """make_cifar_c.py's three reference points around the centre, as (x, y)."""
    cx, cy, s = float(w // 2), float(h // 2), float(min(h, w) // 3)
    points = [[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]]
    return torch.tensor(points, device=like.device, dtype=like.dtype)


def elastic_kernel(
    images: torch.Tensor,
    noise_x: torch.Tensor,
    noise_y: torch.Tensor,
    alpha: float,
    sigma: float | tuple[float, float],
    corner_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure elastic transform given its random draws.

    Args:
        images: (N, C, H, W) in [0, 1].
        noise_x: (N, H, W) raw column-displacement noise (smoothed, then scaled by ``alpha``).
        noise_y: (N, H, W) raw row-displacement noise.
        alpha: displacement scale in pixels; 0 skips the elastic step.
        sigma: Gaussian smoothing of the noise, px, one value or (rows, cols); SciPy's
            ``reflect`` border, truncated at 3 sigma as the originals.
        corner_shift: (N, 3, 2) offsets of the affine reference triangle's corners (x, y) in
            px, or ``None`` for no affine step.
    """
    _, _, h, w = images.shape
    out = images
    if corner_shift is not None:
        src = _triangle(h, w, images).expand(images.shape[0], 3, 2)
        # cv2.warpAffine samples the source at M^-1 p, i.e. the transform taking dst back to src.
        out = warp_affine(out, affine_from_points(src + corner_shift.to(src), src))
    if alpha == 0:
        return out
    fields = torch.stack([noise_x, noise_y], dim=1).to(images)
    fields = gaussian_smooth(fields, sigma, "reflect", truncate=3.0).mul_(alpha)
    return displace(out, fields[:, 0], fields[:, 1])


def elastic_transform(
    images: torch.Tensor,
    alpha: float,
    sigma: float | tuple[float, float],
    generators: list[torch.Generator],
    *,
    affine: float = 0.0,
    max_dx: float = 1.0,
) -> torch.Tensor:
    """Elastic deformation, optionally after a random affine warp (see the module docstring).

    Per image, in this order: 6 corner offsets ``U(-affine, affine)`` (drawn even when
    ``affine`` is 0, so the fields do not depend on it), then the column and the row noise
    fields ``U(-max_dx, max_dx)`` of shape (H, W).

    Args:
        images: (N, C, H, W) in [0, 1].
        alpha: displacement scale, px.
        sigma: smoothing of the displacement noise, px; one value or (rows, cols).
        generators: one per image.
        affine: largest affine corner offset, px; 0 means no affine step.
        max_dx: half-range of the uniform displacement noise.

    Returns:
        Warped images, same shape, dtype and device.

    Example:
        >>> gens = [torch.Generator().manual_seed(i) for i in range(4)]
        >>> out = elastic_transform(torch.rand(4, 3, 32, 32), 3.2, 6.4, gens, affine=2.24)
    """
    n, _, h, w = images.shape
    draws = uniform_rows(generators, (6 + 2 * h * w,), images.device).mul_(2).sub_(1)
    corners = draws[:, :6].reshape(n, 3, 2) * affine if affine else None
    noise = draws[:, 6:].reshape(n, 2, h, w).mul_(max_dx)
    return elastic_kernel(images, noise[:, 0], noise[:, 1], alpha, sigma, corners).clamp(0, 1)


@register_corruption
class ElasticTransform(Corruption):
    """Elastic transform; ``cifar``: make_cifar_c.py (affine + elastic), ``imagenet``: imagecorruptions.

    The ``cifar`` constants are multiples of the image side (32 in the original; the shorter
    side here), the ``imagenet`` ones are (alpha / 250, sigma / side, max_dx / height).
    """

    name = "elastic_transform"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        generators = generators or []
        h, w = images.shape[-2:]
        a, s, m = self.params
        if self.profile == "cifar":
            size = min(h, w)
            return elastic_transform(images, a * size, s * size, generators, affine=m * size)
        return elastic_transform(images, 250 * a, (s * h, s * w), generators, max_dx=m * h)
