"""The contract every image transform keeps (corruptions, covariate shifts), checked one way.

Like torchvision's ``check_kernel``: the input is not modified, shape / dtype / device are kept,
a new tensor comes back with finite values in [0, 1], and a batch gives each image what that
image gives alone with the same dataset index (randomness is keyed by index, not by position).
``tests/corruptions/test_contract.py`` and ``tests/test_shift.py`` both drive their registries
through :func:`check_transform` on the same real images (:func:`real_batch`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: Batches of real images: grey 32 px, a 3-channel mix at 32 px, grey 28 px in float64.
BATCHES = ("gray32", "rgb32", "gray28_f64")

ImageTransform = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


@functools.cache
def _digits(n: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = load_digits().images[:n] / 16.0
    return torch.tensor(images, dtype=torch.float32).unsqueeze(1)


@functools.cache
def real_batch(kind: str, n: int = 6) -> torch.Tensor:
    """Real images: scikit-learn's 8x8 digits (shipped offline), upsampled (see :data:`BATCHES`)."""
    digits = _digits(n)
    if kind == "gray32":
        return F.interpolate(digits, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    if kind == "rgb32":
        g = real_batch("gray32", n)
        # three different but related channels, with mid-tones so colour operations have work
        return torch.cat([g, 0.2 + 0.6 * g.flip(-1), 1 - g.transpose(-1, -2)], dim=1).clamp(0, 1)
    if kind == "gray28_f64":
        return F.interpolate(digits, size=28, mode="bicubic", align_corners=False).clamp(0, 1).double()
    raise ValueError(kind)


def check_transform(transform: ImageTransform, images: torch.Tensor, indices: Sequence[int],
                    atol: float = 1e-5) -> torch.Tensor:
    """Assert the contract for ``transform(images, indices)`` and return its output.

    Args:
        transform: ``(images, dataset indices) -> images``.
        images: a float NCHW batch in [0, 1] (left as it is: checked not to be modified).
        indices: the images' dataset indices.
        atol: tolerance of "image k alone equals image k of the batch".
    """
    clean = images.clone()
    out = transform(images, indices)

    assert torch.equal(images, clean), "input modified in place"
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert out.data_ptr() != images.data_ptr()
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert (out - images).abs().max() > 0, "transform left every image unchanged"

    # batched == per image: image k with dataset index indices[k] gives the same result alone
    for k in (0, images.shape[0] - 1):
        single = transform(images[k : k + 1], [indices[k]])
        torch.testing.assert_close(single, out[k : k + 1], atol=atol, rtol=0, msg=f"image {k} alone differs")
    return out
