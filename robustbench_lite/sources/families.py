"""Model families named ``PREFIX:NAME``: ``torchvision:NAME`` and ``timm:NAME``.

A :class:`ModelFamily` answers what :mod:`robustbench_lite.sources.architectures` asks of every
family (the zoo included): the names it offers, whether it can build one, how to build it for a
dataset, and one line about each name for ``robust-eval list models``.

Both families here build the network as the library ships it (its own stem: unlike the zoo there
is no small-input variant), adapted to the dataset the way the zoo is: the classifier head sized for
the dataset's classes, the first convolution made for its channels (grey stems sum the RGB
filters), and the whole wrapped in :class:`~robustbench_lite.models.NormalizedModel` so it takes
[0,1] images and normalises inside. Networks that need a minimum input size (the size their
weights' metadata gives, or timm's ``fixed_input_size``) upsample smaller images inside the model.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torchvision
from torch import nn

from robustbench_lite import models
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.models import NormalizedModel
from robustbench_lite.registry import suggest

Rows = list[tuple[str, str]]
Stats = tuple[tuple[float, ...], tuple[float, ...]]
TIMM_INSTALL = "pip install 'robustbench-lite[timm]'"


@dataclass(frozen=True)
class ModelFamily:
    """A family of architectures named ``PREFIX:NAME`` (the zoo's names have no prefix).

    Attributes:
        prefix: the part of the name before ':' (``""`` for the zoo).
        description: one line about the family for ``robust-eval list models``.
        names: ``names(pattern)``: the sorted NAMEs matching an fnmatch pattern; raises
            :class:`RobustEvalError` when the family's optional package is missing.
        check: ``check(NAME)`` raises a one-line :class:`RobustEvalError` for a NAME it cannot build.
        build: ``build(NAME, num_classes, in_channels, input_size, pretrained, mean, std)`` ->
            :class:`NormalizedModel` taking [0,1] images.
        describe_name: one line about NAME for the listing.
    """

    prefix: str
    description: str
    names: Callable[[str], list[str]]
    check: Callable[[str], object]
    build: Callable[..., NormalizedModel]
    describe_name: Callable[[str], str]

    @property
    def usage(self) -> str:
        """How the family's names are written: ``torchvision:NAME``."""
        return f"{self.prefix}:NAME" if self.prefix else "NAME"

    def qualified(self, name: str) -> str:
        """The full model name for NAME: ``torchvision:resnet18``."""
        return f"{self.prefix}:{name}" if self.prefix else name

    def describe(self) -> str:
        """The family's line in ``robust-eval list models``: what it is and how to list its names."""
        return f"{self.description}; list them: robust-eval list models '{self.prefix}:*'" if self.prefix \
            else self.description

    def listing(self, pattern: str = "*") -> Rows:
        """``(full name, description)`` of each NAME matching ``pattern``."""
        return [(self.qualified(n), self.describe_name(n)) for n in self.names(pattern)]


def unknown_name(prefix: str, name: str, choices: list[str]) -> RobustEvalError:
    """The one-line error for a NAME the family ``prefix`` does not have."""
    return RobustEvalError(
        f"unknown {prefix} model '{name}'.{suggest(name, choices)} See: robust-eval list models '{prefix}:*'"
    )


def first_conv(net: nn.Module) -> str:
    """Dotted path of the network's first convolution (its stem: the one that sees the image)."""
    for path, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return path
    raise RobustEvalError(f"{type(net).__name__} has no Conv2d to adapt to the image channels")


def doc_line(obj: Any, limit: int = 100) -> str:
    """The first paragraph of ``obj``'s docstring as one line (no final full stop), reST links reduced
    to their titles."""
    paragraph = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
    paragraph = re.sub(r"`([^`<]+?)\s*<[^>]*>`_*", r"\1", paragraph)
    paragraph = re.sub(r":\w+:`~?([^`]+)`", r"\1", paragraph).rstrip(".")
    return paragraph if len(paragraph) <= limit else paragraph[: limit - 3].rstrip() + "..."


# ---------------------------------------------------------------------------------------------
# torchvision:NAME


@dataclass(frozen=True)
class _BuilderNeeds:
    """What one torchvision builder needs beyond ``get_model(name, weights=None, num_classes=...)``.

    Attributes:
        kwargs: ``kwargs(min_size)``: extra builder arguments.
        pretrained_stats: the mean/std its pretrained weights expect, when not their transforms' own.
    """

    kwargs: Callable[[int], dict[str, Any]]
    pretrained_stats: Stats | None = None


# GoogLeNet and Inception v3 return (logits, aux logits) in training mode unless aux_logits=False, and
# their pretrained weights expect ``transform_input``, which turns ImageNet-normalised input into
# (x - 0.5) / 0.5: normalising with 0.5 / 0.5 is the same, and is kept in checkpoints as plain mean/std.
_INCEPTION = _BuilderNeeds(lambda size: {"aux_logits": False, "init_weights": True}, ((0.5,) * 3, (0.5,) * 3))
#: Keyed by fnmatch pattern over builder names. Fixed-size transformers are built for the size their
#: weights were trained at, as torchvision's builders do when given weights (vit_h_14: 518, not 224).
_NEEDS: dict[str, _BuilderNeeds] = {
    "googlenet": _INCEPTION,
    "inception_v3": _INCEPTION,
    "vit_*": _BuilderNeeds(lambda size: {"image_size": size}),
    "maxvit_t": _BuilderNeeds(lambda size: {"input_size": (size, size)}),
}
_NO_NEEDS = _BuilderNeeds(lambda size: {})


def _tv_needs(name: str) -> _BuilderNeeds:
    return next((needs for pattern, needs in _NEEDS.items() if fnmatch.fnmatchcase(name, pattern)), _NO_NEEDS)


def _tv_names(pattern: str = "*") -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models, include=pattern))


def _tv_check(name: str) -> None:
    if name not in _tv_names():
        raise unknown_name("torchvision", name, _tv_names())


def _tv_weights(name: str) -> Any:
    """The DEFAULT weights entry of builder ``name`` (its metadata holds min_size, params, ...)."""
    return torchvision.models.get_model_weights(name).DEFAULT


def tv_min_size(name: str) -> int:
    """The smallest image side torchvision's weights for ``name`` take (``meta["min_size"]``)."""
    return max(_tv_weights(name).meta.get("min_size", (1, 1)))


def _load_tv_pretrained(net: nn.Module, weights: Any, name: str) -> None:
    """Load ImageNet weights into ``net`` (built for the dataset's classes): every tensor but the head's.

    Tensors whose shape differs (the classifier, sized for the dataset) keep their fresh
    initialisation; tensors the network does not have (auxiliary heads turned off) are dropped.
    """
    state = models.load_torchvision_weights(weights, f"torchvision:{name}")
    own = net.state_dict()
    # Old weight files predate BatchNorm's num_batches_tracked; BatchNorm starts it at 0 then.
    absent = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if absent:
        raise RobustEvalError(
            f"pretrained weights {weights.url} do not fit torchvision:{name} (no '{absent[0]}'); "
            f"delete {models.torchvision_weights_file(weights)} and let torchvision download it again"
        )
    net.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)


def _tv_build(
    name: str, num_classes: int, in_channels: int = 3, input_size: int = 224, pretrained: bool = False,
    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
) -> NormalizedModel:
    """Build torchvision's ``name`` for a dataset (``input_size`` does not change the network)."""
    _tv_check(name)
    models.check_dataset_shape(num_classes, in_channels)
    weights = _tv_weights(name)
    min_size = tv_min_size(name)
    needs = _tv_needs(name)
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **needs.kwargs(min_size))
    stats = None
    if pretrained:
        _load_tv_pretrained(net, weights, name)
        transforms = weights.transforms()
        stats = needs.pretrained_stats or (tuple(transforms.mean), tuple(transforms.std))
    models.adapt_in_channels(net, first_conv(net), in_channels)
    mean, std = models.normalisation(mean, std, in_channels, stats)
    return NormalizedModel(net, in_channels, mean, std, min_size)


def _tv_describe(name: str) -> str:
    meta = _tv_weights(name).meta
    facts = [f"{meta['num_params'] / 1e6:.1f}M params"] if "num_params" in meta else []
    if tv_min_size(name) > 1:
        facts.append(f"min {tv_min_size(name)} px")
    text = doc_line(torchvision.models.get_model_builder(name))
    return f"{text} ({', '.join(facts)})" if facts else text


TORCHVISION = ModelFamily(
    "torchvision", "any torchvision classification model",
    _tv_names, _tv_check, _tv_build, _tv_describe,
)


# ---------------------------------------------------------------------------------------------
# timm:NAME (optional extra)


def import_timm(name: str) -> Any:
    """The timm module, or a one-line error saying how to install it (``name``: what needed it)."""
    try:
        import timm
    except ImportError:
        raise RobustEvalError(f"timm:{name} needs the optional package timm: {TIMM_INSTALL}") from None
    return timm


def _timm_names(pattern: str = "*") -> list[str]:
    return sorted(import_timm(pattern).list_models(pattern))


def _timm_check(name: str) -> None:
    timm = import_timm(name)
    # A tagged name (resnet18.a1_in1k) picks one pretrained config: its tag must exist too.
    if not timm.is_model(name) or ("." in name and not timm.list_pretrained(name)):
        raise unknown_name("timm", name, timm.list_models())


def timm_min_size(net: nn.Module) -> int:
    """The input size a timm network needs when its config says ``fixed_input_size``, else 1."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return max(cfg["input_size"][1:]) if cfg.get("fixed_input_size") and cfg.get("input_size") else 1


def _timm_build(
    name: str, num_classes: int, in_channels: int = 3, input_size: int = 224, pretrained: bool = False,
    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
) -> NormalizedModel:
    """Build timm's ``name`` for a dataset (``input_size`` does not change the network)."""
    timm = import_timm(name)
    _timm_check(name)
    models.check_dataset_shape(num_classes, in_channels)
    if pretrained:
        # timm fetches weights from the Hugging Face hub and may unpickle them; neither happens here.
        raise RobustEvalError(
            f"timm:{name} cannot start from pretrained weights here (timm downloads them from the Hugging Face "
            "hub); drop --pretrained to train from scratch, or evaluate your own trained weights with --checkpoint"
        )
    # timm makes the stem for in_chans itself (summing RGB filters for grey, as the zoo does).
    net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    mean, std = models.normalisation(mean, std, in_channels, None)
    return NormalizedModel(net, in_channels, mean, std, timm_min_size(net))


def _timm_describe(name: str) -> str:
    timm = import_timm(name)
    entry = timm.models.model_entrypoint(name)
    module = entry.__module__.rsplit(".", 1)[-1]
    cfg = timm.models.get_pretrained_cfg(name)
    text = doc_line(entry)
    facts = [module] if text else []  # the module names the family when the docstring does not
    if cfg is not None and cfg.input_size:
        facts.append(f"{'fixed' if cfg.fixed_input_size else 'default'} input {max(cfg.input_size[1:])} px")
    return f"{text or module} ({', '.join(facts)})" if facts else text or module


TIMM = ModelFamily(
    "timm", f"any timm model (optional extra: {TIMM_INSTALL})",
    _timm_names, _timm_check, _timm_build, _timm_describe,
)

