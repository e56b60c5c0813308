"""Shared fixtures: isolated caches, RNG restored after each test, tiny real data and models."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never touch the user's cache or the network for datasets.
_HOME = tempfile.mkdtemp(prefix="robust-eval-test-home-")
os.environ["ROBUST_EVAL_HOME"] = _HOME
os.environ["ROBUST_EVAL_OFFLINE"] = "1"
os.environ.pop("ROBUST_EVAL_DATA", None)
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long end-to-end runs, excluded by default (run with -m slow)")
    config.addinivalue_line("markers", "browser: needs headless Chromium")


@pytest.fixture(autouse=True)
def _restore_rng():
    """Each test may seed freely; the global RNG state is put back afterwards."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.fixture
def one_thread():
    """One torch thread: tiny models on 2 shared cores, where a second OpenMP thread only waits on the busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cache_home() -> Path:
    return Path(_HOME)


@pytest.fixture(scope="session")
def digits_test():
    from robustbench_lite import data

    return data.load("digits", "test")


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A small model trained briefly on scikit-learn digits (real images, seconds on a CPU)."""
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.training import train

    out = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    train(TrainConfig(model="shufflenetv2_x0_5", dataset="digits", epochs=6, batch_size=128, lr=1e-2, seed=0,
                      output=str(out),
                      device="cpu", show_progress=False), log=lambda m: None)
    return out

