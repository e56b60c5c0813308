"""Pure tensor kernels shared by the corruptions: no randomness, no state, any device.

Colour conversions (RGB <-> HSV as scikit-image), border padding with SciPy / OpenCV border
modes, Gaussian and disk kernels, separable and 2-D correlation, and resampling matrices that
reproduce PIL's ``BOX`` / ``NEAREST`` resize and SciPy's linear ``zoom``. Images are float NCHW.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

#: Border modes by SciPy name; OpenCV's BORDER_REFLECT_101 is SciPy's ``mirror``, BORDER_REPLICATE
#: is ``nearest``, BORDER_REFLECT is ``reflect``.
PAD_MODES = ("nearest", "reflect", "mirror", "wrap")


# --------------------------------------------------------------------------- colour


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV with every channel in [0, 1], as ``skimage.color.rgb2hsv``.

    Grey pixels (max == min) get hue 0 and saturation 0; black pixels saturation 0.
    """
    r, g, b = images.unbind(dim=1)
    v, _ = images.max(dim=1)
    delta = v - images.min(dim=1).values
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    s = torch.where(v == 0, torch.zeros_like(v), delta / torch.where(v == 0, torch.ones_like(v), v))
    # skimage assigns r, then g, then b wherever each equals the max: later channels win ties.
    h = torch.where(r == v, (g - b) / safe_delta, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / safe_delta, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe_delta, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(grey, torch.zeros_like(h), h)
    return torch.stack((h, s, v), dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB, the inverse of :func:`rgb_to_hsv` (as ``skimage.color.hsv2rgb``)."""
    h, s, v = images.unbind(dim=1)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = torch.remainder(sector, 6).long()
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    # Rows: sector 0..5; columns: which of (v, t, p, q) feeds r, g, b.
    choices = torch.stack((v, t, p, q), dim=1)  # N,4,H,W
    table = torch.tensor(
        [[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]], device=images.device
    )
    pick = table[sector].permute(0, 3, 1, 2)  # N,3,H,W indices into choices
    return torch.gather(choices, 1, pick)


# --------------------------------------------------------------------------- padding / filtering


def pad_index(
    size: int, before: int, after: int, mode: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Source indices for a line of ``size`` samples padded by ``before`` / ``after``.

    ``mode`` follows SciPy's ndimage names: ``nearest`` (aaa|abcd|ddd), ``reflect``
    (cba|abcd|dcb), ``mirror`` (dcb|abcd|cba, OpenCV's default BORDER_REFLECT_101) and
    ``wrap``. Pads longer than the line repeat the extension, as SciPy does.
    """
    i = torch.arange(-before, size + after, device=device)
    if mode == "nearest":
        return i.clamp(0, size - 1)
    if mode == "wrap":
        return torch.remainder(i, size)
    if mode == "reflect":
        j = torch.remainder(i, 2 * size)
        return torch.where(j >= size, 2 * size - 1 - j, j)
    if mode == "mirror":
        if size == 1:
            return torch.zeros_like(i)
        period = 2 * size - 2
        j = torch.remainder(i, period)
        return torch.where(j >= size, period - j, j)
    raise ValueError(f"unknown border mode '{mode}'; valid modes: {', '.join(PAD_MODES)}")


def pad2d(images: torch.Tensor, pad_h: tuple[int, int], pad_w: tuple[int, int], mode: str) -> torch.Tensor:
    """Pad the last two dims with a SciPy border ``mode`` (see :func:`pad_index`)."""
    h, w = images.shape[-2:]
    native = {"nearest": "replicate", "mirror": "reflect"}.get(mode)
    if native and images.ndim == 4 and max(pad_h) < h and max(pad_w) < w:
        # torch's own padding is several times faster than a gather; same values
        return F.pad(images, (*pad_w, *pad_h), mode=native)
    rows = pad_index(h, *pad_h, mode, device=images.device)
    cols = pad_index(w, *pad_w, mode, device=images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def correlate2d(images: torch.Tensor, kernel: torch.Tensor, mode: str = "mirror") -> torch.Tensor:
    """Correlate every channel with one 2-D ``kernel`` (kh, kw), output the input's size.

    The anchor is the kernel centre (``kh // 2``, ``kw // 2``), as ``cv2.filter2D`` and SciPy's
    ``correlate`` for odd sizes.
    """
    n, c, h, w = images.shape
    kh, kw = kernel.shape
    x = pad2d(images, (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), mode)
    # one depthwise convolution over all N*C planes: an order of magnitude faster on CPU than a
    # 1-channel convolution over a batch of N*C
    weight = kernel.to(images)[None, None].expand(n * c, 1, kh, kw)
    out = F.conv2d(x.reshape(1, n * c, *x.shape[-2:]), weight, groups=n * c) if n * c else x[..., :h, :w]
    return out.reshape(n, c, h, w)


def filter_matrix(
    size: int, kernel: torch.Tensor, mode: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(size, size) matrix of 1-D correlation with an odd ``kernel`` under border ``mode`` (float64).

    Row i holds the kernel taps at the source indices :func:`pad_index` gives for ``i - r .. i + r``,
    so the border handling is folded into the matrix and filtering is one matrix product.
    """
    k = kernel.to(torch.float64).reshape(-1)
    r = k.numel() // 2
    idx = pad_index(size, r, r, mode)
    cols = idx[torch.arange(size)[:, None] + torch.arange(k.numel())[None, :]]
    m = torch.zeros(size, size, dtype=torch.float64)
    m.scatter_add_(1, cols, k[None, :].expand(size, -1).contiguous())
    return m.to(device)


def correlate_separable(
    images: torch.Tensor, kernel_h: torch.Tensor, kernel_w: torch.Tensor, mode: str = "nearest"
) -> torch.Tensor:
    """Correlate along H with ``kernel_h`` and along W with ``kernel_w`` (odd 1-D kernels).

    Done as ``Mh @ x @ Mw.T`` with :func:`filter_matrix`: batched matrix products are far faster
    on CPU than small-kernel convolutions at these image sizes, and borders come for free.
    """
    h, w = images.shape[-2:]
    return resample(
        images,
        filter_matrix(h, kernel_h, mode, images.device),
        filter_matrix(w, kernel_w, mode, images.device),
    )


def gaussian_kernel1d(
    sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Normalised Gaussian taps, radius ``int(truncate * sigma + 0.5)`` as ``scipy.ndimage``."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    if sigma <= 0:
        return (x == 0).to(dtype)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_filter(
    images: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """Isotropic Gaussian over H and W, as ``skimage.filters.gaussian`` (default mode ``nearest``)."""
    k = gaussian_kernel1d(sigma, truncate)
    if k.numel() == 1:
        return images.clone()
    return correlate_separable(images, k, k, mode)


def cv2_gaussian_kernel1d(ksize: int, sigma: float) -> torch.Tensor:
    """``cv2.getGaussianKernel(ksize, sigma)`` for ``sigma > 0`` (float64)."""
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(x**2) / (2 * float(sigma) ** 2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The anti-aliased defocus disk of ``make_imagenet_c.py`` / ``make_cifar_c.py`` (float64).

    An aliased disk on the grid ``arange(-8, 9)`` (``arange(-r, r + 1)`` above radius 8),
    normalised to sum 1, then ``cv2.GaussianBlur`` with ksize 3 (5 above radius 8), sigma
    ``alias_blur`` and OpenCV's default border (reflect-101).
    """
    if radius <= 8:
        grid, ksize = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        # np.arange(-r, r + 1) on a float radius
        grid, ksize = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    g = cv2_gaussian_kernel1d(ksize, alias_blur)
    return correlate_separable(disk[None, None], g, g, mode="mirror")[0, 0]


# --------------------------------------------------------------------------- resampling


def pil_resample_matrix(
    in_size: int, out_size: int, filter: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(out, in) weights of PIL's ``resize`` along one axis for ``BOX`` or ``NEAREST``.

    ``BOX`` follows Pillow's ``precompute_coeffs``: output pixel ``i`` averages, with equal
    weights, the input pixels whose centres fall in ``((i + .5) s - s'/2, (i + .5) s + s'/2]``
    where ``s = in / out`` and ``s' = max(s, 1)`` (upscaling picks one pixel). ``NEAREST`` picks
    ``floor((i + .5) s)``, computed as Pillow's running sum. Pillow works on uint8, rounding after
    each axis; this is the exact real-valued version.
    """
    scale = in_size / out_size
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    if filter == "nearest":
        # Pillow (ImagingScaleAffine) steps xo += scale from scale / 2; the running sum's rounding
        # decides exact-integer ties (e.g. 28 -> 33 px), so it is reproduced term by term.
        steps = itertools.accumulate(itertools.repeat(scale, out_size - 1), initial=scale * 0.5)
        src = torch.tensor([int(v) for v in steps], dtype=torch.long).clamp(0, in_size - 1)
        return F.one_hot(src, in_size).to(torch.float64).to(device)
    if filter != "box":
        raise ValueError(f"unknown PIL filter '{filter}'; valid: box, nearest")
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    xmin = torch.floor(centre - support + 0.5).clamp(min=0)
    xmax = torch.floor(centre + support + 0.5).clamp(max=in_size)
    j = torch.arange(in_size, dtype=torch.float64)
    arg = (j[None, :] + 0.5 - centre[:, None]) / filterscale
    inside = (arg > -0.5) & (arg <= 0.5) & (j[None, :] >= xmin[:, None]) & (j[None, :] < xmax[:, None])
    weights = inside.to(torch.float64)
    return (weights / weights.sum(dim=1, keepdim=True).clamp(min=1)).to(device)


def resample(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply separable resampling matrices: ``rows`` (H', H) and ``cols`` (W', W)."""
    return rows.to(images) @ images @ cols.to(images).T


def linear_zoom_matrix(in_size: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(out, in) weights of ``scipy.ndimage.zoom(order=1)`` along one axis (corners aligned)."""
    if out_size == 1 or in_size == 1:
        pos = torch.zeros(out_size, dtype=torch.float64)
    else:
        pos = torch.arange(out_size, dtype=torch.float64) * ((in_size - 1) / (out_size - 1))
    lo = torch.floor(pos).long().clamp(0, in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = pos - lo
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    m.scatter_add_(1, lo[:, None], (1 - frac)[:, None])
    m.scatter_add_(1, hi[:, None], frac[:, None])
    return m.to(device)


def scipy_zoom_size(size: int, factor: float) -> int:
    """Output length of ``scipy.ndimage.zoom``: Python's ``round`` (half to even)."""
    return int(round(size * factor))


def ceil_div_zoom(size: int, factor: float) -> int:
    """Crop length of ``clipped_zoom``: ``ceil(size / factor)``."""
    return int(math.ceil(size / float(factor)))
