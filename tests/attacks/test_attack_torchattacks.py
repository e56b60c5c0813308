"""Cross-checks against torchattacks and the adapter that runs its catalogue through our base class."""

from __future__ import annotations

import sys

import pytest
import torch

import attacks
from attacks import FGSM, PGD, TorchattacksAttack, evaluate_attack
from robustbench_lite.errors import RobustEvalError


def test_missing_torchattacks_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import raises ImportError
    with pytest.raises(RobustEvalError, match=r"pip install 'robustbench-lite\[torchattacks\]'"):
        attacks.build("torchattacks:PGD", eps=0.1)
    assert "torchattacks:PGD" not in attacks.available()
    assert "pgd" in attacks.available()


@pytest.fixture
def torchattacks():
    return pytest.importorskip("torchattacks")


@pytest.fixture
def test_split(digits):
    images, labels = digits
    return images[600:1400], labels[600:1400]  # not seen by the CNN in training


def test_fgsm_matches_torchattacks_exactly(torchattacks, cnn, test_split):
    images, labels = test_split
    theirs = torchattacks.FGSM(cnn, eps=0.1)(images, labels)
    ours = FGSM(0.1, early_stop=False)(cnn, images, labels)
    assert torch.equal(ours, theirs)
    # With early exit, images already misclassified are returned clean; the rest are identical.
    with torch.no_grad():
        correct = cnn(images).argmax(1) == labels
    early = FGSM(0.1)(cnn, images, labels)
    assert torch.equal(early[correct], theirs[correct])
    assert torch.equal(early[~correct], images[~correct])


def test_pgd_without_random_start_matches_torchattacks(torchattacks, cnn, test_split):
    images, labels = test_split
    theirs = torchattacks.PGD(cnn, eps=0.1, alpha=0.02, steps=5, random_start=False)(images, labels)
    ours = PGD(0.1, steps=5, alpha=0.02, random_start=False, early_stop=False)(cnn, images, labels)
    differ = (ours - theirs).abs() > 1e-6
    assert differ.float().mean() < 1e-4, f"{int(differ.sum())} pixels differ"


def _robust(model, adv, labels) -> float:
    with torch.no_grad():
        return int((model(adv).argmax(1) == labels).sum()) / len(labels)


def test_pgd_robust_accuracy_not_worse_than_torchattacks(torchattacks, cnn, test_split):
    images, labels = test_split
    eps, steps, alpha = 0.1, 10, 0.025
    # Same trajectory without random start: early exit can only add fooled images.
    ours = evaluate_attack(cnn, PGD(eps, steps=steps, random_start=False), images, labels).robust_accuracy[0]
    adv = torchattacks.PGD(cnn, eps=eps, alpha=alpha, steps=steps, random_start=False)(images, labels)
    theirs = _robust(cnn, adv, labels)
    assert ours <= theirs
    # With random starts (different generators), compare means over seeds: one draw varies by ~0.01 here.
    ours_rs, theirs_rs, passes = [], [], []
    for seed in range(3):
        res = evaluate_attack(cnn, PGD(eps, steps=steps, seed=seed), images, labels)
        ours_rs.append(res.robust_accuracy[0])
        passes.append(res.passes)
        torch.manual_seed(seed)
        theirs_rs.append(
            _robust(cnn, torchattacks.PGD(cnn, eps=eps, alpha=alpha, steps=steps)(images, labels), labels)
        )
    mean_ours, mean_theirs = sum(ours_rs) / 3, sum(theirs_rs) / 3
    print(
        f"PGD-{steps} Linf eps={eps} on {len(images)} digits: no random start ours {ours:.4f} / torchattacks "
        f"{theirs:.4f}; random start (3 seeds) ours {mean_ours:.4f} / torchattacks {mean_theirs:.4f}; "
        f"passes {passes[0]} vs {len(images) * (2 * steps + 2)}"
    )
    assert mean_ours <= mean_theirs + 0.005
    assert max(passes) < len(images) * (2 * steps + 2)  # clean + steps x (fwd + bwd) + final eval


def test_adapter_maps_arguments(torchattacks, cnn):
    apgd = attacks.build("torchattacks:APGD", eps=0.5, norm="L2", steps=7, seed=5)
    assert apgd._ctor == {"eps": 0.5, "norm": "L2", "steps": 7, "seed": 5, "verbose": False}
    pgdl2 = attacks.build("torchattacks:PGDL2", eps=0.5, alpha=0.1)
    assert pgdl2.norm == "L2" and pgdl2._ctor == {"eps": 0.5, "alpha": 0.1}
    cw = attacks.build("torchattacks:CW", eps=1.0, steps=5, c=0.5)
    assert cw.norm == "L2" and cw._ctor == {"steps": 5, "c": 0.5}
    assert apgd.with_eps(0.25)._ctor["eps"] == 0.25
    assert "torchattacks:AutoAttack" in attacks.available("torchattacks:*")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("torchattacks:PDG", {}, r"torchattacks has no attack 'PDG'. Did you mean 'PGD'"),
        (
            "torchattacks:FGSM",
            {"steps": 3},
            r"torchattacks.FGSM takes no steps; remove it. Its parameters: eps",
        ),
        ("torchattacks:PGD", {"norm": "L2"}, r"measures eps in Linf, not L2; .*torchattacks:PGDL2"),
        (
            "torchattacks:PGD",
            {"random_strat": False},
            r"has no parameter 'random_strat'. Did you mean 'random_start'",
        ),
        ("torchattacks:PGD", {"eps": 3.0}, r"eps must be in \(0, 1\] for Linf"),
    ],
)
def test_adapter_errors(torchattacks, name, kwargs, message):
    with pytest.raises(RobustEvalError, match=message):
        attacks.build(name, **{"eps": 0.1, **kwargs})


def test_adapter_counts_passes_and_enforces_budget(torchattacks, cnn, test_split):
    images, labels = test_split
    x, y = images[:32], labels[:32]
    out = attacks.build("torchattacks:PGD", eps=0.1, steps=4).run(cnn, x, y)
    assert out.forward == 4 * 32 + 32 and out.backward == 4 * 32  # steps + the success check
    # CW has no eps: its output is projected into the L2 ball of our budget.
    cw = attacks.build("torchattacks:CW", eps=0.2, steps=10, c=10.0)
    adv = cw(cnn, x, y)
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= 0.2 * (1 + 1e-5) + 1e-6


def test_autoattack_runs_with_inferred_classes(torchattacks, mlp, test_split):
    images, labels = test_split
    x, y = images[:16], labels[:16]
    aa = TorchattacksAttack("AutoAttack", eps=0.15, version="standard")
    res = evaluate_attack(mlp, aa, x, y)
    pgd = evaluate_attack(mlp, PGD(0.15, steps=10), x, y)
    assert res.robust_accuracy[0] <= pgd.robust_accuracy[0] + 1 / 16
    assert res.forward_passes > 0 and res.backward_passes > 0


def test_targeted_adapter(torchattacks, mlp, test_split):
    images, labels = test_split
    x, y = images[:32], labels[:32]
    targets = (y + 3) % 10
    out = attacks.build("torchattacks:PGD", eps=0.3, steps=20, alpha=0.03, targeted=True).run(
        mlp, x, y, targets=targets
    )
    assert out.success.float().mean() > 0.8
    with pytest.raises(RobustEvalError, match="does not support targeted mode"):
        attacks.build("torchattacks:APGD", eps=0.3, targeted=True)(mlp, x, y, targets=targets)


def test_adapter_runs_in_chunks(torchattacks, mlp, test_split):
    images, labels = test_split
    x, y = images[:40], labels[:40]
    sizes = []
    hook = mlp.register_forward_pre_hook(lambda m, inp: sizes.append(len(inp[0])))
    try:
        out = attacks.build("torchattacks:FGSM", eps=0.1).run(mlp, x, y, batch_size=16)
    finally:
        hook.remove()
    assert max(sizes) == 16 and out.adversarial.shape == x.shape
    assert torch.equal(out.adversarial, attacks.build("torchattacks:FGSM", eps=0.1)(mlp, x, y))
