"""Bad model files and contracts: one line naming the problem and the fix, exit 2, no results written.

The files are built on the fly: tiny networks for scikit-learn's 8x8 digits exported to ONNX,
torch.export and torch.save, then damaged, mislabelled or given the wrong shape.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_lite import cli
from robustbench_lite import data as data_mod
from robustbench_lite.sources import checkpoints

INSTALL_ONNX = "pip install 'robustbench-lite[onnx]'"


def tiny_digits_net(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, classes)).eval()


def to_onnx(net: nn.Module, x: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def truncated(path: Path, out: Path) -> Path:
    blob = path.read_bytes()
    out.write_bytes(blob[: len(blob) // 2])
    return out


@pytest.fixture(scope="module")
def files(digits_checkpoint, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    x = torch.rand(2, 1, 8, 8)
    f = {"onnx": to_onnx(tiny_digits_net(), x, d / "digits.onnx")}
    f["onnx_3_classes"] = to_onnx(tiny_digits_net(3), x, d / "three.onnx")
    f["onnx_rank_2"] = to_onnx(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval(),
                               torch.rand(2, 64), d / "mlp.onnx")
    f["onnx_truncated"] = truncated(f["onnx"], d / "truncated.onnx")
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    torch.save(net.state_dict(), d / "state.pt")
    f["state_dict"] = d / "state.pt"
    f["pt_truncated"] = truncated(d / "state.pt", d / "truncated.pt")
    torch.save(net, d / "whole.pt")
    f["whole_module"] = d / "whole.pt"
    torch.export.save(torch.export.export(tiny_digits_net(), (x,)), str(d / "good.pt2"))
    f["pt2"] = d / "good.pt2"
    f["text"] = d / "notes.txt"
    f["text"].write_text("these are not the weights you are looking for\n")
    from PIL import Image

    Image.new("L", (8, 8)).save(d / "digit.png")
    f["png"] = d / "digit.png"
    f["missing"] = d / "nowhere.onnx"
    (d / "empty.pt").write_bytes(b"")
    f["empty"] = d / "empty.pt"
    with zipfile.ZipFile(d / "notes.zip", "w") as z:
        z.writestr("notes/readme.txt", "not a model")
    f["zip"] = d / "notes.zip"
    from safetensors.torch import save_file

    save_file(tiny_digits_net().state_dict(), str(d / "tiny.safetensors"))
    f["safetensors_truncated"] = truncated(d / "tiny.safetensors", d / "truncated.safetensors")
    traced = torch.jit.trace(tiny_digits_net(), x)
    for name, extra in [("ts_bad_json", "{channels: 1"), ("ts_list_json", "[1, 8, 8]"),
                        ("ts_bad_mean", json.dumps({"mean": "grey", "std": 0.5})),
                        ("ts_crc", json.dumps({"channels": 1}))]:
        torch.jit.save(traced, str(d / f"{name}.pt"), _extra_files={"robustbench_lite.json": extra})
        f[name] = d / f"{name}.pt"
    blob = f["ts_crc"].read_bytes()  # one byte of the extra file changed after its CRC was written
    f["ts_crc"].write_bytes(blob.replace(b'{"channels": 1}', b'{"channels": 3}'))
    f["ts_truncated"] = truncated(f["ts_crc"], d / "ts_truncated.pt")
    torch.export.save(torch.export.export(tiny_digits_net(3), (x,)), str(d / "three.pt2"))
    f["pt2_3_classes"] = d / "three.pt2"
    f["checkpoint"] = digits_checkpoint
    return f


def one_line_error(capsys, tmp_path: Path, *argv: str) -> str:
    """Run the CLI; it must exit 2 with one line on stderr and write no results file."""
    out = tmp_path / "results.json"
    code = cli.main([*argv, "--json", str(out), "--no-history", "--no-progress"])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("robust-eval: error:"), err
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("name, flags, needles", [
    ("missing", [], ["nowhere.onnx does not exist", "ONNX"]),
    ("text", [], ["is not a model file", "robust-eval list formats"]),
    ("png", [], ["is not a model file", "89 50 4e 47"]),
    ("pt_truncated", [], ["truncated or damaged archive", "write the model file again"]),
    ("onnx_truncated", [], ["damaged or not an ONNX model", "torch.onnx.export"]),
    ("onnx_rank_2", [], ["rank 2", "N x C x H x W"]),
    ("onnx_3_classes", [], ["(2, 3)", "10 classes"]),
    ("pt2_3_classes", [], ["(2, 3)", "10 classes"]),
    ("empty", [], ["is not a model file", "empty file"]),
    ("zip", [], ["is not a model file", "50 4b 03 04"]),
    ("safetensors_truncated", ["--model", "resnet18"], ["damaged safetensors file", "save_file"]),
    ("ts_bad_json", [], ["extra file robustbench_lite.json is not valid JSON", "_extra_files"]),
    ("ts_list_json", [], ["robustbench_lite.json must be a JSON object", "got list"]),
    ("ts_bad_mean", [], ["ts_bad_mean.pt's robustbench_lite.json: --mean takes numbers", "'grey'"]),
    ("ts_crc", [], ["ts_crc.pt is a damaged archive", "CRC"]),
    ("ts_truncated", [], ["truncated or damaged archive"]),
    ("state_dict", [], ["holds weights only", "--model"]),
    ("state_dict", ["--model", "resnet18"], ["does not fit the 'resnet18' architecture", "--model"]),
    ("whole_module", [], ["refused", "state_dict()", "TorchScript", "torch.export", "ONNX"]),
    ("onnx", ["--mean", "0.5,0.5", "--std", "0.5,0.5"], ["--mean takes 1 or 3 numbers", "got 2"]),
    ("checkpoint", ["--mean", "0.5", "--std", "0.5"], ["is a robust-eval model", "drop --mean, --std"]),
    ("onnx", ["--classes", "a,b,c,d,e,f,g,h,i,j"], ["predicts 10 classes (a, b, c", "the dataset has 10 (0, 1, 2",
                                                  "--classes"]),
])
def test_bad_model_input_is_one_line(files, name, flags, needles, tmp_path, capsys):
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(files[name]), *flags, "--dataset", "digits",
                          "--suite", "clean", "--limit", "16")
    for needle in needles:
        assert needle in line, line


def test_pickled_objects_in_a_pt2_are_refused_before_torch_export_load(files, tmp_path, capsys, monkeypatch):
    """An archive whose weights say use_pickle (torch >= 2.7), or whose pickled weights hold an object
    (torch < 2.7 writes them with torch.save), would be unpickled by torch.export.load: refused unread."""
    path = tmp_path / "pickled.pt2"
    first = "weights"
    with zipfile.ZipFile(files["pt2"]) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            if item.filename.endswith("weights_config.json"):
                config = json.loads(blob)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                blob = json.dumps(config).encode()
            elif item.filename.endswith("serialized_state_dict.pt"):
                buffer = io.BytesIO()
                torch.save({"weight": argparse.Namespace(code="runs on load")}, buffer)
                blob = buffer.getvalue()
            dst.writestr(item, blob)

    def never(*args, **kwargs):
        raise AssertionError("torch.export.load ran on a refused archive")

    monkeypatch.setattr(torch.export, "load", never)
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(path), "--dataset", "digits", "--suite", "clean")
    assert f"refused to load {path}" in line and "pickled object" in line and first in line
    monkeypatch.undo()
    source = run_ok(files["pt2"], tmp_path, capsys)  # the same archive unedited loads
    assert source["format"] == "torch.export" and source["fixed_batch"] == 2


def run_ok(path: Path, tmp_path: Path, capsys) -> dict:
    out = tmp_path / "ok.json"
    code = cli.main(["--checkpoint", str(path), "--dataset", "digits", "--suite", "clean", "--limit", "8", "--json",
                     str(out), "--no-history", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    return json.loads(out.read_text())["source"]


def test_damaged_pt2_config_is_one_line(files, tmp_path, capsys):
    path = tmp_path / "damaged.pt2"
    config = ("weights_config.json", "serialized_exported_program.json")  # torch >= 2.7, torch < 2.7
    with zipfile.ZipFile(files["pt2"]) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"{not json" if item.filename.endswith(config) else src.read(item))
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(path), "--dataset", "digits", "--suite", "clean")
    assert "damaged torch.export archive" in line and "save it again with torch.export.save" in line
    with zipfile.ZipFile(files["pt2"]) as z:
        if any(n.endswith(config[0]) for n in z.namelist()):  # the file is named where torch names it
            assert config[0] in line


@pytest.mark.parametrize("package", ["onnxruntime", "onnx"])
def test_missing_onnx_runtime_names_the_extra(files, package, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(files["onnx"]), "--dataset", "digits",
                          "--suite", "clean")
    assert INSTALL_ONNX in line and "digits.onnx" in line


def test_adversarial_on_onnx_without_surrogate_fails_before_any_data_is_read(files, tmp_path, capsys, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data was read before the run was checked")

    monkeypatch.setattr(data_mod, "as_dataset", no_data)
    monkeypatch.setattr(data_mod, "load", no_data)
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(files["onnx"]), "--dataset", "digits",
                          "--suite", "clean,adversarial")
    assert "--surrogate" in line and "digits.onnx" in line and "gradients" in line


def test_classes_from_a_sidecar_that_are_not_the_datasets(files, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    shutil.copy(files["onnx"], path)
    (tmp_path / "model.json").write_text(json.dumps({"classes": ["cat", "dog", "bird"]}))
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(path), "--dataset", "digits", "--suite", "clean")
    assert "predicts 3 classes (cat, dog, bird)" in line and "the dataset has 10 (0, 1, 2, 3, 4, 5, ...)" in line


def test_a_broken_sidecar_is_one_line(files, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    shutil.copy(files["onnx"], path)
    (tmp_path / "model.json").write_text("{not json")
    line = one_line_error(capsys, tmp_path, "--checkpoint", str(path), "--dataset", "digits", "--suite", "clean")
    assert "model.json is not valid JSON" in line
