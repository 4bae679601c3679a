"""Analysis by synthesis: every object's ``e`` map against every sprite the renderer can draw.

The hypotheses come from :func:`evalkit.world.renderer.sprite` itself, so a clean render fits one
exactly and a decoder output is read by the sprite it resembles most. The float32 GEMM over all
hypotheses only ranks them; the calls, residuals and margins come from float64 costs of the few
hypotheses they need, so that no reported number depends on the GEMM's blocking (the batch size).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from evalkit.scorers.analytic.blur import _gaussian_blur
from evalkit.world.attributes import ALL_SIZES, PATTERN_DARKEN, SHAPES, TEXTURES
from evalkit.world.renderer import sprite

WINDOW = 24  # side of the analysis window, centred on the component's e-weighted centroid
SHIFTS = (-1, 0, 1)  # sprite placements tried around the centroid-aligned one (px, each axis)
BLURS = (0.0, 0.4, 0.7, 1.0, 1.4)  # Gaussian blur std (px) of the sprite hypotheses: decoder outputs are often soft
GAIN = (0.6, 1.5)  # range of the per-object amplitude fitted to each hypothesis (contrast errors)


@functools.lru_cache(maxsize=1)
def _template_bank() -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]:
    """Every hypothesis (shape, texture, size, blur, dy, dx) as an ``e`` map in the analysis window.

    A sprite's e map is ``main + 0.45 · pattern`` coverage. It is placed so that its e-weighted
    centroid falls on the window centre (the window is centred on the component's centroid), then
    shifted by ``dy, dx`` ∈ SHIFTS. Returns ``(templates (WINDOW², H) float32, squared norms (H,),
    the hypothesis grid shape, box corners in the window (H, 2) as (row, col))``; hypotheses in C
    order over the grid (shape, texture, size, blur, dy, dx).
    """
    grid = (len(SHAPES), len(TEXTURES), len(ALL_SIZES), len(BLURS), len(SHIFTS), len(SHIFTS))
    reach = max(abs(d) for d in SHIFTS)
    looks, base = _centred_looks(grid, reach)
    bank = np.zeros(grid + (WINDOW, WINDOW), np.float32)
    corners = np.zeros(grid + (2,), np.int64)
    for b, sigma in enumerate(BLURS):
        blurred = _gaussian_blur(looks, sigma)
        for a, dy in enumerate(SHIFTS):
            for c, dx in enumerate(SHIFTS):
                bank[:, :, :, b, a, c] = blurred[
                    ..., reach - dy : reach - dy + WINDOW, reach - dx : reach - dx + WINDOW
                ]
                corners[:, :, :, b, a, c] = base + np.array([dy, dx])
    flat = bank.reshape(-1, WINDOW * WINDOW)
    norms = (flat.astype(np.float64) ** 2).sum(1).astype(np.float32)
    return np.ascontiguousarray(flat.T), norms, grid, corners.reshape(-1, 2)


def _centred_looks(grid: tuple[int, ...], reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Each (shape, texture, size) e map, centroid on the window centre, on a canvas ``reach`` px wider
    each side (so that every shifted window fits after blurring), and its unshifted box corner."""
    side = WINDOW + 2 * reach
    looks = np.zeros(grid[:3] + (side, side))
    base = np.zeros(grid[:3] + (2,), np.int64)  # unshifted box corner (row, col) in the window
    centre = WINDOW // 2
    for i, shape in enumerate(SHAPES):
        for j, texture in enumerate(TEXTURES):
            for k, size in enumerate(ALL_SIZES):
                main, dark = sprite(shape, texture, size)
                e = (main + PATTERN_DARKEN * dark).astype(np.float64)
                ty = (e.sum(1) * np.arange(size)).sum() / e.sum()
                tx = (e.sum(0) * np.arange(size)).sum() / e.sum()
                y0, x0 = int(round(centre - ty)), int(round(centre - tx))
                looks[i, j, k, reach + y0 : reach + y0 + size, reach + x0 : reach + x0 + size] = e
                base[i, j, k] = (y0, x0)
    return looks, base


@functools.lru_cache(maxsize=1)
def _template_rows() -> np.ndarray:
    return np.ascontiguousarray(_template_bank()[0].T)  # (H, WINDOW²)


def _exact_cost(e: np.ndarray, hypotheses: np.ndarray, block: int = 256) -> np.ndarray:
    """Float64 SSD (with the fitted gain) of each object's e map against the given hypotheses."""
    rows = _template_rows()
    norms = _template_bank()[1].astype(np.float64)
    out = np.empty(hypotheses.shape, np.float64)
    for s in range(0, len(e), block):
        ee = e[s : s + block].astype(np.float64)
        hh = hypotheses[s : s + block]
        dot = np.einsum("mkd,md->mk", rows[hh].astype(np.float64), ee)
        gain = np.clip(dot / norms[hh], GAIN[0], GAIN[1])
        out[s : s + block] = gain * (gain * norms[hh] - 2.0 * dot) + (ee**2).sum(1, keepdims=True)
    return np.maximum(out, 0.0)


def fit(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Best hypothesis of each object's e map ``(M, WINDOW²)``, its SSD, and the shape, texture and
    size margins (SSD of the best hypothesis with another value of the attribute minus the best SSD)."""
    best, nuisance, look_cost = _rank(e)
    hypotheses = _candidates(best, nuisance, look_cost)
    exact = _exact_cost(e, hypotheses)
    pick = exact.argmin(1)
    n = len(e)
    grid = _template_bank()[2]
    margins = []
    start = 1
    for axis in range(3):
        per_value = np.sort(exact[:, start : start + grid[axis]], axis=1)
        margins.append(per_value[:, 1] - per_value[:, 0])
        start += grid[axis]
    return hypotheses[np.arange(n), pick], exact[np.arange(n), pick], margins


def _rank(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float32 least squares over every hypothesis, the amplitude fitted per hypothesis: the best
    hypothesis, and per look (shape, texture, size) its best nuisance (blur, placement) and cost."""
    templates, norms, grid, _ = _template_bank()
    n = len(e)
    dot = e @ templates  # (M, H)
    gain = dot / norms
    np.clip(gain, GAIN[0], GAIN[1], out=gain)
    cost = gain * norms
    dot *= 2.0
    cost -= dot
    cost *= gain  # SSD minus |e|², the amplitude fitted per hypothesis
    del dot, gain
    per_look = cost.reshape(n, grid[0] * grid[1] * grid[2], -1)
    nuisance = per_look.argmin(-1)  # (M, looks): the best blur / placement of each look
    look_cost = np.take_along_axis(per_look, nuisance[..., None], -1)[..., 0]
    best_look = look_cost.argmin(1)
    return best_look * per_look.shape[-1] + nuisance[np.arange(n), best_look], nuisance, look_cost


def _candidates(best: np.ndarray, nuisance: np.ndarray, look_cost: np.ndarray) -> np.ndarray:
    """``(M, 1 + 6 + 4 + 6)`` hypotheses to cost exactly: the best, then per value of shape / texture /
    size the best look with that value (each with its best nuisance)."""
    grid = _template_bank()[2]
    n_looks = grid[0] * grid[1] * grid[2]
    n_nuisance = math.prod(grid[3:])  # blur × dy × dx: hypotheses are in C order, the look first
    look_index = np.arange(n_looks).reshape(grid[:3])
    candidates = [best[:, None]]
    for axis in range(3):
        by_value = np.moveaxis(look_index, axis, 0).reshape(grid[axis], -1)  # (values, rest)
        arg = look_cost[:, by_value].argmin(-1)  # (M, values)
        looks_of_value = by_value[np.arange(grid[axis])[None, :], arg]
        candidates.append(looks_of_value * n_nuisance + np.take_along_axis(nuisance, looks_of_value, 1))
    return np.concatenate(candidates, 1)
