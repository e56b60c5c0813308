"""Nothing lost, nothing silent: bad paths, damaged files and broken models found before the work,
and a finished run never lost to an output or the history.

Each user error is one line on stderr, exit 2, no traceback, and leaves a sentinel results file
byte for byte as it was; faults after the work (a disk that refuses the report, a locked or
damaged history) cost a warning per output, never the results or the gates' verdict.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from robustbench_lite import cli
from robustbench_lite.files import sha256_file


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def sentinel(tmp_path):
    """A results file no refused command may touch."""
    path = tmp_path / "kept.json"
    path.write_text(json.dumps({"schema_version": 1, "model": "m", "dataset": "digits", "suites": ["clean"],
                                "clean": {"accuracy": 0.5}}))
    return path


def _expand(argv, tmp_path, sentinel, checkpoint, profile=None):
    regular = tmp_path / "regular.txt"
    regular.write_text("a file, not a folder")
    folder = tmp_path / "folder"
    folder.mkdir(exist_ok=True)
    names = {"CKPT": str(checkpoint), "KEPT": str(sentinel), "FILE": str(regular), "DIR": str(folder),
             "UNDERFILE": str(regular / "out.html"), "OUT": str(tmp_path / "out"), "PROFILE": str(profile)}
    return [names.get(a, a.replace("OUT/", str(tmp_path) + "/")) for a in argv]


EVAL = ["--checkpoint", "CKPT", "--dataset", "digits", "--suite", "clean", "--no-history", "--no-progress"]

#: (argv, what the one line must say): every case is refused before any data is read.
USER_ERRORS = [
    # outputs: empty, a folder, under a regular file, twice the same, over an input
    ([*EVAL, "--json", ""], "--json is empty"),
    ([*EVAL, "--html", ""], "--html is empty"),
    ([*EVAL, "--junit", ""], "--junit is empty"),
    ([*EVAL, "--json", "DIR"], "is a folder"),
    ([*EVAL, "--html", "UNDERFILE"], "is a file, so no folder can be made there"),
    ([*EVAL, "--json", "OUT/r.json", "--html", "OUT/r.json"], "--html"),
    ([*EVAL, "--json", "CKPT"], "is also the input --checkpoint"),
    (["report", "KEPT", "-o", "KEPT"], "is also the input"),
    (["report", "KEPT", "-o", "DIR"], "is a folder"),
    (["gate", "KEPT", "--gate", "clean.accuracy >= 0.1", "--junit", "KEPT"], "is also the input"),
    (["compare", "KEPT", "KEPT", "-o", "OUT/t.md", "--json", "KEPT"], "is also the input"),
    (["train", "--dataset", "digits", "--output", ""], "--output is empty"),
    (["train", "--dataset", "digits", "--output", "DIR"], "is a folder"),
    (["compress", "--checkpoint", "CKPT", "--method", "fp16", "--output", "UNDERFILE"], "is a file"),
    (["sweep", "--models", "shufflenetv2_x0_5", "--datasets", "digits", "--output-dir", ""], "--output-dir is empty"),
    (["sweep", "--models", "shufflenetv2_x0_5", "--datasets", "digits", "--output-dir", "FILE"], "not a folder"),
    # numbers the history and the generators cannot hold
    ([*EVAL, "--seed", "99999999999999999999"], "expected a seed in [0, 2**63 - 1]"),
    # a folder or a binary file given as --config
    ([*EVAL, "--config", "DIR"], "is a folder"),
    ([*EVAL, "--config", "CKPT"], "is not text"),
]


#: Per command, a call that would do real work (kept small); the generated cases add one bad flag to it.
COMMAND_BASES = {
    "eval": [*EVAL, "--limit", "8"],
    "train": ["train", "--dataset", "digits", "--epochs", "1", "--limit", "32", "--output", "OUT/m.pt"],
    "compress": ["compress", "--checkpoint", "CKPT", "--method", "fp16", "--output", "OUT/c.pt"],
    "compare": ["compare", "KEPT", "KEPT"],
    "sweep": ["sweep", "--models", "shufflenetv2_x0_5", "--datasets", "digits", "--limit", "8",
              "--output-dir", "OUT/s"],
    "report": ["report", "KEPT", "-o", "OUT/r.html"],
    "gate": ["gate", "KEPT", "--gate", "clean.accuracy >= 0.1"],
    "history": ["history"],
    "plan": ["plan", "--margin", "0.05"],
    "list": ["list", "suites"],
    "monitor fit": ["monitor", "fit", "--checkpoint", "CKPT", "--images", "20", "-o", "OUT/p.safetensors"],
    "monitor check": ["monitor", "check", "--profile", "PROFILE", "--data", "digits", "--limit", "20",
                      "--json", "OUT/m.json"],
    "audit-labels": ["audit-labels", "--checkpoint", "CKPT", "--limit", "40", "--folds", "2", "-o", "OUT/a.csv"],
}


@pytest.fixture(scope="module")
def digits_profile(digits_checkpoint, tmp_path_factory):
    from robustbench_lite.monitoring import monitor_fit

    return monitor_fit(digits_checkpoint, "digits", images=50, device="cpu").save(
        tmp_path_factory.mktemp("profile") / "p.safetensors")


def _parsers():
    """(command as typed, its parser) for every command, and every action of a command that has actions."""
    import importlib

    from robustbench_lite.commands.main import COMMANDS

    for command, module in COMMANDS.items():
        mod = importlib.import_module(f"robustbench_lite.commands.{module}")
        actions = getattr(mod, "ACTIONS", None)
        if actions:
            yield from ((f"{command} {action}", make()) for action, make in actions.items())
        else:
            yield command, mod.parser()


def _generated_flag_cases() -> list[tuple[str, str, str]]:
    """(command, flag, bad value) for every flag that takes a value in every command's parser: the empty
    value everywhere, and for number flags NaN, infinity and a word. New flags are covered when added."""
    import argparse

    cases = []
    for command, parser in _parsers():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue
            flag = max(action.option_strings, key=len)
            cases.append((command, flag, ""))
            try:
                sample = action.type("1") if callable(action.type) else None
            except Exception:
                sample = None
            values = sample if isinstance(sample, tuple) else (sample,)
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                cases += [(command, flag, bad) for bad in ("nan", "inf", "many")]
    return cases


GENERATED = _generated_flag_cases()


def test_every_command_is_covered_by_the_generated_cases():
    commands = {name for name, _ in _parsers()}
    assert set(COMMAND_BASES) == commands, "a new command (or action) needs a base call in COMMAND_BASES"
    assert len(GENERATED) > 250 and {c for c, _, _ in GENERATED} >= commands - {"list"}


@pytest.mark.parametrize(("command", "flag", "value"), GENERATED, ids=[f"{c} {f} {v!r}" for c, f, v in GENERATED])
def test_every_flag_of_every_command_refuses_empty_and_non_finite_values(command, flag, value, digits_checkpoint,
                                                                           digits_profile, sentinel, tmp_path, capsys,
                                                                           monkeypatch):
    """Generated from the parsers: one line, exit 2, before any work; the results file untouched."""
    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    before = sha256_file(sentinel)
    argv = _expand(COMMAND_BASES[command], tmp_path, sentinel, digits_checkpoint, digits_profile) + [f"{flag}={value}"]
    code, out, err = run(capsys, *argv)
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-eval") and "Traceback" not in err, err
    assert sha256_file(sentinel) == before
    assert not [name for name in ("m.pt", "c.pt", "s", "r.html", "p.safetensors", "m.json", "a.csv")
                if (tmp_path / name).exists()]
    assert not (tmp_path / "home" / "history.sqlite").exists()


@pytest.mark.parametrize(("argv", "needle"), USER_ERRORS, ids=[" ".join(c[0][-4:]) for c in USER_ERRORS])
def test_user_errors_are_one_line_before_any_work(argv, needle, digits_checkpoint, sentinel, tmp_path, capsys):
    before = sha256_file(sentinel), sha256_file(digits_checkpoint)
    code, out, err = run(capsys, *_expand(argv, tmp_path, sentinel, digits_checkpoint))
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert (sha256_file(sentinel), sha256_file(digits_checkpoint)) == before
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("OUT*"))


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("limit: [1, 2]\n", "limit takes one value"),
    ("limit: ten\n", "expected an integer, got 'ten'"),
    ("limit: 0\n", "expected an integer >= 1"),
    ("no_progress: 3\n", "is a switch (--no-progress): write true or false"),
    ("seed: 1.5\n", "expected an integer"),
    ("suite: 5\n", "unknown suite"),
    ("batch_size: {a: 1}\n", "batch_size takes one value"),
])
def test_config_files_are_typed_like_the_flags(yaml_text, needle, digits_checkpoint, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    code, _, err = run(capsys, *_expand(EVAL, tmp_path, None, digits_checkpoint), "--config", str(config))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


def _damaged(checkpoint: Path, tmp_path: Path, edit) -> Path:
    payload = torch.load(checkpoint, weights_only=True)
    edit(payload)
    out = tmp_path / "damaged.pt"
    torch.save(payload, out)
    return out


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda p: p.update(meta=["not", "a", "mapping"]), "its metadata is a list, not a mapping"),
    (lambda p: p["meta"].pop("model"), "its metadata has no 'model'"),
    (lambda p: p["meta"].update(num_classes="10"), "metadata 'num_classes' should be an integer >= 2, got '10'"),
    (lambda p: p["meta"].update(std=[0.0]), "metadata 'std' should be a list of one positive number"),
    (lambda p: p["meta"].update(classes=["a"]), "metadata 'classes' should be a list of num_classes"),
    (lambda p: p["meta"].update(input_size=224), "says input_size 224, but it was trained on digits"),
    (lambda p: p.update(version="1"), "format version is '1', not an integer"),
])
def test_damaged_checkpoint_metadata_is_one_line(edit, needle, digits_checkpoint, tmp_path, capsys):
    damaged = _damaged(digits_checkpoint, tmp_path, edit)
    code, _, err = run(capsys, "--checkpoint", str(damaged), "--dataset", "digits", "--suite", "clean", "--limit", "16",
                       "--no-history", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


def test_non_finite_weights_are_an_error_not_a_score(digits_checkpoint, tmp_path, capsys):
    def poison(payload):
        name = next(k for k, v in payload["state_dict"].items() if k.endswith("conv1.0.weight"))
        payload["state_dict"][name][0].fill_(float("nan"))

    damaged = _damaged(digits_checkpoint, tmp_path, poison)
    out = tmp_path / "r.json"
    code, _, err = run(capsys, "--checkpoint", str(damaged), "--dataset", "digits", "--suite", "clean", "--json",
                       str(out), "--gate", "clean.accuracy >= 0.05", "--no-history", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "logits are NaN or infinite" in err and "weights and buffers are NaN or infinite" in err
    assert not out.exists(), "a broken model gets no results file a gate could pass on"


def test_a_report_the_disk_refuses_costs_a_warning_not_the_run(digits_checkpoint, tmp_path, capsys, monkeypatch):
    """After the work: the HTML cannot be written (disk full); the JSON, the history row, the JUnit file
    and the gates' verdict all still come, and the exit code is the gates'."""
    import robustbench_lite.report as report

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_html", full)
    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    out, page, junit = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "gates.xml"
    argv = ["--checkpoint", str(digits_checkpoint), "--dataset", "digits", "--suite", "clean", "--limit", "32",
            "--json", str(out), "--html", str(page), "--junit", str(junit), "--no-progress", "--examples", "0"]
    code, stdout, err = run(capsys, *argv, "--gate", "clean.accuracy >= 0.01")
    assert code == 0, err
    assert "warning: --html" in err and "No space left on device" in err and "Traceback" not in err
    assert json.loads(out.read_text())["gates"]["failed"] == 0 and junit.is_file() and not page.exists()
    assert "history: run" in stdout
    code, _, err = run(capsys, *argv, "--gate", "clean.accuracy >= 1.01")
    assert code == 1 and "warning: --html" in err, "a failed gate is still exit 1"


def test_a_checkpoint_the_folder_refuses_after_training_is_kept_elsewhere(tmp_path, monkeypatch):
    """After the training: the output folder is gone (replaced by a file) when the checkpoint is written.
    The trained model is written under $ROBUST_EVAL_HOME/rescued, the one-line error says where and how to
    move it, and the copy is the model that was trained."""
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.errors import RobustEvalError
    from robustbench_lite.sources import checkpoints
    from robustbench_lite.training import loop

    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "m.pt"
    trained = {}

    def finish(self):  # the folder disappears once the work is done, before the checkpoint is written
        folder.rmdir()
        folder.write_text("not a folder")
        trained["state"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original(self)

    original = loop.Trainer.finish
    monkeypatch.setattr(loop.Trainer, "finish", finish)
    cfg = TrainConfig(model="shufflenetv2_x0_5", dataset="digits", epochs=1, limit=64, eval_limit=32,
                      output=str(out), device="cpu", show_progress=False)
    with pytest.raises(RobustEvalError) as err:
        loop.train(cfg, log=lambda m: None)
    rescued = tmp_path / "home" / "rescued" / "m.pt"
    message = str(err.value)
    assert "\n" not in message and f"could not write the checkpoint {out}" in message
    assert f"it was written to {rescued} instead" in message and f"mv {rescued} {out}" in message
    model, meta = checkpoints.load_checkpoint(rescued)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained["state"][key]), key
    assert meta["model"] == "shufflenetv2_x0_5" and not list(tmp_path.glob("home/rescued/.*.tmp"))


@pytest.mark.parametrize("damage", ["locked", "garbage"])
def test_a_history_that_cannot_take_the_run_costs_a_warning(damage, digits_checkpoint, tmp_path, capsys, monkeypatch):
    from robustbench_lite import history

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ROBUST_EVAL_HOME", str(home))
    monkeypatch.setattr(history, "RECORD_WAIT", 0.2)
    db = home / history.DB_NAME
    holder = None
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        holder = sqlite3.connect(db)
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
    out = tmp_path / "r.json"
    try:
        code, stdout, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--dataset", "digits", "--suite",
                                "clean", "--limit", "16", "--json", str(out), "--no-progress",
                                "--gate", "clean.accuracy >= 0.01")
    finally:
        if holder is not None:
            holder.close()
    assert code == 0, err
    assert "warning: this run is not in the history" in err and "Traceback" not in err
    assert ("locked" in err) == (damage == "locked")
    assert json.loads(out.read_text())["gates"]["failed"] == 0 and "history: run" not in stdout


@pytest.mark.parametrize(("argv", "needle"), [
    ([*EVAL, "--model", ""], "--model is empty"),
    ([*EVAL, "--dataset", ""], "--dataset is empty"),
    ([*EVAL, "--suite", ","], "--suite 'clean,,' has an empty item"),
    ([*EVAL, "--cache-corruptions", ""], "--cache-corruptions is empty"),
    (["train", "--dataset", "digits", "--weight-decay", "nan"], "--weight-decay nan is not a finite number"),
    (["history", "--suite", "bogus"], "unknown suite 'bogus'"),
    (["report", ""], "RESULTS is empty"),
])
def test_empty_values_and_nan_are_refused_in_every_command(argv, needle, digits_checkpoint, tmp_path, capsys):
    code, out, err = run(capsys, *_expand(argv, tmp_path, None, digits_checkpoint))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _fmnist_copy(tmp_path: Path, damage) -> Path:
    """A --data-dir holding Fashion-MNIST's test files with one of them damaged by ``damage(path)``."""
    import gzip
    import shutil

    root = tmp_path / "data"
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if (FMNIST / name).is_file():
            shutil.copy(FMNIST / name, folder / name)
        else:  # a small real-format stand-in: 16 images, 16 labels
            header = b"\x00\x00\x08\x03" + (16).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
            body = bytes(16 * 28 * 28) if "images" in name else bytes(range(10)) + bytes(6)
            if "labels" in name:
                header = b"\x00\x00\x08\x01" + (16).to_bytes(4, "big")
            (folder / name).write_bytes(gzip.compress(header + body))
    damage(folder)
    return root


def _truncate(folder):
    p = folder / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _flip(folder):
    p = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))


def _text(folder):
    (folder / "t10k-labels-idx1-ubyte.gz").write_text("this is not gzip\n")


def _label_out_of_range(folder):
    import gzip

    p = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[8 + 3] = 42
    p.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize(("damage", "needle"), [
    (_truncate, "t10k-images-idx3-ubyte.gz is damaged: a truncated gzip stream"),
    (_flip, "t10k-images-idx3-ubyte.gz is damaged"),
    (_text, "t10k-labels-idx1-ubyte.gz is damaged: not gzip data"),
    (_label_out_of_range, "label 42 at position 3 (1 in all) is outside 0..9"),
])
def test_damaged_dataset_files_are_one_line_naming_the_file(damage, needle, tmp_path, capsys):
    root = _fmnist_copy(tmp_path, damage)
    code, _, err = run(capsys, "--dataset", "fashion-mnist", "--data-dir", str(root), "--suite", "clean",
                       "--limit", "8", "--no-history", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err and "good copy" in err, err


def test_a_file_that_is_not_an_image_in_an_image_folder(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.new("L", (8, 8), 128).save(tmp_path / "imgs" / c / "1.png")
    (tmp_path / "imgs" / "a" / "0.png").write_text("not an image")  # sorts first
    code, _, err = run(capsys, "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--model", "shufflenetv2_x0_5",
                       "--suite", "efficiency", "--no-history", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "0.png" in err and "remove it" in err


def test_a_mistyped_data_dir_is_refused_not_skipped(tmp_path, capsys):
    code, _, err = run(capsys, "--dataset", "digits", "--data-dir", str(tmp_path / "nope"), "--suite", "clean",
                       "--no-history", "--no-progress")
    assert code == 2 and "--data-dir" in err and "does not exist" in err


@pytest.mark.parametrize(("data", "needle"), [
    ({"schema_version": "1"}, "'schema_version' should be an integer >= 1, got '1'"),
    ({"schema_version": 1, "suites": 5}, "'suites' should be a list, got 5"),
    ({"schema_version": 1, "suites": ["clean"], "environment": "x"}, "'environment' should be a dict"),
    ({"schema_version": 1, "suites": ["clean"], "clean": [1, 2]}, "'clean' should be a mapping"),
    ({"schema_version": 1, "timings": {"total": "slow"}}, "'timings.total' should be a number of seconds"),
])
@pytest.mark.parametrize("command", ["report", "gate", "baseline"])
def test_results_files_of_the_wrong_types_are_one_line(data, needle, command, digits_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    argv = {"report": ["report", str(bad), "-o", str(tmp_path / "r.html")],
            "gate": ["gate", str(bad), "--gate", "clean.accuracy >= 0.1"],
            "baseline": [*_expand(EVAL, tmp_path, None, digits_checkpoint), "--gate",
                         "clean.accuracy >= baseline - 0.1", "--baseline", str(bad)]}[command]
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "r.html").exists()


def _train_argv(out: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "robustbench_lite", "train", "--model", "shufflenetv2_x0_5", "--dataset",
            "digits", "--epochs", "12", "--limit", "256", "--batch-size", "16", "--eval-limit", "32",
            "--output", str(out), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The weights of the training run the interrupted ones must end with."""
    import os
    import subprocess

    whole = tmp_path_factory.mktemp("whole") / "whole.pt"
    ref = subprocess.run(_train_argv(whole), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    return torch.load(whole, weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), [("SIGINT", "SIGINT"), ("SIGTERM", "SIGINT")])
def test_two_interrupts_stop_once_and_resume_bit_for_bit(first, second, uninterrupted, tmp_path):
    """A second Ctrl-C (or a Ctrl-C after the SIGTERM a scheduler sends) 50 ms after the first is absorbed:
    the step and the state write finish, and the resumed run ends with exactly the weights of a run never
    interrupted."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "cut.pt"
    proc = subprocess.Popen(_train_argv(out), env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:  # wait until the loop runs
        if line.startswith("epoch 1/"):
            break
    proc.send_signal(getattr(signal, first))
    time.sleep(0.05)
    proc.send_signal(getattr(signal, second))
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "already stopping" in rest and "state saved to" in rest and "Traceback" not in rest, rest
    done = subprocess.run([*_train_argv(out), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming from" in done.stderr, done.stderr
    a = torch.load(out, weights_only=True)["state_dict"]
    assert a.keys() == uninterrupted.keys() and all(torch.equal(a[k], uninterrupted[k]) for k in a)


def _eval_json(capsys, checkpoint, out: Path, *extra: str) -> dict:
    code, _, err = run(capsys, "--checkpoint", str(checkpoint), "--dataset", "digits", "--limit", "48", "--json",
                       str(out), "--no-history", "--no-progress", *extra)
    assert code == 0, err
    return json.loads(out.read_text())


def test_cached_and_computed_corruptions_give_identical_numbers_and_a_damaged_entry_is_a_miss(
        digits_checkpoint, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    flags = ["--suite", "corruptions", "--corruptions", "gaussian_noise,fog", "--severities", "2,4"]
    plain = _eval_json(capsys, digits_checkpoint, tmp_path / "a.json", *flags)["corruptions"]["accuracy"]
    filled = _eval_json(capsys, digits_checkpoint, tmp_path / "b.json", *flags, "--cache-corruptions",
                        str(cache))["corruptions"]["accuracy"]
    read = _eval_json(capsys, digits_checkpoint, tmp_path / "c.json", *flags, "--cache-corruptions", str(cache))
    assert plain == filled == read["corruptions"]["accuracy"], "8-bit images either way: the same numbers"
    (manifest,) = cache.rglob("manifest.json")
    data = json.loads(manifest.read_text())
    entry = next(k for k in data["files"] if k.startswith("fog") or "fog" in k)
    del data["files"][entry]["sha256"]  # a hand edit
    manifest.write_text(json.dumps(data))
    caplog.clear()
    again = _eval_json(capsys, digits_checkpoint, tmp_path / "d.json", *flags, "--cache-corruptions", str(cache))
    assert again["corruptions"]["accuracy"] == plain
    said = [r.getMessage() for r in caplog.records if "ignoring entry" in r.getMessage()]
    assert len(said) == 1 and str(manifest) in said[0] and "no 'sha256'" in said[0], said


def test_baseline_gates_and_compare_refuse_means_over_other_conditions(digits_checkpoint, tmp_path, capsys):
    base = tmp_path / "base.json"
    _eval_json(capsys, digits_checkpoint, base, "--suite", "corruptions", "--corruptions", "fog", "--severities", "1")
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--dataset", "digits", "--limit", "48",
                       "--suite", "corruptions", "--corruptions", "fog,contrast", "--severities", "1", "--no-history",
                       "--no-progress", "--json", str(tmp_path / "run.json"),
                       "--gate", "corruptions.mean_accuracy >= baseline - 0.5", "--baseline", str(base))
    assert code == 2 and "not the same quantity" in err and "only in this run: contrast" in err, err
    assert (tmp_path / "run.json").is_file(), "the finished run is kept"
    # The same corruption on both sides is the same quantity: a per-condition gate passes.
    code, _, err = run(capsys, "gate", str(tmp_path / "run.json"), "--baseline", str(base),
                       "--gate", "corruptions.accuracy.fog.1 >= baseline - 0.5")
    assert code == 0, err
    code, out, err = run(capsys, "compare", str(base), str(tmp_path / "run.json"), "-o", str(tmp_path / "t.md"))
    assert code == 0, err
    assert "not comparable" in out and "they average over different conditions" in out


def test_sweep_configs_are_typed_and_a_damaged_cell_is_recomputed(digits_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: shufflenetv2_x0_5\ndatasets: digits\nlimit: [1, 2]\n")
    code, _, err = run(capsys, "sweep", str(bad))
    assert code == 2 and "limit should be a positive integer" in err and len(err.strip().splitlines()) == 1, err
    out = tmp_path / "sweep"
    (tmp_path / "ckpt.yaml").write_text(f"models: [shufflenetv2_x0_5]\ndatasets: [digits]\nsuites: [clean]\n"
                                        f"limit: 32\noutput_dir: {out}\n"
                                        f"checkpoints: {{shufflenetv2_x0_5/digits: {digits_checkpoint}}}\n")
    code, _, err = run(capsys, "sweep", str(tmp_path / "ckpt.yaml"))
    assert code == 0, err
    (cell,) = (out / "cells").glob("*.json")
    cell.write_text(cell.read_text()[:40])  # cut short
    code, _, err = run(capsys, "sweep", str(tmp_path / "ckpt.yaml"))
    assert code == 0, err
    assert f"cached cell {cell} is damaged" in err and err.count("is damaged") == 1
    assert json.loads(cell.read_text())["result"]["clean"]["accuracy"] > 0.5


def test_a_backend_that_cannot_run_on_the_data_is_refused_before_the_suites(digits_checkpoint, capsys):
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--dataset", "digits", "--suite",
                       "clean,adversarial,corruptions", "--corruption-backend", "imagecorruptions", "--no-history",
                       "--no-progress")
    assert code == 2 and "add --profile imagenet" in err and "adversarial: done" not in err, err


def test_results_record_where_the_data_and_the_model_came_from(digits_checkpoint, tmp_path, capsys):
    from robustbench_lite import data
    from robustbench_lite.api import data_provenance

    root = _fmnist_copy(tmp_path, lambda folder: None)
    found = data_provenance(data.load("fashion-mnist", "test", data_dir=root))
    names = sorted(Path(f["path"]).name for f in found["files"])
    assert names == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for f in found["files"]:
        assert Path(f["path"]).parent == (root / "fashion-mnist").resolve()
        assert f["sha256"] == sha256_file(f["path"])
    result = _eval_json(capsys, digits_checkpoint, tmp_path / "r.json", "--suite", "clean")
    assert result["checkpoint"]["sha256"] == sha256_file(digits_checkpoint)
    assert result["data"]["name"] == "digits" and result["data"]["source"] == "sklearn.datasets.load_digits"


def test_a_second_run_waits_for_the_baseline_the_first_is_training(digits_checkpoint, tmp_path, monkeypatch):
    """Two runs wanting the same missing quick baseline: the second waits on the lock and loads what the
    first wrote, instead of training it a second time."""
    import shutil
    import threading
    import time

    from filelock import FileLock

    from robustbench_lite.training import loop

    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    path = loop.baseline_path("shufflenetv2_x0_5", "digits", 0, False)
    path.parent.mkdir(parents=True)
    holding = threading.Event()

    def first_run():  # holds the lock while "training", then writes the checkpoint
        with FileLock(str(path) + ".lock"):
            holding.set()
            time.sleep(0.5)
            shutil.copy(digits_checkpoint, path)

    first = threading.Thread(target=first_run)
    first.start()
    holding.wait()
    lines: list[str] = []
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained the baseline a second time"))
    _, meta, got = loop.load_or_train_baseline("shufflenetv2_x0_5", "digits", 0, "cpu", None, log=lines.append)
    first.join()
    assert got == path and meta["model"] == "shufflenetv2_x0_5"
    assert any("waiting for it" in line for line in lines)
