"""The template prior: a complete, tiny plugin to copy when adding a prior (see docs/add-a-prior.md).

It embeds a prompt as a hashed bag of words through one linear layer. It knows nothing about
images; it exists to exercise the contracts and as a pattern.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from evalkit.contracts import Batch, Prior
from evalkit.serialization import PretrainedMixin


@dataclass
class DummyPriorConfig:
    embedding_dim: int = 16
    num_buckets: int = 64
    seed: int = 0


class DummyPrior(PretrainedMixin, Prior, nn.Module):
    name = "dummy"
    config_class = DummyPriorConfig
    embedding_space = "dummy"
    normalisation = "raw"
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, config: DummyPriorConfig | None = None):
        nn.Module.__init__(self)
        self.config = config or DummyPriorConfig()
        self.embedding_dim = self.config.embedding_dim
        generator = torch.Generator().manual_seed(self.config.seed)
        self.proj = nn.Linear(self.config.num_buckets, self.config.embedding_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=generator) * 0.5)
            self.proj.bias.zero_()

    @classmethod
    def tiny(cls) -> "DummyPrior":
        return cls(DummyPriorConfig(embedding_dim=8, num_buckets=16))

    def bag_of_words(self, prompts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(prompts), self.config.num_buckets)
        for row, prompt in enumerate(prompts):
            for word in prompt.lower().split():
                counts[row, zlib.crc32(word.encode()) % self.config.num_buckets] += 1.0
        return counts

    @torch.inference_mode()
    def predict(self, batch: Batch) -> torch.Tensor:
        weight = self.proj.weight  # the counts are made on the CPU: they go to the weights' device and dtype
        return self.proj(self.bag_of_words(batch.prompts).to(weight)).float()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
