"""Tiny real models for attack tests: scikit-learn digits (8x8, shipped offline), trained in ~1 s.

Models are trained once per session under a fixed seed and a forked RNG state. Tests run torch on
one thread: these models are so small that thread start-up and contention (2 shared cores) cost
more than the arithmetic.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """One thread and the caller's RNG state restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float32 (N, 1, 8, 8) images in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(d.target, dtype=torch.long)


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """Full-batch Adam, written out: constructing ``torch.optim.Adam`` costs seconds of lazy imports."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params = list(model.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = 0.9, 0.999
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.train()
        for t in range(1, steps + 1):
            grads = torch.autograd.grad(nn.functional.cross_entropy(model(images), labels), params)
            with torch.no_grad():
                for p, g, m_, v_ in zip(params, grads, m, v, strict=True):
                    m_.mul_(b1).add_(g, alpha=1 - b1)
                    v_.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m_ / (1 - b1**t), (v_ / (1 - b2**t)).sqrt_().add_(1e-8), value=-lr)
    torch.set_num_threads(threads)
    return model.eval()


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def make_cnn() -> nn.Module:
    """Conv + BatchNorm + Dropout: train-mode behaviour would show up as batch dependence."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(16 * 4 * 4, 10),
    )


@pytest.fixture(scope="session")
def digits_mlp(digits) -> nn.Module:
    """A 64-64-10 MLP, ~100% train accuracy on digits after 150 full-batch Adam steps."""
    images, labels = digits
    with torch.random.fork_rng(devices=[]):
        return _train(make_mlp(), images, labels, steps=150, lr=1e-2)


@pytest.fixture(scope="session")
def digits_cnn(digits) -> nn.Module:
    """A small CNN trained on the first 600 digits (~95% accuracy on the rest)."""
    images, labels = digits
    with torch.random.fork_rng(devices=[]):
        return _train(make_cnn(), images[:600], labels[:600], steps=60, lr=1e-2)


@pytest.fixture
def mlp(digits_mlp) -> nn.Module:
    """The session MLP, reset to eval mode with trainable parameters (tests may flip them)."""
    digits_mlp.eval()
    for p in digits_mlp.parameters():
        p.requires_grad_(True)
    return digits_mlp


@pytest.fixture
def cnn(digits_cnn) -> nn.Module:
    digits_cnn.eval()
    for p in digits_cnn.parameters():
        p.requires_grad_(True)
    return digits_cnn
