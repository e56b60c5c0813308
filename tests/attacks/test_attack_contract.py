"""The contract every attack keeps, driven from the registry (like torchvision's ``check_kernel``).

A new attack is tested by being registered: each (name, norm) it supports gets every check here.
Some torchattacks classes run through the adapter too when torchattacks is installed.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

import attacks
from attacks import ATTACKS, perturbation_norms
from attacks.base import budget_slack

EPS = {"Linf": 0.1, "L2": 0.5}

CASES = [(name, norm) for name in ATTACKS.list() for norm in ATTACKS.entry(name).norms]
HAS_TORCHATTACKS = importlib.util.find_spec("torchattacks") is not None
TA_CASES = [
    ("torchattacks:FGSM", "Linf"),
    ("torchattacks:PGD", "Linf"),
    ("torchattacks:PGDL2", "L2"),
    ("torchattacks:APGD", "L2"),
]
ALL_CASES = CASES + [
    pytest.param(*case, marks=pytest.mark.skipif(not HAS_TORCHATTACKS, reason="torchattacks not installed"))
    for case in TA_CASES
]


def make(name: str, norm: str, **kw) -> attacks.Attack:
    quick = ATTACKS.entry(name).quick if name in ATTACKS else {}
    return attacks.build(name, eps=EPS[norm], norm=norm, **{**quick, **kw})


@pytest.fixture
def batch(digits):
    images, labels = digits
    return images[:24].clone(), labels[:24].clone()


def test_registry_is_not_empty():
    assert {"fgsm", "fgsm-rs", "pgd"} <= set(ATTACKS.list())
    assert ATTACKS.list("fgsm*") == ["fgsm", "fgsm-rs"]


@pytest.mark.parametrize(("name", "norm"), ALL_CASES)
def test_output_contract(name, norm, cnn, batch):
    images, labels = batch
    images_before, labels_before = images.clone(), labels.clone()
    attack = make(name, norm)
    adv = attack(cnn, images, labels)

    assert torch.equal(images, images_before) and torch.equal(labels, labels_before), (
        "input modified in place"
    )
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.device == images.device
    assert not adv.requires_grad and adv.grad_fn is None
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    norms = perturbation_norms(adv - images, norm)
    assert float(norms.max()) <= budget_slack(attack.eps), (
        f"budget exceeded: {float(norms.max())} > {attack.eps}"
    )
    assert not torch.equal(adv, images), "the attack did nothing"


@pytest.mark.parametrize(("name", "norm"), ALL_CASES)
def test_model_state_restored(name, norm, cnn, batch):
    images, labels = batch
    cnn.train()
    cnn[1].eval()  # a submodule deliberately left in eval must stay so
    cnn[0].weight.requires_grad_(False)
    cnn.zero_grad(set_to_none=True)
    before = [m.training for m in cnn.modules()]
    make(name, norm)(cnn, images, labels)
    assert [m.training for m in cnn.modules()] == before
    assert [p.requires_grad for p in cnn.parameters()] == [False] + [True] * (len(list(cnn.parameters())) - 1)
    assert all(p.grad is None for p in cnn.parameters()), "parameter gradients were accumulated"


class Exploding(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_model_state_restored_on_exception(name, norm, cnn, batch):
    images, labels = batch
    model = Exploding(cnn).train()
    with pytest.raises(RuntimeError, match="boom"):
        attack = make(name, norm)
        attack(model, images, labels)
        attack(model, images, labels)  # FGSM without random start may need two calls to fail
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    cnn.eval()


def seed_matters(name: str, norm: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether two seeds give different adversarial images: the attack draws random numbers."""
    first, second = make(name, norm, seed=3), make(name, norm, seed=4)
    return not torch.equal(first(model, images, labels), second(model, images, labels))


#: The query-heavy attacks' per-image replay takes seconds: with the slow tests (CI runs them).
SLOW_PER_IMAGE = ("square", "autoattack")


@pytest.mark.parametrize(("name", "norm"), [pytest.param(*c, marks=pytest.mark.slow)
                                            if isinstance(c, tuple) and c[0] in SLOW_PER_IMAGE else c
                                            for c in ALL_CASES])
def test_batched_equals_per_image(name, norm, cnn, batch):
    attack = make(name, norm)
    images, labels = batch
    if name.startswith("torchattacks:") and seed_matters(name, norm, cnn, images, labels):
        pytest.skip("torchattacks draws from one global generator: per-image results depend on the batch")
    indices = torch.arange(100, 100 + len(images))
    whole = attack(cnn, images, labels, indices)
    single = torch.cat(
        [attack(cnn, images[i : i + 1], labels[i : i + 1], indices[i : i + 1]) for i in range(len(images))]
    )
    # Batch size changes the float summation order in the model; a signed step can then differ on a
    # pixel whose gradient is ~0. Allow at most that, on a handful of pixels.
    differ = (whole - single).abs() > 1e-5
    assert differ.float().mean() < 1e-3, f"{int(differ.sum())} pixels differ between batched and per-image"
    # Reordering the batch (different positions, same dataset indices) does not change results either.
    perm = torch.randperm(len(images))
    shuffled = attack(cnn, images[perm], labels[perm], indices[perm])
    assert ((shuffled - whole[perm]).abs() > 1e-5).float().mean() < 1e-3


@pytest.mark.parametrize(("name", "norm"), ALL_CASES)
def test_seed_reproducible(name, norm, cnn, batch):
    images, labels = batch
    a = make(name, norm, seed=3)(cnn, images, labels)
    b = make(name, norm, seed=3)(cnn, images, labels)
    assert torch.equal(a, b)
    attack = make(name, norm, seed=4)
    if getattr(attack, "random_start", False):  # native attacks with a random start draw it from the seed
        assert not torch.equal(a, attack(cnn, images, labels)), "seed has no effect on a randomised attack"
    elif name in ATTACKS:  # and native attacks without one draw nothing
        assert torch.equal(a, attack(cnn, images, labels)), "seed changes an attack without a random start"


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_run_reports_success_and_counts(name, norm, cnn, batch):
    images, labels = batch
    out = make(name, norm).run(cnn, images, labels)
    with torch.no_grad():
        fooled = cnn(out.adversarial).argmax(1) != labels
    assert torch.equal(out.success, fooled), "reported success disagrees with the model"
    assert 0 < out.forward and 0 <= out.wasted_backward <= out.backward
    assert out.backward <= out.forward


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_float64_kept(name, norm, digits_mlp, batch):
    model = copy.deepcopy(digits_mlp).double()
    images, labels = batch
    adv = make(name, norm)(model, images.double(), labels)
    assert adv.dtype == torch.float64
    assert float(perturbation_norms(adv - images.double(), norm).max()) <= budget_slack(EPS[norm])


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_inference_mode_and_empty_batch(name, norm, cnn, batch):
    images, labels = batch
    attack = make(name, norm)
    with torch.inference_mode():
        adv = attack(cnn, images, labels)
    assert adv.shape == images.shape
    empty = attack(cnn, images[:0], labels[:0])
    assert empty.shape == (0, *images.shape[1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("name", "norm"), ALL_CASES)
def test_cuda_model_cpu_images(name, norm, digits_cnn, batch):
    images, labels = batch
    model = copy.deepcopy(digits_cnn).cuda().eval()
    adv = make(name, norm)(model, images, labels)
    assert adv.device == images.device
    assert float(perturbation_norms(adv - images, norm).max()) <= budget_slack(EPS[norm])
    adv_gpu = make(name, norm)(model, images.cuda(), labels.cuda())
    assert adv_gpu.is_cuda
