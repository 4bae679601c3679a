"""``diffusion``: a DALL-E 2 / Karlo-style diffusion prior — diffusers' ``PriorTransformer`` with its time token.

Trained by ``evalkit train-baseline --prior diffusion`` on a 1000-step linear DDPM schedule to predict the
clean (standardised) image embedding (``prediction_type="sample"``, as unCLIP priors do), with the text
conditioning replaced by the empty prompt's encoding 10 % of the time so classifier-free guidance works.
Sampling: DDIM over the same schedule (deterministic given each image's seeded start noise), 25 steps,
guidance 4.0 by default; the result is de-standardised with the model's ``clip_mean`` / ``clip_std``
(``post_process_latents``), exactly as the public Karlo / Kandinsky prior pipelines do.

Beyond the defaults, ``rerank=n`` draws n samples per image and keeps the one closest (cosine) to the
prompt's text embedding — DALL-E 2's best-of-n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, PriorTransformer

from evalkit.contracts import per_image_randn
from evalkit.priors.trained import DiffusersLayoutMixin, TrainedPrior

NUM_TRAIN_TIMESTEPS = 1000
#: offset between the seeds of the best-of-n candidates of one image
RERANK_SEED_STRIDE = 7_919


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear", prediction_type="sample", clip_sample=False
    )


class DiffusionPriorTransformer(DiffusersLayoutMixin, PriorTransformer):
    """diffusers' ``PriorTransformer`` saved and loaded through evalkit's safe loaders."""

    @classmethod
    def from_config(cls, config=None, **kwargs):
        model = super().from_config(config, **kwargs)
        with torch.no_grad():  # identity standardisation until training sets the statistics (diffusers: zeros)
            model.clip_std.fill_(1.0)
        model.clip_mean.requires_grad_(False)  # standardisation statistics, set from the training data
        model.clip_std.requires_grad_(False)
        return model


class DiffusionPrior(TrainedPrior):
    name = "diffusion"
    kind = "diffusion"
    model_class = DiffusionPriorTransformer

    def __init__(
        self,
        path=None,
        training_seed: int = 0,
        model=None,
        clip=None,
        allow_pickle: bool = False,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        rerank: int = 1,
        empty_encoding=None,
    ):
        super().__init__(path, training_seed, model, clip, allow_pickle)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if rerank < 1:
            raise ValueError(f"rerank must be >= 1, got {rerank}")
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.rerank = rerank
        self._empty = empty_encoding
        self._empty_given = empty_encoding is not None  # else derived from the text encoder on first use

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """The default placement; an empty-prompt encoding derived from the text encoder is dropped, to be
        encoded again by the placed encoder (where and in the precision it now computes)."""
        super().to_placement(device, dtype)
        if not getattr(self, "_empty_given", False):
            self._empty = None

    def empty_encoding(self):
        """The unconditional branch: the text encoder's encoding of the empty prompt (as in training)."""
        if self._empty is None:
            self._empty = self.text_encoder().encode_text([""])
        return self._empty

    def conditioning(self, encoding, n: int, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's text inputs on its device and in its precision: ``[empty; prompts]`` when guided
        (batched classifier-free guidance), the prompts alone otherwise."""
        text, hidden, mask = self.model_inputs(encoding)
        if guided:
            empty = self.empty_encoding()  # cached where it was encoded: moved at use
            text = torch.cat([empty.text_embeds.to(text).expand(n, -1), text])
            hidden = torch.cat([empty.text_hidden.to(hidden).expand(n, -1, -1), hidden])
            mask = torch.cat([empty.attention_mask.to(mask.device).expand(n, -1), mask])
        return text, hidden, mask

    def sample(self, encoding, seeds) -> torch.Tensor:
        if self.rerank == 1:
            return self._sample(encoding, seeds)
        candidates = torch.stack(
            [self._sample(encoding, [s + k * RERANK_SEED_STRIDE for s in seeds]) for k in range(self.rerank)], dim=1
        )  # (N, n, D)
        text = encoding.text_embeds.to(candidates.device, torch.float32)
        score = (F.normalize(candidates, dim=-1) * F.normalize(text, dim=-1)[:, None]).sum(-1)
        return candidates[torch.arange(len(seeds), device=candidates.device), score.argmax(1)]

    def _sample(self, encoding, seeds) -> torch.Tensor:
        # the sampler's state (latents, the scheduler's arithmetic) stays in float32 whatever the network's dtype
        model = self.model
        n = len(seeds)
        guided = self.guidance_scale != 1.0
        text, hidden, mask = self.conditioning(encoding, n, guided)
        scheduler = DDIMScheduler.from_config(train_scheduler().config)
        scheduler.set_timesteps(self.num_inference_steps, device=text.device)
        # drawn on the CPU from each image's seed, then moved: the same noise on any device
        latents = per_image_randn(seeds, (model.config["embedding_dim"],)).to(text.device)
        for t in scheduler.timesteps:
            model_in = (torch.cat([latents, latents]) if guided else latents).to(text.dtype)
            out = model(
                model_in, t, proj_embedding=text, encoder_hidden_states=hidden, attention_mask=mask
            ).predicted_image_embedding.float()
            if guided:
                uncond, cond = out.chunk(2)
                out = uncond + self.guidance_scale * (cond - uncond)
            latents = scheduler.step(out, t, latents).prev_sample
        return model.post_process_latents(latents).float()


class DiffusionXLPrior(DiffusionPrior):
    name = "diffusion-xl"
