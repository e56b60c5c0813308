"""Model zoo: torchvision classifiers adapted to the dataset, normalising inside, safe checkpoints.

Every model built here consumes float images in [0, 1] (NCHW, 1 or 3 channels) and returns
logits: :class:`NormalizedModel` wraps the torchvision network with the channel adapter and the
mean/std normalisation, so attacks and corruptions work in pixel space (RobustBench's
``normalize_model`` pattern).

Checkpoints (the project's file format) live in :mod:`robustbench_lite.sources.checkpoints`;
any other model source in :mod:`robustbench_lite.sources`.

Small-input variant: torchvision's ImageNet stems downsample 4x (stride-2 conv + stride-2 max
pool) or 2x before the first block, which on 28-64 px images leaves 1-2 px feature maps at the
end. For inputs up to :data:`SMALL_INPUT_MAX` px each entry's ``small_input`` hook sets the stem
convolution's stride to 1 (keeping its weights, so pretrained stems still apply) and, for
ResNet18, drops the stem max pool (the CIFAR ResNet convention). Each hook's docstring says what
it changes. The variant is recorded in checkpoints, so a checkpoint rebuilds the same network.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.pixels import LUMA
from robustbench_lite.registry import Registry

SMALL_INPUT_MAX = 64
#: A model's precision by name -> the dtype its weights and arithmetic are in (``--precision``, a compressed
#: checkpoint's ``meta["precision"]``, ``robust-eval compress --method fp16|bf16``).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Registry entry: how to build one torchvision architecture and adapt it.

    Attributes:
        name: registry name.
        builder: the torchvision constructor (called with ``weights=None``).
        weights: torchvision weights enum member name for ``--pretrained`` (``Enum.MEMBER``).
        stem: dotted path of the first convolution (channel adaptation and small-input stride).
        head: dotted path of the classifier layer replaced for the dataset's classes.
        small_input: hook applied for inputs up to :data:`SMALL_INPUT_MAX` px.
        reference: the paper.
        min_input_size: smallest image side the network can take (its pooling stages need it);
            smaller images are upsampled bilinearly inside the wrapped model.
    """

    name: str
    builder: Callable[..., nn.Module]
    weights: str
    stem: str
    head: str
    small_input: Callable[[nn.Module, ModelSpec], None]
    reference: str
    extra: dict[str, Any] = field(default_factory=dict)
    min_input_size: int = 1

    def describe(self) -> str:
        """The line ``robust-eval list models`` shows: the paper."""
        return self.reference


MODELS: Registry[ModelSpec] = Registry("model", "robust-eval list models")


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def resize_modules(model: nn.Module, shapes: dict[str, dict[str, int]]) -> None:
    """Give named convolutions and batch norms the channel counts of a structurally pruned copy.

    ``shapes`` maps a module path to its new sizes: ``in_channels``, ``out_channels`` and
    ``groups`` for a ``Conv2d``, ``num_features`` for a ``BatchNorm2d`` (what ``robust-eval
    compress --method prune-channels`` records). Everything else about the layer (kernel, stride,
    padding, bias) is kept, so the pruned weights load into the rebuilt network.

    Raises:
        RobustEvalError: a path the network does not have, or a layer of another type.
    """
    for path, size in shapes.items():
        try:
            old = model.get_submodule(path)
        except AttributeError:
            raise RobustEvalError(f"pruned layer {path!r} is not in this network; the checkpoint was made for "
                                  "another architecture") from None
        dtype = next(old.parameters(), torch.empty(0)).dtype
        if isinstance(old, nn.Conv2d) and set(size) == {"in_channels", "out_channels", "groups"}:
            new: nn.Module = nn.Conv2d(size["in_channels"], size["out_channels"], old.kernel_size, old.stride,
                                       old.padding, old.dilation, size["groups"], old.bias is not None,
                                       old.padding_mode)
        elif isinstance(old, nn.BatchNorm2d) and set(size) == {"num_features"}:
            new = nn.BatchNorm2d(size["num_features"], old.eps, old.momentum, old.affine, old.track_running_stats)
        else:
            raise RobustEvalError(f"pruned layer {path!r} is a {type(old).__name__} recorded as {sorted(size)}; "
                                  "the checkpoint was made for another architecture")
        _set(model, path, new.to(dtype).train(old.training))


def stem_stride_1(model: nn.Module, spec: ModelSpec) -> None:
    """Small-input variant: the stem convolution runs at stride 1 (weights kept)."""
    conv = _get(model, spec.stem)
    conv.stride = (1, 1)


def stem_stride_1_no_maxpool(model: nn.Module, spec: ModelSpec) -> None:
    """Small-input variant (CIFAR ResNet convention): stem conv at stride 1, stem max pool removed."""
    stem_stride_1(model, spec)
    _set(model, spec.extra["maxpool"], nn.Identity())


def _register(spec: ModelSpec) -> None:
    MODELS.register(spec.name, spec)


tvm = torchvision.models
for _spec in (
    ModelSpec("mobilenetv3_small", tvm.mobilenet_v3_small, "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
              "features.0.0", "classifier.3", stem_stride_1, "Howard et al. 2019, Searching for MobileNetV3"),
    ModelSpec("mobilenetv3_large", tvm.mobilenet_v3_large, "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
              "features.0.0", "classifier.3", stem_stride_1, "Howard et al. 2019, Searching for MobileNetV3"),
    ModelSpec("mobilenetv2", tvm.mobilenet_v2, "MobileNet_V2_Weights.IMAGENET1K_V1",
              "features.0.0", "classifier.1", stem_stride_1, "Sandler et al. 2018, MobileNetV2"),
    ModelSpec("resnet18", tvm.resnet18, "ResNet18_Weights.IMAGENET1K_V1",
              "conv1", "fc", stem_stride_1_no_maxpool, "He et al. 2016, Deep Residual Learning",
              {"maxpool": "maxpool"}),
    ModelSpec("squeezenet", tvm.squeezenet1_1, "SqueezeNet1_1_Weights.IMAGENET1K_V1",
              "features.0", "classifier.1", stem_stride_1, "Iandola et al. 2016, SqueezeNet (v1.1)",
              min_input_size=16),
    ModelSpec("efficientnetv2_s", tvm.efficientnet_v2_s, "EfficientNet_V2_S_Weights.IMAGENET1K_V1",
              "features.0.0", "classifier.1", stem_stride_1, "Tan & Le 2021, EfficientNetV2"),
    ModelSpec("efficientnet_b0", tvm.efficientnet_b0, "EfficientNet_B0_Weights.IMAGENET1K_V1",
              "features.0.0", "classifier.1", stem_stride_1, "Tan & Le 2019, EfficientNet"),
    ModelSpec("shufflenetv2", tvm.shufflenet_v2_x1_0, "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
              "conv1.0", "fc", stem_stride_1, "Ma et al. 2018, ShuffleNet V2 (x1.0)"),
    ModelSpec("shufflenetv2_x0_5", tvm.shufflenet_v2_x0_5, "ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1",
              "conv1.0", "fc", stem_stride_1, "Ma et al. 2018, ShuffleNet V2 (x0.5)"),
):
    _register(_spec)


class NormalizedModel(nn.Module):
    """[0,1] images in, logits out: channel adapter, then (x - mean) / std, then the network.

    Grey input to a 3-channel network is repeated over channels; RGB input to a 1-channel network
    is converted with ITU-R 601 luma weights. Images smaller than ``min_size`` are upsampled
    bilinearly first (inside the model, so attacks and corruptions still act on the real pixels).
    A model cast to a 16-bit float (``.to(torch.bfloat16)``, a compressed checkpoint) computes in
    it: images are cast in, logits cast back to float32.
    """

    def __init__(self, net: nn.Module, in_channels: int, mean: tuple[float, ...], std: tuple[float, ...],
                 min_size: int = 1) -> None:
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.min_size = min_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c != self.in_channels:
            if c == 1 and self.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            elif c == 3 and self.in_channels == 1:
                w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * w).sum(dim=1, keepdim=True)
            else:
                raise RobustEvalError(f"model takes 1- or 3-channel images, got {c} channels")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            scale = self.min_size / min(h, w)
            size = (max(self.min_size, round(h * scale)), max(self.min_size, round(w * scale)))
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.mean.dtype != x.dtype:  # a reduced-precision copy: compute in its type, answer in float32
            return self.net((x.to(self.mean.dtype) - self.mean) / self.std).float()
        return self.net((x - self.mean) / self.std)


def adapt_in_channels(net: nn.Module, path: str, in_channels: int) -> None:
    """Re-make the convolution at ``path`` (the network's first) for ``in_channels`` input channels.

    A 3-channel stem becomes a 1-channel one by summing its RGB filters; any other mismatch is left
    to :class:`NormalizedModel`'s channel adapter.
    """
    conv = _get(net, path)
    if not isinstance(conv, nn.Conv2d) or conv.in_channels == in_channels or in_channels != 1:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        # Summing RGB filters is exactly what feeding a grey image as three equal channels does,
        # so pretrained stems keep their meaning.
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set(net, path, new)


def _replace_head(net: nn.Module, spec: ModelSpec, num_classes: int) -> None:
    head = _get(net, spec.head)
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes)
    elif isinstance(head, nn.Conv2d):  # SqueezeNet's classifier is a 1x1 convolution
        new = nn.Conv2d(head.in_channels, num_classes, kernel_size=1)
    else:  # pragma: no cover - guards a wrong spec
        raise TypeError(f"{spec.name}: head {spec.head} is {type(head).__name__}")
    _set(net, spec.head, new)
    if hasattr(net, "num_classes"):
        net.num_classes = num_classes


def torchvision_weights_file(weights: Any) -> Path:
    """Where torch hub caches the file of a torchvision weights entry (``ResNet18_Weights.IMAGENET1K_V1``)."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_file(spec: ModelSpec) -> tuple[Any, Path]:
    """The torchvision weights entry for ``spec`` and where torch hub caches its file."""
    weights = torchvision.models.get_weight(spec.weights)
    return weights, torchvision_weights_file(weights)


def load_torchvision_weights(weights: Any, label: str) -> dict[str, torch.Tensor]:
    """A torchvision weights entry's state dict: the hub cache (read as data only), else a download.

    Args:
        weights: the weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``.
        label: the model name the error messages give (``'resnet18'``, ``'torchvision:resnet18'``).
    """
    path = torchvision_weights_file(weights)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RobustEvalError(
                f"pretrained weights file {path} for '{label}' is damaged ({type(exc).__name__}); "
                f"delete it and download {weights.url} again"
            ) from None
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise RobustEvalError(
            f"pretrained weights for '{label}' not found at {path} and the download failed "
            f"({type(exc).__name__}); download {weights.url} and put it at {path} "
            "(the torch hub cache: $TORCH_HOME/hub/checkpoints)"
        ) from None


def load_pretrained_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API: the hub cache, else a download."""
    return load_torchvision_weights(weights_file(spec)[0], spec.name)


def check_dataset_shape(num_classes: int, in_channels: int) -> None:
    """Raise a one-line error for a class count or channel count no model here can be built for."""
    if in_channels not in (1, 3):
        raise RobustEvalError(f"in_channels must be 1 or 3, got {in_channels}")
    if num_classes < 2:
        raise RobustEvalError(f"num_classes must be at least 2, got {num_classes}")


def normalisation(
    mean: tuple[float, ...] | None, std: tuple[float, ...] | None, in_channels: int,
    pretrained_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std a model normalises with: the given ones, else the pretrained weights' statistics
    (``pretrained_stats``, RGB; averaged over channels for grey input), else 0.5 / 0.5 per channel."""
    if mean is None or std is None:
        if pretrained_stats is not None:
            mean, std = pretrained_stats
            if in_channels == 1:
                mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        else:
            mean, std = (0.5,) * in_channels, (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise RobustEvalError(f"mean/std need {in_channels} values, got {mean} / {std}")
    return tuple(mean), tuple(std)


def build(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 224,
    pretrained: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> NormalizedModel:
    """Build a registered model for a dataset.

    Args:
        name: registry name (``robust-eval list models``).
        num_classes: classes of the dataset; the classifier head is replaced to match.
        in_channels: channels of the dataset's images (1 or 3); the stem is adapted.
        input_size: the larger image side; up to 64 px selects the small-input variant.
        pretrained: start from torchvision's ImageNet weights (stem and body; the head is new).
        mean, std: per-channel normalisation applied inside the model; default ImageNet's
            statistics for pretrained weights, else 0.5 / 0.5 per channel.

    Returns:
        A :class:`NormalizedModel` taking [0,1] images with 1 or 3 channels.
    """
    spec = MODELS.entry(name)
    check_dataset_shape(num_classes, in_channels)
    net = spec.builder(weights=None)
    if pretrained:
        net.load_state_dict(load_pretrained_state(spec))
    adapt_in_channels(net, spec.stem, in_channels)
    _replace_head(net, spec, num_classes)
    if input_size <= SMALL_INPUT_MAX:
        spec.small_input(net, spec)
    mean, std = normalisation(mean, std, in_channels, (IMAGENET_MEAN, IMAGENET_STD) if pretrained else None)
    return NormalizedModel(net, in_channels, mean, std, spec.min_input_size)
