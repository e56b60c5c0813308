"""The defences a run trains with, parsed once: names, each defence's typed parameters, flags.

:class:`DefenceOptions` is what :class:`robustbench_lite.config.TrainConfig` holds. It is built from
the command line (:meth:`DefenceOptions.from_args` over the flags :func:`add_arguments` adds), from
a YAML or Python mapping (:meth:`DefenceOptions.from_mapping`), and written back as flags
(:meth:`DefenceOptions.to_args`). Everything is checked here, before any data is read: unknown or
repeated names, bad values, flags no selected defence uses, and combinations of defences that
cannot train together.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.defences.base import (
    DEFENCES,
    FLAGS,
    STAGES,
    Flag,
    Params,
    flag_name,
    flag_tokens,
    int_value,
    positive,
)

#: Held-out training images on which adversarial defences measure PGD-10 accuracy each epoch.
MONITOR_IMAGES = 1000


def _and(items: Sequence[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def parse_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"augmix,pgd-at"`` -> ['augmix', 'pgd-at']; ``none``/``standard``/empty -> [].

    Raises:
        RobustEvalError: an unknown name (with the valid ones) or a name listed twice.
    """
    if spec is None:
        return []
    parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part or part in ("none", "standard"):
            continue
        DEFENCES.entry(part)  # unknown name: one line with the valid choices
        if part in names:
            raise RobustEvalError(f"defence '{part}' is listed twice in --defence; list each once")
        names.append(part)
    return names


def option_names() -> list[str]:
    """Every defence parameter: the flags in table order, then those set only from mappings."""
    names = list(FLAGS)
    for _, entry in DEFENCES.items():
        names += [n for n in entry.Params.names() if n not in names]
    return names


def _check_combination(params: Mapping[str, Params]) -> None:
    """At most one defence defines the loss, at most one the criterion, at most one corrects each training-set
    flaw, and no loss owner with label mixing."""
    by_stage = {s: [n for n, p in params.items() if DEFENCES.entry(n).stage_for(p) == s] for s in STAGES}
    if len(by_stage["criterion"]) > 1:
        a, b = by_stage["criterion"][:2]
        criteria = [n for n, e in DEFENCES.items() if e.stage == "criterion"]
        raise RobustEvalError(f"--defence {a},{b} is an incompatible combination: both replace the cross-entropy "
                              f"({_and(criteria)}); keep one of them")
    by_flaw: dict[str, list[str]] = {}
    for n in params:
        if DEFENCES.entry(n).corrects:
            by_flaw.setdefault(DEFENCES.entry(n).corrects, []).append(n)
    for flaw, fixers in by_flaw.items():
        if len(fixers) > 1:
            a, b = fixers[:2]
            raise RobustEvalError(f"--defence {a},{b} is an incompatible combination: both correct the {flaw} "
                                  "(together they over-correct, favouring the rare classes); keep one of them")
    if len(by_stage["loss"]) > 1:
        a, b = by_stage["loss"][:2]
        owners = [n for n, e in DEFENCES.items() if e.stage == "loss"] + \
                 [f"{n} {e.loss_when}" for n, e in DEFENCES.items() if e.loss_when]
        raise RobustEvalError(f"--defence {a},{b} is an incompatible combination: both define the training loss "
                              f"({_and(owners)}); keep one of them")
    if by_stage["mix"] and by_stage["loss"]:
        mixer, owner = by_stage["mix"][0], by_stage["loss"][0]
        raise RobustEvalError(f"--defence {mixer},{owner} is an incompatible combination: {owner} needs each image's "
                              f"own label, and {mixer} mixes labels; drop one of them")


@dataclass(frozen=True)
class DefenceOptions:
    """The selected defences, in ``--defence`` order, each with its own typed parameters.

    Attributes:
        params: defence name -> that defence's ``Params`` (``DEFENCES.entry(name).Params``).
        monitor_images: held-out training images for the per-epoch PGD-10 check of adversarial
            defences (capped at 10% of the training set by the loop).

    Example:
        >>> DefenceOptions.from_mapping({"defence": "pgd-at", "eps": 0.1, "steps": 3}).label
        'pgd-at'
    """

    params: Mapping[str, Params] = field(default_factory=dict)
    monitor_images: int = MONITOR_IMAGES

    def __post_init__(self) -> None:
        for name, p in self.params.items():
            entry = DEFENCES.entry(name)
            if not isinstance(p, entry.Params):
                raise TypeError(f"defence '{name}' takes {entry.Params.__qualname__}, got {type(p).__name__}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "monitor_images", positive("monitor_images", self.monitor_images, integer=True))
        _check_combination(self.params)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def label(self) -> str:
        """``"augmix,pgd-at"``, or ``"standard"`` without defences."""
        return ",".join(self.params) or "standard"

    @property
    def adversarial(self) -> bool:
        return any(DEFENCES.entry(n).adversarial for n in self.params)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DefenceOptions:
        """From ``{"defence": "augmix,pgd-at", "eps": 0.1, ...}`` (YAML or Python; None: the default).

        A parameter is given to every selected defence that has it (``eps`` to fgsm-rs, pgd-at
        and trades alike).

        Raises:
            RobustEvalError: unknown names or options, bad values, a parameter that no selected
                defence uses, or defences that cannot train together.
        """
        given = {str(k).replace("-", "_"): v for k, v in values.items() if v is not None}
        names = parse_names(given.pop("defence", None))
        monitor = given.pop("monitor_images", MONITOR_IMAGES)
        known = option_names()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise RobustEvalError(f"unknown defence option {unknown[0]!r}; valid: "
                                  f"{', '.join(['defence', *known, 'monitor_images'])}")
        params: dict[str, Params] = {}
        for name in names:
            entry = DEFENCES.entry(name)
            params[name] = entry.Params.from_mapping({k: v for k, v in given.items() if k in entry.Params.names()},
                                                     name)
        used = {k for p in params.values() for k in p.names()}
        unused = [k for k in known if k in given and k not in used]
        if unused:
            flag = flag_name(unused[0])
            owners = [n for n, e in DEFENCES.items() if unused[0] in e.Params.names()]
            raise RobustEvalError(f"{flag} is not used by --defence {','.join(names) or 'none'}; it applies to "
                                  f"{', '.join(owners)}: add one of them or drop {flag}")
        return cls(params, monitor_images=monitor)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DefenceOptions:
        """From the flags :func:`add_arguments` added; ``--defence`` may repeat (``a,b --defence c``)."""
        names: list[str] = []
        for part in (p.strip() for value in getattr(args, "defence", None) or [] for p in value.split(",")):
            if part and part not in names:
                names.append(part)
        values = {k: getattr(args, k, None) for k in (*FLAGS, "monitor_images")}
        return cls.from_mapping({"defence": names, **values})

    def to_args(self) -> list[str]:
        """Command-line flags that rebuild these options (parameters at their defaults are left out).

        Raises:
            RobustEvalError: a parameter that has no flag is set, or two defences differ on one flag.
        """
        values: dict[str, Any] = {}
        for name, p in self.params.items():
            for key, value in p.given().items():
                if values.setdefault(key, value) != value:
                    raise RobustEvalError(f"{flag_name(key)} differs between the selected defences (at {name}: "
                                          f"{value!r}); one command line cannot express it")
        out = ["--defence", ",".join(self.params)] if self.params else []
        out += flag_tokens(values, FLAGS)
        if self.monitor_images != MONITOR_IMAGES:
            out += ["--monitor-images", str(self.monitor_images)]
        return out


def _help(name: str, flag: Flag) -> str:
    """A flag's help: what it is, which defences use it, and each one's default."""
    users = [n for n, e in DEFENCES.items() if name in e.Params.flags()]
    text = f"{flag.help} (used by {', '.join(users)}"
    if flag.type is not None:
        by_default: dict[str, list[str]] = {}
        for user in users:
            f = next(f for f in dataclasses.fields(DEFENCES.entry(user).Params) if f.name == name)
            shown = f.metadata.get("default_text") if f.default is None else format(f.default, "g")
            by_default.setdefault(str(shown), []).append(user)
        if len(by_default) == 1:
            text += f"; default: {next(iter(by_default))}"
        else:
            text += "; default: " + ", ".join(f"{d} for {_and(u)}" for d, u in by_default.items())
    return (text + ")").replace("%", "%%")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """Add ``--defence`` and every registered defence's flags (each once), then ``--monitor-images``.

    Every flag defaults to None ("the defence's default"), so :meth:`DefenceOptions.from_args`
    can tell a flag the user set from one left alone.
    """
    group.add_argument("--defence", "--defense", action="append", default=None, metavar="NAME[,NAME]",
                       help=f"defences to train with, comma-separated or repeated: {', '.join(DEFENCES.list())} "
                            "(default: none)")
    for name, flag in FLAGS.items():
        if flag.type is None:
            group.add_argument(flag_name(name), action="store_true", default=None, help=_help(name, flag))
        else:
            group.add_argument(flag_name(name), type=flag.type, default=None, help=_help(name, flag))
    group.add_argument("--monitor-images", type=int_value, default=None,
                       help="held-out training images for the per-epoch PGD check of adversarial defences "
                            f"(default: {MONITOR_IMAGES}, at most 10%% of the training set)")
