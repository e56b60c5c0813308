"""The adversarial suite's options: parsed and checked before any model is loaded, and each attack's parameters.

:class:`AdversarialOptions` holds what the user set (attacks, norms, budgets, steps, step size,
restarts, queries); :func:`attack_params` turns it into each attack's constructor arguments,
leaving every attack its own defaults unless the user set one. Result keys (:func:`result_key`)
write budgets with :func:`eps_key`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import attacks
from attacks.base import check_norm
from attacks.torchattacks_adapter import TORCHATTACKS_PREFIX
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options, comma_list, int_in, option

DEFAULT_ATTACKS = ("fgsm", "pgd")
DEFAULT_NORM = "Linf"
DEFAULT_STEPS = 10
DEFAULT_RESTARTS = 1
#: Our option -> the constructor argument it becomes, for torchattacks classes that take it.
_TORCHATTACKS_ARGS = {"steps": "steps", "alpha": "alpha", "restarts": "n_restarts", "queries": "n_queries"}
#: Our option -> the constructor argument of native attacks that take it.
_NATIVE_ARGS = {"steps": "steps", "alpha": "alpha", "restarts": "restarts", "queries": "n_queries"}


def eps_key(eps: float) -> str:
    """The budget as written in result keys: ``%g`` with 6 significant digits.

    Example:
        >>> eps_key(0.1), eps_key(8 / 255), eps_key(1.5)
        ('0.1', '0.0313725', '1.5')
    """
    return format(float(eps), ".6g")


def result_key(attack: str, norm: str, eps: float) -> str:
    """``"<attack>.<norm>[<eps>]"``, the key of :attr:`AdversarialResult.robust_accuracy`."""
    return f"{attack}.{norm}[{eps_key(eps)}]"




def _norms(value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for name in comma_list(value, "--norm", "Linf"):
        try:
            norm = check_norm(name)
        except RobustEvalError:
            raise RobustEvalError(f"unknown norm {name!r}; valid norms: Linf, L2 (e.g. --norm L2)") from None
        if norm not in out:
            out.append(norm)
    return tuple(out)


def _alpha(value: Any) -> float:
    """A step size: a positive number or an ``a/b`` fraction (``2/255``)."""
    try:
        (alpha,) = attacks.parse_eps([value])
    except RobustEvalError:
        raise RobustEvalError(
            f"--alpha must be a positive step size in pixel units, got {value!r}; e.g. --alpha 2/255 "
            "(omit it for the attack's default)"
        ) from None
    return alpha


@dataclass(frozen=True)
class AdversarialOptions(Options):
    """The adversarial suite's settings; None means the default (the dataset's eps, 10 steps...)."""

    owner: ClassVar[str] = "adversarial"

    attack: tuple[str, ...] | None = option(
        "--attack", f"attacks, comma-separated; torchattacks:NAME for torchattacks' catalogue "
        f"(default: {','.join(DEFAULT_ATTACKS)}); see 'robust-eval list attacks'",
        parse=lambda v: comma_list(v, "--attack", "fgsm,pgd"), metavar="NAME[,NAME]", example="fgsm,pgd,square")
    norm: tuple[str, ...] | None = option(
        "--norm", f"threat model, Linf or L2, or both comma-separated (default: {DEFAULT_NORM})",
        parse=_norms, metavar="Linf|L2", example="L2")
    eps: tuple[float, ...] | None = option(
        "--eps", "budget(s) in [0,1] pixel units, decimals or fractions; several make a sweep, "
        "e.g. 1/255,2/255,4/255,8/255 (default: the dataset's conventional budget, see 'robust-eval list attacks')",
        parse=lambda v: tuple(attacks.parse_eps(v)), metavar="EPS[,EPS]", example="1/255,0.5")
    steps: int | None = option(
        "--steps", f"steps per restart of every attack that takes them (default: each attack's own: PGD "
        f"{DEFAULT_STEPS}, APGD 100, torchattacks classes theirs)",
        parse=int_in("--steps", 1), metavar="N", example="3")
    alpha: float | None = option(
        "--alpha", "step size in pixel units, e.g. 2/255 (default: the attack's, PGD 2.5*eps/steps)",
        parse=_alpha, metavar="A", example="2/255")
    queries: int | None = option(
        "--queries", "query budget per image of score-based attacks (Square, and autoattack's Square) (default: "
        "each attack's own, Square 5000)", parse=int_in("--queries", 1), metavar="Q", example="500")
    restarts: int | None = option(
        "--restarts", f"random restarts of every attack that takes them (default: each attack's own, PGD "
        f"{DEFAULT_RESTARTS})",
        parse=int_in("--restarts", 1), metavar="R", example="2")

    @property
    def attacks(self) -> tuple[str, ...]:
        return self.attack or DEFAULT_ATTACKS

    @property
    def norms(self) -> tuple[str, ...]:
        return self.norm or (DEFAULT_NORM,)

    @property
    def explicit(self) -> frozenset[str]:
        return frozenset(self.set_fields())

    def validate(self) -> None:
        if self.eps is not None:
            if len(self.norms) > 1:
                raise RobustEvalError(
                    f"--eps {_fmt_eps(self.eps)} is ambiguous with several norms ({', '.join(self.norms)}): budgets "
                    "differ between Linf and L2; pass one --norm with --eps, or omit --eps for each norm's default"
                )
            attacks.parse_eps(self.eps, self.norms[0])  # Linf budgets above 1
            keys = [eps_key(e) for e in self.eps]
            if len(set(keys)) < len(keys):
                raise RobustEvalError(f"--eps {_fmt_eps(self.eps)} has budgets equal to 6 significant digits; "
                                      "make them differ (result keys use 6 digits)")
        # Build every attack once at a valid budget: unknown names, a missing torchattacks and
        # arguments an attack rejects surface here, before any model is loaded.
        for norm in self.norms:
            attack_params(self, norm, self.eps[-1] if self.eps else 0.1)


def gradients_needed(name: str) -> bool:
    """Whether an attack cannot run at all without input gradients (a native attack's ``needs_gradients``;
    ensembles that take ``gradients=False`` run their gradient-free part)."""
    if name.startswith(TORCHATTACKS_PREFIX):
        return True
    return bool(getattr(attacks.ATTACKS.entry(name), "needs_gradients", True)) and not _native_takes(name, "gradients")


def _native_takes(name: str, argument: str) -> bool:
    """Whether the native attack ``name``'s constructor has the parameter ``argument``."""
    return argument in inspect.signature(attacks.ATTACKS.entry(name).__init__).parameters


def _fmt_eps(eps: tuple[float, ...]) -> str:
    return ",".join(eps_key(e) for e in eps)


def _accepts(name: str, option: str, params: dict[str, Any], value: Any, eps: float) -> bool:
    """Whether the attack ``name`` takes ``option`` (our name; torchattacks classes may call it otherwise)."""
    if not name.startswith(TORCHATTACKS_PREFIX):
        return _native_takes(name, _NATIVE_ARGS[option])
    arg = _TORCHATTACKS_ARGS[option]
    try:
        attacks.build(name, **params, eps=eps, **{arg: value})
    except RobustEvalError:
        return False
    return True


def attack_params(opts: AdversarialOptions, norm: str, eps: float, seed: int = 0,
                  gradients: bool = True) -> dict[str, dict[str, Any]]:
    """Constructor arguments (all but eps) per attack; --steps/--alpha/--restarts/--queries go where they are taken.

    Without ``gradients`` (a model without them, no surrogate), attacks that take ``gradients``
    (ensembles) get ``gradients=False`` and keep their gradient-free part.
    """
    out: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for name in opts.attacks:
        params: dict[str, Any] = {"norm": norm, "seed": seed}
        attacks.build(name, **params, eps=eps)  # unknown names, norms the attack lacks, missing torchattacks
        foreign = name.startswith(TORCHATTACKS_PREFIX)
        steps = DEFAULT_STEPS if opts.steps is None else opts.steps
        restarts = DEFAULT_RESTARTS if opts.restarts is None else opts.restarts
        for setting, value in (("steps", steps), ("alpha", opts.alpha), ("restarts", restarts),
                               ("queries", opts.queries)):
            # Every attack keeps its own defaults (PGD 10 steps, APGD 100, Square 5000 queries, torchattacks'
            # CW 50) unless the user set one; DEFAULT_STEPS / DEFAULT_RESTARTS are PGD's own, in the settings.
            if value is None or setting not in opts.explicit:
                continue
            if _accepts(name, setting, params, value, eps):
                params[(_TORCHATTACKS_ARGS if foreign else _NATIVE_ARGS)[setting]] = value
                used.add(setting)
        if not gradients and not foreign and _native_takes(name, "gradients"):
            params["gradients"] = False
        out[name] = params
    unused = sorted((opts.explicit & {"steps", "alpha", "restarts", "queries"}) - used)
    if unused:
        raise RobustEvalError(
            f"--{unused[0]} does not apply to {', '.join(opts.attacks)} (none takes it); drop it or add an "
            f"attack that does, e.g. --attack {'square' if unused[0] == 'queries' else 'pgd'}"
        )
    return out
