"""Scenes: the ground truth of one image, sampled deterministically from (caption, seed).

``sample_scene(caption, seed)`` draws everything the caption leaves open: sizes, positions, the
attributes it does not mention, whether an unmentioned distractor object is present (p = 0.5) and
what it looks like, and the background. Its generator is seeded by a content hash of the caption
*and its swapped caption* (order-free) and the seed, and it draws the same numbers in the same
order whatever the attribute values are, so the swapped caption with the same seed gives the same
scene with only the bound attribute of the two named objects exchanged (for ``spatial``: with the
two named objects' places exchanged).

Spatial scenes place the two named objects by the relation (:func:`relation_layout`): each in a
square of the larger one's side, the two squares apart along the relation's axis with a centre
offset across it of at most half the offset along it, so T2I-CompBench's rule (|Δx| > |Δy| for
left / right, IoU < 0.1) holds with room to spare; everything else is left open as in the other
categories.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass

import numpy as np

from evalkit.world.attributes import (
    ALL_SIZES,
    CANVAS,
    COLORS,
    RELATIONS,
    SHAPES,
    SIZE_CLASSES,
    TEXTURES,
    size_class_of,
)
from evalkit.world.grammar import CaptionSpec, ObjectSpec, bound_family, parse_caption
from evalkit.world.seeding import stable_int

MAX_OBJECTS = 3
DISTRACTOR_PROB = 0.5
BACKGROUND_LEVEL = (12.0, 45.0)  # grey level range of the background (0–255)
NOISE_STD = (2.0, 5.0)  # range of the per-pixel Gaussian noise std, applied to the whole image
GAP = 1  # px between the bounding boxes of two objects
PLACEMENT_ROUNDS = 16  # placement rounds before the quadrant fallback (reached by ~0.1 % of scenes)

_COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class SceneObject:
    """One object as drawn: its attributes, box and the noun phrase it realises."""

    shape: str
    color: str
    texture: str
    size_class: str  # "small" | "middle" | "big"
    size_px: int  # side of the bounding box
    x: int  # left column of the bounding box
    y: int  # top row of the bounding box
    phrase: int | None  # index of the caption noun phrase this object realises; None: a distractor

    def satisfies(self, phrase: ObjectSpec) -> bool:
        """Whether this object fits everything a noun phrase says."""
        return all(
            value is None or value == (self.size_class if family == "size" else getattr(self, family))
            for family, value in phrase.as_dict().items()
        )


@dataclass(frozen=True)
class Background:
    """A flat grey level plus Gaussian noise (one of the renderer's fixed noise fields)."""

    level: float  # grey level before noise
    noise_std: float
    noise_seed: int  # picks the noise field


@dataclass(frozen=True)
class Scene:
    """The ground truth of one image (JSON-able through :meth:`to_dict`)."""

    caption: str
    swapped_caption: str
    category: str
    seed: int
    noun_phrases: tuple[str, str]
    objects: tuple[SceneObject, ...]  # the two named objects (phrase 0, phrase 1), then a distractor if any
    background: Background

    def to_dict(self) -> dict:
        return asdict(self)

    def holds(self, spec: CaptionSpec) -> bool:
        """Whether the caption is true of this scene: each phrase realised by an object and, for a spatial
        caption, two such objects (one per phrase) standing in the relation (:func:`place_of`)."""
        fits = [[o for o in self.objects if o.satisfies(phrase)] for phrase in spec.objects]
        if spec.relation is None:
            return all(fits)
        return any(place_of(a, b) == spec.relation for a in fits[0] for b in fits[1] if a is not b)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(
            caption=data["caption"],
            swapped_caption=data["swapped_caption"],
            category=data["category"],
            seed=int(data["seed"]),
            noun_phrases=tuple(data["noun_phrases"]),
            objects=tuple(SceneObject(**o) for o in data["objects"]),
            background=Background(**data["background"]),
        )


def place_of(a: SceneObject, b: SceneObject) -> str | None:
    """Where ``a`` stands relative to ``b`` by T2I-CompBench's rule on box centres (boxes of the world never
    overlap): ``left`` / ``right`` when |Δx| > |Δy|, ``top`` / ``bottom`` when |Δy| > |Δx|, None on the diagonal."""
    dx = (b.x + b.size_px / 2) - (a.x + a.size_px / 2)
    dy = (b.y + b.size_px / 2) - (a.y + a.size_px / 2)
    if abs(dx) > abs(dy):
        return "left" if dx > 0 else "right"
    if abs(dy) > abs(dx):
        return "top" if dy > 0 else "bottom"
    return None


def scene_rng(spec: CaptionSpec, seed: int) -> np.random.Generator:
    """The scene generator of (caption, seed): shared by the caption and its swap."""
    pair = sorted((spec.text, spec.swapped_text))
    return np.random.default_rng(stable_int("scene", pair, int(seed)))


def distractor_options(spec: CaptionSpec) -> tuple[tuple[str, str, str], ...]:
    """(color, shape, texture) triples a distractor may take for this caption (same for its swap).

    Colour/texture categories: never a bound value of the caption on a shape of the caption (so
    no distractor is a red or blue circle or square for "a red circle and a blue square", nor one
    that would satisfy a phrase of the swapped caption). Shape category: any triple; the distractor
    is middle-sized, and every phrase names "big" or "small". Spatial: any triple of a shape the
    caption does not name (so the distractor never fits a phrase and never stands in a relation).
    """
    if spec.category == "shape":
        return _distractor_options("shape", frozenset(), frozenset())
    if spec.category == "spatial":
        return _distractor_options("spatial", frozenset(), frozenset(o.shape for o in spec.objects))
    family = bound_family(spec.category)
    return _distractor_options(
        family, frozenset(o.get(family) for o in spec.objects), frozenset(o.shape for o in spec.objects)
    )


@functools.lru_cache(maxsize=4096)
def _distractor_options(family: str, values: frozenset, shapes: frozenset) -> tuple[tuple[str, str, str], ...]:
    if family == "spatial":
        return tuple(t for t in itertools.product(_COLOR_NAMES, SHAPES, TEXTURES) if t[1] not in shapes)
    index = {"shape": None, "color": 0, "texture": 2}[family]
    return tuple(
        t
        for t in itertools.product(_COLOR_NAMES, SHAPES, TEXTURES)
        if index is None or not (t[index] in values and t[1] in shapes)
    )


def _pick(values, u: float):
    return values[min(int(u * len(values)), len(values) - 1)]


def sample_scene(caption: CaptionSpec | str, seed: int) -> Scene:
    """The scene of (caption, seed). Draw order (fixed, independent of attribute values):
    background (3), distractor present (1), per named object size/color/texture (3 × 2),
    distractor size and look (2), then layout."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    rng = scene_rng(spec, seed)
    draws = iter(rng.random(12).tolist())
    background = Background(
        level=BACKGROUND_LEVEL[0] + (BACKGROUND_LEVEL[1] - BACKGROUND_LEVEL[0]) * next(draws),
        noise_std=NOISE_STD[0] + (NOISE_STD[1] - NOISE_STD[0]) * next(draws),
        noise_seed=int(next(draws) * 2**31),
    )
    has_distractor = next(draws) < DISTRACTOR_PROB

    looks = []  # (shape, color, texture, size_px, phrase)
    for index, named in enumerate(spec.objects):
        u_size, u_color, u_texture = next(draws), next(draws), next(draws)
        size_px = _pick(SIZE_CLASSES[named.size] if named.size else ALL_SIZES, u_size)
        color = named.color or _pick(_COLOR_NAMES, u_color)
        texture = named.texture or _pick(TEXTURES, u_texture)
        looks.append((named.shape, color, texture, size_px, index))
    u_size, u_look = next(draws), next(draws)
    if has_distractor:
        size_px = _pick(SIZE_CLASSES["middle"] if spec.category == "shape" else ALL_SIZES, u_size)
        color, shape, texture = _pick(distractor_options(spec), u_look)
        looks.append((shape, color, texture, size_px, None))

    sizes = [look[3] for look in looks]
    positions = _layout(sizes, rng) if spec.relation is None else relation_layout(spec.relation, sizes, rng)
    if len(positions) < len(looks):
        looks = looks[: len(positions)]  # no room left for the distractor of a spatial scene
    objects = tuple(
        SceneObject(shape, color, texture, size_class_of(size_px), size_px, x, y, phrase)
        for (shape, color, texture, size_px, phrase), (x, y) in zip(looks, positions)
    )
    return Scene(spec.text, spec.swapped_text, spec.category, int(seed), spec.noun_phrases, objects, background)


def _layout(sizes: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping boxes (>= GAP px apart), largest placed first.

    Each object takes a position drawn uniformly among those that keep clear of the objects
    already placed (one uniform draw per object). If no position is left (rare: three big
    objects), the round starts over with fresh draws; after PLACEMENT_ROUNDS such rounds the
    objects go to distinct quadrants, which always fits objects of at most 15 px. Only sizes
    steer the draws, so a caption and its swap get the same layout.
    """
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    for _ in range(PLACEMENT_ROUNDS):
        placed: dict[int, tuple[int, int]] = {}
        for i, u in zip(order, rng.random(len(sizes)).tolist()):
            size = sizes[i]
            span = CANVAS - size + 1
            free = np.ones((span, span), bool)  # free[y, x]: top-left corners still allowed
            for j, (x, y) in placed.items():
                reach = sizes[j] + GAP
                free[max(0, y - size - GAP + 1) : y + reach, max(0, x - size - GAP + 1) : x + reach] = False
            options = np.flatnonzero(free)
            if options.size == 0:
                break  # dead end: next round
            corner = int(options[int(u * options.size)])
            placed[i] = (corner % span, corner // span)
        else:
            return [placed[i] for i in range(len(sizes))]
    quadrants = np.argsort(rng.random(4), kind="stable")
    jitter = rng.random((len(sizes), 2))
    half = CANVAS // 2
    out = []
    for i, size in enumerate(sizes):
        qx, qy = int(quadrants[i] % 2) * half, int(quadrants[i] // 2) * half
        room = half - GAP - size + 1  # positions that keep GAP px from the next quadrant
        out.append((qx + int(jitter[i, 0] * room), qy + int(jitter[i, 1] * room)))
    return out


def relation_layout(relation: str, sizes: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners for the two named objects of a spatial caption (phrase order), then the distractor's.

    Both named objects get a square of side ``m = max`` of their sizes (the object centred in it); the two
    squares are drawn uniformly (one draw) among the pairs with the *first place* (left of the axis, or top)
    before the second by at least ``m + GAP`` along the axis and a centre offset across the axis of at most
    half the offset along it. The object whose place is first (``left``, ``top``) takes the first square, so a
    caption and its swap, which share the draws, get the same squares with the two objects exchanged. The
    distractor takes a uniform free corner clear of both squares (one draw); when none is left (two big
    objects leave little room), the scene has no distractor.
    """
    axis, _ = RELATIONS[relation]
    m = max(sizes[0], sizes[1])
    pairs = _square_pairs(m, axis)
    u_pair, u_distractor = rng.random(2).tolist()
    (x1, y1), (x2, y2) = pairs[min(int(u_pair * len(pairs)), len(pairs) - 1)]
    first, second = ((x1, y1), (x2, y2)) if relation in ("left", "top") else ((x2, y2), (x1, y1))
    out = [(x + (m - size) // 2, y + (m - size) // 2) for (x, y), size in ((first, sizes[0]), (second, sizes[1]))]
    if len(sizes) == 3:
        size = sizes[2]
        span = CANVAS - size + 1
        free = np.ones((span, span), bool)
        for x, y in ((x1, y1), (x2, y2)):
            reach = m + GAP
            free[max(0, y - size - GAP + 1) : y + reach, max(0, x - size - GAP + 1) : x + reach] = False
        options = np.flatnonzero(free)
        if options.size:
            corner = int(options[int(u_distractor * options.size)])
            out.append((corner % span, corner // span))
    return out


@functools.lru_cache(maxsize=None)
def _square_pairs(m: int, axis: str) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
    """Every pair of top-left corners of two m-px squares with the first before the second along ``axis``
    by at least ``m + GAP`` and an offset across it of at most half that along it."""
    corners = np.arange(CANVAS - m + 1)
    a1, a2, b1, b2 = (g.ravel() for g in np.meshgrid(corners, corners, corners, corners, indexing="ij"))
    along, across = a2 - a1, np.abs(b2 - b1)
    keep = (along >= m + GAP) & (2 * across <= along)
    a1, a2, b1, b2 = a1[keep], a2[keep], b1[keep], b2[keep]
    if axis == "x":
        return tuple(((int(p), int(q)), (int(r), int(t))) for p, q, r, t in zip(a1, b1, a2, b2))
    return tuple(((int(q), int(p)), (int(t), int(r))) for p, q, r, t in zip(a1, b1, a2, b2))
