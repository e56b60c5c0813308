"""Weather (fog, frost, snow, spatter) and geometric (elastic_transform) corruptions.

Real images: scikit-learn's 8x8 digits upsampled to 32 px, grey and RGB (three digits as the
three channels). The NumPy ports of the original algorithms below (``make_cifar_c.py`` for the
``cifar`` profile, imagecorruptions 1.1.2 for ``imagenet``) take their random draws as
arguments: given the same draws, our kernels must reproduce them; given independent draws, their
statistics. OpenCV parts need ``opencv-python-headless`` (the ``dev`` extra) and
frost needs the textures of the ``imagecorruptions`` extra; those tests skip without them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.ndimage import zoom as scizoom

from corruptions import CORRUPTIONS
from corruptions import _opencv as CV
from corruptions import geometric as G
from corruptions import textures as T
from corruptions import weather as W
from corruptions.profiles import TABLES
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.seeding import generators, uniform_rows

NAMES = ("fog", "frost", "snow", "spatter", "elastic_transform")
Digits = dict[str, torch.Tensor]
PROFILES = ("cifar", "imagenet")
HAVE_TEXTURES = T.frost_unavailable() is None
try:
    import cv2
except ImportError:  # pragma: no cover - cv2 is in the dev extra
    cv2 = None
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="needs opencv-python-headless (dev extra)")
needs_textures = pytest.mark.skipif(not HAVE_TEXTURES, reason="needs the imagecorruptions frost textures")


def _names(*names: str) -> list:
    return [pytest.param(n, marks=needs_textures) if n == "frost" else n for n in names]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tensors are small: OpenMP fork/join dominates, and on a shared runner with more
    threads than free cores it makes the module several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    d = torch.tensor(load_digits().images[:72] / 16.0, dtype=torch.float32)[:, None]
    grey = F.interpolate(d, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    # Soften the black background so that darkening and brightening both show.
    grey = 0.15 + 0.7 * grey
    return {"grey": grey[:24].contiguous(), "rgb": torch.cat([grey[0::3], grey[1::3], grey[2::3]], 1)[:24]}


def _gens(n: int, seed: int = 0, key: str = "test") -> list[torch.Generator]:
    return generators(seed, range(n), key)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().numpy()


def _nchw(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.tensor(np.stack(arrays)).permute(0, 3, 1, 2).float()


def _one_minus_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return float((1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-12)).mean())


# ----------------------------------------------------------------------------- NumPy ports of the originals


def plasma_np(mapsize: int, wibbledecay: float, uniforms: np.ndarray) -> np.ndarray:
    """``plasma_fractal`` of make_cifar_c.py / imagecorruptions, drawing U[0, 1) from ``uniforms``."""
    it = iter(uniforms.astype(np.float64))
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        u = np.array([next(it) for _ in range(array.size)]).reshape(array.shape)
        return array / 4 + wibble * (-wibble + 2 * wibble * u)  # np.random.uniform(-wibble, wibble)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog_np(x: np.ndarray, c: tuple[float, float], plasma: np.ndarray) -> np.ndarray:
    max_val = x.max()
    x = x + c[0] * plasma[: x.shape[0], : x.shape[1]][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1)


def elastic_cifar_np(image: np.ndarray, c: tuple[float, float, float], corners, nx, ny) -> np.ndarray:
    """make_cifar_c.py's elastic_transform (c already times the image size)."""
    image = image.astype(np.float32)
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + corners.astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian_filter(nx, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)[..., None]
    dy = (gaussian_filter(ny, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)[..., None]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1)


def elastic_imagenet_np(image: np.ndarray, severity: int, nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
    """imagecorruptions' elastic_transform; ``nx``/``ny`` are its U(-max_dx, max_dx) draws."""
    image = image.astype(np.float32)
    shape = image.shape
    sigma = np.array(shape[:2]) * 0.01
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    dx = (gaussian_filter(nx, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)[..., None]
    dy = (gaussian_filter(ny, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)[..., None]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1)


def clipped_zoom_cifar(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


def clipped_zoom_ic(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    ch0 = int(np.ceil(img.shape[0] / float(zoom_factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom_factor)))
    top1 = (img.shape[1] - ch1) // 2
    return scizoom(img[top0:top0 + ch0, top1:top1 + ch1], (zoom_factor, zoom_factor, 1), order=1)


def motion_blur_np(x: np.ndarray, radius: int, sigma: float, angle: float, stop: bool) -> np.ndarray:
    """imagecorruptions' ``_motion_blur`` (its ``shift`` repeats edge pixels); without the
    ``break`` it stands in for ImageMagick's ``-motion-blur`` of make_cifar_c.py."""

    def shift(image, dx, dy):
        if dx < 0:
            shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
            shifted[:, dx:] = shifted[:, dx - 1:dx]
        elif dx > 0:
            shifted = np.roll(image, shift=dx, axis=1)
            shifted[:, :dx] = shifted[:, dx:dx + 1]
        else:
            shifted = image
        if dy < 0:
            shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
            shifted[dy:, :] = shifted[dy - 1:dy, :]
        elif dy > 0:
            shifted = np.roll(shifted, shift=dy, axis=0)
            shifted[:dy, :] = shifted[dy:dy + 1, :]
        return shifted

    width = radius * 2 + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    kernel /= kernel.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if stop and (np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]):
            break
        blurred = blurred + kernel[i] * shift(x, dx, dy)
    return blurred


def snow_np(x: np.ndarray, c: tuple, layer: np.ndarray, angle: float, profile: str) -> np.ndarray:
    """make_cifar_c.py's (ImageMagick's 8-bit PNG round trip kept) or imagecorruptions' snow."""
    x = x.astype(np.float32)
    if profile == "cifar":
        layer = clipped_zoom_cifar(layer[..., np.newaxis], c[2])
        layer[layer < c[3]] = 0
        layer8 = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        snow_layer = motion_blur_np(layer8 / 255.0, c[4], c[5], angle, stop=False)
        snow_layer = np.round(snow_layer * 255) / 255.0
    else:
        layer = clipped_zoom_ic(layer[..., np.newaxis], c[2])
        layer[layer < c[3]] = 0
        layer = np.clip(layer.squeeze(), 0, 1)
        snow_layer = motion_blur_np(layer, c[4], c[5], angle, stop=True)
        snow_layer = np.round(snow_layer * 255).astype(np.uint8) / 255.0
    snow_layer = snow_layer[..., np.newaxis][: x.shape[0], : x.shape[1], :]
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., np.newaxis]  # cv2 RGB2GRAY
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1)


def water_mask_np(liquid_layer: np.ndarray) -> np.ndarray:
    dist = 255 - cv2.Canny(liquid_layer, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return liquid_layer * dist


def spatter_np(x: np.ndarray, c: tuple, layer: np.ndarray) -> np.ndarray:
    """The originals' spatter (RGB) given the normal(loc, scale) layer."""
    x = x.astype(np.float32)
    liquid_layer = gaussian_filter(layer, sigma=c[2], mode="nearest", truncate=4.0)  # skimage gaussian
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        m = water_mask_np((liquid_layer * 255).astype(np.uint8))[..., np.newaxis]
        m = m / np.max(m, axis=(0, 1)) * c[4]
        color = np.array([175 / 255.0, 238 / 255.0, 238 / 255.0])
        return np.clip(x + m * color, 0, 1)
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian_filter(m.astype(np.float32), sigma=c[4], mode="nearest", truncate=4.0)
    m[m < 0.8] = 0
    color = np.array([63 / 255.0, 42 / 255.0, 20 / 255.0]) * m[..., np.newaxis]
    return np.clip(x * (1 - m[..., np.newaxis]) + color, 0, 1)


# ----------------------------------------------------------------------------- every corruption


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_flags(name: str) -> None:
    cls = CORRUPTIONS.entry(name)
    assert cls.random
    assert cls.needs_rgb == (name in ("frost", "snow", "spatter"))
    assert CORRUPTIONS.get(name, severity=2, profile="imagenet").family == (
        "digital" if name == "elastic_transform" else "weather"
    )


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", _names(*NAMES))
def test_changes_image_keeps_contract(name: str, profile: str, digits: Digits) -> None:
    for x in digits.values():
        before = x.clone()
        for severity in (1, 5):
            y = CORRUPTIONS.get(name, severity=severity, profile=profile, seed=1)(x)
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
            assert torch.equal(x, before)
            assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
            assert (y - x).abs().mean() > 1e-3


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", _names(*NAMES))
def test_batched_equals_per_image_and_seeded(name: str, profile: str, digits: Digits) -> None:
    x = digits["rgb"][:6]
    corruption = CORRUPTIONS.get(name, severity=3, profile=profile, seed=7)
    batched = corruption(x, indices=list(range(10, 16)))
    singles = torch.cat([corruption(x[i: i + 1], indices=[10 + i]) for i in range(6)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    torch.testing.assert_close(corruption(x, indices=list(range(10, 16))), batched, atol=0, rtol=0)
    other_seed = CORRUPTIONS.get(name, severity=3, profile=profile, seed=8)(x, indices=list(range(10, 16)))
    assert (other_seed - batched).abs().max() > 1e-3
    other_index = corruption(x, indices=list(range(20, 26)))
    assert (other_index - batched).abs().max() > 1e-3


@pytest.mark.parametrize(
    "name, profile",
    [
        pytest.param(n, p, marks=[needs_textures] if n == "frost" else [])
        for n in NAMES
        for p in PROFILES
        if not (n == "elastic_transform" and p == "cifar")
    ],
)
def test_severity_ordering_on_average(name: str, profile: str, digits: Digits) -> None:
    """Structure lost (1 - correlation with the clean image, averaged) grows with severity: at most
    one step down (the originals' tables are not strictly monotone: fog 3 and 4 share a strength,
    ImageNet-C's water 3 has less gain than 2) and the last severity beyond the first. Spatter is
    compared within each mode: CIFAR-10-C's mud (4, 5) is sparser than its heaviest water (3)."""
    x = torch.cat([digits["rgb"], digits["grey"].expand(-1, 3, -1, -1)])
    loss = [_one_minus_corr(CORRUPTIONS.get(name, severity=s, profile=profile)(x), x) for s in range(1, 6)]
    for group in ([loss[:3], loss[3:]] if name == "spatter" else [loss]):
        assert sum(b < a for a, b in zip(group[:-1], group[1:], strict=True)) <= 1, loss
        assert group[-1] > group[0], loss


# ----------------------------------------------------------------------------- fog


@pytest.mark.parametrize("mapsize, decay", [(32, 3.0), (32, 1.75), (64, 1.4)])
def test_plasma_matches_numpy_port(mapsize: int, decay: float) -> None:
    u = uniform_rows(_gens(3), (W.plasma_draws(mapsize),), torch.device("cpu"))
    ours = W.plasma_fractal(u, mapsize, decay)
    for i in range(3):
        np.testing.assert_allclose(ours[i].numpy(), plasma_np(mapsize, decay, u[i].numpy()), atol=2e-5)


def test_plasma_statistics() -> None:
    u = uniform_rows(_gens(8), (W.plasma_draws(64),), torch.device("cpu"))
    smooth, rough = W.plasma_fractal(u, 64, 3.0), W.plasma_fractal(u, 64, 1.4)
    assert smooth.shape == (8, 64, 64)
    for maps in (smooth, rough):
        assert torch.allclose(maps.amin(dim=(1, 2)), torch.zeros(8))
        assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(8))
    assert (smooth[0] - smooth[1]).abs().mean() > 0.05  # one map per image
    # A larger wibbledecay damps the fine levels: neighbouring values differ less.
    assert (smooth.diff(dim=-1).abs().mean() * 2) < rough.diff(dim=-1).abs().mean()
    with pytest.raises(ValueError, match="power of two"):
        W.plasma_fractal(u, 48, 2.0)


@pytest.mark.parametrize("profile", PROFILES)
def test_fog_kernel_matches_numpy_port(profile: str, digits: Digits) -> None:
    x = digits["rgb"][:4]
    u = uniform_rows(_gens(4), (W.plasma_draws(32),), torch.device("cpu"))
    plasma = W.plasma_fractal(u, 32, 2.0)
    for severity in (1, 5):
        c = TABLES[profile]["fog"][severity - 1]
        ours = W.fog_kernel(x, plasma, c[0])
        ref = _nchw([fog_np(_hwc(x[i]), c, plasma[i].double().numpy()) for i in range(4)])
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_fog_adds_low_frequency_brightness(digits: Digits) -> None:
    flat = torch.full((8, 3, 32, 32), 0.5)
    y = CORRUPTIONS.get("fog", severity=3)(flat)
    low = F.avg_pool2d(y, 8)  # 4x4 grid of local means
    assert low.var(dim=(2, 3)).mean() > 1e-3  # a flat image gets uneven local brightness
    assert low.var(dim=(2, 3)).mean() > 0.5 * y.var(dim=(2, 3)).mean()  # mostly low-frequency
    # On digits: what fog adds beyond the rescaled image varies smoothly.
    x = digits["grey"]
    strength = TABLES["cifar"]["fog"][2][0]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    added = CORRUPTIONS.get("fog", severity=3)(x) - x * peak / (peak + strength)
    assert F.avg_pool2d(added, 8).var(dim=(2, 3)).mean() > 1e-3
    assert F.avg_pool2d(added, 8).var(dim=(2, 3)).mean() > 0.5 * added.var(dim=(2, 3)).mean()


# ----------------------------------------------------------------------------- frost


def test_frost_textures_are_shipped_and_equal_imagecorruptions_files() -> None:
    """Every install scores the same 15 corruptions: the textures come with the package, byte for byte
    the files imagecorruptions installs (when it is there to compare)."""
    import hashlib
    import importlib.util

    assert T.frost_dir() == T.SHIPPED
    assert (T.SHIPPED / "LICENSE").read_text().lstrip().startswith("Apache License")
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None:
        pytest.skip("imagecorruptions is not installed to compare with")
    theirs = Path(list(spec.submodule_search_locations)[0]) / "frost"
    for name in T.FROST_FILES[: T.FROST_USED]:
        ours = hashlib.sha256((T.SHIPPED / name).read_bytes()).hexdigest()
        assert ours == hashlib.sha256((theirs / name).read_bytes()).hexdigest(), name


def test_frost_unavailable_gives_reason(monkeypatch: pytest.MonkeyPatch, digits: Digits, tmp_path) -> None:
    monkeypatch.setattr(T, "SHIPPED", tmp_path / "no-frost")  # a copy that lost its textures
    monkeypatch.setattr(T.importlib.util, "find_spec", lambda name, *a: None)
    T._raw.cache_clear()
    T.frost_textures.cache_clear()
    W._frost_stack.cache_clear()
    try:
        reason = CORRUPTIONS.entry("frost").availability()
        assert reason == T.UNAVAILABLE
        assert "pip install 'robustbench-lite[imagecorruptions]'" in reason
        with pytest.raises(RobustEvalError, match=r"frost.*unavailable.*imagecorruptions"):
            CORRUPTIONS.get("frost", severity=1)(digits["rgb"][:2])
        with pytest.raises(FileNotFoundError, match="imagecorruptions"):
            T.frost_textures("cifar", 32, 32)
    finally:
        T._raw.cache_clear()
        T.frost_textures.cache_clear()
        W._frost_stack.cache_clear()


def test_frost_kernel_blends_the_chosen_crop(digits: Digits) -> None:
    x = digits["rgb"][:3]
    textures = (torch.arange(3 * 40 * 50).reshape(3, 40, 50) % 256).to(torch.uint8), torch.full(
        (3, 36, 60), 200, dtype=torch.uint8
    )
    stack, sizes = W.stack_textures(textures)
    assert stack.shape == (2, 40, 60, 3) and sizes.tolist() == [[40, 50], [36, 60]]
    choice, top, left = torch.tensor([0, 1, 0]), torch.tensor([3, 2, 7]), torch.tensor([5, 20, 17])
    y = W.frost_kernel(x, stack, choice, top, left, 0.7, 0.4)
    for i in range(3):
        crop = textures[choice[i]][:, top[i]: top[i] + 32, left[i]: left[i] + 32].float() / 255
        torch.testing.assert_close(y[i], (0.7 * x[i] + 0.4 * crop).clamp(0, 1))


@needs_textures
@pytest.mark.parametrize("profile", PROFILES)
def test_frost_blends_a_random_texture_crop(
    profile: str, monkeypatch: pytest.MonkeyPatch, digits: Digits
) -> None:
    seen = {}
    kernel = W.frost_kernel

    def spy(images, textures, choice, top, left, *weights):
        seen.update(choice=choice, top=top, left=left)
        return kernel(images, textures, choice, top, left, *weights)

    monkeypatch.setattr(W, "frost_kernel", spy)
    x = digits["rgb"]
    c0, c1 = TABLES[profile]["frost"][2]
    y = CORRUPTIONS.get("frost", severity=3, profile=profile)(x)
    textures = T.frost_textures(profile, 32, 32)
    assert len(set(seen["choice"].tolist())) >= 3  # texture chosen per image
    for i in range(x.shape[0]):
        tex = textures[int(seen["choice"][i])]
        top, left = int(seen["top"][i]), int(seen["left"][i])
        assert 0 <= top < tex.shape[1] - 32 and 0 <= left < tex.shape[2] - 32
        crop = tex[:, top: top + 32, left: left + 32].float() / 255
        torch.testing.assert_close(y[i], (c0 * x[i] + c1 * crop).clamp(0, 1), atol=1e-6, rtol=0)
    assert y.mean() > x.mean() * c0  # frost adds light


@needs_textures
@needs_cv2
def test_frost_textures_scaled_as_opencv() -> None:
    folder = T.frost_dir()
    for profile, size in (("cifar", 32), ("imagenet", 224)):
        for i, tex in enumerate(T.frost_textures(profile, size, size)):
            frost = cv2.imread(str(folder / T.FROST_FILES[i]))
            if profile == "cifar":
                ref = cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)
            else:  # imagecorruptions: the texture is larger than 224 px, so factor 1 * 1.1
                shape = (int(np.ceil(frost.shape[1] * 1.1)), int(np.ceil(frost.shape[0] * 1.1)))
                ref = cv2.resize(frost, dsize=shape, interpolation=cv2.INTER_CUBIC)
            ref = torch.tensor(ref[..., ::-1].copy()).permute(2, 0, 1).int()
            assert ref.shape == tex.shape
            assert (ref - tex.int()).abs().max() <= (0 if profile == "cifar" else 1)


@needs_textures
def test_frost_grey_images_and_large_cifar_images(digits: Digits) -> None:
    grey = CORRUPTIONS.get("frost", severity=2)(digits["grey"])
    assert grey.shape == digits["grey"].shape
    big = F.interpolate(digits["rgb"][:2], size=64)  # above 62 px the x0.2 textures are fitted up
    assert CORRUPTIONS.get("frost", severity=2)(big).shape == big.shape


# ----------------------------------------------------------------------------- snow


@pytest.mark.parametrize("profile, size",
    [("cifar", (32, 32)), ("imagenet", (32, 32)), ("imagenet", (40, 56))]
)
def test_snow_matches_numpy_port(profile: str, size: tuple[int, int], digits: Digits) -> None:
    x = F.interpolate(digits["rgb"][:4], size=size, mode="bilinear").clamp(0, 1)
    n, (h, w) = x.shape[0], size
    rng = np.random.default_rng(3)
    for severity in (1, 3, 5):
        c = TABLES[profile]["snow"][severity - 1]
        layers = rng.normal(size=(n, h, w), loc=c[0], scale=c[1])
        angles = rng.uniform(-135, -45, size=n)
        layer = torch.tensor(layers[:, None]).float()
        flakes = W.snow_flakes(layer, torch.tensor(angles), *c[2:6], profile=profile)
        ours = W.snow_kernel(x, flakes, c[6])
        ref = _nchw([snow_np(_hwc(x[i]), c, layers[i].copy(), angles[i], profile) for i in range(n)])
        diff = (ours - ref).abs()
        # float32 against float64 flips an 8-bit rounding of the flakes now and then
        assert diff.max() <= 2 / 255 + 1e-5 and (diff > 1e-4).float().mean() < 0.02, (severity, diff.max())


@pytest.mark.parametrize("profile", PROFILES)
def test_snow_brightens_and_scales_with_severity(profile: str, digits: Digits) -> None:
    x = digits["rgb"]
    means = []
    for severity in range(1, 6):
        y = CORRUPTIONS.get("snow", severity=severity, profile=profile)(x)
        assert (y >= x - 1e-6).all()  # never darkens
        means.append(float(y.mean()))
    assert means[-1] > means[0] > float(x.mean())


# ----------------------------------------------------------------------------- spatter


def _liquid8(rng: np.random.Generator, n: int, size: int, c: tuple) -> np.ndarray:
    out = []
    for _ in range(n):
        layer = gaussian_filter(rng.normal(size=(size, size), loc=c[0], scale=c[1]), c[2], mode="nearest")
        layer[layer < c[3]] = 0
        out.append((layer * 255).astype(np.uint8))
    return np.stack(out)


@needs_cv2
@pytest.mark.parametrize("profile, severity, size", [("cifar", 1, 32), ("cifar", 3, 32), ("imagenet", 1, 96)])
def test_water_steps_equal_opencv(profile: str, severity: int, size: int) -> None:
    c = TABLES[profile]["spatter"][severity - 1]
    liquid = _liquid8(np.random.default_rng(severity), 12, size, c)
    t = torch.tensor(liquid, dtype=torch.float32)
    edges_ref = np.stack([cv2.Canny(a, 50, 150) > 0 for a in liquid])
    edges = CV.canny(t, 50, 150).numpy()
    assert edges_ref.any() and (edges == edges_ref).all()
    dist_ref = np.stack([np.minimum(cv2.distanceTransform(255 - 255 * e.astype(np.uint8), cv2.DIST_L2, 5), 20)
                         for e in edges_ref])
    np.testing.assert_allclose(CV.chamfer_distance(torch.tensor(edges_ref), 20.0).numpy(), dist_ref, atol=1e-5)
    levels = np.random.default_rng(0).integers(0, 21, size=(12, size, size)).astype(np.uint8)
    eq_ref = np.stack([cv2.equalizeHist(a) for a in levels])
    assert (CV.equalize_hist(torch.tensor(levels).float()).numpy() == eq_ref).all()
    assert (W.water_mask(t).numpy() == np.stack([water_mask_np(a) for a in liquid])).all()


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("severity", [pytest.param(s, marks=needs_cv2) if s <= 3 else s for s in range(1, 6)])
def test_spatter_kernel_matches_numpy_port(profile: str, severity: int, digits: Digits) -> None:
    c = TABLES[profile]["spatter"][severity - 1]
    if c[5] == 0 and cv2 is None:
        pytest.skip("water mode needs OpenCV")
    x = digits["rgb"][:6]
    layers = np.random.default_rng(severity).normal(size=(6, 32, 32), loc=c[0], scale=c[1])
    ours = W.spatter_kernel(x, torch.tensor(layers), c[2], c[3], c[4], mud=c[5] == 1)
    ref = _nchw([spatter_np(_hwc(x[i]), c, layers[i]) for i in range(6)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@needs_cv2
@pytest.mark.parametrize("profile", PROFILES)
def test_spatter_statistics_match_original(profile: str, digits: Digits) -> None:
    """Independent draws: mean change and fraction of changed pixels as the original's."""
    x = torch.cat([digits["rgb"], digits["grey"].expand(-1, 3, -1, -1)])
    rng = np.random.default_rng(11)
    for severity in range(1, 6):
        c = TABLES[profile]["spatter"][severity - 1]
        ours = CORRUPTIONS.get("spatter", severity=severity, profile=profile)(x)
        layers = rng.normal(size=(len(x), 32, 32), loc=c[0], scale=c[1])
        ref = _nchw([spatter_np(_hwc(x[i]), c, layers[i]) for i in range(len(x))])
        for stat in (lambda y: (y - x).abs().mean(), lambda y: ((y - x).abs() > 1 / 255).float().mean()):
            a, b = float(stat(ours)), float(stat(ref))
            assert abs(a - b) <= 0.25 * b, (severity, a, b)


def test_spatter_dry_layer_and_mode_effects(digits: Digits) -> None:
    x = digits["rgb"][:4]
    dry = torch.zeros(4, 32, 32)
    torch.testing.assert_close(W.spatter_kernel(x, dry, 1.0, 0.7, 0.5, mud=False), x)  # original: NaN
    water = CORRUPTIONS.get("spatter", severity=3)(x)
    assert (water >= x - 1e-6).all()  # water only adds pale turquoise
    mud = CORRUPTIONS.get("spatter", severity=5)(x)
    brown = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    assert ((mud - x).abs().sum(1) > 1e-3).any()
    assert ((mud - brown).abs() <= (x - brown).abs() + 1e-6).all()  # mud only pulls towards brown


# ----------------------------------------------------------------------------- elastic


def test_zero_displacement_is_identity(digits: Digits) -> None:
    x = digits["rgb"]
    zero = torch.zeros(x.shape[0], 32, 32)
    assert (G.displace(x, zero, zero) - x).abs().mean() < 1e-5
    assert (G.elastic_kernel(x, zero, zero, alpha=5.0, sigma=2.0) - x).abs().mean() < 1e-5
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(x.shape[0], 2, 3)
    assert (G.warp_affine(x, identity) - x).abs().mean() < 1e-5


def test_alpha_zero_is_the_affine_warp(digits: Digits) -> None:
    x = digits["rgb"]
    n = x.shape[0]
    g = torch.Generator().manual_seed(0)
    corners = (torch.rand(n, 3, 2, generator=g) * 2 - 1) * 2.5
    noise = torch.rand(2, n, 32, 32, generator=g) * 2 - 1
    tri = torch.tensor([[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]])  # make_cifar_c.py's points for 32 px
    affine = G.warp_affine(x, G.affine_from_points(tri + corners, tri.expand(n, 3, 2)))
    torch.testing.assert_close(G.elastic_kernel(x, *noise, 0.0, 2.0, corners), affine)
    zero = torch.zeros(n, 32, 32)
    torch.testing.assert_close(G.elastic_kernel(x, zero, zero, 3.0, 2.0, corners), affine, atol=1e-5, rtol=0)
    assert (G.elastic_kernel(x, *noise, 3.0, 1.0, corners) - affine).abs().mean() > 1e-2


@needs_cv2
def test_affine_from_points_matches_opencv() -> None:
    src = torch.tensor([[[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]]])
    dst = src + torch.tensor([[[1.5, -2.0], [0.3, 0.7], [-1.1, 2.2]]])
    ref = cv2.getAffineTransform(src[0].numpy(), dst[0].numpy())
    np.testing.assert_allclose(G.affine_from_points(src, dst)[0].numpy(), ref, atol=1e-5)


@needs_cv2
@pytest.mark.parametrize("severity", range(1, 6))
def test_elastic_cifar_matches_numpy_port(severity: int, digits: Digits) -> None:
    x = digits["rgb"][:4]
    c = [32 * v for v in TABLES["cifar"]["elastic_transform"][severity - 1]]
    rng = np.random.default_rng(severity)
    corners = rng.uniform(-c[2], c[2], size=(4, 3, 2))
    nx, ny = rng.uniform(-1, 1, size=(2, 4, 32, 32))
    ours = G.elastic_kernel(x, torch.tensor(nx).float(), torch.tensor(ny).float(), c[0], c[1],
                            torch.tensor(corners).float()).clamp(0, 1)
    ref = _nchw([elastic_cifar_np(_hwc(x[i]), c, corners[i], nx[i], ny[i]) for i in range(4)])
    # OpenCV 4's warpAffine interpolates in fixed point (sample positions in 1/32 pixel, INTER_BITS = 5), so the
    # reference itself moves by up to ~1 8-bit level there (0.0042 measured with OpenCV 4.8); ours samples exactly,
    # as OpenCV 5 does.
    exact = int(cv2.__version__.split(".")[0]) >= 5
    torch.testing.assert_close(ours, ref, atol=1e-4 if exact else 2 / 255, rtol=0)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_elastic_imagenet_matches_numpy_port(severity: int, size: tuple[int, int], digits) -> None:
    x = F.interpolate(digits["rgb"][:4], size=size, mode="bilinear").clamp(0, 1)
    h, w = size
    a, s, m = TABLES["imagenet"]["elastic_transform"][severity - 1]
    rng = np.random.default_rng(severity)
    nx, ny = rng.uniform(-m * h, m * h, size=(2, 4, h, w))
    ours = G.elastic_kernel(x, torch.tensor(nx).float(), torch.tensor(ny).float(), 250 * a, (s * h, s * w))
    ref = _nchw([elastic_imagenet_np(_hwc(x[i]), severity, nx[i], ny[i]) for i in range(4)])
    torch.testing.assert_close(ours.clamp(0, 1), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("profile", PROFILES)
def test_elastic_keeps_the_pixel_histogram(profile: str, digits: Digits) -> None:
    x = digits["rgb"]
    for severity in (1, 5):
        y = CORRUPTIONS.get("elastic_transform", severity=severity, profile=profile)(x)
        assert (y.flatten(1).sort(1).values - x.flatten(1).sort(1).values).abs().mean() < 0.03
        assert (y.mean() - x.mean()).abs() < 0.01
        assert (y - x).abs().mean() > 0.02  # ... while moving pixels


def test_elastic_cifar_severity_one_is_affine_only(digits: Digits) -> None:
    """make_cifar_c.py's severity 1 has alpha = sigma = 0: a pure affine warp, and (unlike the
    other corruptions) its pixel change is the largest of the five, as in the original table."""
    assert TABLES["cifar"]["elastic_transform"][0][:2] == (0, 0)
    x = digits["rgb"]
    outputs = [CORRUPTIONS.get("elastic_transform", severity=s)(x) for s in range(1, 6)]
    change = [(y - x).abs().mean().item() for y in outputs]
    assert change[0] == max(change)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", _names(*NAMES))
def test_runs_on_cuda(name: str, digits: Digits) -> None:
    x = digits["rgb"][:4].cuda()
    for profile in PROFILES:
        y = CORRUPTIONS.get(name, severity=3, profile=profile)(x)
        assert y.device == x.device and y.shape == x.shape and torch.isfinite(y).all()
        assert (y - x).abs().mean() > 1e-3
