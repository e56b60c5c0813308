"""Distributed evaluation and training on PyTorch's own engine (``torch.distributed``, ``torchrun``).

Launch any command under torchrun and it runs on every process, sharing the work::

    torchrun --nproc-per-node 2 -m robustbench_lite --suite clean,adversarial,corruptions --json out.json
    torchrun --nproc-per-node 4 -m robustbench_lite train --defence pgd-at --output pgd.pt
    # several machines: the same command on each, with a shared rendezvous
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id sweep42 -m robustbench_lite ...

:func:`setup` joins the process group that torchrun describes in the environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): gloo on CPU, nccl on CUDA, with one GPU
per local rank.

Evaluation splits work into *units* that do not depend on the number of processes: batches of the
predict loop, and chunks of :data:`ATTACK_CHUNK` batches for attacks. Unit k runs on rank
``k % world``, every unit computes exactly what a single process computes for it (randomness is
per image, keyed by dataset index), and the results are gathered in unit order on every rank. So
a run on N processes gives the single-process numbers exactly; rank 0 alone writes outputs.
Training wraps the model in DistributedDataParallel and gives each rank a slice of every batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from robustbench_lite.errors import RobustEvalError

T = TypeVar("T")

#: Attacks are evaluated in chunks of this many batches (PGD streams within a chunk). Part of the
#: definition of a result: changing it changes float summation order, not what is measured.
ATTACK_CHUNK = 4


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as part of a group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def main_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, a sink elsewhere: one voice on the console under torchrun."""
    return log if is_main() else (lambda message: None)


def setup(device: str = "auto") -> str:
    """Join the process group when launched by torchrun; returns the device this rank should use.

    ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under nccl. Without a launcher this does nothing.
    """
    if not launched() or active():
        return device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RobustEvalError("--device cuda under torchrun but no CUDA GPU is available; use --device cpu")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    try:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    except (RuntimeError, ValueError) as exc:
        raise RobustEvalError(f"could not join the torchrun process group ({str(exc).splitlines()[0]}); "
                              "check MASTER_ADDR/MASTER_PORT or --rdzv-endpoint") from None
    return "cpu" if device == "auto" else device


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if active():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (so all ranks stop at the same step)."""
    if not active():
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def run_units(n_units: int, work: Callable[[int], T], parallel: int = 1, threads: int | None = None) -> list[T]:
    """``[work(0), ..., work(n_units - 1)]``, unit k computed on rank ``k % world`` and gathered
    on every rank in unit order (a plain loop without a process group).

    Args:
        parallel: this rank's units are computed by this many threads at once (in unit order).
        threads: PyTorch's intra-op threads each of them uses meanwhile (restored afterwards).
    """
    if not active():
        return map_units(work, range(n_units), parallel, threads)
    import torch.distributed as dist

    units = range(rank(), n_units, world())
    mine = dict(zip(units, map_units(work, units, parallel, threads), strict=True))
    gathered: list[Any] = [None] * world()
    dist.all_gather_object(gathered, mine)
    merged: dict[int, T] = {}
    for part in gathered:
        merged.update(part)
    return [merged[k] for k in range(n_units)]


def map_units(work: Callable[[int], T], units: Sequence[int], parallel: int = 1,
              threads: int | None = None) -> list[T]:
    """``[work(k) for k in units]``, by ``parallel`` threads with ``threads`` intra-op threads each.

    PyTorch's intra-op thread count is one setting for the process, read by each new thread when it
    starts: it is set before the pool's threads start and restored after they end.
    """
    serial = parallel <= 1 or len(units) < 2
    before = torch.get_num_threads()
    if serial and threads in (None, before):
        return [work(k) for k in units]
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(threads or before)
    try:
        if serial:
            return [work(k) for k in units]
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="robust-eval-predict")
        try:
            return list(pool.map(work, units))
        finally:  # an error or Ctrl-C: the queued units are dropped, the running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        torch.set_num_threads(before)


def on_main(work: Callable[[], T]) -> T:
    """``work()`` on rank 0 only, its result sent to every rank (e.g. latency measurements)."""
    if not active():
        return work()
    import torch.distributed as dist

    box: list[Any] = [work() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def slice_for_rank(items: Sequence[T] | torch.Tensor) -> Any:
    """This rank's share of a training batch: a contiguous slice, sizes differing by at most one."""
    n, r, w = len(items), rank(), world()
    lo, hi = r * n // w, (r + 1) * n // w
    return items[lo:hi]
