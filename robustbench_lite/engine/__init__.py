"""The batched predict loop every suite uses: device placement, inference mode, progress, and the
run's forward path (:mod:`robustbench_lite.engine.plans`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from robustbench_lite.data import ImageDataset
from robustbench_lite.engine.plans import Plan
from robustbench_lite.errors import RobustEvalError

DEVICES = ("auto", "cpu", "cuda")
Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = device.split(":")[0]
    if base not in ("cpu", "cuda"):
        raise RobustEvalError(f"unknown device '{device}'; valid devices: {', '.join(DEVICES)} (or cuda:N)")
    if base == "cuda" and not torch.cuda.is_available():
        raise RobustEvalError("--device cuda requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


@torch.inference_mode()
def predict(
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int,
    device: torch.device,
    transform: Transform | None = None,
    desc: str = "predict",
    show_progress: bool = False,
    plan: Plan | None = None,
) -> torch.Tensor:
    """Logits (N x classes, float32, CPU) for every image of ``dataset``, in order.

    Args:
        transform: optional ``transform(images, indices) -> images`` applied on ``device`` to each
            [0,1] batch before the model (corruptions, shift transforms); ``indices`` are the
            images' dataset indices so per-image randomness does not depend on batching.
        plan: the run's forward path for ``model`` (:func:`~robustbench_lite.engine.plans.build_plan`);
            None: the module as given.
    """
    from robustbench_lite.distributed import run_units

    was_training = model.training
    model.eval()
    if plan is not None and plan.batch:  # the plan's own batch: per-image results do not depend on it
        batch_size = plan.batch
    try:
        n_batches = -(-len(dataset) // batch_size)
        idx = dataset.indices
        # Under torchrun each rank computes every world-th batch; the batches are the same as in one
        # process, so the gathered logits are bit for bit the single-process ones.
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

        def one_batch(k: int) -> torch.Tensor:
            with torch.inference_mode():  # per thread: a plan's workers start outside it
                sl = slice(k * batch_size, (k + 1) * batch_size)
                images = dataset.float_images(sl).to(device, non_blocking=True)
                if transform is not None:
                    images = transform(images, idx[sl])
                logits = forward(images).float().cpu()
            if bar is not None:
                bar.update(1)
            return logits

        forward = plan if plan is not None else model
        out = run_units(n_batches, one_batch, parallel=plan.workers if plan is not None else 1,
                        threads=plan.threads if plan is not None else None)
        if bar is not None:
            bar.close()
        return torch.cat(out) if out else torch.empty(0, dataset.num_classes)
    finally:
        model.train(was_training)


#: Test images a model's logits are checked on before any suite runs (all of them again in the clean pass).
FINITE_PROBE = 64


def check_finite(model: nn.Module, dataset: ImageDataset, batch_size: int, device: torch.device,
                 logits: torch.Tensor | None = None) -> None:
    """A model whose logits on clean test images are NaN or infinite is broken, not robust or fragile: one
    line before (or instead of) scoring it, naming how many images and parameters are affected."""
    if len(dataset) == 0:
        return
    if logits is None:
        logits = predict(model, dataset, batch_size, device, desc="probe")
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if not bad:
        return
    tensors = [t for t in model.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    broken = sum(int((~torch.isfinite(t.detach())).sum()) for t in tensors)
    total = sum(t.numel() for t in tensors)
    weights = (f"{broken:,} of its {total:,} weights and buffers are NaN or infinite" if broken
               else "its weights are finite, so an operation overflows (a layer, a cast to 16 bits, an input scale)"
               if total else "its weights are not visible from here")
    raise RobustEvalError(f"the model's logits are NaN or infinite on {bad} of {len(dataset)} clean test images "
                          f"({weights}): scores of a broken model would mean nothing; check the model file")
