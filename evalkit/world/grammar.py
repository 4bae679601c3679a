"""The caption grammar: caption specs, their text, noun phrases and attribute swaps.

A caption names two objects, one noun phrase each, joined by "and"::

    phrase  = article [size] [color] [texture] shape        e.g. "a big red striped triangle"
    caption = phrase " and " phrase                         (color, shape, texture)
            | phrase " on the " place " of " phrase         (spatial; place = left | right | top | bottom)

Each category *binds* one attribute family to the two objects, which are named by another family
(the identity): ``color`` and ``texture`` bind to objects named by shape ("a red circle and a blue
square"); ``shape`` binds to objects named by size ("a big triangle and a small circle"), because
with two objects swapping shapes is the same as swapping colours. ``spatial`` binds the two objects
(named by shape) to the two places of a relation ("a circle on the left of a square"). The swapped
caption exchanges the bound attribute between the two objects and nothing else; for ``spatial`` it
exchanges their places ("a circle on the right of a square").

Other attribute families may be *mentioned* to make prompts more varied; each such family is
mentioned on at most one of the two objects (with probability :data:`MENTION_PROB` per caption),
so the family bound to both objects, and hence the category, can be read off the text, and no
prompt of one category binds the attribute family of another.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Iterator

from evalkit.world.attributes import CATEGORIES, FAMILIES, HELD_OUT, RELATIONS, relation_text

#: Probability that a caption mentions a non-bound attribute family (on one of its two objects).
#: Each object's non-bound attribute is then mentioned with probability MENTION_PROB / 2 = 0.2.
MENTION_PROB = 0.4

#: The families a category may mention besides the bound and identity families.
MENTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "color": ("texture",),
    "texture": ("color",),
    "shape": ("color", "texture"),
    "spatial": ("color", "texture"),
}
#: The family whose (value, shape) pairs a category binds: (red, circle), (striped, circle), (big, circle),
#: (left, circle).
COMBO_FAMILY: dict[str, str] = {"color": "color", "texture": "texture", "shape": "size", "spatial": "relation"}
#: Word order inside a noun phrase.
PHRASE_ORDER: tuple[str, ...] = ("size", "color", "texture", "shape")

Combo = tuple[str, str, str]  # (family, value, shape), e.g. ("color", "red", "circle")


def bound_family(category: str) -> str:
    """The family a category swaps: its own name (``relation`` for ``spatial``)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    return "relation" if category == "spatial" else category


@dataclass(frozen=True)
class ObjectSpec:
    """What a caption says about one object; ``None`` = not mentioned (sampled freely in the scene)."""

    shape: str | None = None
    color: str | None = None
    texture: str | None = None
    size: str | None = None  # "big" | "small" (shape category only)

    def get(self, family: str) -> str | None:
        return getattr(self, family)

    def as_dict(self) -> dict[str, str | None]:
        return {"shape": self.shape, "color": self.color, "texture": self.texture, "size": self.size}

    def replace(self, **changes: str | None) -> "ObjectSpec":
        return ObjectSpec(**{**self.as_dict(), **changes})

    def phrase(self) -> str:
        words = [getattr(self, f) for f in PHRASE_ORDER if getattr(self, f) is not None]
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])

    @functools.cached_property
    def _combos(self) -> frozenset[Combo]:
        if self.shape is None:
            return frozenset()
        return frozenset(
            (f, getattr(self, f), self.shape) for f in ("color", "texture", "size") if getattr(self, f) is not None
        )

    def combos(self) -> frozenset[Combo]:
        """The (family, value, shape) pairs this phrase states."""
        return self._combos


@dataclass(frozen=True)
class CaptionSpec:
    """A caption by construction: the category, the two objects in phrase order and, for ``spatial``, the
    relation (the first object's place: left, right, top or bottom of the second)."""

    category: str
    objects: tuple[ObjectSpec, ObjectSpec]
    relation: str | None = None

    def __post_init__(self):
        bound_family(self.category)
        if len(self.objects) != 2:
            raise ValueError("a caption names exactly two objects")
        if (self.category == "spatial") != (self.relation is not None):
            raise ValueError("a spatial caption names a relation, and only a spatial caption does")
        if self.relation is not None and self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r}; expected one of {', '.join(RELATIONS)}")

    @functools.cached_property
    def noun_phrases(self) -> tuple[str, str]:
        return (self.objects[0].phrase(), self.objects[1].phrase())

    @functools.cached_property
    def text(self) -> str:
        joint = " and " if self.relation is None else f" {relation_text(self.relation)} "
        return joint.join(self.noun_phrases)

    def places(self) -> tuple[str, str] | None:
        """Each object's place (``("left", "right")`` for "a circle on the left of a square"), or None."""
        if self.relation is None:
            return None
        return self.relation, RELATIONS[self.relation][1]

    def swapped(self) -> "CaptionSpec":
        """The same caption with the bound attribute exchanged between the two objects."""
        return self._swapped

    @functools.cached_property
    def _swapped(self) -> "CaptionSpec":
        if self.relation is not None:
            return CaptionSpec(self.category, self.objects, RELATIONS[self.relation][1])
        family = bound_family(self.category)
        a, b = self.objects
        return CaptionSpec(
            self.category,
            (
                a.replace(**{family: b.get(family)}),
                b.replace(**{family: a.get(family)}),
            ),
        )

    @functools.cached_property
    def swapped_text(self) -> str:
        return self.swapped().text

    def combos(self) -> frozenset[Combo]:
        """Every (family, value, shape) pair the caption states (a place is a ``relation`` value)."""
        stated = self.objects[0].combos() | self.objects[1].combos()
        places = self.places()
        if places is None:
            return stated
        return stated | {("relation", place, o.shape) for place, o in zip(places, self.objects)}

    def bound_combos(self) -> frozenset[Combo]:
        """The two attribute–object combinations the caption binds, e.g. {(color, red, circle), ...}."""
        return self._bound_combos

    @functools.cached_property
    def _bound_combos(self) -> frozenset[Combo]:
        family = COMBO_FAMILY[self.category]
        return frozenset(c for c in self.combos() if c[0] == family)

    def orbit(self) -> tuple[tuple[Combo, ...], tuple[Combo, ...]]:
        """The binding core of the caption and of its swap, order-free: splits assign whole orbits."""
        cores = sorted(tuple(sorted(spec.bound_combos())) for spec in (self, self.swapped()))
        return (cores[0], cores[1])

    def to_dict(self) -> dict:
        data = {"category": self.category, "objects": [o.as_dict() for o in self.objects]}
        if self.relation is not None:
            data["relation"] = self.relation
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "CaptionSpec":
        return cls(data["category"], tuple(ObjectSpec(**o) for o in data["objects"]), data.get("relation"))


def is_held_out(combo: Combo) -> bool:
    family, value, shape = combo
    return (value, shape) in HELD_OUT.get(family, ())


# --------------------------------------------------------------------------- parsing

_WORD_FAMILY = {word: family for family, words in FAMILIES.items() for word in words}


def split_relation(text: str) -> tuple[list[str], str | None]:
    """The caption's phrases and its relation: split on the first relation's words (" on the left of "), else
    on " and "."""
    for relation in RELATIONS:
        joint = f" {relation_text(relation)} "
        if joint in text:
            return text.split(joint), relation
    return text.split(" and "), None


def parse_caption(text: str) -> CaptionSpec:
    """Read a caption of the grammar back into its spec (the category is the family on both objects, or
    ``spatial`` for a caption joined by a relation)."""
    phrases, relation = split_relation(text.strip())
    if len(phrases) != 2:
        raise ValueError(
            f"not a caption of the world (two phrases joined by 'and' or by a relation such as "
            f"'on the left of'): {text!r}"
        )
    objects = []
    for phrase in phrases:
        words = phrase.split()
        if not words or words[0] not in ("a", "an"):
            raise ValueError(f"phrase without article: {phrase!r}")
        fields: dict[str, str] = {}
        for word in words[1:]:
            family = _WORD_FAMILY.get(word)
            if family is None or family in fields:
                raise ValueError(f"unexpected word {word!r} in {phrase!r}")
            fields[family] = word
        if "shape" not in fields:
            raise ValueError(f"phrase without a shape: {phrase!r}")
        objects.append(ObjectSpec(**fields))
    on_both = [f for f in ("size", "color", "texture") if objects[0].get(f) and objects[1].get(f)]
    if relation is not None:
        if on_both:
            raise ValueError(f"a spatial caption names no family on both objects: {text!r} names {on_both}")
        spec = CaptionSpec("spatial", (objects[0], objects[1]), relation)
    elif len(on_both) != 1:
        raise ValueError(f"cannot tell the category of {text!r}: families on both objects: {on_both}")
    else:
        category = {"size": "shape", "color": "color", "texture": "texture"}[on_both[0]]
        spec = CaptionSpec(category, (objects[0], objects[1]))
    if spec.text != text.strip():
        raise ValueError(f"{text!r} is not in canonical word order (expected {spec.text!r})")
    return spec


# --------------------------------------------------------------------------- the prompt universe


def _cores(category: str) -> Iterator[CaptionSpec]:
    """Captions of the category with only the bound and identity attributes, in phrase order (both orders
    are produced)."""
    if category == "shape":
        for first_size, second_size in (("big", "small"), ("small", "big")):
            for s1, s2 in itertools.permutations(FAMILIES["shape"], 2):
                yield CaptionSpec(
                    category, (ObjectSpec(shape=s1, size=first_size), ObjectSpec(shape=s2, size=second_size))
                )
    elif category == "spatial":
        for relation in RELATIONS:
            for s1, s2 in itertools.permutations(FAMILIES["shape"], 2):
                yield CaptionSpec(category, (ObjectSpec(shape=s1), ObjectSpec(shape=s2)), relation)
    else:
        family = bound_family(category)
        for v1, v2 in itertools.permutations(FAMILIES[family], 2):
            for s1, s2 in itertools.permutations(FAMILIES["shape"], 2):
                yield CaptionSpec(
                    category, (ObjectSpec(shape=s1, **{family: v1}), ObjectSpec(shape=s2, **{family: v2}))
                )


def _mention_options(family: str) -> list[tuple[int | None, str | None, float]]:
    """(object index, value, probability) for one mention family: none, or one object gets a value."""
    values = FAMILIES[family]
    options: list[tuple[int | None, str | None, float]] = [(None, None, 1.0 - MENTION_PROB)]
    options += [(i, v, MENTION_PROB / 2 / len(values)) for i in (0, 1) for v in values]
    return options


@dataclass(frozen=True)
class Caption:
    """One caption of the universe: its spec, grammar probability and binding core (no mentions)."""

    spec: CaptionSpec
    weight: float  # unnormalised grammar probability
    core: CaptionSpec  # the same objects without optional mentions: same bound pairs, same orbit


def enumerate_captions(category: str) -> list[Caption]:
    """Every caption of the category with its grammar probability (unnormalised).

    Captions that mention a held-out combination of a family other than the bound one (in the
    caption or in its swap) are left out everywhere: held-out pairs only ever appear as bound pairs
    of unseen val prompts.
    """
    families = MENTION_FAMILIES[category]
    options = [_mention_options(f) for f in families]
    out = []
    for core in _cores(category):
        first, second = core.objects
        # a mention on object i pairs with object i's shape, and after the swap with the shape
        # object i then has (the other one's, in the shape category)
        shapes_after = [core.swapped().objects[i].shape for i in (0, 1)]
        for choice in itertools.product(*options):
            objects = [first.as_dict(), second.as_dict()]
            weight = 1.0
            allowed = True
            for family, (index, value, p) in zip(families, choice):
                weight *= p
                if index is not None:
                    objects[index][family] = value
                    allowed &= not (
                        is_held_out((family, value, objects[index]["shape"]))
                        or is_held_out((family, value, shapes_after[index]))
                    )
            if allowed:
                spec = (
                    core
                    if all(i is None for i, _, _ in choice)
                    else CaptionSpec(category, (ObjectSpec(**objects[0]), ObjectSpec(**objects[1])), core.relation)
                )
                out.append(Caption(spec, weight, core))
    return out
