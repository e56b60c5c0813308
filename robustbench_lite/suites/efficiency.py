"""Efficiency suite: params, FLOPs, size, latency (batch 1), throughput (large batch), peak memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from robustbench_lite.efficiency import EfficiencyResult, measure
from robustbench_lite.formatting import num, pct, si
from robustbench_lite.options import Options, int_in, option
from robustbench_lite.suites.base import EvalContext, HeadlineMetric, Suite, register_suite


@dataclass(frozen=True)
class EfficiencyOptions(Options):
    """How long the timing runs are."""

    owner: ClassVar[str] = "efficiency"

    throughput_batch_size: int = option(
        "--throughput-batch-size", "batch size of the throughput run (default: 256)", default=256,
        parse=int_in("--throughput-batch-size", 1), metavar="N", example="64")
    runs: int = option("--latency-runs", "timed batch-1 runs for the latency (default: 20)", default=20,
                       parse=int_in("--latency-runs", 1), metavar="N", example="5")


@register_suite
class EfficiencySuite(Suite):
    name = "efficiency"
    Result = EfficiencyResult
    description = "params, FLOPs, weights MB, latency ms (batch 1), throughput img/s, peak memory"
    Options = EfficiencyOptions
    title = "Efficiency"
    order = 50
    rank0_only = True  # latency and memory of one process: the other ranks would only disturb it
    headline_metrics = (HeadlineMetric("latency ms", "latency_ms", higher_is_better=False, unit="ms"),
                        HeadlineMetric("size MB", "size_mb", higher_is_better=False, unit="MB"),
                        HeadlineMetric("FLOPs", "flops", higher_is_better=False, unit="count"))

    def run(self, ctx: EvalContext) -> EfficiencyResult:
        opts: EfficiencyOptions = ctx.options(self.name)
        source = ctx.source
        # The model as shipped, at the input it takes (not through the adapter): its own cost.
        model = source.core if source is not None else ctx.model
        shape = source.core_input if source is not None and source.core_input else (
            ctx.dataset.channels, *ctx.dataset.size)
        result = measure(model, shape, ctx.device, throughput_batch_size=opts.throughput_batch_size,
                         runs=opts.runs, file_bytes=source.file_bytes if source is not None else None,
                         fixed_batch=source.fixed_batch if source is not None else None,
                         runtime=source.runtime if source is not None else "pytorch")
        if result.load is not None and result.load.get("busy"):
            ctx.log(f"efficiency: warning: {busy_text(result.load)}")
        return result

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        shape = block.get("input_shape")
        rows = [
            ("parameters", f"{si(block.get('params'))} ({num(block.get('params'))})"),
            ("trainable parameters", si(block.get("trainable_params"))),
            ("zero weights (sparsity)", pct(block.get("sparsity"), 1) if block.get("sparsity") is not None else "n/a"),
            ("FLOPs per image", si(block.get("flops"))),
            ("MACs per image", si(block.get("macs"))),
            ("weights", f"{num(block.get('size_mb'), 3)} MB"),
            ("file on disk", f"{num(block.get('file_mb'), 3)} MB" if block.get("file_mb") is not None else "n/a"),
            ("runtime", block.get("runtime", "pytorch")),
            ("input shape", " x ".join(map(str, shape)) if isinstance(shape, list) else "n/a"),
            ("latency, batch 1",
             f"{num(block.get('latency_ms'), 3)} ms median (p90 {num(block.get('latency_ms_p90'), 3)} ms"
             + (f", IQR {num(block['latency_ms_iqr'], 3)} ms" if block.get("latency_ms_iqr") is not None else "")
             + ")"),
            ("throughput",
             f"{num(block.get('throughput'), 4)} images/s at batch {num(block.get('throughput_batch_size'))}"
             + (" (timed batches {} to {})".format(*(num(v, 4) for v in block["throughput_range"]))
                if isinstance(block.get("throughput_range"), list) and len(block["throughput_range"]) == 2 else "")),
            ("energy per image", f"{num(block['energy_j_per_image'], 3)} J ({block.get('energy_source')})"
             if block.get("energy_j_per_image") is not None else str(block.get("energy_source", "not measured"))),
            ("machine load while timing", busy_text(block["load"]) if isinstance(block.get("load"), dict)
             and block["load"].get("busy") else load_text(block.get("load"))),
            ("peak memory", f"{num(block.get('peak_memory_mb'), 3)} MB ({block.get('memory_method', 'n/a')})"),
            ("device, threads", f"{block.get('device', 'n/a')}, {block.get('threads', 'n/a')}"),
        ]
        return {"rows": [{"label": k, "value": v} for k, v in rows]}


def load_text(load: Any) -> str:
    """The load figures the timings were taken under, in words."""
    if not isinstance(load, dict):
        return "not recorded"
    after = f", {load['after']} after" if load.get("after") is not None else ""
    threads = load.get("threads")
    return (f"{load.get('before')} before{after} ({load.get('cpus')} CPUs, {threads} "
            f"thread{'' if threads == 1 else 's'} timed)")


def busy_text(load: Mapping[str, Any]) -> str:
    """The warning for timings taken on a busy machine."""
    return (f"the machine was busy while timing (load {load_text(load)}): latency and throughput are slower and "
            "noisier than on a quiet machine; re-run efficiency alone on an idle one for figures to compare")
