"""Every suite's numbers stay what eager fp32 gave when the run was stored, on every forward path."""

from __future__ import annotations

import fixed_run
import numpy as np
import pytest
import torch

from robustbench_lite.gates import metric_paths


@pytest.fixture(scope="module")
def expected():
    with np.load(fixed_run.EXPECTED) as stored:
        return {k: stored[k] for k in stored.files}


@pytest.fixture(scope="module")
def eager():
    return fixed_run.evaluate("eager")


def changed(result, expected) -> dict[str, int]:
    got = fixed_run.outcomes(result)
    assert set(got) == set(expected), "the run's conditions are not the stored run's"
    return {k: int((got[k] != v).sum()) for k, v in expected.items() if (got[k] != v).any()}


def test_eager_gives_the_stored_outcomes(eager, expected):
    assert eager.inference["path"] == "eager"
    assert changed(eager, expected) == {}


@pytest.mark.parametrize("threads", [1, 2])
def test_the_fast_path_changes_no_outcome_and_no_number(eager, expected, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = fixed_run.evaluate("auto")
    finally:
        torch.set_num_threads(before)
    # 450 images x ~70 passes: enough work for the traced graph, and with two threads two batches at once
    assert fast.inference["path"] == "traced", fast.inference["notes"]
    assert fast.inference["workers"] == threads
    assert changed(fast, expected) == {}
    mine, theirs = metric_paths(fast.to_dict()), metric_paths(eager.to_dict())
    assert set(mine) == set(theirs)
    for path, value in theirs.items():  # accuracies exactly; NLL, ECE... to float32's last bits; not times
        if "seconds" in path or path.startswith("timings."):
            continue
        assert (mine[path] is None) == (value is None), path
        if value is not None:
            assert mine[path] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), path
