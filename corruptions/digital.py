"""Digital corruptions: contrast, brightness, saturate, JPEG compression and pixelate.

(``elastic_transform``, also in the digital family, lives in :mod:`corruptions.geometric`.)
"""

from __future__ import annotations

import warnings

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from corruptions import _kernels as K
from corruptions.base import Corruption, register_corruption


def contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """``(x - mean) * factor + mean`` with the mean over H and W of each image and channel.

    ``make_*_c.py`` take ``np.mean(x, axis=(0, 1))`` of an HWC array, i.e. one mean per channel.
    """
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def brightness(images: torch.Tensor, delta: float) -> torch.Tensor:
    """Add ``delta`` to the HSV value channel, clipped to [0, 1] (RGB images)."""
    h, s, v = K.rgb_to_hsv(images).unbind(dim=1)
    return K.hsv_to_rgb(torch.stack((h, s, (v + delta).clamp(0, 1)), dim=1))


def saturate(images: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """HSV saturation ``S * scale + shift``, clipped to [0, 1] (RGB images)."""
    h, s, v = K.rgb_to_hsv(images).unbind(dim=1)
    return K.hsv_to_rgb(torch.stack((h, (s * scale + shift).clamp(0, 1), v), dim=1))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 by rounding (the 8-bit image a PIL pipeline would hold)."""
    return (images.clamp(0, 1) * 255).round_().to(torch.uint8)


def jpeg_compression(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode to JPEG at ``quality`` and decode (libjpeg via torchvision, on the CPU).

    Images are rounded to uint8 first, as the originals hold PIL 8-bit images; colour images use
    libjpeg's defaults as PIL does (4:2:0 chroma subsampling, integer DCT), grey images are
    encoded as 1-channel JPEG.
    """
    if images.shape[0] == 0:
        return images.clone()
    data = list(to_uint8(images).cpu())
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every call that its codecs move to TorchCodec; nothing a
        # caller can act on, and it would flood an evaluation's log once per batch.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchCodec")
        encoded = encode_jpeg(data, quality=int(quality))
        decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
    return torch.stack(decoded).to(device=images.device, dtype=images.dtype) / 255


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
