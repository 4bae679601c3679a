"""Calibration priors of the synthetic world: a ceiling, a no-prior reference and a floor.

- ``oracle``: the CLIP image embedding of a render that matches the prompt. For image-level
  scoring it is the item's own render (same prompt, same seed → same scene). For embedding-level
  metrics, where the item's own render would be trivially perfect, ``independent=True`` renders
  the same caption with another seed: what a prior could know from the caption. With
  ``samples=K`` it averages the embeddings of K independent renders, an estimate of
  E[image embedding | caption] — the point prediction a regression prior aims at, and the
  ceiling the embedding-level tables use.
- ``text``: the prompt's own CLIP text embedding used as the image embedding (rescaled to the mean
  image-embedding norm so a decoder sees the scale it was trained on). If it scores near
  ``oracle``, the world leaves priors no room to differ.
- ``none``: the mean image embedding of training renders: no prompt information at all.

All three live in the world CLIP's space (``synth-clip``, raw embeddings).
"""

from __future__ import annotations

import functools

import torch

from evalkit.contracts import Batch, Prior
from evalkit.world.models.tensors import render_tensor

#: added to an item's seed to draw an independent render of the same caption
INDEPENDENT_SEED_OFFSET = 1_000_003
STATS_PAIRS = 1024


def _image_stats(clip) -> tuple[torch.Tensor, float]:
    """Mean image embedding (float32, on the CLIP's device) and mean norm over training renders of all
    categories, as the CLIP computes them where it is placed now (cached per device and precision)."""
    tensors = (*clip.parameters(), *clip.buffers()) if isinstance(clip, torch.nn.Module) else ()
    weight = next((t for t in tensors if t.is_floating_point()), None)
    return _image_stats_at(clip, str(getattr(weight, "device", "")), str(getattr(weight, "dtype", "")))


@functools.lru_cache(maxsize=4)
def _image_stats_at(clip, device: str, dtype: str) -> tuple[torch.Tensor, float]:
    from evalkit.world import sample_pairs

    _, scenes = sample_pairs("all", STATS_PAIRS, seed=12345, split="train")
    with torch.inference_mode():
        embeds = clip.encode_image(render_tensor(scenes)).float()
    return embeds.mean(0), embeds.norm(dim=-1).mean().item()


class _WorldPrior(Prior):
    embedding_space = "synth-clip"
    normalisation = "raw"
    #: what the world CLIP computes in (these priors hold no other weights)
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, clip=None):
        from evalkit.world.models.clip import load_world_clip

        self.clip = clip if clip is not None else load_world_clip()
        self.embedding_dim = self.clip.embedding_dim

    @classmethod
    def tiny(cls):
        from evalkit.world.models.clip import WorldCLIP

        torch.manual_seed(0)
        return cls(WorldCLIP.tiny().eval())


class OraclePrior(_WorldPrior):
    name = "oracle"

    def __init__(self, clip=None, independent: bool = False, samples: int = 1):
        super().__init__(clip)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if samples > 1 and not independent:
            raise ValueError("averaging several renders (samples > 1) needs independent=True")
        self.independent = independent
        self.samples = samples

    @torch.inference_mode()
    def predict(self, batch: Batch) -> torch.Tensor:
        from evalkit.world import sample_scene

        from evalkit.errors import EvalkitError

        total = None
        for k in range(self.samples):
            offset = INDEPENDENT_SEED_OFFSET * (k + 1) if self.independent else 0
            try:
                scenes = [sample_scene(item.prompt, seed + offset) for item, seed in zip(batch.items, batch.seeds)]
            except ValueError as error:
                raise EvalkitError(
                    f"the oracle prior renders its prompt, so it needs captions of the synthetic world: {error}"
                ) from None
            embeds = self.clip.encode_image(render_tensor(scenes)).float()
            total = embeds if total is None else total + embeds
        return total / self.samples


class TextPrior(_WorldPrior):
    name = "text"
    text_encoders = ("synth-clip",)

    @torch.inference_mode()
    def predict(self, batch: Batch) -> torch.Tensor:
        encoding = batch.text.get(self.embedding_space) or self.clip.encode_text(batch.prompts)
        _, mean_norm = _image_stats(self.clip)
        embeds = encoding.text_embeds.float()
        return embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-8) * mean_norm


class NonePrior(_WorldPrior):
    name = "none"

    @torch.inference_mode()
    def predict(self, batch: Batch) -> torch.Tensor:
        mean, _ = _image_stats(self.clip)
        return mean.float().unsqueeze(0).expand(len(batch), -1).clone()
