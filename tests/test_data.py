"""Loaders read small files written here in the real formats; missing data errors say how to fix it."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_lite import data
from robustbench_lite.errors import RobustEvalError

FASHION_MNIST_AVAILABLE = (data.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file()

RNG = np.random.default_rng(0)


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def make_idx_dir(root, prefix: str, n: int, gz: bool = True):
    images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


@pytest.mark.parametrize("name,sub", [("fashion-mnist", "fashion-mnist"), ("mnist", "MNIST/raw")])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader(tmp_path, name, sub, gz):
    d = tmp_path / sub
    d.mkdir(parents=True)
    images, labels = make_idx_dir(d, "t10k", 5, gz)
    ds = data.load(name, "test", data_dir=tmp_path)
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    x = ds.float_images()
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert ds.num_classes == 10 and ds.channels == 1


def test_truncated_idx_is_an_error(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    make_idx_dir(d, "t10k", 5, gz=False)
    p = d / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(RobustEvalError, match="truncated"):
        data.load("mnist", "test", data_dir=tmp_path)


def test_data_dir_comes_before_env_var(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "mnist", tmp_path / "b" / "mnist"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    make_idx_dir(a, "t10k", 3)
    make_idx_dir(b, "t10k", 4)
    monkeypatch.setenv("ROBUST_EVAL_DATA", str(tmp_path / "b"))
    assert len(data.load("mnist", "test")) == 4
    assert len(data.load("mnist", "test", data_dir=tmp_path / "a")) == 3


def _cifar_batch(n: int, label_key: bytes) -> dict:
    return {b"batch_label": b"testing batch", b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: RNG.integers(0, 10, n).tolist(), b"filenames": [b"x.png"] * n}


def test_cifar10_python_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = {}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        batches[name] = _cifar_batch(4, b"labels")
        (d / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    names = [c.encode() for c in data.CIFAR10_CLASSES]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    test = data.load("cifar10", "test", data_dir=tmp_path)
    assert test.images.shape == (4, 3, 32, 32) and test.classes == data.CIFAR10_CLASSES
    np.testing.assert_array_equal(test.images.numpy().reshape(4, -1), batches["test_batch"][b"data"])
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    assert len(data.load("cifar10", "train", data_dir=tmp_path)) == 20


def test_cifar100_python_pickles(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name in ["train", "test"]:
        batch = _cifar_batch(6, b"fine_labels")
        batch[b"coarse_labels"] = [0] * 6
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    fine = [f"class{i}".encode() for i in range(100)]
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}))
    ds = data.load("cifar100", "test", data_dir=tmp_path)
    assert ds.num_classes == 100 and ds.classes[3] == "class3" and ds.images.shape == (6, 3, 32, 32)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(RobustEvalError, match="not a CIFAR python batch file"):
        data.load("cifar10", "test", data_dir=tmp_path)


def _png(path, size=(64, 64), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (*size, 3) if mode == "RGB" else size
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    for w in wnids:
        for i in range(2):
            _png(root / "train" / w / "images" / f"{w}_{i}.JPEG")
    ann = []
    for i, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        _png(root / "val" / "images" / f"val_{i}.JPEG")
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    test = data.load("tiny-imagenet", "test", data_dir=tmp_path)
    assert test.labels.tolist() == [1, 0, 1] and test.images.shape == (3, 3, 64, 64)
    assert test.classes == ("goldfish", "European fire salamander")
    assert len(data.load("tiny-imagenet", "train", data_dir=tmp_path)) == 4


def test_imagefolder_with_and_without_splits(tmp_path):
    for c in ["cat", "dog"]:
        for i in range(3):
            _png(tmp_path / "flat" / c / f"{i}.png", (20, 24), "L")
            _png(tmp_path / "split" / "train" / c / f"{i}.png")
            _png(tmp_path / "split" / "test" / c / f"{i}.png")
    flat = data.load(f"imagefolder:{tmp_path / 'flat'}", "test")
    assert flat.classes == ("cat", "dog") and flat.images.shape == (6, 1, 20, 24)
    assert flat.labels.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(RobustEvalError, match="no train/ subfolder"):
        data.load(f"imagefolder:{tmp_path / 'flat'}", "train")
    assert data.load(f"imagefolder:{tmp_path / 'split'}", "train").images.shape == (6, 3, 64, 64)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(RobustEvalError, match="needs a path"):
        data.load("imagefolder")
    with pytest.raises(RobustEvalError, match="is not a directory"):
        data.load(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(RobustEvalError, match="takes no argument"):
        data.load("mnist:foo")


def test_missing_data_names_places_and_command(tmp_path):
    with pytest.raises(RobustEvalError) as exc:
        data.load("cifar10", "test", data_dir=tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "torchvision.datasets.CIFAR10" in msg and "--data-dir" in msg


def test_unknown_dataset_and_split():
    with pytest.raises(RobustEvalError, match="Did you mean 'fashion-mnist'"):
        data.load("fashion_mnist")
    with pytest.raises(RobustEvalError, match="valid splits: train, test"):
        data.load("digits", "val")


def test_default_eps_table():
    assert data.default_eps("cifar10", "Linf") == pytest.approx(8 / 255)
    assert data.default_eps("mnist", "L2") == 2.0
    assert data.default_eps("fashion-mnist", "linf") == 0.1
    assert data.default_eps("fashion-mnist:subpop-source", "L2") == 1.5  # a view has its base's budget
    for dataset, budgets in data.default_eps_table().items():
        assert set(budgets) == {"Linf", "L2"}, dataset
        assert 0 < budgets["Linf"] <= 1
    with pytest.raises(
        RobustEvalError, match=r"no default eps for dataset 'cifar-10'.*Did you mean 'cifar10'.*--eps"
    ):
        data.default_eps("cifar-10")
    with pytest.raises(RobustEvalError, match="pass the budget explicitly"):
        data.default_eps("imagefolder:/data/x")
    with pytest.raises(RobustEvalError, match="norm must be one of Linf, L2, got 'L1'"):
        data.default_eps("mnist", "L1")


def test_digits_split_is_disjoint_and_stable():
    from sklearn.datasets import load_digits

    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 450 and test.size == (8, 8)
    # Together the two splits are exactly the 1,797 images: none lost, none in both.
    both = torch.cat([train.images, test.images]).flatten(1)
    full = torch.from_numpy((load_digits().images * (255 / 16)).round().astype(np.uint8)).flatten(1)
    assert sorted(map(bytes, both.numpy())) == sorted(map(bytes, full.numpy()))
    assert torch.equal(data.load("digits", "test").labels, test.labels)
    assert torch.bincount(test.labels).min() >= 43  # stratified: about a quarter of each class (174..183)


def test_limit_subset_and_indices(digits_test):
    sub = digits_test.limit(10)
    assert len(sub) == 10 and sub.indices.tolist() == list(range(10))
    picked = digits_test.subset(torch.tensor([5, 2]))
    assert picked.indices.tolist() == [5, 2]
    batches = list(digits_test.limit(10).batches(4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert batches[2][2].tolist() == [8, 9]


@pytest.mark.skipif(not FASHION_MNIST_AVAILABLE, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_location():
    ds = data.load("fashion-mnist", "test")
    assert len(ds) == 10000 and ds.classes[9] == "Ankle boot"
    assert ds.source.startswith("/usr/share/datasets/fashion-mnist")
