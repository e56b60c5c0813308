"""A faster copy of a model for gradient-free queries: frozen TorchScript, optimised for inference.

Score-based attacks (Square) spend nearly all their time in forward passes of the same model on
the same image shape, thousands of times. On CPU, ``torch.jit.optimize_for_inference`` folds
batch norm into the convolutions, fuses activations and pre-packs the weights for oneDNN; on the
zoo's ShuffleNetV2 that is ~1.6x fewer seconds per forward pass at equal logits up to float
rounding (max difference ~3e-5 on logits of size ~10).

The copy only steers the search. Its logits decide which candidate a random search keeps, and a
rounding difference there only changes which of two nearly equal candidates is kept. The verdict
(fooled or not) is always taken again on the model itself: see :class:`attacks.square.Square`.

The copy is refused, and the model itself is queried, unless every check passes:

* the model runs on the CPU (on a GPU the eager model is already fast and the gain is small);
* it is a plain PyTorch module with parameters (not ONNX Runtime or another engine behind a
  module, which tracing would turn into a constant);
* it is deterministic: two eager passes agree exactly (a randomised defence must stay random);
* tracing, freezing and optimising succeed;
* on two probe batches of different sizes, one of them perturbed, the copy's logits match the
  model's within ``1e-4`` relative and give the same predicted class.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

#: Largest difference allowed between the copy's and the model's logits, relative to their scale.
TOLERANCE = 1e-4


def _runtime_behind(model: nn.Module) -> bool:
    """Whether a module hands its input to another engine (ONNX Runtime and the like)."""
    return any(getattr(m, "runs_outside_torch", False) for m in model.modules())


def optimised_copy(model: nn.Module, sample: torch.Tensor) -> nn.Module | None:
    """A frozen, inference-optimised TorchScript copy of ``model``, or ``None`` where unsafe.

    Args:
        model: an eval-mode classifier returning logits.
        sample: (N, C, H, W) images in [0, 1] of the shape the copy will be queried with
            (N >= 1); the probes are built from them.

    Returns:
        A module computing the same logits up to float rounding, or ``None`` (query the model).
    """
    if sample.device.type != "cpu" or sample.shape[0] == 0 or not isinstance(model, nn.Module):
        return None
    if next(model.parameters(), None) is None or _runtime_behind(model) or model.training:
        return None
    probes = _probes(sample)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes fixed at trace time
            expected = [model(p) for p in probes]
            if not torch.equal(expected[0], model(probes[0])):
                return None  # stochastic: every query must draw its own randomness
            traced = torch.jit.trace(model, probes[0], check_trace=False)
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            got = [fast(p) for p in probes]
    except Exception:  # noqa: BLE001 - any failure to trace or run means: query the model itself
        return None
    for want, have in zip(expected, got, strict=True):
        if not isinstance(have, torch.Tensor) or have.shape != want.shape or have.dtype != want.dtype:
            return None
        scale = 1.0 + float(want.abs().max())
        if float((have - want).abs().max()) > TOLERANCE * scale or not torch.equal(have.argmax(1), want.argmax(1)):
            return None
    return fast


def _probes(sample: torch.Tensor) -> list[torch.Tensor]:
    """Two batches of different sizes: the first images, and a perturbed, reversed set."""
    first = sample[: min(2, sample.shape[0])].detach().clone()
    gen = torch.Generator().manual_seed(0)
    more = sample[: min(5, sample.shape[0])].flip(0).repeat(2, 1, 1, 1)[:5].detach().clone()
    noise = (torch.rand(more.shape, generator=gen, dtype=more.dtype) - 0.5) * 0.2
    return [first, (more + noise).clamp(0, 1)]
