"""Image sources of the corruption suite: native, reference package, published -C files, on-disk cache."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from corruptions import CORRUPTIONS
from corruptions.cache import SEVERITIES, CacheKey, CorruptionCache
from corruptions.published import load_c_dataset
from corruptions.sources import COMPUTED_SOURCES, CachedSource, NativeSource, PublishedSource, ReferenceSource
from robustbench_lite.errors import RobustEvalError

N = 10


@pytest.fixture
def clean():
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 3, 16, 16, generator=g), torch.arange(N) % 3, torch.arange(100, 100 + N)


def batches(images, indices, size=4):
    """What the suite passes: clean batches (on the device) with their dataset indices, in order."""
    calls = []

    def clean_batches():
        calls.append(1)
        return ((images[i:i + size], indices[i:i + size]) for i in range(0, len(images), size))

    return clean_batches, calls


def test_native_source_hands_out_a_timed_batch_transform(clean):
    images, _, indices = clean
    source = NativeSource("cifar", seed=3)
    assert (source.profile, source.backend, source.cache_info()) == ("cifar", "native", {})
    got = source.images("shot_noise", 2)
    assert got.images is None  # made batch by batch while predicting, never held whole
    expected = CORRUPTIONS.get("shot_noise", severity=2, profile="cifar", seed=3)(images[:4], indices[:4])
    assert torch.equal(got.transform(images[:4], indices[:4]), expected)
    assert source.corruption_seconds > 0
    assert source.availability("frost") == CORRUPTIONS.entry("frost").availability()
    assert source.select(["fog", "contrast"], explicit=False) == ["fog", "contrast"]


def test_backends_map_to_their_sources():
    assert COMPUTED_SOURCES == {"native": NativeSource, "imagecorruptions": ReferenceSource}
    assert ReferenceSource("imagenet", 0).availability("frost") is None  # the package has its own frost images


@pytest.mark.skipif(importlib.util.find_spec("imagecorruptions") is None,
                    reason="imagecorruptions is not installed (optional extra)")
def test_reference_source_calls_the_reference_package():
    from corruptions.reference import reference_corrupt

    images, indices = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 9])
    source = ReferenceSource("imagenet", seed=1)
    assert source.backend == "imagecorruptions"
    out = source.images("impulse_noise", 3).transform(images, indices)
    assert torch.equal(out, reference_corrupt(images, "impulse_noise", 3, 1, indices, profile="imagenet"))


def test_cached_source_computes_misses_once_and_stores_them_together(tmp_path, clean):
    images, labels, indices = clean
    key = CacheKey.for_data("toy", images, labels, profile="cifar", seed=0)
    clean_batches, calls = batches(images, indices)
    source = CachedSource(NativeSource("cifar", 0), CorruptionCache(tmp_path), key, SEVERITIES, clean_batches)
    native = CORRUPTIONS.get("gaussian_noise", severity=4, profile="cifar", seed=0)
    got = {s: source.images("gaussian_noise", s).images for s in SEVERITIES}
    assert len(calls) == 5 and (source.hits, source.misses) == (0, 5)
    # the corrupted set as computed batch by batch (the batch size does not matter: per-image seeds)
    assert torch.equal(got[4], native(images, indices))
    folder = source.cache.directory(key)
    assert (folder / "gaussian_noise.npy").is_file() and not list(folder.glob("partial/*"))
    assert source.cache_info() == {"dir": str(folder), "hits": 0, "misses": 5}
    assert source.corruption_seconds > 0

    again = CachedSource(NativeSource("cifar", 0), CorruptionCache(tmp_path), key, [2, 4], clean_batches)
    stored = again.images("gaussian_noise", 4).images
    assert (again.hits, again.misses) == (2, 0) and len(calls) == 5 and again.corruption_seconds == 0
    quantised = got[4].mul(255).round().div(255)
    torch.testing.assert_close(stored, quantised, rtol=0, atol=1e-6)
    assert again.images("gaussian_noise", 2).images is not None and again.hits == 2  # handed out, not reloaded
    assert again.images("gaussian_noise", 2).images is not None and again.hits == 3  # asked again: loaded again


def test_cached_source_keeps_the_computing_sources_names(tmp_path, clean):
    images, labels, indices = clean
    key = CacheKey.for_data("toy", images, labels, profile="imagenet", seed=0, backend="imagecorruptions")
    source = CachedSource(ReferenceSource("imagenet", 0), CorruptionCache(tmp_path), key, [1],
                          batches(images, indices)[0])
    assert (source.profile, source.backend) == ("imagenet", "imagecorruptions")
    assert source.availability("frost") is None


def write_c(root, n=4, names=("fog", "contrast")):
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, (5 * n, 8, 8, 3), dtype=np.uint8) for name in names}
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", array)
    np.save(root / "labels.npy", np.arange(n, dtype=np.int64))
    return load_c_dataset(root)[0]


def test_published_source_reads_the_scored_images(tmp_path):
    corrupted = write_c(tmp_path / "C")
    source = PublishedSource(corrupted, [2, 0], "C-dir")
    assert (source.profile, source.backend, source.corruption_seconds) == ("precomputed", "files", 0.0)
    got = source.images("fog", 3)
    assert got.transform is None and torch.equal(got.images, corrupted.get_images("fog", 3, [2, 0]))


def test_published_source_scores_what_the_files_hold(tmp_path):
    source = PublishedSource(write_c(tmp_path / "C"), range(4), "C-dir")
    assert source.select(["snow", "fog", "contrast"], explicit=False) == ["fog", "contrast"]
    assert source.select(["contrast"], explicit=True) == ["contrast"]
    with pytest.raises(RobustEvalError, match="C-dir has no snow; it holds contrast, fog"):
        source.select(["snow", "fog"], explicit=True)
