"""The world's vocabulary: attribute values, size classes and held-out combinations.

Everything here is data. Changing a value changes every split and every suite version, so the
numbers are fixed; ``docs/world.md`` explains the choices.
"""

from __future__ import annotations

CANVAS = 32  # rendered images are CANVAS × CANVAS RGB

#: Saturated hues, each with a channel ≥ 200 so objects stand well above the dark background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (255, 145, 20),
    "yellow": (240, 230, 40),
    "green": (40, 195, 60),
    "cyan": (40, 225, 235),
    "blue": (45, 90, 255),
    "purple": (165, 65, 235),
    "pink": (255, 135, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
#: The texture pattern is drawn in the object's colour times this factor (darker, same hue).
PATTERN_DARKEN = 0.5

#: Bounding-box side in pixels per size class. Gaps between classes keep them apart; distractors
#: of the shape category are always "middle", so they are never "big" nor "small".
SIZE_CLASSES: dict[str, tuple[int, ...]] = {"small": (8, 9), "middle": (11, 12), "big": (14, 15)}
SIZE_WORDS: tuple[str, ...] = ("big", "small")  # the sizes a caption can name
ALL_SIZES: tuple[int, ...] = tuple(px for sizes in SIZE_CLASSES.values() for px in sizes)


def size_class_of(size_px: int) -> str:
    for name, sizes in SIZE_CLASSES.items():
        if size_px in sizes:
            return name
    raise ValueError(f"{size_px} px is not a size of the world ({ALL_SIZES})")


#: The values of each attribute family, as captions name them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "texture": TEXTURES,
    "size": SIZE_WORDS,
}

#: The spatial relations a caption can bind, in T2I-CompBench's words ("a circle on the left of a square"):
#: relation → (axis, the relation with the two objects' places exchanged). "next to" is not among them: it is
#: symmetric (its swap says the same thing) and, at T2I-CompBench's distance threshold, true of almost every
#: layout of a 32-px canvas, so it would test object presence only (docs/world.md).
RELATIONS: dict[str, tuple[str, str]] = {
    "left": ("x", "right"),
    "right": ("x", "left"),
    "top": ("y", "bottom"),
    "bottom": ("y", "top"),
}


def relation_text(relation: str) -> str:
    """The words of a relation in a caption: "on the left of"."""
    return f"on the {relation} of"


#: Binding categories. ``color``, ``texture`` and ``shape`` are named after the family they bind to two
#: objects (objects are named by shape in ``color`` and ``texture``, by size (big / small) in ``shape``);
#: ``spatial`` binds the two objects (named by shape) to the two places of a relation.
CATEGORIES: tuple[str, ...] = ("color", "shape", "texture", "spatial")

#: Attribute–object combinations that no train or dev prompt contains (in any category, in its
#: noun phrases or in its swapped caption). A val prompt is *unseen* when a combination it binds
#: is listed here. Pairs are (attribute, shape); for ``relation``, (the object's place, shape).
#: For the shape category the identity (size) has only two values and a swap moves a shape from
#: big to small, so holding out (big, star) alone would also keep (small, star) out of every
#: train prompt; both are listed to say so (and both places of an axis, for ``relation``).
HELD_OUT: dict[str, frozenset[tuple[str, str]]] = {
    "color": frozenset(
        {
            ("red", "triangle"),
            ("orange", "star"),
            ("yellow", "diamond"),
            ("green", "circle"),
            ("blue", "cross"),
            ("purple", "square"),
        }
    ),
    "texture": frozenset({("striped", "diamond"), ("dotted", "triangle"), ("checkered", "circle")}),
    "size": frozenset({("big", "star"), ("small", "star")}),
    # (place, shape): a swap moves each object to the other place of the axis, so both places of an axis are
    # listed; stars are never left or right of anything in train, crosses never above or below
    "relation": frozenset({("left", "star"), ("right", "star"), ("top", "cross"), ("bottom", "cross")}),
}
