"""The CLI as a user drives it: results JSON, determinism, baseline caching, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robustbench_lite import cli
from robustbench_lite.training import baseline_path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_and_efficiency_json(digits_checkpoint, tmp_path, capsys):
    out_json = tmp_path / "out.json"
    code, out, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--dataset", "digits",
                         "--suite", "clean,efficiency", "--limit", "200", "--json", str(out_json), "--no-progress")
    assert code == 0, err
    r = json.loads(out_json.read_text())
    assert r["schema_version"] == 1 and r["model"] == "shufflenetv2_x0_5" and r["dataset"] == "digits"
    assert r["n_examples"] == 200 and r["seed"] == 0
    assert 0.5 < r["clean"]["accuracy"] <= 1 and 0 <= r["clean"]["f1_macro"] <= 1 and 0 <= r["clean"]["ece"] <= 1
    assert len(r["clean"]["confusion_matrix"]) == 10 and sum(map(sum, r["clean"]["confusion_matrix"])) == 200
    # the numbers are the checkpoint's on the first 200 test images, as scikit-learn scores its predictions
    import numpy as np
    import torch
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import confusion_matrix, f1_score

    from robustbench_lite import data
    from robustbench_lite.sources import checkpoints

    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    test = data.load("digits", "test").limit(200)
    with torch.inference_mode():
        probs = net(test.float_images()).double().softmax(1)
    conf, pred = (t.numpy() for t in probs.max(1))
    y = test.labels.numpy()
    assert r["clean"]["accuracy"] == pytest.approx((pred == y).mean(), abs=1e-7)
    assert r["clean"]["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert r["clean"]["confusion_matrix"] == confusion_matrix(y, pred, labels=range(10)).tolist()
    prob_true, prob_pred = calibration_curve(pred == y, conf, n_bins=15)
    sizes = np.bincount(np.digitize(conf, np.linspace(0, 1, 16)[1:-1], right=True), minlength=15)
    ece = np.sum(sizes[sizes > 0] / 200 * np.abs(prob_true - prob_pred))
    assert r["clean"]["ece"] == pytest.approx(ece, abs=1e-6)
    e = r["efficiency"]
    for key in ["params", "flops", "size_mb", "latency_ms", "throughput", "peak_memory_mb"]:
        assert e[key] > 0, key
    assert {"clean", "efficiency", "total"} <= set(r["timings"])
    assert r["environment"]["torch"] and r["config"]["limit"] == 200
    assert "clean" in out and "accuracy" in out and str(out_json.resolve()) in out


def test_same_seed_same_numbers(digits_checkpoint, tmp_path, capsys):
    results = []
    for i, bs in enumerate(["64", "64", "17"]):
        path = tmp_path / f"r{i}.json"
        code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "clean", "--batch-size", bs,
                           "--json", str(path), "--no-progress")
        assert code == 0, err
        results.append(json.loads(path.read_text())["clean"])
    assert results[0] == results[1]  # the same command twice: identical numbers
    # another batch size: the same predictions; float metrics may differ in the last bits of float32 (the
    # convolution kernels oneDNN picks for a batch shape)
    assert results[2]["accuracy"] == results[0]["accuracy"]
    assert results[2]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert results[2]["nll"] == pytest.approx(results[0]["nll"], rel=1e-6)


def test_checkpoint_decides_model_and_dataset(digits_checkpoint, tmp_path, capsys, monkeypatch):
    import torch

    from robustbench_lite import api, models
    from robustbench_lite.config import DEFAULT_MODEL
    from robustbench_lite.sources import checkpoints

    evaluated = []
    real_run_suites = api.run_suites

    def spy(model, *args, **kwargs):
        evaluated.append(model)
        return real_run_suites(model, *args, **kwargs)

    monkeypatch.setattr(api, "run_suites", spy)
    path = tmp_path / "o.json"
    # neither --model nor --dataset: the defaults (shufflenetv2 on fashion-mnist) must not win over the checkpoint
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "clean", "--json", str(path),
                       "--no-progress")
    assert code == 0, err
    r = json.loads(path.read_text())
    assert r["dataset"] == "digits"
    saved = checkpoints.read_checkpoint(digits_checkpoint)
    assert r["model"] == saved["meta"]["model"] == "shufflenetv2_x0_5" != DEFAULT_MODEL
    # the network evaluated is the checkpoint's architecture carrying its weights, tensor for tensor ...
    (net,) = evaluated
    state = net.state_dict()
    assert list(state) == list(saved["state_dict"])
    assert all(torch.equal(state[k], v) for k, v in saved["state_dict"].items())
    default = models.build(DEFAULT_MODEL, 10, 1, 8, pretrained=False, mean=(0.5,), std=(0.5,))
    assert [v.shape for v in default.state_dict().values()] != [v.shape for v in state.values()]
    # ... so it scores what training measured on the same full test split
    assert r["n_examples"] == saved["meta"]["clean_accuracy_images"]
    assert r["clean"]["accuracy"] == saved["meta"]["clean_accuracy"]


def test_baseline_is_trained_once_and_cached(capsys, cache_home):
    path = baseline_path("squeezenet", "digits", 3)
    assert not path.exists()
    code, _, err = run(capsys, "--model", "squeezenet", "--dataset", "digits", "--seed", "3", "--suite", "clean",
                       "--no-progress")
    assert code == 0, err
    assert "training the quick baseline" in err and path.is_file()
    code, _, err = run(capsys, "--model", "squeezenet", "--dataset", "digits", "--seed", "3", "--suite", "clean",
                       "--no-progress")
    assert code == 0 and "training" not in err


def test_train_command_writes_a_checkpoint_with_its_recipe(tmp_path, capsys):
    from robustbench_lite.sources.checkpoints import load_checkpoint

    out = tmp_path / "m.pt"
    code, stdout, err = run(capsys, "train", "--model", "mobilenetv3_small", "--dataset", "digits", "--epochs", "1",
                            "--output", str(out), "--no-progress", "--seed", "5")
    assert code == 0, err
    _, meta = load_checkpoint(out)
    assert meta["model"] == "mobilenetv3_small" and meta["dataset"] == "digits" and meta["seed"] == 5
    assert meta["recipe"]["epochs"] == 1 and meta["classes"] == [str(i) for i in range(10)]
    assert 0 <= meta["clean_accuracy"] <= 1 and meta["input_size"] == 8
    assert "test accuracy" in stdout
    # the recorded accuracy is what the saved weights score on the whole test split, as printed
    import torch

    from robustbench_lite import data

    net, _ = load_checkpoint(out)
    test = data.load("digits", "test")
    with torch.inference_mode():
        acc = float((net(test.float_images()).argmax(1) == test.labels).float().mean())
    assert meta["clean_accuracy"] == pytest.approx(acc, abs=1e-7) and meta["clean_accuracy_images"] == len(test)
    assert f"test accuracy: {acc:.4f}" in stdout


@pytest.mark.parametrize("argv,needle", [
    (["--model", "shufflenet"], "unknown model 'shufflenet'. Did you mean 'shufflenetv2'?"),
    (["--dataset", "fmnist"], "unknown dataset 'fmnist'"),
    (["--suite", "clean,robustness"], "unknown suite 'robustness'"),
    (["--limit", "0"], "--limit: expected an integer >= 1, got 0"),
    (["--limit", "-5"], "--limit: expected an integer >= 1, got -5"),
    (["--limit", "ten"], "expected an integer, got 'ten'"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--dataset", "cifar10", "--model", "resnet18", "--data-dir", "/nonexistent"],
     "--data-dir /nonexistent does not exist"),
    (["--dataset", "cifar10", "--model", "resnet18", "--data-dir", "/"], "cifar10: files not found"),
    (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["train", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["train", "--lr", "-1"], "--lr must be positive"),
    (["list", "gizmos"], "invalid choice: 'gizmos'"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-eval: error:"), err
    assert needle in lines[0]


def test_damaged_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, "--checkpoint", str(bad))
    assert code == 2 and "damaged" in err


def test_checkpoint_for_other_classes_exits_2(digits_checkpoint, capsys, tmp_path):
    # a 10-class checkpoint on a 2-class image folder
    from PIL import Image

    for c in ["a", "b"]:
        (tmp_path / c).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / c / "x.png")
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--dataset", f"imagefolder:{tmp_path}")
    assert code == 2 and "has 10 classes but the dataset has 2" in err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="unknown model"):
        cli.main(["--model", "nope", "--debug"])


def test_config_file_sets_defaults_and_command_line_wins(digits_checkpoint, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"checkpoint: {digits_checkpoint}\nsuite: clean\nlimit: 50\nno-progress: true\n")
    out = tmp_path / "o.json"
    code, _, err = run(capsys, "--config", str(cfg), "--limit", "30", "--json", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())["n_examples"] == 30
    cfg.write_text("limitt: 5\n")
    code, _, err = run(capsys, "--config", str(cfg))
    assert code == 2 and "unknown options: limitt" in err


def test_run_failing_at_once_creates_no_results_file(tmp_path, capsys):
    out = tmp_path / "o.json"
    code, _, _ = run(capsys, "--dataset", "digits", "--checkpoint", str(tmp_path / "none.pt"), "--json", str(out))
    assert code == 2 and not out.exists() and list(tmp_path.iterdir()) == []


class _FailOnForward:
    """Forward pre-hook that lets ``ok`` batches through, then raises ``error`` (Ctrl-C, a crash)."""

    def __init__(self, ok: int, error: BaseException) -> None:
        self.ok, self.error, self.calls = ok, error, 0

    def __call__(self, module, inputs) -> None:
        self.calls += 1
        if self.calls > self.ok:
            raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("out of memory (simulated)")],
                         ids=["ctrl-c", "crash"])
def test_failed_run_leaves_no_results_file(digits_checkpoint, tmp_path, capsys, monkeypatch, error):
    # A previous run's outputs sit where this run writes; this run dies in its second suite, after the
    # clean suite has finished: the old files must survive byte for byte, with no temp file beside them.
    from robustbench_lite.sources import checkpoints

    out_json, out_html = tmp_path / "results.json", tmp_path / "report.html"
    old_json = b'{"schema_version": 1, "model": "previous run", "clean": {"accuracy": 0.97}}\n'
    old_html = b"<!doctype html><title>previous run</title>\n"
    out_json.write_bytes(old_json)
    out_html.write_bytes(old_html)
    # the model check at load time is one forward, the finite-logits probe another, then --limit 64
    # --batch-size 32: the clean suite is two batches
    hook = _FailOnForward(ok=4, error=error)
    real_load = checkpoints.load_checkpoint

    def load_then_arm(*args, **kwargs):
        net, meta = real_load(*args, **kwargs)
        net.register_forward_pre_hook(hook)
        return net, meta

    monkeypatch.setattr(checkpoints, "load_checkpoint", load_then_arm)
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "clean,adversarial", "--attack", "fgsm",
            "--limit", "64", "--batch-size", "32", "--json", str(out_json), "--html", str(out_html), "--no-progress"]
    if isinstance(error, KeyboardInterrupt):
        code, out, err = run(capsys, *argv)
        # what a user sees after Ctrl-C: one line, exit 130, no traceback
        assert code == 130 and err.strip().splitlines()[-1] == "robust-eval: interrupted", err
    else:
        # an unexpected crash is not a user error: it propagates (a traceback, exit 1) rather than a tidy line
        with pytest.raises(RuntimeError, match="out of memory"):
            cli.main(argv)
        out, err = capsys.readouterr()
    assert hook.calls == 5  # the load check, the probe and the clean suite's two batches ran, then adversarial failed
    assert "clean: done on 64 images" in err and "adversarial: done" not in err
    assert "results:" not in out and "report:" not in out
    assert out_json.read_bytes() == old_json and out_html.read_bytes() == old_html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]


def test_list_commands(capsys):
    for what, needle in [("models", "shufflenetv2"), ("datasets", "fashion-mnist"), ("suites", "clean"),
                         ("attacks", "pgd"), ("corruptions", "gaussian_noise"),
                         ("shifts", "covariate/rotation")]:
        code, out, _ = run(capsys, "list", what)
        assert code == 0 and needle in out
    code, out, _ = run(capsys, "list", "models", "mobilenet*")
    assert code == 0 and out.split()[0] == "mobilenetv2" and "resnet18" not in out
    code, out, _ = run(capsys, "list", "datasets", "image*")
    assert code == 0 and out.split()[0] == "imagefolder:PATH"
    code, out, _ = run(capsys, "list", "attacks", "pgd*")
    assert code == 0 and out.splitlines()[-1].strip().startswith("default eps (Linf/L2) per dataset: ")
    code, _, err = run(capsys, "list", "shifts", "zzz")
    assert code == 2 and "no shifts match 'zzz'" in err


def test_list_describes_every_entry_of_every_registry(capsys):
    for what in ("models", "datasets", "suites", "attacks", "corruptions", "shifts", "defences"):
        code, out, _ = run(capsys, "list", what)
        lines = out.splitlines()
        assert code == 0 and lines and all(len(line.split(None, 1)) == 2 for line in lines), what


@pytest.mark.slow
def test_console_script_and_module_entry_points():
    from pathlib import Path

    script = str(Path(sys.executable).parent / "robust-eval")
    for exe in ([script], [sys.executable, "-m", "robustbench_lite"]):
        p = subprocess.run([*exe, "--model", "nope"], capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_a_run_reads_its_checkpoint_and_test_set_once(digits_checkpoint, tmp_path, capsys, monkeypatch):
    """Every suite, the report's example grid and the outputs share one read of each file."""
    import torch

    from robustbench_lite import data

    reads = {"checkpoint": 0, "test set": 0}
    real_load, real_torch_load = data.load, torch.load

    def count_load(*args, **kwargs):
        reads["test set"] += 1
        return real_load(*args, **kwargs)

    def count_torch_load(path, *args, **kwargs):
        reads["checkpoint"] += str(path) == str(digits_checkpoint)
        return real_torch_load(path, *args, **kwargs)

    monkeypatch.setattr(data, "load", count_load)
    monkeypatch.setattr(torch, "load", count_torch_load)
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "clean,corruptions",
                       "--corruptions", "fog", "--severities", "1", "--limit", "20", "--html",
                       str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"), "--no-history")
    assert code == 0, err
    assert reads == {"checkpoint": 1, "test set": 1}
    assert json.loads((tmp_path / "r.json").read_text())["examples"]["rows"][0]["name"] == "clean"
