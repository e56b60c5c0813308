"""Your own model, in the form you ship it: the same network in every format gives the same numbers.

Every file is built on the fly from the session's tiny digits checkpoint (a shufflenetv2_x0_5
trained for seconds on scikit-learn's 8x8 digits): the project checkpoint, state_dicts (of the
robust-eval model and of the bare network), safetensors, TorchScript, torch.export (dynamic and
fixed batch) and ONNX (dynamic and fixed batch). Then a model that expects 224 px RGB normalised
input with its own class order is evaluated on Fashion-MNIST through the adapter, its contract
coming from a MODEL.json sidecar, flags, or the file itself (ONNX metadata, TorchScript extra file).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite import cli, data
from robustbench_lite.sources import checkpoints

ARCH = "shufflenetv2_x0_5"
FIXED = 4  # the batch the fixed-batch graphs are exported for
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def evaluate_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main([*argv, "--no-history", "--no-progress"])
    return code, capsys.readouterr().err


def floats(values) -> str:
    return ",".join(repr(float(v)) for v in values)


def onnx_export(net: nn.Module, x: torch.Tensor, path: Path, dynamic: bool) -> Path:
    torch.onnx.export(net.eval(), (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None)
    return path


# ---------------------------------------------------------------------------------------------
# 1. the same trained network as checkpoint, state_dict, safetensors, TorchScript, torch.export, ONNX


@pytest.fixture(scope="module")
def shipped(digits_checkpoint, tmp_path_factory) -> dict[str, tuple[Path, list[str], str, int | None]]:
    """form -> (file, extra flags, expected source.format, expected fixed_batch)."""
    from safetensors.torch import save_file

    net, meta = checkpoints.load_checkpoint(digits_checkpoint)
    d = tmp_path_factory.mktemp("shipped")
    norm = ["--mean", floats(meta["mean"]), "--std", floats(meta["std"])]
    x = torch.rand(FIXED, meta["in_channels"], 8, 8)
    forms = {"checkpoint": (digits_checkpoint, [], "checkpoint", None)}
    torch.save(net.state_dict(), d / "state.pt")
    forms["state_dict"] = (d / "state.pt", ["--model", ARCH], "state_dict", None)
    torch.save(net.net.state_dict(), d / "bare.pt")
    forms["bare_state_dict"] = (d / "bare.pt", ["--model", ARCH, *norm], "state_dict", None)
    save_file({k: v.contiguous() for k, v in net.net.state_dict().items()}, str(d / "bare.safetensors"))
    forms["safetensors"] = (d / "bare.safetensors", ["--model", ARCH, *norm], "safetensors", None)
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(net, x), str(d / "traced.pt"))
    forms["torchscript"] = (d / "traced.pt", [], "torchscript", None)
    batch = torch.export.Dim("batch")  # as users write it; a last batch of 1 still runs (tested with --batch-size)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes={"x": {0: batch}}), str(d / "dynamic.pt2"))
    forms["torch.export"] = (d / "dynamic.pt2", [], "torch.export", None)
    torch.export.save(torch.export.export(net, (x,)), str(d / "fixed.pt2"))
    forms["torch.export_fixed"] = (d / "fixed.pt2", [], "torch.export", FIXED)
    forms["onnx"] = (onnx_export(net, x, d / "dynamic.onnx", dynamic=True), [], "onnx", None)
    forms["onnx_fixed"] = (onnx_export(net, x, d / "fixed.onnx", dynamic=False), [], "onnx", FIXED)
    return forms


def run_digits(capsys, tmp_path: Path, path: Path, flags: list[str], suites: str = "clean,corruptions",
               *more: str) -> dict:
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / f"{path.stem}-results.json"
    if "corruptions" in suites:
        more = ("--corruptions", "gaussian_noise,fog", "--severities", "3", *more)
    code, err = evaluate_cli(capsys, "--checkpoint", str(path), *flags, "--dataset", "digits", "--suite", suites,
                             "--json", str(out), *more)
    assert code == 0, err
    return json.loads(out.read_text())


LIMIT = "200"  # a fixed subset keeps the default run fast; the slow test below uses the whole test split
FORMS = ["checkpoint", "state_dict", "bare_state_dict", "safetensors", "torchscript", "torch.export",
         "torch.export_fixed", "onnx", "onnx_fixed"]


@pytest.fixture(scope="module")
def reference(shipped, tmp_path_factory) -> dict:
    """(a) the project checkpoint's numbers, which every other form must give."""
    out = tmp_path_factory.mktemp("reference") / "checkpoint.json"
    assert cli.main(["--checkpoint", str(shipped["checkpoint"][0]), "--dataset", "digits", "--suite",
                     "clean,corruptions", "--corruptions", "gaussian_noise,fog", "--severities", "3", "--limit", LIMIT,
                     "--json", str(out), "--no-history", "--no-progress"]) == 0
    return json.loads(out.read_text())


def assert_same_numbers(r: dict, reference: dict, form: str, shipped: dict) -> None:
    path, _, fmt, fixed = shipped[form]
    source = r["source"]
    assert source["format"] == fmt and source["fixed_batch"] == fixed, form
    assert source["path"] == str(path) and source["file_bytes"] == path.stat().st_size
    assert r["n_examples"] == reference["n_examples"]
    tolerance = 0.001 if fmt == "onnx" else 0.0  # ONNX Runtime's kernels: within 0.1 points; the rest identical
    assert reference["clean"]["accuracy"] > 0.5
    assert abs(r["clean"]["accuracy"] - reference["clean"]["accuracy"]) <= tolerance, form
    acc, ref = r["corruptions"]["accuracy"], reference["corruptions"]["accuracy"]
    assert set(acc) == set(ref) == {"gaussian_noise", "fog"}
    for corruption in ref:
        assert abs(acc[corruption]["3"] - ref[corruption]["3"]) <= tolerance, (form, corruption)


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_every_format_gives_the_checkpoints_numbers(form, shipped, reference, tmp_path, capsys):
    path, flags, fmt, fixed = shipped[form]
    r = run_digits(capsys, tmp_path, path, flags, "clean,corruptions", "--limit", LIMIT)
    assert_same_numbers(r, reference, form, shipped)
    source = r["source"]
    if fmt == "onnx":
        assert source["runtime"].startswith("onnxruntime") and source["differentiable"] is False
    if fixed:
        assert any(f"batch {FIXED}" in note for note in source["notes"])
    if form in ("checkpoint", "state_dict"):  # robust-eval models normalise inside: nothing to adapt
        assert source["adaptations"] == []
    if form in ("bare_state_dict", "safetensors"):  # the bare network: --mean/--std become the adapter's
        assert [a for a in source["adaptations"] if a.startswith("normalised with mean")]


@pytest.mark.slow
def test_every_format_gives_the_checkpoints_numbers_on_the_whole_test_split(shipped, tmp_path, capsys):
    reference = run_digits(capsys, tmp_path / "a", shipped["checkpoint"][0], [])
    assert reference["n_examples"] > 300
    for form in FORMS[1:]:
        path, flags, _, _ = shipped[form]
        assert_same_numbers(run_digits(capsys, tmp_path, path, flags), reference, form, shipped)


@pytest.mark.slow
def test_exported_graphs_at_odd_batch_sizes(shipped, reference, tmp_path, capsys):
    """A graph exported for batch 4 runs any batch size (split, the last part padded, padding dropped)."""
    path, flags, _, _ = shipped["torch.export_fixed"]
    r = run_digits(capsys, tmp_path, path, flags, "clean", "--batch-size", "7", "--limit", LIMIT)
    assert r["clean"]["accuracy"] == reference["clean"]["accuracy"]
    assert r["clean"]["confusion_matrix"] == reference["clean"]["confusion_matrix"]
    path, flags, _, _ = shipped["torch.export"]  # a dynamic batch dim: 200 = 199 + a last batch of 1
    r = run_digits(capsys, tmp_path, path, flags, "clean", "--batch-size", "199", "--limit", LIMIT)
    assert r["clean"]["confusion_matrix"] == reference["clean"]["confusion_matrix"]


def test_safetensors_metadata_names_the_architecture_and_normalisation(digits_checkpoint, reference, tmp_path,
                                                                       capsys):
    """A safetensors file whose __metadata__ says model, mean and std needs no flags."""
    from safetensors.torch import save_file

    net, meta = checkpoints.load_checkpoint(digits_checkpoint)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in net.net.state_dict().items()}, str(path),
              metadata={"model": ARCH, "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"])})
    r = run_digits(capsys, tmp_path, path, [], "clean", "--limit", LIMIT)
    assert r["source"]["format"] == "safetensors" and r["source"]["contract"]["mean"] == meta["mean"]
    assert r["clean"]["accuracy"] == reference["clean"]["accuracy"]
    assert r["clean"]["confusion_matrix"] == reference["clean"]["confusion_matrix"]


# ---------------------------------------------------------------------------------------------
# 2. a model expecting 224 px RGB, ImageNet-normalised input, with its own class order


class Centroids(nn.Module):
    """A nearest-class-mean classifier on 224x224 RGB normalised images (average-pooled to 28x28).

    Fitted in closed form, so it predicts Fashion-MNIST well enough that a wrong class order, size
    or normalisation shows in the accuracy.
    """

    def __init__(self, means: torch.Tensor) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(means.shape[1], means.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(means)
            self.fc.bias.copy_(-0.5 * (means ** 2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def imagenet_input(images: torch.Tensor) -> torch.Tensor:
    """By hand what the adapter must do: grey -> RGB, bilinear 28 -> 224 (no antialias upsampling), normalise."""
    x = F.interpolate(images.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear", align_corners=False)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory) -> dict:
    """The 224 px model as ONNX (1x3x224x224, dynamic batch) and TorchScript, its classes in reversed order."""
    test = data.load("fashion-mnist", "test")
    fit = test.limit(1064)  # fitted on images 64..1063; scored on the first 64
    images, labels = fit.float_images()[64:], fit.labels[64:]
    classes = tuple(reversed(test.classes))  # the model's output order
    with torch.no_grad():  # in chunks: 1000 images at 3x224x224 would take 600 MB at once
        feats = torch.cat([nn.AvgPool2d(8)(imagenet_input(chunk)).flatten(1) for chunk in images.split(100)])
        means = torch.stack([feats[labels == test.classes.index(c)].mean(0) for c in classes])
    net = Centroids(means).eval()
    d = tmp_path_factory.mktemp("fashion")
    x = torch.rand(2, 3, 224, 224)
    (d / "sidecar").mkdir()
    onnx_path = onnx_export(net, x, d / "sidecar" / "model.onnx", dynamic=True)
    contract = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "classes": list(classes)}
    (d / "sidecar" / "model.json").write_text(json.dumps(contract))
    (d / "bare").mkdir()
    bare = onnx_export(net, x, d / "bare" / "model.onnx", dynamic=True)
    with torch.no_grad():
        scripted = torch.jit.trace(net, x)
    torch.jit.save(scripted, str(d / "bare" / "model.pt"))
    torch.jit.save(scripted, str(d / "contract.pt"),
                   _extra_files={"robustbench_lite.json": json.dumps({"input_size": [224, 224], "channels": 3,
                                                                      **contract})})
    # by hand: the network in PyTorch on the upsampled, normalised images, its logits put in the dataset's order
    first = test.limit(64)
    with torch.no_grad():
        logits = net(imagenet_input(first.float_images()))[:, [classes.index(c) for c in test.classes]]
    accuracy = (logits.argmax(1) == first.labels).float().mean().item()
    return {"net": net, "onnx": onnx_path, "bare_onnx": bare, "bare_script": d / "bare" / "model.pt",
            "contract_script": d / "contract.pt", "classes": classes, "dataset_classes": test.classes,
            "accuracy": accuracy, "dir": d}


def run_fashion(capsys, tmp_path: Path, path: Path, *flags: str, html: bool = False) -> dict:
    out = tmp_path / "results.json"
    extra = ["--html", str(tmp_path / "report.html")] if html else []
    code, err = evaluate_cli(capsys, "--checkpoint", str(path), *flags, "--dataset", "fashion-mnist", "--limit", "64",
                             "--suite", "clean", "--json", str(out), *extra)
    assert code == 0, err
    return json.loads(out.read_text())


def assert_adapted(r: dict, fashion_model: dict) -> None:
    adaptations = r["source"]["adaptations"]
    assert adaptations == [
        "grey -> RGB (the channel repeated 3 times)",
        "resized 28x28 -> 224x224 (bilinear)",
        "normalised with mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225)",
        "logits reordered from the model's class order to the dataset's",
    ]
    assert r["source"]["contract"]["classes"] == list(fashion_model["classes"])
    assert r["source"]["input_shape"] == [3, 224, 224]
    assert r["clean"]["accuracy"] == pytest.approx(fashion_model["accuracy"], abs=1e-9)
    assert r["clean"]["accuracy"] > 0.5  # a wrong order, size or normalisation would not score this


def test_adapter_from_the_sidecar(fashion_model, tmp_path, capsys):
    r = run_fashion(capsys, tmp_path, fashion_model["onnx"], html=True)
    assert r["source"]["format"] == "onnx"
    assert_adapted(r, fashion_model)
    assert not any("no mean/std" in note for note in r["source"]["notes"])
    # the report's Model card says what was adapted, each adaptation in words
    from markupsafe import escape

    report = (tmp_path / "report.html").read_text()
    assert report.lower().count("<html") == 1 and 'data-section="model"' in report
    assert "onnx model, run in onnxruntime" in report
    for adaptation in r["source"]["adaptations"]:
        assert str(escape(adaptation)) in report


def test_adapter_from_flags(fashion_model, tmp_path, capsys):
    flags = ["--mean", floats(IMAGENET_MEAN), "--std", floats(IMAGENET_STD), "--classes",
             ",".join(fashion_model["classes"])]
    r = run_fashion(capsys, tmp_path, fashion_model["bare_onnx"], *flags)  # size and channels: the ONNX graph's
    assert_adapted(r, fashion_model)
    r = run_fashion(capsys, tmp_path, fashion_model["bare_script"], "--input-size", "224", "--channels", "3", *flags)
    assert r["source"]["format"] == "torchscript"
    assert_adapted(r, fashion_model)


def test_without_a_contract_the_model_sees_raw_pixels_and_says_so(fashion_model, tmp_path, capsys):
    """No sidecar, no flags: the TorchScript model gets the dataset's images as they are and fails once, clearly."""
    out = tmp_path / "results.json"
    code, err = evaluate_cli(capsys, "--checkpoint", str(fashion_model["bare_script"]), "--dataset", "fashion-mnist",
                             "--limit", "8", "--suite", "clean", "--json", str(out))
    assert code == 2 and not out.exists()
    line = err.strip().splitlines()[-1]
    assert "fails on 1x28x28 images" in line and "--input-size" in line


# ---------------------------------------------------------------------------------------------
# 3. the contract read from the file: ONNX metadata_props, TorchScript extra file; flags > sidecar > file


def test_contract_from_onnx_metadata(fashion_model, tmp_path, capsys):
    import onnx

    model = onnx.load(str(fashion_model["bare_onnx"]))
    onnx.helper.set_model_props(model, {"mean": json.dumps(IMAGENET_MEAN), "std": json.dumps(IMAGENET_STD),
                                        "classes": json.dumps(fashion_model["classes"])})
    path = tmp_path / "with-metadata.onnx"
    onnx.save(model, str(path))
    assert_adapted(run_fashion(capsys, tmp_path, path), fashion_model)


def test_contract_from_torchscript_extra_file(fashion_model, tmp_path, capsys):
    r = run_fashion(capsys, tmp_path, fashion_model["contract_script"])
    assert r["source"]["format"] == "torchscript"
    assert_adapted(r, fashion_model)


def test_safetensors_metadata_as_json_or_comma_text(tmp_path):
    """__metadata__ values are strings: JSON (``[0.5, 0.5]``, ``224``) and comma text (``0.5,0.5,0.5``) both read."""
    from safetensors.torch import save_file

    from robustbench_lite.sources import inspect_file

    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(3, 4)}, str(path),
              metadata={"model": "timm:resnet18", "input_size": "224", "mean": "0.485,0.456,0.406",
                        "std": json.dumps(IMAGENET_STD), "classes": "cat,dog,bird"})
    info = inspect_file(path)
    assert info.format == "safetensors" and info.meta["architecture"] == "timm:resnet18"
    c = info.contract
    assert c.input_size == (224, 224) and c.mean == IMAGENET_MEAN and c.std == IMAGENET_STD
    assert c.classes == ("cat", "dog", "bird")


def test_adapter_shrinks_rgb_for_a_grey_model():
    """The other direction: RGB -> grey (ITU-R 601 luma), and downsizing antialiased (no aliasing of fine detail)."""
    from robustbench_lite.sources.contract import InputContract, adapt

    core = nn.Flatten()
    model, done = adapt(core, InputContract(input_size=(16, 16), channels=1, mean=(0.5,), std=(0.25,)), 3, (32, 32),
                        ("a", "b"), "grey.onnx")
    assert done == ["RGB -> grey (ITU-R 601 luma)", "resized 32x32 -> 16x16 (bilinear, antialiased)",
                    "normalised with mean (0.5) std (0.25)"]
    x = torch.rand(2, 3, 32, 32)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    by_hand = (F.interpolate(grey, size=(16, 16), mode="bilinear", align_corners=False, antialias=True) - 0.5) / 0.25
    torch.testing.assert_close(model(x), by_hand.flatten(1))


def test_flags_over_sidecar_over_file(fashion_model, tmp_path):
    """Field by field: a flag beats the sidecar, which beats the file's metadata."""
    import onnx

    from robustbench_lite.api import evaluate

    model = onnx.load(str(fashion_model["bare_onnx"]))
    wrong_order = list(fashion_model["dataset_classes"][1:]) + [fashion_model["dataset_classes"][0]]
    onnx.helper.set_model_props(model, {"mean": json.dumps(IMAGENET_MEAN), "std": json.dumps(IMAGENET_STD),
                                        "classes": json.dumps(wrong_order)})
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    right = list(fashion_model["classes"])

    def run(**options) -> dict:
        return evaluate(str(path), "fashion-mnist", suites="clean", limit=64, **options).to_dict()

    r = run()
    assert r["source"]["contract"]["classes"] == wrong_order and r["source"]["contract"]["mean"] == list(IMAGENET_MEAN)
    assert r["clean"]["accuracy"] < 0.5  # the file's (wrong) order is applied
    (tmp_path / "model.json").write_text(json.dumps({"classes": right}))
    r = run()
    assert r["source"]["contract"]["classes"] == right and r["source"]["contract"]["mean"] == list(IMAGENET_MEAN)
    assert r["clean"]["accuracy"] == pytest.approx(fashion_model["accuracy"], abs=1e-9)
    (tmp_path / "model.json").write_text(json.dumps({"classes": wrong_order, "mean": [0.5] * 3, "std": [0.5] * 3}))
    r = run(classes=",".join(right))
    contract = r["source"]["contract"]
    assert contract["classes"] == right and contract["mean"] == contract["std"] == [0.5] * 3
    assert contract["input_size"] == [224, 224] and contract["channels"] == 3  # from the graph


# ---------------------------------------------------------------------------------------------
# 5. the Python API: an nn.Module on tensors, a model file on a dataset name


def test_evaluate_a_module_on_tensors(digits_checkpoint, reference):
    from robustbench_lite.api import evaluate

    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    test = data.load("digits", "test").limit(int(LIMIT))
    r = evaluate(net, (test.float_images(), test.labels), suites=["clean", "corruptions"],
                 corruptions="gaussian_noise", severities="3").to_dict()
    assert r["n_examples"] == int(LIMIT) and r["source"]["format"] == "module"
    # the checkpoint's numbers: the same images, and corruptions seeded per image index
    assert r["clean"]["accuracy"] == reference["clean"]["accuracy"]
    assert r["corruptions"]["accuracy"] == {"gaussian_noise": reference["corruptions"]["accuracy"]["gaussian_noise"]}


def test_evaluate_an_onnx_file_on_a_dataset_name(shipped, digits_checkpoint):
    from robustbench_lite.api import evaluate

    r = evaluate(str(shipped["onnx"][0]), "digits", suites="clean", limit=50).to_dict()
    assert r["n_examples"] == 50 and r["source"]["format"] == "onnx" and r["dataset"] == "digits"
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    test = data.load("digits", "test").limit(50)
    with torch.no_grad():
        by_hand = (net(test.float_images()).argmax(1) == test.labels).float().mean().item()
    assert r["clean"]["accuracy"] == pytest.approx(by_hand, abs=1e-9)


def test_evaluate_rejects_an_unknown_option_in_one_line(shipped):
    from robustbench_lite.api import evaluate
    from robustbench_lite.errors import RobustEvalError

    with pytest.raises(RobustEvalError) as info:
        evaluate(str(shipped["onnx"][0]), "digits", suites="clean,corruptions", limit=50, severity="3")
    message = str(info.value)
    assert "\n" not in message and "unknown option 'severity'" in message
    for valid in ("limit", "batch_size", "severities", "corruptions", "mean", "classes"):
        assert valid in message.split("valid:")[1], valid
