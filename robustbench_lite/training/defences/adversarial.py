"""Adversarial training: fgsm-rs, pgd-at and trades, on the attacks of :mod:`attacks`.

There is no second attack implementation: each defence builds its attack from the catalogue and
re-keys its random starts by epoch. Attacks run with the model in eval mode (BatchNorm uses its
running statistics, as in TRADES' reference code; Wong et al. attack in train mode), then the
model trains on the result in train mode.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.defences.base import (
    Defence,
    DefenceContext,
    Flag,
    Params,
    Prepared,
    eps_value,
    int_value,
    param,
    positive,
    register_defence,
)

EPS = Flag("adversarial training budget, Linf pixel units, e.g. 0.1 or 8/255", eps_value)
STEPS = Flag("attack steps", int_value)
ALPHA = Flag("attack step size", eps_value)
EPS_DEFAULT = "dataset default (fashion-mnist 0.1, cifar10 8/255)"


@dataclass(frozen=True)
class AttackParams(Params):
    """Checks shared by the adversarial defences' parameters (eps, and steps/alpha where present).

    Attributes:
        eps: adversarial budget, Linf, pixel units (None: the dataset's default eps, e.g. 0.1 for
            Fashion-MNIST, 8/255 for CIFAR-10).
    """

    eps: float | None = param(None, EPS, default_text=EPS_DEFAULT)

    def __post_init__(self) -> None:
        if self.eps is not None:
            self._set("eps", positive("eps", self.eps, upper=1))
        if getattr(self, "steps", None) is not None:
            self._set("steps", positive("steps", self.steps, integer=True))  # type: ignore[attr-defined]
        if getattr(self, "alpha", None) is not None:
            self._set("alpha", positive("alpha", self.alpha, upper=1))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class FGSMRSParams(AttackParams):
    """fgsm-rs: eps, and alpha (None: 1.25 * eps, Wong et al.); one step always."""

    alpha: float | None = param(None, ALPHA, default_text="1.25*eps")


@dataclass(frozen=True)
class PGDParams(AttackParams):
    """pgd-at: eps, steps (5) and alpha (None: 2.5 * eps / steps, Madry et al.)."""

    steps: int = param(5, STEPS)
    alpha: float | None = param(None, ALPHA, default_text="2.5*eps/steps")


@dataclass(frozen=True)
class TRADESParams(AttackParams):
    """trades: PGD's eps, steps and alpha, and beta, the weight of the robust KL term (6.0, the paper's)."""

    steps: int = param(5, STEPS)
    alpha: float | None = param(None, ALPHA, default_text="2.5*eps/steps")
    beta: float = param(6.0, Flag("TRADES robustness weight", float))

    def __post_init__(self) -> None:
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
            raise RobustEvalError(f"--beta must be a number >= 0, got {beta!r}; TRADES uses beta=6 (1 to 10 is usual)")
        self._set("beta", float(beta))
        super().__post_init__()


class _Adversarial(Defence):
    stage = "loss"
    adversarial = True
    attack_name: ClassVar[str] = ""
    #: Extra arguments of the training attack. fgsm-rs and pgd-at train on the loss-maximising
    #: iterate, not the first that fools the model, so they turn the attack's early exit off.
    attack_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        from robustbench_lite.data import default_eps

        super().__init__(params, ctx)
        if self.params.eps is None:  # type: ignore[attr-defined]
            self.params = replace(self.params, eps=default_eps(ctx.dataset, "Linf"))
        self.eps: float = self.params.eps  # type: ignore[attr-defined]
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        import attacks
        from robustbench_lite.seeding import derive_seed

        kwargs = {k: getattr(self.params, k) for k in ("eps", "steps", "alpha") if hasattr(self.params, k)}
        self.attack = attacks.build(self.attack_name, seed=derive_seed(self.ctx.seed, epoch, self.name),
                                    **kwargs, **self.attack_options)

    def settings(self) -> dict[str, Any]:
        alpha = self.params.alpha  # type: ignore[attr-defined]
        return {**super().settings(), "attack": self.attack.label,
                "alpha": self.attack.alpha if alpha is None else alpha}

    def adversarial_examples(self, model: nn.Module, batch: Prepared) -> torch.Tensor:
        """The batch's adversarial images (model in eval mode while attacking, restored after)."""
        return self.attack(model, batch.x, batch.y, batch.indices)

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adv = self.adversarial_examples(attack_model or model, batch)
        logits = model(adv)
        return self.ctx.loss(logits, batch.y), logits, batch.y

    def heldout_accuracy(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: list[int],
                         seed: int) -> tuple[float, float]:
        """(clean, PGD-10 robust) accuracy on held-out images at this defence's eps; model left in train mode."""
        import attacks

        model.eval()
        try:
            attack = attacks.build("pgd", eps=self.eps, steps=10, seed=seed)
            ev = attacks.evaluate_attack(model, attack, images, labels, indices, batch_size=512)
            return ev.clean_accuracy, ev.robust_accuracy_at(self.eps)
        finally:
            model.train()


@register_defence
class PGDTraining(_Adversarial):
    name = "pgd-at"
    summary = "train on PGD adversarial examples (Linf, random start, last iterate)"
    reference = "Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks, " \
                "https://arxiv.org/abs/1706.06083"
    Params = PGDParams
    attack_name = "pgd"
    attack_options = {"early_stop": False}


@register_defence
class FGSMRSTraining(_Adversarial):
    name = "fgsm-rs"
    summary = "FGSM from a random start, step 1.25*eps (fast adversarial training)"
    reference = "Wong, Rice & Kolter 2020, Fast is better than free, https://arxiv.org/abs/2001.03994"
    Params = FGSMRSParams
    attack_name = "fgsm-rs"
    attack_options = {"early_stop": False}

    def early_stop(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> str | None:
        """Stop at catastrophic overfitting (held-out PGD accuracy collapses) and keep the best epoch."""
        if best is None or not history or not history[-1].get("catastrophic_overfitting"):
            return None
        return f"stopping fgsm-rs training early and keeping epoch {best['epoch']} " \
               "(Wong et al.: early stopping on PGD accuracy)"


@register_defence
class TRADESTraining(_Adversarial):
    name = "trades"
    summary = "clean cross-entropy + beta * KL(clean || adversarial), attack on the KL term"
    reference = "Zhang et al. 2019, Theoretically Principled Trade-off between Robustness and Accuracy, " \
                "https://arxiv.org/abs/1901.08573"
    Params = TRADESParams
    attack_name = "pgd-kl"  # PGD on the KL term has no early exit to turn off

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adv = self.adversarial_examples(attack_model or model, batch)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            # DDP allows one forward per backward: both views in one batch (BN sees them together).
            both = model(torch.cat([batch.x, adv]))
            logits_clean, logits_adv = both[:len(adv)], both[len(adv):]
        else:
            logits_clean = model(batch.x)
            logits_adv = model(adv)
        natural = self.ctx.loss(logits_clean, batch.y)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return natural + self.params.beta * robust, logits_adv, batch.y  # type: ignore[attr-defined]
