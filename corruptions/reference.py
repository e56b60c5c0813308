"""The imagecorruptions reference backend: ImageNet-C as Hendrycks & Dietterich's code computes it.

`imagecorruptions <https://github.com/bethgelab/imagecorruptions>`_ 1.1.2 (the last release) is
the reference implementation of ImageNet-C, written for NumPy 1 and scikit-image <= 0.18. It is
an optional extra (``pip install 'robustbench-lite[imagecorruptions]'``; install it with
``--no-deps`` so that it cannot pull ``opencv-python`` next to ``opencv-python-headless``).

On a current stack it breaks in five places. :func:`load_imagecorruptions` imports it through a
small compatibility layer that repairs each one without editing its files and without changing
NumPy, SciPy or scikit-image for anybody else (the runtime fixes replace names inside
``imagecorruptions.corruptions`` only):

- ``from pkg_resources import resource_filename`` fails (recent setuptools, 84 here, no longer
  ships ``pkg_resources``): a stand-in providing ``resource_filename`` through ``importlib.resources``
  sits in ``sys.modules`` only while imagecorruptions is imported, and only if the real one is missing.
- ``from scipy.ndimage.interpolation import map_coordinates`` warns (deprecated, removed in SciPy 2):
  the warning is silenced; where the module is gone an alias of ``scipy.ndimage`` stands in
  during the import.
- fog: ``np.float_`` was removed in NumPy 2 (AttributeError in ``plasma_fractal``): the module's
  ``np`` becomes a view of NumPy that adds ``float_ = float64``.
- gaussian_blur, glass_blur: ``gaussian(..., multichannel=True)`` was deprecated in scikit-image
  0.19 and has since been removed (TypeError): the module's ``gaussian`` maps
  ``multichannel=True`` to ``channel_axis=-1``.
- impulse_noise ignores ``np.random.seed`` (silently): scikit-image >= 0.19 ``random_noise`` draws
  from a fresh ``np.random.default_rng()``, so results are neither seedable nor reproducible. The
  module's ``sk.util.random_noise`` draws salt-and-pepper noise from NumPy's global RNG as
  scikit-image <= 0.18 did (two ``np.random.choice`` masks), so a seed reproduces the original stack.

Everything else (all 19 corruptions x 5 severities at 32 and 224 px) runs unchanged; the tests
in ``tests/corruptions/test_reference.py`` hold the layer to that.

imagecorruptions implements the ImageNet-C constants only, so :func:`reference_corrupt` takes
the ``imagenet`` profile and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import sys
import threading
import types
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from corruptions.base import BENCHMARK, EXTRA, check_images, to_gray
from corruptions.profiles import severity_params
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import suggest
from robustbench_lite.seeding import default_indices, derive_seed

#: The profile imagecorruptions implements.
REFERENCE_PROFILE = "imagenet"
#: Smallest image side imagecorruptions accepts.
MIN_SIZE = 32
INSTALL_HINT = (
    "the imagecorruptions backend needs the optional extra: pip install 'robustbench-lite[imagecorruptions]'"
)

_lock = threading.RLock()
_module: types.ModuleType | None = None
_MARK = "_robustbench_lite_compat"


# ----------------------------------------------------------------------------- import-time shims


def _resource_filename(package_or_requirement: str, resource_name: str) -> str:
    """``pkg_resources.resource_filename`` for an installed, unzipped module or package."""
    module = sys.modules.get(package_or_requirement) or importlib.import_module(package_or_requirement)
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    return str(importlib.resources.files(package).joinpath(resource_name))


@contextlib.contextmanager
def _import_shims() -> Iterator[None]:
    """Stand-ins for modules imagecorruptions imports, present only while it is being imported."""
    added: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources", "robustbench_lite stand-in: resource_filename only")
            shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
            added.append("pkg_resources")
        try:
            import scipy.ndimage.interpolation  # noqa: F401
        except ImportError:
            import scipy.ndimage

            sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
            added.append("scipy.ndimage.interpolation")
        try:
            yield
        finally:
            for name in added:
                sys.modules.pop(name, None)


# ----------------------------------------------------------------------------- runtime fixes


class _NumpyView(types.ModuleType):
    """NumPy with the aliases NumPy 2 removed, for the reference module's globals only."""

    _aliases = {"float_": np.float64}

    def __getattr__(self, name: str) -> Any:
        if name in self._aliases:
            return self._aliases[name]
        return getattr(np, name)


def _gaussian_with_multichannel(gaussian: Any) -> Any:
    """Wrap ``skimage.filters.gaussian`` to accept the removed ``multichannel=`` argument."""

    def compat_gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return gaussian(image, *args, **kwargs)

    compat_gaussian.__wrapped__ = gaussian  # type: ignore[attr-defined]
    return compat_gaussian


def _legacy_random_noise(random_noise: Any) -> Any:
    """``random_noise`` whose salt-and-pepper mode draws from NumPy's global RNG like scikit-image <= 0.18.

    scikit-image >= 0.19 draws from ``np.random.default_rng(None)``, fresh OS entropy on each call,
    so ``np.random.seed`` no longer reproduces impulse_noise. This is the 0.18 algorithm: a
    Bernoulli(amount) mask of flipped values and a Bernoulli(salt_vs_pepper) mask of salted ones,
    both from ``np.random.choice``, so seeded results match the original stack exactly.
    """

    def compat_random_noise(image: Any, mode: str = "gaussian", seed: Any = None, clip: bool = True,
                            **kwargs: Any) -> Any:
        if mode != "s&p" or seed is not None or "rng" in kwargs:
            if seed is not None:
                kwargs["rng"] = seed
            return random_noise(image, mode=mode, clip=clip, **kwargs)
        image = np.asarray(image, dtype=np.float64)
        low_clip = -1.0 if image.min() < 0 else 0.0
        amount = kwargs.get("amount", 0.05)
        salt_vs_pepper = kwargs.get("salt_vs_pepper", 0.5)
        out = image.copy()
        flipped = np.random.choice([True, False], size=image.shape, p=[amount, 1 - amount])
        salted = np.random.choice([True, False], size=image.shape, p=[salt_vs_pepper, 1 - salt_vs_pepper])
        out[flipped & salted] = 1
        out[flipped & ~salted] = low_clip
        return np.clip(out, low_clip, 1.0) if clip else out

    compat_random_noise.__wrapped__ = random_noise  # type: ignore[attr-defined]
    return compat_random_noise


class _ModuleView(types.ModuleType):
    """A module with some attributes overridden, delegating the rest to the real module."""

    def __init__(self, base: types.ModuleType, **overrides: Any) -> None:
        super().__init__(base.__name__, base.__doc__)
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _patch(module: types.ModuleType) -> None:
    """Apply the runtime fixes to ``imagecorruptions.corruptions`` (idempotent)."""
    if getattr(module, _MARK, False):
        return
    import skimage
    import skimage.filters
    import skimage.util

    module.np = _NumpyView("numpy", np.__doc__)  # type: ignore[attr-defined]
    module.gaussian = _gaussian_with_multichannel(skimage.filters.gaussian)  # type: ignore[attr-defined]
    util = _ModuleView(skimage.util, random_noise=_legacy_random_noise(skimage.util.random_noise))
    module.sk = _ModuleView(skimage, util=util)  # type: ignore[attr-defined]
    setattr(module, _MARK, True)


def load_imagecorruptions() -> types.ModuleType:
    """Import imagecorruptions once, with the compatibility layer applied.

    Raises:
        RobustEvalError: imagecorruptions (or one of its own dependencies) is not installed.
    """
    global _module
    with _lock:
        if _module is not None:
            return _module
        try:
            with _import_shims():
                package = importlib.import_module("imagecorruptions")
                import skimage.filters  # noqa: F401  (imagecorruptions needs it; fail here, not mid-run)
        except ImportError as exc:
            missing = f" (missing module: {exc.name})" if exc.name else ""
            raise RobustEvalError(f"{INSTALL_HINT}{missing}") from exc
        _patch(sys.modules["imagecorruptions.corruptions"])
        _module = package
        return package


def is_available() -> bool:
    """Whether the reference backend can be used (imports it on first call)."""
    try:
        load_imagecorruptions()
    except RobustEvalError:
        return False
    return True


# ----------------------------------------------------------------------------- the backend


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global RNG with a 63-bit seed, restoring the caller's state afterwards."""
    state = np.random.get_state()
    try:
        np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
        yield
    finally:
        np.random.set_state(state)


def _check_args(name: str, severity: int, profile: str, images: torch.Tensor) -> None:
    names = BENCHMARK + EXTRA
    if name not in names:
        raise RobustEvalError(
            f"unknown corruption '{name}' for the imagecorruptions backend.{suggest(name, names)} "
            f"Valid corruptions: {', '.join(sorted(names))}"
        )
    if profile != REFERENCE_PROFILE:
        raise RobustEvalError(
            f"the imagecorruptions backend implements only the '{REFERENCE_PROFILE}' profile (ImageNet-C "
            f"constants), got profile '{profile}'; use profile='{REFERENCE_PROFILE}' or the native backend"
        )
    severity_params(name, profile, severity)
    check_images(images, channels=(1, 3))
    height, width = images.shape[-2:]
    if min(height, width) < MIN_SIZE:
        raise RobustEvalError(
            f"imagecorruptions needs images of at least {MIN_SIZE}x{MIN_SIZE} px, got {height}x{width}; "
            f"resize them first or use the native backend"
        )


def reference_corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    indices: torch.Tensor | Iterable[int] | None = None,
    *,
    profile: str = REFERENCE_PROFILE,
) -> torch.Tensor:
    """Corrupt a batch with imagecorruptions, one image at a time.

    Each image's NumPy global RNG is seeded from ``derive_seed(seed, index, name, severity)``
    (imagecorruptions draws from ``np.random``), so results do not depend on batching, and the
    caller's NumPy RNG state is restored afterwards.

    Args:
        images: float NCHW in [0,1], 1 or 3 channels, at least 32x32 px. Grey images go through
            as three equal channels and come back as ITU-R 601 luma.
        name: corruption name (one of the 19 ImageNet-C corruptions).
        severity: 1..5.
        seed: run seed.
        indices: the images' dataset indices (default 0..n-1).
        profile: must be ``imagenet``; imagecorruptions implements no other constants.

    Returns:
        A new tensor with the input's shape, dtype and device, values in [0,1] quantised to 1/255
        (imagecorruptions works on uint8 images).

    Example:
        >>> out = reference_corrupt(torch.rand(4, 3, 64, 64), "fog", severity=3, seed=0)
    """
    _check_args(name, severity, profile, images)
    package = load_imagecorruptions()
    idx = default_indices(images.shape[0], indices)
    x = images.detach().float().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    pixels = (x * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(pixels)
    with _lock, warnings.catch_warnings():
        # NumPy/OpenCV chatter from a third-party reference is not the caller's concern.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        for i, (image, index) in enumerate(zip(pixels, idx, strict=True)):
            with numpy_global_seed(derive_seed(seed, index, name, severity)):
                out[i] = package.corrupt(np.ascontiguousarray(image), severity=severity, corruption_name=name)
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
    if images.shape[1] == 1:
        result = to_gray(result)
    return result.clamp_(0, 1).to(device=images.device, dtype=images.dtype)

