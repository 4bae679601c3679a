"""Reading each kept component: its colour, then its ``e`` map in the analysis window.

Colour comes first because it is read best from the hue of the summed chroma, which neither the
darker pattern colour nor anti-aliasing with the grey background changes; the ``e`` map projects
each pixel's chroma on that colour, so shape, texture and size are read whatever the brightness.
"""

from __future__ import annotations

import numpy as np

from evalkit.scorers.analytic.segmentation import _CHROMA_BASIS, Components
from evalkit.scorers.analytic.templates import WINDOW
from evalkit.world.attributes import CANVAS, COLORS

_COLOR_CHROMA = np.array(list(COLORS.values()), np.float32) @ _CHROMA_BASIS  # (8, 2)
_COLOR_UNIT = _COLOR_CHROMA / np.linalg.norm(_COLOR_CHROMA, axis=1, keepdims=True)
_COLOR_PROJ = _COLOR_CHROMA / (np.linalg.norm(_COLOR_CHROMA, axis=1, keepdims=True) ** 2)  # e = chroma · proj


def _read_colour(chroma: np.ndarray, c: Components, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each foreground pixel's chroma ``(F, 2)``, and per kept component the nearest world colour by
    hue angle and the angle gap (degrees) between the two nearest colours, its margin."""
    pixel_chroma = chroma[c.n, c.y, c.x]  # (F, 2)
    hue_sum = np.stack(
        [np.bincount(c.comp, pixel_chroma[:, 0], c.count), np.bincount(c.comp, pixel_chroma[:, 1], c.count)], 1
    )[keep]
    hue_unit = hue_sum / np.maximum(np.linalg.norm(hue_sum, axis=1, keepdims=True), 1e-6)
    cos = hue_unit @ _COLOR_UNIT.T  # (M, 8)
    color = cos.argmax(1)
    angles = np.sort(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), axis=1)
    return pixel_chroma, color, angles[:, 1] - angles[:, 0]


def _centroids(
    pixel_chroma: np.ndarray, c: Components, keep: np.ndarray, color: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The e-weighted centroid ``(cy, cx)`` of each kept component's own pixels: the sprite hypotheses
    are centred the same way, so window and template line up to within the bank's ±1 px shifts."""
    n_keep = keep.size
    slot = np.full(c.count, -1)
    slot[keep] = np.arange(n_keep)
    in_keep = slot[c.comp] >= 0
    kslot = slot[c.comp[in_keep]]
    e_pix = np.maximum((pixel_chroma[in_keep] * _COLOR_PROJ[color[kslot]]).sum(1), 0.0) + 1e-6
    mass = np.bincount(kslot, e_pix, n_keep)
    cy = np.bincount(kslot, e_pix * c.y[in_keep], n_keep) / mass
    cx = np.bincount(kslot, e_pix * c.x[in_keep], n_keep) / mass
    return cy, cx


def _windows(
    chroma: np.ndarray, pixel_chroma: np.ndarray, c: Components, keep: np.ndarray, color: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``e = main + 0.45 · pattern`` coverage under each kept component's colour, ``(M, WINDOW²)``, in a
    window centred on its centroid, and the window origins ``wy, wx`` (image coordinates). Pixels next
    to another component are zeroed, so that a close neighbour does not distort the fit."""
    n_img, n_keep = len(chroma), keep.size
    cy, cx = _centroids(pixel_chroma, c, keep, color)
    m_img = c.image[keep]
    pad = WINDOW
    chroma_pad = np.zeros((n_img, CANVAS + 2 * pad, CANVAS + 2 * pad, 2), np.float32)
    chroma_pad[:, pad:-pad, pad:-pad] = chroma
    comp_map = np.full((n_img, CANVAS + 2 * pad, CANVAS + 2 * pad), -1, np.int64)
    comp_map[c.n, c.y + pad, c.x + pad] = c.comp
    wy = np.rint(cy).astype(np.int64) - WINDOW // 2  # window origin, image coordinates
    wx = np.rint(cx).astype(np.int64) - WINDOW // 2
    rows = (wy + pad)[:, None, None] + np.arange(WINDOW)[None, :, None]
    cols = (wx + pad)[:, None, None] + np.arange(WINDOW)[None, None, :]
    win_chroma = chroma_pad[m_img[:, None, None], rows, cols]  # (M, W, W, 2)
    win_comp = comp_map[m_img[:, None, None], rows, cols]
    valid = ~_dilate((win_comp >= 0) & (win_comp != keep[:, None, None]))  # not near another component
    e = (np.einsum("mhwc,mc->mhw", win_chroma, _COLOR_PROJ[color]) * valid).reshape(n_keep, -1)
    return e, wy, wx


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3 × 3 binary dilation of ``(M, H, W)`` masks."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    h, w = mask.shape[1:]
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy : dy + h, dx : dx + w]
    return out
