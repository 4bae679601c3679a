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


def embed_images(clip, images_uint8: np.ndarray, batch_size: int) -> torch.Tensor:
    """``(N, D)`` float32 image embeddings of uint8 HWC renders, ``batch_size`` at a time (any CLIP with
    ``encode_image``): how the world trainers embed their training images."""
    out = [
        clip.encode_image(images_to_tensor(images_uint8[i : i + batch_size])).float()
        for i in range(0, len(images_uint8), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, clip.embedding_dim)
