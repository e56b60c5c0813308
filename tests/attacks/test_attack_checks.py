"""Gradient-masking red flags: clean model silent, each symptom detected with a one-line warning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from attacks import FGSM, PGD, evaluate_attack, gradient_masking_checks, is_stochastic, zero_gradient_fraction
from robustbench_lite.errors import RobustEvalError


class Scaled(nn.Module):
    """Logits x1000: the softmax saturates, so the cross-entropy gradient underflows to exactly 0."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1000 * self.inner(x)


class AlwaysDropout(nn.Module):
    """Randomised even in eval mode (a 'random defence')."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(nn.functional.dropout(x, 0.3, training=True))


@pytest.fixture
def data(digits):
    images, labels = digits
    return images[:200], labels[:200]


def test_clean_model_raises_no_flags(mlp, data):
    images, labels = data
    assert gradient_masking_checks(mlp, images, labels, eps=0.1) == []


def test_zero_gradients_flagged(mlp, data):
    images, labels = data
    model = Scaled(mlp)
    assert zero_gradient_fraction(model, images, labels) > 0.5
    warnings = gradient_masking_checks(model, images, labels, eps=0.1)
    assert (
        len(warnings) == 1
        and "all-zero input gradient" in warnings[0]
        and "--attack square" in warnings[0]
    )
    assert all("\n" not in w for w in warnings)


def test_stochastic_model_flagged(mlp, data):
    images, labels = data
    model = AlwaysDropout(mlp)
    assert is_stochastic(model, images) and not is_stochastic(mlp, images)
    warnings = gradient_masking_checks(model, images, labels, eps=0.1)
    assert any("differ between two identical forward passes" in w for w in warnings)


def test_pgd_weaker_than_fgsm_flagged(mlp, data):
    images, labels = data
    fgsm = evaluate_attack(mlp, FGSM(0.1), images, labels)
    pgd = evaluate_attack(mlp, PGD(0.1), images, labels)
    weak_pgd = dataclasses.replace(pgd, robust_accuracy=(fgsm.robust_accuracy[0] + 0.1,))
    warnings = gradient_masking_checks(mlp, images, labels, eps=0.1, pgd_result=weak_pgd, fgsm_result=fgsm)
    assert len(warnings) == 1 and warnings[0].startswith("PGD robust accuracy")
    with pytest.raises(RobustEvalError, match="the given fgsm result has no eps 0.2"):
        gradient_masking_checks(mlp, images, labels, eps=0.2, pgd_result=pgd, fgsm_result=fgsm)


def test_probabilities_instead_of_logits_flagged(mlp, data):
    images, labels = data
    softmaxed = nn.Sequential(mlp, nn.Softmax(dim=1)).eval()
    warnings = gradient_masking_checks(softmaxed, images, labels, eps=0.1)
    assert any("returns probabilities, not logits" in w for w in warnings)
    assert not any("probabilities" in w for w in gradient_masking_checks(mlp, images, labels, eps=0.1))


class _SelfUpdating(nn.Module):
    """Test-time adaptation in miniature: every forward pass moves a running input mean it subtracts."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("running", torch.zeros(1))

    def forward(self, x):
        self.running += 0.01 * (x.mean() - self.running)
        return self.net(x - self.running)


def test_a_model_that_changes_at_inference_is_flagged(mlp, data):
    images, labels = data
    warnings = gradient_masking_checks(_SelfUpdating(mlp).eval(), images, labels, eps=0.1)
    assert any("optimises itself at inference" in w for w in warnings)
    assert not any("inference" in w for w in gradient_masking_checks(mlp, images, labels, eps=0.1))
