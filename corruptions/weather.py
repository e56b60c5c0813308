"""Weather corruptions: fog, frost, snow and spatter (ImageNet-C / CIFAR-10-C).

Each comes in three layers (see :mod:`corruptions.base`): a registered class mapping (profile,
severity) to parameters, a functional that draws every image's random numbers from that image's
generator, and pure kernels that take those draws. Everything is batched over images; the only
Python loops are over generators (one draw per image), diamond-square levels, filter taps, and
in spatter the rounds of edge hysteresis and the rows of the distance transform's raster passes.

The originals are ``make_cifar_c.py`` (``cifar`` profile) and imagecorruptions 1.1.2
(``imagenet``); where they differ the difference is named at the functional. Spatter's OpenCV
steps (Canny, distance transform, histogram equalisation, 3x3 mean) are in :mod:`corruptions._opencv`.
"""

from __future__ import annotations

import functools

import torch

from corruptions import _kernels as K
from corruptions._opencv import box3, canny, chamfer_distance, equalize_hist, taps3
from corruptions.base import Corruption, register_corruption, to_gray
from corruptions.blur import motion_blur_kernel_apply
from corruptions.geometric import gaussian_smooth
from corruptions.textures import FROST_USED, frost_textures, frost_unavailable
from robustbench_lite.seeding import normal_rows, uniform_rows

__all__ = [
    "Fog", "Frost", "Snow", "Spatter",
    "fog", "fog_kernel", "frost", "frost_kernel",
    "plasma_draws", "plasma_fractal", "snow", "snow_flakes", "snow_kernel", "spatter", "spatter_kernel",
    "stack_textures", "water_mask",
]


def _next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


# --------------------------------------------------------------------------- fog


def plasma_draws(mapsize: int) -> int:
    """Random numbers one plasma map of side ``mapsize`` consumes: 3 k² per level, k = 1, 2, 4..."""
    return mapsize * mapsize - 1


def plasma_fractal(uniforms: torch.Tensor, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """Diamond-square height maps, batched; ``plasma_fractal`` of ``make_*_c.py``.

    The steps are the original's (squares, then the two diamond sets, with ``np.roll``
    wrap-around), vectorised over the batch. The original's ``wibble * uniform(-wibble, wibble)``
    is ``wibble² (2u - 1)`` with ``u`` consumed from ``uniforms`` in its order: per level the
    squares, then the left-top and the top-left diamonds, each in row-major order.

    Args:
        uniforms: (N, :func:`plasma_draws`) values in [0, 1).
        mapsize: side, a power of two.
        wibbledecay: divisor of the noise amplitude per level (larger: smoother).

    Returns:
        (N, mapsize, mapsize) maps normalised to [0, 1] per image.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"plasma mapsize must be a power of two >= 2, got {mapsize}")
    n = uniforms.shape[0]
    maparray = uniforms.new_zeros(n, mapsize, mapsize)
    step, wibble, pos = mapsize, 100.0, 0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        nonlocal pos
        k = total.shape[1] * total.shape[2]
        u = uniforms[:, pos: pos + k].reshape(total.shape)
        pos += k
        return total / 4 + wibble * wibble * (2 * u - 1)

    while step >= 2:
        half = step // 2
        corners = maparray[:, ::step, ::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maparray[:, half::step, half::step] = wibbled_mean(squares)
        centres = maparray[:, half::step, half::step]
        corners = maparray[:, ::step, ::step]
        maparray[:, ::step, half::step] = wibbled_mean(
            centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        )
        maparray[:, half::step, ::step] = wibbled_mean(
            centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        )
        step //= 2
        wibble /= wibbledecay
    low = maparray.amin(dim=(1, 2), keepdim=True)
    maparray = maparray - low
    return maparray / maparray.amax(dim=(1, 2), keepdim=True)


def fog_kernel(images: torch.Tensor, plasma: torch.Tensor, strength: float) -> torch.Tensor:
    """``(x + strength * plasma) * max / (max + strength)``, max over each whole image.

    Args:
        images: (N, C, H, W) in [0, 1].
        plasma: (N, >= H, >= W) maps in [0, 1]; the top-left (H, W) corner is used.
        strength: fog strength ``c[0]``.
    """
    h, w = images.shape[-2:]
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    out = (images + strength * plasma[:, None, :h, :w].to(images)) * (peak / (peak + strength))
    return out.clamp(0, 1)


def fog(
    images: torch.Tensor,
    strength: float,
    wibbledecay: float,
    generators: list[torch.Generator],
    mapsize: int | None = None,
) -> torch.Tensor:
    """Fog: add a plasma fractal (one per image) and rescale to the image's maximum.

    Args:
        images: (N, C, H, W) in [0, 1].
        strength: ``c[0]``.
        wibbledecay: ``c[1]``.
        generators: one per image; each draws :func:`plasma_draws` uniforms.
        mapsize: plasma side; default the next power of two >= the longer image side
            (imagecorruptions). ``make_cifar_c.py`` uses 32 for 32 px images.

    Example:
        >>> gens = [torch.Generator().manual_seed(i) for i in range(2)]
        >>> out = fog(torch.rand(2, 3, 32, 32), 0.75, 2.5, gens, mapsize=32)
    """
    h, w = images.shape[-2:]
    mapsize = mapsize or _next_power_of_2(max(h, w))
    if mapsize < max(h, w):
        raise ValueError(f"plasma mapsize {mapsize} is smaller than the image ({h}x{w})")
    uniforms = uniform_rows(generators, (plasma_draws(mapsize),), images.device)
    plasma = plasma_fractal(uniforms, mapsize, wibbledecay)
    return fog_kernel(images, plasma, strength)


@register_corruption
class Fog(Corruption):
    """Fog, params ``(strength, wibbledecay)``.

    ``cifar``: plasma map of side 32 as CIFAR-10-C (larger images up to 64 px get the next power of
    two, which the original could not handle); ``imagenet``: next power of two >= the image side.
    """

    name = "fog"
    random = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        strength, decay = self.params
        side = _next_power_of_2(max(images.shape[-2:]))
        mapsize = max(32, side) if self.profile == "cifar" else side
        return fog(images, strength, decay, generators or [], mapsize=mapsize)


# --------------------------------------------------------------------------- frost


def frost_kernel(
    images: torch.Tensor,
    textures: torch.Tensor,
    choice: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    image_weight: float,
    frost_weight: float,
) -> torch.Tensor:
    """``image_weight * x + frost_weight * crop``: crop ``choice[i]`` of ``textures`` at (top, left).

    Args:
        images: (N, 3, H, W) in [0, 1].
        textures: (T, H', W', 3) uint8 textures (smaller ones zero-padded), see :func:`stack_textures`.
        choice: (N,) texture index per image.
        top: (N,) crop row per image.
        left: (N,) crop column per image.
    """
    n, _, h, w = images.shape
    dev = images.device
    _, th, tw, _ = textures.shape
    # flat (texture, row, column) index of every crop pixel; one row of 3 channels each
    corner = choice.to(dev) * (th * tw) + top.to(dev) * tw + left.to(dev)
    pixels = corner[:, None, None] + (torch.arange(h, device=dev)[:, None] * tw + torch.arange(w, device=dev))
    crops = textures.to(dev).reshape(-1, 3).index_select(0, pixels.reshape(-1)).view(n, h, w, 3)
    out = torch.empty((n, 3, h, w), device=dev, dtype=images.dtype)
    out.copy_(crops.permute(0, 3, 1, 2))
    if images.shape[1] == 3 and images.stride(1) == 0:  # a grey image broadcast to RGB
        images = images[:, :1]
    # image_weight * x + frost_weight * (crop / 255), in place in one buffer
    return out.div_(255).mul_(frost_weight).add_(image_weight * images).clamp_(0, 1)


def stack_textures(textures: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H', W') textures -> one (T, max H', max W', 3) tensor, zero-padded, and (T, 2) sizes."""
    th = max(t.shape[1] for t in textures)
    tw = max(t.shape[2] for t in textures)
    stack = torch.zeros(len(textures), th, tw, 3, dtype=textures[0].dtype)
    for i, tex in enumerate(textures):
        stack[i, : tex.shape[1], : tex.shape[2]] = tex.permute(1, 2, 0)
    return stack, torch.tensor([t.shape[1:] for t in textures])


@functools.lru_cache(maxsize=8)
def _frost_stack(profile: str, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    stack, sizes = stack_textures(frost_textures(profile, h, w))
    return stack.to(device), sizes.to(device)


def frost(
    images: torch.Tensor,
    image_weight: float,
    frost_weight: float,
    generators: list[torch.Generator],
    profile: str = "cifar",
) -> torch.Tensor:
    """Frost: blend each image with a random crop of a random frost texture.

    Per image: texture ``floor(5 u0)``, crop row ``floor(u1 (H' - H))`` and column
    ``floor(u2 (W' - W))`` (``np.random.randint(0, H' - H)`` in the originals). Textures come from
    the imagecorruptions package and are scaled for ``profile`` (see :mod:`corruptions.textures`).

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        image_weight: ``c[0]``.
        frost_weight: ``c[1]``.
        generators: one per image.
        profile: ``cifar`` (textures x0.2) or ``imagenet`` (textures fitted to the image).

    Raises:
        FileNotFoundError: the textures are not installed (see :func:`textures.frost_unavailable`).
    """
    _, _, h, w = images.shape
    stack, sizes = _frost_stack(profile, h, w, images.device)
    u = uniform_rows(generators, (3,), images.device).double()
    choice = (u[:, 0] * FROST_USED).long().clamp(max=FROST_USED - 1)
    room = (sizes[choice] - torch.tensor([h, w], device=images.device)).double()
    top = (u[:, 1] * room[:, 0]).long()
    left = (u[:, 2] * room[:, 1]).long()
    return frost_kernel(images, stack, choice, top, left, image_weight, frost_weight)


@register_corruption
class Frost(Corruption):
    """Frost, params ``(image weight, frost weight)``; textures from imagecorruptions.

    Grey images are corrupted in RGB and converted back with ITU-R 601 weights (imagecorruptions
    instead greys the BGR crop with RGB weights, a bug).
    """

    name = "frost"
    random = True
    needs_rgb = True

    @classmethod
    def availability(cls) -> str | None:
        return frost_unavailable()

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        image_weight, frost_weight = self.params
        return frost(images, image_weight, frost_weight, generators or [], profile=self.profile)


# --------------------------------------------------------------------------- snow


def _clipped_zoom(layer: torch.Tensor, factor: float, trim: bool) -> torch.Tensor:
    """``clipped_zoom``: zoom the centre crop ``ceil(side / factor)`` with ``scipy.ndimage.zoom``
    (linear); ``trim`` cuts the result back to size around the centre (``make_cifar_c.py``),
    otherwise it is returned whole, ``round(crop * factor)`` per side (imagecorruptions)."""
    h, w = layer.shape[-2:]
    ch, cw = K.ceil_div_zoom(h, factor), K.ceil_div_zoom(w, factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zh, zw = K.scipy_zoom_size(ch, factor), K.scipy_zoom_size(cw, factor)
    rows = K.linear_zoom_matrix(ch, zh, layer.device)
    cols = K.linear_zoom_matrix(cw, zw, layer.device)
    if trim:
        rows = rows[(zh - h) // 2: (zh - h) // 2 + h]
        cols = cols[(zw - w) // 2: (zw - w) // 2 + w]
    return K.resample(layer[..., top: top + ch, left: left + cw], rows, cols)


def snow_kernel(images: torch.Tensor, flakes: torch.Tensor, blend: float) -> torch.Tensor:
    """Whiten the image towards its brightened grey, then add the flakes and their 180° rotation.

    ``x' = blend x + (1 - blend) max(x, 1.5 grey(x) + 0.5)``; output ``x' + f + rot180(f)``.

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        flakes: (N, 1, H, W) snow layer in [0, 1].
        blend: ``c[6]``.
    """
    grey = images.shape[1] == 3 and images.stride(1) == 0  # one plane broadcast to RGB
    plane = images[:, :1] if grey else images
    whitened = torch.maximum(plane, to_gray(images) * 1.5 + 0.5)
    x = blend * plane + (1 - blend) * whitened
    out = (x + flakes + flakes.rot90(2, dims=(2, 3))).clamp_(0, 1)
    # a grey image's three channels are equal: computed once, returned as RGB
    return out.expand_as(images).contiguous() if grey else out


def snow_flakes(
    layer: torch.Tensor,
    angles: torch.Tensor,
    zoom: float,
    threshold: float,
    radius: float,
    sigma: float,
    profile: str = "cifar",
) -> torch.Tensor:
    """The snow layer from its noise: zoom, threshold, motion blur, 8-bit rounding.

    The layer is zoomed (:func:`_clipped_zoom`), zeroed below ``threshold``, clipped to [0, 1]
    and motion blurred with :func:`corruptions.blur.motion_blur_kernel_apply`:

    - ``cifar``: as CIFAR-10-C's 8-bit PNG round trip through ImageMagick, the layer is truncated
      to 8 bits before the blur and rounded to 8 bits after it.
    - ``imagenet``: imagecorruptions' NumPy port: the zoom is not trimmed, the blur runs on the
      larger layer and stops at taps that leave it, the result is rounded to 8 bits and its
      top-left (H, W) corner kept.

    Args:
        layer: (N, 1, H, W) normal(loc, scale) noise.
        angles: (N,) blur angles in degrees.
        zoom, threshold, radius, sigma: ``c[2]`` .. ``c[5]``.
        profile: ``cifar`` or ``imagenet`` (see above).

    Returns:
        (N, 1, H, W) flakes in [0, 1].
    """
    h, w = layer.shape[-2:]
    cifar = profile == "cifar"
    layer = _clipped_zoom(layer, zoom, trim=cifar)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    if cifar:
        layer = torch.floor(layer * 255) / 255
    layer = motion_blur_kernel_apply(layer, radius, sigma, angles, stop_at_border=not cifar)
    return (torch.round(layer * 255) / 255)[..., :h, :w]


def snow(
    images: torch.Tensor,
    params: tuple[float, float, float, float, float, float, float],
    generators: list[torch.Generator],
    profile: str = "cifar",
) -> torch.Tensor:
    """Snow: a thresholded, zoomed, motion-blurred noise layer added twice, over a whitened image.

    Per image: a normal(loc, scale) layer of shape (H, W), then the blur angle U(-135°, -45°);
    see :func:`snow_flakes` and :func:`snow_kernel`.

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        params: ``(loc, scale, zoom, threshold, blur radius, blur sigma, blend)``.
        generators: one per image.
        profile: ``cifar`` (CIFAR-10-C) or ``imagenet`` (imagecorruptions).
    """
    loc, scale, zoom, threshold, radius, sigma, blend = params
    n, _, h, w = images.shape
    layer = (loc + scale * normal_rows(generators, (h * w,), images.device)).reshape(n, 1, h, w).to(images)
    angles = -135 + 90 * uniform_rows(generators, (1,), images.device)[:, 0]
    flakes = snow_flakes(layer, angles, zoom, threshold, radius, sigma, profile)
    return snow_kernel(images, flakes, blend)


@register_corruption
class Snow(Corruption):
    """Snow, params ``(loc, scale, zoom, threshold, blur radius, blur sigma, blend)``."""

    name = "snow"
    random = True
    needs_rgb = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return snow(images, self.params, generators or [], profile=self.profile)


# --------------------------------------------------------------------------- spatter


#: The emboss kernel of the originals' water mode, ``[dy + 1][dx + 1]``.
_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))


def water_mask(liquid: torch.Tensor) -> torch.Tensor:
    """The water shading of spatter mode 0 from an 8-bit liquid layer, as the originals compute it:

    ``dist = distanceTransform(255 - Canny(liquid, 50, 150))`` truncated at 20, 3x3 mean cast to
    uint8 (truncation), ``equalizeHist``, an emboss ``filter2D`` saturated to 8 bits, a 3x3 mean
    rounded to 8 bits; returns ``liquid * dist`` (not yet normalised). Each step follows OpenCV's
    arithmetic, and the tests hold the result equal to OpenCV's on the same layer.

    Args:
        liquid: (N, H, W) with integer values 0..255.
    """
    dist = chamfer_distance(canny(liquid, 50, 150), 20.0)
    dist = equalize_hist(torch.floor(box3(dist)))
    t = taps3(dist, "mirror")
    dist = sum(k * t[i][j] for i, row in enumerate(_EMBOSS) for j, k in enumerate(row) if k).clamp(0, 255)
    dist = torch.round(box3(dist)).clamp(0, 255)
    return liquid * dist.to(liquid.dtype)


_WATER = (175 / 255, 238 / 255, 238 / 255)
_MUD = (63 / 255, 42 / 255, 20 / 255)


def spatter_kernel(
    images: torch.Tensor, layer: torch.Tensor, sigma: float, threshold: float, c4: float, mud: bool
) -> torch.Tensor:
    """Spatter from its noise layer.

    The layer is smoothed with ``gaussian(sigma)`` (nearest borders, truncate 4, as
    ``skimage.filters.gaussian``) and zeroed below ``threshold``: the liquid. Then

    - water (``mud=False``): ``x + c4 * m / max(m) * pale turquoise`` with ``m`` from
      :func:`water_mask` on the liquid cast to 8 bits as NumPy's ``astype(np.uint8)`` does
      (truncating, wrapping around above 1); an all-dry layer adds nothing (the original
      divides by zero there);
    - mud (``mud=True``): ``m = gaussian(liquid > threshold, sigma=c4)``, zeroed below 0.8;
      ``x (1 - m) + m * mud brown``.

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        layer: (N, H, W) normal(loc, scale) noise (smoothed in float64).
        sigma: ``c[2]``.
        threshold: ``c[3]``.
        c4: ``c[4]``: the shading strength (water) or the mask's Gaussian sigma (mud).
        mud: mode ``c[5] == 1``.
    """
    # float64 as the originals' NumPy layer: the 8-bit cast below turns ulps into whole levels
    liquid = gaussian_smooth(layer[:, None].double(), sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mud:
        m = gaussian_smooth((liquid > threshold).to(images), c4)
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = torch.tensor(_MUD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * (1 - m) + colour * m).clamp(0, 1)
    # (liquid * 255).astype(np.uint8) truncates, and on x86 wraps liquid above 1 around modulo 256:
    # a bright drop centre turns dark in the original's mask, kept here for fidelity.
    m = water_mask(torch.remainder(torch.floor(liquid[:, 0] * 255), 256).to(images))[:, None]
    peak = m.amax(dim=(2, 3), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp(min=1e-12), torch.zeros_like(m)) * c4
    colour = torch.tensor(_WATER, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images + m * colour).clamp(0, 1)


def spatter(
    images: torch.Tensor,
    params: tuple[float, float, float, float, float, int],
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Spatter: water drops (mode 0) or mud splashes (mode 1); one normal(loc, scale) layer of
    shape (H, W) per image, see :func:`spatter_kernel`.

    Both originals share this code (the ``imagenet`` constants differ). The water mode's OpenCV
    calls (Canny, distance transform, blur, histogram equalisation, filter2D) are re-implemented
    in torch from OpenCV's definitions, including its 8-bit casts; the tests hold them equal to
    OpenCV on the same layers. One deliberate difference: an all-dry layer gives the image back
    (the original divides by zero and returns NaN).

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        params: ``(loc, scale, sigma, threshold, c4, mode)``.
        generators: one per image.
    """
    loc, scale, sigma, threshold, c4, mode = params
    n, _, h, w = images.shape
    layer = (loc + scale * normal_rows(generators, (h * w,), images.device)).reshape(n, h, w)
    return spatter_kernel(images, layer, sigma, threshold, c4, mud=int(mode) == 1)


@register_corruption
class Spatter(Corruption):
    """Spatter, params ``(loc, scale, sigma, threshold, c4, mode)``: mode 0 water, 1 mud."""

    name = "spatter"
    random = True
    needs_rgb = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return spatter(images, self.params, generators or [])
