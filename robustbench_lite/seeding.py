"""Per-sample seeding: randomness is a function of (seed, sample index, keys), never of batching.

Attacks and corruptions draw each image's random numbers from its own ``torch.Generator`` seeded
here, so a result does not depend on batch size, device count or order of work. A leaf module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

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


def sample_rows(
    generators: Sequence[torch.Generator],
    shape: tuple[int, ...],
    fill: Callable[[torch.Tensor, torch.Generator], object],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, *shape) random numbers, row i filled in place by ``fill(row, generators[i])``.

    Filling rows of one buffer draws exactly what a fresh ``torch.rand`` / ``torch.randn`` of the
    row's shape would from the same generator, without a tensor and a stack per sample. An empty
    list gives an empty (0, *shape) tensor.
    """
    out = torch.empty((len(generators), *shape), device=device, dtype=dtype)
    # one row view at a time (a thousand live views would only feed Python's garbage collector)
    for i, g in enumerate(generators):
        fill(out[i], g)
    return out


def uniform_rows(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, *shape) U[0, 1) draws, row i from generator i."""
    return sample_rows(generators, shape, lambda row, g: row.uniform_(generator=g), device, dtype)


def normal_rows(generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, *shape) standard normal draws, row i from generator i."""
    return sample_rows(generators, shape, lambda row, g: row.normal_(generator=g), device, dtype)
