"""Detection: the stages of the analytic scorer run in order on a batch of images.

Images are read in chunks of at most 512, so that the window and hypothesis arrays (objects × 6,480
hypotheses) of a large batch stay bounded in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.scorers.analytic.reading import _read_colour, _windows
from evalkit.scorers.analytic.segmentation import (
    FG_CHROMA,
    MAX_OBJECTS,
    MIN_AREA,
    NOISE_FACTOR,
    _chroma,
    _components,
    _foreground,
    _keep_largest,
    _to_array,
)
from evalkit.scorers.analytic.templates import _template_bank, fit
from evalkit.world.attributes import ALL_SIZES, COLORS, SHAPES, TEXTURES, size_class_of

_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_SIZE_CLASS_OF_PX = {px: size_class_of(px) for px in ALL_SIZES}
_FIELDS = ("image", "color", "shape", "texture", "size_px", "box", "bbox", "area", "residual", "margins")


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
            out.append(
                {
                    "color": _COLOR_NAMES[self.color[m]],
                    "shape": SHAPES[self.shape[m]],
                    "texture": TEXTURES[self.texture[m]],
                    "size": _SIZE_CLASS_OF_PX[size_px],
                    "size_px": size_px,
                    "box": [int(v) for v in self.box[m]],
                    "bbox": [int(v) for v in self.bbox[m]],
                    "area": int(self.area[m]),
                    "residual": round(float(self.residual[m]), 4),
                    "margins": {
                        name: round(float(v), 3)
                        for name, v in zip(("color", "shape", "texture", "size"), self.margins[m])
                    },
                }
            )
        return out


def detect(
    images: Any,
    fg_chroma: float = FG_CHROMA,
    min_area: int = MIN_AREA,
    max_objects: int = MAX_OBJECTS,
    noise_factor: float = NOISE_FACTOR,
    chunk: int = 512,
) -> Detections:
    """Find and read the objects of a batch of images (tensor ``(N, 3, H, W)`` in [0, 1] or uint8
    ``(N, 32, 32, 3)``). Objects of an image come out largest first."""
    arr = _to_array(images)
    parts = [
        _detect_chunk(arr[s : s + chunk], s, fg_chroma, min_area, max_objects, noise_factor)
        for s in range(0, len(arr), chunk)
    ]
    if not parts:
        parts = [_detect_chunk(arr, 0, fg_chroma, min_area, max_objects, noise_factor)]
    return Detections(len(arr), *(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


def _empty(n_img: int) -> Detections:
    return Detections(
        n_img,
        *(
            np.zeros(shape, dtype)
            for shape, dtype in (
                (0, np.int64),
                (0, np.int64),
                (0, np.int64),
                (0, np.int64),
                (0, np.int64),
                ((0, 3), np.int64),
                ((0, 4), np.int64),
                (0, np.int64),
                (0, np.float32),
                ((0, 4), np.float32),
            )
        ),
    )


def _detect_chunk(
    arr: np.ndarray, offset: int, fg_chroma: float, min_area: int, max_objects: int, noise_factor: float
) -> Detections:
    """Segment, read the colour, cut out the e maps and fit the sprites; image indices start at ``offset``."""
    n_img = len(arr)
    if n_img == 0:
        return _empty(0)
    chroma = _chroma(arr)
    fg, magnitude = _foreground(chroma, fg_chroma, noise_factor)
    comps = _components(fg, magnitude)
    keep = _keep_largest(comps, min_area, max_objects) if comps is not None else None
    if keep is None or keep.size == 0:
        return _empty(n_img)
    pixel_chroma, color, color_margin = _read_colour(chroma, comps, keep)
    e, wy, wx = _windows(chroma, pixel_chroma, comps, keep, color)
    best, best_ssd, fit_margins = fit(e)
    _, _, grid, corners = _template_bank()
    s_i, t_i, z_i = np.unravel_index(best, grid)[:3]
    size_px = np.array(ALL_SIZES)[z_i]
    box = np.stack([wx + corners[best, 1], wy + corners[best, 0], size_px], 1)
    y0, x0, y1, x1 = comps.y0[keep], comps.x0[keep], comps.y1[keep], comps.x1[keep]
    bbox = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1)
    area = comps.area[keep]
    margins = np.stack([color_margin, *fit_margins], 1).astype(np.float32)
    return Detections(
        n_img,
        comps.image[keep] + offset,
        color,
        s_i,
        t_i,
        size_px,
        box,
        bbox,
        area,
        (best_ssd / area).astype(np.float32),
        margins,
    )
