"""One small generic registry per extension point (models, datasets, suites, attacks, ...).

Duplicate names raise (torchvision's ``register_model`` behaviour, not timm's warning), ``list``
takes fnmatch patterns and returns sorted names, and an unknown name raises a
:class:`RobustEvalError` that lists the valid names and suggests the closest one.

This module is a leaf: it imports nothing from the rest of the project, so ``attacks`` and
``corruptions`` can use it without depending on the evaluator.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from robustbench_lite.errors import RobustEvalError

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name -> entry mapping with decorator registration.

    An entry is usually a factory (class or function); :meth:`get` calls it with ``params``.
    :meth:`entry` returns the registered object itself.

    Args:
        kind: what the registry holds, singular ("model", "attack"); used in error messages.
        list_command: the CLI command that lists the entries, quoted in error messages.
    """

    def __init__(self, kind: str, list_command: str | None = None) -> None:
        self.kind = kind
        self.list_command = list_command or f"robust-eval list {kind}s"
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def entry(self, name: str) -> T:
        """The registered object for ``name``; unknown names raise with the valid choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise RobustEvalError(self.unknown_message(name)) from None

    def get(self, name: str, **params: Any) -> Any:
        """Build the entry: call the registered factory with ``params``."""
        factory = self.entry(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} '{name}' is not callable")
        return factory(**params)  # type: ignore[operator]

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.list())
        return (
            f"unknown {self.kind} '{name}'.{suggest(name, self._entries)} "
            f"Valid {self.kind}s: {valid} (see '{self.list_command}')"
        )

    def describe(self, name: str) -> str:
        """One line about ``name``: the entry's ``describe()``, else its ``description``, else the
        first line of its docstring."""
        entry = self.entry(name)
        describe = getattr(entry, "describe", None)
        if callable(describe):
            return str(describe())
        description = getattr(entry, "description", None)
        if isinstance(description, str):
            return description
        doc = (getattr(entry, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    def usage(self, name: str) -> str:
        """How ``name`` is written where it is used: the entry's ``usage`` (``imagefolder:PATH``), else the name."""
        usage = getattr(self.entry(name), "usage", None)
        return usage if isinstance(usage, str) else name

    def listing(self, pattern: str | Iterable[str] = "*") -> list[tuple[str, str]]:
        """``(usage, description)`` of each entry matching ``pattern``, sorted: ``robust-eval list``'s rows."""
        return [(self.usage(n), self.describe(n)) for n in self.list(pattern)]

    def list(self, pattern: str | Iterable[str] = "*") -> list[str]:
        """Sorted names matching one fnmatch pattern or any of several."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(n for n in self._entries if any(fnmatch.fnmatchcase(n, p) for p in patterns))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

