"""A faster copy of a model for attacks that query it thousands of times: frozen TorchScript.

Attacks spend nearly all their time in passes through the same model on the same image shape:
Square's 5,000 forward passes per image, APGD's 100 forward and backward passes per image and
target class. On CPU, ``torch.jit.freeze`` folds batch norm into the convolutions and inlines the
weights; for forward-only queries ``torch.jit.optimize_for_inference`` also fuses activations and
pre-packs the weights for oneDNN. On the zoo's ShuffleNetV2 (Fashion-MNIST, 250 images a batch,
2 threads) that is ~1.6x fewer seconds per forward pass and ~1.4x per forward and backward pass,
at equal logits and input gradients up to float rounding (~1e-4 relative).

The copy only steers the search. Its logits and gradients decide where an attack steps and which
candidate a random search keeps; a rounding difference there changes which of two nearly equal
points is taken. The verdict (fooled or not) is always taken again on the model itself: see
:class:`attacks.square.Square` and :class:`attacks.apgd.APGD`.

The copy is refused, and the model itself is used, unless every check passes:

* the model runs on the CPU (on a GPU the eager model is already fast and the gain is small);
* it is a plain PyTorch module with parameters (not ONNX Runtime or another engine behind a
  module, which tracing would turn into a constant);
* it is deterministic: two eager passes agree exactly (a randomised defence must stay random);
* tracing and freezing (and optimising, for forward-only copies) succeed;
* on two probe batches of different sizes, one of them perturbed, the copy's logits match the
  model's within ``1e-4`` relative and give the same predicted class; for a copy that is
  differentiated, the input gradients of a fixed random mix of the logits match within ``1e-3``
  relative as well.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

#: Largest difference allowed between the copy's and the model's logits, relative to their scale.
TOLERANCE = 1e-4
#: Largest difference allowed between the copy's and the model's input gradients, relative to their scale.
GRADIENT_TOLERANCE = 1e-3


def _runtime_behind(model: nn.Module) -> bool:
    """Whether a module hands its input to another engine (ONNX Runtime and the like)."""
    return any(getattr(m, "runs_outside_torch", False) for m in model.modules())


def optimised_copy(model: nn.Module, sample: torch.Tensor, *, gradients: bool = False) -> nn.Module | None:
    """A frozen TorchScript copy of ``model``, or ``None`` where unsafe.

    Args:
        model: an eval-mode classifier returning logits.
        sample: (N, C, H, W) images in [0, 1] of the shape the copy will be queried with
            (N >= 1); the probes are built from them.
        gradients: the copy will be differentiated with respect to its input: it is frozen but
            not optimised for inference (whose oneDNN layouts have no backward pass), and its
            input gradients are checked too (default False).

    Returns:
        A module computing the same logits (and input gradients) up to float rounding, or
        ``None`` (use the model).
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
            fast = torch.jit.freeze(traced.eval())
            if not gradients:
                fast = torch.jit.optimize_for_inference(fast)
            got = [fast(p) for p in probes]
        if gradients and not all(
            _same(*g) for g in zip(_gradients(model, probes), _gradients(fast, probes), strict=True)
        ):
            return None
    except Exception:  # noqa: BLE001 - any failure to trace or run means: use the model itself
        return None
    for want, have in zip(expected, got, strict=True):
        if not isinstance(have, torch.Tensor) or have.shape != want.shape or have.dtype != want.dtype:
            return None
        if not _same(want, have, TOLERANCE) or not torch.equal(have.argmax(1), want.argmax(1)):
            return None
    return fast


def _same(want: torch.Tensor, have: torch.Tensor, tolerance: float = GRADIENT_TOLERANCE) -> bool:
    """Equal shapes and values within ``tolerance`` relative to the larger of 1 and ``want``'s largest entry."""
    if have.shape != want.shape:
        return False
    return float((have - want).abs().max()) <= tolerance * (1.0 + float(want.abs().max()))


def _gradients(model: nn.Module, probes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Input gradients of a fixed random mix of each probe's logits (what an attack differentiates)."""
    out = []
    gen = torch.Generator().manual_seed(1)
    for p in probes:
        x = p.clone().requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logits = model(x)
            mix = torch.randn(logits.shape, generator=gen, dtype=logits.dtype)
            (grad,) = torch.autograd.grad((logits * mix).sum(), x)
        out.append(grad)
    return out


def _probes(sample: torch.Tensor) -> list[torch.Tensor]:
    """Two batches of different sizes: the first images, and a perturbed, reversed set."""
    first = sample[: min(2, sample.shape[0])].detach().clone()
    gen = torch.Generator().manual_seed(0)
    more = sample[: min(5, sample.shape[0])].flip(0).repeat(2, 1, 1, 1)[:5].detach().clone()
    noise = (torch.rand(more.shape, generator=gen, dtype=more.dtype) - 0.5) * 0.2
    return [first, (more + noise).clamp(0, 1)]


class SplitBatches:
    """Work on a batch split over worker threads, each with one intra-op thread (CPU).

    On a CPU, PyTorch's intra-op threads share out each operator; on a small network at a small
    image size most operators are too small for that to pay, and two threads each running half the
    batch on their own go faster than two threads on the whole batch (the optimised copy of the
    zoo's ShuffleNetV2, 28 px, 250 images: ~1.3x for forward passes). While the context is open
    the process runs one intra-op thread per worker; the setting is put back on exit.

    Args:
        workers: threads (default: PyTorch's intra-op thread count); 1 runs everything in the
            calling thread.

    Example:
        >>> with SplitBatches() as split:
        ...     parts = split.map(lambda rows: fast(batch[rows]), len(batch))
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers if workers is not None else torch.get_num_threads())
        self._pool: Any = None
        self._threads = torch.get_num_threads()

    def __enter__(self) -> SplitBatches:
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="robust-eval-split")
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(self._threads)

    def map(self, fn: Any, n: int) -> list[Any]:
        """``fn(rows)`` for consecutive slices of ``range(n)``, one per worker (one slice when small)."""
        if self._pool is None or n < 2 * self.workers:
            return [fn(slice(0, n))]
        bounds = [round(i * n / self.workers) for i in range(self.workers + 1)]
        return list(self._pool.map(fn, [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]))


class SplitQueries(SplitBatches):
    """A model's forward passes (no gradients) split over :class:`SplitBatches` workers; callable.

    Example:
        >>> with SplitQueries(fast) as query:
        ...     logits = query(batch)
    """

    def __init__(self, model: nn.Module, workers: int | None = None) -> None:
        super().__init__(workers)
        self.model = model

    def __enter__(self) -> SplitQueries:
        super().__enter__()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def run(rows: slice) -> torch.Tensor:
            with torch.no_grad():
                return self.model(x[rows])

        parts = self.map(run, x.shape[0])
        return parts[0] if len(parts) == 1 else torch.cat(parts)
