"""Shift splits and the shift suite: reproducible, disjoint where promised, scored like the clean suite."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from image_contract import BATCHES, check_transform, real_batch
from PIL import Image

from robustbench_lite import cli, data, models, shift
from robustbench_lite.api import evaluate
from robustbench_lite.config import RunConfig, TrainConfig
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.sources import checkpoints
from robustbench_lite.suites.shift import score_level

COVARIATE = shift.SHIFTS.list("covariate/*")
RNG = np.random.default_rng(0)


def run_shift(checkpoint, data_dir=None, **options):
    config = RunConfig(checkpoint=str(checkpoint), suites=["shift"], device="cpu", show_progress=False,
                       suite_options={"shift": options}, data_dir=data_dir)
    return evaluate(config, log=lambda m: None).suites["shift"]


def main_exit(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


# ---------------------------------------------------------------------------------------------
# Registry and options


def test_registry_names_and_selection():
    names = shift.SHIFTS.list()
    for expected in ("covariate/rotation", "covariate/brightness", "covariate/resolution", "label/dirichlet",
                     "subpop/source", "subpop/target", "natural/cifar10.1-v4", "natural/cifar10.1-v6",
                     "natural/cifar10.2-test", "natural/folder"):
        assert expected in names
    chosen = shift.select(shift.ShiftOptions(splits=("covariate/*", "label/dirichlet")))
    assert [s.name for s, _ in chosen] == COVARIATE + ["label/dirichlet"]
    assert dict((s.name, e) for s, e in chosen)["label/dirichlet"] is True
    assert not any(e for s, e in chosen if s.name.startswith("covariate/"))


@pytest.mark.parametrize("options,match", [
    ({"splits": "covariate/rotaton"}, "unknown shift split 'covariate/rotaton'. Did you mean 'covariate/rotation'"),
    ({"splits": "nothing/*"}, "no shift split matches"),
    ({"alphas": "0"}, "must be > 0"),
    ({"alphas": [1.0, -2]}, "must be > 0"),
    ({"alphas": "abc"}, "not a number"),
    ({"draws": 0}, "--shift-draws"),
    ({"intensities": "6"}, "--shift-intensities must be an integer in 1..5"),
    ({"colour": 1}, "unknown shift option"),
])
def test_bad_options(options, match):
    with pytest.raises(RobustEvalError, match=match):
        shift.ShiftOptions.from_mapping(options)


def test_options_accept_cli_strings_and_yaml_values():
    a = shift.ShiftOptions.from_mapping({"splits": ["covariate/*,label/*"], "alphas": "0.5,2", "draws": "3",
                                      "intensities": [5, 1]})
    assert a.splits == ("covariate/*", "label/*") and a.alphas == (0.5, 2.0) and a.draws == 3
    assert a.intensities == (1, 5)
    assert shift.ShiftOptions.from_mapping({"alphas": 0.3}).alphas == (0.3,)


# ---------------------------------------------------------------------------------------------
# Covariate transforms: pure, seeded per image, graded


@pytest.mark.parametrize("name", COVARIATE)
def test_covariate_contract(name):
    split = shift.SHIFTS.entry(name)
    channels = 3 if split.needs_rgb else 1
    x = torch.rand(6, channels, 12, 12, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    idx = torch.arange(10, 16)
    out = split.transform(3, seed=0)(x, idx)
    assert torch.equal(x, before), "input modified in place"
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    # Same seed: identical; batched equals per-sample (randomness keyed by sample index, not position).
    assert torch.equal(out, split.transform(3, seed=0)(x, idx))
    single = torch.cat([split.transform(3, seed=0)(x[i:i + 1], idx[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(out, single, atol=1e-6, rtol=0)
    # Graded: a higher intensity moves the image further.
    dist = [(split.transform(i, 0)(x, idx) - x).abs().mean().item() for i in shift.INTENSITIES]
    assert dist[0] > 0 and dist[-1] > dist[0]


@pytest.mark.parametrize("name", [n for n in COVARIATE if shift.SHIFTS.entry(n).randoms])
def test_covariate_seed_changes_random_ones(name):
    split = shift.SHIFTS.entry(name)
    x = torch.rand(16, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    idx = torch.arange(16)
    assert not torch.equal(split.transform(2, 0)(x, idx), split.transform(2, 1)(x, idx))


def _applicable(name: str) -> list[str]:
    """The contract batches a covariate split runs on (colour-only splits: the RGB batch)."""
    return [b for b in BATCHES if not shift.SHIFTS.entry(name).needs_rgb or real_batch(b).shape[1] == 3]


@pytest.mark.parametrize("intensity", shift.INTENSITIES)
@pytest.mark.parametrize("name,batch", [(n, b) for n in COVARIATE for b in _applicable(n)])
def test_covariate_image_contract(name, batch, intensity):
    """The corruptions' contract (tests/image_contract.py) on real images, at every intensity."""
    images = real_batch(batch)
    indices = list(range(100, 100 + len(images)))
    transform = shift.SHIFTS.entry(name).transform(intensity, seed=0)
    out = check_transform(transform, images, indices)
    torch.testing.assert_close(shift.SHIFTS.entry(name).transform(intensity, seed=0)(images, indices), out,
                               atol=0, rtol=0)


@pytest.mark.parametrize("name", COVARIATE)
def test_covariate_default_indices_and_empty_batch(name):
    transform = shift.SHIFTS.entry(name).transform(3, seed=0)
    images = real_batch("rgb32")
    torch.testing.assert_close(transform(images), transform(images, list(range(len(images)))), atol=0, rtol=0)
    empty = images[:0]
    out = transform(empty)
    assert out.shape == empty.shape and out.dtype == empty.dtype


def test_covariate_checks_the_pixel_contract():
    with pytest.raises(RobustEvalError, match=r"must be in \[0,1\]"):
        shift.SHIFTS.entry("covariate/rotation").transform(1, 0)(real_batch("gray32") * 255)
    with pytest.raises(RobustEvalError, match="must have 3 channels"):
        shift.SHIFTS.entry("covariate/colour").transform(1, 0)(real_batch("gray32"))


def test_covariate_kernels_against_direct_formulas():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(shift.invert(x, 0.0), 1 - x)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(shift.contrast(x, 0.5), ((x - m) * 0.5 + m).clamp(0, 1))
    u = torch.tensor([[0.9], [0.1]])  # +delta, -delta
    torch.testing.assert_close(shift.brightness(x, 0.2, u), torch.stack([(x[0] + 0.2), (x[1] - 0.2)]).clamp(0, 1))
    # A 90-degree rotation of a square image is a transpose-and-flip (up to direction).
    rot = shift.rotate(x, 90, torch.tensor([[0.9], [0.9]]))
    options = [torch.rot90(x, k, dims=(2, 3)) for k in (1, 3)]
    assert min((rot - o).abs().max().item() for o in options) < 1e-4
    grey = torch.rand(2, 3, 4, 4)
    grey[:, 1] = grey[:, 2] = grey[:, 0]
    torch.testing.assert_close(shift.hue(grey, 90, torch.tensor([[0.9], [0.1]])), grey, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Label shift


def test_dirichlet_resample_reproducible_and_identity_preserving():
    labels = torch.from_numpy(RNG.integers(0, 10, 500))
    idx, prior = shift.dirichlet_resample(labels, 10, 0.5, seed=3, draw=1)
    again, prior2 = shift.dirichlet_resample(labels, 10, 0.5, seed=3, draw=1)
    assert torch.equal(idx, again) and np.array_equal(prior, prior2)
    assert not torch.equal(idx, shift.dirichlet_resample(labels, 10, 0.5, seed=4, draw=1)[0])
    assert not torch.equal(idx, shift.dirichlet_resample(labels, 10, 0.5, seed=3, draw=2)[0])
    assert len(idx) == 500 and idx.min() >= 0 and idx.max() < 500
    assert prior.sum() == pytest.approx(1.0)
    # Small alpha concentrates the prior; large alpha keeps it near uniform.
    def top(alpha):
        return np.mean([shift.dirichlet_resample(labels, 10, alpha, 0, d)[1].max() for d in range(20)])
    assert top(0.05) > 0.6 > 0.2 > top(100.0)


def test_dirichlet_resample_only_uses_present_classes():
    labels = torch.tensor([0, 0, 2, 2, 2, 5])
    for d in range(10):
        idx, prior = shift.dirichlet_resample(labels, 8, 1.0, 0, d)
        assert set(labels[idx].tolist()) <= {0, 2, 5}
        assert prior[[1, 3, 4, 6, 7]].sum() == 0
    with pytest.raises(RobustEvalError, match="> 0"):
        shift.dirichlet_resample(labels, 8, 0.0, 0, 0)


# ---------------------------------------------------------------------------------------------
# Metrics against direct computations


def _direct_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, n_bins + 1)[:-1], np.linspace(0, 1, n_bins + 1)[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return ece


def test_scores_match_sklearn_and_direct_computation():
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(300, 6, generator=g) * 2
    labels = torch.randint(0, 6, (300,), generator=g)
    probs = logits.double().softmax(1).numpy()
    s = score_level(shift.Level("", {}, logits, labels), 6, reference_accuracy=0.9)
    assert s.nll == pytest.approx(log_loss(labels.numpy(), probs, labels=range(6)), rel=1e-6)
    assert s.ece == pytest.approx(_direct_ece(probs, labels.numpy()), abs=1e-9)
    assert s.accuracy == pytest.approx(accuracy_score(labels.numpy(), probs.argmax(1)))
    assert s.drop == pytest.approx(0.9 - s.accuracy)
    assert s.f1_macro == pytest.approx(f1_score(labels.numpy(), probs.argmax(1), average="macro"))
    # Draws: each scored on its own resample, the level reports the mean and spread.
    draws = [shift.dirichlet_resample(labels, 6, 1.0, 0, d)[0] for d in range(4)]
    s = score_level(shift.Level("alpha=1", {}, logits, labels, draws), 6, reference_accuracy=0.9)
    nlls = [log_loss(labels[i].numpy(), probs[i.numpy()], labels=range(6)) for i in draws]
    eces = [_direct_ece(probs[i.numpy()], labels[i].numpy()) for i in draws]
    assert s.nll == pytest.approx(np.mean(nlls), rel=1e-6) and s.ece == pytest.approx(np.mean(eces), abs=1e-9)
    assert s.spread["nll"]["min"] == pytest.approx(min(nlls), rel=1e-6)
    assert s.spread["accuracy"]["std"] == pytest.approx(np.std([d["accuracy"] for d in s.draws], ddof=1))


# ---------------------------------------------------------------------------------------------
# Subpopulation hierarchies


CIFAR100_SPARSE2COARSE = [  # github.com/ryanchankh/cifar100coarse, an independent copy of the mapping
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def test_cifar100_hierarchy_is_the_standard_one():
    h = shift.HIERARCHIES.entry("cifar100")
    assert list(h.parent) == CIFAR100_SPARSE2COARSE
    assert len(h.coarse) == 20 and sorted(h.fine) == list(h.fine)
    assert not set(h.source) & set(h.target) and len(h.source) == 60 and len(h.target) == 40
    for g in range(20):
        assert sum(h.parent[i] == g for i in h.source) == 3 and sum(h.parent[i] == g for i in h.target) == 2


def test_fashion_mnist_hierarchy_is_disjoint_where_groups_split():
    h = shift.HIERARCHIES.entry("fashion-mnist")
    assert {"tops", "bottoms", "footwear", "bags"} <= set(h.coarse)
    for g, c in enumerate(h.coarse):
        members = {i for i, p in enumerate(h.parent) if p == g}
        src, tgt = members & set(h.source), members & set(h.target)
        assert src and tgt
        if len(members) > 1:
            assert not src & tgt, c
    assert [h.fine[i] for i in h.shared] == ["Trouser", "Dress", "Bag"]


def test_coarse_logits_sum_group_probabilities():
    h = shift.HIERARCHIES.entry("fashion-mnist")
    fine = torch.randn(5, 10)
    coarse = h.coarse_logits(fine).softmax(1)
    parent = torch.tensor(h.parent)
    expected = torch.stack([fine.softmax(1)[:, parent == g].sum(1) for g in range(len(h.coarse))], 1)
    torch.testing.assert_close(coarse, expected)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    for prefix, n in (("train", 60), ("t10k", 40)):
        labels = np.arange(n) % 10
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_subpop_views_are_datasets(fashion_dir):
    h = shift.HIERARCHIES.entry("fashion-mnist")
    base = data.load("fashion-mnist", "test", data_dir=fashion_dir)
    src = data.load("fashion-mnist:subpop-source", "test", data_dir=fashion_dir)
    tgt = data.load("fashion-mnist:subpop-target", "test", data_dir=fashion_dir)
    assert src.classes == tgt.classes == h.coarse and src.name == "fashion-mnist:subpop-source"
    fine_src, fine_tgt = set(base.labels[src.indices].tolist()), set(base.labels[tgt.indices].tolist())
    assert fine_src == set(h.source) and fine_tgt == set(h.target)
    # Disjoint images except the shared single-class groups; labels are each image's coarse class.
    both = set(src.indices.tolist()) & set(tgt.indices.tolist())
    assert {int(base.labels[i]) for i in both} == set(h.shared)
    assert torch.equal(src.labels, torch.tensor(h.parent)[base.labels[src.indices]])
    assert torch.equal(src.images, base.images[src.indices])
    with pytest.raises(RobustEvalError, match="subpop-source"):
        data.parse_name("fashion-mnist:subpop-nowhere")


@pytest.mark.slow
def test_data_never_imports_shift_and_entry_points_register_its_views():
    """data is the lower floor: the subpop-* views exist once shift is imported, as the train and
    eval entry points do (a fresh interpreter, since this one has imported shift already)."""
    code = "\n".join([
        "import sys",
        "from robustbench_lite import data",
        "from robustbench_lite.errors import RobustEvalError",
        "try:",
        "    data.parse_name('fashion-mnist:subpop-source')",
        "except RobustEvalError:",
        "    pass",
        "assert 'robustbench_lite.shift' not in sys.modules, 'data imported shift'",
        "import robustbench_lite.training",
        "assert data.parse_name('fashion-mnist:subpop-source') == ('fashion-mnist', 'subpop-source')",
    ])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_train_on_source_split_and_score_target(fashion_dir, tmp_path):
    out = tmp_path / "coarse.pt"
    train(TrainConfig(model="shufflenetv2_x0_5", dataset="fashion-mnist:subpop-source", epochs=1, seed=0,
                      output=str(out), device="cpu", show_progress=False, data_dir=str(fashion_dir)))
    res = run_shift(out, splits="subpop/*", data_dir=str(fashion_dir))
    h = shift.HIERARCHIES.entry("fashion-mnist")
    src, tgt = res.splits["subpop/source"], res.splits["subpop/target"]
    assert src.extra["task"] == tgt.extra["task"] == "coarse"
    assert src.classes == list(h.coarse) and src.accuracy == pytest.approx(res.clean_accuracy)
    assert tgt.reference == "subpop/source" and tgt.drop == pytest.approx(src.accuracy - tgt.accuracy)
    assert tgt.in_summary and not src.shifted and res.worst_split == "subpop/target"
    assert set(tgt.extra["fine_classes"]) == {h.fine[i] for i in h.target}


def train(cfg):
    from robustbench_lite.training import train as do_train

    return do_train(cfg, log=lambda m: None)


def _digits_hierarchy(monkeypatch):
    """Digits grouped into even / odd (test-only): source 0, 2, 4 / 1, 3, 5; target 6, 8 / 7, 9."""
    h = shift.Hierarchy.from_groups("digits", tuple(str(i) for i in range(10)),
                                    {"even": (("0", "2", "4"), ("6", "8")), "odd": (("1", "3", "5"), ("7", "9"))},
                                    "test grouping")
    monkeypatch.setitem(shift.HIERARCHIES._entries, "digits", h)
    for part in ("source", "target"):
        monkeypatch.setitem(data.VIEWS._entries, f"digits:subpop-{part}", h.view(part))
    return h


def test_fine_model_is_mapped_to_coarse_groups(digits_checkpoint, monkeypatch):
    h = _digits_hierarchy(monkeypatch)
    res = run_shift(digits_checkpoint, splits="subpop/target")
    tgt = res.splits["subpop/target"]
    assert tgt.extra["task"] == "fine" and not tgt.in_summary and "summed per coarse class" in " ".join(tgt.notes)
    assert tgt.classes == ["even", "odd"] and res.worst_split is None
    # Direct computation: group probabilities of the clean predictions on the target digits.
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    ds = data.load("digits", "test")
    with torch.no_grad():
        logits = net(ds.float_images())
    keep = torch.isin(ds.labels, torch.tensor(h.target))
    pred = h.coarse_logits(logits[keep]).argmax(1)
    assert tgt.accuracy == pytest.approx(float((pred == ds.labels[keep] % 2).float().mean()), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Natural shift: files in the published formats


def _cifar10_1(folder, version, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.int64)
    np.save(folder / f"cifar10.1_{version}_data.npy", images)
    np.save(folder / f"cifar10.1_{version}_labels.npy", labels)
    return images, labels


def _cifar10_2(folder, part, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) * 3 % 10).astype(np.int64)
    np.savez(folder / f"cifar102_{part}.npz", images=images, labels=labels)
    return images, labels


def test_natural_readers(tmp_path):
    images, labels = _cifar10_1(tmp_path, "v6")
    ds = shift.read_cifar10_1(tmp_path / "cifar10.1_v6_data.npy", tmp_path / "cifar10.1_v6_labels.npy")
    assert ds.images.shape == (6, 3, 32, 32) and ds.classes == data.CIFAR10_CLASSES
    np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), images)
    assert ds.labels.tolist() == labels.tolist()
    images, labels = _cifar10_2(tmp_path, "test")
    ds = shift.read_cifar10_2(tmp_path / "cifar102_test.npz")
    np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), images)
    assert ds.labels.tolist() == labels.tolist()


def test_natural_readers_reject_bad_files(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((3, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "l.npy", np.zeros(3, dtype=np.int64))
    with pytest.raises(RobustEvalError, match="N x 32 x 32 x 3"):
        shift.read_cifar10_1(tmp_path / "d.npy", tmp_path / "l.npy")
    np.savez(tmp_path / "x.npz", data=np.zeros((1, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(RobustEvalError, match="missing array"):
        shift.read_cifar10_2(tmp_path / "x.npz")
    (tmp_path / "t.npz").write_bytes(b"not a zip")
    with pytest.raises(RobustEvalError, match="not a .npz"):
        shift.read_cifar10_2(tmp_path / "t.npz")


@pytest.fixture
def cifar10_setup(tmp_path):
    """A tiny CIFAR-10 test batch, an untrained CIFAR-10 checkpoint, and CIFAR-10.1 v6 / 10.2 files."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batch = {b"data": RNG.integers(0, 256, (8, 3072), dtype=np.uint8), b"labels": list(range(8))}
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    names = [c.encode() for c in data.CIFAR10_CLASSES]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    net = models.build("shufflenetv2_x0_5", 10, 3, 32)
    ckpt = tmp_path / "cifar10.pt"
    checkpoints.save_checkpoint(ckpt, net, {**checkpoints.architecture_meta(net, "shufflenetv2_x0_5", 10, 32, False),
                                       "dataset": "cifar10", "classes": list(data.CIFAR10_CLASSES)})
    _cifar10_1(tmp_path / "cifar10.1", "v6")
    _cifar10_2(tmp_path / "cifar10.2", "test")
    return tmp_path, ckpt


def test_natural_splits_end_to_end(cifar10_setup, capsys):
    root, ckpt = cifar10_setup
    res = run_shift(ckpt, splits="natural/*", data_dir=str(root))
    assert set(res.splits) == {"natural/cifar10.1-v6", "natural/cifar10.2-test"}
    assert res.splits["natural/cifar10.1-v6"].levels[0].n_examples == 6
    assert "looked for cifar10.1_v4_data.npy" in res.skipped["natural/cifar10.1-v4"]
    assert "cifar102_train.npz" in res.skipped["natural/cifar10.2-train"]
    # Named explicitly, missing files are an error that says what was looked for where.
    code, err = main_exit(["--checkpoint", str(ckpt), "--data-dir", str(root), "--suite", "shift", "--device", "cpu",
                           "--shift-splits", "natural/cifar10.1-v4"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "cifar10.1_v4_data.npy" in err and str(root / "cifar10.1") in err


def _folder(root, classes, size=(12, 12), mode="RGB"):
    for c in classes:
        for i in range(2):
            (root / c).mkdir(parents=True, exist_ok=True)
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_user_folder_and_class_mismatch(digits_checkpoint, tmp_path, capsys):
    good = _folder(tmp_path / "next-month", ["3", "7"])
    res = run_shift(digits_checkpoint, splits="label/dirichlet", draws=2, natural=[str(good)])
    split = res.splits["natural/folder:next-month"]
    assert split.levels[0].n_examples == 4 and set(res.splits) == {"natural/folder:next-month", "label/dirichlet"}
    bad = _folder(tmp_path / "bad", ["3", "cat", "dog"])
    code, err = main_exit(["--checkpoint", str(digits_checkpoint), "--suite", "shift", "--device", "cpu",
                           "--shift-splits", "label/dirichlet", "--shift-natural", str(bad)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "'cat', 'dog'" in err and "0, 1, 2" in err


# ---------------------------------------------------------------------------------------------
# The suite end to end: JSON keys, reproducibility, bad input


def test_suite_json_and_reproducibility(digits_checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "shift", "--device", "cpu", "--no-progress",
            "--shift-splits", "covariate/rotation,label/*", "--shift-intensities", "4",
            "--shift-draws", "3", "--seed", "7"]
    assert cli.main([*argv, "--json", str(tmp_path / "a.json")]) == 0
    out = json.loads((tmp_path / "a.json").read_text())["shift"]
    for name in ("covariate/rotation", "label/dirichlet"):
        split = out["splits"][name]
        assert {"accuracy", "ece", "nll", "drop", "f1_macro", "classes_losing_most", "levels"} <= set(split)
        assert split["drop"] == pytest.approx(out["clean_accuracy"] - split["accuracy"])
        assert all("bin_upper" in lv["reliability"] for lv in split["levels"])
    assert [lv["name"] for lv in out["splits"]["covariate/rotation"]["levels"]] == ["4"]
    assert len(out["splits"]["label/dirichlet"]["levels"]) == 3
    accs = [s["accuracy"] for s in out["splits"].values()]
    assert out["worst_accuracy"] == min(accs) and out["mean_accuracy"] == pytest.approx(np.mean(accs))
    assert out["accuracy_ratio"] == pytest.approx(np.mean(accs) / out["clean_accuracy"])
    # Same seed, same splits: identical numbers (batching is covered by test_covariate_contract).
    assert cli.main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    again = json.loads((tmp_path / "b.json").read_text())["shift"]
    assert again["splits"] == out["splits"]
    capsys.readouterr()


@pytest.mark.parametrize("flags,match", [
    (["--shift-splits", "covariate/nope"], "unknown shift split 'covariate/nope'"),
    (["--shift-alpha", "0"], "--shift-alpha must be > 0"),
    (["--shift-alpha=-1,1"], "--shift-alpha must be > 0"),
    (["--shift-natural", "/nonexistent/shift-set"], "is not a directory"),
    (["--shift-splits", "natural/cifar10.1-v6"], "for CIFAR-10 models"),
    (["--shift-splits", "covariate/colour"], "needs colour images"),
])
def test_bad_input_exits_2_with_one_line(digits_checkpoint, capsys, flags, match):
    code, err = main_exit(["--checkpoint", str(digits_checkpoint), "--suite", "shift", "--device", "cpu", *flags],
                          capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and match in err
