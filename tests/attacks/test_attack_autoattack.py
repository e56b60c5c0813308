"""The autoattack ensemble: components in sequence on the survivors, per-image worst case, who broke what."""

from __future__ import annotations

import pytest
import torch

import attacks
from attacks import AutoAttack, evaluate_attack
from robustbench_lite.errors import RobustEvalError


@pytest.fixture(scope="module")
def case(digits_cnn, digits):
    images, labels = digits
    return digits_cnn, images[:120], labels[:120]


def test_each_component_attacks_only_the_survivors_and_the_worst_case_is_kept(case):
    model, images, labels = case
    fgsm = evaluate_attack(model, attacks.build("fgsm", eps=0.1), images, labels)
    pgd = evaluate_attack(model, attacks.build("pgd", eps=0.1, steps=10), images, labels)
    ens = evaluate_attack(model, AutoAttack(eps=0.1, components="fgsm,pgd", steps=10), images, labels)
    # the ensemble's fooled set is exactly the union of its components' (same seeds, same images)
    assert torch.equal(ens.fooled[:, 0], fgsm.fooled[:, 0] | pgd.fooled[:, 0])
    counts = ens.to_dict()["broken_by"]
    assert counts["fgsm"] == int(fgsm.fooled[:, 0].sum())
    assert counts.get("pgd", 0) == int((pgd.fooled[:, 0] & ~fgsm.fooled[:, 0]).sum())
    for i, who in enumerate(ens.broken_by):
        assert (who is None) == (not bool(ens.fooled[i, 0]))
    # pgd ran only on what fgsm left: fewer forward passes than a separate pgd run
    assert ens.forward_passes < fgsm.forward_passes + pgd.forward_passes


def test_the_ensemble_says_where_its_time_went(case):
    import time

    model, images, labels = case
    attack = AutoAttack(eps=0.1, components="fgsm,pgd", steps=10)
    start = time.perf_counter()
    evaluate_attack(model, attack, images, labels)  # the instance given is the one that runs at its own eps
    elapsed = time.perf_counter() - start
    assert list(attack.seconds) == ["fgsm", "pgd"] and all(v > 0 for v in attack.seconds.values())
    assert sum(attack.seconds.values()) <= elapsed


def test_an_eps_sweep_records_the_component_at_each_images_smallest_budget(case):
    model, images, labels = case
    ens = evaluate_attack(model, AutoAttack(eps=0.1, components="fgsm,pgd", steps=5), images, labels,
                          eps_list="0.02,0.1")
    fooled_any = ens.fooled[:, -1]
    assert sum(ens.to_dict()["broken_by"].values()) == int(fooled_any.sum())


def test_bad_configurations_are_one_line():
    with pytest.raises(RobustEvalError, match="version 'fast' is not valid; choose one of standard, rand"):
        AutoAttack(eps=0.1, version="fast")
    with pytest.raises(RobustEvalError, match="not native attacks"):
        AutoAttack(eps=0.1, components="pgd,torchattacks:FGSM")
    with pytest.raises(RobustEvalError, match="untargeted"):
        AutoAttack(eps=0.1, components="pgd", targeted=True)
    with pytest.raises(RobustEvalError, match="no component it can run"):
        AutoAttack(eps=0.1, components="pgd", gradients=False)


def test_the_rand_version_averages_gradients_over_transformations(case):
    model, images, labels = case
    ens = AutoAttack(eps=0.1, version="rand", steps=3)
    assert ens.components == ("apgd-ce", "apgd-dlr")
    assert all(part.eot_iter == 20 for part in ens._built)
    out = ens.run(model, images[:8], labels[:8])
    one = AutoAttack(eps=0.1, version="rand", steps=3)
    one._built = [type(p)(**{**p.params(), "eot_iter": 1}) for p in one._built]
    base = one.run(model, images[:8], labels[:8])
    # a deterministic model: the averaged gradient is the single one, at 20x the backward passes
    assert torch.equal(out.success, base.success)
    assert out.backward > 10 * base.backward


#: The original AutoAttack (Croce & Hein's code, github.com/fra31/auto-attack @a392200) on the digits CNN of
#: conftest.py, digits 1000-1199, `AutoAttack(cnn, norm, eps, version="custom", attacks_to_run=["apgd-ce",
#: "apgd-t", "square"], seed=0, device="cpu")` with n_iter 100, 9 target classes and square.n_queries 1000:
#: robust accuracy of its run_standard_evaluation (the standard version without FAB-T, which we do not have).
ORIGINAL = {("Linf", 0.1): 0.425, ("Linf", 0.05): 0.820, ("L2", 1.0): 0.0}


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.1), ("L2", 1.0),
                                           pytest.param("Linf", 0.05, marks=pytest.mark.slow)])
def test_not_weaker_than_the_original_autoattack(digits_cnn, digits, norm, eps):
    images, labels = digits
    x, y = images[1000:1200], labels[1000:1200]
    ours = evaluate_attack(digits_cnn.eval(), AutoAttack(eps=eps, norm=norm, n_queries=1000), x, y,
                           list(range(1000, 1200)))
    assert ours.robust_accuracy[0] <= ORIGINAL[(norm, eps)] + 0.005  # the bar: at most 0.5 points above
