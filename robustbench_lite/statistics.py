"""How far to trust a number: Wilson intervals, the paired bootstrap over images, McNemar's test.

A leaf (numpy and the standard library only). Every accuracy-like number of a run is a fraction
of test images, so its uncertainty comes from which images were drawn:

* one accuracy (k of n images right): the Wilson score interval, as
  ``statsmodels.stats.proportion.proportion_confint(k, n, method="wilson")`` defines it; it keeps
  its coverage near 0 and 1, where the normal approximation does not.
* a number computed from several accuracies on the same images (a mean over corruptions, mCE, a
  worst case, an AUC): the paired bootstrap. Each resample draws n images with replacement and
  every condition is re-scored on the *same* drawn images, so the correlation between conditions
  (the same hard images fail everywhere) is kept. :class:`Resampler` holds the draws, seeded per
  image set, so two runs on the same images are resampled identically and can be compared pair
  by pair.
* two models on the same images: McNemar's exact test on the discordant pairs for one accuracy
  (:func:`mcnemar`, as ``scipy.stats.binomtest(b, b + c, 0.5)``) and the paired bootstrap of the
  difference for derived numbers (:func:`paired_difference`).
"""

from __future__ import annotations

import math
import statistics as _stdlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Confidence level of every interval we print.
LEVEL = 0.95
#: Bootstrap resamples: the percentile interval's ends move by ~0.1 point between seeds at 2,000.
RESAMPLES = 2000
#: Significance level of the comparisons ("significant at 5%").
ALPHA = 0.05


def z_value(level: float = LEVEL) -> float:
    """The two-sided standard normal quantile of ``level`` (1.96 for 0.95)."""
    return _stdlib.NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; (nan, nan) when n is 0."""
    if n <= 0:
        return (math.nan, math.nan)
    z = z_value(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always holds p; min/max only undo rounding (at p = 0, centre - half is ~1e-17)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def wilson_half_width(p: float, n: int, level: float = LEVEL) -> float:
    """Half the width of the Wilson interval at accuracy ``p`` on ``n`` images."""
    lo, hi = wilson(round(p * n), n, level)
    return (hi - lo) / 2


def sample_size(margin: float, accuracy: float = 0.5, level: float = LEVEL) -> int:
    """The fewest test images whose Wilson interval at ``accuracy`` is at most +-``margin`` wide.

    ``accuracy=0.5`` is the worst case (the widest interval for a given n).
    """
    if not 0 < margin < 0.5:
        raise ValueError(f"margin must be in (0, 0.5), got {margin}")
    z = z_value(level)
    n = max(1, math.floor(z * z * accuracy * (1 - accuracy) / (margin * margin) * 0.9))  # a lower bound
    hi = max(n, math.ceil(z * z * 0.25 / (margin * margin)) + 2)
    while _half(accuracy, hi, z) > margin:
        hi *= 2
    while n < hi:  # the half-width decreases with n: bisect on the smallest n that fits
        mid = (n + hi) // 2
        if _half(accuracy, mid, z) <= margin:
            hi = mid
        else:
            n = mid + 1
    return hi


def _half(p: float, n: int, z: float) -> float:
    """Wilson half-width at an exact proportion p (not rounded to k/n): smooth in n for bisection."""
    denom = 1 + z * z / n
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom


def mcnemar(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    Args:
        only_first: images the first model gets right and the second wrong.
        only_second: images the second gets right and the first wrong.

    Returns:
        ``P(|B - m/2| >= |b - m/2|)`` for ``B ~ Binomial(m, 1/2)``, ``m = b + c``; 1.0 when m is 0.
    """
    m = only_first + only_second
    if m == 0:
        return 1.0
    k = min(only_first, only_second)
    # log P(B = i) for i <= k, summed in log space: m can be tens of thousands.
    log_terms = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2 * tail)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The bootstrap percentile interval; NaN replicates (an undefined statistic) are dropped."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Difference:
    """A paired comparison of one number between two runs on the same images.

    Attributes:
        delta: second minus first (point estimate).
        ci: its confidence interval.
        p_value: two-sided p-value of "no difference".
        test: ``mcnemar`` (one accuracy) or ``paired bootstrap`` (a derived number).
    """

    delta: float
    ci: tuple[float, float]
    p_value: float
    test: str

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def paired_difference(first: np.ndarray, second: np.ndarray, delta: float, level: float = LEVEL) -> Difference:
    """Paired bootstrap of ``second - first`` from replicates drawn on the same images.

    The p-value is the two-sided bootstrap p: twice the smaller share of replicate differences on
    either side of zero (with the +1 correction of a finite resample), capped at 1.
    """
    diffs = np.asarray(second, dtype=np.float64) - np.asarray(first, dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return Difference(delta, (math.nan, math.nan), math.nan, "paired bootstrap")
    below, above = int((diffs <= 0).sum()), int((diffs >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (diffs.size + 1))
    return Difference(delta, percentile_interval(diffs, level), p, "paired bootstrap")


def mcnemar_difference(first: np.ndarray, second: np.ndarray, level: float = LEVEL) -> Difference:
    """One accuracy of two runs on the same images: McNemar's exact test and a Newcombe interval.

    Args:
        first, second: (n,) bool, each image right or wrong, aligned image by image.

    The interval is Newcombe's (1998, method 10) score interval for a paired difference of
    proportions, built from the two Wilson intervals and the correlation of the pairs.
    """
    a, b = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    n = int(a.size)
    only_first, only_second = int((a & ~b).sum()), int((~a & b).sum())
    p1, p2 = float(a.mean()) if n else math.nan, float(b.mean()) if n else math.nan
    delta = p2 - p1
    if n == 0:
        return Difference(math.nan, (math.nan, math.nan), math.nan, "mcnemar")
    l1, u1 = wilson(int(a.sum()), n, level)
    l2, u2 = wilson(int(b.sum()), n, level)
    both, neither = int((a & b).sum()), int((~a & ~b).sum())
    # phi: the correlation of the 2x2 table, 0 when a margin is empty (Newcombe's convention).
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins > 0 else 0.0
    dl = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    du = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return Difference(delta, (max(-1.0, delta - dl), min(1.0, delta + du)), mcnemar(only_first, only_second),
                      "mcnemar")


#: Resamples drawn at once: bounds the count matrix to CHUNK x n floats (10 MB at n = 10,000).
CHUNK = 250


@dataclass(frozen=True)
class Resampler:
    """Bootstrap draws of images, the same for every condition (and every run) on an image set.

    Resample ``r`` of an image set of ``n`` images depends only on (seed, the set's name, n, r),
    so every condition on one image set, and two runs on the same images, are resampled pair by
    pair: their replicates can be subtracted resample by resample.
    """

    seed: int = 0
    resamples: int = RESAMPLES

    def counts(self, name: str, n: int) -> Iterator[np.ndarray]:
        """(chunk, n) matrices: how often each image appears in each resample, CHUNK resamples at a time."""
        for start in range(0, self.resamples, CHUNK):
            rows = min(CHUNK, self.resamples - start)
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), n, start])
            if n == 0:
                yield np.zeros((rows, 0), dtype=np.float32)
                continue
            draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
            yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float32)

    def accuracies(self, name: str, correct: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Resampled accuracies of conditions on image set ``name``.

        Args:
            correct: (n,) or (n, k) bool, one column per condition.
            weights: (n,) or (n, k) non-negative image weights (a resample drawn inside the test set,
                such as a label-shift draw); None: every image counts once.

        Returns:
            (resamples,) or (resamples, k) float64: ``sum(c * w * correct) / sum(c * w)`` per resample.
        """
        x = np.asarray(correct, dtype=np.float32)
        flat = x.ndim == 1
        x = x[:, None] if flat else x
        w = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float32)
            w = np.ascontiguousarray(np.broadcast_to(w[:, None] if w.ndim == 1 else w, x.shape))
        parts = []
        for counts in self.counts(name, x.shape[0]):
            # float32 sums of small whole numbers are exact; divide in float64
            if w is None:
                parts.append((counts @ x).astype(np.float64) / max(x.shape[0], 1))
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    parts.append((counts @ (w * x)).astype(np.float64) / (counts @ w).astype(np.float64))
        out = np.concatenate(parts)
        return out[:, 0] if flat else out


def interval_text(value: float | None, ci: tuple[float, float] | None, unit: str = "fraction") -> str:
    """``0.912 [0.906, 0.917]`` style text; percent for fractions (``91.2% [90.6, 91.7]``)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit == "fraction":
        head = f"{100 * value:.1f}%"
        if ci is None or not all(math.isfinite(c) for c in ci):
            return head
        return f"{head} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    head = f"{value:.3f}"
    if ci is None or not all(math.isfinite(c) for c in ci):
        return head
    return f"{head} [{ci[0]:.3f}, {ci[1]:.3f}]"


def as_interval(value: object) -> tuple[float, float] | None:
    """A ``[low, high]`` pair from a results JSON as floats; None if absent or malformed."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return (float(value[0]), float(value[1]))
    return None
