"""Picture grids of world renders with their captions (matplotlib, imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from evalkit.world.attributes import CATEGORIES
from evalkit.world.renderer import render
from evalkit.world.scene import Scene, sample_scene
from evalkit.world.splits import split_prompts


def save_grid(
    path: str | Path, scenes: Sequence[Scene], titles: Sequence[str] | None = None, columns: int = 8, scale: int = 4
) -> Path:
    """Render ``scenes``, upscale each ×``scale`` (nearest), write a PNG grid with a title under each."""
    from evalkit.report.grid import save_image_grid

    titles = list(titles) if titles is not None else [s.caption for s in scenes]
    return save_image_grid(path, render(scenes), titles, columns=columns, scale=scale)


def val_grid_scenes(per_category: int = 8, seed: int = 42) -> tuple[list[Scene], list[str]]:
    """The first ``per_category`` val prompts of each category rendered with ``seed``, and titles
    "category · seen|unseen: caption"."""
    scenes, titles = [], []
    for category in CATEGORIES:
        for prompt in split_prompts(category, "val")[:per_category]:
            scenes.append(sample_scene(prompt.spec, seed))
            titles.append(f"{category} · {'seen' if prompt.seen else 'unseen'}: {prompt.text}")
    return scenes, titles


def save_world_grid(path: str | Path = "docs/images/world-grid.png", per_category: int = 8, seed: int = 42) -> Path:
    """The picture of ``docs/world.md``: ``per_category`` val renders per category, one row each."""
    scenes, titles = val_grid_scenes(per_category, seed)
    return save_grid(path, scenes, titles, columns=per_category)
