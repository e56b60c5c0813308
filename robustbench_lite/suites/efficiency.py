"""Efficiency suite: params, FLOPs, size, latency (batch 1), throughput (large batch), peak memory."""

from __future__ import annotations

from robustbench_lite.efficiency import EfficiencyResult, measure
from robustbench_lite.suites.base import EvalContext, Suite, register_suite


@register_suite
class EfficiencySuite(Suite):
    name = "efficiency"
    description = "params, FLOPs, weights MB, latency ms (batch 1), throughput img/s, peak memory"

    def run(self, ctx: EvalContext) -> EfficiencyResult:
        opts = ctx.options("efficiency")
        c = ctx.dataset.channels
        h, w = ctx.dataset.size
        return measure(ctx.model, (c, h, w), ctx.device,
                       throughput_batch_size=int(opts.get("throughput_batch_size", 256)),
                       runs=int(opts.get("runs", 20)))
