"""Efficiency suite: params, FLOPs, size, latency (batch 1), throughput (large batch), peak memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from robustbench_lite.efficiency import EfficiencyResult, measure
from robustbench_lite.options import Options, int_in, option
from robustbench_lite.suites.base import EvalContext, Suite, register_suite


@dataclass(frozen=True)
class EfficiencyOptions(Options):
    """How long the timing runs are."""

    owner: ClassVar[str] = "efficiency suite"

    throughput_batch_size: int = option(
        "--throughput-batch-size", "batch size of the throughput run (default: 256)", default=256,
        parse=int_in("--throughput-batch-size", 1), metavar="N", example="64")
    runs: int = option("--latency-runs", "timed batch-1 runs for the latency (default: 20)", default=20,
                       parse=int_in("--latency-runs", 1), metavar="N", example="5")


@register_suite
class EfficiencySuite(Suite):
    name = "efficiency"
    description = "params, FLOPs, weights MB, latency ms (batch 1), throughput img/s, peak memory"
    Options = EfficiencyOptions

    def run(self, ctx: EvalContext) -> EfficiencyResult:
        opts: EfficiencyOptions = ctx.options(self.name)
        c = ctx.dataset.channels
        h, w = ctx.dataset.size
        return measure(ctx.model, (c, h, w), ctx.device, throughput_batch_size=opts.throughput_batch_size,
                       runs=opts.runs)
