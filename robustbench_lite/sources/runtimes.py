"""Wrappers that let shipped models run under the suites: fixed-batch graphs and transfer attacks.

* :class:`FixedBatch`: a graph exported for one batch size (``torch.export`` or ONNX exported with
  one example batch, as users often do) gets every batch split and the last one zero-padded; the
  padding rows' outputs are dropped, so results do not depend on the run's batch size.
* :class:`Transfer`: a model without gradients (ONNX Runtime) attacked through a differentiable
  surrogate: the forward value is the target's logits (so every attack's success test, early exit
  and robust accuracy are judged on the target), the backward pass runs through the surrogate.
"""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError


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
    """Forward: the target's logits exactly (dtype included); backward: the gradient goes to the surrogate's logits."""

    @staticmethod
    def forward(ctx, surrogate_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.surrogate_dtype = surrogate_logits.dtype
        return target_logits.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        # A half-precision surrogate takes its gradient in its own dtype; the target's logits were
        # never cast, so a success test sees exactly what the target predicts.
        return grad.to(ctx.surrogate_dtype), None


class Transfer(nn.Module):
    """The target's predictions with the surrogate's gradients (a transfer attack's model).

    Calling it returns the target's logits, unchanged, so an attack's success test, its early
    exit and the robust accuracy are the target's. When the input requires a gradient the
    surrogate runs too and the backward pass goes through it: the gradient of a loss L is
    ``J_surrogate(x)^T dL/dz`` with ``dL/dz`` taken at the target's logits z. For cross-entropy
    that is ``J_surrogate^T (softmax(z_target) - onehot(y))``: the surrogate's input geometry
    steered by the target's scores (the scores are what a forward pass of the target reveals;
    no target gradient is used). With the target's own network as the surrogate this is exactly
    the white-box gradient, up to the float differences between the two runtimes.

    Without gradients (clean passes, success checks, score-based attacks) the surrogate is not run.

    Args:
        target: the evaluated model, adapted to [0,1] images at the dataset's size.
        surrogate: a differentiable model adapted the same way (its own input size and normalisation
            inside), returning logits in the dataset's class order.
        source: the surrogate in results and reports (its file; default: its class name).
    """

    def __init__(self, target: nn.Module, surrogate: nn.Module, source: str | None = None) -> None:
        super().__init__()
        self.target = target
        self.surrogate = surrogate
        self.source = source or type(surrogate).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.target(x.detach())
        if not (torch.is_grad_enabled() and x.requires_grad):
            return target
        surrogate = self.surrogate(x)
        if surrogate.shape != target.shape:
            raise RobustEvalError(f"the surrogate returns {tuple(surrogate.shape[1:])} logits per image but the "
                                  f"model returns {tuple(target.shape[1:])}; pass a surrogate for the same classes")
        return _StraightThrough.apply(surrogate, target.to(surrogate.device))
