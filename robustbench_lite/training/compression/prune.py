"""Pruning, then a short fine-tune: ``prune:SPARSITY`` (global magnitude) and ``prune-channels:FRACTION``.

* ``prune:SPARSITY`` zeroes the given fraction of all convolution and linear weights, the smallest
  in magnitude across the whole network (global magnitude pruning; Han et al. 2015, the baseline
  of Blalock et al. 2020), keeps them zero through the fine-tune (``torch.nn.utils.prune``
  masks) and stores the dense weights with their zeros. The file and dense kernels do not shrink:
  the checkpoint records the ``sparsity`` a sparse runtime could use.
* ``prune-channels:FRACTION`` removes that fraction of the *internal* channels of every block
  where a convolution's output feeds, through batch norm and activations (and at most one
  depthwise convolution), only the next convolution (ShuffleNetV2's branches, ResNet's basic
  blocks, inverted residuals without squeeze-excitation): the filters with the smallest L1 norm
  go (Li et al. 2017), with their batch-norm channels, depthwise filters and the next layer's
  input channels. The network really shrinks (parameters, FLOPs, file, latency); the checkpoint
  records each resized layer (``shapes``) and loads into the zoo architecture rebuilt with them.

Both fine-tune with the parent's recipe and defences (:mod:`.finetune`) for ``--epochs`` (1),
at a tenth of the parent's peak rate unless ``--lr`` says otherwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.compression.base import Job, Log, Method, inherited, register_method
from robustbench_lite.training.compression.finetune import save_trained, train_from

#: Elementwise layers a channel passes through unchanged in position (pruning it prunes theirs).
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Hardtanh,
               nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Identity, nn.Dropout)
FINE_TUNE_LR_SCALE = 0.1


def _fraction(name: str, arg: str | None, what: str, example: str) -> float:
    if arg is None:
        raise RobustEvalError(f"--method {name} needs {what}, e.g. --method {name}:{example}")
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise RobustEvalError(f"--method {name}:{arg}: {what} must be a number in (0, 1), e.g. --method "
                              f"{name}:{example}")
    return value


def prunable_weights(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every convolution's and linear layer's weight, as ``(module, "weight")``."""
    from robustbench_lite.efficiency import WEIGHTED_LAYERS

    return [(m, "weight") for m in net.modules() if isinstance(m, WEIGHTED_LAYERS)]


def sparsity(net: nn.Module) -> float:
    """Fraction of the convolution and linear weights that are exactly zero."""
    from robustbench_lite.efficiency import weight_sparsity

    return weight_sparsity(net) or 0.0


@register_method
class Prune(Method):
    name = "prune"
    description = ("global magnitude pruning: zero the SPARSITY fraction of smallest conv/linear weights, fine-tune "
                   "with them held at zero (--epochs, --lr); a checkpoint (differentiable, same size)")
    suffix = ".pt"
    reads = ("epochs", "lr")

    def parse_arg(self, arg: str | None) -> dict[str, Any]:
        return {"sparsity": _fraction(self.name, arg, "the fraction of weights to zero", "0.5")}

    def make(self, parent: nn.Module, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Job) -> dict[str, Any]:
        from torch.nn.utils import prune

        child = copy.deepcopy(parent).float()
        targets = prunable_weights(child)
        if not targets:
            raise RobustEvalError(f"--method prune: {meta.get('model')} has no convolution or linear weights to prune")
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=settings["sparsity"])
        log(f"prune: {sparsity_of_masks(targets):.1%} of {sum(getattr(m, n).numel() for m, n in targets):,} "
            f"conv/linear weights zeroed (global magnitude); fine-tuning with the zeros held")
        trained, training = train_from(child, meta, settings, job, out, log, model=meta["model"],
                                       lr_scale=FINE_TUNE_LR_SCALE, default_epochs=1)
        for module, name in prunable_weights(trained):
            if prune.is_pruned(module):
                prune.remove(module, name)
        achieved = sparsity(trained)
        save_trained(out, trained, {**inherited(meta), "sparsity": round(achieved, 6)}, record, training)
        return {"sparsity": round(achieved, 4), "clean_accuracy": training["clean_accuracy"]}


def sparsity_of_masks(targets: list[tuple[nn.Module, str]]) -> float:
    masks = [getattr(m, f"{n}_mask") for m, n in targets]
    return sum(int((k == 0).sum()) for k in masks) / max(sum(k.numel() for k in masks), 1)


# -- structured: channel chains --------------------------------------------------------------------


@dataclass
class Chain:
    """Channels made by ``producer`` and used only by ``consumer`` (through ``norms`` and ``depthwise``)."""

    producer: str
    consumer: str
    norms: list[str] = field(default_factory=list)
    depthwise: str | None = None


def channel_chains(net: nn.Module) -> list[Chain]:
    """The prunable channel chains of ``net``, found on its ``torch.fx`` graph.

    A chain starts at a convolution (groups 1) whose output has one user, and follows single users
    through batch norms, elementwise layers and at most one depthwise convolution to a convolution
    (groups 1) that consumes the channels. Each layer in it must be called once in the graph.

    Raises:
        RobustEvalError: the network cannot be traced.
    """
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(net).graph
    except Exception as exc:  # noqa: BLE001 - any tracing failure: the network has no rule here
        from robustbench_lite.errors import first_line

        raise RobustEvalError(f"--method prune-channels cannot trace this network's graph ({first_line(exc)}); "
                              "use --method prune:SPARSITY (unstructured) instead") from None
    modules = dict(net.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module(node: Any) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def only_user(node: Any) -> Any:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def elementwise(node: Any) -> bool:
        m = module(node)
        if m is not None:
            return isinstance(m, ELEMENTWISE)
        fn = getattr(node.target, "__name__", str(node.target))
        return node.op in ("call_function", "call_method") and fn in ("relu", "relu_", "relu6", "hardswish", "silu",
                                                                       "gelu", "sigmoid", "tanh")

    chains = []
    for node in graph.nodes:
        producer = module(node)
        if not isinstance(producer, nn.Conv2d) or producer.groups != 1 or calls[node.target] != 1:
            continue
        chain = Chain(node.target, "")
        nxt = only_user(node)
        while nxt is not None:
            m = module(nxt)
            if m is not None and calls[nxt.target] != 1 and not isinstance(m, ELEMENTWISE):
                break
            if isinstance(m, nn.BatchNorm2d):
                chain.norms.append(nxt.target)
            elif isinstance(m, nn.Conv2d) and m.groups == 1:
                chain.consumer = nxt.target
                break
            elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and chain.depthwise is None:
                chain.depthwise = nxt.target
            elif not elementwise(nxt):
                break
            nxt = only_user(nxt)
        if chain.consumer:
            chains.append(chain)
    return chains


def _take(module: nn.Module, keep: torch.Tensor, *, out: bool = False, inp: bool = False, depthwise: bool = False
          ) -> nn.Module:
    """A copy of a Conv2d or BatchNorm2d keeping channels ``keep`` (output, input or both for depthwise)."""
    if isinstance(module, nn.BatchNorm2d):
        new = nn.BatchNorm2d(len(keep), module.eps, module.momentum, module.affine, module.track_running_stats)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, name, None) is not None:
                    getattr(new, name).copy_(getattr(module, name)[keep])
            if module.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(module.num_batches_tracked)
        return new.train(module.training)  # a new module starts in training mode: keep the network's
    assert isinstance(module, nn.Conv2d)
    n_in = len(keep) if (inp or depthwise) else module.in_channels
    n_out = len(keep) if (out or depthwise) else module.out_channels
    new_conv = nn.Conv2d(n_in, n_out, module.kernel_size, module.stride, module.padding, module.dilation,
                         len(keep) if depthwise else module.groups, module.bias is not None, module.padding_mode)
    with torch.no_grad():
        w = module.weight
        w = w[keep] if (out or depthwise) else w
        w = w[:, keep] if inp else w
        new_conv.weight.copy_(w)
        if module.bias is not None:
            new_conv.bias.copy_(module.bias[keep] if (out or depthwise) else module.bias)
    return new_conv.train(module.training)


def prune_channels(net: nn.Module, fraction: float, prefix: str = "") -> tuple[dict[str, dict[str, int]], int, int]:
    """Remove ``fraction`` of each chain's channels from ``net`` in place (smallest L1 filter norm first).

    Returns:
        The resized layers' shapes (paths prefixed with ``prefix``), channels removed, channels in
        the chains before.

    Raises:
        RobustEvalError: no prunable chain (a layer type with no rule here).
    """
    from robustbench_lite.models import _set

    chains = channel_chains(net)
    if not chains:
        raise RobustEvalError("--method prune-channels found no channels it can remove in this network (no "
                              "convolution feeding only another through batch norm and activations); use --method "
                              "prune:SPARSITY (unstructured) instead")
    shapes: dict[str, dict[str, int]] = {}
    removed = total = 0
    for chain in chains:
        producer = net.get_submodule(chain.producer)
        width = producer.out_channels
        kept = max(1, width - int(round(width * fraction)))
        order = producer.weight.detach().abs().flatten(1).sum(1).argsort(descending=True)
        keep = order[:kept].sort().values
        removed += width - kept
        total += width
        _set(net, chain.producer, _take(producer, keep, out=True))
        for path in chain.norms:
            _set(net, path, _take(net.get_submodule(path), keep))
        if chain.depthwise is not None:
            _set(net, chain.depthwise, _take(net.get_submodule(chain.depthwise), keep, depthwise=True))
        _set(net, chain.consumer, _take(net.get_submodule(chain.consumer), keep, inp=True))
        for path in [chain.producer, *chain.norms, *([chain.depthwise] if chain.depthwise else []), chain.consumer]:
            m = net.get_submodule(path)
            shapes[prefix + path] = ({"num_features": m.num_features} if isinstance(m, nn.BatchNorm2d) else
                                     {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups})
    return shapes, removed, total


@register_method
class PruneChannels(Method):
    name = "prune-channels"
    description = ("structured pruning: remove the FRACTION of internal channels with the smallest filters, fine-tune "
                   "(--epochs, --lr); a smaller network as a checkpoint (differentiable)")
    suffix = ".pt"
    reads = ("epochs", "lr")

    def parse_arg(self, arg: str | None) -> dict[str, Any]:
        return {"fraction": _fraction(self.name, arg, "the fraction of channels to remove", "0.3")}

    def make(self, parent: nn.Module, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Job) -> dict[str, Any]:
        child = copy.deepcopy(parent).float()
        before = sum(p.numel() for p in child.parameters())
        shapes, removed, total = prune_channels(child.net, settings["fraction"], prefix="net.")
        after = sum(p.numel() for p in child.parameters())
        log(f"prune-channels: {removed} of {total} internal channels removed; parameters {before:,} -> {after:,} "
            f"({after / before:.2f}x); fine-tuning")
        trained, training = train_from(child, meta, settings, job, out, log, model=meta["model"],
                                       lr_scale=FINE_TUNE_LR_SCALE, default_epochs=1)
        record["channels"] = {"removed": removed, "of": total, "parameters_before": before, "parameters": after}
        save_trained(out, trained, {**inherited(meta), "shapes": {**meta.get("shapes", {}), **shapes}}, record,
                     training)
        return {"channels_removed": removed, "parameters": after, "parameters_before": before,
                "clean_accuracy": training["clean_accuracy"]}

