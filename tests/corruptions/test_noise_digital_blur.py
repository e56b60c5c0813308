"""Noise, digital and blur corruptions against direct references.

References: scikit-image (HSV, ``filters.gaussian``), SciPy (``ndimage.zoom``), OpenCV (the
``disk`` kernel and ``filter2D``), PIL (BOX / NEAREST resize, JPEG), and NumPy transcriptions of
the originals' loops (``make_cifar_c.py`` glass blur, imagecorruptions 1.1.2 ``_motion_blur``).
The libraries are test dependencies (``pip install -e .[dev]``); a test skips if one is missing.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corruptions import CORRUPTIONS, blur, digital, noise
from corruptions import _kernels as K
from robustbench_lite.seeding import generators


@pytest.fixture(autouse=True)
def _one_thread_rng_restored():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _to_t(x: np.ndarray) -> torch.Tensor:
    """HWC (or HW) NumPy -> 1CHW float32 tensor."""
    x = x[..., None] if x.ndim == 2 else x
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy()


def _digits_rgb(n: int = 8, size: int = 32) -> np.ndarray:
    """Real images: digits upsampled, as N x H x W x 3 uint8 with three different channels."""
    from sklearn.datasets import load_digits

    d = torch.tensor(load_digits().images[:n] / 16.0, dtype=torch.float32)[:, None]
    g = F.interpolate(d, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    rgb = torch.cat([g, 0.2 + 0.6 * g.flip(-1), 1 - g.transpose(-1, -2)], 1).clamp(0, 1)
    return (rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "mode,np_mode", [("nearest", "edge"), ("reflect", "symmetric"), ("mirror", "reflect"), ("wrap", "wrap")]
)
@pytest.mark.parametrize("size,before,after", [(5, 2, 3), (4, 9, 11), (1, 3, 2), (7, 0, 0)])
def test_pad_index_matches_numpy_pad(mode: str, np_mode: str, size: int, before: int, after: int) -> None:
    line = np.arange(size)
    if np_mode == "reflect" and size == 1:
        expected = np.zeros(size + before + after, dtype=int)
    else:
        expected = np.pad(line, (before, after), mode=np_mode)
    np.testing.assert_array_equal(K.pad_index(size, before, after, mode).numpy(), expected)


def test_pad_index_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="valid modes"):
        K.pad_index(4, 1, 1, "constant")


def test_hsv_matches_skimage() -> None:
    color = pytest.importorskip("skimage.color")
    x = _rng().random((24, 24, 3))
    x[:4] = x[:4, :, :1]  # grey pixels (hue and saturation 0)
    x[4:6] = 0  # black
    x[6, :, 0] = x[6, :, 1]  # ties between channels
    hsv = color.rgb2hsv(x)
    np.testing.assert_allclose(_to_np(K.rgb_to_hsv(_to_t(x))), hsv, atol=1e-6)
    np.testing.assert_allclose(_to_np(K.hsv_to_rgb(_to_t(hsv))), color.hsv2rgb(hsv), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.4, 1.0, 3.0, 6.0])
@pytest.mark.parametrize("mode", ["nearest", "reflect"])
def test_gaussian_blur_matches_skimage(sigma: float, mode: str) -> None:
    filters = pytest.importorskip("skimage.filters")
    x = _digits_rgb(1)[0] / 255.0
    expected = filters.gaussian(x, sigma=sigma, mode=mode, truncate=4.0, channel_axis=-1)
    np.testing.assert_allclose(_to_np(blur.gaussian_blur(_to_t(x), sigma, mode=mode)), expected, atol=1e-6)


def test_gaussian_blur_default_is_skimage_default() -> None:
    """The originals call ``gaussian(x, sigma)``: skimage's default border mode."""
    filters = pytest.importorskip("skimage.filters")
    x = _rng().random((20, 20, 3))
    expected = filters.gaussian(x, sigma=2.0, channel_axis=-1)
    np.testing.assert_allclose(_to_np(blur.gaussian_blur(_to_t(x), 2.0)), expected, atol=1e-6)


def _reference_disk(radius: float, alias_blur: float) -> np.ndarray:
    """``disk()`` of make_cifar_c.py / make_imagenet_c.py / imagecorruptions."""
    cv2 = pytest.importorskip("cv2")
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        grid, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    aliased = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


@pytest.mark.parametrize(
    "radius,alias_blur", [(0.3, 0.4), (0.5, 0.6), (1.5, 0.1), (3, 0.1), (8, 0.5), (10, 0.5)]
)
def test_defocus_matches_cv2_filter2d(radius: float, alias_blur: float) -> None:
    cv2 = pytest.importorskip("cv2")
    kernel = _reference_disk(radius, alias_blur)
    np.testing.assert_allclose(K.disk_kernel(radius, alias_blur).numpy(), kernel, atol=1e-7)
    x = (_digits_rgb(1)[0] / 255.0).astype(np.float32)
    expected = np.stack([cv2.filter2D(x[:, :, c], -1, kernel) for c in range(3)], axis=-1)
    np.testing.assert_allclose(_to_np(blur.defocus_blur(_to_t(x), radius, alias_blur)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "in_size,out_size",
    [(32, 30), (32, 27), (32, 20), (28, 18), (224, 56), (20, 32), (7, 3), (33, 32), (5, 5)],
)
def test_box_resample_matches_pil_float(in_size: int, out_size: int) -> None:
    """PIL's BOX on a float ('F') image has no 8-bit rounding: the weights must match exactly."""
    image = pytest.importorskip("PIL.Image")
    x = _rng().random((in_size, in_size + 3)).astype(np.float32)
    out_w = max(out_size + 2, 1)
    expected = np.array(image.fromarray(x, mode="F").resize((out_w, out_size), image.BOX))
    got = K.resample(
        _to_t(x),
        K.pil_resample_matrix(in_size, out_size, "box"),
        K.pil_resample_matrix(in_size + 3, out_w, "box"),
    )
    np.testing.assert_allclose(_to_np(got)[..., 0], expected, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (28, 28), (40, 33)])
@pytest.mark.parametrize("scale", [0.95, 0.9, 0.85, 0.75, 0.65, 0.6, 0.5, 0.4, 0.3, 0.25])
@pytest.mark.parametrize("up", ["box", "nearest"])
def test_pixelate_matches_pil(size: tuple[int, int], scale: float, up: str) -> None:
    image = pytest.importorskip("PIL.Image")
    h, w = size
    x = np.concatenate(
        [_digits_rgb(1, max(size))[0][:h, :w], _rng().integers(0, 256, (h, w, 3), dtype=np.uint8)]
    )
    pil = image.fromarray(x)
    small = pil.resize((int(w * scale), int(2 * h * scale)), image.BOX)
    expected = np.array(small.resize((w, 2 * h), image.BOX if up == "box" else image.NEAREST)) / 255.0
    # the stacked pair is pixelated as one 2h x w image: both halves get the same grid as PIL's
    got = _to_np(digital.pixelate(_to_t(x / 255.0), scale, upsample=up))
    diff = np.abs(got - expected)
    assert diff.mean() <= 2 / 255 and diff.max() <= 1.01 / 255  # PIL rounds to uint8 after each axis


@pytest.mark.parametrize("quality", [80, 58, 40, 25, 7])
@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_matches_pil(quality: int, channels: int) -> None:
    image = pytest.importorskip("PIL.Image")
    x = _digits_rgb(2)
    x = np.concatenate([x, _rng().integers(0, 256, x.shape, dtype=np.uint8)])
    if channels == 1:
        x = x[..., :1]
    expected = []
    for im in x:
        buf = io.BytesIO()
        image.fromarray(im[..., 0] if channels == 1 else im).save(buf, "JPEG", quality=quality)
        dec = np.array(image.open(buf))
        expected.append(dec[..., None] if dec.ndim == 2 else dec)
    expected = np.stack(expected) / 255.0
    got = digital.jpeg_compression(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, quality)
    assert got.shape[1] == channels
    diff = np.abs(got.permute(0, 2, 3, 1).double().numpy() - expected)
    assert diff.mean() <= 2 / 255, diff.mean() * 255


# --------------------------------------------------------------------------- zoom blur


def _clipped_zoom_cifar(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    from scipy.ndimage import zoom as scizoom

    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


def _clipped_zoom_imagecorruptions(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    from scipy.ndimage import zoom as scizoom

    ch0 = int(np.ceil(img.shape[0] / float(zoom_factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom_factor)))
    top1 = (img.shape[1] - ch1) // 2
    return scizoom(img[top0 : top0 + ch0, top1 : top1 + ch1], (zoom_factor, zoom_factor, 1), order=1)


@pytest.mark.parametrize("end,step", [(1.06, 0.01), (1.16, 0.01), (1.26, 0.01), (1.21, 0.02), (1.31, 0.03)])
@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_zoom_blur_matches_scipy_clipped_zoom(end: float, step: float, variant: str) -> None:
    pytest.importorskip("scipy.ndimage")
    if variant == "cifar":
        x, zoom, centre = (_digits_rgb(1)[0] / 255.0).astype(np.float32), _clipped_zoom_cifar, True
    else:
        x, zoom, centre = _rng().random((48, 40, 3)).astype(np.float32), _clipped_zoom_imagecorruptions, False
    factors = np.arange(1, end, step)
    out = np.zeros_like(x)
    for z in factors:
        out += zoom(x, z)[: x.shape[0], : x.shape[1]]
    expected = (x + out) / (len(factors) + 1)
    assert blur.zoom_factors(end, step) == factors.tolist()
    np.testing.assert_allclose(
        _to_np(blur.zoom_blur(_to_t(x), blur.zoom_factors(end, step), centre)), expected, atol=1e-5
    )


# --------------------------------------------------------------------------- motion blur


def _imagecorruptions_motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """imagecorruptions 1.1.2 ``_motion_blur`` with its ``shift`` helper, transcribed (HWC)."""

    def shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
        if dx < 0:
            shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
            shifted[:, dx:] = shifted[:, dx - 1 : dx]
        elif dx > 0:
            shifted = np.roll(image, shift=dx, axis=1)
            shifted[:, :dx] = shifted[:, dx : dx + 1]
        else:
            shifted = image
        if dy < 0:
            shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
            shifted[dy:, :] = shifted[dy - 1 : dy, :]
        elif dy > 0:
            shifted = np.roll(shifted, shift=dy, axis=0)
            shifted[:dy, :] = shifted[dy : dy + 1, :]
        return shifted

    width = radius * 2 + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    kernel /= kernel.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break
        blurred = blurred + kernel[i] * shift(x, dx, dy)
    return blurred


@pytest.mark.parametrize("radius,sigma", [(6, 1), (9, 2.5), (15, 8), (20, 15)])
def test_motion_blur_kernel_matches_imagecorruptions(radius: int, sigma: float) -> None:
    """One angle per image, several angles in one batch, including ones beyond +-45 (snow)."""
    angles = [0.0, 17.3, -44.9, 90.0, -120.0, 200.0]
    x = _rng().random((len(angles), 24, 30, 3))
    expected = np.stack(
        [_imagecorruptions_motion_blur(im, radius, sigma, a) for im, a in zip(x, angles, strict=True)]
    )
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    got = blur.motion_blur_kernel_apply(t, radius, sigma, torch.tensor(angles), stop_at_border=True)
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).double().numpy(), expected, atol=1e-5)
    if radius < 12:  # no tap reaches beyond 24 px: ImageMagick and imagecorruptions agree
        plain = blur.motion_blur_kernel_apply(t, radius, sigma, torch.tensor(angles))
        torch.testing.assert_close(plain, got)


def test_motion_blur_kernel_semantics() -> None:
    """ImageMagick: the streak runs from each pixel along +angle; edges repeat; weights sum to 1."""
    x = torch.zeros(2, 1, 9, 9)
    x[:, :, 4, 4] = 1
    out = blur.motion_blur_kernel_apply(x, 2, 10.0, torch.tensor([0.0, 90.0]))
    # pixel (4, 4 - i) samples (4, 4 - i + i) = the dot: the streak extends to the left at 0 degrees
    assert out[0, 0, 4, :5].gt(0).all() and out[0, 0, 4, 5:].eq(0).all() and out[0, 0, :4].eq(0).all()
    assert out[1, 0, :5, 4].gt(0).all() and out[1, 0, 5:, 4].eq(0).all()  # y points down
    torch.testing.assert_close(out.sum(dim=(2, 3)), torch.ones(2, 1))
    flat = torch.full((1, 3, 5, 5), 0.3)
    torch.testing.assert_close(blur.motion_blur_kernel_apply(flat, 9, 2.5, torch.tensor([33.0])), flat)
    assert blur.motion_kernel_width(6, 1) == 13 and blur.motion_kernel_width(0.5, 1) == 3
    with pytest.raises(ValueError, match="one angle per image"):
        blur.motion_blur_kernel_apply(x, 2, 1.0, torch.tensor([0.0]))


def test_motion_blur_angles_in_range_and_per_image() -> None:
    gens = generators(0, range(200), "motion_blur", 3)
    angles = blur._uniform(gens, -45, 45, torch.device("cpu"))
    assert angles.min() >= -45 and angles.max() <= 45 and angles.std() > 20
    again = blur._uniform(generators(0, [7], "motion_blur", 3), -45, 45, torch.device("cpu"))
    assert again.item() == angles[7].item()


# --------------------------------------------------------------------------- glass blur


def _sequential_glass_shuffle(x: np.ndarray, max_delta: int, offsets: np.ndarray) -> np.ndarray:
    """The loop of make_cifar_c.py / imagecorruptions on an HxWx3 array, offsets (rounds, 2, H, W)."""
    x = x.copy()
    h_size, w_size = x.shape[:2]
    for r in range(offsets.shape[0]):
        for h in range(h_size - max_delta, max_delta, -1):
            for w in range(w_size - max_delta, max_delta, -1):
                dy, dx = offsets[r, 0, h, w], offsets[r, 1, h, w]
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


@pytest.mark.parametrize(
    "shape,max_delta,iterations",
    [((32, 32), 1, 2), ((28, 28), 2, 3), ((40, 33), 4, 2), ((5, 5), 2, 1), ((3, 3), 1, 1)],
)
def test_glass_shuffle_matches_sequential_loop(
    shape: tuple[int, int], max_delta: int, iterations: int
) -> None:
    rng = np.random.RandomState(0)
    h, w = shape
    x = rng.randint(0, 256, (3, h, w, 3)).astype(np.uint8)
    offsets = rng.randint(-max_delta, max_delta, (3, iterations, 2, h, w))
    expected = np.stack(
        [_sequential_glass_shuffle(im, max_delta, off) for im, off in zip(x, offsets, strict=True)]
    )
    src = blur.glass_shuffle_index(torch.from_numpy(offsets), max_delta).numpy()
    got = np.stack([im.reshape(h * w, 3)[s].reshape(h, w, 3) for im, s in zip(x, src, strict=True)])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("params", [(0.4, 1, 2), (1.0, 2, 3)])
def test_glass_blur_matches_original_for_the_same_offsets(params: tuple[float, int, int]) -> None:
    filters = pytest.importorskip("skimage.filters")
    sigma, delta, rounds = params
    x = _digits_rgb(3) / 255.0
    gens = generators(0, range(3), "glass_blur")
    offsets = blur.glass_offsets(3, 32, 32, delta, rounds, generators(0, range(3), "glass_blur"))
    assert offsets.min() == -delta and offsets.max() == delta - 1
    expected = []
    for im, off in zip(x, offsets.numpy(), strict=True):
        y = np.uint8(filters.gaussian(im, sigma=sigma, channel_axis=-1) * 255)
        y = _sequential_glass_shuffle(y, delta, off)
        expected.append(filters.gaussian(y / 255.0, sigma=sigma, channel_axis=-1))
    got = blur.glass_blur(torch.from_numpy(x).permute(0, 3, 1, 2).float(), sigma, delta, rounds, gens)
    diff = np.abs(got.permute(0, 2, 3, 1).double().numpy() - np.stack(expected))
    # float32 vs float64 can move a value across an 8-bit truncation step (1/255) in a few pixels
    assert diff.mean() < 1e-4 and diff.max() <= 1.5 / 255


# --------------------------------------------------------------------------- noise


def _mid_grey(n: int = 4, size: int = 64) -> torch.Tensor:
    return torch.full((n, 3, size, size), 0.5)


@pytest.mark.parametrize("sigma", [0.04, 0.1, 0.38])
def test_gaussian_noise_statistics(sigma: float) -> None:
    x = _mid_grey()
    added = noise.gaussian_noise(x, sigma, generators(0, range(4), "g")) - x
    assert abs(added.mean().item()) < 0.05 * sigma
    assert added.std().item() == pytest.approx(sigma, rel=0.03)


@pytest.mark.parametrize("sigma", [0.06, 0.2, 0.6])
def test_speckle_noise_statistics(sigma: float) -> None:
    x = _mid_grey()
    relative = (noise.speckle_noise(x, sigma, generators(0, range(4), "s")) - x) / x
    assert abs(relative.mean().item()) < 0.05 * sigma
    assert relative.std().item() == pytest.approx(sigma, rel=0.03)


@pytest.mark.parametrize("scale", [500, 60, 3])
def test_shot_noise_statistics(scale: float) -> None:
    x = _mid_grey()
    y = noise.shot_noise(x, scale, generators(0, range(4), "p"))
    counts = y * scale
    torch.testing.assert_close(counts, counts.round())  # Poisson counts
    assert y.mean().item() == pytest.approx(0.5, rel=0.02)
    assert y.var().item() == pytest.approx(0.5 / scale, rel=0.05)


@pytest.mark.parametrize("amount", [0.01, 0.07, 0.27])
def test_impulse_noise_statistics(amount: float) -> None:
    x = _mid_grey()
    y = noise.impulse_noise(x, amount, generators(0, range(4), "i"))
    flipped = y != x
    assert flipped.float().mean().item() == pytest.approx(amount, rel=0.1)
    assert torch.isin(y[flipped], torch.tensor([0.0, 1.0])).all()
    assert (y[flipped] == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)
    # per element, not per pixel: channels flip independently
    assert not (flipped[:, 0] == flipped[:, 1]).all()


def test_noise_batched_equals_per_image() -> None:
    x = torch.rand(3, 3, 8, 8)
    for fn, c in [
        (noise.gaussian_noise, 0.1),
        (noise.shot_noise, 60.0),
        (noise.impulse_noise, 0.1),
        (noise.speckle_noise, 0.2),
    ]:
        batched = fn(x, c, generators(0, range(3), "n"))
        single = fn(x[2:], c, generators(0, [2], "n"))
        torch.testing.assert_close(batched[2:], single, atol=0, rtol=0)


def test_noise_needs_one_generator_per_image() -> None:
    with pytest.raises(ValueError, match="one generator per image"):
        noise.gaussian_noise(torch.rand(2, 1, 4, 4), 0.1, generators(0, [0], "g"))


# --------------------------------------------------------------------------- colour / contrast


def test_contrast_keeps_each_channel_mean() -> None:
    x = torch.from_numpy(_digits_rgb(4)).permute(0, 3, 1, 2).float() / 255
    y = digital.contrast(x, 0.3)
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))
    torch.testing.assert_close(
        y - y.mean(dim=(2, 3), keepdim=True), 0.3 * (x - x.mean(dim=(2, 3), keepdim=True))
    )


@pytest.mark.parametrize(
    "name,params", [("brightness", (0.3,)), ("saturate", (0.1, 0.0)), ("saturate", (5, 0.1))]
)
def test_hsv_corruptions_match_skimage(name: str, params: tuple[float, ...]) -> None:
    color = pytest.importorskip("skimage.color")
    x = _digits_rgb(1)[0] / 255.0
    hsv = color.rgb2hsv(x)
    if name == "brightness":
        hsv[..., 2] = np.clip(hsv[..., 2] + params[0], 0, 1)
        got = digital.brightness(_to_t(x), *params)
    else:
        hsv[..., 1] = np.clip(hsv[..., 1] * params[0] + params[1], 0, 1)
        got = digital.saturate(_to_t(x), *params)
    np.testing.assert_allclose(_to_np(got), np.clip(color.hsv2rgb(hsv), 0, 1), atol=1e-5)


def test_brightness_on_grey_adds_to_the_level() -> None:
    """A grey image goes through RGB with S = 0: brightness adds c (as imagecorruptions' grey path)."""
    x = torch.rand(2, 1, 16, 16) * 0.6
    out = CORRUPTIONS.get("brightness", severity=3, profile="cifar")(x)
    torch.testing.assert_close(out, x + 0.15, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- classes


@pytest.mark.parametrize("profile", ["cifar", "imagenet"])
def test_classes_use_profile_parameters(profile: str) -> None:
    x = torch.from_numpy(_digits_rgb(2)).permute(0, 3, 1, 2).float() / 255
    motion = CORRUPTIONS.get("motion_blur", severity=2, profile=profile, seed=3)
    radius, sigma = motion.params
    angles = blur._uniform(generators(3, [0, 1], "motion_blur", 2), -45, 45, torch.device("cpu"))
    expected = blur.motion_blur_kernel_apply(x, radius, sigma, angles, stop_at_border=profile == "imagenet")
    torch.testing.assert_close(motion(x), expected.clamp(0, 1))
    pix = CORRUPTIONS.get("pixelate", severity=5, profile=profile)
    torch.testing.assert_close(
        pix(x), digital.pixelate(x, pix.params, "box" if profile == "cifar" else "nearest")
    )
    zoom = CORRUPTIONS.get("zoom_blur", severity=4, profile=profile)
    torch.testing.assert_close(
        zoom(x), blur.zoom_blur(x, blur.zoom_factors(*zoom.params), profile == "cifar")
    )


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_without_torchvision_codecs_gives_the_same_pixels(channels: int, monkeypatch) -> None:
    """When torchvision hands its codecs to TorchCodec, the corruption falls back to PIL's libjpeg: the
    same images come back, so jpeg_compression keeps its numbers."""
    import builtins

    x = _digits_rgb(4)
    x = np.concatenate([x, _rng().integers(0, 256, x.shape, dtype=np.uint8)])[..., :channels]
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with_torchvision = digital.jpeg_compression(images, 25)
    real_import = builtins.__import__

    def no_codecs(name, *args, **kwargs):
        if name == "torchvision.io":
            raise ImportError("torchvision.io moved to TorchCodec")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_codecs)
    with_pil = digital.jpeg_compression(images, 25)
    assert torch.equal(with_pil, with_torchvision)
