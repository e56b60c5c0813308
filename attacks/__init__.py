"""Adversarial attacks in pixel space: FGSM, FGSM-RS, PGD (Linf, L2), PGD-KL (TRADES), Auto-PGD (APGD-CE,
APGD-DLR, APGD-T), Square (score-based), the AutoAttack-grade ensemble and torchattacks' catalogue.

Images are float NCHW in [0, 1], models normalise inside, eps is in pixel units (the conventional
budget of each dataset is :func:`robustbench_lite.data.default_eps`). Native attacks are registered
in :data:`ATTACKS`, families such as ``torchattacks:NAME`` in :data:`PROVIDERS`; the catalogue's
:func:`build` and :func:`available` know both (``robust-eval list attacks``).
:func:`evaluate_attack` is the efficient way to measure robust accuracy.

Example:
    >>> import attacks
    >>> pgd = attacks.build("pgd", eps=8 / 255, steps=10)
    >>> adv = pgd(model, images, labels)
    >>> res = attacks.evaluate_attack(model, pgd, images, labels, eps_list="2/255,4/255,8/255")
"""

from attacks.apgd import APGD, APGDDLR, APGDT
from attacks.autoattack import AutoAttack
from attacks.base import (
    ATTACKS,
    NORMS,
    PROVIDERS,
    Attack,
    AttackOutput,
    AttackProvider,
    perturbation_norms,
    random_targets,
    register_attack,
)
from attacks.catalogue import available, build, describe
from attacks.checks import gradient_masking_checks, is_stochastic, zero_gradient_fraction
from attacks.defaults import parse_eps
from attacks.evaluate import AttackEvaluation, broken_by_counts, evaluate_attack
from attacks.pgd import FGSM, FGSMRS, PGD, PGDKL
from attacks.square import Square
from attacks.torchattacks_adapter import TORCHATTACKS_PREFIX, TorchattacksAttack

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "AutoAttack",
    "FGSM",
    "FGSMRS",
    "PGDKL",
    "NORMS",
    "PGD",
    "PROVIDERS",
    "Square",
    "TORCHATTACKS_PREFIX",
    "Attack",
    "AttackEvaluation",
    "AttackOutput",
    "AttackProvider",
    "TorchattacksAttack",
    "available",
    "broken_by_counts",
    "build",
    "describe",
    "evaluate_attack",
    "gradient_masking_checks",
    "is_stochastic",
    "parse_eps",
    "perturbation_norms",
    "random_targets",
    "register_attack",
    "zero_gradient_fraction",
]
