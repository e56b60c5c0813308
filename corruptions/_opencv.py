"""OpenCV's image operations re-implemented in torch, as spatter's water mode needs them.

Each follows OpenCV's definition and arithmetic (its fixed-point direction bins, border rules,
single- and double-precision steps), batched over (N, H, W) images on any device, so that the
corruption needs no OpenCV at run time; the tests hold every one equal to OpenCV's on the same
input (``tests/corruptions/test_weather_geometric.py``, with the ``dev`` extra's OpenCV).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corruptions import _kernels as K

__all__ = ["box3", "canny", "chamfer_distance", "dilate3", "equalize_hist", "taps3"]


#: OpenCV's tan(22.5°) in 15-bit fixed point, used to bin gradient directions.
_TG22 = 13573
#: OpenCV's DIST_L2 / DIST_MASK_5 steps (axial, diagonal, knight), float32 values as OpenCV's.
_CHAMFER_5X5 = tuple(torch.tensor((1.0, 1.4, 2.1969)).double().tolist())


def taps3(images: torch.Tensor, mode: str) -> list[list[torch.Tensor]]:
    """The nine 3x3 neighbours of every pixel of (N, H, W) as views, ``[dy + 1][dx + 1]``."""
    h, w = images.shape[-2:]
    p = K.pad2d(images[:, None], (1, 1), (1, 1), mode)[:, 0]
    return [[p[:, i: i + h, j: j + w] for j in range(3)] for i in range(3)]


def dilate3(mask: torch.Tensor) -> torch.Tensor:
    """8-connected dilation of (N, H, W) bool masks (outside counts as False)."""
    n, h, w = mask.shape
    p = mask.new_zeros(n, h + 2, w + 2)
    p[:, 1:-1, 1:-1] = mask
    out = mask.clone()
    for i in range(3):
        for j in range(3):
            out |= p[:, i: i + h, j: j + w]
    return out


def canny(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (3x3 Sobel, L1 gradient magnitude) on 8-bit valued images.

    Follows OpenCV's algorithm: Sobel with replicated borders; each pixel's direction binned
    with OpenCV's fixed-point tan(22.5°) into horizontal / vertical / one of two diagonals;
    non-maximum suppression with OpenCV's tie rule (strictly greater than the neighbour before,
    at least the neighbour after, strictly both on diagonals) against magnitudes that are zero
    outside the image; pixels above ``high`` seed edges that grow through 8-connected pixels
    above ``low`` (iterated dilation until nothing changes, where OpenCV uses a stack). The
    tests hold it equal to ``cv2.Canny`` pixel for pixel.

    Args:
        images: (N, H, W) with integer values 0..255 (any float or integer dtype).
        low: hysteresis low threshold.
        high: hysteresis high threshold.

    Returns:
        (N, H, W) bool edge maps.
    """
    t = taps3(images.float(), "nearest")
    # Sobel as sums of shifted views: exact on integers, and far faster on CPU than a
    # single-channel conv2d.
    dx = (t[0][2] + 2 * t[1][2] + t[2][2] - t[0][0] - 2 * t[1][0] - t[2][0]).round().int()
    dy = (t[2][0] + 2 * t[2][1] + t[2][2] - t[0][0] - 2 * t[0][1] - t[0][2]).round().int()
    ax, ay = dx.abs(), dy.abs()
    mag = ax + ay
    m = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside, as OpenCV's border rows

    def at(r: int, c: int) -> torch.Tensor:
        return m[:, 1 + r: m.shape[1] - 1 + r, 1 + c: m.shape[2] - 1 + c]

    tg22x = ax * _TG22
    y = ay * (1 << 15)
    horizontal = y < tg22x
    vertical = ~horizontal & (y > tg22x + ax * (1 << 16))
    diagonal = ~horizontal & ~vertical
    same_sign = (dx < 0) == (dy < 0)
    maximum = (
        (horizontal & (mag > at(0, -1)) & (mag >= at(0, 1)))
        | (vertical & (mag > at(-1, 0)) & (mag >= at(1, 0)))
        | (diagonal & same_sign & (mag > at(-1, -1)) & (mag > at(1, 1)))
        | (diagonal & ~same_sign & (mag > at(-1, 1)) & (mag > at(1, -1)))
    )
    candidate = maximum & (mag > low)
    edges = candidate & (mag > high)
    while True:
        grown = candidate & dilate3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """``cv2.distanceTransform(src, cv2.DIST_L2, 5)`` capped at ``cap``: distance to the nearest
    zero pixel of ``src`` under OpenCV's 5x5 chamfer metric (steps 1, 1.4, 2.1969).

    OpenCV's two raster passes, each vectorised over the batch and the columns: a row takes the
    mask steps from the rows already done, then the step along the row is a running minimum
    (``d(x) = min_j<=x d'(j) + (x - j)`` is a ``cummin`` of ``d' - j``). Outside the image counts
    as far, as in OpenCV; anything at least ``cap`` away is returned as ``cap``.

    Args:
        zero: (N, H, W) bool, True where ``src`` is 0 (distance 0).
        cap: the largest distance returned (the original truncates at 20 next).
    """
    a, b, c = _CHAMFER_5X5
    n, h, w = zero.shape
    cap = float(cap)
    # float64: the running minimum shifts values by up to the image width, which float32 would round
    d = torch.full((n, h + 4, w + 4), cap, device=zero.device, dtype=torch.float64)
    d[:, 2:-2, 2:-2] = torch.where(zero, 0.0, cap)
    ramp = torch.arange(w, device=zero.device, dtype=d.dtype) * a
    # Forward pass (top-down, then left to right), then backward (bottom-up, right to left): the
    # mask is mirrored and the row's running minimum runs the other way.
    for rows, s in ((range(h), 1), (reversed(range(h)), -1)):
        for y in rows:
            r = y + 2
            row = d[:, r, 2:-2]
            before, twice = d[:, r - s], d[:, r - 2 * s]
            row = torch.minimum(row, before[:, 2: w + 2] + a)
            row = torch.minimum(row, torch.minimum(before[:, 1: w + 1], before[:, 3: w + 3]) + b)
            row = torch.minimum(row, torch.minimum(before[:, 0:w], before[:, 4: w + 4]) + c)
            row = torch.minimum(row, torch.minimum(twice[:, 1: w + 1], twice[:, 3: w + 3]) + c)
            if s == 1:
                row = torch.cummin(row - ramp, dim=1).values + ramp
            else:
                row = torch.cummin((row + ramp).flip(1), dim=1).values.flip(1) - ramp
            d[:, r, 2:-2] = row
    return d[:, 2:-2, 2:-2].clamp(max=cap).float()


def equalize_hist(images: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per image on integer values 0..255, (N, H, W) -> (N, H, W) float.

    The lowest occupied level ``l`` maps to 0, level ``v`` to ``round((cdf(v) - cdf(l)) * s)``
    with ``s = 255 / (count - cdf(l))`` in single precision, as OpenCV; a one-level image is
    left unchanged.
    """
    n = images.shape[0]
    levels = images.flatten(1).long()
    hist = torch.zeros(n, 256, device=images.device, dtype=torch.float32)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float32))
    lowest = (hist > 0).float().argmax(dim=1, keepdim=True)
    first = hist.gather(1, lowest)
    total = levels.shape[1]
    # a true division (``scalar / tensor`` is reciprocal-then-multiply in torch: off by one ulp)
    scale = torch.full_like(first, 255.0) / (total - first).clamp(min=1)
    lut = torch.round((hist.cumsum(dim=1) - first) * scale).clamp(0, 255)
    lut = torch.where(first == total, torch.arange(256, device=images.device, dtype=torch.float32), lut)
    return lut.gather(1, levels).reshape(images.shape).to(images.dtype)


def box3(images: torch.Tensor) -> torch.Tensor:
    """``cv2.blur(x, (3, 3))`` on (N, H, W) before the cast: row sums, column sums (exact in
    float64 for these inputs, as OpenCV's double accumulator), times 1/9 in double, to float32."""
    t = taps3(images.double(), "mirror")
    rows = [t[i][0] + t[i][1] + t[i][2] for i in range(3)]
    return ((rows[0] + rows[1] + rows[2]) * (1.0 / 9)).float()
