"""Training pairs for the world's CLIP, decoder and scorers: (caption, scene) drawn from a split."""

from __future__ import annotations

import numpy as np

from evalkit.world.attributes import CATEGORIES
from evalkit.world.scene import Scene, sample_scene
from evalkit.world.splits import split_prompts
from evalkit.world.seeding import stable_int


def sample_pairs(category: str, n: int, seed: int, split: str = "train") -> tuple[list[str], list[Scene]]:
    """``n`` (caption, scene) pairs of ``split``; ``category`` is a category name or ``"all"``.

    Each pair draws a category (uniformly, for ``"all"``), a prompt of that category's split
    (train: in proportion to its grammar probability, so unmentioned attributes are as common as
    the grammar makes them; dev and val, already drawn that way: uniformly) and a scene seed.
    Deterministic in (category, n, seed, split); pair i does not depend on n. The swapped caption
    of each pair (a hard negative) is ``scene.swapped_caption``; ``render(scenes)`` gives the images.
    """
    categories = CATEGORIES if category == "all" else (category,)
    if any(c not in CATEGORIES for c in categories):
        raise ValueError(f"unknown category {category!r}; expected 'all' or one of {', '.join(CATEGORIES)}")
    rng = np.random.default_rng(stable_int("pairs", category, split, int(seed)))
    draws = rng.random((n, 3))  # (category, prompt, scene seed) per pair: pair i never depends on n
    captions, scenes = [], []
    tables = {c: _prompt_table(c, split) for c in categories}
    for u_category, u_prompt, u_seed in draws.tolist():
        prompts, cumulative = tables[categories[min(int(u_category * len(categories)), len(categories) - 1)]]
        k = min(int(np.searchsorted(cumulative, u_prompt * cumulative[-1], side="right")), len(prompts) - 1)
        spec = prompts[k].spec
        captions.append(spec.text)
        scenes.append(sample_scene(spec, int(u_seed * 2**31)))
    return captions, scenes


def _prompt_table(category: str, split: str):
    prompts = split_prompts(category, split)
    weights = np.array([p.weight if split == "train" else 1.0 for p in prompts])
    return prompts, np.cumsum(weights)
