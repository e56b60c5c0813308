"""The defence contract: typed parameters, the flags that set them, and the entry base class.

Every defence declares one frozen :class:`Params` dataclass. Its fields are the defence's
hyperparameters with their defaults; a field made with :func:`param` and a :class:`Flag` is set on
the command line by that flag. Several defences may use the same flag (``--eps`` is read by
fgsm-rs, pgd-at and trades): they declare the same :class:`Flag`, and registering a defence that
declares a flag differently raises, so the one flag table (:data:`FLAGS`) stays consistent.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import Registry

DEFENCES: Registry[type[Defence]] = Registry("defence", "robust-eval list defences")

#: The stages of a training step a defence can act on, in the order they run. ``sampler`` draws
#: each epoch's order of training images; ``criterion`` is the function of (logits, labels) that
#: the ``loss`` stage's owner (or plain training) minimises.
STAGES = ("sampler", "image", "pixel", "mix", "criterion", "loss")


def flag_name(name: str) -> str:
    """``noise_std`` -> ``--noise-std``."""
    return "--" + name.replace("_", "-")


def positive(name: str, value: object, *, integer: bool = False, upper: float | None = None,
             allow_zero: bool = False) -> Any:
    """``value`` checked to be a finite number > 0 (or >= 0), at most ``upper``; as int or float.

    Raises:
        RobustEvalError: naming the flag, the bound and the value.
    """
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        kind = "an integer" if integer else "a number"
        raise RobustEvalError(f"{flag_name(name)} must be {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    low_ok = v >= 0 if allow_zero else v > 0
    if not low_ok or (upper is not None and v > upper):
        bound = f"in {'[' if allow_zero else '('}0, {upper:g}]" if upper is not None else (
            ">= 0" if allow_zero else "> 0")
        raise RobustEvalError(f"{flag_name(name)} must be {bound}, got {value}; see 'robust-eval list defences'")
    return int(value) if integer else v  # type: ignore[arg-type]


def int_value(text: str) -> int:
    """argparse type: an integer (the range is checked by the defence's parameters)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def eps_value(text: str) -> float:
    """argparse type: one budget as a number or a fraction (0.1, 8/255)."""
    from attacks.defaults import parse_eps

    try:
        values = parse_eps(text)
    except RobustEvalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one value, got '{text}'")
    return values[0]


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets a parameter of the same name.

    Attributes:
        help: what the parameter is; "used by" and the defaults are appended from the defences.
        type: argparse ``type`` for the value; None makes an on/off switch (``--jsd``).
    """

    help: str
    type: Callable[[str], Any] | None = None


def flag_tokens(values: Mapping[str, Any], flags: Mapping[str, Flag]) -> list[str]:
    """``{"eps": 0.1, "jsd": True}`` -> ``["--eps", "0.1", "--jsd"]``; floats written to round-trip.

    Raises:
        RobustEvalError: a value has no flag in ``flags``.
    """
    out: list[str] = []
    for name, value in values.items():
        if name not in flags:
            raise RobustEvalError(f"{name}={value!r} has no command-line flag; set it from Python or leave it at "
                                  "its default")
        if flags[name].type is None:
            out += [flag_name(name)] if value else []
        else:
            out += [flag_name(name), repr(value) if isinstance(value, float) else str(value)]
    return out


def param(default: Any, flag: Flag | None = None, *, default_text: str | None = None) -> Any:
    """A :class:`Params` field.

    Args:
        default: the value when the parameter is not given (None: resolved when the defence is
            built, e.g. eps from the dataset).
        flag: the command-line flag that sets it; None: settable only from Python or YAML mappings.
        default_text: how ``robust-eval list defences`` and ``--help`` describe a None default.
    """
    return dataclasses.field(default=default, metadata={"flag": flag, "default_text": default_text})


@dataclass(frozen=True)
class Params:
    """Base of every defence's parameters: frozen, validated in ``__post_init__``.

    Subclasses add fields with :func:`param` and check them in ``__post_init__`` (storing the
    coerced values with :meth:`_set`), raising :class:`RobustEvalError` with a one-line message.
    """

    @classmethod
    def names(cls) -> list[str]:
        """Field names in declaration order (the order of the checkpoint's settings)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """The fields that have a command-line flag, with their flag."""
        return {f.name: f.metadata["flag"] for f in dataclasses.fields(cls) if f.metadata.get("flag") is not None}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], owner: str = "") -> Params:
        """Parameters from ``name: value`` (None values keep the default); unknown names raise."""
        unknown = [k for k in values if k not in cls.names()]
        if unknown:
            valid = ", ".join(cls.names()) or "none"
            raise RobustEvalError(f"unknown option {unknown[0]!r} for defence '{owner or cls.__qualname__}'; "
                                  f"valid: {valid}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_args(cls, args: argparse.Namespace, owner: str = "") -> Params:
        """Parameters from parsed flags; flags left unset (None) keep the default."""
        return cls.from_mapping({k: getattr(args, k, None) for k in cls.flags()}, owner)

    def given(self) -> dict[str, Any]:
        """The parameters that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def to_args(self) -> list[str]:
        """Command-line flags that rebuild these parameters (defaults are left out).

        Raises:
            RobustEvalError: a non-default parameter has no flag.
        """
        return flag_tokens(self.given(), self.flags())

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # the dataclass is frozen; __post_init__ coerces


@dataclass(frozen=True)
class NoParams(Params):
    """Parameters of a defence that has none."""


@dataclass
class DefenceContext:
    """What a defence may know about the run.

    Attributes:
        class_counts: training images per class under the labels the model trains on (after any
            stress); None before the data is read (criteria then assume balanced classes).
        criterion: the selected ``criterion`` defence's loss of (logits, soft targets), set by the
            pipeline; None: cross-entropy.
    """

    num_classes: int
    dataset: str
    seed: int = 0
    label_smoothing: float = 0.0
    class_counts: tuple[int, ...] | None = None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training criterion of ``logits`` against hard labels (N,) or soft targets (N, classes).

        Cross-entropy with the run's label smoothing, or the selected criterion, which receives
        the targets as (N, classes) distributions with the same smoothing applied.
        """
        if self.criterion is None:
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        soft = F.one_hot(targets, logits.shape[1]).to(logits.dtype) if targets.ndim == 1 else targets.to(logits.dtype)
        if self.label_smoothing:
            soft = soft * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        return self.criterion(logits, soft)


@dataclass
class Prepared:
    """A training batch after the image, pixel and mix stages.

    ``x``: float images in [0, 1]; ``y``: the original hard labels; ``targets``: what the loss is
    taken against (hard labels, or (N, classes) soft labels after mixing); ``raw``: the uint8
    batch before any augmentation; ``indices``: the images' dataset indices.
    """

    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor
    raw: torch.Tensor
    indices: list[int]


class Defence:
    """One defence. Subclasses set the class attributes and override their stage's hook.

    Hooks the training loop asks every defence (so the loop never checks names):
    :meth:`start_epoch`, :meth:`early_stop`; adversarial defences also answer
    ``heldout_accuracy`` for the per-epoch check.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams
    #: Trains on adversarial examples: the loop holds out images to watch PGD accuracy.
    adversarial: ClassVar[bool] = False
    #: When a defence of another stage takes over the training loss ("with --jsd"); "" never.
    loss_when: ClassVar[str] = ""
    #: The training-set flaw the defence corrects ("imbalance"); two that correct the same one are refused.
    corrects: ClassVar[str] = ""

    def __init__(self, params: Params, ctx: DefenceContext) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"defence '{self.name}' takes {self.Params.__qualname__}, got {type(params).__name__}")
        self.ctx = ctx
        self.params = params

    @classmethod
    def stage_for(cls, params: Params) -> str:
        """The stage this defence acts on with ``params`` (AugMix owns the loss with --jsd)."""
        return cls.stage

    @classmethod
    def describe(cls) -> str:
        """One line for ``robust-eval list defences``: stage, summary and defaults."""
        defaults = ", ".join(f"{f.name}={f.metadata.get('default_text') if f.default is None else f.default}"
                             for f in dataclasses.fields(cls.Params))
        return f"[{cls.stage}] {cls.summary}" + (f" ({defaults})" if defaults else "")

    def settings(self) -> dict[str, Any]:
        """Resolved hyperparameters, recorded in the checkpoint."""
        return dataclasses.asdict(self.params)

    # stage hooks
    def order(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One epoch's draws: positions into ``labels`` (the training images' labels), as many as images."""
        raise NotImplementedError

    def image(self, img: torch.Tensor) -> torch.Tensor:  # (C, H, W) uint8 -> uint8
        raise NotImplementedError

    def pixel(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float -> float
        raise NotImplementedError

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of (N, classes) logits against (N, classes) target distributions."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits the running accuracy is measured on, their labels).

        ``model`` is what the step trains (a DistributedDataParallel wrapper under torchrun: one
        forward per step); ``attack_model`` the plain module attacks run on (default ``model``).
        """
        raise NotImplementedError

    # loop hooks
    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (attacks re-key their random starts by epoch)."""

    def early_stop(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> str | None:
        """After each epoch's record is appended to ``history``: a reason to stop training now, or None.

        ``best`` is the epoch with the best held-out PGD accuracy so far (adversarial defences).
        """
        return None


#: The command-line flags of every registered defence, in registration order.
FLAGS: dict[str, Flag] = {}
#: Flag names the pipeline itself owns; a defence may not declare them.
RESERVED = ("defence", "monitor_images")


def register_defence(cls: type[Defence]) -> type[Defence]:
    """Class decorator: add ``cls`` to :data:`DEFENCES` and its flags to :data:`FLAGS`.

    Raises:
        ValueError: the name is taken, or a flag is declared differently from an earlier defence.
    """
    new = cls.Params.flags()
    for name, flag in new.items():
        if name in RESERVED:
            raise ValueError(f"defence '{cls.name}' declares {flag_name(name)}, which the pipeline owns")
        if name in FLAGS and FLAGS[name] != flag:
            users = [n for n, entry in DEFENCES.items() if name in entry.Params.flags()]
            raise ValueError(f"defence '{cls.name}' declares {flag_name(name)} differently from "
                             f"{', '.join(users)}; share their Flag")
    DEFENCES.register(cls.name, cls)
    for name, flag in new.items():
        FLAGS.setdefault(name, flag)
    return cls
