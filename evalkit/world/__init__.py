"""The synthetic compositional world: a procedural renderer, a caption grammar and a dataset API.

Scenes hold 2–3 objects (8 colours × 6 shapes × 4 textures, three size classes) at 32×32 RGB.
A caption names two objects and binds one attribute family (colour, texture or shape) to them;
the rest of the scene is left open and sampled per seed. See ``docs/world.md``.

    >>> from evalkit.world import split_prompts, sample_scene, render
    >>> item = split_prompts("color", "val")[0]
    >>> scene = sample_scene(item.spec, seed=42)
    >>> images = render([scene, sample_scene(item.spec.swapped(), seed=42)])   # (2, 32, 32, 3) uint8

Imports numpy only (no torch).
"""

from evalkit.world.attributes import (
    CATEGORIES,
    COLORS,
    HELD_OUT,
    SHAPES,
    SIZE_CLASSES,
    TEXTURES,
)
from evalkit.world.dataset import sample_pairs
from evalkit.world.grammar import CaptionSpec, ObjectSpec, enumerate_captions, parse_caption
from evalkit.world.renderer import render
from evalkit.world.scene import Background, Scene, SceneObject, sample_scene
from evalkit.world.splits import SPLITS, SplitPrompt, held_out_combinations, split_prompts, world_splits

__all__ = [
    "CATEGORIES",
    "COLORS",
    "HELD_OUT",
    "SHAPES",
    "SIZE_CLASSES",
    "TEXTURES",
    "SPLITS",
    "CaptionSpec",
    "ObjectSpec",
    "Scene",
    "SceneObject",
    "Background",
    "SplitPrompt",
    "enumerate_captions",
    "parse_caption",
    "sample_scene",
    "render",
    "sample_pairs",
    "split_prompts",
    "world_splits",
    "held_out_combinations",
]
