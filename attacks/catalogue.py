"""The attack catalogue: every attack by name, native or from a provider.

Two kinds of name, both registered in :mod:`attacks.base`:

* native attacks, classes in :data:`~attacks.base.ATTACKS` (``fgsm``, ``fgsm-rs``, ``pgd``, ...);
* ``PREFIX:NAME`` for the families in :data:`~attacks.base.PROVIDERS`, e.g. ``torchattacks:APGD``
  from :mod:`attacks.torchattacks_adapter`.

This module sits above the modules that register entries and imports them, so a name is known
as soon as the catalogue is; those modules never import the catalogue.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Sequence
from typing import Any

import attacks.apgd  # noqa: F401  (registers apgd-ce, apgd-dlr, apgd-t)
import attacks.autoattack  # noqa: F401  (registers the ensemble)
import attacks.pgd  # noqa: F401  (registers the native attacks)
import attacks.square  # noqa: F401  (registers square)
import attacks.torchattacks_adapter  # noqa: F401  (registers the torchattacks: provider)
from attacks.base import ATTACKS, PROVIDERS, Attack, AttackProvider
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import suggest


def _provider(name: str) -> AttackProvider | None:
    """The provider whose prefix starts ``name``, or None for a native name."""
    return next((PROVIDERS.entry(prefix) for prefix in PROVIDERS.list() if name.startswith(prefix)), None)


def build(name: str, **params: Any) -> Attack:
    """An attack by registry name, or ``PREFIX:NAME`` for a provider's attack (``torchattacks:NAME``).

    Args:
        name: ``robust-eval list attacks`` names (``fgsm``, ``fgsm-rs``, ``pgd``) or
            ``torchattacks:AutoAttack``, ``torchattacks:APGD``, ...
        params: constructor arguments (``eps`` is required; ``norm``, ``steps``, ``alpha``...).

    Example:
        >>> attack = build("pgd", eps=8 / 255, steps=10)
        >>> aa = build("torchattacks:AutoAttack", eps=8 / 255)  # needs torchattacks installed
    """
    if not isinstance(name, str):
        raise RobustEvalError(f"attack name must be a string, got {name!r}")
    provider = _provider(name)
    if provider is not None:
        return provider.build(name[len(provider.prefix) :], **params)
    cls = ATTACKS.entry(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise RobustEvalError(
            f"attack '{name}' has no parameter {unknown[0]!r}.{suggest(unknown[0], valid)} "
            f"Valid parameters: {', '.join(valid)}"
        )
    if "eps" not in params:
        raise RobustEvalError(
            f"attack '{name}' needs eps; pass eps=..., e.g. robustbench_lite.data.default_eps(dataset, norm)"
        )
    return cls(**params)


def available(pattern: str | Sequence[str] = "*") -> list[str]:
    """Sorted names matching fnmatch ``pattern`` (or any of several): native attacks, plus each
    provider's ``PREFIX:NAME`` where the provider can offer them here (torchattacks when installed)."""
    names = ATTACKS.list(pattern)
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    for prefix in PROVIDERS.list():
        try:
            extra = [prefix + n for n in PROVIDERS.entry(prefix).names()]
        except RobustEvalError:  # e.g. the provider's optional library is not installed
            extra = []
        names += [n for n in extra if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return sorted(names)


def describe(name: str) -> str:
    """One line about an attack for ``robust-eval list attacks``: its docstring's first line, or
    its provider's description."""
    provider = _provider(name)
    if provider is not None:
        note = provider.notes.get(name[len(provider.prefix):])
        return f"{provider.description}: {note}" if note else provider.description
    lines = (ATTACKS.entry(name).__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def note(name: str) -> str | None:
    """What a user must know about an attack from a provider (``torchattacks:AutoAttack`` is not AutoAttack)."""
    provider = _provider(name)
    return provider.notes.get(name[len(provider.prefix):]) if provider is not None else None


__all__ = ["available", "build", "describe", "note"]
