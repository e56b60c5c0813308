"""Temperature scaling: the NLL's minimiser, cross-fitted so no image is scored with a temperature fitted on it,
and ECE/NLL before and after under every condition (calibration that holds only in distribution is exposed)."""

from __future__ import annotations

import fixed_run
import pytest
import torch

from robustbench_lite import data
from robustbench_lite.analysis import calibration
from robustbench_lite.api import evaluate


def _overconfident(n=6000, factor=3.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, 5, generator=gen) * 1.5
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=gen).flatten()
    return true_logits * factor, labels  # a model whose logits are 3x too large


def test_the_fitted_temperature_minimises_the_nll():
    logits, labels = _overconfident()
    t = calibration.fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.08)  # it undoes the over-confidence
    grid = torch.linspace(0.5, 6, 2000)
    best = float(grid[torch.tensor([calibration.nll(logits, labels, float(g)) for g in grid]).argmin()])
    assert t == pytest.approx(best, abs=6e-3)
    optimize = pytest.importorskip("scipy.optimize")
    ref = optimize.minimize_scalar(lambda v: calibration.nll(logits, labels, v), bounds=(0.05, 20), method="bounded",
                                   options={"xatol": 1e-8})
    assert t == pytest.approx(ref.x, rel=1e-3)


def test_cross_fitting_scales_each_fold_by_the_other_folds_temperature():
    logits, labels = _overconfident(n=2001)
    t0, t1 = calibration.cross_fit(logits, labels)
    assert t0 == pytest.approx(calibration.fit_temperature(logits[1::2], labels[1::2]))
    assert t1 == pytest.approx(calibration.fit_temperature(logits[0::2], labels[0::2]))
    scaled = calibration.scale(logits, (t0, t1))
    assert torch.allclose(scaled[0::2], logits[0::2] / t0) and torch.allclose(scaled[1::2], logits[1::2] / t1)
    result = calibration.before_after(logits, labels, (t0, t1))
    assert result["nll_after"] < result["nll_before"] and result["ece_after"] < result["ece_before"] / 2


def test_calibrate_reports_before_and_after_on_every_condition_and_changes_no_prediction():
    net, digits = fixed_run.load(), data.load("digits", "test")
    options = {"corruptions": "fog", "severities": "1,5", "shift_splits": "covariate/rotation,label/dirichlet",
               "shift_intensities": "1,5", "shift_draws": 2}
    plain = evaluate(net, digits, "clean,corruptions,shift", **options)
    calibrated = evaluate(net, digits, "clean,corruptions,shift", calibrate=True, **options)
    clean = calibrated.suites["clean"]
    assert clean.accuracy == plain.suites["clean"].accuracy and plain.suites["clean"].calibration is None
    t0, t1 = clean.calibration["temperatures"]
    assert 0.05 < t0 < 20 and 0.05 < t1 < 20
    assert clean.calibration["ece_before"] == pytest.approx(clean.ece)
    corr = calibrated.suites["corruptions"]
    assert corr.accuracy == plain.suites["corruptions"].accuracy
    assert list(corr.calibration["by_condition"]) == ["fog.1", "fog.5"]
    assert corr.calibration["ece_before"] == pytest.approx(
        (corr.calibration["by_condition"]["fog.1"]["ece_before"] + corr.calibration["by_condition"]["fog.5"]
         ["ece_before"]) / 2)
    splits = calibrated.suites["shift"].splits
    assert set(splits["covariate/rotation"].calibration["by_condition"]) == {"1", "5"}
    assert splits["covariate/rotation"].calibration["ece_before"] == pytest.approx(splits["covariate/rotation"].ece)
    assert splits["label/dirichlet"].calibration["nll_after"] > 0
