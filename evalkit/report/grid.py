"""Picture grids of images with a caption under each (matplotlib, imported on use; no torch), and of world
renders (:func:`save_grid`, :func:`save_world_grid`: the picture of ``docs/world.md``)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.world.attributes import CATEGORIES
from evalkit.world.renderer import render
from evalkit.world.scene import Scene, sample_scene
from evalkit.world.splits import split_prompts


def save_image_grid(
    path: str | Path,
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    scale: int = 4,
    wrap: int = 28,
    lines: int = 3,
    fontsize: float = 7,
) -> Path:
    """Write ``images`` (N, H, W, 3) uint8, upscaled ×``scale`` (nearest), as a PNG grid with titles
    (wrapped at ``wrap`` characters, room for ``lines`` lines of ``fontsize`` points under each image)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    titles = list(titles) if titles is not None else [""] * len(images)
    rows = -(-len(images) // columns)
    side = images.shape[1] * scale / 100  # inches at 100 dpi: one image pixel = `scale` output pixels
    pad, text_height = 0.12, 0.02 * fontsize * lines  # inches around each image, and under it for the title lines
    cell_w, cell_h = side + 2 * pad, side + text_height + pad
    fig = plt.figure(figsize=(columns * cell_w, rows * cell_h), dpi=100)
    for k, (image, title) in enumerate(zip(images, titles)):
        row, col = divmod(k, columns)
        left, bottom = col * cell_w + pad, (rows - 1 - row) * cell_h + text_height
        ax = fig.add_axes(
            (left / (columns * cell_w), bottom / (rows * cell_h), side / (columns * cell_w), side / (rows * cell_h))
        )
        ax.imshow(image.repeat(scale, 0).repeat(scale, 1), interpolation="nearest")
        ax.axis("off")
        fig.text(
            (left + side / 2) / (columns * cell_w),
            (bottom - 0.04) / (rows * cell_h),
            "\n".join(line for part in title.split("\n") for line in textwrap.wrap(part, wrap)),
            ha="center",
            va="top",
            fontsize=fontsize,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def to_uint8(images) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] (torch or numpy) → (N, H, W, 3) uint8."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return np.ascontiguousarray((np.clip(array, 0, 1).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8))


def save_grid(
    path: str | Path, scenes: Sequence[Scene], titles: Sequence[str] | None = None, columns: int = 8, scale: int = 4
) -> Path:
    """Render world ``scenes``, upscale each ×``scale`` (nearest), write a PNG grid with a title under each."""
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
