"""torchrun: 2 gloo processes give the single-process numbers exactly, and train a loadable checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustbench_lite import data, distributed
from robustbench_lite.sources import checkpoints

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
needs_fmnist = pytest.mark.skipif(not (data.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST not installed (make data)")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
MODULE = ["-m", "robustbench_lite"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _numbers(results: dict) -> dict:
    """Everything but wall-clock times, the environment and how the forward passes were split (threads)."""
    out = {k: v for k, v in results.items() if k not in ("timings", "environment", "command", "config", "inference")}
    out["corruptions"] = {k: v for k, v in out["corruptions"].items()
                          if k not in ("corruption_seconds", "inference_seconds")}
    out["adversarial"] = dict(out["adversarial"])
    out["adversarial"]["passes"] = {k: {kk: vv for kk, vv in v.items() if kk != "seconds"}
                                    for k, v in out["adversarial"]["passes"].items()}
    return out


@pytest.fixture(scope="module")
def ddp_checkpoint(tmp_path_factory):
    """Trained by 2 torchrun processes (DistributedDataParallel), 4 epochs on 2,000 Fashion-MNIST images."""
    work = tmp_path_factory.mktemp("ddp")
    out = work / "ddp.pt"
    proc = _run([*TORCHRUN, *MODULE, "train", "--model", "shufflenetv2_x0_5", "--dataset", "fashion-mnist",
                 "--limit", "2000", "--eval-limit", "500", "--epochs", "4", "--batch-size", "128", "--lr", "1e-2",
                 "--device", "cpu", "--output", str(out), "--no-progress"], _env(work), work)
    assert "distributed training on 2 processes" in proc.stderr
    assert proc.stdout.count("checkpoint:") == 1, "only rank 0 prints and writes"
    return out


@pytest.mark.slow
@needs_fmnist
def test_two_process_training_writes_a_loadable_checkpoint(ddp_checkpoint):
    net, meta = checkpoints.load_checkpoint(ddp_checkpoint)
    assert meta["model"] == "shufflenetv2_x0_5" and meta["dataset"] == "fashion-mnist"
    assert meta["clean_accuracy"] > 0.5, "4 epochs on 2,000 images: well above chance (one process: 77%)"
    assert not list(ddp_checkpoint.parent.glob("*.resume")), "no state file left behind"


@pytest.mark.slow
@needs_fmnist
def test_two_processes_give_the_single_process_numbers_exactly(ddp_checkpoint, tmp_path):
    args = ["--checkpoint", str(ddp_checkpoint), "--suite", "clean,adversarial,corruptions", "--limit", "1000",
            "--batch-size", "100", "--corruptions", "gaussian_noise,defocus_blur,fog,jpeg_compression",
            "--severities", "1,3,5", "--device", "cpu", "--no-progress", "--no-history"]
    env = _env(tmp_path)
    single, double = tmp_path / "single.json", tmp_path / "double.json"
    _run([sys.executable, *MODULE, *args, "--json", str(single)], env, tmp_path)
    proc = _run([*TORCHRUN, *MODULE, *args, "--json", str(double)], env, tmp_path)
    assert proc.stdout.count("results:") == 1, "only rank 0 writes the results"
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert a["n_examples"] == b["n_examples"] == 1000
    assert _numbers(a) == _numbers(b)
    assert 0 < a["adversarial"]["results"][0]["robust_accuracy"] < a["clean"]["accuracy"]


def test_units_are_gathered_in_order_without_a_group():
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    assert distributed.run_units(5, lambda k: k * k) == [0, 1, 4, 9, 16]
    assert distributed.on_main(lambda: "x") == "x"
    assert distributed.slice_for_rank(list(range(7))) == list(range(7))


def test_compare_refuses_torchrun(monkeypatch, capsys):
    from robustbench_lite import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["compare", "a.pt"]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err
