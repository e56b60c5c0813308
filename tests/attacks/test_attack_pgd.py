"""PGD / FGSM behaviour: strength ordering, analytic budgets on a linear model, early exit, restarts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import FGSM, PGD, evaluate_attack, perturbation_norms


class BinaryLinear(nn.Module):
    """Logits (0, w.x + b): class 1 where w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.lin = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.lin.weight.copy_(w.view(1, -1))
            self.lin.bias.fill_(b)

    def forward(self, x):
        z = self.lin(x.flatten(1))
        return torch.cat([torch.zeros_like(z), z], dim=1)


@pytest.fixture
def linear_problem():
    """Images at known Linf distances 0.01 * 1.5**k from the boundary, well inside the [0,1] box."""
    g = torch.Generator().manual_seed(0)
    d = 64
    w = torch.randn(d, generator=g)
    b = 0.3
    linf_truth = 0.01 * 1.5 ** torch.arange(6, dtype=torch.float64)
    x = 0.5 + 0.1 * (2 * torch.rand(len(linf_truth), d, generator=g, dtype=torch.float64) - 1)
    wd = w.double()
    margin = x @ wd + b
    target_margin = linf_truth * wd.abs().sum()
    x = x + ((target_margin - margin) / (wd @ wd)).unsqueeze(1) * wd
    assert float(x.min()) > 0.3 and float(x.max()) < 0.7
    images = x.float().view(-1, 1, 8, 8)
    model = BinaryLinear(w, b)
    margin = images.flatten(1).double() @ wd + b  # recompute from the float32 images
    truths = {"Linf": margin / wd.abs().sum(), "L2": margin / wd.norm()}
    labels = torch.ones(len(images), dtype=torch.long)
    assert torch.equal(model(images).argmax(1), labels)
    return model, images, labels, truths


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_sweep_brackets_analytic_minimal_budget(norm, linear_problem):
    model, images, labels, truths = linear_problem
    truth = truths[norm]
    grid = sorted({round(float(t) * f, 6) for t in truth for f in (0.95, 1.05)})

    def factory(eps: float) -> PGD:
        # alpha fixed relative to eps with enough steps that L2 iterates converge onto the boundary.
        return PGD(eps, norm=norm, steps=40, alpha=eps / 4)

    res = evaluate_attack(model, factory, images, labels, eps_list=grid)
    for i, t in enumerate(truth.tolist()):
        expected = min(e for e in grid if e >= t)
        assert float(res.min_eps[i]) == pytest.approx(expected), f"image {i}: truth {t:.5f}"
        below = max((e for e in grid if e < t), default=None)
        if below is not None:
            assert not res.fooled[i, grid.index(below)]
    # The successful perturbation is at least the analytic minimum and within the bracketing budget.
    size = res.linf if norm == "Linf" else res.l2
    assert torch.all(size.double() >= truth * (1 - 1e-4))
    assert torch.all(size.double() <= res.min_eps.double() * (1 + 1e-5) + 1e-6)


def test_pgd_at_least_as_strong_as_fgsm(mlp, digits):
    images, labels = digits
    x, y = images[:400], labels[:400]
    for norm, eps in (("Linf", 0.1), ("L2", 0.5)):
        fgsm = evaluate_attack(mlp, FGSM(eps, norm=norm), x, y)
        pgd = evaluate_attack(mlp, PGD(eps, norm=norm, steps=10), x, y)
        assert pgd.robust_accuracy[0] <= fgsm.robust_accuracy[0]
        assert pgd.robust_accuracy[0] < pgd.clean_accuracy


def test_early_exit_retires_images(mlp, digits):
    images, labels = digits
    x, y = images[:300], labels[:300]
    steps = 20
    easy = PGD(0.3, steps=steps).run(mlp, x, y)  # a large budget fools almost every image quickly
    full = PGD(0.3, steps=steps, early_stop=False).run(mlp, x, y, check_success=False)
    n = len(x)
    assert easy.success.float().mean() > 0.95
    assert easy.backward < 0.3 * steps * n, f"{easy.backward} backward passes for {steps} steps x {n} images"
    assert easy.forward < 0.3 * (steps + 1) * n
    assert full.backward == steps * n and full.forward == steps * n  # no checks without early exit
    # The kept iterate is the one that fooled the model, and it is inside the budget.
    with torch.no_grad():
        assert torch.equal(mlp(easy.adversarial).argmax(1) != y, easy.success)
    assert float(perturbation_norms(easy.adversarial - x, "Linf").max()) <= 0.3 + 1e-6


def test_early_exit_keeps_fooling_iterate_not_final():
    """Fooled only for offsets in (0.01, 0.05]: iterate 1 fools, the final iterate does not."""
    x0 = torch.full((1, 1, 8, 8), 0.5)

    class Bump(nn.Module):
        def forward(self, z):
            s = (z - x0).flatten(1).mean(1)
            g = s - 0.01 - 10 * (s > 0.05).float()  # gradient always pushes s up
            return torch.stack([torch.zeros_like(g), g], dim=1)

    y = torch.zeros(1, dtype=torch.long)
    attack = PGD(0.3, steps=5, alpha=0.03, random_start=False)
    out = attack.run(Bump(), x0, y)
    assert bool(out.success[0])
    assert float((out.adversarial - x0).mean()) == pytest.approx(0.03, abs=1e-6)
    assert out.forward == 2 and out.backward == 1 and out.wasted_backward == 0  # no backward once all retire
    plain = PGD(0.3, steps=5, alpha=0.03, random_start=False, early_stop=False).run(Bump(), x0, y)
    assert not bool(plain.success[0])
    assert float((plain.adversarial - x0).mean()) == pytest.approx(0.15, abs=1e-6)


def test_restarts_only_reattack_survivors(mlp, digits):
    images, labels = digits
    x, y = images[:300], labels[:300]
    steps = 5
    one = PGD(0.06, steps=steps, restarts=1).run(mlp, x, y)
    three = PGD(0.06, steps=steps, restarts=3).run(mlp, x, y)
    survivors = int((~one.success).sum())
    assert 0 < survivors < len(x)
    # Restart 0 is identical; later restarts run at most (steps + 1) forwards per survivor.
    assert three.forward - one.forward <= 2 * (steps + 1) * survivors
    assert torch.all(three.success >= one.success)
    assert torch.equal(three.adversarial[one.success], one.adversarial[one.success])
    # When restart 0 fools everything, further restarts cost nothing.
    all_fooled = PGD(0.5, steps=steps, restarts=4).run(mlp, x, y)
    assert bool(all_fooled.success.all())
    assert all_fooled.forward == PGD(0.5, steps=steps, restarts=1).run(mlp, x, y).forward


def test_targeted_pgd_reaches_targets(mlp, digits):
    images, labels = digits
    x, y = images[:100], labels[:100]
    targets = (y + 1) % 10
    out = PGD(0.3, steps=20, targeted=True).run(mlp, x, y, targets=targets)
    with torch.no_grad():
        pred = mlp(out.adversarial).argmax(1)
    assert torch.equal(pred == targets, out.success)
    assert out.success.float().mean() > 0.9


def test_no_early_stop_returns_final_iterate_unchecked(mlp, digits):
    images, labels = digits
    x, y = images[:50], labels[:50]
    out = PGD(0.1, steps=3, early_stop=False).run(mlp, x, y, check_success=False)
    assert out.success is None
    assert out.forward == 3 * len(x) and out.backward == 3 * len(x)


def test_alpha_defaults_follow_eps():
    pgd = PGD(0.1, steps=10)
    assert pgd.alpha == pytest.approx(0.025)
    assert pgd.with_eps(0.2).alpha == pytest.approx(0.05)
    assert PGD(0.1, alpha=0.01).with_eps(0.2).alpha == 0.01
    from attacks import FGSMRS

    assert FGSMRS(0.1).alpha == pytest.approx(0.125)
    assert FGSM(0.1).alpha == pytest.approx(0.1)
    assert repr(FGSM(0.1)) == "FGSM(eps=0.1, norm='Linf', early_stop=True, targeted=False, seed=0)"


class MaxBatch(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


def test_working_batch_is_refilled(mlp, digits):
    """With batch_size, retired images are replaced at once: the batch stays full until the queue drains."""
    images, labels = digits
    x, y, idx = images[:200], labels[:200], torch.arange(200) + 7
    model = MaxBatch(mlp)
    streamed = PGD(0.1, steps=10).run(model, x, y, idx, batch_size=32)
    # 200 images under a cap of 32 run as 7 rounds of 29 (not 6 of 32 and a last one of 8 alone)
    assert max(model.sizes) == 29
    # full batches until fewer than 29 images remain to be queued or attacked
    drained = next(i for i, s in enumerate(model.sizes) if s < 29)
    assert all(s < 29 for s in model.sizes[drained:]) and drained >= 200 // 29
    whole = PGD(0.1, steps=10).run(mlp, x, y, idx)
    assert torch.equal(streamed.success, whole.success)
    assert (streamed.adversarial - whole.adversarial).abs().max() < 1e-5
    assert streamed.forward == whole.forward
    # a final check sharing a batch with gradient steps rides along the backward: counted as wasted
    floor = streamed.forward + streamed.backward - streamed.wasted_backward
    assert floor == whole.forward + whole.backward - whole.wasted_backward
    # restarts and no early exit stream too
    for kw in ({"restarts": 3}, {"early_stop": False}, {"early_stop": False, "restarts": 2}):
        a = PGD(0.06, steps=4, **kw).run(mlp, x, y, idx, batch_size=9)
        b = PGD(0.06, steps=4, **kw).run(mlp, x, y, idx)
        assert torch.equal(a.success, b.success), kw
        assert (a.adversarial - b.adversarial).abs().max() < 1e-5, kw


@pytest.mark.parametrize(
    ("n", "cap", "size"), [(200, 32, 29), (518, 250, 173), (250, 250, 250), (5, 250, 5), (1, 1, 1)]
)
def test_working_batch_has_no_small_last_round(n, cap, size):
    """The working batch is capped at batch_size, in as few rounds as the cap allows, of near-equal size."""
    from attacks.base import balanced_batch

    assert balanced_batch(n, cap) == size
    assert size <= cap and math.ceil(n / size) == math.ceil(n / cap)


def test_pgd_kl_moves_the_prediction_more_than_noise(cnn, digits):
    """TRADES' inner maximisation: the KL from the clean prediction beats uniform noise of the same budget."""
    import torch.nn.functional as F

    from attacks import PGDKL
    from robustbench_lite.errors import RobustEvalError

    images, labels = digits
    x, y = images[:64], labels[:64]
    attack = PGDKL(eps=0.1, steps=5)
    adv = attack(cnn, x, y)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    noise = (x + torch.empty_like(x).uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        p = F.softmax(cnn(x), 1)

        def kl(z):
            return F.kl_div(F.log_softmax(cnn(z), 1), p, reduction="batchmean")

        assert kl(adv) > 3 * kl(noise)
    with pytest.raises(RobustEvalError, match="does not support norm L2"):
        PGDKL(eps=0.5, norm="L2")
