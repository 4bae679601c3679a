"""Statistics for result rows: bootstrap confidence intervals over prompts, and paired comparisons.

Items of a prompt (its seeds) are not independent, so the bootstrap resamples *prompts*
(clusters) and averages each prompt's items: the unit of the benchmark is the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the normal 97.5 % quantile


@dataclass(frozen=True)
class Estimate:
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int  # items (images)
    n_clusters: int  # prompts


def _cluster_sums(values: np.ndarray, clusters: np.ndarray | None):
    values = np.asarray(values, dtype=np.float64)
    if clusters is None:
        return values, np.ones_like(values)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(np.float64)
    return sums, counts


def bootstrap(values, clusters=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap CI, resampling ``clusters`` (e.g. prompt ids)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), float("nan"), 0, 0)
    sums, counts = _cluster_sums(values, clusters)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boots = sums[picks].sum(1) / counts[picks].sum(1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return Estimate(
        float(values.mean()),
        float(boots.std(ddof=1)) if n_boot > 1 else 0.0,
        float(low),
        float(high),
        int(values.size),
        int(len(sums)),
    )


def binomial_floor(value: float, n: int) -> float:
    """The least standard error a mean of ``n`` scores in [0, 1] is given: the binomial error with half a
    pseudo-image, √(p′(1 − p′)/n), p′ = (value·n + ½)/(n + 1). A saturated row (every image 1, or 0)
    or a row of one prompt then keeps an honest uncertainty instead of a bootstrap error of ~0."""
    n = max(int(n), 1)
    p = (min(max(float(value), 0.0), 1.0) * n + 0.5) / (n + 1)
    return math.sqrt(p * (1 - p) / n)


def paired_floor(n: int, score_range: float = 1.0) -> float:
    """The least standard error of a mean of ``n`` paired differences of scores spanning ``score_range``:
    as if half a pseudo-image had differed by the whole range, √(½·range²)/n. So identical runs (every
    difference 0) are "no change at this n", never "infinitely significant"."""
    return score_range * math.sqrt(0.5) / max(int(n), 1) if score_range > 0 else 0.0


@dataclass(frozen=True)
class PairedComparison:
    """b − a on the same items. One procedure gives every number: the bootstrap standard error over
    prompts (floored, :func:`paired_floor`), and from it z = difference / stderr, the normal 95 % CI
    difference ± 1.96·stderr and the two-sided p = erfc(|z|/√2) — so p < 0.05 exactly when the CI
    excludes 0 and |z| > 1.96."""

    difference: float  # mean(b) - mean(a)
    stderr: float
    n: int  # paired items (images)
    n_clusters: int = 0  # prompts

    @property
    def z(self) -> float:
        if self.stderr > 0:
            return self.difference / self.stderr
        return 0.0 if self.difference == 0 else math.copysign(math.inf, self.difference)

    @property
    def ci_low(self) -> float:
        return self.difference - Z95 * self.stderr

    @property
    def ci_high(self) -> float:
        return self.difference + Z95 * self.stderr

    @property
    def p_value(self) -> float:
        return math.erfc(abs(self.z) / math.sqrt(2)) if math.isfinite(self.z) else 0.0


def paired_bootstrap(
    a, b, clusters=None, n_boot: int = 2000, seed: int = 0, score_range: float = 0.0
) -> PairedComparison:
    """Compare two systems scored on the *same* items (same prompts and seeds): b minus a.

    ``score_range``: the span of one item's value (1 for scores in [0, 1]); when given, the standard
    error is floored at :func:`paired_floor` (0: no floor, e.g. for unbounded embedding metrics).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same items: {a.shape} vs {b.shape}")
    diff = b - a
    if diff.size == 0:
        return PairedComparison(float("nan"), float("nan"), 0, 0)
    sums, counts = _cluster_sums(diff, clusters)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boots = sums[picks].sum(1) / counts[picks].sum(1)
    spread = float(boots.std(ddof=1)) if n_boot > 1 else 0.0
    return PairedComparison(
        float(diff.mean()), max(spread, paired_floor(diff.size, score_range)), int(diff.size), int(len(sums))
    )
