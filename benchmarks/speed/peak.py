"""The yardstick of the FLOP-based speed benchmarks (P6, P8): the machine's matmul peak, measured."""

from __future__ import annotations

import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of an n×n ``torch.mm`` in ``dtype`` on this machine, after one warm-up product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best
