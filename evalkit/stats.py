"""Statistics for result rows: bootstrap confidence intervals over prompts, and paired comparisons.

Items of a prompt (its seeds) are not independent, so the bootstrap resamples *prompts*
(clusters) and averages each prompt's items: the unit of the benchmark is the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    return Estimate(float(values.mean()), float(boots.std(ddof=1)) if n_boot > 1 else 0.0, float(low), float(high),
                    int(values.size), int(len(sums)))


@dataclass(frozen=True)
class PairedComparison:
    difference: float  # mean(b) - mean(a)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap p-value for "no difference"
    n: int
    stderr: float = float("nan")  # bootstrap standard error of the difference

    @property
    def z(self) -> float:
        """The difference in standard errors (inf when the paired differences never vary)."""
        if self.stderr > 0:
            return self.difference / self.stderr
        return 0.0 if self.difference == 0 else float("inf") * (1 if self.difference > 0 else -1)


def paired_bootstrap(a, b, clusters=None, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> PairedComparison:
    """Compare two systems scored on the *same* items (same prompts and seeds): b minus a."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same items: {a.shape} vs {b.shape}")
    diff = b - a
    sums, counts = _cluster_sums(diff, clusters)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boots = sums[picks].sum(1) / counts[picks].sum(1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    p = 2 * min((boots <= 0).mean(), (boots >= 0).mean())
    return PairedComparison(float(diff.mean()), float(low), float(high), float(min(1.0, p)), int(diff.size),
                            float(boots.std(ddof=1)) if n_boot > 1 else float("nan"))
