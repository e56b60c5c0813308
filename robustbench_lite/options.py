"""Typed options: one frozen dataclass per suite (and per defence), parsed and validated once.

A field declared with :func:`option` carries its CLI flag, help text and parser, so one class gives:

* ``add_arguments(group)``: the argparse flags (kebab-case, ``None`` default = "the suite's default");
* ``from_args(args)``: the instance from parsed flags (only the flags the user set);
* ``from_mapping(values, where)``: the instance from YAML or the Python API (field names, flag names
  in snake or kebab case); unknown keys are an error that lists the valid ones;
* ``to_args()``: the flags that rebuild it (sweep launchers, the report's "reproduce" line);
* ``to_dict()``: the options the user set, as plain JSON values (results, sweep cache keys).

Values are parsed by the field's ``parse`` (one function for CLI strings and YAML values alike) and
checked across fields in ``__post_init__``. Every comma-separated list goes through
:func:`comma_list`.

Why not pydantic or jsonargparse: the CLI is argparse with project-wide one-line errors (bad
value, valid choices, fix); pydantic's multi-line validation reports and jsonargparse's own parser
would replace that contract for ~30 options, and both bring a dependency for what fifty lines of
dataclass metadata do here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from robustbench_lite.errors import RobustEvalError

O = TypeVar("O", bound="Options")


def comma_list(value: Any, flag: str, example: str, *, unique: bool = True) -> tuple[str, ...]:
    """``"a,b"``, ``["a", "b,c"]`` or ``("a",)`` -> ``("a", "b", "c")``; the one list parser.

    Empty items (``"a,,b"``, a trailing comma) and an empty list are errors that show an example;
    duplicates are dropped (first occurrence kept) unless ``unique`` is False.
    """
    items = [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise RobustEvalError(f"{flag} must be a comma-separated list, got {value!r}; e.g. {flag} {example}")
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise RobustEvalError(f"{flag}: {item!r} is not a name or number; e.g. {flag} {example}")
        for part in str(item).split(",") if isinstance(item, str) else [str(item)]:
            part = part.strip()
            if not part:
                shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                raise RobustEvalError(f"{flag} {shown!r} has an empty item; separate items with single commas, "
                                      f"e.g. {flag} {example}")
            if not unique or part not in out:
                out.append(part)
    return tuple(out)


#: The largest seed: what a 64-bit signed integer (the run history, NumPy's and torch's generators) holds.
MAX_SEED = 2**63 - 1


def is_int(value: Any, lo: int | None = None, hi: int | None = None) -> bool:
    """``value`` is an integer (a bool is not) in [lo, hi]: the check for values already typed (YAML, metadata)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (lo is None or value >= lo) and (hi is None or value <= hi))


def int_in(flag: str, lo: int, hi: int | None = None) -> Callable[[Any], int]:
    """A parser for one integer in [lo, hi]."""

    def parse(value: Any) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if isinstance(value, float) and number != value:
                raise ValueError
        except (TypeError, ValueError):
            raise RobustEvalError(f"{flag} takes an integer, got {value!r}; e.g. {flag} {lo}") from None
        if number < lo or (hi is not None and number > hi):
            valid = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
            raise RobustEvalError(f"{flag} must be an integer {valid}, got {number}; e.g. {flag} {lo}")
        return number

    return parse


def float_in(flag: str, lo: float, hi: float | None = None, *, lo_open: bool = True,
             hi_open: bool = False) -> Callable[[Any], float]:
    """A parser for one finite number between ``lo`` and ``hi`` (each end open or closed)."""

    def parse(value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        too_low = number <= lo if lo_open else number < lo
        too_high = hi is not None and (number >= hi if hi_open else number > hi)
        if not math.isfinite(number) or too_low or too_high:
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            valid = f"in {left}{lo:g}, {hi:g}{right}" if hi is not None else f"{'>' if lo_open else '>='} {lo:g}"
            raise RobustEvalError(f"{flag} must be a number {valid}, got {value!r}")
        return number

    return parse


def one_of(flag: str, choices: Iterable[str]) -> Callable[[Any], str]:
    """A parser for one of ``choices``."""
    valid = tuple(choices)

    def parse(value: Any) -> str:
        if value not in valid:
            raise RobustEvalError(f"{flag} {value!r} is not valid; choose one of {', '.join(valid)}")
        return str(value)

    return parse


@dataclass(frozen=True)
class Flag:
    """How one option field appears on the command line."""

    flag: str
    help: str
    parse: Callable[[Any], Any]
    fmt: Callable[[Any], str]
    metavar: str | None = None
    repeatable: bool = False
    example: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest exact float


def option(flag: str, help: str, *, example: str, default: Any = None, parse: Callable[[Any], Any] = str,
           fmt: Callable[[Any], str] = _fmt, metavar: str | None = None, repeatable: bool = False) -> Any:
    """A dataclass field for an option; the default None means "the suite's default" (resolved later).

    ``example`` is a valid non-default value as typed on the command line: the contract tests build
    every option of every suite from it and check that ``to_args`` gives it back.
    """
    flag_ = Flag(flag, help, parse, fmt, metavar, repeatable, example)
    return dataclasses.field(default=default, metadata={"flag": flag_})


class Options:
    """Mixin for frozen dataclasses whose fields are :func:`option` s.

    Subclasses set ``owner`` (what the options belong to, for messages: ``"adversarial suite"``)
    and may override ``validate`` for checks across fields.
    """

    owner: ClassVar[str] = "options"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None and value is not f.default and "flag" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["flag"].parse(value))
        self.validate()

    def validate(self) -> None:
        """Checks across fields; raise :class:`RobustEvalError`."""

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """Field name -> its flag."""
        return {f.name: f.metadata["flag"] for f in dataclasses.fields(cls) if "flag" in f.metadata}  # type: ignore[arg-type]

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        for flag in cls.flags().values():
            group.add_argument(flag.flag, dest=flag.dest, default=None, metavar=flag.metavar, help=flag.help,
                               action="append" if flag.repeatable else "store")

    @classmethod
    def from_args(cls: type[O], args: argparse.Namespace) -> O:
        given = {name: getattr(args, flag.dest, None) for name, flag in cls.flags().items()}
        return cls(**{name: value for name, value in given.items() if value is not None})

    @classmethod
    def from_mapping(cls: type[O], values: Mapping[str, Any] | None, where: str = "the options") -> O:
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise RobustEvalError(f"{cls.owner} options in {where} must be a mapping of option: value, "
                                  f"got {type(values).__name__}")
        flags = cls.flags()
        names = {name: name for name in flags} | {flag.dest: name for name, flag in flags.items()}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = names.get(str(key).replace("-", "_").lstrip("_"))
            if name is None:
                valid = ", ".join(sorted({flag.dest for flag in flags.values()}))
                raise RobustEvalError(f"unknown {cls.owner} option {key!r} in {where}; valid: {valid}")
            if value is not None:
                kwargs[name] = value
        return cls(**kwargs)

    def set_fields(self) -> list[str]:
        """The options the user set: not None and not the field's default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return [name for name in self.flags() if getattr(self, name) is not None
                and getattr(self, name) != defaults[name]]

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """The options the user set (``full``: every option, defaults included) as plain JSON values."""
        out: dict[str, Any] = {}
        for name in self.flags() if full else self.set_fields():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_args(self) -> list[str]:
        args: list[str] = []
        flags = self.flags()
        for name in self.set_fields():
            args += [flags[name].flag, flags[name].fmt(getattr(self, name))]
        return args
