"""Native gradient attacks: PGD (Linf, L2) with early exit, and its one-step special cases FGSM, FGSM-RS.

All three share one loop (:meth:`PGD._run_once`). With ``early_stop=True`` (the default) every
iterate's forward pass doubles as a check: an image retires the moment an iterate fools the model,
that iterate is kept, and its slot in the working batch goes to the next waiting image (with
``batch_size``; without it the batch simply shrinks), so every step pays only for images that are
still resisting and batches stay full. A restart only re-attacks images that no earlier restart
fooled.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacks.base import Attack, balanced_batch, check_bool, check_int, check_positive, register_attack
from robustbench_lite.seeding import generators


@register_attack
class PGD(Attack):
    r"""Projected gradient descent on the cross-entropy loss.

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    https://arxiv.org/abs/1706.06083

    Norm: ``Linf`` (signed-gradient steps, clip to the box) or ``L2`` (normalised-gradient steps,
    rescale into the ball). Every iterate is also clipped to the [0, 1] image range.

    Args:
        eps: budget in pixel units (> 0; at most 1 for Linf).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        steps: gradient steps per restart (default 10).
        alpha: step size (default ``2.5 * eps / steps``, Madry et al.'s choice, so the iterates can
            cross the whole ball; it follows eps in :meth:`with_eps` unless given).
        restarts: random restarts; a restart only re-attacks images not yet fooled (default 1).
        random_start: start from a uniform point of the Linf box, or a random direction at a
            uniform radius for L2 (default True).
        early_stop: keep the first iterate that fools the model and stop attacking that image
            (default True). Set False for adversarial training, where the loss-maximising final
            iterate is wanted.
        targeted: drive the prediction to ``targets`` instead of away from ``labels`` (default False).
        seed: run seed; with each image's dataset index it fixes the random start (default 0).

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,) int64; output (N, C, H, W) in [0, 1] with
        ``||output - images|| <= eps`` per image.

    Example:
        >>> attack = PGD(eps=8 / 255, steps=10)
        >>> adv = attack(model, images, labels)            # images in [0, 1]
        >>> out = attack.run(model, images, labels)        # + out.success, out.forward, out.backward
    """

    name = "pgd"
    streaming = True

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        steps: int = 10,
        alpha: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool = True,
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed)
        self.steps = check_int("steps", steps, 1)
        self.restarts = check_int("restarts", restarts, 1)
        self._alpha_arg = None if alpha is None else check_positive("alpha", alpha)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self._alpha_arg
        self.random_start = check_bool("random_start", random_start)
        self.early_stop = check_bool("early_stop", early_stop)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "steps": self.steps,
            "alpha": self._alpha_arg,
            "restarts": self.restarts,
            "random_start": self.random_start,
            "early_stop": self.early_stop,
        }

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g}, steps={self.steps}, restarts={self.restarts})"

    # -- algorithm -------------------------------------------------------------------------------

    def perturb(  # type: ignore[override]
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: list[int],
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = images.shape[0]
        # Without early exit and restarts the final iterate is returned unchecked: no extra forward.
        check_final = self.early_stop or self.restarts > 1
        out = images.clone()
        success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_loss = torch.full((n,), -float("inf"), device=images.device)
        for restart in range(self.restarts):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            whole = todo.numel() == n
            x = images if whole else images[todo]
            y = labels if whole else labels[todo]
            idx = indices if whole else [indices[i] for i in todo.tolist()]
            adv, hit, loss = self._run_once(model, x, y, idx, restart, check_final, batch_size or n)
            if not check_final:
                return adv, None
            # Among restarts that fail, keep the iterate with the highest loss (Madry et al.).
            better = hit | (loss > best_loss[todo])
            rows = todo[better]
            out[rows] = adv[better]
            best_loss[rows] = loss[better]
            success[rows] = hit[better]
        return out, success

    def _run_once(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        indices: list[int],
        restart: int,
        check_final: bool,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One PGD run over all images: (adversarial, fooled, final loss; +inf where fooled).

        The working batch holds up to ``batch_size`` images, each at its own step. Every forward
        pass checks the current iterates: fooled images (early exit) and images whose final iterate
        was just checked leave, the rest take a step, and waiting images fill the free slots.
        Each image sees exactly the iterates of a plain PGD run, so batching does not change results.
        """
        m = x.shape[0]
        out = torch.empty_like(x)
        fooled = torch.zeros(m, dtype=torch.bool, device=x.device)
        loss_out = torch.full((m,), float("inf"), device=x.device)
        rows = torch.zeros(0, dtype=torch.long, device=x.device)  # images in the working batch
        adv = x[:0]
        done_steps = torch.zeros(0, dtype=torch.long, device=x.device)
        batch_size = balanced_batch(m, batch_size)  # no small last round
        queued = 0  # images 0..queued-1 have entered the working batch
        while True:
            if not check_final:  # finished images leave without a checking forward pass
                finished = done_steps == self.steps
                if bool(finished.any()):
                    out[rows[finished]] = adv[finished]
                    rows, adv, done_steps = rows[~finished], adv[~finished], done_steps[~finished]
            free = min(batch_size - rows.numel(), m - queued)
            if free > 0:
                new = torch.arange(queued, queued + free, device=x.device)
                start = x[new]
                if self.random_start:
                    delta = self._initial_delta(start, indices[queued : queued + free], restart)
                    start = (start + delta).clamp(0, 1)
                rows, adv = torch.cat([rows, new]), torch.cat([adv, start])
                done_steps = torch.cat([done_steps, torch.zeros_like(new)])
                queued += free
            if rows.numel() == 0:
                break
            ya = y[rows]
            final = done_steps == self.steps
            any_final = bool(final.any())
            needs_step = not bool(final.all())
            with torch.enable_grad():
                adv_g = adv.detach().requires_grad_(needs_step)
                logits = self._logits(model, adv_g)
                leave = final
                if self.early_stop or any_final:
                    hit = self._success(logits.detach(), ya)
                    if any_final:
                        final_rows = rows[final]
                        out[final_rows] = adv[final]
                        fooled[final_rows] = hit[final]
                        ce = self._loss(logits.detach()[final], ya[final], "none")
                        loss_out[final_rows] = torch.where(hit[final], float("inf"), ce)
                    if self.early_stop:
                        retire = hit & ~final
                        if bool(retire.any()):
                            out[rows[retire]] = adv[retire]
                            fooled[rows[retire]] = True
                            leave = final | retire
                keep = ~leave
                grad = None
                if needs_step and bool(keep.any()):
                    loss = self._loss(logits[keep], ya[keep])
                    grad = self._input_grad(loss, adv_g)[keep]
                    # The backward ran over the whole batch; images leaving gained nothing from it.
                    self._counts[2] += int(leave.sum())
            if grad is None:
                rows, adv, done_steps = rows[:0], adv[:0], done_steps[:0]
                continue
            rows, done_steps = rows[keep], done_steps[keep] + 1
            adv = self._step(adv[keep], grad, x[rows])
        return out, fooled, loss_out

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One ascent step and projection onto the eps-ball and the [0, 1] box."""
        with torch.no_grad():
            if self.norm == "Linf":
                # Same arithmetic as torchattacks.PGD / FGSM, so results can be compared bit for bit.
                adv = adv + self.alpha * grad.sign()
                delta = torch.clamp(adv - x, min=-self.eps, max=self.eps)
            else:
                g_norm = grad.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)
                adv = adv + self.alpha * grad / (g_norm + 1e-12)
                delta = adv - x
                d_norm = delta.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)
                delta = delta * torch.clamp(self.eps / d_norm, max=1.0)  # 0-norm -> inf -> 1
            return torch.clamp(x + delta, min=0, max=1)

    def _initial_delta(self, x: torch.Tensor, indices: list[int], restart: int) -> torch.Tensor:
        """Per-image random start, drawn on the CPU from each image's generator (device independent)."""
        shape = x.shape[1:]
        noise = []
        for g in generators(self.seed, indices, self.name, "start", restart):
            if self.norm == "Linf":
                noise.append(torch.empty(shape).uniform_(-self.eps, self.eps, generator=g))
            else:
                d = torch.empty(shape).normal_(generator=g)
                r = torch.empty(()).uniform_(0, 1, generator=g)
                noise.append(d * (r * self.eps / d.norm().clamp_min(1e-12)))
        return torch.stack(noise).to(device=x.device, dtype=x.dtype)


@register_attack
class FGSM(PGD):
    r"""Fast gradient sign method: one step of size eps from the clean image.

    Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572

    Norm: ``Linf`` (``x + eps * sign(grad)``); ``L2`` gives the fast gradient method
    (``x + eps * grad / ||grad||_2``). The result is clipped to [0, 1].

    Args:
        eps: budget in pixel units (> 0; at most 1 for Linf).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        early_stop: return the clean image, with no backward pass, for images the model already
            misclassifies (default True); False reproduces torchattacks.FGSM exactly.
        targeted: step towards ``targets`` (default False).
        seed: unused (FGSM is deterministic), kept for a uniform interface (default 0).

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,); output (N, C, H, W) in [0, 1].

    Example:
        >>> adv = FGSM(eps=0.1)(model, images, labels)
    """

    name = "fgsm"

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        early_stop: bool = True,
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            eps,
            norm=norm,
            steps=1,
            alpha=eps,
            restarts=1,
            random_start=False,
            early_stop=early_stop,
            targeted=targeted,
            seed=seed,
        )

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "early_stop": self.early_stop,
            "targeted": self.targeted,
            "seed": self.seed,
        }

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g})"


@register_attack
class FGSMRS(PGD):
    r"""FGSM from a random start ("FGSM-RS"), projected back onto the eps-ball.

    Wong et al., "Fast is better than free: Revisiting adversarial training", ICLR 2020,
    https://arxiv.org/abs/2001.03994

    Norm: ``Linf`` (uniform start in the box, one signed step of ``alpha``) or ``L2``.

    Args:
        eps: budget in pixel units (> 0; at most 1 for Linf).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        alpha: step size (default ``1.25 * eps``, the paper's choice; follows eps unless given).
        early_stop: keep the random start if it already fools the model (default True).
        targeted: step towards ``targets`` (default False).
        seed: run seed; fixes each image's random start with its dataset index (default 0).

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,); output (N, C, H, W) in [0, 1].

    Example:
        >>> adv = FGSMRS(eps=8 / 255)(model, images, labels, indices=dataset_indices)
    """

    name = "fgsm-rs"

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        alpha: float | None = None,
        early_stop: bool = True,
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        alpha_arg = None if alpha is None else check_positive("alpha", alpha)
        super().__init__(
            eps,
            norm=norm,
            steps=1,
            alpha=1.0,
            restarts=1,
            random_start=True,
            early_stop=early_stop,
            targeted=targeted,
            seed=seed,
        )
        self._alpha_arg = alpha_arg
        self.alpha = 1.25 * self.eps if alpha_arg is None else alpha_arg

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "alpha": self._alpha_arg,
            "early_stop": self.early_stop,
            "targeted": self.targeted,
            "seed": self.seed,
        }

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g})"


@register_attack
class PGDKL(PGD):
    r"""PGD on the KL divergence from the model's clean prediction: TRADES' inner maximisation.

    Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019,
    https://arxiv.org/abs/1901.08573

    Maximises ``KL(p(x) || p(x'))`` over the eps-ball, where ``p(x)`` is the softmax of the clean
    image (computed once, held fixed). Labels are not used by the loss: the attack pushes the
    prediction away from whatever the model believes, which is what TRADES trains against. It
    starts from ``x + 0.001 * N(0, I)`` (the paper's start) and always returns the final iterate.

    Norm: ``Linf`` only (the paper's; signed steps).

    Args:
        eps: budget in pixel units (> 0, at most 1).
        norm: ``"Linf"`` (default).
        steps: gradient steps (default 10, the paper's CIFAR-10 setting).
        alpha: step size (default ``2.5 * eps / steps``; follows eps unless given).
        seed: run seed; fixes each image's random start with its dataset index (default 0).

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,) (used only to report success); output
        (N, C, H, W) in [0, 1] within the eps-ball.

    Example:
        >>> adv = PGDKL(eps=0.1, steps=5)(model, images, labels, indices=dataset_indices)
    """

    name = "pgd-kl"
    #: L2 is left out: near the start the KL gradient is tiny, and its normalised direction then
    #: depends on the batch's float summation order (batched and per-image runs drift apart).
    norms = ("Linf",)

    def __init__(
        self, eps: float, *, norm: str = "Linf", steps: int = 10, alpha: float | None = None, seed: int = 0
    ) -> None:
        super().__init__(eps, norm=norm, steps=steps, alpha=alpha, restarts=1, random_start=True,
                         early_stop=False, targeted=False, seed=seed)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "norm": self.norm, "steps": self.steps, "alpha": self._alpha_arg,
                "seed": self.seed}

    def perturb(  # type: ignore[override]
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: list[int],
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = images.shape[0]
        chunk = batch_size or n
        with torch.no_grad():
            clean = torch.cat([self._logits(model, images[i : i + chunk]) for i in range(0, n, chunk)])
            target = torch.softmax(clean.float(), dim=1)
        # The "labels" that the shared loop hands to _loss are the clean distributions (N, classes).
        adv, _, _ = self._run_once(model, images, target, indices, 0, False, chunk)
        return adv, None

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        log_p = torch.log_softmax(logits.float(), dim=1)
        per_image = nn.functional.kl_div(log_p, labels, reduction="none").sum(dim=1)
        return per_image.sum() if reduction == "sum" else per_image

    def _initial_delta(self, x: torch.Tensor, indices: list[int], restart: int) -> torch.Tensor:
        noise = [torch.empty(x.shape[1:]).normal_(generator=g) for g in generators(self.seed, indices, self.name)]
        delta = 0.001 * torch.stack(noise).to(device=x.device, dtype=x.dtype)
        return delta.clamp(-self.eps, self.eps)

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g}, steps={self.steps})"
