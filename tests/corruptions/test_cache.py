"""The on-disk corruption cache: CIFAR-10-C layout, manifest, damage detection, atomic stores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from corruptions import cache as cache_module
from corruptions.cache import SEVERITIES, CacheKey, CorruptionCache
from corruptions.published import load_c_dataset
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.files import sha256_file

N = 6


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(N, 3, 8, 8, generator=g)
    labels = torch.arange(N) % 4
    return images, labels


@pytest.fixture
def key(data):
    return CacheKey.for_data("toy", *data, profile="cifar", seed=0)


def assert_quantised_equal(actual: torch.Tensor | None, expected: torch.Tensor) -> None:
    """Equal up to the uint8 storage (half a grey level)."""
    assert actual is not None
    torch.testing.assert_close(actual, expected, rtol=0, atol=0.5 / 255 + 1e-6)


def corrupted(images: torch.Tensor, severity: int) -> torch.Tensor:
    return (images * (1 - severity / 10)).clamp(0, 1)


def full(images: torch.Tensor) -> dict[int, torch.Tensor]:
    return {s: corrupted(images, s) for s in SEVERITIES}


def test_roundtrip_in_cifar10c_layout(tmp_path, data, key):
    images, labels = data
    cache = CorruptionCache(tmp_path)
    assert cache.load("fog", 1, key) is None
    folder = cache.store("fog", full(images), key)
    for s in SEVERITIES:
        assert_quantised_equal(cache.load("fog", s, key), corrupted(images, s))
    stored = np.load(folder / "fog.npy")
    assert stored.dtype == np.uint8 and stored.shape == (5 * N, 8, 8, 3)  # NHWC, severities stacked 1..5
    expected = (corrupted(images, 3) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(stored[2 * N:3 * N], expected)
    np.testing.assert_array_equal(np.load(folder / "labels.npy"), np.tile(labels.numpy(), 5))
    assert np.load(folder / "labels.npy").dtype == np.int64


def test_manifest_describes_every_file(tmp_path, data, key):
    folder = CorruptionCache(tmp_path).store("fog", full(data[0]), key)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] | {"image_shape": tuple(manifest["key"]["image_shape"])} == {
        "dataset": "toy", "n": N, "image_shape": (3, 8, 8), "profile": "cifar", "seed": 0,
        "backend": "native",        "images_sha256": key.images_sha256, "labels_sha256": key.labels_sha256,
    }
    entry = manifest["files"]["fog.npy"]
    assert entry["corruption"] == "fog" and entry["severities"] == [1, 2, 3, 4, 5]
    assert entry["size"] == (folder / "fog.npy").stat().st_size
    assert entry["sha256"] == sha256_file(folder / "fog.npy")
    assert manifest["files"]["labels.npy"]["sha256"] == sha256_file(folder / "labels.npy")


def test_key_depends_on_data_and_settings(data, key):
    images, labels = data
    assert CacheKey.for_data("toy", images, labels, profile="cifar", seed=0) == key
    others = [
        CacheKey.for_data("toy", images, labels, profile="imagenet", seed=0),
        CacheKey.for_data("toy", images, labels, profile="cifar", seed=1),
        CacheKey.for_data("toy", images, labels, profile="cifar", seed=0, backend="imagecorruptions"),
        CacheKey.for_data("other", images, labels, profile="cifar", seed=0),
        CacheKey.for_data("toy", images.flip(0), labels, profile="cifar", seed=0),
        CacheKey.for_data("toy", images, labels.flip(0), profile="cifar", seed=0),
    ]
    assert all(k != key for k in others)
    assert len({k.slug() for k in [key, *others]}) == len(others) + 1


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete", "wrong_shape", "bad_manifest"])
def test_damaged_file_is_detected_and_rebuilt(tmp_path, data, key, damage, caplog):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    folder = cache.store("fog", full(images), key)
    path = folder / "fog.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "flip_byte":
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
        os.utime(path, ns=(1, 1))  # a same-size edit is still re-hashed (mtime changed)
    elif damage == "delete":
        path.unlink()
    elif damage == "wrong_shape":
        np.save(path, np.zeros((5 * N, 8, 8, 1), np.uint8))
    else:
        (folder / "manifest.json").write_text("{not json")
    fresh = CorruptionCache(tmp_path)  # a later run, nothing verified in memory
    for c in (cache, fresh):
        assert c.load("fog", 2, key) is None
        assert c.check("fog", 2, key) is not None
    # the caller recomputes and stores: the file is rebuilt and used again
    fresh.store("fog", full(images), key)
    assert_quantised_equal(fresh.load("fog", 2, key), corrupted(images, 2))
    assert CorruptionCache(tmp_path).check("fog", 2, key) is None


def test_damaged_full_file_falls_back_to_recomputed_severities(tmp_path, data, key):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    folder = cache.store("fog", full(images), key)
    (folder / "fog.npy").write_bytes((folder / "fog.npy").read_bytes()[:-10])
    calls = []

    def compute(severity):
        calls.append(severity)
        return corrupted(images, severity)

    out = cache.get_or_compute("fog", [2], key, compute)
    assert calls == [2]
    assert_quantised_equal(out[2], corrupted(images, 2))
    assert not (folder / "fog.npy").exists()  # the damaged file is dropped, not merged
    assert_quantised_equal(CorruptionCache(tmp_path).load("fog", 2, key), corrupted(images, 2))
    assert cache.load("fog", 1, key) is None


def test_storing_some_severities_updates_a_complete_file(tmp_path, data, key):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    folder = cache.store("fog", full(images), key)
    cache.store("fog", {3: images}, key)
    assert not list(folder.glob("partial/*.npy"))
    assert_quantised_equal(cache.load("fog", 3, key), images)
    assert_quantised_equal(cache.load("fog", 4, key), corrupted(images, 4))


def test_mismatched_manifest_is_not_used(tmp_path, data, key):
    images, labels = data
    cache = CorruptionCache(tmp_path)
    folder = cache.store("fog", full(images), key)
    other = CacheKey.for_data("toy", images, labels, profile="cifar", seed=1)
    # someone copies the directory of seed 0 to where seed 1 lives
    target = cache.directory(other)
    target.mkdir(parents=True)
    for f in folder.iterdir():
        if f.is_file():
            (target / f.name).write_bytes(f.read_bytes())
    assert cache.load("fog", 1, other) is None
    assert "seed" in cache.check("fog", 1, other)
    cache.store("fog", full(images * 0.5), other)  # clears the foreign files first
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["key"]["seed"] == 1
    assert_quantised_equal(cache.load("fog", 1, other), corrupted(images * 0.5, 1))


def test_partial_severities_keep_the_layout_true(tmp_path, data, key):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    folder = cache.store("snow", {1: corrupted(images, 1), 3: corrupted(images, 3)}, key)
    assert not (folder / "snow.npy").exists()  # a <name>.npy is always all five severities
    assert cache.load("snow", 3, key) is not None and cache.load("snow", 2, key) is None
    with pytest.raises(RobustEvalError, match="no <corruption>.npy files"):
        load_c_dataset(folder)  # partial severities are not a -C file
    cache.store("snow", {s: corrupted(images, s) for s in (2, 4, 5)}, key)
    assert (folder / "snow.npy").exists() and not list(folder.glob("partial/*.npy"))
    assert np.load(folder / "snow.npy").shape[0] == 5 * N
    for s in SEVERITIES:
        assert_quantised_equal(cache.load("snow", s, key), corrupted(images, s))


def test_get_or_compute_computes_only_misses(tmp_path, data, key):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    calls = []

    def compute(severity):
        calls.append(severity)
        return corrupted(images, severity)

    cache.get_or_compute("fog", [1, 3], key, compute)
    out = cache.get_or_compute("fog", [1, 2, 3], key, compute)
    assert calls == [1, 3, 2] and sorted(out) == [1, 2, 3]


def test_store_validates_shapes_and_names(tmp_path, data, key):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    with pytest.raises(RobustEvalError, match="shape"):
        cache.store("fog", {1: images[:2]}, key)
    with pytest.raises(RobustEvalError, match="severity"):
        cache.store("fog", {6: images}, key)
    with pytest.raises(RobustEvalError, match="invalid corruption name"):
        cache.store("../evil", {1: images}, key)


def test_grey_images_are_stored_with_one_channel(tmp_path):
    images, labels = torch.rand(4, 1, 8, 8), torch.arange(4)
    key = CacheKey.for_data("grey", images, labels, profile="cifar", seed=0)
    cache = CorruptionCache(tmp_path)
    folder = cache.store("contrast", {s: images for s in SEVERITIES}, key)
    assert np.load(folder / "contrast.npy").shape == (20, 8, 8, 1)
    assert cache.load("contrast", 4, key).shape == (4, 1, 8, 8)


def test_store_does_not_keep_partial_file_on_failure(tmp_path, data, key, monkeypatch):
    images, _ = data
    cache = CorruptionCache(tmp_path)
    cache.store("fog", full(images), key)
    before = (cache.directory(key) / "fog.npy").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.store("fog", full(images * 0.1), key)
    monkeypatch.undo()
    assert (cache.directory(key) / "fog.npy").read_bytes() == before
    assert CorruptionCache(tmp_path).load("fog", 1, key) is not None


def test_cache_directory_is_a_valid_c_dataset(tmp_path, data, key):
    images, labels = data
    folder = CorruptionCache(tmp_path).store("fog", full(images), key)
    c_images, c_labels = load_c_dataset(folder)
    assert c_images.corruptions == ("fog",)
    torch.testing.assert_close(c_labels, labels)
    assert_quantised_equal(c_images[("fog", 4)], corrupted(images, 4))
