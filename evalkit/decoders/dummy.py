"""The template decoder: embeddings → a colour field plus per-image seeded noise.

Copy it when adding a decoder (see docs/add-a-decoder.md): it shows the contract — image i
depends only on embedding row i and seed i, whatever batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evalkit.contracts import Batch, Decoder, Protocol, per_image_randn
from evalkit.serialization import PretrainedMixin


@dataclass
class DummyDecoderConfig:
    embedding_dim: int = 16
    resolution: int = 16
    noise_scale: float = 0.1


class DummyDecoder(PretrainedMixin, Decoder, nn.Module):
    name = "dummy"
    config_class = DummyDecoderConfig
    embedding_space = "dummy"
    normalisation = "raw"
    default_num_inference_steps = 1
    default_guidance_scale = 1.0
    supported_dtypes = ("float32",)  # what --dtype may choose (evalkit.placement.place casts the weights)

    def __init__(self, config: DummyDecoderConfig | None = None):
        nn.Module.__init__(self)
        self.config = config or DummyDecoderConfig()
        self.embedding_dim = self.config.embedding_dim
        self.resolution = self.config.resolution
        generator = torch.Generator().manual_seed(1)
        self.to_colour = nn.Linear(self.config.embedding_dim, 3 * 4)  # a 2×2 grid of colours
        with torch.no_grad():
            self.to_colour.weight.copy_(torch.randn(self.to_colour.weight.shape, generator=generator))
            self.to_colour.bias.zero_()

    @classmethod
    def tiny(cls) -> "DummyDecoder":
        return cls(DummyDecoderConfig(embedding_dim=8, resolution=8))

    @torch.inference_mode()
    def decode(self, image_embeds: torch.Tensor, batch: Batch, protocol: Protocol) -> torch.Tensor:
        n, r = image_embeds.shape[0], self.resolution
        weight = self.to_colour.weight  # compute where the weights are (evalkit.placement.place put them)
        colours = torch.sigmoid(self.to_colour(image_embeds.to(device=weight.device, dtype=weight.dtype))).view(
            n, 3, 2, 2
        )
        images = nn.functional.interpolate(colours, size=(r, r), mode="nearest")
        noise = per_image_randn(batch.seeds, (3, r, r)).to(images.device)  # drawn on the CPU: the same on any device
        return (images + self.config.noise_scale * noise).clamp(0.0, 1.0).to(image_embeds.device)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
