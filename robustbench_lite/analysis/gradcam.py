"""Grad-CAM (Selvaraju et al. 2017): where in the image the model looks for a class.

For a target layer with activations ``A`` (K maps of h x w) and the class score ``y_c`` (the logit),
the map is ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``d y_c / d A_k``,
upsampled bilinearly to the image and scaled to [0, 1] per image (all zero when nothing is positive).

The target layer: ``layer`` by its dotted name (``--cam-layer``), else chosen from the model itself:
walking the model's blocks in execution order (descending into plain ``nn.Sequential`` containers
and into the one child of a wrapper, never into a residual block), the deepest block whose
output map is still at least :data:`MIN_SIDE` pixels on its shorter side. That is the last
convolutional stage at ImageNet sizes (7x7) and the last stage that still has a spatial layout on
small images (ShuffleNetV2's ``stage3`` at 28 px, whose ``conv5`` maps are 2x2).

Own code rather than captum's ``LayerGradCam``: a few lines, one batch of forward and backward
passes for any classes per image, and the layer rule above; tested against a network small enough
to compute by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError

#: The chosen layer's output maps are at least this many pixels on their shorter side, where possible.
MIN_SIDE = 4


def _blocks(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The model's blocks in registration order: children, descending into ``nn.Sequential`` containers and
    into the one child of a wrapper (the model adapters); any other module (a residual block) is one block."""
    out: list[tuple[str, nn.Module]] = []
    children = list(model.named_children())
    for name, child in children:
        full = f"{prefix}{name}"
        out.append((full, child))
        # a wrapper's one child is the whole model inside it: its blocks are the blocks
        if len(children) == 1 or isinstance(child, nn.Sequential):
            out.extend(_blocks(child, full + "."))
    return out


def choose_layer(model: nn.Module, sample: torch.Tensor) -> str:
    """The dotted name of the target layer for images like ``sample`` (see the module docstring)."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    handles = []
    for name, module in _blocks(model):
        def hook(_m: nn.Module, _args: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and name not in shapes:
                shapes[name] = tuple(out.shape)
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(sample[:1])
    finally:
        for h in handles:
            h.remove()
    # a container whose own blocks output maps is represented by them (its output is its last block's)
    candidates = [n for n in order if not any(o.startswith(n + ".") for o in order)]
    if not candidates:
        raise RobustEvalError("Grad-CAM needs a model with convolutional feature maps; this one has none "
                              "(pass --cam-layer NAME to name one)")
    large = [n for n in candidates if min(shapes[n][2:]) >= MIN_SIDE]
    return (large or candidates)[-1]


def check_layer(model: nn.Module, layer: str, differentiable: bool = True) -> None:
    """``--cam-layer`` names a layer of this model, which has gradients (one line otherwise)."""
    if not differentiable:
        raise RobustEvalError(f"--cam-layer {layer}: this model has no gradients (it runs in its own runtime), so "
                              "Grad-CAM cannot run on it; drop --cam-layer")
    try:
        model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in _blocks(model)]
        raise RobustEvalError(f"--cam-layer {layer!r} is not a layer of this model; its blocks: "
                              f"{', '.join(names[-12:])}") from None


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, H, W) Grad-CAM maps in [0, 1] of ``classes[i]`` for each image, at the images' resolution.

    Args:
        model: returns logits; its mode and parameters' ``requires_grad`` are left as they were.
        images: (N, C, H, W) float32 in [0, 1].
        classes: (N,) the class whose evidence each map shows.
        layer: the target layer's dotted name (``model.get_submodule(layer)``).
    """
    check_layer(model, layer)
    module = model.get_submodule(layer)
    captured: list[torch.Tensor] = []

    def keep(_m: nn.Module, _args: object, out: torch.Tensor) -> None:
        captured.append(out)

    handle = module.register_forward_hook(keep)
    training = model.training
    try:
        model.eval()
        with torch.enable_grad(), torch.inference_mode(False):
            x = images.detach().clone().requires_grad_(True)  # a graph even when every weight is frozen
            logits = model(x)
            if not captured or not isinstance(captured[0], torch.Tensor) or captured[0].dim() != 4:
                raise RobustEvalError(f"--cam-layer {layer!r} does not output feature maps (N, K, h, w)")
            acts = captured[0]
            score = logits.gather(1, classes.view(-1, 1).to(logits.device)).sum()
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        model.train(training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return torch.where(top > 1e-12, cam / top, torch.zeros_like(cam)).cpu()


def overlay(image: torch.Tensor, cam: torch.Tensor, strength: float = 0.55) -> torch.Tensor:
    """(3, H, W) the image in grey with the map in a blue-to-red scale over it (the report's heatmap cells)."""
    grey = image.float().mean(0, keepdim=True).expand(3, -1, -1)
    heat = torch.stack([cam.clamp(0, 1), 1 - (2 * cam - 1).abs(), 1 - cam.clamp(0, 1)])
    return ((1 - strength) * grey + strength * heat).clamp(0, 1)
