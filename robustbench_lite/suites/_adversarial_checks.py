"""The adversarial suite's checks on its own numbers, beside attacks.checks' gradient-masking checks.

* :func:`score_based_flags`: AutoAttack's flag, Square (no gradients) fooling what the gradient
  attacks could not;
* :func:`parent_check`: a differentiable compressed artefact attacked white-box against the same
  attacks crafted on its float parent (masked gradients from reduced precision or pruning).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

import attacks
from robustbench_lite.suites._adversarial_options import gradients_needed, result_key
from robustbench_lite.suites.base import EvalContext


def score_based_flags(evaluations: Mapping[tuple[str, str], attacks.AttackEvaluation],
                      entries: list[Any]) -> list[str]:
    """AutoAttack's flag: Square (needs no gradients) fooling images the gradient attacks could not.

    ``entries``: the suite's ``AttackResult`` s (their attack, norm, eps and broken_by are read).
    """
    flags = []
    for (name, norm), ev in evaluations.items():
        if name != "square":
            continue
        white = [e for (a, n), e in evaluations.items() if n == norm and a != name and gradients_needed(a)]
        for j, eps in enumerate(ev.eps):
            best = min((w.robust_accuracy_at(eps) for w in white if eps in w.eps), default=None)
            flag = None if best is None else attacks.checks.square_flag(best, ev.robust_accuracy[j], norm, eps)
            if flag:
                flags.append(flag)
    for r in entries:  # inside an ensemble: Square broke what the gradient components left
        n_square = (r.broken_by or {}).get("square", 0)
        if n_square and r.eps == max(e.eps for e in entries if e.attack == r.attack and e.norm == r.norm):
            flags.append(f"{r.attack}: Square broke {n_square} image(s) at {r.norm} eps={r.eps:.4g} that its gradient "
                         "attacks could not: their gradients may be masked; trust the ensemble's number")
    return flags


def parent_check(ctx: EvalContext, evaluations: Mapping[tuple[str, str], attacks.AttackEvaluation],
                 budgets: Mapping[str, tuple[float, ...]], params: Mapping[str, Mapping[str, dict[str, Any]]],
                 images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor,
                 batch_size: int) -> dict[str, Any]:
    """A differentiable compressed artefact, attacked white-box, against the same attacks crafted on its
    float parent (transfer, scored on the artefact) on the first images: where the parent's gradients
    leave clearly fewer images robust than every white-box attack together (the worst case the run
    reports), the artefact's gradients are masked (16-bit underflow, saturated logits, shattered by
    pruning) and its white-box number overstates it. (One attack a little weaker through the artefact's
    own gradients while another white-box attack still breaks those images overstates nothing.)

    Returns ``{"source", "images", "tolerance", "attacks": {key: {"white_box", "from_parent"}},
    "seconds", "flags"}`` (``flags``: warnings, popped by the caller). Score-based attacks and
    ensembles are left out: the first reads no gradients, the second mixes them.
    """
    n = len(labels)
    tolerance = max(2, math.ceil(0.01 * n))  # images; per-image seeds differ in effect between the two
    out: dict[str, Any] = {"source": getattr(ctx.parent_transfer, "source", None), "images": n,
                           "tolerance_images": tolerance, "attacks": {}, "seconds": 0.0, "flags": []}
    # (attack, norm, eps) -> the first images left robust by that white-box attack; (norm, eps) -> by every one
    robust = {(name, norm, eps): ev.clean_correct[:n] & ~ev.fooled[:n, j]
              for (name, norm), ev in evaluations.items() for j, eps in enumerate(ev.eps)}
    worst: dict[tuple[str, float], torch.Tensor] = {}
    for (_, norm, eps), mask in robust.items():
        worst[(norm, eps)] = mask if (norm, eps) not in worst else worst[(norm, eps)] & mask
    for (name, norm), ev in evaluations.items():
        score_based = name in attacks.ATTACKS and not getattr(attacks.ATTACKS.entry(name), "needs_gradients", True)
        if ev.broken_by is not None or score_based:
            continue
        ctx.log(f"adversarial: {name} {norm} crafted on the parent, on {n} images (masking check)")
        parent = attacks.evaluate_attack(ctx.parent_transfer, name, images, labels, indices, eps_list=budgets[norm],
                                         batch_size=batch_size, attack_kwargs=params[norm][name])
        out["seconds"] += parent.seconds
        for j, eps in enumerate(ev.eps):
            white = int(robust[(name, norm, eps)].sum())
            crafted = int((parent.clean_correct & ~parent.fooled[:, j]).sum())
            out["attacks"][result_key(name, norm, eps)] = {"white_box": white / n, "from_parent": crafted / n}
            best = int(worst[(norm, eps)].sum())
            if j == len(ev.eps) - 1 and best - crafted >= tolerance:
                out["flags"].append(
                    f"{name} crafted on the parent leaves {crafted / n:.3f} robust accuracy at {norm} eps={eps:.4g} "
                    f"on the first {n} images, below the {best / n:.3f} of every attack on the artefact's own "
                    "gradients: they are masked (reduced precision or pruning), so its white-box number overstates "
                    "it; trust the lower one, or add --attack square")
    return out
