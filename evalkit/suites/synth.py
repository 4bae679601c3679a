"""Synthetic binding suites ``synth-color``, ``synth-shape``, ``synth-texture``, ``synth-spatial`` over the world.

Prompts come from :mod:`evalkit.world.splits` (train / dev / val; val = 200 seen + 100 unseen,
ordered seen, seen, unseen, ...). Each item carries its noun phrases (from the caption grammar, no
parsing), its seen flag, its attribute-swapped prompt and, in ``meta``, the caption spec. The
ground truth of an (item, seed) pair is the scene :func:`evalkit.world.sample_scene` draws; the
swapped prompt with the same seed gives the same scene with the bound attribute exchanged (for
``synth-spatial``: "a circle on the right of a square" for "a circle on the left of a square", the same
scene with the two objects' places exchanged).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from evalkit.contracts import PromptItem, Suite
from evalkit.world.attributes import CATEGORIES
from evalkit.world.grammar import CaptionSpec, is_held_out, parse_caption
from evalkit.world.renderer import render
from evalkit.world.scene import Scene, sample_scene
from evalkit.world.splits import SPLITS, split_prompts


#: the registry names of the world's suites, one per category
SYNTH_SUITES: tuple[str, ...] = tuple(f"synth-{category}" for category in CATEGORIES)


class SynthSuite(Suite):
    """One binding category of the synthetic world."""

    splits = SPLITS
    default_scorers = ("binding", "analytic")  # B-VQA style (embedded VQA model) and HRS style, side by side

    def __init__(self, category: str):
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
        self.category = category
        self.name = f"synth-{category}"

    def load_items(self, split: str) -> list[PromptItem]:
        return list(_items(self.category, split))

    @staticmethod
    def caption_spec(item: PromptItem) -> CaptionSpec:
        """The item's caption spec (from ``meta``; parsed from the prompt for ad-hoc items)."""
        if "caption" in item.meta:
            return CaptionSpec.from_dict(item.meta["caption"])
        return parse_caption(item.prompt)

    def ground_truth(self, item: PromptItem, seed: int) -> Scene:
        return sample_scene(self.caption_spec(item), seed)

    def swapped_ground_truth(self, item: PromptItem, seed: int) -> Scene:
        """The scene of the item's swapped prompt with the same seed: same layout, bound attribute exchanged."""
        return sample_scene(self.caption_spec(item).swapped(), seed)

    def render(
        self, items: Sequence[PromptItem], seeds: Sequence[int], swapped: bool = False, return_masks: bool = False
    ):
        """Images ``(N, 32, 32, 3)`` uint8 of (items[i], seeds[i]); ``swapped=True`` renders the
        swapped prompts instead. ``return_masks=True`` adds per-object coverage (see ``render``)."""
        if len(items) != len(seeds):
            raise ValueError(f"{len(items)} items but {len(seeds)} seeds")
        scene_of = self.swapped_ground_truth if swapped else self.ground_truth
        return render([scene_of(item, seed) for item, seed in zip(items, seeds)], return_masks=return_masks)

    def render_grid(self, items: Sequence[PromptItem], seeds: Sequence[int], swapped: bool = False) -> np.ndarray:
        """Every item with every seed: ``(len(items), len(seeds), 32, 32, 3)``."""
        flat_items = [item for item in items for _ in seeds]
        images = self.render(flat_items, list(seeds) * len(items), swapped=swapped)
        return images.reshape(len(items), len(seeds), *images.shape[1:])


@functools.lru_cache(maxsize=None)
def _items(category: str, split: str) -> tuple[PromptItem, ...]:
    items = []
    for index, prompt in enumerate(split_prompts(category, split)):
        spec = prompt.spec
        items.append(
            PromptItem(
                prompt=spec.text,
                category=category,
                split=split,
                item_id=f"{category}-{split}-{index:04d}",
                noun_phrases=spec.noun_phrases,
                seen=prompt.seen,
                swapped_prompt=spec.swapped_text,
                meta={
                    "caption": spec.to_dict(),
                    "grammar_weight": prompt.weight,
                    "held_out_pairs": [list(c) for c in sorted(spec.bound_combos()) if is_held_out(c)],
                },
            )
        )
    return tuple(items)


def synth_color() -> SynthSuite:
    return SynthSuite("color")


def synth_shape() -> SynthSuite:
    return SynthSuite("shape")


def synth_texture() -> SynthSuite:
    return SynthSuite("texture")


def synth_spatial() -> SynthSuite:
    return SynthSuite("spatial")
