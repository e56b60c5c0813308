"""``torchattacks:NAME``: any attack class of torchattacks behind our :class:`~attacks.base.Attack`.

This module registers the ``torchattacks:`` :class:`~attacks.base.AttackProvider`, so
:func:`attacks.build` and :func:`attacks.available` know these names.

torchattacks is an optional dependency (``pip install 'robustbench-lite[torchattacks]'``), imported
only when such an attack is built. Our eps / norm / steps / alpha / seed are mapped onto the
class's own constructor arguments where it has them (read from its signature), the model is
wrapped so every forward and backward pass is counted, and the base class does the rest of the
bookkeeping (eval mode, [0,1] and budget checks: an output outside the eps-ball is projected back,
so a minimum-norm attack such as CW is scored within the budget).

Determinism: torchattacks draws from torch's global generator, which is seeded from ``seed`` inside
a forked RNG state for each call (the caller's global state is untouched). Results are reproducible
for a given seed and batch, but, unlike the native attacks, a randomised torchattacks attack does
not give per-image results independent of batching.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from attacks.base import PROVIDERS, Attack, AttackProvider, check_int, check_norm, check_positive
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import suggest

INSTALL_HINT = "pip install 'robustbench-lite[torchattacks]'"
TORCHATTACKS_PREFIX = "torchattacks:"

# Classes whose ``eps`` is an L2 radius but that take no ``norm`` argument.
_L2_EPS = frozenset({"PGDL2", "PGDRSL2"})
# Minimum-norm attacks with no eps argument whose natural budget is L2.
_L2_NATURAL = frozenset({"CW", "DeepFool", "EADEN"})
# Constructor arguments standing for our eps / steps under another name.
_EPS_NAMES = ("eps", "max_epsilon")
_STEPS_NAMES = ("steps", "num_iter_set")


def import_torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as exc:
        raise RobustEvalError(
            f"torchattacks attacks need the optional torchattacks package ({exc}); install it with "
            f"{INSTALL_HINT} (torchattacks pins an old requests: "
            "`pip install --no-deps torchattacks` avoids it)"
        ) from None
    return torchattacks


def _attack_classes() -> dict[str, type]:
    ta = import_torchattacks()
    out = {}
    for name in getattr(ta, "__all__", dir(ta)):
        cls = getattr(ta, name, None)
        if inspect.isclass(cls) and issubclass(cls, ta.attack.Attack) and cls is not ta.attack.Attack:
            if "model" in inspect.signature(cls.__init__).parameters:  # MultiAttack takes attacks
                out[name] = cls
    return out


def torchattacks_names() -> list[str]:
    """Sorted class names usable as ``torchattacks:NAME`` (raises if torchattacks is missing)."""
    return sorted(_attack_classes())


class _CountingModel(nn.Module):
    """The user's model as torchattacks sees it: every pass goes through ``Attack._logits``.

    A backward pass is counted when the gradient reaches this forward's input (a per-call view,
    so reusing one input tensor for several forwards still counts each backward once).
    """

    def __init__(self, model: nn.Module, attack: TorchattacksAttack) -> None:
        super().__init__()
        self.model = model
        self._owner = attack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            x = x.view_as(x)
            n = x.shape[0]
            x.register_hook(lambda grad: self._owner._count_backward(n))
        return self._owner._logits(self.model, x)


class TorchattacksAttack(Attack):
    """An attack class from torchattacks, with our accounting.

    Croce & Hein's AutoAttack (https://arxiv.org/abs/2003.01690), APGD, Square, CW, FAB, ... as
    implemented by torchattacks (Kim, https://arxiv.org/abs/2010.01950).

    Norm: the class's own ``norm`` argument when it has one (AutoAttack, APGD, Square, FAB); for
    classes without it, the norm their eps is measured in (Linf, L2 for PGDL2 / PGDRSL2), or for
    minimum-norm attacks without eps the norm in which the budget is enforced (L2 for CW, DeepFool).

    Args:
        attack_name: class name in torchattacks, e.g. ``"AutoAttack"``, ``"APGD"``, ``"CW"``.
        eps: budget in pixel units; passed as the class's eps and always enforced on the output.
        norm: ``"Linf"`` / ``"L2"``; default the class's natural norm (see above).
        steps: iterations, for classes with a ``steps`` argument (default: the class's default).
        alpha: step size, for classes with an ``alpha`` argument (default: the class's default).
        targeted: targeted mode (``set_mode_targeted_by_label``), for classes that support it.
        seed: seeds the class's ``seed`` argument and torch's global RNG for the call (default 0).
        **kwargs: any other constructor argument of the class (e.g. ``version="rand"``, ``c=1``).

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,); output (N, C, H, W) in [0, 1].

    Example:
        >>> aa = TorchattacksAttack("AutoAttack", eps=8 / 255)  # = build("torchattacks:AutoAttack", ...)
        >>> adv = aa(model, images, labels)
    """

    name = "torchattacks"

    def __init__(
        self,
        attack_name: str,
        eps: float,
        *,
        norm: str | None = None,
        steps: int | None = None,
        alpha: float | None = None,
        targeted: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        classes = _attack_classes()
        if attack_name not in classes:
            raise RobustEvalError(
                f"torchattacks has no attack {attack_name!r}.{suggest(str(attack_name), classes)} "
                f"Valid: {', '.join(sorted(classes))} (use as 'torchattacks:NAME')"
            )
        self.attack_name = attack_name
        self._cls = classes[attack_name]
        self._sig = [
            p for p in inspect.signature(self._cls.__init__).parameters if p not in ("self", "model")
        ]
        norm = self._resolve_norm(norm)
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed)
        self.steps = None if steps is None else check_int("steps", steps, 1)
        self.alpha = None if alpha is None else check_positive("alpha", alpha)
        self.kwargs = dict(kwargs)
        self._ctor = self._constructor_args()

    @property
    def label(self) -> str:
        note = "; APGD at 10 iterations" if self.attack_name == "AutoAttack" else ""
        return f"{TORCHATTACKS_PREFIX}{self.attack_name}({self.norm}, eps={self.eps:.4g}{note})"

    def params(self) -> dict[str, Any]:
        return {
            "attack_name": self.attack_name,
            "eps": self.eps,
            "norm": self.norm,
            "steps": self.steps,
            "alpha": self.alpha,
            "targeted": self.targeted,
            "seed": self.seed,
            **self.kwargs,
        }

    def _resolve_norm(self, norm: str | None) -> str:
        if "norm" in self._sig:
            return "Linf" if norm is None else check_norm(norm)
        has_eps = any(n in self._sig for n in _EPS_NAMES)
        native = (
            "L2"
            if self.attack_name in _L2_EPS or (not has_eps and self.attack_name in _L2_NATURAL)
            else "Linf"
        )
        if norm is None:
            return native
        norm = check_norm(norm)
        if has_eps and norm != native:
            raise RobustEvalError(
                f"torchattacks.{self.attack_name} measures eps in {native}, not {norm}; pass norm='{native}' "
                f"or pick an attack for {norm} (e.g. torchattacks:{'PGDL2' if norm == 'L2' else 'PGD'})"
            )
        return norm

    def _constructor_args(self) -> dict[str, Any]:
        def name_of(ours: str, names: tuple[str, ...]) -> str | None:
            return next((n for n in names if n in self._sig), None)

        valid = ", ".join(self._sig)
        args: dict[str, Any] = {}
        eps_name = name_of("eps", _EPS_NAMES)
        if eps_name:
            args[eps_name] = self.eps
        if "norm" in self._sig:
            args["norm"] = self.norm
        for ours, value, names in (("steps", self.steps, _STEPS_NAMES), ("alpha", self.alpha, ("alpha",))):
            if value is None:
                continue
            target = name_of(ours, names)
            if target is None:
                raise RobustEvalError(
                    f"torchattacks.{self.attack_name} takes no {ours}; remove it. Its parameters: {valid}"
                )
            args[target] = value
        if "seed" in self._sig:
            args["seed"] = self.seed
        if "verbose" in self._sig:
            args["verbose"] = False
        for key, value in self.kwargs.items():
            if key not in self._sig:
                raise RobustEvalError(
                    f"torchattacks.{self.attack_name} has no parameter {key!r}.{suggest(key, self._sig)} "
                    f"Its parameters: {valid}"
                )
            args[key] = value
        return args

    def _count_backward(self, n: int) -> None:
        self._counts[1] += n

    def perturb(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        counted = _CountingModel(model, self).eval()  # torchattacks restores train() if it finds it on
        args = dict(self._ctor)
        if "n_classes" in self._sig and "n_classes" not in self.kwargs:
            with torch.no_grad():
                args["n_classes"] = int(self._logits(model, images[:1]).shape[1])
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            try:
                attack = self._cls(counted, **args)
            except (TypeError, ValueError) as exc:
                raise RobustEvalError(
                    f"torchattacks.{self.attack_name}({args}) rejected its arguments: {exc}"
                ) from None
            if self.targeted:
                if "targeted" not in getattr(attack, "supported_mode", ()):
                    raise RobustEvalError(
                        f"torchattacks.{self.attack_name} does not support targeted mode; pass targeted=False"
                    )
                attack.set_mode_targeted_by_label(quiet=True)
            adv = attack(images, labels)
        return adv, None


#: What torchattacks' classes are not, said wherever they are used (torchattacks 3.5.1).
NOTES = {
    "AutoAttack": "not AutoAttack: it runs APGD and APGD-T for 10 iterations instead of the paper's 100 and "
                  "overstates robustness; use the native 'autoattack'",
    "APGD": "10 steps by default (the paper: 100); use the native 'apgd-ce' / 'apgd-dlr'",
    "APGDT": "10 steps by default (the paper: 100); use the native 'apgd-t'",
}

PROVIDERS.register(TORCHATTACKS_PREFIX, AttackProvider(
    TORCHATTACKS_PREFIX, TorchattacksAttack, torchattacks_names, "torchattacks (optional reference library)", NOTES
))
