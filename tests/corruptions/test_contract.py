"""Contract shared by every registered corruption, driven by ``CORRUPTIONS.list()``.

Like torchvision's ``check_kernel``: input not modified, shape / dtype / device kept, output in
[0, 1], batched equals per-image for the same dataset indices, seeded determinism, and severity
ordered on average. A corruption is covered by being registered; one that is unavailable (e.g.
missing textures) is skipped with its reason.

Images are real: scikit-learn's 8x8 digits (shipped offline), upsampled. The per-call contract
is :func:`image_contract.check_transform`, shared with the covariate shifts (``tests/test_shift.py``).
"""

from __future__ import annotations

import pytest
import torch
from image_contract import BATCHES, check_transform
from image_contract import real_batch as _batch

from corruptions import CORRUPTIONS, PROFILES

NAMES = CORRUPTIONS.list()
SEVERITIES = (1, 2, 3, 4, 5)

#: Severity orderings that hold by construction where the original constants are not monotonic in
#: mean |corrupt - clean|. Each chain's severities must be non-decreasing; the default is one chain
#: 1..5. Keys: (name, profile) or (name, "*").
SEVERITY_CHAINS: dict[tuple[str, str], tuple[tuple[int, ...], ...]] = {
    # Severities 1-2 desaturate (S x 0.3, x 0.1), 3-5 oversaturate (S x 1.5 .. x 20 + b): the
    # change from the clean image drops from severity 2 to 3 by design.
    ("saturate", "*"): ((1, 2), (3, 4, 5)),
    # The change is dominated by the pixel shuffle (max_delta, iterations); a larger sigma within
    # one shuffle setting smooths the shuffled pixels back towards the clean image. Every
    # 2-iteration severity (4, 5) changes more than every 1-iteration one (1-3).
    ("glass_blur", "cifar"): tuple((a, b) for a in (1, 2, 3) for b in (4, 5)),
    # (0.7,1,2) (0.9,2,1) then max_delta >= 2 with 2-3 iterations: 3-5 change more than 1-2.
    ("glass_blur", "imagenet"): tuple((a, b) for a in (1, 2) for b in (3, 4, 5)),
    # Severity 1 is the largest random affine (0.08 x 32 px) with no elastic field; later
    # severities shrink the affine and add a small elastic field: no order in pixel change.
    ("elastic_transform", "cifar"): (),
    # x c0 + frost c1 with c0 falling while c1 rises (and a random texture crop): only the first
    # step (same image weight, more frost) is ordered by construction.
    ("frost", "*"): ((1, 2),),
    # Water at 1-3, mud at 4-5: ordered within each mode only.
    ("spatter", "cifar"): ((1, 2, 3), (4, 5)),
    # Severities 3 and 4 share strength 2.5 (they differ in fractal roughness only).
    ("fog", "imagenet"): ((1, 2, 3, 5), (1, 2, 4, 5)),
}
#: Relative and absolute slack for a "non-decreasing" step (random corruptions on 16 images).
RTOL, ATOL = 0.03, 1e-3


def _corruption(name: str, severity: int, profile: str, seed: int = 0):
    cls = CORRUPTIONS.entry(name)
    reason = cls.availability()
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
    return cls(severity=severity, profile=profile, seed=seed)


@pytest.fixture(autouse=True)
def _one_thread_rng_restored():
    """One torch thread (tiny tensors on 2 shared cores: thread spin-up costs more than the work);
    the global RNG seeded arbitrarily and restored, as corruptions must not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, profile: str, severity: int, batch: str) -> None:
    corruption = _corruption(name, severity, profile)
    images = _batch(batch)
    indices = list(range(100, 100 + images.shape[0]))

    # input kept, shape / dtype / device kept, [0, 1], changed, batched == per image
    out = check_transform(corruption, images, indices)

    # determinism: a fresh instance with the same seed reproduces; another seed changes random ones
    again = _corruption(name, severity, profile, seed=0)(images, indices)
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    other = _corruption(name, severity, profile, seed=1)(images, indices)
    if corruption.random:
        assert not torch.equal(other, out), "random corruption ignores its seed"
    else:
        torch.testing.assert_close(other, out, atol=0, rtol=0)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_severity_ordered(name: str, profile: str) -> None:
    """Mean |corrupt - clean| over a batch is non-decreasing along each severity chain."""
    images = _batch("rgb32", 16)
    change = {s: (_corruption(name, s, profile)(images) - images).abs().mean().item() for s in SEVERITIES}
    chains = SEVERITY_CHAINS.get((name, profile), SEVERITY_CHAINS.get((name, "*"), (SEVERITIES,)))
    for chain in chains:
        for lo, hi in zip(chain, chain[1:], strict=False):
            assert change[hi] >= change[lo] * (1 - RTOL) - ATOL, (
                f"{name}/{profile}: severity {hi} changes less than {lo}: "
                + ", ".join(f"{s}: {v:.4f}" for s, v in change.items())
            )
    assert all(v > 0 for v in change.values())


@pytest.mark.parametrize("name", NAMES)
def test_default_indices(name: str) -> None:
    """``indices=None`` means 0..n-1."""
    corruption = _corruption(name, 3, "cifar")
    images = _batch("rgb32")
    torch.testing.assert_close(
        corruption(images), corruption(images, list(range(len(images)))), atol=0, rtol=0
    )


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    """An empty batch (e.g. an empty dataset split) passes through with its shape."""
    empty = _batch("rgb32")[:0]
    out = _corruption(name, 3, "cifar")(empty)
    assert out.shape == empty.shape and out.dtype == empty.dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_device_kept(name: str) -> None:
    corruption = _corruption(name, 3, "cifar")
    images = _batch("rgb32").cuda()
    out = corruption(images)
    assert out.device == images.device and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    if not corruption.random:  # generators differ between devices, deterministic ones must agree
        torch.testing.assert_close(out.cpu(), corruption(images.cpu()), atol=1e-4, rtol=0)
