"""Blur corruptions: gaussian, defocus, glass, motion and zoom blur.

Each corruption comes in three layers (see :mod:`corruptions.base`): a registered class that maps
(profile, severity) to parameters, a deterministic functional, and pure kernels in
:mod:`corruptions._kernels`. :func:`motion_blur_kernel_apply` is also the motion blur that the
snow corruption uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from corruptions import _kernels as K
from corruptions.base import Corruption, register_corruption
from robustbench_lite.seeding import uniform_rows

# --------------------------------------------------------------------------- motion blur kernel


def motion_kernel_width(radius: float, sigma: float) -> int:
    """ImageMagick's ``GetOptimalKernelWidth1D(radius, sigma)``: ``2 ceil(radius) + 1`` for radius > 0.

    With radius 0 ImageMagick grows the width until the Gaussian tail drops below one 16-bit
    quantum (``QuantumScale``), which is reproduced here.
    """
    if radius > 1e-12:
        return int(2 * math.ceil(radius) + 1)
    gamma = abs(sigma)
    if gamma <= 1e-12:
        return 3
    alpha = 1.0 / (2 * gamma * gamma)
    beta = 1.0 / (math.sqrt(2 * math.pi) * gamma)
    width = 5
    while True:
        j = (width - 1) // 2
        normalize = sum(math.exp(-(i * i) * alpha) * beta for i in range(-j, j + 1))
        if math.exp(-(j * j) * alpha) * beta / normalize < 1.0 / 65535:
            return width - 2
        width += 2


def motion_blur_kernel_apply(
    images: torch.Tensor,
    radius: float,
    sigma: float,
    angles_deg: torch.Tensor,
    *,
    stop_at_border: bool = False,
) -> torch.Tensor:
    """One-sided motion blur with ImageMagick's ``MotionBlurImage`` semantics, one angle per image.

    Output pixel (x, y) is ``sum_i k_i * img(x + ox_i, y + oy_i)`` for ``i = 0 .. width - 1``
    where ``width = 2 ceil(radius) + 1``, ``k_i ∝ exp(-i² / 2σ²)`` (normalised to sum 1),
    ``ox_i = ceil(i cos(angle) - 0.5)``, ``oy_i = ceil(i sin(angle) - 0.5)`` (y pointing down),
    and pixels outside the image repeat the edge (ImageMagick's default ``edge`` virtual pixels).
    This is what CIFAR-10-C's Wand ``motion_blur`` and the imagecorruptions NumPy port compute;
    unlike CIFAR-10-C there is no 8-bit PNG round trip around it.

    Args:
        images: float NCHW images.
        radius: blur length in pixels, not counting the centre pixel (``-motion-blur`` radius).
        sigma: standard deviation of the Gaussian weights along the streak, in pixels.
        angles_deg: one angle in degrees per image, shape (N,); 0 smears along +x.
        stop_at_border: drop every tap from the first one whose offset reaches the image size,
            without renormalising, as imagecorruptions' ``_motion_blur`` ``break``.

    Returns:
        The blurred images, same shape, dtype and device.
    """
    n, c, h, w = images.shape
    angles = torch.as_tensor(angles_deg, dtype=torch.float64, device=images.device).reshape(-1)
    if angles.numel() != n:
        raise ValueError(
            f"motion_blur_kernel_apply needs one angle per image: {n} images, {angles.numel()} angles"
        )
    width = motion_kernel_width(radius, sigma)
    sigma = max(abs(float(sigma)), 1e-12)
    taps = torch.arange(width, dtype=torch.float64, device=images.device)
    weights = torch.exp(-(taps**2) / (2 * sigma * sigma))
    weights = weights / weights.sum()
    theta = torch.deg2rad(angles)
    # ImageMagick: offset = ceil(i * point / hypot(point) - 0.5) with point = width * (sin, cos).
    ox = torch.ceil(taps[None, :] * torch.cos(theta)[:, None] - 0.5).long()  # N, width
    oy = torch.ceil(taps[None, :] * torch.sin(theta)[:, None] - 0.5).long()
    tap_weights = weights[None, :].expand(n, width)
    if stop_at_border:
        tap_weights = tap_weights * ((ox.abs() < w) & (oy.abs() < h))
    tap_weights = tap_weights.to(images.dtype)
    if n == 0 or images.numel() == 0:
        return torch.zeros_like(images)
    # Every tap shifts each image by a whole number of pixels, so with the edges repeated (padding)
    # a tap reads a plain window of the padded image: no gather. Sorted by angle, the images that
    # share a tap's offset (and so its weight) are consecutive: one strided multiply per run of
    # them. The sum runs over the taps in order with the original's operations (a weight times a
    # pixel, then added), so the result is the per-pixel gather's bit for bit.
    order = torch.argsort(angles, stable=True)
    ox, oy, tap_weights = ox[order], oy[order], tap_weights[order]
    key = (oy * (2 * width + 1) + ox).T  # width, N: unique per offset (|offset| < width)
    starts = torch.ones(width, n, dtype=torch.bool, device=images.device)
    starts[:, 1:] = key[:, 1:] != key[:, :-1]
    # Offsets beyond the image read the edge whatever their size: clamp them to it.
    cx, cy = ox.clamp(-(w - 1), w - 1), oy.clamp(-(h - 1), h - 1)
    left, right = max(0, -int(cx.min())), max(0, int(cx.max()))
    top, bottom = max(0, -int(cy.min())), max(0, int(cy.max()))
    padded = F.pad(images.index_select(0, order), (left, right, top, bottom), mode="replicate")
    padded = padded.contiguous()
    stride = padded.stride()
    # where each run starts, its window's top-left corner in the padded image, and its weight
    run_tap, run_start = starts.nonzero().T.tolist()
    corner = ((cy + top) * stride[2] + (cx + left)).T.tolist()  # width, N
    weight = tap_weights.T.tolist()
    out = torch.zeros_like(images)
    tap = torch.empty_like(images)
    runs = len(run_start)
    for k in range(runs):
        i, a = run_tap[k], run_start[k]
        last = k + 1 == runs or run_tap[k + 1] != i  # the tap's last run
        b = n if last else run_start[k + 1]
        window = padded.as_strided((b - a, c, h, w), stride, a * stride[0] + corner[i][a])
        torch.mul(window, weight[i][a], out=tap[a:b])
        if last:
            out += tap
    return torch.empty_like(out).index_copy_(0, order, out)


# --------------------------------------------------------------------------- functionals


def _uniform(
    generators: Sequence[torch.Generator], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """One U(low, high) draw per image, each from that image's generator (float64)."""
    return low + (high - low) * uniform_rows(generators, (1,), device, torch.float64)[:, 0]


def gaussian_blur(
    images: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """Gaussian blur as ``skimage.filters.gaussian(x, sigma, channel_axis=-1)``.

    Args:
        images: float NCHW images.
        sigma: standard deviation in pixels (same along H and W).
        mode: border mode (SciPy names); skimage's default, used by the originals, is ``nearest``.
        truncate: kernel radius in sigmas, ``int(truncate * sigma + 0.5)`` taps each side.
    """
    return K.gaussian_filter(images, sigma, mode=mode, truncate=truncate)


def defocus_blur(images: torch.Tensor, radius: float, alias_blur: float) -> torch.Tensor:
    """Correlate with the anti-aliased disk of ``make_*_c.py`` (``disk(radius, alias_blur)``).

    Borders are OpenCV's default for ``cv2.filter2D``, reflect-101. Taps that are exactly zero
    are cropped off the kernel first; that changes nothing but the speed.
    """
    kernel = K.disk_kernel(radius, alias_blur)
    nz = kernel.nonzero()
    centre = kernel.shape[0] // 2
    reach = int((nz - centre).abs().max()) if nz.numel() else 0
    kernel = kernel[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1]
    return K.correlate2d(images, kernel, mode="mirror")


def _glass_offsets_into(
    out: torch.Tensor, max_delta: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Fill ``out`` (N, iterations, 2, H, W), any integer dtype, row i from generator i.

    ``random_(-d, d)`` draws exactly what ``torch.randint(-d, d, ...)`` draws from the same
    generator whatever the integer dtype (one 32-bit draw per element for these ranges).
    """
    d = int(max_delta)
    for i, g in enumerate(generators):
        out[i].random_(-d, d, generator=g)
    return out


def glass_offsets(
    n: int,
    h: int,
    w: int,
    max_delta: int,
    iterations: int,
    generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random offsets of :func:`glass_blur`: (N, iterations, 2 (dy, dx), H, W), each image's from its
    generator, uniform integers in ``[-max_delta, max_delta - 1]`` (``np.random.randint(-d, d)``)."""
    d = int(max_delta)
    out = torch.zeros((n, iterations, 2, h, w), dtype=torch.long, device=device)
    if d <= 0 or n == 0:
        return out
    return _glass_offsets_into(out, d, generators)


@functools.lru_cache(maxsize=16)
def _glass_link_table(h: int, w: int, d: int, device: torch.device) -> torch.Tensor:
    """The link of every visited pixel for every offset, see :func:`glass_shuffle_index`.

    Flat over (window pixel k, ``(dy + d) * 2d + (dx + d)``): the target ``t`` (clamped to the
    image) if the pixel takes the value ``t`` took earlier in the round (``t`` visited before:
    inside the window, larger flat index), else ``H*W + t`` (``t``'s original value).
    """
    top, wh, ww = d + 1, h - 2 * d, w - 2 * d
    yy = torch.arange(top, top + wh)[:, None, None, None]
    xx = torch.arange(top, top + ww)[None, :, None, None]
    dy = torch.arange(-d, d)[None, None, :, None]
    dx = torch.arange(-d, d)[None, None, None, :]
    ty, tx = (yy + dy).clamp(0, h - 1), (xx + dx).clamp(0, w - 1)
    target = ty * w + tx
    visited_before = (ty > d) & (ty <= h - d) & (tx > d) & (tx <= w - d) & (target > yy * w + xx)
    links = torch.where(visited_before, target, target + h * w).reshape(-1)
    return links.to(device=device, dtype=torch.int32 if 2 * h * w < 2**31 else torch.int64)


def glass_shuffle_index(offsets: torch.Tensor, max_delta: int) -> torch.Tensor:
    """The pixel map of the glass-blur shuffle: (N, H*W) flat source index for each output pixel.

    Reproduces, for given offsets, the sequential loop of ``make_*_c.py``: for each round, for
    ``h`` then ``w`` from ``size - d`` down to ``d + 1``, ``x[h, w], x[h + dy, w + dx] = x[h + dy,
    w + dx], x[h, w]``. On an HxWx3 NumPy array that line does not swap: both sides are views,
    so it copies the neighbour into (h, w) and writes (h, w)'s new value back onto the neighbour
    (a no-op). Each visited pixel therefore takes the value its neighbour holds at that moment:
    the neighbour's original value if the neighbour is visited later (or never), else the value
    the neighbour took earlier in the round. Following those "already visited" links gives each
    pixel's source; the links only ever point to pixels visited earlier, so pointer jumping
    resolves them in ``log2(chain length)`` vectorised steps instead of a loop over pixels.

    Each pixel holds one link: ``p < H*W`` "the value pixel p took this round" (to follow) or
    ``H*W + q`` "pixel q's original value" (final). The links come from a table per (size,
    max_delta, offset); only the few links still to follow (about a fifth, then a tenth of
    those...) take part in each jump.

    Args:
        offsets: (N, iterations, 2, H, W) integer (dy, dx) per pixel and round in
            ``[-max_delta, max_delta - 1]``, as drawn by :func:`glass_offsets`; only pixels
            inside the visited window are used.
        max_delta: ``d``; pixels with ``d < h <= H - d`` and ``d < w <= W - d`` are visited.
    """
    n, iterations, _, h, w = offsets.shape
    device = offsets.device
    d = int(max_delta)
    hw = h * w
    flat = torch.arange(hw, device=device)
    if d <= 0 or h - 2 * d < 1 or w - 2 * d < 1 or n == 0:
        return flat.expand(n, hw).clone()
    if bool((offsets.amin() < -d) | (offsets.amax() >= d)):
        raise ValueError(f"glass offsets must lie in [-{d}, {d - 1}]")
    table = _glass_link_table(h, w, d, device)
    follows = d > 1  # with offsets in [-1, 0] no pixel is visited before the ones it reads
    top, wh, ww = d + 1, h - 2 * d, w - 2 * d
    # index of (window pixel, offset (0, 0)) in the table; + dy * 2d + dx picks the offset
    k = torch.arange(wh * ww, device=device).view(wh, ww)
    base = k * (4 * d * d) + (d * 2 * d + d)
    links = (flat + hw).expand(n, hw).clone()  # unvisited pixels keep their own value
    links_window = links.view(n, h, w)[:, top : top + wh, top : top + ww]
    flat_links = links.view(-1)
    total = None
    for r in range(iterations):
        off = offsets[:, r, :, top : top + wh, top : top + ww]
        if offsets.dtype == torch.int8 and 2 * d * d + d < 128:
            code = off[:, 0] * (2 * d) + off[:, 1]  # exact in int8
            index = base + code
        else:
            index = torch.add(base, off[:, 0], alpha=2 * d)
            index += off[:, 1]
        links_window.copy_(table.take(index))
        if not follows:
            src = links - hw
            total = src if total is None else total.gather(1, src)
            continue
        # pointer jumping over the links still to follow: each jump replaces a link by its target's
        active = (links.view(-1) < hw).nonzero().squeeze(1)
        image_start = active - active % hw
        while active.numel():
            jumped = flat_links.take(image_start + flat_links.take(active))
            flat_links.scatter_(0, active, jumped)
            more = jumped < hw
            active, image_start = active[more], image_start[more]
        src = links - hw
        total = src if total is None else total.gather(1, src)
    return total


def glass_blur(
    images: torch.Tensor,
    sigma: float,
    max_delta: int,
    iterations: int,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Gaussian blur, local pixel shuffling, Gaussian blur again (ImageNet-C ``glass_blur``).

    As the originals: blur with ``sigma``, truncate to 8 bits, run ``iterations`` rounds of the
    shuffle in :func:`glass_shuffle_index` (offsets uniform in ``[-max_delta, max_delta - 1]``),
    blur again. The shuffle reproduces the originals' sequential loop exactly for given offsets,
    including its copy-not-swap behaviour on colour arrays, but vectorised; the offsets come from
    each image's torch generator instead of NumPy's global RNG. A grey 2-D array in
    imagecorruptions gets real swaps; here every image follows the colour (benchmark) behaviour.
    """
    n, c, h, w = images.shape
    x = K.gaussian_filter(images, sigma)
    x = torch.floor(x * 255) / 255  # np.uint8(... * 255) truncates
    if int(max_delta) > 0 and n:
        # int8 draws: the same numbers as glass_offsets' int64 ones at an eighth of the memory
        offsets = images.new_empty((n, iterations, 2, h, w), dtype=torch.int8)
        offsets = _glass_offsets_into(offsets, max_delta, generators)
    else:
        offsets = glass_offsets(n, h, w, max_delta, iterations, generators, images.device)
    src = glass_shuffle_index(offsets, max_delta)
    x = x.reshape(n, c, h * w).gather(2, src[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)
    return K.gaussian_filter(x, sigma)


def motion_blur(
    images: torch.Tensor,
    radius: float,
    sigma: float,
    generators: Sequence[torch.Generator],
    angle_range: tuple[float, float] = (-45.0, 45.0),
    stop_at_border: bool = False,
) -> torch.Tensor:
    """Motion blur along a random angle per image, ``U(*angle_range)`` from the image's generator.

    See :func:`motion_blur_kernel_apply` for the kernel and ``stop_at_border``.
    """
    angles = _uniform(generators, *angle_range, device=images.device)
    return motion_blur_kernel_apply(images, radius, sigma, angles, stop_at_border=stop_at_border)


def zoom_factors(end: float, step: float) -> list[float]:
    """``np.arange(1, end, step)``, bit for bit.

    NumPy fills ``start + i * ((start + step) - start)``; the last bits matter, because scipy's
    zoom rounds ``crop * z`` half to even (``26 * 1.25`` vs ``26 * 1.2500000000000002``).
    """
    delta = (1.0 + step) - 1.0
    return [1.0 + i * delta for i in range(math.ceil((end - 1.0) / step))]


def zoom_blur(images: torch.Tensor, factors: Sequence[float], centre: bool = True) -> torch.Tensor:
    """Average of the image and its zooms by each factor (``clipped_zoom`` of ``make_*_c.py``).

    For each factor z a centred crop of ``ceil(size / z)`` pixels per axis is zoomed with
    ``scipy.ndimage.zoom(order=1)`` (linear, corner-aligned, output ``round(crop * z)``) and cut
    back to the image size: centred (``make_cifar_c.py``, ``centre=True``) or from the top-left
    corner (imagecorruptions, ``centre=False``). The result is ``(x + sum of zooms) / (len + 1)``.
    The zoom is applied as two small interpolation matrices, restricted to the kept rows/columns.
    """
    n, c, h, w = images.shape
    out = images.clone()
    last_sizes, zoomed = None, images
    for z in factors:
        ch, cw = K.ceil_div_zoom(h, z), K.ceil_div_zoom(w, z)
        zh, zw = K.scipy_zoom_size(ch, z), K.scipy_zoom_size(cw, z)
        # The zoom depends on the factor only through these sizes, and neighbouring factors often
        # share them (at 32 px about every other one): the same zoom is added again, not redone.
        # A zoom to the same size is the identity (z = 1 and just above): the image itself.
        if (ch, cw, zh, zw) != last_sizes:
            last_sizes = (ch, cw, zh, zw)
            if (ch, zh, cw, zw) == (h, h, w, w):
                zoomed = images
            else:
                top, left = (h - ch) // 2, (w - cw) // 2
                trim_h, trim_w = ((zh - h) // 2, (zw - w) // 2) if centre else (0, 0)
                rows = K.linear_zoom_matrix(ch, zh, images.device)[trim_h : trim_h + h]
                cols = K.linear_zoom_matrix(cw, zw, images.device)[trim_w : trim_w + w]
                zoomed = K.resample(images[..., top : top + ch, left : left + cw], rows, cols)
        out += zoomed
    return out.div_(len(factors) + 1)


# --------------------------------------------------------------------------- corruptions


@register_corruption
class GaussianBlur(Corruption):
    """Gaussian blur with sigma ``c`` (``skimage.filters.gaussian``, nearest borders, truncate 4)."""

    name = "gaussian_blur"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return gaussian_blur(images, float(self.params))


@register_corruption
class DefocusBlur(Corruption):
    """Defocus: correlation with an anti-aliased disk, params ``(radius, alias_blur)``."""

    name = "defocus_blur"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        radius, alias_blur = self.params
        return defocus_blur(images, radius, alias_blur)


@register_corruption
class GlassBlur(Corruption):
    """Glass blur, params ``(sigma, max_delta, iterations)``; see :func:`glass_blur`."""

    name = "glass_blur"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        sigma, max_delta, iterations = self.params
        return glass_blur(images, sigma, int(max_delta), int(iterations), generators or [])


@register_corruption
class MotionBlur(Corruption):
    """Motion blur, params ``(radius, sigma)``, angle ~ U(-45°, 45°) per image.

    ``cifar`` follows CIFAR-10-C's ImageMagick ``-motion-blur``; ``imagenet`` follows
    imagecorruptions' NumPy port, which also stops at taps that leave the image.
    """

    name = "motion_blur"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        radius, sigma = self.params
        return motion_blur(images, radius, sigma, generators or [], stop_at_border=self.profile == "imagenet")


@register_corruption
class ZoomBlur(Corruption):
    """Zoom blur, params ``(end, step)``: zoom factors ``arange(1, end, step)``.

    ``cifar`` cuts each zoom back to size around the centre (``make_cifar_c.py``), ``imagenet``
    from the top-left corner (imagecorruptions 1.1.2's ``clipped_zoom``).
    """

    name = "zoom_blur"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        end, step = self.params
        return zoom_blur(images, zoom_factors(end, step), centre=self.profile == "cifar")
