"""Digital corruptions: contrast, brightness, saturate, JPEG compression and pixelate.

(``elastic_transform``, also in the digital family, lives in :mod:`corruptions.geometric`.)
"""

from __future__ import annotations

import warnings

import torch

from corruptions import _kernels as K
from corruptions.base import Corruption, register_corruption


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """``(x - mean) * factor + mean`` with the mean over H and W of each image and channel.

    ``make_*_c.py`` take ``np.mean(x, axis=(0, 1))`` of an HWC array, i.e. one mean per channel.
    """
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def _grey(images: torch.Tensor) -> bool:
    """Whether the three channels are one plane broadcast (a grey image ``expand``-ed to RGB, as
    ``Corruption.__call__`` passes grey images): then the work is done once, on that plane."""
    return images.shape[1] == 3 and images.stride(1) == 0


def brightness(images: torch.Tensor, delta: float) -> torch.Tensor:
    """Add ``delta`` to the HSV value channel, clipped to [0, 1] (RGB images).

    Computed without the HSV round trip: hue and saturation are kept, so every channel
    ``c = V (1 - k S)`` (``k`` from the hue) scales with ``V``: ``c' = c V' / V``. A black pixel
    (``V = 0``, hue and saturation 0) becomes grey ``V'``. Equal to skimage's ``rgb2hsv`` /
    ``hsv2rgb`` path up to float rounding (~1e-7); grey images (the three channels one
    broadcast plane) give ``clip(x + delta)`` exactly, as that path does.
    """
    if _grey(images):
        return (images[:, :1] + delta).clamp_(0, 1).expand_as(images).contiguous()
    v = images.amax(dim=1, keepdim=True)
    v_new = (v + delta).clamp_(0, 1)
    scale = v_new / v
    return torch.where(v > 0, images * scale, v_new)


def saturate(images: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """HSV saturation ``S * scale + shift``, clipped to [0, 1] (RGB images).

    Computed without the HSV round trip: with hue and value kept, each channel
    ``c = V (1 - k S)`` moves away from ``V`` in proportion to the saturation:
    ``c' = V - (V - c) S' / S``. Pixels with ``S = 0`` have hue 0 (red), as skimage:
    ``(V, V (1 - S'), V (1 - S'))``. Equal to the HSV path up to float rounding (~1e-7).
    """
    if _grey(images):
        # S = 0 everywhere: S' = clip(shift), the float32 value the HSV path computes
        keep = float(1 - torch.tensor(float(shift), dtype=images.dtype).clamp(0, 1))
        v = images[:, :1]
        out = images.new_empty(images.shape)
        out[:, :1] = v
        torch.mul(v, keep, out=out[:, 1:2])
        out[:, 2:] = out[:, 1:2]
        return out
    v = images.amax(dim=1, keepdim=True)
    delta = v - images.amin(dim=1, keepdim=True)
    s = delta / torch.where(v == 0, 1.0, v)
    s_new = (s * scale + shift).clamp_(0, 1)
    ratio = s_new / torch.where(delta == 0, 1.0, s)
    out = v - (v - images) * ratio
    # S = 0 (grey or black): hue 0, so red = V and green = blue = V (1 - S')
    grey = v * (1 - s_new)
    red = torch.cat((v, grey, grey), dim=1)
    return torch.where(delta == 0, red, out)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 by rounding (the 8-bit image a PIL pipeline would hold)."""
    return (images.clamp(0, 1) * 255).round_().to(torch.uint8)


#: JPEG's largest side is 65535 px; mosaics stay within whole 8-px blocks below it.
_JPEG_MAX_SIDE = 65528
#: Width of a grey mosaic row, in px (about 1 MB per 32-px row of images is plenty for libjpeg).
_MOSAIC_WIDTH = 4096


def _jpeg_round_trip(images: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
    """Encode each (C, H, W) uint8 image to JPEG at ``quality`` and decode it: torchvision's batched
    libjpeg codecs where this torchvision has them, else :func:`_jpeg_round_trip_pil` (the same
    libjpeg with the same settings: the same pixels, checked by the tests), so the corruption keeps
    its numbers when torchvision hands its codecs to TorchCodec."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    except ImportError:
        return _jpeg_round_trip_pil(images, quality)
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every call that its codecs move to TorchCodec; nothing a
        # caller can act on, and it would flood an evaluation's log once per batch.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchCodec")
        return decode_jpeg(encode_jpeg(images, quality=int(quality)), mode=ImageReadMode.UNCHANGED)


def _jpeg_round_trip_pil(images: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
    """The JPEG round trip through PIL (libjpeg, 4:2:0 chroma subsampling for colour, as torchvision)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for image in images:
        array = image.permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality), subsampling="4:2:0" if array.shape[2] == 3 else -1)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            back = np.array(decoded.convert(pil.mode))
        out.append(torch.from_numpy(back[..., None] if back.ndim == 2 else back).permute(2, 0, 1).contiguous())
    return out


def _jpeg_grey_mosaic(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Grey JPEG round trip of (N, 1, H, W) uint8 images, many images per JPEG.

    A grey JPEG codes each 8x8 block on its own (DCT, quantisation, inverse DCT; the DC
    difference and Huffman coding are lossless), and pads a partial block by repeating the
    image's last column and row. So each image, edge-padded to whole blocks, is tiled into a
    mosaic and decoded back: the same pixels as one JPEG per image, without libjpeg's per-image
    set-up (several times faster at 32 px).
    """
    n, _, h, w = images.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    if (hp, wp) != (h, w):
        images = torch.cat((images, images[..., -1:].expand(-1, -1, -1, wp - w)), dim=3)
        images = torch.cat((images, images[..., -1:, :].expand(-1, -1, hp - h, -1)), dim=2)
    per_row = max(1, min(n, _MOSAIC_WIDTH // wp))
    rows = max(1, min(-(-n // per_row), _JPEG_MAX_SIDE // hp))
    chunk = per_row * rows
    mosaics = []
    for start in range(0, n, chunk):
        part = images[start : start + chunk]
        k = part.shape[0]
        r = -(-k // per_row)
        if r * per_row != k:
            part = torch.cat((part, part.new_zeros(r * per_row - k, 1, hp, wp)))
        mosaics.append(part.view(r, per_row, hp, wp).permute(0, 2, 1, 3).reshape(1, r * hp, per_row * wp))
    out = []
    for start, decoded in zip(range(0, n, chunk), _jpeg_round_trip(mosaics, quality), strict=True):
        r = decoded.shape[1] // hp
        tiles = decoded.view(r, hp, per_row, wp).permute(0, 2, 1, 3).reshape(r * per_row, 1, hp, wp)
        out.append(tiles[: min(chunk, n - start), :, :h, :w])
    return torch.cat(out) if len(out) > 1 else out[0]


def jpeg_compression(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode to JPEG at ``quality`` and decode (libjpeg via torchvision, on the CPU).

    Images are rounded to uint8 first, as the originals hold PIL 8-bit images; colour images use
    libjpeg's defaults as PIL does (4:2:0 chroma subsampling, integer DCT), grey images are
    encoded as 1-channel JPEG (tiled into mosaics, which decode to the same pixels as one JPEG
    per image; see :func:`_jpeg_grey_mosaic`).
    """
    if images.shape[0] == 0:
        return images.clone()
    data = to_uint8(images).cpu()
    if data.shape[1] == 1:
        decoded = _jpeg_grey_mosaic(data, quality)
    else:
        decoded = torch.stack(_jpeg_round_trip(list(data), quality))
    return decoded.to(device=images.device, dtype=images.dtype) / 255


def pixelate(images: torch.Tensor, scale: float, upsample: str = "box") -> torch.Tensor:
    """Resize to ``int(size * scale)`` with PIL's BOX filter and back with ``upsample``.

    ``upsample`` is ``box`` (``make_cifar_c.py``) or ``nearest`` (imagecorruptions). For an
    enlargement PIL's BOX takes the single source pixel under each output centre, like NEAREST;
    the two differ only where a centre falls exactly on a pixel edge (Pillow computes the
    positions differently), so both are kept. The resizes are exact real-valued versions of
    PIL's, which rounds to uint8 after each axis.
    """
    n, c, h, w = images.shape
    sh, sw = max(int(h * scale), 1), max(int(w * scale), 1)
    small = K.resample(
        images,
        K.pil_resample_matrix(h, sh, "box", images.device),
        K.pil_resample_matrix(w, sw, "box", images.device),
    )
    return K.resample(
        small,
        K.pil_resample_matrix(sh, h, upsample, images.device),
        K.pil_resample_matrix(sw, w, upsample, images.device),
    )


@register_corruption
class Contrast(Corruption):
    """Contrast reduction towards each channel's mean by the factor ``c``."""

    name = "contrast"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return contrast(images, float(self.params))


@register_corruption
class Brightness(Corruption):
    """Brightness: HSV value ``V + c`` (a grey image is brightened by ``c``)."""

    name = "brightness"
    needs_rgb = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return brightness(images, float(self.params))


@register_corruption
class Saturate(Corruption):
    """Saturation ``S * a + b`` in HSV, params ``(a, b)``.

    Severities 1-2 desaturate (a < 1) and 3-5 oversaturate, so the change from the clean image is
    not monotonic in severity across 2 -> 3. A grey image has S = 0 and hue 0 (red): with b > 0
    (severities 4-5) it turns reddish, and its luma is returned (imagecorruptions returns the red
    channel instead).
    """

    name = "saturate"
    needs_rgb = True

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        a, b = self.params
        return saturate(images, float(a), float(b))


@register_corruption
class JpegCompression(Corruption):
    """JPEG round trip at quality ``c``."""

    name = "jpeg_compression"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return jpeg_compression(images, int(self.params))


@register_corruption
class Pixelate(Corruption):
    """Pixelation: BOX downscale by ``c`` and back up (BOX for ``cifar``, NEAREST for ``imagenet``)."""

    name = "pixelate"

    def apply(self, images: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        return pixelate(images, float(self.params), upsample="box" if self.profile == "cifar" else "nearest")
