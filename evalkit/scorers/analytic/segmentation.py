"""Segmentation: which pixels are objects, and which objects they form.

The world's background is grey and every object colour saturated, so chroma alone separates them,
whatever the brightness; labelling runs in numpy over the whole batch at once, because a Python
loop per image or per pixel would dominate the scorer's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evalkit.world.attributes import CANVAS

FG_CHROMA = 24.0  # foreground threshold on chroma (0–255 scale); the world's noise (std ≤ 6) stays below it
NOISE_FACTOR = 3.5  # the threshold rises to NOISE_FACTOR × the image's estimated chroma noise std if higher
MIN_AREA = 6  # components with fewer foreground pixels are noise (a small star has ~20)
MAX_OBJECTS = 6  # the largest components kept per image

#: orthonormal basis of the chroma plane (the plane orthogonal to the grey axis R = G = B)
_CHROMA_BASIS = np.stack(
    [np.array([2.0, -1.0, -1.0]) / math.sqrt(6.0), np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0)], axis=1
).astype(np.float32)  # (3, 2)
#: Rayleigh quantile: the 20th percentile of |chroma| of pure noise with per-axis std σ is 0.668 σ
_Q20 = 0.2
_BG_QUANTILE = 0.3  # the least saturated 30 % of an image's pixels are background (objects cover ≤ 66 %)
_RAYLEIGH_Q20 = math.sqrt(-2.0 * math.log(1.0 - _Q20))

SPLIT_SIDE = 18  # a component this long (or 17 long and at most 12 wide) holds more than one object
MIN_PART = 5  # each side of a cut keeps at least this many rows / columns


@dataclass
class Components:
    """Foreground pixels of a batch (F of them) grouped into C candidate objects, grouped by image."""

    n: np.ndarray  # (F,) image of each pixel
    y: np.ndarray  # (F,)
    x: np.ndarray  # (F,)
    comp: np.ndarray  # (F,) component id 0..C-1
    count: int  # C
    area: np.ndarray  # (C,) foreground pixels
    image: np.ndarray  # (C,) image index
    y0: np.ndarray  # (C,) foreground bounding box, inclusive
    x0: np.ndarray
    y1: np.ndarray
    x1: np.ndarray


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


def _chroma(arr: np.ndarray) -> np.ndarray:
    """``(N, 32, 32, 2)`` chroma of each pixel, less the image's background colour cast (the mean chroma
    of its least saturated pixels, estimated twice: removing a strong cast changes which pixels those are)."""
    n_img = len(arr)
    chroma = arr @ _CHROMA_BASIS  # (N, 32, 32, 2)
    flat = chroma.reshape(n_img, -1, 2)
    for _ in range(2):
        magnitude = np.sqrt((flat**2).sum(-1))
        low = magnitude <= np.quantile(magnitude, _BG_QUANTILE, axis=1, keepdims=True)
        cast = (flat * low[..., None]).sum(1) / np.maximum(low.sum(1), 1)[:, None]
        flat = flat - cast[:, None, :]
    return flat.reshape(chroma.shape)


def _foreground(chroma: np.ndarray, fg_chroma: float, noise_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask ``(N, 32, 32)`` and |chroma|, under a noise-adaptive threshold: most of a world
    image is background, whose |chroma| is Rayleigh, so a low quantile of it estimates the noise."""
    n_img = len(chroma)
    magnitude = np.sqrt((chroma**2).sum(-1))
    noise = np.quantile(magnitude.reshape(n_img, -1), _Q20, axis=1) / _RAYLEIGH_Q20
    threshold = np.maximum(fg_chroma, noise_factor * noise).astype(np.float32)
    return magnitude > threshold[:, None, None], magnitude


def _components(fg: np.ndarray, magnitude: np.ndarray) -> Components | None:
    """Connected components of the foreground, oversized ones cut apart (None when there is none)."""
    (pn, py, px), comp = _label(fg)
    if comp.size:
        comp = _split_oversized(py, px, comp, magnitude[pn, py, px])
        kept = comp >= 0
        pn, py, px = pn[kept], py[kept], px[kept]
        comp = np.unique(comp[kept], return_inverse=True)[1].reshape(-1)
    n_comp = int(comp.max()) + 1 if comp.size else 0
    if n_comp == 0:
        return None
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
    return Components(pn, py, px, comp, n_comp, area, comp_image, y0, x0, y1, x1)


def _keep_largest(c: Components, min_area: int, max_objects: int) -> np.ndarray:
    """Ids of the components to read: at most ``max_objects`` per image, largest first, grouped by image."""
    order = np.lexsort((-c.area, c.image))
    first = np.searchsorted(c.image[order], c.image[order], side="left")
    rank = np.empty(c.count, np.int64)
    rank[order] = np.arange(c.count) - first
    keep = np.flatnonzero((c.area >= min_area) & (rank < max_objects))
    return keep[np.lexsort((rank[keep], c.image[keep]))]


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
        stack = [order[bounds[c] : bounds[c + 1]]]
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
