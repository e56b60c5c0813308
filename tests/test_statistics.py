"""Intervals and paired tests against their references (scipy) and by simulation of their coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustbench_lite import statistics

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (10, 10), (87, 100), (912, 1000), (3, 9999)])
def test_wilson_matches_scipy(k, n):
    ref = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = statistics.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_intervals_cover_about_95_percent():
    rng = np.random.default_rng(0)
    sims = 4000
    for p, n in ((0.5, 50), (0.9, 200), (0.97, 500)):
        k = rng.binomial(n, p, size=sims)
        covered = sum(lo <= p <= hi for lo, hi in (statistics.wilson(int(x), n) for x in k))
        # 4000 draws: the simulation's own standard error is ~0.35 points.
        assert 0.93 <= covered / sims <= 0.975, (p, n, covered / sims)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 5), (3, 9), (10, 10), (40, 61), (1200, 1310)])
def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs(b, c):
    got = statistics.mcnemar(b, c)
    ref = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert statistics.mcnemar(c, b) == pytest.approx(got)


def test_mcnemar_difference_of_two_models_on_the_same_images():
    rng = np.random.default_rng(1)
    a = rng.random(2000) < 0.85
    b = a.copy()
    flip = rng.choice(2000, 60, replace=False)
    b[flip[:50]] = True  # b fixes up to 50 of a's errors and breaks 10 others
    b[flip[50:]] = False
    d = statistics.mcnemar_difference(a, b)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert d.delta == pytest.approx(b.mean() - a.mean())
    assert d.p_value == pytest.approx(scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    assert d.ci[0] <= d.delta <= d.ci[1] and d.test == "mcnemar"
    same = statistics.mcnemar_difference(a, a)
    assert same.delta == 0 and same.p_value == 1.0 and not same.significant


def test_sample_size_is_the_fewest_images_for_the_margin():
    z = statistics.z_value()

    def half(p: float, m: int) -> float:  # the Wilson half-width at an exact proportion
        return z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)

    for margin, p in ((0.01, 0.5), (0.02, 0.9), (0.005, 0.95)):
        n = statistics.sample_size(margin, p)
        assert half(p, n) <= margin < half(p, n - 1)
    assert 9500 < statistics.sample_size(0.01) < 9700  # the textbook 1.96^2 / (4 * 0.01^2) = 9604
    with pytest.raises(ValueError, match="margin"):
        statistics.sample_size(0.7)


def test_resampler_is_reproducible_and_pairs_conditions_on_the_same_images():
    correct = np.random.default_rng(2).random((300, 3)) < 0.8
    a = statistics.Resampler(seed=5, resamples=600).accuracies("test", correct)
    b = statistics.Resampler(seed=5, resamples=600).accuracies("test", correct)
    c = statistics.Resampler(seed=6, resamples=600).accuracies("test", correct)
    assert a.shape == (600, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    # one column at a time is resampled on the same images as all at once
    single = statistics.Resampler(seed=5, resamples=600).accuracies("test", correct[:, 1])
    assert np.array_equal(single, a[:, 1])
    # each replicate is an accuracy of 300 drawn images; their mean is the accuracy itself
    assert np.allclose(a * 300, np.round(a * 300), atol=1e-9) and abs(a.mean(0) - correct.mean(0)).max() < 0.01


def test_bootstrap_interval_of_a_mean_over_conditions_covers():
    """Correlated conditions (hard images fail everywhere): the paired bootstrap keeps the correlation."""
    rng = np.random.default_rng(3)
    n, k, sims = 200, 5, 300
    hardness = rng.random(100_000)
    truth = np.mean([(hardness > 0.1 * (j + 1)).mean() for j in range(k)])
    covered = 0
    for s in range(sims):
        h = rng.choice(hardness, n)
        correct = np.stack([h > 0.1 * (j + 1) for j in range(k)], axis=1)
        reps = statistics.Resampler(seed=s, resamples=500).accuracies("test", correct).mean(axis=1)
        lo, hi = statistics.percentile_interval(reps)
        covered += lo <= truth <= hi
    assert 0.90 <= covered / sims <= 0.99


def test_weighted_accuracies_resample_the_weighted_images():
    correct = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    weights = np.array([2, 0, 1, 1, 0, 0], dtype=np.float32)  # a resample of the set: image 0 twice
    reps = statistics.Resampler(resamples=400).accuracies("test", correct, weights)
    assert reps.shape == (400,)
    finite = reps[np.isfinite(reps)]
    assert np.all(finite == 1.0)  # every weighted image is right
    assert statistics.percentile_interval(finite) == (1.0, 1.0)


def test_paired_difference_p_value_and_interval():
    rng = np.random.default_rng(4)
    base = rng.normal(0.80, 0.01, 2000)
    better = base + 0.02 + rng.normal(0, 0.002, 2000)
    d = statistics.paired_difference(base, better, 0.02)
    assert d.significant and d.ci[0] > 0 and d.p_value < 0.01
    same = statistics.paired_difference(base, base + rng.normal(0, 0.002, 2000), 0.0)
    assert not same.significant and same.ci[0] < 0 < same.ci[1]


def test_interval_text():
    assert statistics.interval_text(0.912, (0.906, 0.917)) == "91.2% [90.6, 91.7]"
    assert statistics.interval_text(0.5, (0.4, 0.6), "ratio") == "0.500 [0.400, 0.600]"
    assert statistics.interval_text(None, None) == "n/a"
    assert statistics.as_interval([0.1, 0.2]) == (0.1, 0.2) and statistics.as_interval("x") is None
