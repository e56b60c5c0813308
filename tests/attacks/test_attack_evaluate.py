"""evaluate_attack: clean pass once, survivors only, monotone sweeps, per-image records, compute floor."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import FGSM, PGD, AttackEvaluation, evaluate_attack


class CountingModel(nn.Module):
    """Counts the images each forward pass sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


@pytest.fixture
def data(digits):
    images, labels = digits
    return images[1000:1300], labels[1000:1300]


def test_result_fields_and_definitions(cnn, data):
    images, labels = data
    res = evaluate_attack(cnn, PGD(0.1, steps=5), images, labels, keep_adversarial=True)
    assert isinstance(res, AttackEvaluation)
    n = len(images)
    assert res.fooled.shape == (n, 1) and res.min_eps.shape == (n,) and res.linf.shape == (n,)
    with torch.no_grad():
        clean_pred = cnn(images).argmax(1)
        adv_pred = cnn(res.adversarial).argmax(1)
    assert torch.equal(res.clean_correct, clean_pred == labels)
    # fooled <=> correctly classified and the kept adversarial is misclassified
    assert torch.equal(res.fooled[:, 0], res.clean_correct & (adv_pred != labels))
    robust = (res.clean_correct & (adv_pred == labels)).float().mean()
    assert res.robust_accuracy[0] == pytest.approx(float(robust))
    assert res.attack_success_rate[0] == pytest.approx(
        float(res.fooled[:, 0].sum() / res.clean_correct.sum())
    )
    assert res.mean_perturbation[0] == pytest.approx(float(res.linf[res.fooled[:, 0]].mean()))
    assert torch.all(res.min_eps[~res.clean_correct] == 0)
    assert torch.all(res.min_eps[res.fooled[:, 0]] == 0.1)
    assert torch.all(torch.isnan(res.min_eps[res.clean_correct & ~res.fooled[:, 0]]))
    assert torch.all(res.linf[~res.clean_correct] == 0) and float(res.linf.max()) <= 0.1 + 1e-6
    assert torch.allclose(res.l2, (res.adversarial - images).flatten(1).norm(dim=1))
    assert 0 < res.floor_passes <= res.passes
    d = res.to_dict(per_image=True)
    assert d["robust_accuracy"] == list(res.robust_accuracy) and len(d["min_eps"]) == n
    assert all(v is None or not math.isnan(v) for v in d["min_eps"])


def test_clean_pass_once_and_only_correct_images_attacked(digits_cnn, data):
    images, labels = data
    model = CountingModel(digits_cnn)
    res = evaluate_attack(model, FGSM(0.1), images, labels)
    n_correct = int(res.clean_correct.sum())
    assert n_correct < len(images), "need some misclassified images for this test"
    # one clean pass over everything; FGSM then forwards each correct image twice (step + check)
    assert model.seen == len(images) + 2 * n_correct == res.forward_passes
    assert res.backward_passes == n_correct


def test_sweep_is_monotone_and_attacks_survivors_only(cnn, data):
    images, labels = data
    eps_list = [0.02, 0.05, 0.1, 0.2]
    sweep = evaluate_attack(cnn, PGD(0.1, steps=5), images, labels, eps_list=eps_list)
    assert sweep.eps == tuple(eps_list)
    assert torch.all(sweep.fooled[:, 1:] >= sweep.fooled[:, :-1]), "fooled must be monotone in eps"
    assert list(sweep.robust_accuracy) == sorted(sweep.robust_accuracy, reverse=True)
    singles = [evaluate_attack(cnn, PGD(e, steps=5), images, labels) for e in eps_list]
    for j, single in enumerate(singles):
        # the sweep adds what smaller budgets found: never less fooled than the single run
        assert sweep.robust_accuracy[j] <= single.robust_accuracy[0]
    separate = sum(s.passes for s in singles) - (len(eps_list) - 1) * len(images)  # one clean pass only
    assert sweep.passes < separate
    # min_eps agrees with the fooled matrix
    first = torch.where(sweep.fooled.any(1), sweep.fooled.float().argmax(1), -1)
    for i in range(len(images)):
        if sweep.clean_correct[i] and first[i] >= 0:
            assert float(sweep.min_eps[i]) == pytest.approx(eps_list[int(first[i])])


def test_batch_size_and_order_do_not_change_results(cnn, data):
    images, labels = data
    idx = torch.arange(len(images)) + 1000
    a = evaluate_attack(cnn, PGD(0.08, steps=5), images, labels, idx, batch_size=300)
    b = evaluate_attack(cnn, PGD(0.08, steps=5), images, labels, idx, batch_size=7)
    assert torch.equal(a.fooled, b.fooled)
    assert torch.equal(torch.isnan(a.min_eps), torch.isnan(b.min_eps))
    assert a.robust_accuracy == b.robust_accuracy
    perm = torch.randperm(len(images))
    c = evaluate_attack(cnn, PGD(0.08, steps=5), images[perm], labels[perm], idx[perm], batch_size=64)
    assert torch.equal(c.fooled, a.fooled[perm])


def test_attack_by_name_and_factory(cnn, data):
    images, labels = data
    by_name = evaluate_attack(cnn, "pgd", images, labels, eps_list="1/255,0.05", attack_kwargs={"steps": 3})
    by_factory = evaluate_attack(cnn, lambda e: PGD(e, steps=3), images, labels, eps_list=[0.05, 1 / 255])
    assert by_name.eps == by_factory.eps == (1 / 255, 0.05)
    assert torch.equal(by_name.fooled, by_factory.fooled)


def test_targeted_evaluation_uses_random_wrong_targets(mlp, data):
    images, labels = data
    res = evaluate_attack(mlp, PGD(0.3, steps=10, targeted=True), images, labels)
    assert res.attack_success_rate[0] > 0.5


def test_model_mode_restored_and_empty_input(cnn, data):
    images, labels = data
    cnn.train()
    evaluate_attack(cnn, FGSM(0.1), images, labels)
    assert cnn.training
    cnn.eval()
    empty = evaluate_attack(cnn, FGSM(0.1), images[:0], labels[:0])
    assert empty.n == 0 and math.isnan(empty.robust_accuracy[0])
