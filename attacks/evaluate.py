"""Robust accuracy with the least compute: one clean pass, attack survivors only, sweep eps upwards.

:func:`evaluate_attack` is where early exit pays off:

1. one clean forward pass over all images; misclassified images are never attacked;
2. inside PGD an image retires the moment an iterate fools the model (see :mod:`attacks.pgd`);
3. an eps sweep runs increasing budgets on the images no smaller budget fooled: an adversarial
   example within eps is within every larger eps, so ``fooled`` is monotone by construction.

Robust accuracy is AutoAttack's per-image worst case: an image counts as robust at eps only if it
is classified correctly and no attack at a budget <= eps fooled it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks.base import (
    Attack,
    attack_mode,
    check_images,
    check_indices,
    check_int,
    check_labels,
    model_device,
    perturbation_norms,
    random_targets,
)
from attacks.catalogue import build
from robustbench_lite.errors import RobustEvalError

AttackSpec = Attack | str | Callable[[float], Attack]


@dataclass(frozen=True)
class AttackEvaluation:
    """Per-image outcomes and per-eps aggregates of one attack (possibly over an eps sweep).

    Tensors are on the CPU; ``N`` images, ``E`` budgets.

    Attributes:
        attack: description of the attack at the largest budget, e.g. ``pgd(Linf, eps=0.1, steps=10...)``.
        norm: threat model, ``Linf`` or ``L2``.
        eps: the budgets, ascending (E,).
        clean_correct: (N,) bool, the clean image is classified correctly.
        fooled: (N, E) bool, the attack at budget ``eps[j]`` (or a smaller one) fooled a correctly
            classified image; monotone along E; always False for misclassified clean images.
        min_eps: (N,) float64, the smallest budget in ``eps`` that fooled the image; 0.0 for
            misclassified clean images (no perturbation needed); NaN if never fooled.
        linf, l2: (N,) float, norms of the returned adversarial's perturbation: the successful
            one at ``min_eps``, else the final one at the largest budget; 0 for misclassified images.
        forward_passes: images pushed through forward passes, the clean pass included.
        backward_passes: images pushed through backward passes.
        floor_passes: forward + backward passes that early exit cannot avoid: the clean pass, then
            for each attacked image the passes up to the iterate that first fooled it (all of them for
            images that resisted); ``forward + backward - floor`` is what was spent after the fact.
        robust_accuracy: (E,) fraction of ALL images classified correctly and not fooled at eps.
        attack_success_rate: (E,) fooled / correctly classified (NaN when none is correct).
        mean_perturbation: (E,) mean ``norm`` of the successful perturbations at eps (NaN if none).
        seconds: wall-clock time of the evaluation.
        adversarial: (N, C, H, W) the returned adversarial images when ``keep_adversarial=True``.
        broken_by: for an ensemble (``autoattack``), per image the component that fooled it at
            its ``min_eps``, None where none did (or the image was misclassified clean).
    """

    attack: str
    norm: str
    eps: tuple[float, ...]
    clean_correct: torch.Tensor
    fooled: torch.Tensor
    min_eps: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    forward_passes: int
    backward_passes: int
    floor_passes: int
    robust_accuracy: tuple[float, ...]
    attack_success_rate: tuple[float, ...]
    mean_perturbation: tuple[float, ...]
    seconds: float
    adversarial: torch.Tensor | None = None
    broken_by: tuple[str | None, ...] | None = None

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else float("nan")

    @property
    def passes(self) -> int:
        """All forward and backward passes done (in images)."""
        return self.forward_passes + self.backward_passes

    def robust_accuracy_at(self, eps: float) -> float:
        """Robust accuracy at one of the evaluated budgets."""
        for e, acc in zip(self.eps, self.robust_accuracy, strict=True):
            if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12):
                return acc
        raise RobustEvalError(
            f"eps {eps} was not evaluated; evaluated budgets: {', '.join(f'{e:.6g}' for e in self.eps)}"
        )

    @classmethod
    def concat(cls, parts: Sequence[AttackEvaluation]) -> AttackEvaluation:
        """One evaluation from evaluations of consecutive image chunks (same attack and budgets).

        Per-image outcomes are concatenated, passes and seconds summed and the per-eps numbers
        recomputed over all images, exactly as one call over the whole set computes them.
        """
        if not parts:
            raise RobustEvalError("nothing to concatenate: pass at least one AttackEvaluation")
        first = parts[0]
        if any(p.eps != first.eps or p.norm != first.norm for p in parts):
            raise RobustEvalError("only evaluations of the same attack, norm and budgets can be concatenated")
        if len(parts) == 1:
            return first
        keys = ("clean_correct", "fooled", "min_eps", "linf", "l2")
        cat = {k: torch.cat([getattr(p, k) for p in parts]) for k in keys}
        robust, asr, mean_pert = _aggregates(cat["clean_correct"], cat["fooled"],
                                             cat["linf"] if first.norm == "Linf" else cat["l2"])
        adversarial = None
        if all(p.adversarial is not None for p in parts):
            adversarial = torch.cat([p.adversarial for p in parts])  # type: ignore[misc]
        broken_by = None
        if all(p.broken_by is not None for p in parts):
            broken_by = tuple(b for p in parts for b in p.broken_by)  # type: ignore[union-attr]
        return cls(
            attack=first.attack, norm=first.norm, eps=first.eps, **cat,
            forward_passes=sum(p.forward_passes for p in parts),
            backward_passes=sum(p.backward_passes for p in parts),
            floor_passes=sum(p.floor_passes for p in parts),
            robust_accuracy=robust, attack_success_rate=asr, mean_perturbation=mean_pert,
            seconds=sum(p.seconds for p in parts), adversarial=adversarial, broken_by=broken_by,
        )

    def to_dict(self, per_image: bool = False) -> dict[str, Any]:
        """Plain JSON-ready values; per-image lists only when ``per_image``."""

        def nan_to_none(values: Sequence[float]) -> list[float | None]:
            return [None if math.isnan(v) else v for v in values]

        out: dict[str, Any] = {
            "attack": self.attack,
            "norm": self.norm,
            "eps": list(self.eps),
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": list(self.robust_accuracy),
            "attack_success_rate": nan_to_none(self.attack_success_rate),
            "mean_perturbation": nan_to_none(self.mean_perturbation),
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "floor_passes": self.floor_passes,
            "seconds": self.seconds,
        }
        if self.broken_by is not None:
            out["broken_by"] = broken_by_counts(self.broken_by)
        if per_image:
            out.update(
                clean_correct=self.clean_correct.tolist(),
                fooled=self.fooled.tolist(),
                min_eps=nan_to_none(self.min_eps.tolist()),
                linf=self.linf.tolist(),
                l2=self.l2.tolist(),
            )
        return out


def broken_by_counts(broken_by: Sequence[str | None]) -> dict[str, int]:
    """How many images each component of an ensemble broke, in the order they first appear."""
    counts: dict[str, int] = {}
    for name in broken_by:
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _aggregates(
    clean_correct: torch.Tensor, fooled: torch.Tensor, size: torch.Tensor
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Per-eps robust accuracy, attack success rate and mean successful perturbation size."""
    n = int(clean_correct.numel())
    n_correct = int(clean_correct.sum())
    robust, asr, mean_pert = [], [], []
    for j in range(fooled.shape[1]):
        f = fooled[:, j]
        robust.append(float((clean_correct & ~f).sum()) / n if n else float("nan"))
        asr.append(float(f.sum()) / n_correct if n_correct else float("nan"))
        mean_pert.append(float(size[f].mean()) if bool(f.any()) else float("nan"))
    return tuple(robust), tuple(asr), tuple(mean_pert)


def _factory(
    attack: AttackSpec, attack_kwargs: dict[str, Any] | None
) -> tuple[Callable[[float], Attack], float | None]:
    """(eps -> Attack, the attack's own eps if it has one)."""
    if isinstance(attack, Attack):
        if attack_kwargs:
            raise RobustEvalError(
                "attack_kwargs only apply to an attack given by name; configure the Attack itself"
            )
        # The attack itself at its own budget, so what it records of a call (Square's queries,
        # an ensemble's seconds per component) is there to read afterwards.
        return (lambda e: attack if e == attack.eps else attack.with_eps(e)), attack.eps
    if isinstance(attack, str):
        kwargs = dict(attack_kwargs or {})
        return (lambda e: build(attack, **{**kwargs, "eps": e})), None
    if callable(attack):
        return attack, None
    raise RobustEvalError(
        f"attack must be an Attack, an attack name or a callable eps -> Attack, got {type(attack).__name__}"
    )


@torch.no_grad()
def _clean_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with attack_mode(model), torch.inference_mode(False):
        device = model_device(model, images.device)
        out = [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    if not out:
        return torch.zeros(0, 0)
    logits = torch.cat(out)
    if logits.ndim != 2 or logits.shape[0] != len(images):
        raise RobustEvalError(
            f"the model must return logits of shape (N, classes), got {tuple(logits.shape)}; "
            "wrap it so forward() returns only the logits"
        )
    return logits


def evaluate_attack(
    model: nn.Module,
    attack: AttackSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor | Sequence[int] | None = None,
    *,
    eps_list: Sequence[float | str] | str | float | None = None,
    batch_size: int = 256,
    targets: torch.Tensor | None = None,
    keep_adversarial: bool = False,
    attack_kwargs: dict[str, Any] | None = None,
) -> AttackEvaluation:
    """Robust accuracy and per-image outcomes of an attack, over one budget or an eps sweep.

    Args:
        model: classifier taking [0,1] images, returning logits; its mode is restored afterwards.
        attack: an :class:`Attack` (its eps is used unless ``eps_list`` is given; otherwise
            :meth:`Attack.with_eps` makes each budget), a name for :func:`attacks.build` (``"pgd"``,
            ``"torchattacks:APGD"``) or a callable ``eps -> Attack``; the last two need ``eps_list``.
        images: (N, C, H, W) float in [0, 1], on any device (batches go to the model's device).
        labels: (N,) true classes.
        indices: dataset indices (the key of per-image randomness), default 0..N-1.
        eps_list: budgets to sweep, any order (``"1/255,2/255"`` strings accepted); default the
            attack's eps.
        batch_size: images per forward pass (default 256); PGD keeps its batch full by refilling
            the slots of retired images. Results do not depend on it.
        targets: (N,) targets for a targeted attack; default a random wrong class per image.
        keep_adversarial: also return the adversarial images (default False).
        attack_kwargs: constructor arguments when ``attack`` is a name (e.g. ``{"steps": 20}``).

    Returns:
        An :class:`AttackEvaluation`.

    Example:
        >>> from attacks import PGD, evaluate_attack
        >>> res = evaluate_attack(model, PGD(eps=8 / 255, steps=10), images, labels,
        ...                       eps_list="1/255,2/255,4/255,8/255")
        >>> res.robust_accuracy, res.min_eps
    """
    from attacks.defaults import parse_eps

    start = time.perf_counter()
    images = check_images(images)
    n = images.shape[0]
    labels = check_labels(labels, n)
    index_list = check_indices(indices, n)
    batch_size = check_int("batch_size", batch_size, 1)
    keep_adversarial = bool(keep_adversarial)
    make, own_eps = _factory(attack, attack_kwargs)
    if eps_list is None:
        if own_eps is None:
            raise RobustEvalError(
                "pass eps_list=[...] when the attack is given by name or factory, e.g. eps_list=[8/255]"
            )
        budgets = [own_eps]
    else:
        budgets = parse_eps(eps_list)
    attacks = [make(e) for e in budgets]  # validates each budget (e.g. Linf eps <= 1)
    if not all(isinstance(a, Attack) for a in attacks):
        raise RobustEvalError("the attack factory must return attacks.Attack instances")
    norm = attacks[0].norm
    if any(a.norm != norm for a in attacks):
        raise RobustEvalError("all attacks of an eps sweep must use one norm; build them with the same norm=")

    logits = _clean_logits(model, images, batch_size)
    forward = n
    cpu_labels = labels.cpu()
    if n and int(cpu_labels.max()) >= logits.shape[1]:
        raise RobustEvalError(
            f"label {int(cpu_labels.max())} is out of range for a model with {logits.shape[1]} classes; "
            f"labels must be in 0..{logits.shape[1] - 1}"
        )
    clean_correct = logits.argmax(dim=1) == cpu_labels if n else torch.zeros(0, dtype=torch.bool)
    attack_labels = None
    if any(a.targeted for a in attacks):
        attack_labels = (
            random_targets(cpu_labels, logits.shape[1], attacks[0].seed, index_list)
            if targets is None
            else check_labels(targets, n, "targets").cpu()
        )

    e_count = len(budgets)
    fooled = torch.zeros(n, e_count, dtype=torch.bool)
    min_eps = torch.full((n,), float("nan"), dtype=torch.float64)  # holds the eps values exactly
    min_eps[~clean_correct] = 0.0
    adversarial = images.detach().clone()
    alive = clean_correct.clone()
    broken: list[str | None] | None = None
    backward = wasted = 0
    for j, atk in enumerate(attacks):
        rows = alive.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        dev_rows = rows.to(images.device)
        out = atk.run(
            model, images[dev_rows], labels[dev_rows], [index_list[i] for i in rows.tolist()],
            targets=None if attack_labels is None else attack_labels[rows].to(labels.device),
            batch_size=batch_size,
        )  # fmt: skip
        forward += out.forward
        backward += out.backward
        wasted += out.wasted_backward
        adversarial[dev_rows] = out.adversarial
        hit = rows[out.success.cpu()]
        if out.broken_by is not None:
            names = getattr(atk, "components", ())
            broken = broken if broken is not None else [None] * n
            for row, k in zip(rows.tolist(), out.broken_by.cpu().tolist(), strict=True):
                if k >= 0:
                    broken[row] = names[k]
        fooled[hit, j:] = True
        min_eps[hit] = budgets[j]
        alive[hit] = False

    delta = (adversarial - images).detach().cpu()
    linf = perturbation_norms(delta, "Linf").float() if n else torch.zeros(0)
    l2 = perturbation_norms(delta, "L2").float() if n else torch.zeros(0)
    robust, asr, mean_pert = _aggregates(clean_correct, fooled, linf if norm == "Linf" else l2)
    return AttackEvaluation(
        attack=attacks[-1].label,
        norm=norm,
        eps=tuple(budgets),
        clean_correct=clean_correct,
        fooled=fooled,
        min_eps=min_eps,
        linf=linf,
        l2=l2,
        forward_passes=forward,
        backward_passes=backward,
        floor_passes=forward + backward - wasted,
        robust_accuracy=robust,
        attack_success_rate=asr,
        mean_perturbation=mean_pert,
        seconds=time.perf_counter() - start,
        adversarial=adversarial.cpu() if keep_adversarial else None,
        broken_by=tuple(broken) if broken is not None else None,
    )
