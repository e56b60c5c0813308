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
