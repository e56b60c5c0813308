"""The on-disk corruption cache (CIFAR-10-C layout, manifest, atomic writes) and the -C dataset readers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corruptions import cache as cache_module
from corruptions.cache import SEVERITIES, CacheKey, CorruptionCache, atomic_write, load_c_dataset
from robustbench_lite.errors import RobustEvalError

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


def as_float_nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).float() / 255


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
    assert entry["sha256"] == cache_module.sha256_file(folder / "fog.npy")
    assert manifest["files"]["labels.npy"]["sha256"] == cache_module.sha256_file(folder / "labels.npy")


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


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "x.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary file left behind
    sha, size = atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and size == 3
    assert sha == cache_module.hashlib.sha256(b"new").hexdigest()


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


# ----------------------------------------------------------------------------- -C dataset readers


def write_cifar_c(root: Path, n: int = 4, names=("fog", "contrast")) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8) for name in names}
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", array)
    np.save(root / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.int64))
    return arrays


def test_load_cifar10c_directory_lazily(tmp_path):
    arrays = write_cifar_c(tmp_path / "CIFAR-10-C")
    images, labels = load_c_dataset(tmp_path / "CIFAR-10-C")
    assert images.corruptions == ("contrast", "fog") and images.severities == SEVERITIES and images.n == 4
    assert len(images) == 10 and ("fog", 3) in images and ("fog", 6) not in images
    np.testing.assert_array_equal(labels.numpy(), np.arange(4))
    x = images[("fog", 3)]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, as_float_nchw(arrays["fog"][8:12]))
    sub = images.get_images("contrast", 5, indices=[3, 0])
    torch.testing.assert_close(sub, as_float_nchw(arrays["contrast"][[19, 16]]))
    assert isinstance(images._sources["fog"], np.memmap)  # memory-mapped, not read whole
    with pytest.raises(RobustEvalError, match="available: contrast, fog"):
        images[("snow", 1)]


def test_cache_directory_is_a_valid_c_dataset(tmp_path, data, key):
    images, labels = data
    folder = CorruptionCache(tmp_path).store("fog", full(images), key)
    c_images, c_labels = load_c_dataset(folder)
    assert c_images.corruptions == ("fog",)
    torch.testing.assert_close(c_labels, labels)
    assert_quantised_equal(c_images[("fog", 4)], corrupted(images, 4))


@pytest.mark.parametrize(
    ("breakage", "match"),
    [
        ("missing_dir", "directory not found"),
        ("empty_dir", "labels.npy"),
        ("no_npy", "no <corruption>.npy files"),
        ("bad_labels", "labels; expected 20"),
        ("truncated", "cannot read"),
        ("wrong_dtype", "must hold uint8 images"),
        ("not_5n", "not 5 severities"),
        ("mixed_lengths", "differ in shape"),
    ],
)
def test_malformed_c_directories_raise_clear_errors(tmp_path, breakage, match):
    root = tmp_path / "C"
    if breakage != "missing_dir":
        root.mkdir()
    if breakage not in ("missing_dir", "empty_dir"):
        write_cifar_c(root)
    if breakage == "no_npy":
        for f in root.glob("*.npy"):
            if f.name != "labels.npy":
                f.unlink()
    elif breakage == "bad_labels":
        np.save(root / "labels.npy", np.zeros(7, np.int64))
    elif breakage == "truncated":
        (root / "fog.npy").write_bytes((root / "fog.npy").read_bytes()[:100])
    elif breakage == "wrong_dtype":
        np.save(root / "fog.npy", np.zeros((20, 32, 32, 3), np.float32))
    elif breakage == "not_5n":
        for name in ("fog", "contrast"):
            np.save(root / f"{name}.npy", np.zeros((21, 32, 32, 3), np.uint8))
    elif breakage == "mixed_lengths":
        np.save(root / "fog.npy", np.zeros((25, 32, 32, 3), np.uint8))
    with pytest.raises(RobustEvalError, match=match):
        load_c_dataset(root)


def write_tiny_imagenet_c(root: Path, names=("fog", "pixelate"), wnids=("n02", "n01"), per_class=2) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        for s in SEVERITIES:
            for wnid in wnids:
                folder = root / name / str(s) / wnid
                folder.mkdir(parents=True)
                for i in range(per_class):
                    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"val_{i}.JPEG", quality=95)


def test_load_tiny_imagenet_c_folders(tmp_path):
    root = tmp_path / "Tiny-ImageNet-C"
    write_tiny_imagenet_c(root)
    images, labels = load_c_dataset(root)
    assert images.corruptions == ("fog", "pixelate") and images.n == 4
    np.testing.assert_array_equal(labels.numpy(), [0, 0, 1, 1])  # classes are the sorted wnids
    x = images[("pixelate", 2)]
    assert x.shape == (4, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    first = np.array(Image.open(root / "pixelate" / "2" / "n01" / "val_0.JPEG").convert("RGB"))
    torch.testing.assert_close(x[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255)
    assert images.get_images("fog", 1, indices=slice(1, 3)).shape == (2, 3, 64, 64)


def test_tiny_imagenet_c_inconsistent_folders_raise(tmp_path):
    root = tmp_path / "Tiny-ImageNet-C"
    write_tiny_imagenet_c(root)
    (root / "fog" / "3" / "n02" / "val_1.JPEG").unlink()
    images, _ = load_c_dataset(root)
    with pytest.raises(RobustEvalError, match="same images"):
        images[("fog", 3)]
    for s in SEVERITIES[1:]:
        for f in (root / "pixelate" / str(s)).rglob("*"):
            if f.is_file():
                f.unlink()
        for d in sorted((root / "pixelate" / str(s)).rglob("*"), reverse=True):
            d.rmdir()
        (root / "pixelate" / str(s)).rmdir()
    with pytest.raises(RobustEvalError, match="lacks severity folders"):
        load_c_dataset(root)
