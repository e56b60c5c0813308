"""Wrappers that let shipped models run under the suites: fixed-batch graphs and transfer attacks.

* :class:`FixedBatch`: a graph exported for one batch size (``torch.export`` or ONNX exported with
  one example batch, as users often do) gets every batch split and the last one zero-padded; the
  padding rows' outputs are dropped, so results do not depend on the run's batch size.
* :class:`Transfer`: a model without gradients (ONNX Runtime) attacked through a differentiable
  surrogate: the forward value is the target's logits (so every attack's success test, early exit
  and robust accuracy are judged on the target), the gradient is the surrogate's.
"""

from __future__ import annotations

import torch
from torch import nn


class FixedBatch(nn.Module):
    """Run ``core`` in batches of exactly ``batch`` images (split, last one zero-padded)."""

    def __init__(self, core: nn.Module, batch: int) -> None:
        super().__init__()
        self.core = core
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n == self.batch:
            return self.core(x)
        outs = []
        for start in range(0, n, self.batch):
            part = x[start:start + self.batch]
            k = part.shape[0]
            if k < self.batch:
                part = torch.cat([part, part.new_zeros((self.batch - k, *part.shape[1:]))])
            outs.append(self.core(part)[:k])
        return torch.cat(outs)


class Exported(nn.Module):
    """A ``torch.export`` program's module: its train/eval behaviour was fixed when it was exported.

    ``ExportedProgram.module()`` refuses ``train()``/``eval()``; the suites (and attacks) switch
    modes around every call, so this wrapper keeps the flag for itself and leaves the graph alone.
    """

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        self.graph = program_module

    def train(self, mode: bool = True) -> Exported:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


class _StraightThrough(torch.autograd.Function):
    """Forward: the target's logits exactly; backward: the gradient goes to the surrogate's logits."""

    @staticmethod
    def forward(ctx, surrogate_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return target_logits.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


class Transfer(nn.Module):
    """The target's predictions with the surrogate's gradients (a transfer attack's model).

    Without gradients the target's logits are returned unchanged and the surrogate is not run.
    """

    def __init__(self, target: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.target = target
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.target(x.detach())
        if not (torch.is_grad_enabled() and x.requires_grad):
            return target
        surrogate = self.surrogate(x)
        if surrogate.shape != target.shape:
            from robustbench_lite.errors import RobustEvalError

            raise RobustEvalError(f"the surrogate returns {tuple(surrogate.shape[1:])} logits per image but the "
                                  f"model returns {tuple(target.shape[1:])}; pass a surrogate for the same classes")
        return _StraightThrough.apply(surrogate, target.to(surrogate.dtype))
