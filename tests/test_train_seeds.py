"""robust-eval train --seeds: one recipe per seed, the spread over seeds, and compare's seed group."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest

from robustbench_lite import cli
from robustbench_lite.sources.checkpoints import load_checkpoint
from robustbench_lite.training.seeds import seed_output

RECIPE = ["--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
          "--limit", "320", "--eval-limit", "200", "--device", "cpu", "--no-progress"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """`train --seeds 0,1` once for the module: (output given, stdout, the two checkpoint paths)."""
    folder = tmp_path_factory.mktemp("seeds")
    output = folder / "net.pt"
    out = io.StringIO()  # capsys is per test; the module fixture captures for itself
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["train", *RECIPE, "--seeds", "0,1", "--output", str(output)])
    assert code == 0
    return output, out.getvalue(), [folder / "net-seed0.pt", folder / "net-seed1.pt"]


def test_train_seeds_writes_one_checkpoint_per_seed_and_prints_mean_and_sd(seeded):
    output, stdout, paths = seeded
    assert not output.exists() and all(p.is_file() for p in paths)
    metas = [load_checkpoint(p)[1] for p in paths]
    assert [m["seed"] for m in metas] == [0, 1]
    assert metas[0]["recipe"] == metas[1]["recipe"] and metas[0]["recipe"]["epochs"] == 1
    accs = [m["clean_accuracy"] for m in metas]
    assert f"checkpoint (seed 0): {paths[0]}" in stdout and f"checkpoint (seed 1): {paths[1]}" in stdout
    assert "over 2 seeds (0, 1):" in stdout
    row = next(line for line in stdout.splitlines() if line.startswith("test accuracy"))
    assert row.split()[2:] == [f"{accs[0]:.4f}", f"{accs[1]:.4f}", f"{statistics.fmean(accs):.4f}",
                               f"{statistics.stdev(accs):.4f}"]
    assert any(line.startswith("train accuracy") for line in stdout.splitlines())


def test_compare_of_the_seeds_reports_their_mean_and_spread(seeded, tmp_path, capsys):
    _, _, paths = seeded
    table, all_json = tmp_path / "t.md", tmp_path / "all.json"
    code, out, err = run(capsys, "compare", *map(str, paths), "--suite", "clean", "--limit", "150", "-o", str(table),
                         "--json", str(all_json), "--no-progress", "--no-history")
    assert code == 0, err
    data = json.loads(all_json.read_text())
    group = data["comparison"]["seed_groups"][0]
    assert group["runs"] == ["net-seed0", "net-seed1"] and group["seeds"] == [0, 1]
    values = [r["clean"]["accuracy"] for r in data["runs"]]
    assert group["metrics"]["clean.accuracy"]["mean"] == pytest.approx(statistics.fmean(values))
    assert group["metrics"]["clean.accuracy"]["sd"] == pytest.approx(statistics.stdev(values))
    assert "mean ± sd over seeds (2)" in out and "mean ± sd over seeds (2)" in table.read_text()
    # evaluated here, on the same images: the accuracy delta is McNemar-tested, not unpaired
    test = next(m for m in data["comparison"]["metrics"] if m["path"] == "clean.accuracy")["tests"][0]
    assert test["test"] == "mcnemar" and 0 <= test["p_value"] <= 1 and data["comparison"]["unpaired"] == {}
    assert "[" in out and ("pts)*" in out or "pts) n.s." in out)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--seeds", "0,0"], "--seeds 0,0 repeats seed 0"),
    (["--seeds", "0,x"], "'x' is not a non-negative integer"),
    (["--seeds", "0,,1"], "has an empty item"),
    (["--seeds", "3"], "names one seed; a spread needs at least two"),
    (["--seeds", "0,1", "--seed", "2"], "--seeds 0,1 and --seed 2 both given"),
])
def test_bad_seeds_exit_2_before_training(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("robustbench_lite.training.seeds.train", no_training)
    code, out, err = run(capsys, "train", *RECIPE, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_seed_output_puts_the_seed_before_the_suffix():
    assert seed_output("runs/pgd.pt", 3) == "runs/pgd-seed3.pt"
    assert seed_output("model.safetensors", 0) == "model-seed0.safetensors"
    assert seed_output(None, 1) is None  # the default checkpoint names carry the seed already
