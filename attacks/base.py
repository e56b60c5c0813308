"""The attack contract: the registries, one base class doing the bookkeeping, subclasses write ``perturb``.

Attacks are registered here and looked up by name in :mod:`attacks.catalogue`: native attack
classes in :data:`ATTACKS` (``@register_attack``), and families of attacks from elsewhere, named
``PREFIX:NAME``, as one :class:`AttackProvider` each in :data:`PROVIDERS`.

:class:`Attack.__call__` (and :meth:`Attack.run`, which also reports success and pass counts):

* validates the inputs (float NCHW images in [0, 1], integer labels, one dataset index per image);
* puts the model in eval mode and freezes its parameters (``requires_grad=False``) for the call,
  restoring both afterwards, also when the attack raises;
* moves images to the model's device only when they are elsewhere, and returns the adversarial
  images on the input's device, detached, in [0, 1] and inside the eps-ball of ``norm``;
* never modifies its inputs.

A subclass implements one method, :meth:`Attack.perturb`, and reaches the model only through
:meth:`Attack._logits` (which counts forward passes) and gradients only through
:meth:`Attack._input_grad` (which counts backward passes). Pass counts are in *images*: a forward
pass of a batch of 32 counts 32, so attacks that shrink their working batch are credited for it.

Randomness is drawn per image from :func:`robustbench_lite.seeding.generators` keyed by
(seed, dataset index, attack name, ...), so a result never depends on the batch size.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.pixels import check_images
from robustbench_lite.registry import Registry
from robustbench_lite.seeding import default_indices

#: The native attacks; ``attacks.catalogue`` adds the provider families (``torchattacks:NAME``).
ATTACKS: Registry[type[Attack]] = Registry("attack", "robust-eval list attacks")

#: Threat models: the norm of the perturbation budget.
NORMS = ("Linf", "L2")
_NORM_ALIASES = {"linf": "Linf", "inf": "Linf", "l_inf": "Linf", "l-inf": "Linf", "l2": "L2", "2": "L2"}

#: Slack allowed when checking ``||adv - x|| <= eps`` in float32: an iterate built as
#: ``x + clamp(delta, -eps, eps)`` can land one ulp outside the ball. Larger excursions are projected.
BUDGET_ATOL = 1e-6
BUDGET_RTOL = 1e-5


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register ``cls`` in :data:`ATTACKS` under ``cls.name``."""
    return ATTACKS.register(cls.name, cls)


def checked_logits(out: object, n: int) -> torch.Tensor:
    """``out`` if it is (n, classes) logits, else the one-line error that says how to wrap the model."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustEvalError(
            f"the model must return logits of shape (N, classes) for N images, "
            f"got {got} for N={n}; "
            "wrap it so forward() returns only the logits"
        )
    return out


@dataclass(frozen=True)
class AttackProvider:
    """A family of attacks named ``PREFIX:NAME`` that are not classes in :data:`ATTACKS`.

    Attributes:
        prefix: the part of the name before ``NAME``, ending in ':' (e.g. ``"torchattacks:"``).
        build: ``build(NAME, **params) -> Attack``; raises RobustEvalError for an unknown NAME or
            a bad parameter.
        names: the NAMEs on offer, sorted; raises RobustEvalError when the provider cannot offer
            any here (e.g. its optional library is not installed).
        description: one line for ``robust-eval list attacks``.
        notes: what a user must know about one NAME (shown in the listing, the attack's label and
            the results' warnings), e.g. that it is weaker than the name suggests.
    """

    prefix: str
    build: Callable[..., Attack]
    names: Callable[[], list[str]]
    description: str
    notes: dict[str, str] = field(default_factory=dict)


#: Attack providers by prefix: ``PROVIDERS.register(provider.prefix, provider)``.
PROVIDERS: Registry[AttackProvider] = Registry("attack provider", "robust-eval list attacks")


# ---------------------------------------------------------------------------------------------
# Argument checks shared by attacks, the evaluator and the eps parser


def check_norm(norm: object) -> str:
    """The canonical spelling of a threat model ('Linf' or 'L2'); aliases such as 'linf' are accepted."""
    if isinstance(norm, str):
        if norm in NORMS:
            return norm
        if norm.lower() in _NORM_ALIASES:
            return _NORM_ALIASES[norm.lower()]
    raise RobustEvalError(
        f"norm must be one of {', '.join(NORMS)}, got {norm!r}; pass norm='Linf' or norm='L2'"
    )


def check_eps(eps: object, norm: str) -> float:
    """A finite eps > 0 in pixel units, at most 1 for Linf (images live in [0, 1])."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps)):
        raise RobustEvalError(f"eps must be a finite number in pixel units, got {eps!r}; pass e.g. eps=8/255")
    eps = float(eps)
    if eps <= 0:
        raise RobustEvalError(f"eps must be > 0, got {eps}; pass a positive budget such as 8/255")
    if norm == "Linf" and eps > 1:
        raise RobustEvalError(
            f"eps must be in (0, 1] for Linf, got {eps}; pass a fraction of the [0,1] pixel range "
            f"such as {eps:g}/255"
        )
    return eps


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise RobustEvalError(
            f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {name}={minimum}"
        )
    return int(value)


def check_positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(float(value)) and float(value) > 0)
    ):
        raise RobustEvalError(f"{name} must be a finite number > 0, got {value!r}; pass e.g. {name}=2/255")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise RobustEvalError(f"{name} must be True or False, got {value!r}")
    return value


def check_labels(labels: object, n: int, what: str = "labels") -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex():
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise RobustEvalError(
            f"{what} must be an integer torch.Tensor of class indices, got {got}; "
            f"convert with torch.as_tensor({what}, dtype=torch.long)"
        )
    if labels.shape != (n,):
        raise RobustEvalError(f"{what} must have shape ({n},) to match the images, got {tuple(labels.shape)}")
    if n and int(labels.min()) < 0:
        raise RobustEvalError(f"{what} must be class indices >= 0, got {int(labels.min())}")
    return labels.long()


def check_indices(indices: torch.Tensor | Sequence[int] | None, n: int) -> list[int]:
    """Dataset indices (the key of per-image randomness); ``None`` means 0..n-1."""
    try:
        return default_indices(n, indices)
    except (ValueError, TypeError) as exc:
        raise RobustEvalError(
            f"indices must be one dataset index per image ({n}): {exc}; pass indices=None for 0..{n - 1}"
        ) from None


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm of a perturbation batch (N,), computed in float32 or wider."""
    flat = delta.flatten(1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    if flat.shape[1] == 0:
        return flat.new_zeros(flat.shape[0])
    return flat.abs().amax(dim=1) if norm == "Linf" else flat.norm(p=2, dim=1)


def budget_slack(eps: float) -> float:
    """The largest ``||adv - x||`` still counted as within ``eps`` (see :data:`BUDGET_ATOL`)."""
    return eps * (1 + BUDGET_RTOL) + BUDGET_ATOL


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and int(labels.max()) >= num_classes:
        raise RobustEvalError(
            f"label {int(labels.max())} is out of range for a model with {num_classes} classes; "
            f"labels must be in 0..{num_classes - 1}"
        )


def balanced_batch(n: int, batch_size: int) -> int:
    """The working-batch size for ``n`` images capped at ``batch_size``, equal-sized rounds.

    Attacks that keep a working batch full by refilling it retire most images together (at their
    last step or query); with a plain cap the last round holds the remainder alone (1,000 images
    at 250 a batch leaving 18 for Square's 5,000 queries), where every pass costs several times
    more per image. ``ceil(n / rounds)`` images per round, with as many rounds as the cap needs,
    keeps every round near the same size; it never exceeds ``batch_size``.
    """
    rounds = max(1, math.ceil(n / max(1, batch_size)))
    return max(1, math.ceil(n / rounds))


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else fallback


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; every module's flag is restored on exit.

    Freezing the parameters keeps autograd from recording (and computing) weight gradients: an
    attack only needs the gradient with respect to its input. Each module's ``training`` flag is
    restored individually, so a model with some submodules deliberately in eval keeps that.
    """
    if not isinstance(model, nn.Module):
        raise RobustEvalError(
            "model must be a torch.nn.Module taking [0,1] images and returning logits, "
            f"got {type(model).__name__}"
        )
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in params:
            p.requires_grad_(flag)


def random_targets(
    labels: torch.Tensor, num_classes: int, seed: int = 0, indices: torch.Tensor | Sequence[int] | None = None
) -> torch.Tensor:
    """A uniformly random wrong class per image, drawn from that image's own generator.

    Args:
        labels: true classes, shape (N,).
        num_classes: number of classes of the model (>= 2).
        seed: run seed; with ``indices`` it fixes each image's target.
        indices: dataset indices of the images (default 0..N-1).

    Returns:
        Target classes, shape (N,), int64, on ``labels``' device, never equal to ``labels``.
    """
    from robustbench_lite.seeding import generators

    n = len(labels)
    if num_classes < 2:
        raise RobustEvalError(f"num_classes must be >= 2 for targeted attacks, got {num_classes}")
    gens = generators(seed, check_indices(indices, n), "target")
    shift = (
        torch.stack([torch.randint(1, num_classes, (), generator=g) for g in gens]) if n else torch.zeros(0)
    )
    return (labels.cpu().long() + shift.long()).remainder(num_classes).to(labels.device)


# ---------------------------------------------------------------------------------------------
# The base class


@dataclass(frozen=True)
class AttackOutput:
    """What one :meth:`Attack.run` produced.

    Attributes:
        adversarial: adversarial images, same shape, dtype and device as the input, in [0, 1] and
            within the eps-ball.
        success: (N,) bool on the input's device: the model is fooled by ``adversarial`` (predicts
            the target for targeted attacks); ``None`` when the run was asked not to check.
        forward: images pushed through the model in a forward pass.
        backward: images pushed through a backward pass.
        wasted_backward: backward passes spent on images that the same forward pass had just shown
            to be fooled (early exit learns this only after the forward); ``forward + backward -
            wasted_backward`` is the compute an early-exiting attack cannot avoid.
    """

    adversarial: torch.Tensor
    success: torch.Tensor | None
    forward: int
    backward: int
    wasted_backward: int = 0
    broken_by: torch.Tensor | None = None


class Attack:
    """Base class: bookkeeping in ``__call__``/``run``, the algorithm in ``perturb``.

    Args:
        eps: perturbation budget in pixel units ([0,1] images), > 0; at most 1 for Linf.
        norm: threat model, ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        targeted: make the model predict ``targets`` instead of moving away from ``labels``
            (default False).
        seed: run seed; each image's randomness is keyed by (seed, its dataset index).

    Subclasses set ``name`` (the registry name) and ``norms`` (supported threat models), implement
    :meth:`perturb`, and return their constructor arguments from :meth:`params`.
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = NORMS
    #: ``perturb`` takes a ``batch_size`` keyword and manages its own working batch.
    streaming: ClassVar[bool] = False
    #: parameters for a quick run of the attack (contract tests, smoke runs): a small step or query
    #: budget, so a test exercises the whole algorithm without the full cost
    quick: ClassVar[dict[str, Any]] = {}
    #: The attack takes input gradients (``_input_grad``); False for score-based attacks (e.g. Square),
    #: which read only logits and so run on models without gradients (ONNX Runtime, int8).
    needs_gradients: ClassVar[bool] = True

    def __init__(self, eps: float, *, norm: str = "Linf", targeted: bool = False, seed: int = 0) -> None:
        self.norm = check_norm(norm)
        if self.norm not in self.norms:
            raise RobustEvalError(
                f"attack '{self.name}' does not support norm {self.norm}; "
                f"valid norms: {', '.join(self.norms)}"
            )
        self.eps = check_eps(eps, self.norm)
        self.targeted = check_bool("targeted", targeted)
        self.seed = check_int("seed", seed, 0)
        self._counts = [0, 0, 0]  # forward, backward, wasted backward, of the current run

    # -- description --------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this attack (``type(self)(**attack.params())``)."""
        return {"eps": self.eps, "norm": self.norm, "targeted": self.targeted, "seed": self.seed}

    @property
    def label(self) -> str:
        """Short description for tables and warnings, e.g. ``pgd(Linf, eps=0.1, steps=10)``."""
        return f"{self.name}({self.norm}, eps={self.eps:.4g})"

    def with_eps(self, eps: float) -> Attack:
        """The same attack with another budget; step sizes left at their default follow eps."""
        return type(self)(**{**self.params(), "eps": eps})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- the one method a subclass writes ------------------------------------------------------

    def perturb(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compute adversarial images.

        Called with the model in eval mode and parameters frozen, inputs on the model's device.

        Args:
            model: pass it to :meth:`_logits`; do not call it directly.
            images: (N, C, H, W) in [0, 1]; do not modify.
            labels: (N,) true classes, or target classes when ``self.targeted``.
            indices: the images' dataset indices, for :func:`robustbench_lite.seeding.generators`.

        Returns:
            ``(adversarial, success)``: adversarial images of the same shape, and a (N,) bool
            tensor saying which of them fool the model (``None`` if the attack does not know; the
            base class then checks with one forward pass when the caller asks). An ensemble
            returns a third item, its ``broken_by`` (see :class:`AttackOutput`).
        """
        raise NotImplementedError

    # -- model access: the only way subclasses reach the model ----------------------------------

    def _logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for a batch, counted as N forward passes."""
        self._counts[0] += x.shape[0]
        return checked_logits(model(x), x.shape[0])

    def _input_grad(self, loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d loss / d x only (no parameter gradients), counted as ``len(x)`` backward passes."""
        self._counts[1] += x.shape[0]
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Cross-entropy to increase: away from the true class, or towards the target (negated).

        ``sum`` (not ``mean``) keeps each image's gradient independent of the batch size.
        """
        _check_label_range(labels, logits.shape[1])
        loss = nn.functional.cross_entropy(logits.float(), labels, reduction=reduction)
        return -loss if self.targeted else loss

    def _success(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_label_range(labels, logits.shape[1])
        pred = logits.argmax(dim=1)
        return pred == labels if self.targeted else pred != labels

    def _judge(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        """Which images fool ``model``: one counted forward pass each, ``chunk`` at a time, no gradients.

        Attacks that search on a faster copy of the model (:mod:`attacks.inference`) take their
        verdict here, on the model itself.
        """
        hits = [labels.new_zeros(0, dtype=torch.bool)]
        with torch.no_grad():
            for i in range(0, len(images), chunk):
                hits.append(self._success(self._logits(model, images[i : i + chunk]), labels[i : i + chunk]))
        return torch.cat(hits)

    # -- bookkeeping ---------------------------------------------------------------------------

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | Sequence[int] | None = None,
        *,
        targets: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Adversarial images for a batch.

        Args:
            model: classifier taking [0,1] images and returning logits.
            images: (N, C, H, W) float in [0, 1]; not modified.
            labels: (N,) true classes.
            indices: dataset indices of the images, the key of per-image randomness (default 0..N-1).
            targets: (N,) target classes, required when the attack is targeted.
            batch_size: most images per forward pass (default: all at once).

        Returns:
            (N, C, H, W) adversarial images on ``images``' device and dtype, detached, in [0, 1]
            and within ``eps`` of ``images`` in ``norm``.
        """
        out = self.run(
            model, images, labels, indices, targets=targets, check_success=False, batch_size=batch_size
        )
        return out.adversarial

    def run(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | Sequence[int] | None = None,
        *,
        targets: torch.Tensor | None = None,
        check_success: bool = True,
        batch_size: int | None = None,
    ) -> AttackOutput:
        """Like ``__call__`` but also returns which images are fooled and the passes spent.

        Args:
            check_success: make sure ``success`` is known, with one extra forward pass if the
                attack itself does not report it (default True).
            batch_size: most images in one forward pass (default: all at once). Streaming attacks
                (``streaming = True``, e.g. PGD) keep their working batch full, refilling it as
                images retire; others are run chunk by chunk. Results do not depend on it.
        """
        images = check_images(images)
        n = images.shape[0]
        labels = check_labels(labels, n)
        index_list = check_indices(indices, n)
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, 1)
        if self.targeted:
            if targets is None:
                raise RobustEvalError(
                    f"{self.label} is targeted: pass targets=(N,) class indices, e.g. "
                    "attacks.random_targets(labels, num_classes, seed)"
                )
            labels = check_labels(targets, n, "targets")
        self._counts = [0, 0, 0]
        if n == 0:
            success = torch.zeros(0, dtype=torch.bool, device=images.device)
            return AttackOutput(images.clone(), success if check_success else None, 0, 0)
        chunk = n if self.streaming or batch_size is None else batch_size
        advs, successes, broken = [], [], []
        with attack_mode(model), torch.inference_mode(False):
            device = model_device(model, images.device)
            for start in range(0, n, chunk):
                x = images[start : start + chunk]
                # Inference tensors cannot enter autograd; a copy made outside inference mode can.
                x = x.to(device) if x.device != device else (x.clone() if x.is_inference() else x)
                y = labels[start : start + chunk].to(device)
                idx = index_list[start : start + chunk]
                if self.streaming:
                    adv, success, *extra = self.perturb(model, x, y, idx, batch_size=batch_size)  # type: ignore[call-arg]
                else:
                    adv, success, *extra = self.perturb(model, x, y, idx)
                adv, moved = self._project(adv.detach(), x)
                if success is not None and moved.any():
                    success = None  # the attack's verdict was about a point outside the budget
                if check_success and success is None:
                    with torch.no_grad():
                        success = self._success(self._logits(model, adv), y)
                if extra:  # an ensemble's component per image; -1 where the (re)checked verdict is "not fooled"
                    broken.append(extra[0].masked_fill(~success, -1) if success is not None else extra[0])
                advs.append(adv.to(images.device))
                successes.append(None if success is None else success.detach().to(images.device))
        forward, backward, wasted = self._counts
        out_success = None if any(s is None for s in successes) else torch.cat(successes)  # type: ignore[arg-type]
        adversarial = torch.cat(advs) if len(advs) > 1 else advs[0]
        broken_by = torch.cat(broken).to(images.device) if broken and len(broken) == len(advs) else None
        return AttackOutput(adversarial, out_success, forward, backward, wasted, broken_by)

    def _project(self, adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamp into the eps-ball and [0, 1]; returns the images and which ones had to move.

        Images already within the budget are left bit-for-bit as they are (rebuilding them as
        ``x + (adv - x)`` would move them by an ulp and could flip a decision at the boundary).
        """
        if adv.shape != x.shape:
            raise RuntimeError(f"{self.label} returned shape {tuple(adv.shape)} for inputs {tuple(x.shape)}")
        adv = adv.to(x.dtype)
        bad = ~torch.isfinite(adv).flatten(1).all(dim=1)
        if bad.any():
            adv = torch.where(bad.view(-1, 1, 1, 1), x, adv)
        delta = adv - x
        norms = perturbation_norms(delta, self.norm)
        over = norms > budget_slack(self.eps)
        out_of_box = ((adv < 0) | (adv > 1)).flatten(1).any(dim=1)
        moved = over | out_of_box | bad
        if over.any():
            if self.norm == "Linf":
                fixed = x + delta.clamp(-self.eps, self.eps)
            else:
                scale = (self.eps / norms.clamp_min(1e-12)).clamp(max=1.0).to(x.dtype)
                fixed = x + delta * scale.view(-1, 1, 1, 1)
            adv = torch.where(over.view(-1, 1, 1, 1), fixed, adv)
        return adv.clamp(0, 1), moved
