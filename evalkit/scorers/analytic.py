"""The analytic scorer: HRS-style object detection and attribute reading for the synthetic world.

No learned model. For each image:

1. **Segment.** The world's background is grey (R = G = B) plus mild noise and every object colour,
   main or pattern, is saturated, so a pixel is foreground when its *chroma* (its distance from the
   grey axis) is high: above :data:`FG_CHROMA` = 24 (0–255 scale), or above 3.5 × the image's
   estimated chroma noise when that is higher. A colour cast of the background (the mean chroma of
   the least saturated 30 % of pixels) is removed first. Connected components (8-neighbour, labelled
   in numpy by min-label propagation with pointer jumping) are the objects; components smaller than
   ``min_area`` pixels are noise. A component too long for one object (≥ 18 px: blur can bridge the
   1-px gap the layout keeps between neighbours) is cut along its weakest row or column; any two
   objects' boxes are separated by a full background row or column, so a straight cut exists.
2. **Colour.** The summed chroma vector of a component is its hue — the same for the darker pattern
   colour and under anti-aliased blending with the grey background — and the nearest world colour
   by angle is the call.
3. **Shape, size and texture** by analysis-by-synthesis against the renderer's own sprites. A
   pixel's chroma projected on the component colour's chroma is ``e = main + 0.45 · pattern``
   coverage, exactly what :func:`evalkit.world.renderer.sprite` draws, whatever the background
   level. The ``e`` map in a 24 × 24 window centred on the component's centroid is compared by
   least squares (one matrix product for all objects of a batch) with every sprite of the world —
   6 shapes × 4 textures × 6 pixel sizes — under nuisance parameters that decoder outputs need:
   5 blur levels, 3 × 3 placements and a fitted amplitude (gain 0.6–1.5). The best fit gives shape,
   texture and size px (hence size class). Each attribute's *margin* (SSD of the best hypothesis
   with another value of that attribute minus the best SSD, in squared-coverage pixels; for colour,
   the hue-angle gap in degrees between the two nearest colours) says how clear the call was.
4. **Phrases.** Each noun phrase is read with the world grammar's vocabulary; it is satisfied
   (p = 1) when some detected object has every attribute the phrase names, else p = 0 (a phrase with
   a word outside the world's vocabulary cannot be verified: p = 0, the word is reported).
   ``score`` = fraction of satisfied phrases (HRS accuracy); ``product`` = their product.

Rows keep every question with its p and the object that satisfied it, plus the detected objects
(attributes, boxes, margins, fit residual), so a low score can be read off the row. Images of any
size are resampled to the world's 32 × 32 first. ``python -m evalkit.scorers.analytic`` measures
the scorer's accuracy on ground-truth renders, optionally degraded (see :func:`validate`).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from evalkit.contracts import Batch, Scorer
from evalkit.world.attributes import ALL_SIZES, CANVAS, COLORS, FAMILIES, PATTERN_DARKEN, SHAPES, TEXTURES, size_class_of
from evalkit.world.renderer import sprite

FG_CHROMA = 24.0  # foreground threshold on chroma (0–255 scale); the world's noise (std ≤ 6) stays below it
NOISE_FACTOR = 3.5  # the threshold rises to NOISE_FACTOR × the image's estimated chroma noise std if higher
MIN_AREA = 6  # components with fewer foreground pixels are noise (a small star has ~20)
MAX_OBJECTS = 6  # the largest components kept per image

WINDOW = 24  # side of the analysis window, centred on the component's e-weighted centroid
SHIFTS = (-1, 0, 1)  # sprite placements tried around the centroid-aligned one (px, each axis)
BLURS = (0.0, 0.4, 0.7, 1.0, 1.4)  # Gaussian blur std (px) of the sprite hypotheses: decoder outputs are often soft
GAIN = (0.6, 1.5)  # range of the per-object amplitude fitted to each hypothesis (contrast errors)

_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_SIZE_CLASS_OF_PX = {px: size_class_of(px) for px in ALL_SIZES}
#: orthonormal basis of the chroma plane (the plane orthogonal to the grey axis R = G = B)
_CHROMA_BASIS = np.stack([np.array([2.0, -1.0, -1.0]) / math.sqrt(6.0),
                          np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0)], axis=1).astype(np.float32)  # (3, 2)
_COLOR_CHROMA = np.array(list(COLORS.values()), np.float32) @ _CHROMA_BASIS  # (8, 2)
_COLOR_UNIT = _COLOR_CHROMA / np.linalg.norm(_COLOR_CHROMA, axis=1, keepdims=True)
_COLOR_PROJ = _COLOR_CHROMA / (np.linalg.norm(_COLOR_CHROMA, axis=1, keepdims=True) ** 2)  # e = chroma · proj
#: Rayleigh quantile: the 20th percentile of |chroma| of pure noise with per-axis std σ is 0.668 σ
_Q20 = 0.2
_BG_QUANTILE = 0.3  # the least saturated 30 % of an image's pixels are background (objects cover ≤ 66 %)
_RAYLEIGH_Q20 = math.sqrt(-2.0 * math.log(1.0 - _Q20))


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (zero outside)."""
    if sigma <= 0:
        return x
    r = int(math.ceil(3 * sigma))
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (0, 0)])
    x = sum(k[i] * p[..., i:i + h, :] for i in range(2 * r + 1))
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 0), (r, r)])
    return sum(k[i] * p[..., :, i:i + w] for i in range(2 * r + 1))


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
    side = WINDOW + 2 * reach  # the sprites are blurred on a canvas that every shifted window fits in
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
                looks[i, j, k, reach + y0:reach + y0 + size, reach + x0:reach + x0 + size] = e
                base[i, j, k] = (y0, x0)
    bank = np.zeros(grid + (WINDOW, WINDOW), np.float32)
    corners = np.zeros(grid + (2,), np.int64)
    for b, sigma in enumerate(BLURS):
        blurred = _gaussian_blur(looks, sigma)
        for a, dy in enumerate(SHIFTS):
            for c, dx in enumerate(SHIFTS):
                bank[:, :, :, b, a, c] = blurred[..., reach - dy:reach - dy + WINDOW, reach - dx:reach - dx + WINDOW]
                corners[:, :, :, b, a, c] = base + np.array([dy, dx])
    flat = bank.reshape(-1, WINDOW * WINDOW)
    norms = (flat.astype(np.float64) ** 2).sum(1).astype(np.float32)
    return np.ascontiguousarray(flat.T), norms, grid, corners.reshape(-1, 2)


# --------------------------------------------------------------------------- detection


@dataclass
class Detections:
    """Objects found in a batch of N images, one entry per object (arrays of length M)."""

    n_images: int
    image: np.ndarray  # (M,) image index
    color: np.ndarray  # (M,) index into COLORS
    shape: np.ndarray  # (M,) index into SHAPES
    texture: np.ndarray  # (M,) index into TEXTURES
    size_px: np.ndarray  # (M,) sprite side of the best fit
    box: np.ndarray  # (M, 3) best-fit sprite box: x, y, side
    bbox: np.ndarray  # (M, 4) foreground bounding box: x, y, w, h
    area: np.ndarray  # (M,) foreground pixels
    residual: np.ndarray  # (M,) SSD of the best fit / area (0 = a perfect render)
    margins: np.ndarray  # (M, 4) margins of color (hue angle, degrees), shape, texture, size (SSD)

    def objects(self, i: int) -> list[dict]:
        """The objects of image ``i`` as JSON-able dicts, largest first."""
        out = []
        lo, hi = np.searchsorted(self.image, [i, i + 1])  # objects are grouped by image, in order
        for m in range(lo, hi):
            size_px = int(self.size_px[m])
            out.append({
                "color": _COLOR_NAMES[self.color[m]],
                "shape": SHAPES[self.shape[m]],
                "texture": TEXTURES[self.texture[m]],
                "size": _SIZE_CLASS_OF_PX[size_px],
                "size_px": size_px,
                "box": [int(v) for v in self.box[m]],
                "bbox": [int(v) for v in self.bbox[m]],
                "area": int(self.area[m]),
                "residual": round(float(self.residual[m]), 4),
                "margins": {name: round(float(v), 3) for name, v in
                            zip(("color", "shape", "texture", "size"), self.margins[m])},
            })
        return out


def _to_array(images: Any) -> np.ndarray:
    """``(N, 32, 32, 3)`` float32 on the 0–255 scale from a tensor ``(N, 3, H, W)`` in [0, 1] or
    a uint8 array ``(N, 32, 32, 3)`` as :func:`evalkit.world.render` returns."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected a (N, H, W, 3) array, got {images.shape}")
        arr = images.astype(np.float32)
        if images.dtype != np.uint8:
            arr = arr * 255.0
        if arr.shape[1:3] == (CANVAS, CANVAS):
            return arr
        images = torch.from_numpy(arr / 255.0).permute(0, 3, 1, 2)
    if not torch.is_tensor(images) or images.ndim != 4:
        raise ValueError("expected images as a (N, 3, H, W) tensor in [0, 1]")
    x = images.detach().to("cpu", torch.float32)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3]
    elif x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got {x.shape[1]}")
    if x.shape[-2:] != (CANVAS, CANVAS) and x.shape[0] > 0:
        if x.shape[-1] >= CANVAS and x.shape[-2] >= CANVAS:
            x = torch.nn.functional.interpolate(x, size=(CANVAS, CANVAS), mode="area")
        else:
            x = torch.nn.functional.interpolate(x, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
    elif x.shape[-2:] != (CANVAS, CANVAS):
        x = x.new_zeros((0, 3, CANVAS, CANVAS))
    x = torch.nan_to_num(x, nan=0.0).clamp_(0.0, 1.0) * 255.0
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _label(fg: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """8-connected components of ``fg (N, H, W)``: foreground coordinates ``(n, y, x)`` and, per
    foreground pixel, a component id ``0..C-1`` (components never span images)."""
    n_img, h, w = fg.shape
    padded = np.zeros((n_img, h + 2, w + 2), bool)
    padded[:, 1:-1, 1:-1] = fg
    n, y, x = np.nonzero(padded)
    count = n.size
    if count == 0:
        return (n, y - 1, x - 1), np.zeros(0, np.int64)
    index = np.full(padded.shape, -1, np.int32)
    own = np.arange(count, dtype=np.int32)
    index[n, y, x] = own
    neighbours = np.empty((count, 9), np.int32)
    k = 0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            nb = index[n, y + dy, x + dx]
            neighbours[:, k] = np.where(nb >= 0, nb, own)
            k += 1
    label = own
    while True:  # min-label propagation; pointer jumping makes it converge in a few rounds
        new = label[neighbours].min(axis=1)
        new = new[new]
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    _, comp = np.unique(label, return_inverse=True)
    return (n, y - 1, x - 1), comp.reshape(-1)


SPLIT_SIDE = 18  # a component this long (or 17 long and at most 12 wide) holds more than one object
MIN_PART = 5  # each side of a cut keeps at least this many rows / columns


def _split_oversized(y: np.ndarray, x: np.ndarray, comp: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Cut components too large for one object of the world (blur can bridge the 1-px gap between
    neighbours) along their weakest row or column, recursively; cut-line pixels get id -1.

    Any two objects' boxes are separated by a full background row or column, so a straight cut
    always exists; the cut is where the component's chroma profile has its deepest valley.
    """
    n_comp = int(comp.max()) + 1
    y0 = np.full(n_comp, CANVAS)
    y1 = np.full(n_comp, -1)
    x0 = np.full(n_comp, CANVAS)
    x1 = np.full(n_comp, -1)
    np.minimum.at(y0, comp, y)
    np.maximum.at(y1, comp, y)
    np.minimum.at(x0, comp, x)
    np.maximum.at(x1, comp, x)
    long_side = np.maximum(y1 - y0, x1 - x0) + 1
    short_side = np.minimum(y1 - y0, x1 - x0) + 1
    oversized = np.flatnonzero((long_side >= SPLIT_SIDE) | ((long_side >= SPLIT_SIDE - 1) & (short_side <= 12)))
    if oversized.size == 0:
        return comp
    comp = comp.copy()
    next_id = n_comp
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
    for c in oversized.tolist():
        stack = [order[bounds[c]:bounds[c + 1]]]
        first = True
        while stack:
            members = stack.pop()
            cut = _best_cut(y[members], x[members], weight[members])
            if cut is None:
                if not first:
                    comp[members] = next_id
                    next_id += 1
                first = False
                continue
            axis, at = cut
            coord = y[members] if axis == 0 else x[members]
            comp[members[coord == at]] = -1
            stack += [members[coord < at], members[coord > at]]
            first = False
    return comp


def _best_cut(y: np.ndarray, x: np.ndarray, weight: np.ndarray) -> tuple[int, int] | None:
    """The row (axis 0) or column (axis 1) to cut a component at, or None when it looks like one object."""
    long_side = max(y.max() - y.min(), x.max() - x.min()) + 1
    short_side = min(y.max() - y.min(), x.max() - x.min()) + 1
    if not (long_side >= SPLIT_SIDE or (long_side >= SPLIT_SIDE - 1 and short_side <= 12)):
        return None
    best = None
    for axis, coord in ((0, y), (1, x)):
        start = coord.min()
        profile = np.bincount(coord - start, weight)
        if profile.size < 2 * MIN_PART + 1:
            continue
        left = np.maximum.accumulate(profile)
        right = np.maximum.accumulate(profile[::-1])[::-1]
        for k in range(MIN_PART, profile.size - MIN_PART):
            depth = profile[k] / max(min(left[k - 1], right[k + 1]), 1e-6)
            if best is None or depth < best[0]:
                best = (depth, axis, int(start + k))
    if best is None or best[0] > 0.8:
        return None
    return best[1], best[2]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3 × 3 binary dilation of ``(M, H, W)`` masks."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    h, w = mask.shape[1:]
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy:dy + h, dx:dx + w]
    return out


def _exact_cost(e: np.ndarray, hypotheses: np.ndarray, block: int = 256) -> np.ndarray:
    """Float64 SSD (with the fitted gain) of each object's e map against the given hypotheses."""
    rows = _template_rows()
    norms = _template_bank()[1].astype(np.float64)
    out = np.empty(hypotheses.shape, np.float64)
    for s in range(0, len(e), block):
        ee = e[s:s + block].astype(np.float64)
        hh = hypotheses[s:s + block]
        dot = np.einsum("mkd,md->mk", rows[hh].astype(np.float64), ee)
        gain = np.clip(dot / norms[hh], GAIN[0], GAIN[1])
        out[s:s + block] = gain * (gain * norms[hh] - 2.0 * dot) + (ee ** 2).sum(1, keepdims=True)
    return np.maximum(out, 0.0)


@functools.lru_cache(maxsize=1)
def _template_rows() -> np.ndarray:
    return np.ascontiguousarray(_template_bank()[0].T)  # (H, WINDOW²)


def detect(images: Any, fg_chroma: float = FG_CHROMA, min_area: int = MIN_AREA,
           max_objects: int = MAX_OBJECTS, noise_factor: float = NOISE_FACTOR, chunk: int = 512) -> Detections:
    """Find and read the objects of a batch of images (tensor ``(N, 3, H, W)`` in [0, 1] or uint8
    ``(N, 32, 32, 3)``). Objects of an image come out largest first."""
    arr = _to_array(images)
    parts = [_detect_chunk(arr[s:s + chunk], s, fg_chroma, min_area, max_objects, noise_factor)
             for s in range(0, len(arr), chunk)]
    if not parts:
        parts = [_detect_chunk(arr, 0, fg_chroma, min_area, max_objects, noise_factor)]
    return Detections(len(arr), *(np.concatenate([getattr(p, f) for p in parts])
                                  for f in ("image", "color", "shape", "texture", "size_px", "box", "bbox",
                                            "area", "residual", "margins")))


def _empty(n_img: int) -> Detections:
    return Detections(n_img, *(np.zeros(shape, dtype) for shape, dtype in (
        (0, np.int64), (0, np.int64), (0, np.int64), (0, np.int64), (0, np.int64), ((0, 3), np.int64),
        ((0, 4), np.int64), (0, np.int64), (0, np.float32), ((0, 4), np.float32))))


def _detect_chunk(arr: np.ndarray, offset: int, fg_chroma: float, min_area: int, max_objects: int,
                  noise_factor: float) -> Detections:
    n_img = len(arr)
    if n_img == 0:
        return _empty(0)
    chroma = arr @ _CHROMA_BASIS  # (N, 32, 32, 2)
    # remove a colour cast of the background: the mean chroma of the image's least saturated pixels
    flat = chroma.reshape(n_img, -1, 2)
    for _ in range(2):
        magnitude = np.sqrt((flat ** 2).sum(-1))
        low = magnitude <= np.quantile(magnitude, _BG_QUANTILE, axis=1, keepdims=True)
        cast = (flat * low[..., None]).sum(1) / np.maximum(low.sum(1), 1)[:, None]
        flat = flat - cast[:, None, :]
    chroma = flat.reshape(chroma.shape)
    magnitude = np.sqrt((chroma ** 2).sum(-1))
    # noise-adaptive threshold: most of a world image is background, whose |chroma| is Rayleigh
    noise = np.quantile(magnitude.reshape(n_img, -1), _Q20, axis=1) / _RAYLEIGH_Q20
    threshold = np.maximum(fg_chroma, noise_factor * noise).astype(np.float32)
    fg = magnitude > threshold[:, None, None]
    (pn, py, px), comp = _label(fg)
    if comp.size:
        comp = _split_oversized(py, px, comp, magnitude[pn, py, px])
        kept = comp >= 0
        pn, py, px = pn[kept], py[kept], px[kept]
        comp = np.unique(comp[kept], return_inverse=True)[1].reshape(-1)
    n_comp = int(comp.max()) + 1 if comp.size else 0
    if n_comp == 0:
        return _empty(n_img)
    area = np.bincount(comp, minlength=n_comp)
    comp_image = np.zeros(n_comp, np.int64)
    comp_image[comp] = pn
    y0 = np.full(n_comp, CANVAS)
    x0 = np.full(n_comp, CANVAS)
    y1 = np.full(n_comp, -1)
    x1 = np.full(n_comp, -1)
    np.minimum.at(y0, comp, py)
    np.minimum.at(x0, comp, px)
    np.maximum.at(y1, comp, py)
    np.maximum.at(x1, comp, px)

    # keep the largest components of each image
    order = np.lexsort((-area, comp_image))
    first = np.searchsorted(comp_image[order], comp_image[order], side="left")
    rank = np.empty(n_comp, np.int64)
    rank[order] = np.arange(n_comp) - first
    keep = np.flatnonzero((area >= min_area) & (rank < max_objects))
    keep = keep[np.lexsort((rank[keep], comp_image[keep]))]
    if keep.size == 0:
        return _empty(n_img)
    n_keep = keep.size
    slot = np.full(n_comp, -1)
    slot[keep] = np.arange(n_keep)

    # colour: the hue of the component's summed chroma vectors
    pixel_chroma = chroma[pn, py, px]  # (F, 2)
    hue_sum = np.stack([np.bincount(comp, pixel_chroma[:, 0], n_comp),
                        np.bincount(comp, pixel_chroma[:, 1], n_comp)], 1)[keep]
    hue_unit = hue_sum / np.maximum(np.linalg.norm(hue_sum, axis=1, keepdims=True), 1e-6)
    cos = hue_unit @ _COLOR_UNIT.T  # (M, 8)
    color = cos.argmax(1)
    angles = np.sort(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), axis=1)
    color_margin = angles[:, 1] - angles[:, 0]

    # e = main + 0.45 pattern coverage under the component's colour; the e-weighted centroid
    # of the component's own pixels centres its analysis window
    in_keep = slot[comp] >= 0
    kslot = slot[comp[in_keep]]
    e_pix = np.maximum((pixel_chroma[in_keep] * _COLOR_PROJ[color[kslot]]).sum(1), 0.0) + 1e-6
    mass = np.bincount(kslot, e_pix, n_keep)
    cy = np.bincount(kslot, e_pix * py[in_keep], n_keep) / mass
    cx = np.bincount(kslot, e_pix * px[in_keep], n_keep) / mass
    m_img = comp_image[keep]
    pad = WINDOW
    chroma_pad = np.zeros((n_img, CANVAS + 2 * pad, CANVAS + 2 * pad, 2), np.float32)
    chroma_pad[:, pad:-pad, pad:-pad] = chroma
    comp_map = np.full((n_img, CANVAS + 2 * pad, CANVAS + 2 * pad), -1, np.int64)
    comp_map[pn, py + pad, px + pad] = comp
    wy = np.rint(cy).astype(np.int64) - WINDOW // 2  # window origin, image coordinates
    wx = np.rint(cx).astype(np.int64) - WINDOW // 2
    rows = (wy + pad)[:, None, None] + np.arange(WINDOW)[None, :, None]
    cols = (wx + pad)[:, None, None] + np.arange(WINDOW)[None, None, :]
    win_chroma = chroma_pad[m_img[:, None, None], rows, cols]  # (M, W, W, 2)
    win_comp = comp_map[m_img[:, None, None], rows, cols]
    valid = ~_dilate((win_comp >= 0) & (win_comp != keep[:, None, None]))  # not near another component
    e = (np.einsum("mhwc,mc->mhw", win_chroma, _COLOR_PROJ[color]) * valid).reshape(n_keep, -1)

    # analysis by synthesis: least squares over every hypothesis, with a fitted amplitude
    templates, norms, grid, corners = _template_bank()
    dot = e @ templates  # (M, H)
    gain = dot / norms
    np.clip(gain, GAIN[0], GAIN[1], out=gain)
    cost = gain * norms
    dot *= 2.0
    cost -= dot
    cost *= gain  # SSD minus |e|², the amplitude fitted per hypothesis
    del dot, gain
    n_looks = grid[0] * grid[1] * grid[2]
    per_look = cost.reshape(n_keep, n_looks, -1)
    nuisance = per_look.argmin(-1)  # (M, looks): the best blur / placement of each look
    look_cost = np.take_along_axis(per_look, nuisance[..., None], -1)[..., 0]
    best_look = look_cost.argmin(1)
    best = best_look * per_look.shape[-1] + nuisance[np.arange(n_keep), best_look]
    # the calls and the reported numbers (fit residual, margins) come from float64 costs of the
    # few hypotheses they need, so that they do not depend on the float32 GEMM's blocking (the batch)
    look_index = np.arange(n_looks).reshape(grid[:3])
    candidates = [best[:, None]]
    for axis in range(3):  # per value of shape / texture / size: its best look
        by_value = np.moveaxis(look_index, axis, 0).reshape(grid[axis], -1)  # (values, rest)
        arg = look_cost[:, by_value].argmin(-1)  # (M, values)
        looks_of_value = by_value[np.arange(grid[axis])[None, :], arg]
        candidates.append(looks_of_value * per_look.shape[-1]
                          + np.take_along_axis(nuisance, looks_of_value, 1))
    hypotheses = np.concatenate(candidates, 1)  # (M, 1 + 6 + 4 + 6)
    exact = _exact_cost(e, hypotheses)
    pick = exact.argmin(1)
    best = hypotheses[np.arange(n_keep), pick]
    best_ssd = exact[np.arange(n_keep), pick]
    s_i, t_i, z_i = np.unravel_index(best, grid)[:3]
    margins = [color_margin]
    start = 1
    for axis in range(3):
        per_value = np.sort(exact[:, start:start + grid[axis]], axis=1)
        margins.append(per_value[:, 1] - per_value[:, 0])
        start += grid[axis]
    size_px = np.array(ALL_SIZES)[z_i]
    box = np.stack([wx + corners[best, 1], wy + corners[best, 0], size_px], 1)
    bbox = np.stack([x0[keep], y0[keep], x1[keep] - x0[keep] + 1, y1[keep] - y0[keep] + 1], 1)
    return Detections(
        n_img, m_img + offset, color, s_i, t_i, size_px, box, bbox, area[keep],
        (best_ssd / area[keep]).astype(np.float32),
        np.stack(margins, 1).astype(np.float32),
    )


# --------------------------------------------------------------------------- phrases

_WORD_FAMILY = {word: family for family, words in FAMILIES.items() for word in words}
_ARTICLES = frozenset({"a", "an", "the", "one"})


@functools.lru_cache(maxsize=4096)
def parse_phrase(phrase: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``((family, value), ...), (unknown words, ...)`` of a noun phrase, e.g. "a big red star?" →
    ``((size, big), (color, red), (shape, star)), ()``. Families: color, shape, texture, size."""
    words = phrase.lower().replace("?", " ").replace(",", " ").replace(".", " ").split()
    fields: dict[str, str] = {}
    unknown = []
    for word in words:
        if word in _ARTICLES:
            continue
        family = _WORD_FAMILY.get(word)
        if family is None or (family in fields and fields[family] != word):
            unknown.append(word)
        else:
            fields[family] = word
    return tuple(fields.items()), tuple(unknown)


def noun_phrases(item) -> tuple[str, ...]:
    """The item's noun phrases, or its prompt split on " and " when the suite left them open."""
    if item.noun_phrases:
        return tuple(item.noun_phrases)
    parts = [p.strip() for p in item.prompt.strip().rstrip(".").split(" and ")]
    return tuple(p for p in parts if p)


def unreadable(item) -> str | None:
    """Why the world's phrase grammar cannot read ``item`` (its words outside the world's vocabulary), or None:
    the ``not_applicable`` of every scorer of the synthetic world (a score of such a prompt means nothing)."""
    words = sorted({w for phrase in noun_phrases(item) for w in parse_phrase(phrase)[1]})
    return f"words outside the synthetic world's vocabulary ({', '.join(words)})" if words else None


def _satisfies(obj: dict, fields: tuple[tuple[str, str], ...]) -> bool:
    return all(obj[family] == value for family, value in fields)


def score_phrases(phrases: Sequence[str], objects: list[dict]) -> tuple[list[dict], float, float]:
    """Questions (``{"question", "p", "object"[, "unknown"]}``), HRS accuracy and product."""
    questions = []
    for phrase in phrases:
        fields, unknown = parse_phrase(phrase)
        match = None
        if not unknown and fields:
            match = next((j for j, obj in enumerate(objects) if _satisfies(obj, fields)), None)
        q = {"question": f"{phrase}?", "p": 1.0 if match is not None else 0.0, "object": match}
        if unknown:
            q["unknown"] = list(unknown)
        questions.append(q)
    if not questions:
        return questions, 1.0, 1.0
    ps = [q["p"] for q in questions]
    return questions, sum(ps) / len(ps), float(math.prod(ps))


# --------------------------------------------------------------------------- the scorer


class AnalyticScorer(Scorer):
    """HRS-style scorer of the synthetic world: detect objects, read their attributes, check phrases.

    ``score`` is the fraction of the prompt's noun phrases that some detected object satisfies;
    rows also carry ``product`` (all phrases satisfied: 1, else 0), the ``questions`` with their
    p ∈ {0, 1} and the detected ``objects``.
    """

    name = "analytic"
    version = "1"
    #: no torch modules: it reads the images on the CPU into numpy (float32 / float64) on any --device
    supported_dtypes = ("float32",)

    def __init__(self, fg_chroma: float = FG_CHROMA, min_area: int = MIN_AREA, max_objects: int = MAX_OBJECTS,
                 noise_factor: float = NOISE_FACTOR):
        super().__init__()
        self.fg_chroma = float(fg_chroma)
        self.noise_factor = float(noise_factor)
        self.min_area = int(min_area)
        self.max_objects = int(max_objects)

    @classmethod
    def tiny(cls) -> "AnalyticScorer":
        return cls()

    def not_applicable(self, item) -> str | None:
        return unreadable(item)

    def detect(self, images: Any) -> Detections:
        return detect(images, self.fg_chroma, self.min_area, self.max_objects, self.noise_factor)

    def score(self, images: Any, batch: Batch) -> list[dict]:
        if len(images) != len(batch):
            raise ValueError(f"{len(images)} images for a batch of {len(batch)}")
        found = self.detect(images)
        rows = []
        for i, item in enumerate(batch.items):
            objects = found.objects(i)
            questions, accuracy, product = score_phrases(noun_phrases(item), objects)
            rows.append({"score": accuracy, "product": product, "questions": questions, "objects": objects})
        return rows


# --------------------------------------------------------------------------- validation on renders


def _match(gt: Sequence, boxes: np.ndarray) -> dict[int, int]:
    """Greedy one-to-one matching of ground-truth objects to detected boxes by IoU ≥ 0.5."""
    pairs = []
    for g, obj in enumerate(gt):
        for d, (x, y, s) in enumerate(boxes):
            ix = max(0, min(obj.x + obj.size_px, x + s) - max(obj.x, x))
            iy = max(0, min(obj.y + obj.size_px, y + s) - max(obj.y, y))
            inter = ix * iy
            iou = inter / (obj.size_px ** 2 + s * s - inter)
            if iou >= 0.5:
                pairs.append((-iou, g, d))
    out: dict[int, int] = {}
    used = set()
    for _, g, d in sorted(pairs):
        if g not in out and d not in used:
            out[g] = d
            used.add(d)
    return out


def degrade(images: np.ndarray, blur: float = 0.0, noise: float = 0.0, gain: float = 1.0,
            cast: Sequence[float] = (0.0, 0.0, 0.0), seed: int = 0) -> np.ndarray:
    """Stand-ins for decoder artefacts on uint8 renders ``(N, 32, 32, 3)``: Gaussian blur (std in
    px), a contrast gain around 0, an additive colour cast and Gaussian pixel noise (std, 0–255)."""
    x = images.astype(np.float32)
    if blur > 0:
        x = np.moveaxis(_gaussian_blur(np.moveaxis(x, -1, 1), blur), 1, -1)
    x = x * gain + np.asarray(cast, np.float32)
    if noise > 0:
        x = x + noise * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


_FAMILY_NAMES = ("color", "shape", "texture", "size")


def validate(category: str, n_prompts: int = 300, seeds: Sequence[int] = (42, 43), split: str = "val",
             scorer: AnalyticScorer | None = None, keep_failures: int = 20, **degradation: Any) -> dict:
    """Accuracy of the scorer on ground-truth renders of one category.

    Renders (prompt, seed) for the first ``n_prompts`` prompts of ``split`` and each seed, and the
    attribute-swapped scene of the same pair (optionally degraded: keyword arguments of
    :func:`degrade`). Reports detection (each scene object found once, by box IoU ≥ 0.5; extra
    detections), per-attribute accuracy of matched objects (color, shape, texture, size class), the
    most frequent confusions, and the phrase-level agreement of the scorer's p with the ground truth
    (does some scene object satisfy the phrase?) on true renders and on swapped renders scored
    against the original prompt, whose phrases the swapped scene does not satisfy.
    """
    from evalkit.world import render, sample_scene, split_prompts

    scorer = scorer or AnalyticScorer()
    _template_bank()  # built once (≈0.1 s), outside the timing
    prompts = split_prompts(category, split)[:n_prompts]
    pairs = [(p.spec, s) for p in prompts for s in seeds]
    result: dict[str, Any] = {"category": category, "split": split, "images": len(pairs),
                              "degradation": degradation}
    failures: list[dict] = []
    for kind in ("true", "swapped"):
        scenes = [sample_scene(spec.swapped() if kind == "swapped" else spec, seed) for spec, seed in pairs]
        images = render(scenes)
        if degradation:
            images = degrade(images, **degradation)
        start = time.perf_counter()
        found = scorer.detect(images)
        elapsed = time.perf_counter() - start
        counts = {"objects": 0, "found": 0, "extra": 0, "color": 0, "shape": 0, "texture": 0, "size": 0, "all": 0}
        confusions: dict[str, int] = {}
        phrase_agree = phrase_total = 0
        scores = []
        for i, ((spec, seed), scene) in enumerate(zip(pairs, scenes)):
            objects = found.objects(i)
            matched = _match(scene.objects, np.array([o["box"] for o in objects]).reshape(-1, 3))
            counts["objects"] += len(scene.objects)
            counts["found"] += len(matched)
            counts["extra"] += len(objects) - len(matched)
            wrong = []
            for g, d in matched.items():
                truth, got = scene.objects[g], objects[d]
                ok_all = True
                for family, true_value in zip(_FAMILY_NAMES, (truth.color, truth.shape, truth.texture, truth.size_class)):
                    ok = got[family] == true_value
                    counts[family] += ok
                    ok_all &= ok
                    if not ok:
                        wrong.append({"object": g, "family": family, "truth": true_value, "got": got[family],
                                      "size_px": truth.size_px})
                        key = f"{family}: {true_value} -> {got[family]} ({truth.size_px} px)"
                        confusions[key] = confusions.get(key, 0) + 1
                counts["all"] += ok_all
            missed = [g for g in range(len(scene.objects)) if g not in matched]
            questions, accuracy, _ = score_phrases(spec.noun_phrases, objects)
            scores.append(accuracy)
            truth_p = [float(any(o.satisfies(phrase) for o in scene.objects)) for phrase in spec.objects]
            agree = [q["p"] == t for q, t in zip(questions, truth_p)]
            phrase_agree += sum(agree)
            phrase_total += len(agree)
            if (wrong or missed or len(objects) > len(matched) or not all(agree)) and len(failures) < keep_failures:
                failures.append({"kind": kind, "caption": spec.text, "seed": seed, "index": i, "wrong": wrong,
                                 "missed": missed, "extra": len(objects) - len(matched),
                                 "phrases_disagree": [q["question"] for q, a in zip(questions, agree) if not a],
                                 "objects": objects})
        n_found = max(counts["found"], 1)
        result[kind] = {
            "detected": counts["found"] / max(counts["objects"], 1),
            "extra_per_image": counts["extra"] / max(len(pairs), 1),
            **{f"acc_{f}": counts[f] / n_found for f in (*_FAMILY_NAMES, "all")},
            "phrase_agreement": phrase_agree / max(phrase_total, 1),
            "mean_score": float(np.mean(scores)) if scores else float("nan"),
            "images_per_s": len(pairs) / max(elapsed, 1e-9),
            "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:10]),
        }
    result["failures"] = failures
    return result


def _dump_failures(result: dict, out_dir: str, scale: int = 8) -> list[str]:
    """Write each kept failure as an upscaled PNG (``{category}-{kind}-{index}.png``)."""
    from pathlib import Path

    from PIL import Image

    from evalkit.world import parse_caption, render, sample_scene

    paths = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for f in result["failures"]:
        spec = parse_caption(f["caption"])
        scene = sample_scene(spec.swapped() if f["kind"] == "swapped" else spec, f["seed"])
        image = render([scene])
        if result.get("degradation"):
            image = degrade(image, **result["degradation"])
        big = np.kron(image[0], np.ones((scale, scale, 1), np.uint8))
        path = Path(out_dir) / f"{result['category']}-{f['kind']}-{f['index']}.png"
        Image.fromarray(big).save(path)
        paths.append(str(path))
    return paths


def _table(results: list[dict]) -> str:
    head = ("category", "renders", "detected", "extra/img", "color", "shape", "texture", "size", "all",
            "phrase agr.", "mean score", "img/s")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        for kind in ("true", "swapped"):
            k = r[kind]
            lines.append(" | ".join([
                f"{r['category']}", f"{kind} ({r['images']})", f"{k['detected']:.4f}", f"{k['extra_per_image']:.4f}",
                *(f"{k['acc_' + f]:.4f}" for f in ("color", "shape", "texture", "size", "all")),
                f"{k['phrase_agreement']:.4f}", f"{k['mean_score']:.4f}", f"{k['images_per_s']:.0f}",
            ]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evalkit.scorers.analytic",
                                     description="Measure the analytic scorer on ground-truth renders.")
    parser.add_argument("--categories", nargs="+", default=["color", "shape", "texture"])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--split", default="val")
    parser.add_argument("--failures", default=None, help="write failure PNGs (×8) to this directory")
    parser.add_argument("--json", default=None, help="write the full results (with failures) as JSON here")
    parser.add_argument("--blur", type=float, default=0.0, help="degrade renders: Gaussian blur std (px)")
    parser.add_argument("--noise", type=float, default=0.0, help="degrade renders: extra pixel noise std (0-255)")
    parser.add_argument("--gain", type=float, default=1.0, help="degrade renders: contrast gain")
    parser.add_argument("--show", type=int, default=5, help="failures to print per category")
    args = parser.parse_args(argv)
    degradation = {k: v for k, v in (("blur", args.blur), ("noise", args.noise), ("gain", args.gain))
                   if v != (1.0 if k == "gain" else 0.0)}
    results = [validate(c, args.prompts, args.seeds, args.split, **degradation) for c in args.categories]
    print(f"renders: first {args.prompts} {args.split} prompts x seeds {args.seeds}; degradation: {degradation or 'none'}")
    print(_table(results))
    for r in results:
        for kind in ("true", "swapped"):
            if r[kind]["confusions"]:
                print(f"{r['category']} {kind} confusions: {r[kind]['confusions']}")
        for f in r["failures"][:args.show]:
            print(json.dumps({"category": r["category"], **{k: v for k, v in f.items() if k != "objects"}}))
        if args.failures:
            _dump_failures(r, args.failures)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
