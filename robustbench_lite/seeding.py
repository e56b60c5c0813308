"""Per-sample seeding: randomness is a function of (seed, sample index, keys), never of batching.

Attacks and corruptions draw each image's random numbers from its own ``torch.Generator`` seeded
here, so a result does not depend on batch size, device count or order of work. A leaf module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def derive_seed(seed: int, index: int, *keys: object) -> int:
    """A stable 63-bit seed for one sample: the same inputs give the same seed in any process.

    Python's ``hash`` is salted per process for strings, so a keyed BLAKE2 digest is used.
    """
    text = ":".join(str(part) for part in (int(seed), int(index), *keys))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def generators(
    seed: int, indices: Iterable[int], *keys: object, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One seeded generator per sample index, on ``device``."""
    out = []
    for index in indices:
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(seed, int(index), *keys))
        out.append(g)
    return out


def default_indices(n: int, indices: torch.Tensor | Iterable[int] | None) -> list[int]:
    """Sample indices as a list; ``None`` means 0..n-1 (the batch is the whole dataset)."""
    if indices is None:
        return list(range(n))
    out = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if len(out) != n:
        raise ValueError(f"got {len(out)} indices for a batch of {n} images")
    return out
