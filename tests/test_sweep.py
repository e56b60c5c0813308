"""robust-eval sweep: a cached grid of cells that survives being killed and records failing cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from robustbench_lite import cli
from robustbench_lite.sweep import EXIT_CELLS_FAILED, SweepConfig, cells

MODELS = "shufflenetv2_x0_5,mobilenetv3_small,squeezenet"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_sweep_killed_midway_resumes_without_recomputing(tmp_path, capsys, cache_home):
    out_dir = tmp_path / "sweep"
    argv = ["sweep", "--models", MODELS, "--datasets", "digits", "--suites", "clean,corruptions", "--limit", "60",
            "--corruptions", "noise,blur", "--severities", "1,3", "--output-dir", str(out_dir), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_lite", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cell_dir = out_dir / "cells"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if cell_dir.is_dir() and len(list(cell_dir.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in cell_dir.glob("*.json")}
    assert 2 <= len(done_before) < 6, f"kill did not land midway ({len(done_before)} cells done)"
    assert not (out_dir / "results.json").exists()

    code, out, err = run(capsys, "sweep", "--resume", "--output-dir", str(out_dir))
    assert code == 0, err
    assert f"cells: {6 - len(done_before)} computed, {len(done_before)} cached, 0 failed" in out
    assert err.count(": cached (") == len(done_before)
    for name, mtime in done_before.items():
        assert (cell_dir / name).stat().st_mtime_ns == mtime, "a finished cell was recomputed"
    results = json.loads((out_dir / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == MODELS.split(",")
    assert all(r["suites"] == ["clean", "corruptions"] for r in results["runs"])
    assert results["comparison"]["runs"] == MODELS.split(",")
    table = (out_dir / "table.md").read_text()
    assert "corruptions mean accuracy" in table and "squeezenet" in table
    assert "<html" in (out_dir / "report.html").read_text()[:500].lower()

    # A third run of the same sweep computes nothing.
    code, out, _ = run(capsys, "sweep", "--resume", "--output-dir", str(out_dir))
    assert code == 0 and "cells: 0 computed, 6 cached" in out


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, capsys, cache_home, digits_checkpoint):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "models: [shufflenetv2_x0_5, squeezenet]\n"
        "datasets: [digits]\n"
        "suites: [clean]\n"
        "limit: 50\n"
        f"checkpoints:\n  shufflenetv2_x0_5/digits: {digits_checkpoint}\n  squeezenet/digits: {bad}\n"
        f"output_dir: {tmp_path / 'out'}\n")
    code, out, err = run(capsys, "sweep", str(config))
    assert code == EXIT_CELLS_FAILED
    assert "1 computed, 0 cached, 1 failed" in out
    assert "squeezenet/digits/scratch/clean" in err and f"{bad} is not a model file" in err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failures"][0]["cell"] == "squeezenet/digits/scratch/clean"
    assert [r["model"] for r in results["runs"]] == ["shufflenetv2_x0_5"]


@pytest.mark.slow
def test_compression_is_an_axis_and_artefacts_are_made_once(tmp_path, capsys, digits_checkpoint):
    """compress: [bf16, prune:0.5]: the checkpoint and each artefact are runs of the table, the report plots them."""
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "models: [shufflenetv2_x0_5]\ndatasets: [digits]\nsuites: [clean, efficiency]\nlimit: 100\n"
        "compress: [bf16, prune:0.5]\n"
        f"checkpoints:\n  shufflenetv2_x0_5/digits: {digits_checkpoint}\noutput_dir: {tmp_path / 'out'}\n"
        "suite_options:\n  efficiency: {latency_runs: 2, throughput_batch_size: 8}\n")
    code, out, err = run(capsys, "sweep", str(config))
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    net = "shufflenetv2_x0_5"
    assert results["comparison"]["runs"] == [net, f"{net}/bf16", f"{net}/prune:0.5"]
    methods = [(r["checkpoint"].get("artefact") or {}).get("spec") for r in results["runs"]]
    assert methods == [None, "bf16", "prune:0.5"]
    assert results["runs"][2]["efficiency"]["sparsity"] >= 0.5
    artefacts = sorted(p.name for p in (tmp_path / "out" / "artefacts").iterdir())
    assert len(artefacts) == 2 and all(a.endswith(".pt") for a in artefacts)
    assert 'id="pareto"' in (tmp_path / "out" / "report.html").read_text()
    # Run again (a fresh output of the cells, the same artefacts): nothing is compressed again.
    for cell in (tmp_path / "out" / "cells").iterdir():
        cell.unlink()
    code, out, err = run(capsys, "sweep", str(config))
    assert code == 0, err
    assert err.count(": kept (") == 2 and "fine-tun" not in err


def test_precision_is_an_axis_and_its_cells_have_their_own_cache(tmp_path, capsys, digits_checkpoint):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "models: [shufflenetv2_x0_5]\ndatasets: [digits]\nsuites: [clean]\nlimit: 100\n"
        f"checkpoints:\n  shufflenetv2_x0_5/digits: {digits_checkpoint}\noutput_dir: {tmp_path / 'out'}\n")
    code, out, err = run(capsys, "sweep", str(config), "--precision", "fp32,bf16")
    assert code == 0, err
    assert "x 2 precisions" in err and "cells: 2 computed, 0 cached" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    net = "shufflenetv2_x0_5"
    assert results["comparison"]["runs"] == [f"{net}/fp32", f"{net}/bf16"]
    fp32, bf16 = results["runs"]
    assert fp32["inference"]["precision"] == "fp32" and fp32["clean"]["agreement_with_fp32"] is None
    assert bf16["inference"]["precision"] == "bf16" and 0.9 <= bf16["clean"]["agreement_with_fp32"] <= 1
    assert results["sweep"]["precision"] == ["fp32", "bf16"]
    code, out, _ = run(capsys, "sweep", str(config), "--precision", "fp32,bf16")
    assert code == 0 and "cells: 0 computed, 2 cached" in out
    # As shipped is a cell of its own: a precision's cached numbers never stand in for it.
    code, out, _ = run(capsys, "sweep", str(config))
    assert code == 0 and "cells: 1 computed, 0 cached" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["--precision", "fp8"], "unknown precision 'fp8'; valid: fp32, bf16, fp16"),
    (["--precision", "bf16,bf16"], "precision lists a precision twice"),
    (["--precision", ","], "precision is empty"),
    (["--inference", "fast"], "unknown inference mode 'fast'; valid: auto, eager"),
    (["--compress", "int9"], "unknown compression method 'int9'"),
    (["--compress", "prune:2"], "must be a number in (0, 1)"),
    (["--models", "nope"], "unknown model 'nope'"),
    (["--suites", "clean,nope"], "unknown suite 'nope'"),
    (["--init", "imagenet"], "unknown init 'imagenet'"),
    (["--resume", "--output-dir", "{tmp}/none"], "no sweep to resume"),
    (["--stress", "imb0.5"], "--imbalance 0.5 must be a ratio >= 1"),
    (["--stress", "pair0.6"], "give a rate below 0.5"),
    (["--stress", "tilt3"], "stress 'tilt3' is not a stressor"),
    (["--stress", "imb10,imb10"], "stress lists a value twice"),
    (["--defence", "gce+sce"], "gce,sce is an incompatible combination"),
    (["--defence", "nope"], "unknown defence 'nope'"),
])
def test_sweep_bad_input_exits_2(argv, needle, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "sweep", *argv, "--output-dir", str(tmp_path / "o"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_stress_and_defence_are_axes_with_their_own_checkpoints_and_curves(tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["sweep", "--models", "shufflenetv2_x0_5", "--datasets", "digits", "--suites", "clean", "--limit", "200",
            "--stress", "none,imb5,imb20", "--defence", "none,balanced-softmax", "--output-dir", str(out_dir),
            "--device", "cpu"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "x 3 stresses x 2 defences" in err and "cells: 6 computed" in out
    results = json.loads((out_dir / "results.json").read_text())
    net = "shufflenetv2_x0_5"
    assert results["comparison"]["runs"] == [f"{net}/none/standard", f"{net}/none/balanced-softmax",
                                             f"{net}/imb5/standard", f"{net}/imb5/balanced-softmax",
                                             f"{net}/imb20/standard", f"{net}/imb20/balanced-softmax"]
    by_label = dict(zip(results["comparison"]["runs"], results["runs"], strict=True))
    stressed = by_label[f"{net}/imb20/balanced-softmax"]["checkpoint"]
    assert stressed["stress"]["imbalance"] == 20 and stressed["defence"]["label"] == "balanced-softmax"
    assert "changed_indices" not in stressed["stress"]
    assert "stress" not in by_label[f"{net}/none/standard"]["checkpoint"]
    assert len(list((out_dir / "trained").glob("*.pt"))) == 5  # none/standard is the cached quick baseline
    page = (out_dir / "report.html").read_text()
    assert page.count('class="stress-curve"') == 1 and "Class imbalance" in page
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "cells: 0 computed, 6 cached" in out


def test_stress_curves_put_the_unstressed_run_first_and_draw_one_line_per_remedy():
    from robustbench_lite.analysis.stress_curves import stress_curves

    def run_of(defence, stress=None, acc=0.9):
        checkpoint = {"defence": {"label": defence}, **({"stress": stress} if stress else {})}
        return {"model": "m", "checkpoint": checkpoint, "clean": {"accuracy": acc, "worst_class_accuracy": acc - 0.2},
                "corruptions": {"mean_accuracy": acc - 0.1}}

    runs = [run_of("standard"), run_of("gce", acc=0.89),
            run_of("standard", {"noise": {"kind": "pair", "rate": 0.4}}, 0.6),
            run_of("standard", {"noise": {"kind": "pair", "rate": 0.2}}, 0.8),
            run_of("gce", {"noise": {"kind": "pair", "rate": 0.4}}, 0.7),
            run_of("standard", {"imbalance": 10, "noise": {"kind": "sym", "rate": 0.2}}, 0.5)]  # two at once: left out
    (curve,) = stress_curves(runs)
    assert curve["kind"] == "pair" and not curve["log_x"]
    assert [x for x, _ in curve["lines"]["standard"]] == [0.0, 0.2, 0.4]
    assert [v[0] for _, v in curve["lines"]["standard"]] == [0.9, 0.8, 0.6]
    assert [(x, pytest.approx(v)) for x, v in curve["lines"]["gce"]] == [(0.0, [0.89, 0.69, 0.79]),
                                                                         (0.4, [0.7, 0.5, 0.6])]


def test_grid_and_full_suites():
    cfg = SweepConfig.from_dict({"models": "shufflenetv2,resnet18", "datasets": ["digits"], "suites": ["full"],
                                 "init": ["scratch", "pretrained"]})
    grid = cells(cfg)
    assert len(grid) == 2 * 1 * 2 * 5
    assert cfg.suites == ["clean", "adversarial", "corruptions", "shift", "efficiency"]


@pytest.mark.slow
def test_cells_handed_to_torchrun_give_the_in_process_numbers(tmp_path, capsys, digits_checkpoint, monkeypatch):
    # Every suite's options travel to the launched cells as flags (Options.to_args): a flag the cell's
    # parser did not know would fail the cell.
    common = ["--models", "shufflenetv2_x0_5", "--datasets", "digits",
              "--suites", "clean,adversarial,corruptions,shift", "--limit", "60", "--device", "cpu",
              "--attack", "fgsm,pgd", "--eps", "0.05,0.1", "--steps", "2",
              "--corruptions", "gaussian_noise,fog", "--severities", "2", "--corruption-backend", "native",
              "--shift-splits", "covariate/rotation,label/dirichlet", "--shift-alpha", "1", "--shift-draws", "2",
              "--shift-intensities", "1,5"]
    config = tmp_path / "ck.yaml"
    config.write_text(f"checkpoints:\n  shufflenetv2_x0_5/digits: {digits_checkpoint}\n")
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc-per-node 2"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out, err = run(capsys, "sweep", str(config), *common, "--output-dir", str(tmp_path / "a"),
                         "--launcher", launcher)
    assert code == 0, err
    assert err.count("launching:") == 4 and "torch.distributed.run" in err
    assert "--shift-splits covariate/rotation,label/dirichlet" in err and "--corruption-backend native" in err
    code, _, err = run(capsys, "sweep", str(config), *common, "--output-dir", str(tmp_path / "b"))
    assert code == 0, err
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["runs"][0] for d in "ab")
    assert a["clean"] == b["clean"]
    assert a["adversarial"]["robust_accuracy"] == b["adversarial"]["robust_accuracy"]
    assert list(a["adversarial"]["robust_accuracy"]) == ["fgsm.Linf[0.05]", "fgsm.Linf[0.1]", "pgd.Linf[0.05]",
                                                         "pgd.Linf[0.1]"]
    assert a["corruptions"]["accuracy"] == b["corruptions"]["accuracy"]
    assert set(a["corruptions"]["accuracy"]) == {"gaussian_noise", "fog"}
    assert {k: v["accuracy"] for k, v in a["shift"]["splits"].items()} == \
        {k: v["accuracy"] for k, v in b["shift"]["splits"].items()}
    assert set(a["shift"]["splits"]) == {"covariate/rotation", "label/dirichlet"}


def test_the_shipped_seed_benchmark_config_is_valid():
    from pathlib import Path

    from robustbench_lite.sweep import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "seed-benchmark.yaml")
    assert len(cfg.models) == 5 and len(cfg.datasets) == 3 and cfg.init == ["scratch", "pretrained"]
    assert len(cells(cfg)) == 5 * 3 * 2 * 5


def test_trained_checkpoints_of_two_confusion_matrices_do_not_share_a_file(tmp_path, monkeypatch):
    import robustbench_lite.training as training
    from robustbench_lite.sweep import Cell, _trained_for

    made = []
    monkeypatch.setattr(training, "train", lambda cfg, log=None: made.append(cfg.output))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("[[0.9, 0.1], [0.1, 0.9]]")
    b.write_text("[[0.8, 0.2], [0.2, 0.8]]")
    cfg = SweepConfig(models=["shufflenetv2_x0_5"], datasets=["digits"], output_dir=str(tmp_path / "out"))
    paths = {_trained_for(Cell("shufflenetv2_x0_5", "digits", "scratch", "clean", stress=f"confusion:{m}"), cfg,
                          lambda m: None) for m in (a, b, f"{a}@0.3")}  # a's pattern at 30%: a third run
    assert len(paths) == 3 and made == sorted(paths, key=made.index)
    assert all("confusion" in p and ":" not in p.rsplit("/", 1)[1] and "@" not in p for p in paths)
