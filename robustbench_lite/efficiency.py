"""Efficiency: parameters, FLOPs, weights size, latency, throughput and peak memory.

Timing follows timm's ``benchmark.py``: warm up, synchronise, ``time.perf_counter``, a flat dict.
FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs).
Peak memory is the high-water mark of tensor allocations during one forward pass at the
throughput batch size: ``torch.cuda.max_memory_allocated`` on GPU, the profiler's allocation
timeline on CPU (both exclude the weights, reported separately as ``size_mb``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustbench_lite.results import SuiteResult


@dataclass
class EfficiencyResult(SuiteResult):
    params: int
    trainable_params: int
    flops: int | None
    macs: int | None
    size_mb: float
    input_shape: list[int]
    latency_ms: float
    latency_ms_p90: float
    throughput: float
    throughput_batch_size: int
    peak_memory_mb: float
    memory_method: str
    device: str
    threads: int
    file_mb: float | None = None
    runtime: str = "pytorch"
    #: Fraction of exactly-zero weights in the convolution and linear layers (a pruned model's);
    #: None where the weights are not PyTorch tensors (ONNX Runtime).
    sparsity: float | None = None
    #: the spread of the timed runs: latency's interquartile range (ms) and the throughput of the
    #: slowest and fastest timed batch (images/s)
    latency_ms_iqr: float | None = None
    throughput_range: list[float] | None = None
    #: the machine's 1-minute load average before and after the timings, its CPUs and the threads used;
    #: ``busy`` when the load (without this run) was well above the CPUs the threads leave free
    load: dict[str, Any] | None = None
    #: joules per image over the throughput runs, from the machine's energy counter (``energy_source``);
    #: None where there is none (``energy_source`` then says so): never an estimate
    energy_j_per_image: float | None = None
    energy_source: str = "not measured"

    def summary(self) -> dict[str, float | int | str]:
        return {"params (M)": round(self.params / 1e6, 3),
                "MFLOPs": round(self.flops / 1e6, 2) if self.flops is not None else "n/a",
                "size MB": round(self.size_mb, 2), "latency ms": round(self.latency_ms, 2),
                "images/s": round(self.throughput, 1),
                "peak mem MB": round(self.peak_memory_mb, 1) if math.isfinite(self.peak_memory_mb) else "n/a"}


def count_params(model: nn.Module) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


#: The layers whose weights sparsity counts (and magnitude pruning prunes).
WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weight_sparsity(model: nn.Module) -> float | None:
    """Fraction of the convolution and linear weights that are exactly zero (None: the model has none)."""
    weights = [m.weight for m in model.modules()
               if isinstance(m, WEIGHTED_LAYERS) and isinstance(m.weight, torch.Tensor)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else None


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (batch included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())


def weights_size_mb(model: nn.Module) -> float:
    """Size of the serialised state dict (what a checkpoint of the weights costs on disk)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: A machine counts as busy for timing when its load before the run exceeds the CPUs not used by
#: this run's threads by this many (other work competes for the cores the timings use).
BUSY_MARGIN = 0.5


def machine_load(threads: int) -> dict[str, Any] | None:
    """The 1-minute load average, the CPU count and the threads the timings use; None where the OS
    has no load average (Windows)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return {"before": round(load, 2), "cpus": os.cpu_count() or 1, "threads": threads}


def is_busy(load: dict[str, Any] | None) -> bool:
    """Other work was running: the load before the timings exceeds the CPUs this run's threads leave free."""
    if load is None:
        return False
    return bool(load["before"] > max(0, load["cpus"] - load["threads"]) + BUSY_MARGIN)


class EnergyCounter:
    """Cumulative energy of the machine's CPU packages (Linux powercap/RAPL, ``energy_uj``) or of an
    NVIDIA GPU (NVML), read before and after a timed stretch; :attr:`source` says which, or why none."""

    POWERCAP = "/sys/class/powercap"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.files: list[tuple[str, int]] = []  # (energy_uj file, its wrap-around range)
        self._nvml: Any = None
        self.source = "not measurable here: no readable energy counter (Linux powercap/RAPL for CPUs, NVML for " \
                      "NVIDIA GPUs)"
        if device.type == "cuda":
            self._open_nvml()
        else:
            self._open_powercap()

    def _open_powercap(self) -> None:
        import glob

        for zone in sorted(glob.glob(os.path.join(self.POWERCAP, "*"))):
            name = os.path.basename(zone)
            # top-level packages only (intel-rapl:0, not its sub-zones intel-rapl:0:0, which they include)
            if name.count(":") != 1:
                continue
            energy, limit = os.path.join(zone, "energy_uj"), os.path.join(zone, "max_energy_range_uj")
            try:
                with open(energy) as f:
                    int(f.read())
                with open(limit) as f:
                    wrap = int(f.read())
            except (OSError, ValueError):
                continue
            self.files.append((energy, wrap))
        if self.files:
            self.source = f"powercap/RAPL ({len(self.files)} package{'s' if len(self.files) > 1 else ''})"

    def _open_nvml(self) -> None:
        try:
            import pynvml  # optional: nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:  # noqa: BLE001 - no NVML, no permission, a GPU without the counter: not measurable
            return
        self._nvml = (pynvml, handle)
        self.source = "NVML total energy consumption"

    def read(self) -> list[int] | None:
        """The counters now (microjoules), or None without any."""
        if self._nvml is not None:
            pynvml, handle = self._nvml
            return [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) * 1000]  # mJ -> uJ
        if not self.files:
            return None
        out = []
        for path, _ in self.files:
            with open(path) as f:
                out.append(int(f.read()))
        return out

    def joules(self, before: list[int] | None, after: list[int] | None) -> float | None:
        """Energy between two readings (a counter that wrapped around once is unwrapped)."""
        if before is None or after is None:
            return None
        wraps = [w for _, w in self.files] if self._nvml is None else [0]
        total = 0
        for a, b, wrap in zip(before, after, wraps, strict=True):
            total += b - a if b >= a or not wrap else b + wrap - a
        return total / 1e6


def time_forward(model: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> list[float]:
    """Seconds per forward pass, after ``warmup`` untimed passes."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(x.device)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            _sync(x.device)
            times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop chatter (written to fd 2, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(model: nn.Module, x: torch.Tensor) -> tuple[float, str]:
    """High-water mark of memory allocated during one forward pass beyond what existed before."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - before) / 1e6, "cuda_max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), torch.inference_mode(), \
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    # The profiler books allocations to the op that made them and frees as '[memory]' events;
    # replaying both in time order gives the live-bytes curve.
    timeline = []
    for e in prof.events():
        if e.name == "[memory]":
            timeline.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage > 0:
            timeline.append((e.time_range.start, e.self_cpu_memory_usage))
    timeline.sort(key=lambda t: t[0])
    live = peak = 0
    for _, delta in timeline:
        live += delta
        peak = max(peak, live)
    return peak / 1e6, "profiler_cpu_allocations"


def runtime_facts(model: nn.Module) -> dict[str, Any] | None:
    """What a non-PyTorch runtime inside ``model`` reports about itself (its ``efficiency_facts()``), if any.

    PyTorch cannot count an ONNX Runtime session's parameters or FLOPs, nor see its allocations:
    the runtime's wrapper says what it knows (params and weight bytes from the graph) and the rest
    is reported as not available rather than as a PyTorch number that would be wrong.
    """
    for module in model.modules():
        facts = getattr(module, "efficiency_facts", None)
        if callable(facts):
            return dict(facts())
    return None


def measure(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device,
    throughput_batch_size: int = 256,
    warmup: int = 5,
    runs: int = 20,
    file_bytes: int | None = None,
    fixed_batch: int | None = None,
    runtime: str = "pytorch",
) -> EfficiencyResult:
    """Measure ``model`` on inputs of ``input_shape`` (C, H, W) on ``device``.

    Args:
        file_bytes: the size on disk of the file the model came from, reported as ``file_mb``.
        fixed_batch: the batch a graph was exported for: FLOPs are counted on one full batch and
            divided by it (per image); latency stays the time of one call, padded to that batch.
    """
    facts = runtime_facts(model)
    was_training = model.training
    model.eval()
    try:
        params, trainable = count_params(model) if facts is None else (facts["params"], facts["trainable_params"])
        one = torch.rand(1, *input_shape, device=device)
        per_call = fixed_batch or 1
        flops = (count_flops(model, torch.rand(per_call, *input_shape, device=device)) // per_call
                 if facts is None else facts["flops"])
        load = machine_load(torch.get_num_threads())
        lat = sorted(time_forward(model, one, warmup, runs))
        big = torch.rand(throughput_batch_size, *input_shape, device=device)
        counter = EnergyCounter(device)
        time_forward(model, big, warmup=2, runs=0)
        before = counter.read()
        big_times = time_forward(model, big, warmup=0, runs=max(3, runs // 4))
        joules = counter.joules(before, counter.read())
        if load is not None:
            load["after"] = round(os.getloadavg()[0], 2)
            load["busy"] = is_busy(load)
        mem, method = peak_memory_mb(model, big) if facts is None else (
            math.nan, f"not measured: {facts['runtime']} allocates outside PyTorch")
    finally:
        model.train(was_training)
    return EfficiencyResult(
        params=params,
        trainable_params=trainable,
        flops=flops,
        macs=flops // 2 if flops is not None else None,
        size_mb=weights_size_mb(model) if facts is None else facts["size_mb"],
        input_shape=[1, *input_shape],
        latency_ms=statistics.median(lat) * 1e3,
        latency_ms_p90=lat[min(len(lat) - 1, int(0.9 * len(lat)))] * 1e3,
        throughput=throughput_batch_size / statistics.median(big_times),
        throughput_batch_size=throughput_batch_size,
        peak_memory_mb=mem,
        memory_method=method,
        device=str(device),
        threads=torch.get_num_threads(),
        file_mb=file_bytes / 1e6 if file_bytes is not None else None,
        runtime=runtime if facts is None else facts["runtime"],
        sparsity=weight_sparsity(model) if facts is None else None,
        latency_ms_iqr=(_quantile(lat, 0.75) - _quantile(lat, 0.25)) * 1e3,
        throughput_range=[throughput_batch_size / max(big_times), throughput_batch_size / min(big_times)],
        load=load,
        energy_j_per_image=joules / (throughput_batch_size * len(big_times)) if joules is not None else None,
        energy_source=counter.source,
    )


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
