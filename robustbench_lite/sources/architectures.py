"""Architectures by name: the zoo (``shufflenetv2``), ``torchvision:NAME`` and ``timm:NAME``.

:func:`build` makes any of them for a dataset (its classes and channels) as a
:class:`~robustbench_lite.models.NormalizedModel` taking [0,1] images; training, checkpoints and
state-dict loading all build through it, so every name works everywhere a model name does.
"""

from __future__ import annotations

from robustbench_lite import models
from robustbench_lite.models import NormalizedModel


def check(name: str) -> None:
    """Raise a one-line :class:`RobustEvalError` for a model name that cannot be built."""
    models.MODELS.entry(name)


def build(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 224,
    pretrained: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> NormalizedModel:
    """Build the architecture ``name`` for a dataset; see :func:`robustbench_lite.models.build`."""
    return models.build(name, num_classes, in_channels, input_size, pretrained=pretrained, mean=mean, std=std)
