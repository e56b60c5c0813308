"""Where the corruption suite's images come from: one source picked up front, asked the same way.

Four sources, each answering :meth:`ImageSource.images` for a (corruption, severity):

- :class:`NativeSource`: this package's batched tensor corruptions.
- :class:`ReferenceSource`: the imagecorruptions reference package, one image at a time.
- :class:`PublishedSource`: the files of a published -C set (CIFAR-10-C, Tiny-ImageNet-C...).
- :class:`CachedSource`: a computing source behind the on-disk :class:`~corruptions.cache.CorruptionCache`.

A computing source hands out a per-batch transform, so the corrupted set is made batch by batch
while the model predicts and is never held whole; the published files and the cache hand out the
whole stored set (float NCHW in [0,1], uint8 precision). Sources time their own corrupting,
which is what the suite reports as ``corruption_seconds``.

Example:
    >>> source = CachedSource(NativeSource("cifar", seed=0), cache, key, [1, 3, 5], clean_batches)
    >>> got = source.images("fog", 3)
    >>> got.images if got.images is not None else predict(transform=got.transform)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from corruptions.base import CORRUPTIONS
from corruptions.cache import CacheKey, CorruptionCache
from corruptions.published import CorruptedImages
from robustbench_lite.errors import RobustEvalError

#: ``transform(images, indices) -> images``: corrupt one batch of clean images on their device;
#: ``indices`` are the images' dataset indices (the key of per-image randomness).
BatchTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Corrupted:
    """The corrupted test set of one (corruption, severity), in one of two forms.

    Attributes:
        images: the whole set, float NCHW in [0,1] on the CPU, as stored (uint8 precision); or None.
        transform: when ``images`` is None, corrupts the clean images batch by batch while predicting.
        thread_safe: ``transform`` may corrupt two batches at once (in two threads).
    """

    images: torch.Tensor | None = None
    transform: BatchTransform | None = None
    thread_safe: bool = True


class ImageSource:
    """Base class: where corrupted images come from, and what the results call it.

    Attributes:
        profile: the parameter table the images were made with (``precomputed`` for files).
        backend: what made them (``native``, ``imagecorruptions``, ``files``).
    """

    profile: str
    backend: str

    @property
    def corruption_seconds(self) -> float:
        """Time spent corrupting images so far (loading stored ones is not corrupting)."""
        return 0.0

    def select(self, names: list[str], explicit: bool) -> list[str]:
        """The corruptions to score from ``names`` (``explicit``: the user named them)."""
        return names

    def availability(self, name: str) -> str | None:
        """``None`` when this source can give ``name``; otherwise why not and how to fix it."""
        return None

    def images(self, corruption: str, severity: int) -> Corrupted:
        """The corrupted test set of ``corruption`` at ``severity``."""
        raise NotImplementedError(f"{type(self).__name__} must implement images()")

    def cache_info(self) -> dict[str, Any]:
        """What the results record about an on-disk cache (empty: none used)."""
        return {}


class ComputedSource(ImageSource):
    """A source that computes corruptions; subclasses give one batch function in :meth:`corrupter`.

    Args:
        profile: parameter table, ``cifar`` or ``imagenet``.
        seed: run seed; each image's randomness comes from (seed, index, corruption, severity).

    Attributes:
        thread_safe: two batches may be corrupted at once (False when the backend draws from a
            global random state).
    """

    thread_safe: ClassVar[bool] = True

    def __init__(self, profile: str, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self._seconds = 0.0
        self._lock = threading.Lock()

    @property
    def corruption_seconds(self) -> float:
        return self._seconds

    def corrupter(self, corruption: str, severity: int) -> BatchTransform:
        raise NotImplementedError(f"{type(self).__name__} must implement corrupter()")

    def timed(self, corruption: str, severity: int) -> BatchTransform:
        """:meth:`corrupter`, adding the time of every call to :attr:`corruption_seconds` (summed over the
        threads that corrupt batches at once, so it is the work done, which may overlap inference)."""
        corrupt = self.corrupter(corruption, severity)

        def transform(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = corrupt(images, indices)
            with self._lock:
                self._seconds += time.perf_counter() - t0
            return out

        return transform

    def images(self, corruption: str, severity: int) -> Corrupted:
        return Corrupted(transform=self.timed(corruption, severity), thread_safe=self.thread_safe)


class NativeSource(ComputedSource):
    """This package's corruptions (:data:`~corruptions.base.CORRUPTIONS`), batched on any device."""

    backend = "native"

    def availability(self, name: str) -> str | None:
        return CORRUPTIONS.entry(name).availability()

    def corrupter(self, corruption: str, severity: int) -> BatchTransform:
        return CORRUPTIONS.get(corruption, severity=severity, profile=self.profile, seed=self.seed)


class ReferenceSource(ComputedSource):
    """The imagecorruptions package (ImageNet-C's own code), per image; see :mod:`corruptions.reference`."""

    backend = "imagecorruptions"
    thread_safe = False  # each image seeds and draws from NumPy's global random state

    def corrupter(self, corruption: str, severity: int) -> BatchTransform:
        # imported when used: the optional package is loaded only by runs that ask for it
        from corruptions.reference import reference_corrupt

        profile, seed = self.profile, self.seed
        return lambda images, indices: reference_corrupt(images, corruption, severity, seed, indices,
                                                         profile=profile)


#: The computing source of each ``--corruption-backend``.
COMPUTED_SOURCES: dict[str, type[ComputedSource]] = {"native": NativeSource, "imagecorruptions": ReferenceSource}


class PublishedSource(ImageSource):
    """The files of a published -C set, for the test images the run scores.

    Args:
        corrupted: the opened set (:func:`corruptions.published.load_c_dataset`).
        indices: the scored images' indices in the full test split.
        origin: where the set came from, for messages.
    """

    profile = "precomputed"
    backend = "files"

    def __init__(self, corrupted: CorruptedImages, indices: Sequence[int], origin: str) -> None:
        self.corrupted = corrupted
        self.indices = list(indices)
        self.origin = origin

    def select(self, names: list[str], explicit: bool) -> list[str]:
        """By default the corruptions the files hold; named ones must all be there."""
        held = self.corrupted.corruptions
        missing = [n for n in names if n not in held]
        if not explicit:
            return [n for n in names if n in held]
        if missing:
            raise RobustEvalError(f"{self.origin} has no {', '.join(missing)}; it holds {', '.join(held)}")
        return names

    def images(self, corruption: str, severity: int) -> Corrupted:
        return Corrupted(images=self.corrupted.get_images(corruption, severity, self.indices))


class CachedSource(ImageSource):
    """A computing source behind the on-disk cache: stored sets are loaded, missing ones computed and stored.

    The first request for a corruption loads or computes all of the run's severities of it at
    once, so the missing ones are stored together (one ``<name>.npy`` when all five, rather than
    five partial files joined later); they are then handed out one by one.

    Args:
        computed: what computes a missing set (its profile and backend are part of ``key``).
        cache: the cache.
        key: the clean data's identity and the settings (:meth:`CacheKey.for_data`).
        severities: the run's severities.
        clean_batches: yields (clean images on the device, their dataset indices) batch by batch,
            in order; a missing set is corrupted batch by batch and gathered on the CPU.
    """

    def __init__(self, computed: ComputedSource, cache: CorruptionCache, key: CacheKey, severities: Sequence[int],
                 clean_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.computed = computed
        self.profile, self.backend = computed.profile, computed.backend
        self.cache = cache
        self.key = key
        self.severities = list(severities)
        self.clean_batches = clean_batches
        self.hits = self.misses = 0
        self._held: dict[tuple[str, int], torch.Tensor] = {}
        self._current: str | None = None

    @property
    def corruption_seconds(self) -> float:
        return self.computed.corruption_seconds

    def availability(self, name: str) -> str | None:
        return self.computed.availability(name)

    def images(self, corruption: str, severity: int) -> Corrupted:
        key = (corruption, severity)
        if key not in self._held:
            if corruption != self._current and severity in self.severities:
                self._current = corruption  # a new corruption: drop what is left of the previous one
                got = self._load_or_compute(corruption, self.severities)
                self._held = {(corruption, s): x for s, x in got.items()}
            else:
                self._held[key] = self._load_or_compute(corruption, [severity])[severity]
        return Corrupted(images=self._held.pop(key))

    def _load_or_compute(self, corruption: str, severities: list[int]) -> dict[int, torch.Tensor]:
        computed: list[int] = []

        def compute(severity: int) -> torch.Tensor:
            computed.append(severity)
            transform = self.computed.timed(corruption, severity)
            return torch.cat([transform(x, idx).cpu() for x, idx in self.clean_batches()])

        out = self.cache.get_or_compute(corruption, severities, self.key, compute)
        self.misses += len(computed)
        self.hits += len(severities) - len(computed)
        return out

    def cache_info(self) -> dict[str, Any]:
        return {"dir": str(self.cache.directory(self.key)), "hits": self.hits, "misses": self.misses}
