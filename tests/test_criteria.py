"""Remedies for imbalance and label noise: each loss against a direct computation, the balanced sampler's draws,
composition, refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_lite import cli, models
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.sources.checkpoints import load_checkpoint
from robustbench_lite.training.defences import DefenceContext, DefenceOptions, Pipeline

COUNTS = (500, 120, 30, 5)
LOGITS = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [-2.0, 1.0, 3.0, -0.5]])
LABELS = torch.tensor([0, 3, 1])


def pipeline(names: str, counts=COUNTS, label_smoothing: float = 0.0, **params) -> Pipeline:
    ctx = DefenceContext(num_classes=len(counts), dataset="digits", seed=0, label_smoothing=label_smoothing,
                         class_counts=counts)
    return Pipeline(DefenceOptions.from_mapping({"defence": names, **params}), ctx)


def softmax_row(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def by_hand(per_example) -> float:
    return sum(per_example(row.tolist(), int(y)) for row, y in zip(LOGITS, LABELS, strict=True)) / len(LABELS)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_balanced_softmax_is_cross_entropy_of_prior_shifted_logits(tau):
    prior = [c / sum(COUNTS) for c in COUNTS]

    def loss(row, y):
        p = softmax_row([v + tau * math.log(pi) for v, pi in zip(row, prior, strict=True)])
        return -math.log(p[y])

    got = pipeline("balanced-softmax", la_tau=tau).ctx.loss(LOGITS, LABELS)
    assert float(got) == pytest.approx(by_hand(loss), rel=1e-5)


def test_class_balanced_weights_are_the_inverse_effective_number():
    beta = 0.999
    effective = [(1 - beta ** n) / (1 - beta) for n in COUNTS]
    weights = [1 / e for e in effective]
    weights = [w * len(COUNTS) / sum(weights) for w in weights]

    def loss(row, y):
        return -weights[y] * math.log(softmax_row(row)[y])

    p = pipeline("class-balanced", cb_beta=beta)
    assert float(p.ctx.loss(LOGITS, LABELS)) == pytest.approx(by_hand(loss), rel=1e-5)
    recorded = p.settings()["class-balanced"]["class_weights"]
    assert recorded == pytest.approx(weights, rel=1e-4)
    assert recorded[3] > recorded[0] * 20, "the rarest class weighs most"


@pytest.mark.parametrize("q", [0.7, 1.0])
def test_gce_is_one_minus_p_to_the_q_over_q(q):
    def loss(row, y):
        return (1 - softmax_row(row)[y] ** q) / q

    assert float(pipeline("gce", gce_q=q).ctx.loss(LOGITS, LABELS)) == pytest.approx(by_hand(loss), rel=1e-5)


def test_sce_is_alpha_ce_plus_beta_reverse_ce():
    alpha, beta = 0.3, 2.0

    def loss(row, y):
        p = softmax_row(row)
        return alpha * -math.log(p[y]) + beta * -(1 - p[y]) * math.log(1e-4)  # log 0 taken as log 1e-4

    got = pipeline("sce", sce_alpha=alpha, sce_beta=beta).ctx.loss(LOGITS, LABELS)
    assert float(got) == pytest.approx(by_hand(loss), rel=1e-5)


def test_label_smoothing_reaches_the_criterion():
    """With smoothing s the target is (1 - s) one-hot + s / C, as cross-entropy's label_smoothing makes it."""
    plain = pipeline("balanced-softmax", counts=(1, 1, 1, 1), label_smoothing=0.1)
    expected = F.cross_entropy(LOGITS, LABELS, label_smoothing=0.1)
    assert float(plain.ctx.loss(LOGITS, LABELS)) == pytest.approx(float(expected), rel=1e-5)


def test_balanced_classes_leave_balanced_softmax_and_reweighting_at_cross_entropy():
    ce = float(F.cross_entropy(LOGITS, LABELS))
    for name in ("balanced-softmax", "class-balanced"):
        assert float(pipeline(name, counts=(7, 7, 7, 7)).ctx.loss(LOGITS, LABELS)) == pytest.approx(ce, rel=1e-5)


def test_soft_targets_from_mixing_are_weighted_per_class():
    soft = torch.tensor([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.0, 0.0]])
    gce = pipeline("gce", gce_q=0.5).ctx.loss(LOGITS, soft)
    p = F.softmax(LOGITS, 1)
    assert float(gce) == pytest.approx(float(((1 - (soft * p.sqrt()).sum(1)) / 0.5).mean()), rel=1e-5)
    assert pipeline("balanced-softmax,mixup").criterion is not None  # mixing and a criterion train together


def test_the_criterion_is_what_adversarial_training_minimises():
    torch.manual_seed(0)
    net = models.build("shufflenetv2_x0_5", 4, 1, 8, mean=(0.3,), std=(0.3,))
    p = pipeline("gce,pgd-at", eps=0.1, steps=2)
    raw = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    batch = p.prepare(raw, y, list(range(6)))
    seen: list[torch.Tensor] = []
    handle = net.register_forward_hook(lambda m, args, out: seen.append(out.detach()) if m.training else None)
    try:
        net.train()
        loss, logits, _ = p.loss(net, batch)
    finally:
        handle.remove()
    probs = F.softmax(seen[-1], 1)
    assert float(loss.detach()) == pytest.approx(float(((1 - probs[torch.arange(6), y] ** 0.7) / 0.7).mean()), rel=1e-5)


def test_two_criteria_are_refused_and_bad_values_are_one_line():
    with pytest.raises(RobustEvalError, match="gce,sce is an incompatible combination.*keep one"):
        DefenceOptions.from_mapping({"defence": "gce,sce"})
    for values, needle in [({"defence": "class-balanced", "cb_beta": 1.0}, "--cb-beta must be below 1"),
                           ({"defence": "gce", "gce_q": 0}, "--gce-q must be in"),
                           ({"defence": "gce", "gce_q": 1.5}, "--gce-q must be in"),
                           ({"defence": "sce", "sce_beta": -1}, "--sce-beta must be in"),
                           ({"defence": "pgd-at", "gce_q": 0.5}, "--gce-q is not used by --defence pgd-at")]:
        with pytest.raises(RobustEvalError, match=needle):
            DefenceOptions.from_mapping(values)


# ----------------------------------------------------------------------------- the balanced sampler

SAMPLED = (2000, 200, 20)


def _drawn(power: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    shuffle = torch.randperm(sum(SAMPLED), generator=torch.Generator().manual_seed(99))
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(SAMPLED)])[shuffle]
    p = pipeline("balanced-sampler", counts=SAMPLED, sampler_power=power)
    return labels, p.epoch_order(labels, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_balanced_sampler_draws_class_c_in_proportion_to_its_count_to_the_1_minus_q(power):
    labels, order = _drawn(power)
    assert len(order) == len(labels) and int(order.min()) >= 0 and int(order.max()) < len(labels)
    share = [n ** (1 - power) for n in SAMPLED]
    expected = [s / sum(share) for s in share]  # q = 1: a third each; q = 0.5: 0.72 / 0.23 / 0.07
    drawn = torch.bincount(labels[order], minlength=3).double() / len(order)
    for got, want in zip(drawn.tolist(), expected, strict=True):
        assert abs(got - want) < 5 * math.sqrt(want * (1 - want) / len(order)), (drawn, expected)
    rare = order[labels[order] == 2]
    assert len(torch.unique(rare)) == SAMPLED[2], "the rare class's images all repeat, chosen uniformly"


def test_balanced_sampler_is_seeded_and_plain_training_shows_every_image_once():
    labels, a = _drawn(1.0, seed=3)
    assert torch.equal(a, _drawn(1.0, seed=3)[1]) and not torch.equal(a, _drawn(1.0, seed=4)[1])
    plain = pipeline("gce").epoch_order(labels, torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)))


def test_balanced_sampler_records_its_class_probabilities_and_composes():
    recorded = pipeline("balanced-sampler", counts=SAMPLED, sampler_power=0.5).settings()["balanced-sampler"]
    share = [math.sqrt(n) for n in SAMPLED]
    assert recorded["sampler_power"] == 0.5
    assert recorded["class_probability"] == pytest.approx([s / sum(share) for s in share], rel=1e-4)
    assert pipeline("balanced-sampler,gce,mixup").sampler is not None  # with a noise criterion and mixing


@pytest.mark.parametrize("names", ["balanced-sampler,balanced-softmax", "class-balanced,balanced-sampler"])
def test_two_remedies_for_imbalance_are_refused(names):
    a, b = names.split(",")
    with pytest.raises(RobustEvalError, match=f"--defence {a},{b} is an incompatible combination: both correct "
                                              "the imbalance.*keep one of them"):
        DefenceOptions.from_mapping({"defence": names})
    for power in (0, 1.5):
        with pytest.raises(RobustEvalError, match="--sampler-power must be in"):
            DefenceOptions.from_mapping({"defence": "balanced-sampler", "sampler_power": power})


def test_training_with_the_balanced_sampler_shows_the_classes_evenly(tmp_path, monkeypatch):
    seen: list[torch.Tensor] = []
    prepare = Pipeline.prepare

    def recording(self, raw, y, indices, device=None):
        seen.append(y.clone())
        return prepare(self, raw, y, indices, device)

    monkeypatch.setattr(Pipeline, "prepare", recording)
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "1",
                     "--imbalance", "20", "--defence", "balanced-sampler", "--output", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    _, meta = load_checkpoint(out)
    counts = meta["stress"]["class_counts"]
    assert counts[0] >= 20 * counts[-1] - 20 and meta["defence"]["names"] == ["balanced-sampler"]
    assert meta["defence"]["settings"]["balanced-sampler"]["class_probability"] == pytest.approx([0.1] * 10, abs=1e-6)
    shown = torch.bincount(torch.cat(seen), minlength=10).double()
    assert len(torch.cat(seen)) == sum(counts)  # an epoch keeps its length
    # every class about a tenth of the epoch (the stressed set's rarest class has 1/20 of the first's images)
    assert float(shown.min() / shown.max()) > 0.5, (shown.tolist(), counts)
