"""World renders as torch tensors: ``(N, 3, H, W)`` float32 in [0, 1], what the CLIP and decoder take."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 → ``(N, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div_(255.0)


def render_tensor(scenes) -> torch.Tensor:
    """Render ``scenes`` straight to a float tensor."""
    from evalkit.world import render

    return images_to_tensor(render(scenes))
