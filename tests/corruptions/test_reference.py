"""The imagecorruptions reference backend and its compatibility layer for NumPy 2 / current scikit-image."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from corruptions import reference
from corruptions.base import BENCHMARK, EXTRA, to_gray
from robustbench_lite.errors import RobustEvalError

ALL = BENCHMARK + EXTRA
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
          "snow", "frost", "fog", "spatter", "elastic_transform")


@pytest.fixture(scope="module")
def ic():
    """imagecorruptions loaded through the layer; skipped where the optional extra is absent."""
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("imagecorruptions is not installed (optional extra)")
    try:
        return reference.load_imagecorruptions()
    except RobustEvalError as exc:
        pytest.skip(str(exc))


def digits(size: int, n: int = 2, rgb: bool = True) -> torch.Tensor:
    """Real images: sklearn digits upsampled to ``size`` px, tinted into three distinct channels."""
    x = torch.tensor(load_digits().images[:n] / 16.0, dtype=torch.float32)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1)
    if not rgb:
        return x
    return torch.cat([0.1 + 0.8 * x, 1 - x, 0.5 * x + 0.25 * x.flip(-1)], dim=1).clamp(0, 1)


def run_all(size: int) -> None:
    images = digits(size, n=1)
    for name in ALL:
        for severity in range(1, 6):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a breakage may also show up as a warning only
                out = reference.reference_corrupt(images, name, severity, seed=0)
            assert out.shape == images.shape and out.dtype == images.dtype, (name, severity)
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, (name, severity)
            assert not torch.equal(out, images), (name, severity)


def test_every_corruption_and_severity_runs_at_32px(ic):
    run_all(32)


@pytest.mark.slow
def test_every_corruption_and_severity_runs_at_224px(ic):
    run_all(224)  # ~20 s, most of it glass_blur's per-pixel Python loop


def test_layer_does_not_leak_into_numpy_scipy_skimage(ic):
    import skimage.filters
    import skimage.util

    if int(np.__version__.split(".")[0]) >= 2:  # NumPy 2 removed it (the layer puts it back for imagecorruptions)
        with pytest.raises(AttributeError):
            np.float_  # noqa: B018  (still removed for everybody else)
    assert skimage.filters.gaussian.__module__.startswith("skimage")
    assert skimage.util.random_noise.__module__.startswith("skimage")
    if importlib.util.find_spec("pkg_resources") is None:
        assert "pkg_resources" not in sys.modules
    module = sys.modules["imagecorruptions.corruptions"]
    assert module.np.float_ is np.float64 and module.np.random is np.random


def test_import_shim_present_only_during_import():
    real = importlib.util.find_spec("pkg_resources") is not None
    with reference._import_shims():
        assert "pkg_resources" in sys.modules
        assert callable(sys.modules["pkg_resources"].resource_filename)
    if not real:
        assert "pkg_resources" not in sys.modules


def test_resource_filename_finds_the_frost_textures(ic):
    path = reference._resource_filename("imagecorruptions.corruptions", "./frost/frost1.png")
    assert path.endswith("frost1.png") and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_gaussian_wrapper_maps_multichannel_to_channel_axis(ic):
    from skimage.filters import gaussian

    module = sys.modules["imagecorruptions.corruptions"]
    x = np.random.default_rng(0).random((16, 16, 3))
    expected = gaussian(x, sigma=2, channel_axis=-1)
    np.testing.assert_array_equal(module.gaussian(x, sigma=2, multichannel=True), expected)
    np.testing.assert_array_equal(module.gaussian(x[..., 0], sigma=2), gaussian(x[..., 0], sigma=2))


def test_salt_and_pepper_uses_numpy_global_rng_like_skimage_018(ic):
    module = sys.modules["imagecorruptions.corruptions"]
    x = np.full((64, 64, 3), 0.5)
    np.random.seed(7)
    out = module.sk.util.random_noise(x, mode="s&p", amount=0.3)
    np.random.seed(7)  # the scikit-image 0.18 algorithm, drawn by hand
    flipped = np.random.choice([True, False], size=x.shape, p=[0.3, 0.7])
    salted = np.random.choice([True, False], size=x.shape, p=[0.5, 0.5])
    expected = np.where(flipped & salted, 1.0, np.where(flipped, 0.0, 0.5))
    np.testing.assert_array_equal(out, expected)
    assert abs((out != 0.5).mean() - 0.3) < 0.02
    # other modes and explicit generators still go to scikit-image's own implementation
    assert module.sk.util.random_noise(x, mode="gaussian", rng=1).shape == x.shape
    assert module.sk.color.rgb2hsv is __import__("skimage.color").color.rgb2hsv


def test_numpy_global_rng_state_is_restored(ic):
    np.random.seed(123)
    state = np.random.get_state()
    reference.reference_corrupt(digits(32), "gaussian_noise", 3, seed=5)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    np.random.seed(123)
    expected = np.random.rand(4)
    np.random.set_state(state)
    np.testing.assert_array_equal(np.random.rand(4), expected)


@pytest.mark.parametrize("name", RANDOM)
def test_seeded_per_image_and_batch_independent(ic, name):
    images = digits(32, n=3)
    batch = reference.reference_corrupt(images, name, 3, seed=11, indices=[10, 11, 12])
    again = reference.reference_corrupt(images, name, 3, seed=11, indices=[10, 11, 12])
    torch.testing.assert_close(batch, again, rtol=0, atol=0)
    one = reference.reference_corrupt(images[1:2], name, 3, seed=11, indices=[11])
    torch.testing.assert_close(batch[1:2], one, rtol=0, atol=0)
    other = reference.reference_corrupt(images, name, 3, seed=12, indices=[10, 11, 12])
    assert not torch.equal(batch, other)


def test_output_is_imagecorruptions_on_quantised_pixels(ic):
    images = digits(32, n=2)
    out = reference.reference_corrupt(images, "contrast", 2, seed=0)
    x = (images * 255).round() / 255
    mean = x.mean(dim=(2, 3), keepdim=True)
    expected = torch.floor(((x - mean) * 0.3 + mean).clamp(0, 1) * 255 + 1e-4) / 255  # np.uint8 truncates
    torch.testing.assert_close(out, expected, rtol=0, atol=1.01 / 255)


def test_grey_images_go_through_rgb_and_back_to_luma(ic):
    grey = digits(32, n=2, rgb=False)
    out = reference.reference_corrupt(grey, "contrast", 3, seed=0)
    assert out.shape == grey.shape
    rgb = reference.reference_corrupt(grey.expand(-1, 3, -1, -1), "contrast", 3, seed=0)
    torch.testing.assert_close(out, to_gray(rgb))


def test_keeps_dtype_and_does_not_modify_input(ic):
    images = digits(32).double()
    before = images.clone()
    out = reference.reference_corrupt(images, "pixelate", 1)
    assert out.dtype == torch.float64 and torch.equal(images, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "fogg"}, "Did you mean 'fog'"),
        ({"profile": "cifar"}, "only the 'imagenet' profile"),
        ({"severity": 6}, "severity must be an integer 1..5"),
        ({"images": torch.rand(1, 3, 16, 16)}, "at least 32x32"),
        ({"images": torch.rand(1, 3, 32, 32) * 2}, r"\[0,1\]"),
    ],
)
def test_bad_arguments_raise_project_error(kwargs, match):
    args = {"images": torch.rand(1, 3, 32, 32), "name": "fog", "severity": 1, **kwargs}
    with pytest.raises(RobustEvalError, match=match):
        reference.reference_corrupt(**args)


def test_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setattr(reference, "_module", None)
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import now raises ImportError
    with pytest.raises(RobustEvalError, match=r"pip install 'robustbench-lite\[imagecorruptions\]'"):
        reference.load_imagecorruptions()
    with pytest.raises(RobustEvalError, match="optional extra"):
        reference.reference_corrupt(torch.rand(1, 3, 32, 32), "fog", 1)
    assert reference.is_available() is False
