"""Auto-PGD (APGD): step-size-free PGD with momentum, on cross-entropy, DLR and targeted DLR.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690. The algorithm follows the
authors' ``autoattack/autopgd_base.py`` (``APGDAttack``, ``APGDAttack_targeted``); the bookkeeping
follows :mod:`attacks.pgd`: per-image random starts, early exit (an image retires at the first
iterate that fools the model, and that iterate is kept), and a streaming working batch.

Every piece of APGD's state is per image (iteration, step size, best point and loss, the count of
loss increases since the last checkpoint), and the checkpoints depend only on the iteration, so
images at different iterations share a batch and results do not depend on batching.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from attacks.base import Attack, balanced_batch, check_bool, check_int, check_positive, checked_logits, register_attack
from attacks.inference import SplitBatches, optimised_copy
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.seeding import generators, normal_rows, uniform_rows

#: Momentum weight of the previous update (the paper's alpha); the first step has none.
MOMENTUM = 0.75
#: Relative loss differences below this are float noise, not an increase (see ``_track_best``).
LOSS_TOL = 1e-5


def checkpoint_windows(steps: int) -> list[int]:
    """For each iteration 0..steps-1, the window length if a checkpoint ends there, else 0.

    The reference's integer form of p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06): the first window is ``int(0.22 * steps)`` iterations, each next one ``int(0.03 * steps)``
    shorter, down to ``int(0.06 * steps)`` (every one at least 1).
    """
    window = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, count = [0] * steps, 0
    for i in range(steps):
        count += 1
        if count == window:
            out[i], count = window, 0
            window = max(window - shrink, shortest)
    return out


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-image difference-of-logits-ratio loss: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)."""
    z, _ = logits.sort(dim=1)
    z_y = logits.gather(1, labels[:, None])[:, 0]
    top_is_y = logits.argmax(dim=1) == labels
    other = torch.where(top_is_y, z[:, -2], z[:, -1])
    return -(z_y - other) / (z[:, -1] - z[:, -3] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    z, _ = logits.sort(dim=1)
    z_y = logits.gather(1, labels[:, None])[:, 0]
    z_t = logits.gather(1, targets[:, None])[:, 0]
    return -(z_y - z_t) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A per-image (B,) tensor shaped to broadcast over (B, C, H, W)."""
    return t.view(-1, 1, 1, 1)


@register_attack
class APGD(Attack):
    r"""Auto-PGD on the cross-entropy loss (AutoAttack's APGD-CE), untargeted.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690

    PGD without a step size to tune: it starts at ``2 * eps`` and halves at checkpoints (after 22%
    of the iterations, then at ever shorter intervals down to 6%) when fewer than ``rho`` of the
    steps since the last checkpoint raised the loss, or when neither step size nor best loss changed
    since then; on halving it restarts from the best point so far. Steps carry momentum 0.75.

    Norm: ``Linf`` (signed steps, clip to the box) or ``L2`` (normalised steps, rescale into the
    ball); every iterate is clipped to [0, 1].

    Args:
        eps: budget in pixel units (> 0; at most 1 for Linf).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        steps: iterations per restart (the reference's ``n_iter``; default 100).
        restarts: random restarts; each re-attacks only images not yet fooled (default 1).
        rho: the fraction of loss-raising steps below which the step size halves (default 0.75).
        eot_iter: gradients averaged per step (expectation over transformation, for randomised
            models; AutoAttack's ``rand`` version uses 20; default 1).
        seed: run seed; with each image's dataset index it fixes the random start (default 0).
        optimise: on CPU, take the forward and backward passes through a frozen TorchScript copy
            (:func:`attacks.inference.optimised_copy`, batch norm folded into the convolutions,
            ~1.4x faster on the zoo's models) when its logits and input gradients match the
            model's, each batch split over the intra-op threads (:class:`attacks.inference.
            SplitBatches`); which images are fooled is always decided on the model itself, one
            forward pass per image and run (default True; False uses the model for every step).

    Attributes:
        optimised: after a call, whether the copy was used.

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,) int64; output (N, C, H, W) in [0, 1] with
        ``||output - images|| <= eps`` per image: the first iterate that fooled the model, else the
        highest-loss iterate.

    Example:
        >>> attack = APGD(eps=8 / 255)                       # apgd-ce, 100 iterations
        >>> out = attack.run(model, images, labels, batch_size=256)
        >>> robust = ~out.success
    """

    name = "apgd-ce"
    streaming = True
    quick = {"steps": 20}
    #: APGD always starts from a random point of the ball's surface (the reference's ``use_rs``).
    random_start: ClassVar[bool] = True
    #: Smallest number of classes the loss is defined for.
    min_classes: ClassVar[int] = 2
    #: Loss magnitude below which float noise is absolute, not relative: cross-entropy's noise
    #: shrinks with it (0), DLR's (a ratio of logit gaps, of order 1) does not.
    loss_floor: ClassVar[float] = 0.0

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        seed: int = 0,
        optimise: bool = True,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=False, seed=seed)
        self.optimise = check_bool("optimise", optimise)
        self.optimised = False
        self.steps = check_int("steps", steps, 1)
        self.restarts = check_int("restarts", restarts, 1)
        self.rho = check_positive("rho", rho)
        self.eot_iter = check_int("eot_iter", eot_iter, 1)
        self._windows = checkpoint_windows(self.steps)

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "restarts": self.restarts,
            "rho": self.rho,
            "eot_iter": self.eot_iter,
            "seed": self.seed,
            "optimise": self.optimise,
        }

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g}, steps={self.steps}, restarts={self.restarts})"

    # -- the loss and the rounds a subclass changes --------------------------------------------------

    def _per_image_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss to raise, one value per image."""
        return nn.functional.cross_entropy(logits, labels, reduction="none")

    def _check_classes(self, num_classes: int) -> None:
        if num_classes < self.min_classes:
            raise RobustEvalError(
                f"attack '{self.name}' needs a model with >= {self.min_classes} classes, got {num_classes}; "
                "use apgd-ce for fewer classes"
            )

    def _rounds(
        self, model: nn.Module, images: torch.Tensor, chunk: int
    ) -> list[torch.Tensor | None]:
        """Per round, the target class of every image (None: untargeted); one round here."""
        return [None]

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
        chunk = batch_size or n
        out = images.clone()
        success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_loss = torch.full((n,), -float("inf"), device=images.device)
        # On CPU the steps go through a frozen copy when it gives the model's logits and gradients
        # (attacks.inference); a randomised model (eot_iter > 1) keeps its randomness.
        fast = optimised_copy(model, images, gradients=True) if self.optimise and self.eot_iter == 1 else None
        self.optimised = fast is not None
        search = fast if fast is not None else model
        with SplitBatches(None if fast is not None else 1) as split:  # one worker: all in this thread
            return self._perturb(model, search, split, images, labels, indices, chunk, out, success, best_loss)

    def _perturb(
        self, model: nn.Module, search: nn.Module, split: SplitBatches, images: torch.Tensor,
        labels: torch.Tensor, indices: list[int], chunk: int, out: torch.Tensor, success: torch.Tensor,
        best_loss: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for rnd, targets in enumerate(self._rounds(model, images, chunk)):
            for restart in range(self.restarts):
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    return out, success
                idx = [indices[i] for i in todo.tolist()]
                tgt = None if targets is None else targets[todo]
                adv, hit, loss = self._run_once(search, images[todo], labels[todo], tgt, idx, (rnd, restart), chunk,
                                                split)
                if search is not model:  # the copy steered the steps; the model says which images are fooled
                    hit = self._judge(model, adv, labels[todo], chunk)
                # Among runs that fail, keep the point with the highest loss.
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
        targets: torch.Tensor | None,
        indices: list[int],
        key: tuple[int, int],
        batch_size: int,
        split: SplitBatches | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run over all images: (adversarial, fooled, best loss; +inf where fooled).

        Each forward pass checks the current iterates: fooled images retire with that iterate,
        images at their last iterate retire with their best point, the rest take a step, and
        waiting images fill the free slots of the working batch.
        """
        m = x.shape[0]
        batch_size = balanced_batch(m, batch_size)  # no small last round
        out = torch.empty_like(x)
        fooled = torch.zeros(m, dtype=torch.bool, device=x.device)
        loss_out = torch.full((m,), float("inf"), device=x.device)
        windows = torch.tensor([0, *self._windows], device=x.device)  # by iterate: window ending there
        s: dict[str, torch.Tensor] = {}  # per-image state of the working batch, row-aligned
        queued = 0
        while True:
            free = min(batch_size - (s["rows"].numel() if s else 0), m - queued)
            if free > 0:
                s = self._admit(s, x, indices, queued, free, key)
                queued += free
            if not s or s["rows"].numel() == 0:
                break
            rows, t, adv = s["rows"], s["t"], s["adv"]
            ya = y[rows]
            ta = None if targets is None else targets[rows]
            final = t == self.steps
            needs_step = not bool(final.all())
            hit, loss, grad = self._passes(split, model, adv, ya, ta, final, needs_step)
            keep = ~(hit | final)
            self._track_best(s, loss.detach())
            if bool(hit.any()):
                out[rows[hit]] = adv[hit]
                fooled[rows[hit]] = True
            done = final & ~hit
            if bool(done.any()):
                out[rows[done]] = s["x_best"][done]
                loss_out[rows[done]] = s["best"][done].to(loss_out.dtype)
            s = {k: v[keep] for k, v in s.items()}
            if grad is None:
                continue
            self._step(s, grad, x[s["rows"]], windows)
        return out, fooled, loss_out

    def _passes(
        self, split: SplitBatches | None, model: nn.Module, adv: torch.Tensor, ya: torch.Tensor,
        ta: torch.Tensor | None, final: torch.Tensor, needs_step: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One forward (and backward) pass of the working batch: (fooled, loss, gradient of the images staying).

        With ``split`` the batch is split over threads (:class:`attacks.inference.SplitBatches`),
        each part running its own forward and backward pass; passes are counted here, once the
        parts are back. A part's backward runs over its images that leave too (counted as wasted).
        """

        def part(rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            with torch.enable_grad():
                adv_g = adv[rows].detach().requires_grad_(needs_step)
                logits = checked_logits(model(adv_g), adv_g.shape[0])
                self._check_classes(logits.shape[1])
                loss = self._per_image_loss(logits.to(torch.promote_types(logits.dtype, torch.float32)), ya[rows],
                                            None if ta is None else ta[rows])
                hit = self._success(logits.detach(), ya[rows])
                keep = ~(hit | final[rows])
                grad = None
                if needs_step and bool(keep.any()):
                    (grad,) = torch.autograd.grad(loss[keep].sum(), adv_g)
            return hit, loss.detach(), grad

        n = adv.shape[0]
        parts = split.map(part, n) if split is not None else [part(slice(0, n))]
        hit = torch.cat([p[0] for p in parts])
        loss = torch.cat([p[1] for p in parts])
        self._counts[0] += n
        if not any(p[2] is not None for p in parts):
            return hit, loss, None
        leave, start = hit | final, 0
        grads = []
        for h, _, g in parts:
            rows = slice(start, start + h.shape[0])
            start += h.shape[0]
            grads.append(g if g is not None else torch.zeros_like(adv[rows]))
            if g is not None:
                self._counts[1] += h.shape[0]
                self._counts[2] += int(leave[rows].sum())
        keep = ~leave
        grad = torch.cat(grads)[keep]
        # Expectation over transformation (randomised models): average the gradient of eot_iter
        # forward/backward passes, as the reference does for AutoAttack's 'rand'.
        for _ in range(self.eot_iter - 1):
            adv_e = adv[keep].detach().requires_grad_(True)
            with torch.enable_grad():
                loss_e = self._per_image_loss(self._logits(model, adv_e).float(), ya[keep],
                                              None if ta is None else ta[keep])
            grad = grad + self._input_grad(loss_e.sum(), adv_e)
        return hit, loss, grad / self.eot_iter if self.eot_iter > 1 else grad

    def _admit(
        self, s: dict[str, torch.Tensor], x: torch.Tensor, indices: list[int], start: int, count: int,
        key: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Add images start..start+count-1 to the working batch at their random starting point."""
        rows = torch.arange(start, start + count, device=x.device)
        clean = x[rows]
        adv = (clean + self._initial_delta(clean, indices[start : start + count], key)).clamp(0, 1)
        zeros = torch.zeros(count, device=x.device)
        new = {
            "rows": rows,
            "t": torch.zeros(count, dtype=torch.long, device=x.device),  # steps taken
            "adv": adv,
            "old": adv.clone(),  # where the previous step started (momentum)
            "step": torch.full((count,), 2 * self.eps, device=x.device, dtype=x.dtype),
            "x_best": adv.clone(),
            "grad_best": torch.zeros_like(adv),
            "best": zeros,  # best loss so far; set from the first forward pass
            "prev": zeros.clone(),  # the previous iterate's loss
            "ups": zeros.clone(),  # steps that raised the loss since the last checkpoint
            "best_at_check": zeros.clone(),
            "halved_at_check": torch.ones(count, dtype=torch.bool, device=x.device),
        }
        if not s:
            return new
        return {k: torch.cat([s[k], new[k]]) for k in new}

    def _track_best(self, s: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Update the loss history and the best point with the losses of the current iterates."""
        loss = loss.float()
        first = s["t"] == 0
        s["best"] = torch.where(first, loss, s["best"])
        s["best_at_check"] = torch.where(first, loss, s["best_at_check"])
        # A loss counts as higher only by more than float noise: the model's batched and per-image
        # forward passes differ in the last bits, and a decision taken on them would make an image's
        # trajectory depend on its batch.
        # The reference compares its first step with an unset (zero) loss; the start's loss is meant.
        noise = LOSS_TOL * s["prev"].abs().clamp(min=self.loss_floor)
        s["ups"] = s["ups"] + (~first & (loss > s["prev"] + noise)).float()
        s["prev"] = loss
        s["improved"] = loss > s["best"] + LOSS_TOL * s["best"].abs().clamp(min=self.loss_floor)
        s["best"] = torch.where(s["improved"], loss, s["best"])
        s["x_best"] = torch.where(_rows(s["improved"]), s["adv"], s["x_best"])

    def _step(self, s: dict[str, torch.Tensor], grad: torch.Tensor, x: torch.Tensor, windows: torch.Tensor) -> None:
        """Checkpoint bookkeeping, then one momentum step and projection, for the images staying."""
        with torch.no_grad():
            t = s["t"]
            s["grad_best"] = torch.where(_rows(s["improved"] | (t == 0)), grad, s["grad_best"])
            window = windows[t].to(s["ups"].dtype)
            check = window > 0
            if bool(check.any()):
                # (a) too few steps raised the loss, or (b) neither step size nor best loss changed.
                oscillating = s["ups"] <= window * self.rho
                stalled = ~s["halved_at_check"] & (s["best_at_check"] >= s["best"])
                halve = check & (oscillating | stalled)
                s["halved_at_check"] = torch.where(check, halve, s["halved_at_check"])
                s["best_at_check"] = torch.where(check, s["best"], s["best_at_check"])
                s["ups"] = torch.where(check, torch.zeros_like(s["ups"]), s["ups"])
                s["step"] = torch.where(halve, s["step"] / 2, s["step"])
                s["adv"] = torch.where(_rows(halve), s["x_best"], s["adv"])
                grad = torch.where(_rows(halve), s["grad_best"], grad)
            adv, old = s["adv"], s["old"]
            a = _rows(torch.where(t == 0, 1.0, MOMENTUM).to(adv.dtype))
            step = _rows(s["step"])
            if self.norm == "Linf":
                z = self._to_linf_ball(adv + step * grad.sign(), x)
                new = self._to_linf_ball(adv + a * (z - adv) + (1 - a) * (adv - old), x)
            else:
                z = self._to_l2_ball(adv + step * self._unit(grad), x)
                new = self._to_l2_ball(adv + a * (z - adv) + (1 - a) * (adv - old), x)
            s["old"], s["adv"], s["t"] = adv, new, t + 1

    def _to_linf_ball(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(p, x - self.eps), x + self.eps).clamp(0, 1)

    def _to_l2_ball(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = p - x
        size = _rows(d.flatten(1).norm(dim=1))
        return (x + self._unit(d) * size.clamp(max=self.eps)).clamp(0, 1)

    @staticmethod
    def _unit(v: torch.Tensor) -> torch.Tensor:
        return v / (_rows(v.flatten(1).norm(dim=1)) + 1e-12)

    def _initial_delta(self, x: torch.Tensor, indices: list[int], key: tuple[int, int]) -> torch.Tensor:
        """A random point on the ball's surface, per image from its own generator (as the reference:
        uniform noise scaled to Linf norm eps, or Gaussian noise scaled to L2 norm eps)."""
        gens = generators(self.seed, indices, self.name, "start", *key)
        if self.norm == "Linf":
            t = 2 * uniform_rows(gens, tuple(x.shape[1:])) - 1
            t = t / (_rows(t.flatten(1).abs().amax(dim=1)) + 1e-12)
        else:
            t = normal_rows(gens, tuple(x.shape[1:]))
            t = t / (_rows(t.flatten(1).norm(dim=1)) + 1e-12)
        return (self.eps * t).to(device=x.device, dtype=x.dtype)


@register_attack
class APGDDLR(APGD):
    r"""Auto-PGD on the DLR loss (AutoAttack's APGD-DLR), untargeted; needs >= 3 classes.

    Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690

    The difference-of-logits-ratio loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (``z``
    sorted descending as ``z_pi1 >= z_pi2 >= ...``) is invariant to shifting and rescaling the
    logits, so it keeps working where cross-entropy saturates. Arguments as :class:`APGD`.

    Example:
        >>> out = APGDDLR(eps=8 / 255).run(model, images, labels)
    """

    name = "apgd-dlr"
    min_classes = 3
    loss_floor = 1.0

    def _per_image_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        return dlr_loss(logits, labels)


@register_attack
class APGDT(APGD):
    r"""Targeted Auto-PGD on the targeted DLR loss over the top classes (AutoAttack's APGD-T); needs >= 4 classes.

    Croce & Hein, ICML 2020, https://arxiv.org/abs/2003.01690

    An untargeted attack made of targeted runs: round ``r`` (1..``n_target_classes``) drives each
    image still resisting towards the class its clean logits rank ``r + 1``-th, with the loss
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``. Success is any misclassification.

    Args:
        n_target_classes: rounds, one target class each (default 9, AutoAttack's standard; capped at
            classes - 1).
        Others as :class:`APGD`; ``restarts`` runs per target class.

    Example:
        >>> out = APGDT(eps=8 / 255, n_target_classes=9).run(model, images, labels)
    """

    name = "apgd-t"
    min_classes = 4
    loss_floor = 1.0
    quick = {"steps": 20, "n_target_classes": 3}

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        n_target_classes: int = 9,
        eot_iter: int = 1,
        seed: int = 0,
        optimise: bool = True,
    ) -> None:
        super().__init__(eps, norm=norm, steps=steps, restarts=restarts, rho=rho, eot_iter=eot_iter, seed=seed,
                         optimise=optimise)
        self.n_target_classes = check_int("n_target_classes", n_target_classes, 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_target_classes": self.n_target_classes}

    def _per_image_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        assert targets is not None  # set by _rounds
        return targeted_dlr_loss(logits, labels, targets)

    def _rounds(self, model: nn.Module, images: torch.Tensor, chunk: int) -> list[torch.Tensor | None]:
        # The reference ranks the classes on the clean images before every round; the ranking does
        # not change between rounds, so one clean pass serves them all.
        with torch.no_grad():
            clean = torch.cat([self._logits(model, images[i : i + chunk]) for i in range(0, len(images), chunk)])
        self._check_classes(clean.shape[1])
        ranked = clean.argsort(dim=1, descending=True)
        k = min(self.n_target_classes, clean.shape[1] - 1)
        return [ranked[:, r] for r in range(1, k + 1)]
