"""Every registered model builds, runs on 28 px grey and 32 px RGB input, and round-trips a checkpoint."""

from __future__ import annotations

import os
import pickle
import urllib.error

import pytest
import torch
from torch import nn

from robustbench_lite import models
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.sources import checkpoints

ALL_MODELS = models.MODELS.list()


def test_registry_holds_the_seed_models():
    for name in ["mobilenetv3_small", "mobilenetv3_large", "mobilenetv2", "resnet18", "squeezenet",
                 "efficientnetv2_s", "efficientnet_b0", "shufflenetv2", "shufflenetv2_x0_5"]:
        assert name in models.MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_grey_28_and_rgb_32_and_checkpoint_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    grey = models.build(name, num_classes=10, in_channels=1, input_size=28).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = grey(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        # 3-channel input to a grey model is converted, not rejected
        assert grey(x.expand(-1, 3, -1, -1)).shape == (2, 10)

    rgb = models.build(name, num_classes=7, in_channels=3, input_size=32).eval()
    y = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = rgb(y)
        assert ref.shape == (2, 7)
        assert rgb(y[:, :1]).shape == (2, 7)  # grey input repeated over channels

    meta = {**checkpoints.architecture_meta(rgb, name, 7, 32, False), "dataset": "test"}
    path = checkpoints.save_checkpoint(tmp_path / f"{name}.pt", rgb, meta)
    loaded, got_meta = checkpoints.load_checkpoint(path, model=name, num_classes=7)
    assert got_meta["model"] == name and got_meta["num_classes"] == 7
    with torch.no_grad():
        torch.testing.assert_close(loaded(y), ref)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_small_input_variant_keeps_spatial_detail(name):
    """The small-input hook removes the stem's downsampling; large inputs keep the stock stem."""
    small = models.build(name, 10, 3, input_size=32)
    large = models.build(name, 10, 3, input_size=224)
    spec = models.MODELS.entry(name)
    assert small.net.get_submodule(spec.stem).stride == (1, 1)
    assert large.net.get_submodule(spec.stem).stride == (2, 2)


def test_model_normalises_inside():
    m = models.build("resnet18", 10, 3, 32, mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.net((x - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)) / 0.5))


def test_grey_stem_equals_rgb_stem_on_repeated_channels():
    """Summing pretrained RGB filters for a grey stem is exact: grey x == RGB (x, x, x)."""
    torch.manual_seed(0)
    rgb = models.build("shufflenetv2_x0_5", 10, 3, 28, mean=(0.5,) * 3, std=(0.5,) * 3).eval()
    grey = models.build("shufflenetv2_x0_5", 10, 1, 28, mean=(0.5,), std=(0.5,)).eval()
    state = rgb.state_dict()
    state["net.conv1.0.weight"] = state["net.conv1.0.weight"].sum(1, keepdim=True)
    state["mean"], state["std"] = state["mean"][:, :1], state["std"][:, :1]
    grey.load_state_dict(state)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-4)


def test_pretrained_weights_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = models.MODELS.entry("shufflenetv2_x0_5")
    _, path = models.weights_file(spec)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    torch.manual_seed(1)
    stock = spec.builder(weights=None)
    path.parent.mkdir(parents=True)
    torch.save(stock.state_dict(), path)
    m = models.build("shufflenetv2_x0_5", 10, 3, 224, pretrained=True)
    torch.testing.assert_close(m.net.stage2[0].branch1[0].weight, stock.stage2[0].branch1[0].weight)
    torch.testing.assert_close(m.mean.flatten(), torch.tensor(models.IMAGENET_MEAN))
    assert m.net.fc.out_features == 10


def test_pretrained_offline_without_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights, path = models.weights_file(models.MODELS.entry("squeezenet"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(RobustEvalError) as exc:
        models.build("squeezenet", 10, 3, 224, pretrained=True)
    assert str(path) in str(exc.value) and weights.url in str(exc.value)


def _save(path, payload):
    torch.save(payload, path)
    return path


def test_checkpoint_for_another_model_or_class_count(tmp_path):
    m = models.build("squeezenet", 10, 1, 28)
    meta = checkpoints.architecture_meta(m, "squeezenet", 10, 28, False)
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", m, meta)
    with pytest.raises(RobustEvalError, match="is for model 'squeezenet', not 'resnet18'"):
        checkpoints.load_checkpoint(path, model="resnet18")
    with pytest.raises(RobustEvalError, match="has 10 classes but the dataset has 100"):
        checkpoints.load_checkpoint(path, num_classes=100)


def test_damaged_checkpoint(tmp_path):
    m = models.build("squeezenet", 10, 1, 28)
    meta = checkpoints.architecture_meta(m, "squeezenet", 10, 28, False)
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", m, meta)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RobustEvalError, match="damaged or not a PyTorch file"):
        checkpoints.load_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(RobustEvalError, match="damaged or not a PyTorch file"):
        checkpoints.load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(RobustEvalError, match="does not exist"):
        checkpoints.load_checkpoint(tmp_path / "missing.pt")
    plain = _save(tmp_path / "plain.pt", {"weights": torch.zeros(1)})
    with pytest.raises(RobustEvalError, match="not a robustbench_lite checkpoint"):
        checkpoints.load_checkpoint(plain)


def test_state_dict_that_does_not_fit_the_architecture(tmp_path):
    m = models.build("squeezenet", 10, 1, 28)
    meta = checkpoints.architecture_meta(m, "squeezenet", 10, 28, False)
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", m, meta)
    payload = torch.load(path, weights_only=True)
    payload["meta"]["model"] = "resnet18"
    _save(path, payload)
    with pytest.raises(RobustEvalError, match="does not match the 'resnet18' architecture"):
        checkpoints.load_checkpoint(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    m = models.build("squeezenet", 10, 1, 28)
    payload = {"format": checkpoints.CHECKPOINT_FORMAT, "version": 1, "state_dict": m.state_dict(),
               "meta": {**checkpoints.architecture_meta(m, "squeezenet", 10, 28, False), "x": _Exploit(marker)}}
    path = tmp_path / "evil.pt"
    torch.save(payload, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(RobustEvalError, match="refused to load checkpoint"):
        checkpoints.load_checkpoint(path)
    assert not marker.exists()


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    m = models.build("squeezenet", 10, 1, 28)
    meta = checkpoints.architecture_meta(m, "squeezenet", 10, 28, False)
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", m, meta)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(path, m, meta)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_bad_build_arguments():
    with pytest.raises(RobustEvalError, match="unknown model"):
        models.build("vgg", 10)
    with pytest.raises(RobustEvalError, match="in_channels"):
        models.build("resnet18", 10, in_channels=4)
    assert isinstance(models.build("resnet18", 10, 1, 28), nn.Module)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_tiny_8px_input_works(name):
    """scikit-learn digits are 8x8: every model takes them (SqueezeNet upsamples inside)."""
    m = models.build(name, 10, 1, 8).eval()
    with torch.no_grad():
        assert m(torch.rand(2, 1, 8, 8)).shape == (2, 10)
