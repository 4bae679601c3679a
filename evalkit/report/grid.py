"""Picture grids of images with a caption under each (matplotlib, imported on use; no torch)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np


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
