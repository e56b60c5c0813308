"""Metrics against direct computations and scikit-learn."""

import numpy as np
import pytest
import torch
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


def test_reliability_bins_count_everything(logits_labels):
    logits, labels = logits_labels
    rel = metrics.reliability(logits.softmax(1), labels)
    assert sum(rel["count"]) == 500 and len(rel["confidence"]) == 15


def test_classes_missing_from_the_sample_do_not_crash():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    r = metrics.classification_report(logits, torch.tensor([0, 1]), 3)
    assert r["accuracy"] == 1.0 and np.isnan(r["per_class_accuracy"][2])
