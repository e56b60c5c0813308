"""Adversarial attacks in pixel space: FGSM, FGSM-RS, PGD (Linf, L2), PGD-KL (TRADES) and torchattacks' catalogue.

Images are float NCHW in [0, 1], models normalise inside, eps is in pixel units. Native attacks are
registered in :data:`ATTACKS` (``robust-eval list attacks``); :func:`build` also accepts
``torchattacks:NAME``. :func:`evaluate_attack` is the efficient way to measure robust accuracy.

Example:
    >>> import attacks
    >>> pgd = attacks.build("pgd", eps=attacks.default_eps("cifar10", "Linf"), steps=10)
    >>> adv = pgd(model, images, labels)
    >>> res = attacks.evaluate_attack(model, pgd, images, labels, eps_list="2/255,4/255,8/255")
"""

from attacks.base import (
    ATTACKS,
    NORMS,
    Attack,
    AttackOutput,
    available,
    build,
    perturbation_norms,
    random_targets,
    register_attack,
)
from attacks.checks import gradient_masking_checks, is_stochastic, zero_gradient_fraction
from attacks.defaults import DEFAULT_EPS, default_eps, parse_eps
from attacks.evaluate import AttackEvaluation, evaluate_attack
from attacks.pgd import FGSM, FGSMRS, PGD, PGDKL
from attacks.torchattacks_adapter import TorchattacksAttack

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS",
    "FGSM",
    "FGSMRS",
    "PGDKL",
    "NORMS",
    "PGD",
    "Attack",
    "AttackEvaluation",
    "AttackOutput",
    "TorchattacksAttack",
    "available",
    "build",
    "default_eps",
    "evaluate_attack",
    "gradient_masking_checks",
    "is_stochastic",
    "parse_eps",
    "perturbation_norms",
    "random_targets",
    "register_attack",
    "zero_gradient_fraction",
]
