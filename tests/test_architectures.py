"""``torchvision:NAME`` and ``timm:NAME`` work wherever a model name does: build, train, checkpoint, list."""

from __future__ import annotations

import json
import sys
import urllib.error

import pytest
import torch
import torchvision

from robustbench_lite import cli, models
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.sources import architectures, checkpoints
from robustbench_lite.sources.families import first_conv

timm = pytest.importorskip("timm")

NAMES = ["torchvision:mobilenet_v3_small", "torchvision:resnet18", "timm:mobilenetv3_small_050", "timm:resnet10t"]


def _stem(model: models.NormalizedModel) -> torch.nn.Conv2d:
    return model.net.get_submodule(first_conv(model.net))


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", NAMES)
def test_forward_grey_28_and_rgb_32_and_checkpoint_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    grey = architectures.build(name, num_classes=10, in_channels=1, input_size=28).eval()
    assert isinstance(grey, models.NormalizedModel) and _stem(grey).in_channels == 1
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        out = grey(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        assert grey(x.expand(-1, 3, -1, -1)).shape == (2, 10)  # RGB input to a grey model is converted

    rgb = architectures.build(name, num_classes=7, in_channels=3, input_size=32).eval()
    assert _stem(rgb).in_channels == 3
    torch.testing.assert_close(rgb.mean.flatten(), torch.full((3,), 0.5))  # no pretrained weights: 0.5 / 0.5
    y = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = rgb(y)
    assert ref.shape == (2, 7)

    meta = {**checkpoints.architecture_meta(rgb, name, 7, 32, False), "dataset": "test"}
    path = checkpoints.save_checkpoint(tmp_path / "c.pt", rgb, meta)
    loaded, got = checkpoints.load_checkpoint(path, model=name, num_classes=7)
    assert got["model"] == name and loaded.min_size == rgb.min_size
    with torch.no_grad():
        torch.testing.assert_close(loaded(y), ref)


def test_grey_stem_sums_the_rgb_filters():
    """A torchvision stem adapted to grey sees a grey image exactly as the RGB stem sees (x, x, x)."""
    torch.manual_seed(0)
    rgb = architectures.build("torchvision:mobilenet_v3_small", 10, 3, 28, mean=(0.5,) * 3, std=(0.5,) * 3).eval()
    torch.manual_seed(0)
    grey = architectures.build("torchvision:mobilenet_v3_small", 10, 1, 28, mean=(0.5,), std=(0.5,)).eval()
    torch.testing.assert_close(_stem(grey).weight, _stem(rgb).weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-4)


def _input_side(model: models.NormalizedModel, x: torch.Tensor) -> tuple[int, int]:
    seen = []
    hook = model.net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen[0]


def test_torchvision_min_size_from_the_weights_metadata_upsamples_inside():
    needed = max(torchvision.models.get_model_weights("googlenet").DEFAULT.meta["min_size"])
    assert needed > 8
    model = architectures.build("torchvision:googlenet", 10, 1, 8).eval()
    assert model.min_size == needed
    assert _input_side(model, torch.rand(2, 1, 8, 8)) == (needed, needed)
    # aux classifiers off: training-mode output is the logits tensor the training loss expects
    out = model.train()(torch.rand(2, 1, 8, 8))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_timm_fixed_input_size_upsamples_inside():
    cfg = timm.models.get_pretrained_cfg("test_vit")
    assert cfg.fixed_input_size
    needed = max(cfg.input_size[1:])
    model = architectures.build("timm:test_vit", 10, 3, 32).eval()
    assert model.min_size == needed
    assert _input_side(model, torch.rand(1, 3, 32, 32)) == (needed, needed)


def test_torchvision_pretrained_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    path = models.torchvision_weights_file(weights)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    torch.manual_seed(1)
    stock = torchvision.models.mobilenet_v3_small(weights=None)
    path.parent.mkdir(parents=True)
    torch.save(stock.state_dict(), path)
    model = architectures.build("torchvision:mobilenet_v3_small", 10, 1, 28, pretrained=True)
    torch.testing.assert_close(model.net.features[3].block[0][0].weight, stock.features[3].block[0][0].weight)
    torch.testing.assert_close(_stem(model).weight, stock.features[0][0].weight.sum(1, keepdim=True))
    assert model.net.classifier[3].out_features == 10
    imagenet = weights.transforms()
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([sum(imagenet.mean) / 3]))
    torch.testing.assert_close(model.std.flatten(), torch.tensor([sum(imagenet.std) / 3]))


def test_torchvision_pretrained_offline_without_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(RobustEvalError) as exc:
        architectures.build("torchvision:resnet18", 10, 3, 32, pretrained=True)
    message = str(exc.value)
    assert "\n" not in message and "torchvision:resnet18" in message
    assert str(models.torchvision_weights_file(weights)) in message and weights.url in message


def test_timm_pretrained_is_refused_with_the_alternative():
    with pytest.raises(RobustEvalError, match=r"timm:resnet10t cannot start from pretrained.*--checkpoint"):
        architectures.build("timm:resnet10t", 10, 3, 32, pretrained=True)


@pytest.mark.parametrize("name, expected", [
    ("torchvision:resnet19", "unknown torchvision model 'resnet19'. Did you mean 'resnet18'? "
                             "See: robust-eval list models 'torchvision:*'"),
    ("timm:resnet19", "unknown timm model 'resnet19'. Did you mean 'resnet18'? See: robust-eval list models 'timm:*'"),
    ("timm:resnet18.no_such_tag", "unknown timm model 'resnet18.no_such_tag'"),
    ("tv:resnet18", "unknown model family 'tv' in 'tv:resnet18'"),
    ("torchvision:", "'torchvision:' names no model"),
    ("resnet50", "'timm:resnet50' and 'torchvision:resnet50' exist"),
])
def test_unknown_names_say_what_exists(name, expected):
    with pytest.raises(RobustEvalError) as exc:
        architectures.check(name)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_name_on_the_command_line(capsys):
    code, _, err = run(capsys, "train", "--model", "torchvision:resnet19", "--dataset", "digits", "--no-progress")
    assert code == 2 and "Did you mean 'resnet18'?" in err and len(err.strip().splitlines()) == 1


def test_missing_timm_is_one_line_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(RobustEvalError) as exc:
        architectures.build("timm:resnet10t", 10, 3, 32)
    assert str(exc.value) == "timm:resnet10t needs the optional package timm: pip install 'robustbench-lite[timm]'"
    code, _, err = run(capsys, "list", "models", "timm:*")
    assert code == 2 and "pip install 'robustbench-lite[timm]'" in err
    code, out, _ = run(capsys, "list", "models")  # the rest still lists, timm's row included
    assert code == 0 and "timm:NAME" in out and "shufflenetv2" in out
    assert architectures.build("torchvision:mobilenet_v3_small", 10, 1, 28) is not None


def test_list_models_rows_and_family_names(capsys):
    code, out, _ = run(capsys, "list", "models")
    lines = out.splitlines()
    assert code == 0 and any(line.startswith("shufflenetv2 ") for line in lines)
    for prefix in ("torchvision", "timm"):
        row = next(line for line in lines if line.startswith(f"{prefix}:NAME"))
        assert f"robust-eval list models '{prefix}:*'" in row

    code, out, _ = run(capsys, "list", "models", "timm:resnet1*")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and "timm:resnet10t" in names and "timm:resnet18" in names
    assert names == sorted(names) and all(n.startswith("timm:resnet1") for n in names)
    assert names == ["timm:" + n for n in sorted(timm.list_models("resnet1*"))]
    assert "ResNet-18" in out.splitlines()[names.index("timm:resnet18")]

    code, out, _ = run(capsys, "list", "models", "torchvision:res*")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and "torchvision:resnet18" in names and all(n.startswith("torchvision:res") for n in names)
    assert "Deep Residual Learning" in out.splitlines()[names.index("torchvision:resnet18")]


@pytest.mark.parametrize("name", ["torchvision:googlenet", "timm:test_vit"])
def test_trained_checkpoint_rebuilds_the_same_network(name, tmp_path):
    """Training writes what rebuilds the network exactly: same logits, min_size upsampling included."""
    from robustbench_lite import data
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.training import train

    out = tmp_path / "m.pt"
    model, meta, path = train(TrainConfig(model=name, dataset="digits", epochs=1, limit=64, eval_limit=32,
                                          output=str(out), device="cpu", show_progress=False), log=lambda m: None)
    assert path == out and meta["model"] == name and meta["input_size"] == 8
    loaded, _ = checkpoints.load_checkpoint(out)
    x = data.load("digits", "test").limit(16).float_images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def _train_then_evaluate(name, tmp_path, capsys, *train_args):
    out, report = tmp_path / "m.pt", tmp_path / "r.json"
    code, _, err = run(capsys, "train", "--model", name, "--dataset", "digits", *train_args, "--eval-limit", "100",
                       "--output", str(out), "--device", "cpu", "--no-progress")
    assert code == 0, err
    code, _, err = run(capsys, "--checkpoint", str(out), "--suite", "clean", "--limit", "100", "--json", str(report),
                       "--no-history")
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["model"] == name and r["dataset"] == "digits" and r["n_examples"] == 100
    # train measured its test accuracy on the same first 100 test images
    assert r["clean"]["accuracy"] == pytest.approx(r["checkpoint"]["clean_accuracy"], abs=1e-6)
    return r


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet10t"])
def test_train_then_evaluate_on_the_command_line(name, tmp_path, capsys):
    _train_then_evaluate(name, tmp_path, capsys, "--epochs", "1", "--limit", "200")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet10t"])
def test_trained_models_learn(name, tmp_path, capsys):
    """The stock networks learn 8 px digits (all 1347 training images, 5 epochs: 0.87-0.90 measured)."""
    r = _train_then_evaluate(name, tmp_path, capsys, "--epochs", "5")
    assert r["clean"]["accuracy"] > 0.6  # chance is 0.1
