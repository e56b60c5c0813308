"""Red flags of gradient masking, in the spirit of AutoAttack's checks (Croce & Hein, 2020).

A defence that hides its gradients rather than removing adversarial examples makes gradient
attacks look weak. :func:`gradient_masking_checks` looks for the classic symptoms (Athalye et al.,
"Obfuscated Gradients Give a False Sense of Security", https://arxiv.org/abs/1802.00420):

* an iterative attack (PGD) does worse than a single step (FGSM) at the same budget;
* many images have an input gradient that is exactly zero (saturated softmax, shattered gradients);
* the model is randomised: two identical forward passes in eval mode give different logits;
* the model outputs probabilities (softmax rows summing to 1) instead of logits, which flattens
  the cross-entropy gradient (AutoAttack's first sanity flag);
* a score-based attack (Square) fools images the gradient attacks could not (:func:`square_flag`);
* the model changes its own parameters or buffers at inference (test-time optimisation).

Each finding is one line saying what was seen and what to run instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attacks.base import (
    attack_mode,
    check_images,
    check_indices,
    check_int,
    check_labels,
    check_norm,
    model_device,
)
from attacks.evaluate import AttackEvaluation, evaluate_attack
from attacks.pgd import FGSM, PGD
from robustbench_lite.errors import RobustEvalError

FALLBACK = "evaluate with a gradient-free attack (--attack square) or the ensemble (--attack autoattack)"


def _at(result: AttackEvaluation, eps: float, what: str) -> float:
    try:
        return result.robust_accuracy_at(eps)
    except RobustEvalError:
        raise RobustEvalError(
            f"the given {what} result has no eps {eps:g} (it has {', '.join(f'{e:g}' for e in result.eps)}); "
            f"evaluate {what} at eps={eps:g} or leave {what}_result=None"
        ) from None


def zero_gradient_fraction(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> float:
    """Fraction of images whose cross-entropy gradient w.r.t. the input is exactly zero."""
    images = check_images(images)
    labels = check_labels(labels, images.shape[0])
    if images.shape[0] == 0:
        return 0.0
    zero = 0
    with attack_mode(model), torch.inference_mode(False), torch.enable_grad():
        device = model_device(model, images.device)
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device).clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(
                model(x).float(), labels[i : i + batch_size].to(device), reduction="sum"
            )
            (grad,) = torch.autograd.grad(loss, x)
            zero += int((grad.flatten(1) == 0).all(dim=1).sum())
    return zero / len(images)


@torch.no_grad()
def is_stochastic(model: nn.Module, images: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Whether two identical forward passes in eval mode disagree (beyond float noise)."""
    images = check_images(images)
    if images.shape[0] == 0:
        return False
    with attack_mode(model), torch.inference_mode(False):
        x = images.to(model_device(model, images.device))
        a, b = model(x).float(), model(x).float()
    return not torch.allclose(a, b, rtol=rtol, atol=atol)


@torch.no_grad()
def outputs_probabilities(model: nn.Module, images: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether the model's outputs look like softmax probabilities (each row >= 0, summing to 1)."""
    if images.shape[0] == 0:
        return False
    with attack_mode(model), torch.inference_mode(False):
        out = model(images.to(model_device(model, images.device))).float()
    return bool((out >= -atol).all()) and bool(torch.allclose(out.sum(dim=1), torch.ones(len(out), device=out.device),
                                                           atol=atol))


@torch.no_grad()
def changes_at_inference(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether a forward pass in eval mode changes the model's parameters or buffers (AutoAttack's dynamic flag)."""
    if images.shape[0] == 0:
        return False
    before = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    with attack_mode(model), torch.inference_mode(False):
        model(images.to(model_device(model, images.device)))
    after = [t.detach() for t in (*model.parameters(), *model.buffers())]
    return len(before) != len(after) or any(not torch.equal(a, b) for a, b in zip(before, after, strict=False))


def square_flag(white_box: float, square: float, norm: str, eps: float, tolerance: float = 0.0) -> str | None:
    """AutoAttack's flag: a score-based attack doing better than the gradient attacks means masked gradients."""
    if square < white_box - tolerance:
        return (f"Square (score-based) leaves {square:.3f} robust accuracy at {norm} eps={eps:.4g}, below the gradient "
                f"attacks' {white_box:.3f}: the gradients mislead the white-box attacks (masking); trust the lower "
                "number and evaluate with --attack autoattack")
    return None


def gradient_masking_checks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    indices: torch.Tensor | Sequence[int] | None = None,
    *,
    norm: str = "Linf",
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    zero_grad_threshold: float = 0.1,
    pgd_result: AttackEvaluation | None = None,
    fgsm_result: AttackEvaluation | None = None,
) -> list[str]:
    """Warnings (one line each) about signs of gradient masking; an empty list means none seen.

    Args:
        model: classifier taking [0,1] images; its mode is restored.
        images: (N, C, H, W) in [0, 1]; a few hundred images are plenty.
        labels: (N,) true classes.
        eps: budget at which PGD and FGSM are compared.
        indices: dataset indices for per-image seeding (default 0..N-1).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        steps: PGD steps (default 10).
        seed: PGD seed (default 0).
        batch_size: attack batch size (default 256).
        zero_grad_threshold: warn when more than this fraction of images has an all-zero input
            gradient (default 0.1).
        pgd_result, fgsm_result: reuse evaluations already run at ``eps`` instead of re-attacking.

    Example:
        >>> for warning in gradient_masking_checks(model, images, labels, eps=8 / 255):
        ...     print("warning:", warning)
    """
    norm = check_norm(norm)
    images = check_images(images)
    labels = check_labels(labels, images.shape[0])
    index_list = check_indices(indices, images.shape[0])
    steps = check_int("steps", steps, 1)
    if not 0 <= zero_grad_threshold <= 1:
        raise RobustEvalError(f"zero_grad_threshold must be a fraction in [0, 1], got {zero_grad_threshold}")
    warnings: list[str] = []
    if fgsm_result is None:
        fgsm_result = evaluate_attack(
            model, FGSM(eps, norm=norm, seed=seed), images, labels, index_list, batch_size=batch_size
        )
    if pgd_result is None:
        pgd_result = evaluate_attack(
            model,
            PGD(eps, norm=norm, steps=steps, seed=seed),
            images,
            labels,
            index_list,
            batch_size=batch_size,
        )
    fgsm_acc, pgd_acc = _at(fgsm_result, eps, "fgsm"), _at(pgd_result, eps, "pgd")
    if pgd_acc > fgsm_acc:
        warnings.append(
            f"PGD robust accuracy ({pgd_acc:.3f}) is higher than FGSM's ({fgsm_acc:.3f}) "
            f"at {norm} eps={eps:.4g}: "
            f"an iterative attack weaker than a single step suggests gradient masking; {FALLBACK}"
        )
    frac = zero_gradient_fraction(model, images, labels, batch_size)
    if frac > zero_grad_threshold:
        warnings.append(
            f"{frac:.0%} of images have an all-zero input gradient (threshold {zero_grad_threshold:.0%}): "
            f"gradient attacks cannot move them (saturated softmax or shattered gradients); {FALLBACK}"
        )
    if changes_at_inference(model, images[:batch_size]):
        warnings.append(
            "a forward pass in eval mode changed the model's parameters or buffers: it optimises itself at "
            "inference, so attacks chase a moving target; evaluate it with attacks adapted to the defence"
        )
    if outputs_probabilities(model, images[:batch_size]):
        warnings.append(
            "the model's outputs are non-negative and sum to 1 per image: it returns probabilities, not logits, "
            "which flattens the loss gradient attacks follow; return the logits (drop the final softmax)"
        )
    if is_stochastic(model, images[:batch_size]):
        warnings.append(
            "the model's logits differ between two identical forward passes in eval mode: it is randomised, "
            "so single-sample gradients mislead; attack the expectation (torchattacks:EOTPGD) "
            "or fix its randomness"
        )
    return warnings
