"""The CLI as a user drives it: results JSON, determinism, baseline caching, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robustbench_lite import cli
from robustbench_lite.train import baseline_path


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
    # another batch size: the same predictions; float metrics may differ in the last bits (conv kernels)
    assert results[2]["accuracy"] == results[0]["accuracy"]
    assert results[2]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert results[2]["nll"] == pytest.approx(results[0]["nll"], rel=1e-9)


def test_checkpoint_decides_model_and_dataset(digits_checkpoint, tmp_path, capsys):
    path = tmp_path / "o.json"
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "clean", "--json", str(path),
                       "--no-progress")
    assert code == 0, err
    assert json.loads(path.read_text())["dataset"] == "digits"


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
    from robustbench_lite.models import load_checkpoint

    out = tmp_path / "m.pt"
    code, stdout, err = run(capsys, "train", "--model", "mobilenetv3_small", "--dataset", "digits", "--epochs", "1",
                            "--output", str(out), "--no-progress", "--seed", "5")
    assert code == 0, err
    _, meta = load_checkpoint(out)
    assert meta["model"] == "mobilenetv3_small" and meta["dataset"] == "digits" and meta["seed"] == 5
    assert meta["recipe"]["epochs"] == 1 and meta["classes"] == [str(i) for i in range(10)]
    assert 0 <= meta["clean_accuracy"] <= 1 and meta["input_size"] == 8
    assert "test accuracy" in stdout


@pytest.mark.parametrize("argv,needle", [
    (["--model", "shufflenet"], "unknown model 'shufflenet'. Did you mean 'shufflenetv2'?"),
    (["--dataset", "fmnist"], "unknown dataset 'fmnist'"),
    (["--suite", "clean,robustness"], "unknown suite 'robustness'"),
    (["--limit", "0"], "--limit must be a positive number"),
    (["--limit", "-5"], "--limit must be a positive number"),
    (["--limit", "ten"], "expected an integer, got 'ten'"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--dataset", "cifar10", "--model", "resnet18", "--data-dir", "/nonexistent"], "cifar10: files not found"),
    (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["train", "--epochs", "0"], "--epochs must be a positive integer"),
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


def test_failed_run_leaves_no_results_file(tmp_path, capsys):
    out = tmp_path / "o.json"
    code, _, _ = run(capsys, "--dataset", "digits", "--checkpoint", str(tmp_path / "none.pt"), "--json", str(out))
    assert code == 2 and not out.exists() and list(tmp_path.iterdir()) == []


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


def test_console_script_and_module_entry_points():
    from pathlib import Path

    script = str(Path(sys.executable).parent / "robust-eval")
    for exe in ([script], [sys.executable, "-m", "robustbench_lite"]):
        p = subprocess.run([*exe, "--model", "nope"], capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
