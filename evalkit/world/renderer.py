"""The renderer: scenes → 32×32 RGB uint8 images (and per-object coverage masks on request).

Every (shape, texture, size) sprite is drawn once at :data:`SUPERSAMPLE`× resolution and
box-downsampled to anti-aliased coverage maps; rendering a scene only composites its 2–3 sprites
on a noisy background, so 50,000 images take seconds. An image is a pure function of its
:class:`~evalkit.world.scene.Scene`: its background noise is one of a fixed bank of Gaussian noise
fields, picked by the scene's noise seed, so no image depends on the batch it is rendered in.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from evalkit.world.attributes import ALL_SIZES, CANVAS, COLORS, PATTERN_DARKEN, SHAPES, TEXTURES
from evalkit.world.scene import MAX_OBJECTS, Scene

SUPERSAMPLE = 4
STRIPE_PERIOD = 4.0  # px along each axis, diagonal stripes half dark
DOT_PERIOD = 3.0  # px between dot centres
DOT_RADIUS = 0.6  # px
CHECK_SIZE = 3.0  # px per check
RIM_PX = 0.75  # width of the pattern-free rim inside each textured shape
MAX_SIZE = max(ALL_SIZES)
NOISE_FIELDS = 1024  # fixed unit Gaussian noise fields; a scene's noise seed picks one
CHUNK = 256  # images composited at once (small chunks stay in cache: faster than large ones)

_STAR_INNER = 0.5  # inner / outer radius of the 5-point star (fat enough to read at 8 px)


def _polygon_inside(u: np.ndarray, v: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test on grids ``u, v`` (unit-box coordinates, v downwards)."""
    inside = np.zeros(u.shape, bool)
    n = len(points)
    for i in range(n):
        (u1, v1), (u2, v2) = points[i], points[(i + 1) % n]
        crosses = (v1 > v) != (v2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            u_at = u1 + (v - v1) * (u2 - u1) / (v2 - v1)
        inside ^= crosses & (u < u_at)
    return inside


def _star_points() -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.5 * _STAR_INNER)
    return [(0.5 + r * np.cos(a), 0.55 + r * np.sin(a)) for r, a in zip(radii, angles)]


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points of the unit box (u right, v down) lie inside ``shape``."""
    du, dv = np.abs(u - 0.5), np.abs(v - 0.5)
    if shape == "circle":
        return du**2 + dv**2 <= 0.25
    if shape == "square":
        return np.maximum(du, dv) <= 0.45
    if shape == "diamond":
        return du + dv <= 0.5
    if shape == "cross":
        return np.minimum(du, dv) <= 0.19
    if shape == "triangle":
        return _polygon_inside(u, v, [(0.5, 0.04), (0.98, 0.94), (0.02, 0.94)])
    if shape == "star":
        return _polygon_inside(u, v, _star_points())
    raise ValueError(f"unknown shape {shape!r}")


def texture_pattern(texture: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Where the (darker) pattern colour lies; ``dx, dy`` are pixel offsets from the object's centre,
    so every pattern is centred on the object (a dot, a check and a stripe sit at the centre)."""
    if texture == "plain":
        return np.zeros(dx.shape, bool)
    if texture == "striped":
        return np.mod(dx + dy + STRIPE_PERIOD / 4, STRIPE_PERIOD) < STRIPE_PERIOD / 2
    if texture == "dotted":
        cx = np.mod(dx + DOT_PERIOD / 2, DOT_PERIOD) - DOT_PERIOD / 2
        cy = np.mod(dy + DOT_PERIOD / 2, DOT_PERIOD) - DOT_PERIOD / 2
        return cx**2 + cy**2 <= DOT_RADIUS**2
    if texture == "checkered":
        return (np.floor(dx / CHECK_SIZE + 0.5) + np.floor(dy / CHECK_SIZE + 0.5)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Points of ``mask`` whose disk of ``radius`` grid steps lies inside ``mask`` (outside = False)."""
    padded = np.pad(mask, radius, constant_values=False)
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out &= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


def _box_downsample(fine: np.ndarray, factor: int) -> np.ndarray:
    h, w = fine.shape[0] // factor, fine.shape[1] // factor
    return fine.reshape(h, factor, w, factor).mean(axis=(1, 3), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def sprite(shape: str, texture: str, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage maps ``(size, size)`` of the main colour and of the pattern colour of one object."""
    n = size_px * SUPERSAMPLE
    centres = (np.arange(n) + 0.5) / SUPERSAMPLE  # pixel units
    py, px = np.meshgrid(centres, centres, indexing="ij")
    inside = shape_mask(shape, px / size_px, py / size_px)
    # the pattern stays off a thin rim so that every texture keeps the shape's silhouette
    centre = size_px // 2 + 0.5  # the pixel centre nearest the object's centre: crisp dots and checks
    pattern = texture_pattern(texture, px - centre, py - centre) & _erode(inside, round(RIM_PX * SUPERSAMPLE))
    main = _box_downsample(inside & ~pattern, SUPERSAMPLE)
    dark = _box_downsample(inside & pattern, SUPERSAMPLE)
    main.flags.writeable = dark.flags.writeable = False
    return main, dark


@functools.lru_cache(maxsize=1)
def _sprite_table() -> tuple[dict[tuple[str, str, int], int], np.ndarray, np.ndarray]:
    """Every sprite, zero-padded to MAX_SIZE × MAX_SIZE: (index, main coverage, pattern coverage)."""
    keys = [(shape, texture, size) for shape in SHAPES for texture in TEXTURES for size in ALL_SIZES]
    main = np.zeros((len(keys), MAX_SIZE, MAX_SIZE), np.float32)
    dark = np.zeros_like(main)
    for k, (shape, texture, size) in enumerate(keys):
        main[k, :size, :size], dark[k, :size, :size] = sprite(shape, texture, size)
    return {key: k for k, key in enumerate(keys)}, main, dark


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """(NOISE_FIELDS, 32, 32, 3) unit Gaussian noise from a fixed seed."""
    return np.random.default_rng(1234567).standard_normal((NOISE_FIELDS, CANVAS, CANVAS, 3), np.float32)


_COLOR_RGB = np.array(list(COLORS.values()), np.float32)
_COLOR_INDEX = {name: k for k, name in enumerate(COLORS)}


def render(scenes: Sequence[Scene], return_masks: bool = False):
    """Render scenes to ``(N, 32, 32, 3)`` uint8 images.

    With ``return_masks=True`` also return ``(N, MAX_OBJECTS, 32, 32)`` float32 coverage in [0, 1]
    of each object, in ``scene.objects`` order (zeros for absent objects). Objects never overlap,
    so coverage is also the object's share of each pixel in the image.
    """
    n = len(scenes)
    images = np.empty((n, CANVAS, CANVAS, 3), np.uint8)
    masks = np.zeros((n, MAX_OBJECTS, CANVAS, CANVAS), np.float32) if return_masks else None
    for start in range(0, n, CHUNK):
        chunk = scenes[start : start + CHUNK]
        chunk_masks = _render_chunk(chunk, images[start : start + len(chunk)], return_masks)
        if masks is not None:
            masks[start : start + len(chunk)] = chunk_masks
    return (images, masks) if return_masks else images


def _render_chunk(scenes: Sequence[Scene], out: np.ndarray, return_masks: bool) -> np.ndarray | None:
    """Composite a chunk of scenes into ``out``, object slot by object slot, all images at once.

    The canvas is padded by MAX_SIZE so every padded sprite window fits inside it; zero-coverage
    padding leaves the canvas unchanged, and objects never overlap, so slots are independent.
    Windows are addressed by flat pixel indices (one gather and one scatter per slot).
    """
    index, table_main, table_dark = _sprite_table()
    n, padded = len(scenes), CANVAS + MAX_SIZE
    level = np.array([s.background.level for s in scenes], np.float32)
    canvas = np.empty((n, padded, padded, 3), np.float32)
    canvas[:] = level[:, None, None, None]
    pixels = canvas.reshape(-1, 3)
    coverage_canvas = np.zeros((MAX_OBJECTS, n * padded * padded), np.float32) if return_masks else None
    window = (np.arange(MAX_SIZE)[:, None] * padded + np.arange(MAX_SIZE)[None, :]).ravel()
    for slot in range(MAX_OBJECTS):
        rows = [(i, s.objects[slot]) for i, s in enumerate(scenes) if len(s.objects) > slot]
        if not rows:
            continue
        corner = np.array([(i * padded + o.y) * padded + o.x for i, o in rows], np.int64)
        flat = (corner[:, None] + window[None, :]).ravel()
        sprite_ids = np.array([index[(o.shape, o.texture, o.size_px)] for _, o in rows])
        main = table_main[sprite_ids].reshape(-1, 1)
        dark = table_dark[sprite_ids].reshape(-1, 1)
        rgb = np.repeat(_COLOR_RGB[[_COLOR_INDEX[o.color] for _, o in rows]], window.size, axis=0)
        pixels[flat] = pixels[flat] * (1.0 - main - dark) + (main + PATTERN_DARKEN * dark) * rgb
        if coverage_canvas is not None:
            coverage_canvas[slot, flat] = (main + dark)[:, 0]
    noise_std = np.array([s.background.noise_std for s in scenes], np.float32)
    noise = _noise_bank()[np.array([s.background.noise_seed for s in scenes]) % NOISE_FIELDS]
    image_part = canvas[:, :CANVAS, :CANVAS] + noise_std[:, None, None, None] * noise
    np.clip(np.rint(image_part), 0, 255, out=image_part)
    out[:] = image_part
    if coverage_canvas is None:
        return None
    return coverage_canvas.reshape(MAX_OBJECTS, n, padded, padded).transpose(1, 0, 2, 3)[:, :, :CANVAS, :CANVAS]


def warm_sprites() -> None:
    """Draw every sprite and the noise bank now (about 0.1 s), e.g. before timing."""
    _sprite_table()
    _noise_bank()
