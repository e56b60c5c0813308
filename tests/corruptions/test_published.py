"""Readers of published -C sets: CIFAR-10-C / CIFAR-100-C .npy files and Tiny-ImageNet-C folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corruptions.published import SEVERITIES, load_c_dataset
from robustbench_lite.errors import RobustEvalError


def as_float_nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).float() / 255


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
