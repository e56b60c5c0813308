"""Two-sample tests for whether new, unlabelled inputs come from the reference distribution.

* :func:`mmd_test`: kernel maximum mean discrepancy (Gretton et al. 2012) with a Gaussian kernel,
  the unbiased estimator of MMD², and a permutation p-value. The kernel matrix of the pooled
  sample is computed once; each permutation only re-sums its blocks.
* :func:`ks_test`: the two-sample Kolmogorov-Smirnov test per feature (asymptotic p-value, as
  scipy's ``ks_2samp(method="asymp")``); :func:`ks_features` tests every feature and corrects for
  the number of tests (Bonferroni, the default of alibi-detect's ``KSDrift``).

Every test returns a :class:`TestResult`; ``p_value <= alpha`` is a detection. Under no drift the
p-values are (close to) uniform, so the false-positive rate is ``alpha``: tests check that by
simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: The significance level a detection is declared at, unless given.
ALPHA = 0.05
#: Permutations of the MMD test (the p-value's resolution is 1 / (permutations + 1)).
PERMUTATIONS = 500


@dataclass(frozen=True)
class TestResult:
    """One test's outcome.

    Attributes:
        test: ``mmd``, ``ks`` or ``ks-features``.
        statistic: MMD² (unbiased), the KS distance, or the largest KS distance over features.
        p_value: the probability, with no drift, of a statistic at least this large.
        detail: what else the test says (the kernel bandwidth, features tested and rejected).
    """

    __test__ = False  # not a pytest class

    test: str
    statistic: float
    p_value: float
    detail: dict[str, float]

    def detected(self, alpha: float = ALPHA) -> bool:
        return self.p_value <= alpha

    def to_dict(self, alpha: float = ALPHA) -> dict[str, object]:
        return {"statistic": self.statistic, "p_value": self.p_value, "detected": self.detected(alpha),
                **self.detail}


def _squared_distances(z: torch.Tensor) -> torch.Tensor:
    sq = (z * z).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min_(0)


def median_bandwidth(z: torch.Tensor, max_points: int = 1000) -> float:
    """The median heuristic: the median distance between distinct points of ``z`` (its first ``max_points``)."""
    d2 = _squared_distances(z[:max_points].double())
    off = d2[~torch.eye(len(d2), dtype=torch.bool)]
    median = float(off.median().sqrt()) if off.numel() else 1.0
    return median if median > 0 else 1.0


def mmd2_unbiased(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased MMD² from the pooled kernel matrix whose first ``n`` rows are the first sample."""
    m = len(kernel) - n
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd_test(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None,
             permutations: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """Gaussian-kernel MMD two-sample test with a permutation p-value.

    Args:
        x: (n, d) reference features; y: (m, d) new features; n, m >= 2.
        bandwidth: the kernel's sigma in ``exp(-|a - b|² / (2 sigma²))``; default the median
            distance of the pooled sample.
        permutations: random relabellings of the pooled sample; the p-value is
            ``(1 + #{MMD²_perm >= MMD²}) / (1 + permutations)``.
        seed: the permutations' generator seed.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"the MMD test needs at least 2 points per sample, got {len(x)} and {len(y)}")
    z = torch.cat([x, y]).double()
    sigma = bandwidth if bandwidth is not None else median_bandwidth(z)
    kernel = torch.exp(-_squared_distances(z) / (2 * sigma * sigma))
    n = len(x)
    observed = float(mmd2_unbiased(kernel, n))
    # a relabelling equal to the observed split must count: its sum in another order may differ in the last bits
    tie = 1e-9 * max(1.0, abs(observed))
    exceed = int((_permuted_mmd2(kernel, n, permutations, seed) >= observed - tie).sum())
    return TestResult("mmd", observed, (1 + exceed) / (1 + permutations),
                      {"bandwidth": sigma, "permutations": permutations})


def _permuted_mmd2(kernel: torch.Tensor, n: int, permutations: int, seed: int, chunk: int = 100) -> torch.Tensor:
    """Unbiased MMD² of ``permutations`` random relabellings of the pooled sample.

    With ``s`` the 0/1 indicator of the relabelled first sample, every block sum is a quadratic form
    in ``s``: ``s'Ks`` (first-first), ``s'K1 - s'Ks`` (first-second) and the rest from the total, so a
    chunk of permutations costs one matrix product with the kernel.
    """
    size = len(kernel)
    m = size - n
    gen = torch.Generator().manual_seed(seed)
    rowsum, diag = kernel.sum(1), kernel.diagonal()
    total, trace = float(rowsum.sum()), float(diag.sum())
    out = []
    for start in range(0, permutations, chunk):
        k = min(chunk, permutations - start)
        rank = torch.stack([torch.randperm(size, generator=gen) for _ in range(k)], dim=1)  # (size, k)
        s = (rank < n).double()  # each column picks n points as the first sample
        quad = (s * (kernel @ s)).sum(0)  # s'Ks
        linear = s.T @ rowsum  # s'K1
        diag_x = s.T @ diag
        sxx = (quad - diag_x) / (n * (n - 1))
        syy = (total - 2 * linear + quad - (trace - diag_x)) / (m * (m - 1))
        sxy = (linear - quad) / (n * m)
        out.append(sxx + syy - 2 * sxy)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of sqrt(n) times the KS distance)."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the series converges slowly here, and the answer is 1 to double precision
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2 * total))


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """sup_t |F_a(t) - F_b(t)| of the two samples' empirical distribution functions."""
    a, b = a.double().sort().values, b.double().sort().values
    pooled = torch.cat([a, b])
    fa = torch.searchsorted(a, pooled, right=True).double() / len(a)
    fb = torch.searchsorted(b, pooled, right=True).double() / len(b)
    return float((fa - fb).abs().max())


def ks_test(a: torch.Tensor, b: torch.Tensor) -> TestResult:
    """Two-sample KS test of two 1-D samples.

    The p-value is Kolmogorov's limit at the effective size ``en = n m / (n + m)`` with Stephens'
    (1970) finite-size correction, ``Q((sqrt(en) + 0.12 + 0.11 / sqrt(en)) D)``: within a few per cent
    of scipy's ``ks_2samp(method="asymp")`` from 100 points a sample (tested).
    """
    if len(a) < 1 or len(b) < 1:
        raise ValueError("the KS test needs a point in each sample")
    d = ks_distance(a, b)
    root = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    return TestResult("ks", d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d), {})


def ks_features(x: torch.Tensor, y: torch.Tensor, alpha: float = ALPHA) -> TestResult:
    """A KS test per feature (column), Bonferroni-corrected: drift when any feature's p-value <= alpha / d."""
    d = x.shape[1]
    results = [ks_test(x[:, j], y[:, j]) for j in range(d)]
    p_min = min(r.p_value for r in results)
    return TestResult("ks-features", max(r.statistic for r in results), min(1.0, p_min * d),
                      {"features": d, "features_rejected": sum(r.p_value <= alpha / d for r in results)})
