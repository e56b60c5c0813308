"""How a run's forward passes are computed: the fastest path whose answers are eager PyTorch's.

A :class:`Plan` is chosen once per run from the model and its first batch of test images (the
probe). In ``auto`` mode the paths below are tried in order; a path is kept only when, on the
probe, it gives eager PyTorch's predictions with logits within :func:`tolerance` (the last bits
may differ: a different summation order), and a path that fails to build or disagrees is noted
and passed over, never used:

* ``traced``: ``torch.jit.trace`` at :data:`CPU_BATCH` images, frozen (BatchNorm folded into the
  convolutions, weights as constants) and, in fp32, ``optimize_for_inference`` (oneDNN's fused
  convolution kernels); bf16/fp16 keep the frozen graph in channels-last. Every batch is split
  and zero-padded to the traced size (:class:`~robustbench_lite.sources.runtimes.FixedBatch`), so
  the graph only ever sees the shape it was traced at; the padding rows are dropped. Building
  costs a second or more, so it is tried only for runs of at least :data:`TRACE_MIN_IMAGES`
  forward passes.
* ``channels-last``: the module itself with its weights and inputs in NHWC, the layout oneDNN's
  convolutions run fastest in.
* ``eager``: the module as given (``--inference eager`` asks for it; other runtimes, such as
  ONNX Runtime, always run their own graph this way).

On a CPU, batches are computed by ``workers`` threads at once, each with its share of PyTorch's
intra-op threads: small images give small convolutions that one thread keeps busy, and the
batches' corruption or shift transforms then overlap with the other worker's inference. Each
image's logits depend only on that image, so the results are the same in any split.

The precision (``--precision``) is the dtype the model computes in: :func:`cast` makes a copy whose
weights are in it and which takes and returns float32, as a compressed 16-bit checkpoint does.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.models import PRECISIONS

#: ``--inference``: ``auto`` picks the fastest path that agrees with eager; ``eager`` runs the module as given.
MODES = ("auto", "eager")
#: Forward passes a run must make for tracing (a second or more to build) to be tried.
TRACE_MIN_IMAGES = 20_000
#: Runtimes whose modules may be rewritten (traced, re-laid-out); any other runs as given.
REWRITABLE = ("pytorch", "torchscript")
#: The batch a rewritten path runs on a CPU (and a traced graph is traced at), whatever the run's
#: ``--batch-size``: two workers on batches of 128 small images beat one on 256 (each worker's
#: activations stay in its core's cache); each image's logits do not depend on its batch.
CPU_BATCH = 128


def precision_of(model: nn.Module) -> str:
    """The precision a model computes in: its first floating parameter's (or buffer's) dtype; fp32 without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return next((k for k, v in PRECISIONS.items() if v == tensor.dtype), "fp32")
    return "fp32"


class Cast(nn.Module):
    """``inner`` computing in ``dtype``: float32 images in (cast on entry), float32 logits out."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).float()


def cast(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` computing in ``precision`` (``model`` itself when it already does)."""
    if precision not in PRECISIONS:
        raise RobustEvalError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision_of(model) == precision:
        return model
    return Cast(copy.deepcopy(model), PRECISIONS[precision]).eval()


def tolerance(precision: str, reference: torch.Tensor) -> float:
    """How far a path's logits may be from eager's on the probe: a few units in the last place of the
    precision, scaled by the logits' size (fp32 1e-4, 16-bit 5e-2 of the largest logit, at least that)."""
    scale = max(1.0, float(reference.abs().max())) if reference.numel() else 1.0
    return (1e-4 if precision == "fp32" else 5e-2) * scale


@dataclass
class Plan:
    """A run's forward path: call it on a float32 [0,1] batch for float32 logits.

    Attributes:
        path: ``traced``, ``channels-last`` or ``eager``.
        precision: what the model computes in.
        workers: batches computed at once (threads of this process).
        threads: PyTorch intra-op threads each worker uses.
        build_seconds: what choosing and building the path cost (probe passes included).
        notes: why other paths were passed over, in words.
    """

    path: str
    precision: str
    forward: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    workers: int = 1
    threads: int = 1
    build_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: the batch size to feed it (None: the run's)
    batch: int | None = None
    #: the image shape (C, H, W) ``forward`` was built for; other shapes (another dataset's) go to ``eager``
    shape: tuple[int, ...] | None = None
    eager: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is not None and tuple(x.shape[1:]) != self.shape and self.eager is not None:
            return self.eager(x).float()
        return self.forward(x).float()

    def describe(self) -> dict[str, Any]:
        """What the results record (the build time goes to the run's timings)."""
        return {"path": self.path, "precision": self.precision, "workers": self.workers, "threads": self.threads,
                "batch": self.batch, "notes": list(self.notes)}


def eager_plan(model: nn.Module) -> Plan:
    """The module as given, one batch at a time on PyTorch's threads."""
    return Plan("eager", precision_of(model), model)


def _channels_last(model: nn.Module, probe: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if probe.dim() != 4:
        raise ValueError("channels-last needs NCHW images")
    moved = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return moved(x.contiguous(memory_format=torch.channels_last))

    return forward


def _traced(model: nn.Module, probe: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    from robustbench_lite.sources.runtimes import FixedBatch

    fp32 = precision_of(model) == "fp32"
    module = copy.deepcopy(model)
    example = probe
    if not fp32:  # 16-bit oneDNN convolutions run in NHWC; fp32's optimize_for_inference picks its own layout
        module = module.to(memory_format=torch.channels_last)
        example = probe.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():  # TorchScript's deprecation and tracer warnings: the probe check decides
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        graph = torch.jit.freeze(traced.eval())
        if fp32:
            graph = torch.jit.optimize_for_inference(graph)
    fixed = FixedBatch(graph, len(probe))
    if fp32:
        return fixed

    def forward(x: torch.Tensor) -> torch.Tensor:
        return fixed(x.contiguous(memory_format=torch.channels_last))

    return forward


Builder = Callable[[nn.Module, torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
#: The paths ``auto`` tries before eager, fastest first: each builder, and the forward passes a run must
#: make for its building cost to pay.
BUILDERS: dict[str, tuple[Builder, int]] = {"traced": (_traced, TRACE_MIN_IMAGES), "channels-last": (_channels_last, 0)}


def build_plan(model: nn.Module, probe: torch.Tensor, *, mode: str = "auto", images: int = 0,
               runtime: str = "pytorch", device: torch.device | None = None, threads: int | None = None) -> Plan:
    """The fastest path for ``model`` that agrees with eager on ``probe`` (a batch of the run's images).

    Args:
        model: in eval mode, on ``device``; computes in its own precision (see :func:`cast`).
        probe: the first batch of test images, at the run's batch size.
        mode: ``auto`` or ``eager``.
        images: how many forward passes the run will make (tracing is tried from :data:`TRACE_MIN_IMAGES`).
        runtime: the model's runtime; only :data:`REWRITABLE` ones are rewritten.
        device: where it runs; GPUs keep eager (their kernels are picked by cuDNN).
        threads: PyTorch's intra-op threads for the run (default: the current setting).
    """
    if mode not in MODES:
        raise RobustEvalError(f"unknown --inference {mode!r}; valid: {', '.join(MODES)}")
    start = time.perf_counter()
    threads = threads or torch.get_num_threads()
    plan = eager_plan(model)
    device = device or probe.device
    hooked = _has_hooks(model)
    if (mode == "eager" or runtime not in REWRITABLE or device.type != "cpu" or len(probe) == 0 or hooked
            or images <= 0):
        if mode == "auto" and runtime not in REWRITABLE:
            plan.notes.append(f"{runtime} runs its own graph")
        elif mode == "auto" and hooked:
            plan.notes.append("the module has forward hooks, which a copy or a traced graph would not run: as given")
        elif mode == "auto" and images <= 0:
            plan.notes.append("the suites make no full pass over the test set: as given")
        return _with_workers(plan, threads, images, len(probe), start)
    probe = probe[:CPU_BATCH]
    with torch.inference_mode():
        reference = model(probe).float()
        tol = tolerance(plan.precision, reference)
        for name, (builder, min_images) in BUILDERS.items():
            if images < min_images:
                plan.notes.append(f"{name}: not tried for {images:,} forward passes (worth it from {min_images:,})")
                continue
            try:
                forward = builder(model, probe)
                got = forward(probe).float()
            except Exception as exc:  # noqa: BLE001 - any failure to build or run means: not this path
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                plan.notes.append(f"{name}: could not be built ({first})")
                continue
            same = got.shape == reference.shape and bool((got.argmax(1) == reference.argmax(1)).all())
            diff = float((got - reference).abs().max()) if got.shape == reference.shape else float("inf")
            if not same or not diff <= tol:
                plan.notes.append(f"{name}: differs from eager on the probe (max logit difference {diff:.3g}, "
                                  f"allowed {tol:.3g}{'' if same else ', predictions changed'})")
                continue
            plan = Plan(name, plan.precision, forward, notes=plan.notes, batch=len(probe), shape=tuple(probe.shape[1:]),
                        eager=model)
            break
    return _with_workers(plan, threads, images, len(probe), start)


def _has_hooks(model: nn.Module) -> bool:
    """Forward hooks on the module or any submodule (or global ones): their side effects need the module itself."""
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _with_workers(plan: Plan, threads: int, images: int, batch: int, start: float) -> Plan:
    """Split the intra-op threads over workers when the run has batches enough to keep them busy."""
    batches = -(-images // batch) if batch else 0
    workers = threads if threads > 1 and batches >= 2 * threads and plan.path != "eager" else 1
    plan.workers, plan.threads = workers, max(1, threads // workers)
    plan.build_seconds = time.perf_counter() - start
    return plan
