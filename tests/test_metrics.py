"""Metrics against direct computations and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, f1_score, log_loss

from robustbench_lite import metrics


@pytest.fixture
def logits_labels():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (500,), generator=g)
    logits = torch.randn(500, 5, generator=g) * 2
    logits[torch.arange(500), labels] += 1.5  # better than chance, imperfect
    return logits, labels


def test_report_matches_sklearn(logits_labels):
    logits, labels = logits_labels
    r = metrics.classification_report(logits, labels, 5)
    preds = logits.argmax(1).numpy()
    assert r["accuracy"] == pytest.approx((preds == labels.numpy()).mean())
    assert r["f1_macro"] == pytest.approx(f1_score(labels.numpy(), preds, average="macro"))
    assert r["confusion_matrix"] == confusion_matrix(labels.numpy(), preds).tolist()
    probs = logits.double().softmax(1).numpy()
    assert r["nll"] == pytest.approx(log_loss(labels.numpy(), probs, labels=range(5)), rel=1e-9)
    cm = np.array(r["confusion_matrix"])
    np.testing.assert_allclose(r["per_class_accuracy"], np.diag(cm) / cm.sum(1))


def test_ece_direct_computation(logits_labels):
    logits, labels = logits_labels
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    conf, correct = conf.numpy(), (pred == labels).numpy()
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(ece, abs=1e-12)


def test_ece_of_perfectly_calibrated_and_overconfident():
    labels = torch.tensor([0, 0, 0, 1])
    # confidence 0.75 everywhere, 3 of 4 correct: calibrated
    probs = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0)
    # confidence 1.0, 75% correct: ECE 0.25
    probs = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.25)


def _ece_by_definition(conf: list[float], correct: list[bool], n_bins: int) -> float:
    """Guo et al. (2017), eq. 3, one sample at a time: bin m is ((m-1)/M, m/M]."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(conf):
        m = max(1, math.ceil(c * n_bins))  # the m with (m-1)/M < c <= m/M
        members.setdefault(m, []).append(i)
    total = 0.0
    for idx in members.values():
        acc = sum(correct[i] for i in idx) / len(idx)
        avg_conf = sum(conf[i] for i in idx) / len(idx)
        total += len(idx) / len(conf) * abs(acc - avg_conf)
    return total


def _ece_from_sklearn(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """ECE from scikit-learn's reliability curve (equal-width bins), weighted by bin sizes."""
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=n_bins, strategy="uniform")
    sizes = np.bincount(np.digitize(conf, np.linspace(0, 1, n_bins + 1)[1:-1], right=True), minlength=n_bins)
    weights = sizes[sizes > 0] / len(conf)
    return float(np.sum(weights * np.abs(prob_true - prob_pred)))


def test_ece_against_the_definition_and_scikit_learn(logits_labels):
    logits, labels = logits_labels
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).numpy()
    ece = metrics.expected_calibration_error(probs, labels)
    assert ece == pytest.approx(_ece_by_definition(conf.tolist(), correct.tolist(), 15), abs=1e-12)
    assert ece == pytest.approx(_ece_from_sklearn(conf.numpy(), correct.astype(float), 15), abs=1e-12)
    assert 0.02 < ece < 0.5  # an imperfect, miscalibrated model: neither 0 nor degenerate
    for n_bins in (1, 5, 10):
        assert metrics.expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(
            _ece_by_definition(conf.tolist(), correct.tolist(), n_bins), abs=1e-12)
    # one bin: |overall accuracy - mean confidence|
    assert metrics.expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(
        abs(correct.mean() - conf.numpy().mean()), abs=1e-12)


def test_ece_hand_computed_cases():
    # every prediction right with confidence 1: perfectly calibrated
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert metrics.expected_calibration_error(probs, torch.tensor([0, 1, 2])) == 0.0
    # and every one wrong with confidence 1: off by the whole confidence
    assert metrics.expected_calibration_error(probs, torch.tensor([1, 2, 0])) == 1.0
    # two filled bins of 15: {0.9 right, 0.9 wrong} -> acc 0.5, conf 0.9; {0.4 right, 0.4 right} -> acc 1, conf 0.4
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.3, 0.4, 0.3]],
                         dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    # bins: (0.8667, 0.9333] holds 2 of 4 with |0.5 - 0.9| = 0.4; (0.3333, 0.4] holds 2 of 4 with |1 - 0.4| = 0.6
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.6, abs=1e-12)
    # bins are right-closed (Guo et al.): with 2 bins a confidence of exactly 0.5 shares (0, 0.5] with 0.4
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.3, 0.2]], dtype=torch.float64)
    labels = torch.tensor([0, 1])  # 0.4 right, 0.5 wrong: one bin, acc 0.5, conf 0.45
    assert metrics.expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.05, abs=1e-12)


def test_reliability_bins_count_everything(logits_labels):
    logits, labels = logits_labels
    rel = metrics.reliability(logits.softmax(1), labels)
    assert sum(rel["count"]) == 500 and len(rel["confidence"]) == 15


def test_reliability_matches_scikit_learn(logits_labels):
    logits, labels = logits_labels
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).numpy().astype(float)
    rel = metrics.reliability(probs, labels)
    prob_true, prob_pred = calibration_curve(correct, conf.numpy(), n_bins=15, strategy="uniform")
    filled = [k for k, n in enumerate(rel["count"]) if n]
    assert [rel["accuracy"][k] for k in filled] == pytest.approx(prob_true, abs=1e-6)
    assert [rel["confidence"][k] for k in filled] == pytest.approx(prob_pred, abs=1e-6)
    assert all(rel["accuracy"][k] is None and rel["confidence"][k] is None
               for k in range(15) if k not in filled)
    np.testing.assert_allclose(rel["bin_upper"], np.linspace(0, 1, 16)[1:], atol=1e-7)


def test_classes_missing_from_the_sample_do_not_crash():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    r = metrics.classification_report(logits, torch.tensor([0, 1]), 3)
    assert r["accuracy"] == 1.0 and np.isnan(r["per_class_accuracy"][2])
