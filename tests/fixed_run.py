"""A fixed small run whose expected outcomes are stored in the repository (tests/data/fixed_run/).

A small CNN (convolutions, BatchNorm, ReLU, pooling: what the fast forward paths rewrite) trained
once on scikit-learn's digits; its weights and, per condition of every suite, each test image's
outcome under eager fp32 were written by :func:`make` (from the project root:
``python -c "import sys; sys.path.append('tests'); import fixed_run; fixed_run.make()"``; run as a
script, ``tests/attacks`` would shadow the ``attacks`` package). A change of
forward path, kernel or scoring that changes a number shows as a changed outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent / "data" / "fixed_run"
WEIGHTS = HERE / "tinynet.safetensors"
EXPECTED = HERE / "expected.npz"
#: what the stored run ran: every suite that scores images through the model
SUITES = "clean,corruptions,shift,adversarial"
OPTIONS: dict[str, Any] = {"attack": "fgsm,pgd", "eps": 0.1, "severities": "1,3,5",
                           "shift_splits": "covariate/*,label/dirichlet", "shift_intensities": "1,3,5"}


class TinyNet(nn.Module):
    """[0,1] 8x8 grey images in, 10 logits out; normalises inside like every robust-eval model."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 32),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.3) / 0.4))


def load() -> TinyNet:
    from safetensors.torch import load_file

    net = TinyNet()
    net.load_state_dict(load_file(str(WEIGHTS)))
    return net.eval()


def outcomes(result: Any) -> dict[str, np.ndarray]:
    """Per condition, each image's predicted class (or, for attacks, whether it stayed correct)."""
    out = {}
    for cond in result.records:
        out[cond.path] = (np.asarray(cond.predicted, dtype=np.int64) if cond.predicted is not None
                          else np.asarray(cond.correct, dtype=np.int64))
    return out


def evaluate(inference: str, **extra: Any) -> Any:
    from robustbench_lite import data
    from robustbench_lite.api import evaluate as run

    return run(load(), data.load("digits", "test"), SUITES, inference=inference, **OPTIONS, **extra)


def make() -> None:
    """Train the net (once; seeded) and store its weights and eager fp32 outcomes."""
    from safetensors.torch import save_file

    from robustbench_lite import data

    HERE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = TinyNet()
    train = data.load("digits", "train")
    x, y = train.float_images(), train.labels
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
    np.savez_compressed(EXPECTED, **outcomes(evaluate("eager")))

