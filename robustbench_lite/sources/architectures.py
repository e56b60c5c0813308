"""Architectures by name: the zoo (``shufflenetv2``), ``torchvision:NAME`` and ``timm:NAME``.

A name is ``PREFIX:NAME`` for a model family in :data:`FAMILIES` (``torchvision``, ``timm``; see
:mod:`robustbench_lite.sources.families`), or a plain zoo name (the family with no prefix).
:func:`build` makes any of them for a dataset (its classes and channels) as a
:class:`~robustbench_lite.models.NormalizedModel` taking [0,1] images; training, checkpoints and
state-dict loading all build through it, so every name works everywhere a model name does.
"""

from __future__ import annotations

import fnmatch

from robustbench_lite import models
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.models import NormalizedModel
from robustbench_lite.registry import Registry, suggest
from robustbench_lite.sources.families import TIMM, TORCHVISION, ModelFamily, Rows

#: Model families by prefix; the zoo's prefix is ``""``.
FAMILIES: Registry[ModelFamily] = Registry("model family", "robust-eval list models")

ZOO = ModelFamily(
    "", "the zoo: torchvision networks with a small-input variant", models.MODELS.list, models.MODELS.entry,
    models.build, models.MODELS.describe,
)
for _family in (ZOO, TORCHVISION, TIMM):
    FAMILIES.register(_family.prefix, _family)


def _prefixes() -> list[str]:
    return [p for p in FAMILIES.list() if p]


def family(prefix: str, name: str) -> ModelFamily:
    """The family for ``prefix`` (``""``: the zoo); ``name``, the full name, is quoted in the error."""
    if prefix not in FAMILIES or (not prefix and ":" in name):
        forms = ", ".join(f"{p}:NAME" for p in _prefixes())
        raise RobustEvalError(
            f"unknown model family '{prefix}' in '{name}'.{suggest(prefix, _prefixes())} A model name is a zoo "
            f"name or one of {forms} (see 'robust-eval list models')"
        )
    return FAMILIES.entry(prefix)


def split(name: str) -> tuple[ModelFamily, str]:
    """``torchvision:resnet18`` -> (the torchvision family, ``resnet18``); a zoo name -> (the zoo, name)."""
    if not isinstance(name, str) or not name:
        raise RobustEvalError(f"a model name must be a non-empty string, got {name!r}; see 'robust-eval list models'")
    prefix, sep, rest = name.rpartition(":")
    found = family(prefix, name)
    if sep and not rest:
        raise RobustEvalError(f"'{name}' names no model: write {prefix}:NAME (see: robust-eval list models "
                              f"'{prefix}:*')")
    return found, rest


def _offers(family: ModelFamily, name: str) -> bool:
    try:
        family.check(name)
    except RobustEvalError:  # not there, or the family's package is not installed
        return False
    return True


def check(name: str) -> None:
    """Raise a one-line :class:`RobustEvalError` for a model name that cannot be built.

    When another family has the NAME (``resnet50`` is not in the zoo but ``torchvision:resnet50``
    is), the message says so.
    """
    found, rest = split(name)
    try:
        found.check(rest)
    except RobustEvalError as exc:
        elsewhere = [f"'{other.qualified(rest)}'" for other in (FAMILIES.entry(p) for p in FAMILIES.list())
                     if other is not found and _offers(other, rest)]
        if not elsewhere:
            raise
        raise RobustEvalError(f"{exc}; {' and '.join(elsewhere)} exist{'s' if len(elsewhere) == 1 else ''}") from None


def build(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 224,
    pretrained: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> NormalizedModel:
    """Build the architecture ``name`` for a dataset.

    Args:
        name: a zoo name (``robust-eval list models``), ``torchvision:NAME`` or ``timm:NAME``.
        num_classes: classes of the dataset; the classifier head is made for them.
        in_channels: channels of the dataset's images (1 or 3); the first convolution is adapted.
        input_size: the larger image side; up to 64 px the zoo selects its small-input variant
            (torchvision: and timm: networks are built as shipped).
        pretrained: start from ImageNet weights (zoo and torchvision:; timm: refuses, offline).
        mean, std: per-channel normalisation applied inside the model; default the pretrained
            weights' statistics, else 0.5 / 0.5 per channel.

    Returns:
        A :class:`NormalizedModel` taking [0,1] images with 1 or 3 channels.

    Example:
        >>> net = build("torchvision:mobilenet_v3_small", num_classes=10, in_channels=1, input_size=28)
    """
    check(name)
    found, rest = split(name)
    return found.build(rest, num_classes, in_channels, input_size, pretrained, mean, std)


def listing(pattern: str = "*") -> Rows:
    """The rows of ``robust-eval list models PATTERN``.

    A pattern with a prefix (``timm:mobilenetv3*``) lists that family's matching names; a plain one
    lists the matching zoo names, then one row per family whose prefix matches, saying how to list it.
    """
    prefix, sep, rest = pattern.rpartition(":")
    if sep:
        return family(prefix, pattern).listing(rest or "*")
    rows = ZOO.listing(pattern)
    return rows + [(FAMILIES.entry(p).usage, FAMILIES.entry(p).describe())
                   for p in _prefixes() if fnmatch.fnmatchcase(p, pattern)]
