"""Models with masked gradients on purpose, for the masking checks' tests."""

from __future__ import annotations

import torch


class InputRounded(torch.nn.Module):
    """``net`` behind an input rounded to ``levels`` grey levels: the same predictions when ``levels`` is 255
    (8-bit images), and an input gradient that is zero almost everywhere (masked)."""

    def __init__(self, net: torch.nn.Module, levels: int) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)
