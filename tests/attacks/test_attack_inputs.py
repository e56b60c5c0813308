"""Eps parsing, and every user mistake raising RobustEvalError with a useful message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import attacks
from attacks import FGSM, FGSMRS, PGD, evaluate_attack, parse_eps
from robustbench_lite.errors import RobustEvalError


def test_parse_eps():
    assert parse_eps("1/255,2/255,0.1") == [1 / 255, 2 / 255, 0.1]
    assert parse_eps(" 0.1 , 8/255 ,0.1") == [8 / 255, 0.1]
    assert parse_eps(0.5) == [0.5]
    assert parse_eps(["4/255", 0.01]) == [0.01, 4 / 255]
    assert parse_eps("2", norm="L2") == [2.0]


@pytest.mark.parametrize(
    ("spec", "norm", "message"),
    [
        (
            "1/255,abc",
            None,
            r"eps value 'abc' in '1/255,abc' is not a number; write decimals \(0.03\) or fractions",
        ),
        ("1/255,,2/255", None, "empty eps value"),
        ("-0.1", None, "must be > 0"),
        ("0", None, "must be > 0"),
        ("1/0", None, "divides by zero"),
        ("8", "Linf", r"is 8 > 1 for Linf; .* such as 8/255"),
        ("nan", None, "not finite"),
        ([], None, "no eps given"),
        ([True], None, "is not a number"),
    ],
)
def test_parse_eps_errors(spec, norm, message):
    with pytest.raises(RobustEvalError, match=message):
        parse_eps(spec, norm=norm)


@given(st.lists(st.tuples(st.integers(1, 64), st.sampled_from([255, 100, 16])), min_size=1, max_size=6))
def test_parse_eps_fractions_roundtrip(fractions):
    text = ",".join(f"{a}/{b}" for a, b in fractions)
    assert parse_eps(text) == sorted({a / b for a, b in fractions})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PGD(2.0), r"eps must be in \(0, 1\] for Linf, got 2.0; pass a fraction .* such as 2/255"),
        (lambda: PGD(0.0), "eps must be > 0, got 0.0"),
        (lambda: PGD(-1), "eps must be > 0"),
        (lambda: PGD(float("nan")), "eps must be a finite number"),
        (lambda: PGD("8/255"), "eps must be a finite number in pixel units, got '8/255'"),
        (lambda: PGD(0.1, steps=0), "steps must be an integer >= 1, got 0"),
        (lambda: PGD(0.1, steps=2.5), "steps must be an integer >= 1, got 2.5"),
        (lambda: PGD(0.1, alpha=0), "alpha must be a finite number > 0, got 0"),
        (lambda: PGD(0.1, restarts=0), "restarts must be an integer >= 1"),
        (lambda: PGD(0.1, norm="L1"), "norm must be one of Linf, L2, got 'L1'"),
        (lambda: PGD(0.1, seed=-1), "seed must be an integer >= 0"),
        (lambda: PGD(0.1, random_start="yes"), "random_start must be True or False"),
        (lambda: FGSMRS(0.1, alpha=-1), "alpha must be a finite number > 0"),
        (
            lambda: attacks.build("pgdd", eps=0.1),
            r"unknown attack 'pgdd'.*Did you mean 'pgd'.*Valid attacks: .*fgsm",
        ),
        (lambda: attacks.build("pgd", eps=0.1, stpes=3), r"no parameter 'stpes'. Did you mean 'steps'"),
        (lambda: attacks.build("pgd"), "needs eps"),
    ],
)
def test_bad_parameters(build, message):
    with pytest.raises(RobustEvalError, match=message):
        build()


def test_l2_accepts_large_eps_and_aliases():
    assert PGD(2.0, norm="L2").eps == 2.0
    assert PGD(0.1, norm="linf").norm == "Linf" and PGD(0.1, norm="l2").norm == "L2"


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (
            torch.rand(2, 1, 8, 8) * 255,
            torch.zeros(2, dtype=torch.long),
            r"images must be in \[0,1\].*got values in",
        ),
        (
            torch.rand(1, 8, 8),
            torch.zeros(1, dtype=torch.long),
            r"must be 4-D \(N, C, H, W\), got shape \(1, 8, 8\)",
        ),
        (
            (torch.rand(2, 1, 8, 8) * 255).to(torch.uint8),
            torch.zeros(2, dtype=torch.long),
            "images.float\\(\\) / 255",
        ),
        (torch.rand(2, 1, 8, 8).numpy(), torch.zeros(2, dtype=torch.long), "must be a torch.Tensor"),
        (torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2, dtype=torch.long), "NaN or inf"),
        (torch.rand(2, 1, 8, 8), torch.zeros(3, dtype=torch.long), r"labels must have shape \(2,\)"),
        (torch.rand(2, 1, 8, 8), torch.zeros(2), "labels must be an integer torch.Tensor"),
        (
            torch.rand(2, 1, 8, 8),
            torch.tensor([0, 12]),
            "label 12 is out of range for a model with 10 classes",
        ),
        (torch.rand(2, 1, 8, 8), torch.tensor([0, -1]), "class indices >= 0"),
    ],
)
def test_bad_inputs(mlp, images, labels, message):
    with pytest.raises(RobustEvalError, match=message):
        PGD(0.1, steps=2)(mlp, images, labels)


def test_bad_call_arguments(mlp, digits):
    images, labels = digits
    x, y = images[:4], labels[:4]
    with pytest.raises(RobustEvalError, match=r"indices must be one dataset index per image \(4\)"):
        FGSM(0.1)(mlp, x, y, indices=[1, 2])
    with pytest.raises(RobustEvalError, match="is targeted: pass targets="):
        PGD(0.1, targeted=True)(mlp, x, y)
    with pytest.raises(RobustEvalError, match="model must be a torch.nn.Module"):
        FGSM(0.1)(lambda z: z, x, y)
    with pytest.raises(RobustEvalError, match=r"logits of shape \(N, classes\)"):
        FGSM(0.1)(torch.nn.Flatten(0), x, y)
    with pytest.raises(RobustEvalError, match="pass eps_list"):
        evaluate_attack(mlp, "pgd", x, y)
    with pytest.raises(RobustEvalError, match=r"eps must be in \(0, 1\] for Linf"):
        evaluate_attack(mlp, PGD(0.1), x, y, eps_list=[0.1, 3])
    with pytest.raises(RobustEvalError, match="batch_size must be an integer >= 1"):
        evaluate_attack(mlp, PGD(0.1), x, y, batch_size=0)
    with pytest.raises(RobustEvalError, match="label 10 is out of range"):
        evaluate_attack(mlp, PGD(0.1), x, torch.tensor([0, 1, 2, 10]))
    res = evaluate_attack(mlp, PGD(0.1, steps=2), x, y)
    with pytest.raises(RobustEvalError, match="eps 0.3 was not evaluated; evaluated budgets: 0.1"):
        res.robust_accuracy_at(0.3)
