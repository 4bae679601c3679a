"""The synthetic world's decoder: a 32×32 pixel-space diffusion UNet conditioned on the world CLIP's image embedding.

It is the unCLIP / Kandinsky 2.2 decoder in miniature. The UNet is diffusers'
``UNet2DConditionModel`` with Kandinsky 2.2's conditioning:

- ``encoder_hid_dim_type="image_proj"``: the image embedding is projected to 32 tokens that the
  attention layers attend to (``encoder_hidden_states`` is ``None`` at call time);
- ``addition_embed_type="image"``: the same embedding is also added to the timestep embedding;
- the call is ``unet(x, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": e})``.

So :func:`sample_image_conditioned` runs the real Kandinsky 2.2 decoder UNet unchanged (it drops a
learned-variance half of the output when there is one). Sampling is DDIM (eta 0) with classifier-free
guidance, the unconditional embedding being zeros (the trainer drops embeddings to zeros, p≈0.1); the
initial noise of image i comes from seed i alone, so an image never depends on its batch.

Training: :mod:`evalkit.train.world_decoder` (``evalkit train-world decoder``). Shipped weights live
in ``evalkit/world/weights/decoder/`` (``config.json`` + ``model.safetensors``, possibly fp16).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from evalkit.contracts import Batch, Decoder, Protocol, per_image_randn
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.paths import WORLD_WEIGHTS
from evalkit.serialization import CONFIG_NAME, PretrainedMixin

SHIPPED_DIR = WORLD_WEIGHTS / "decoder"
TRAIN_HINT = "Train it with `evalkit train-world decoder` (or restore the shipped weights from git)."
EMBEDDING_SPACE = "synth-clip"
SAMPLING_DTYPES = ("float32", "bfloat16")
#: settings of a loaded config that must be at least 1 (sizes of what decoding allocates, step counts)
POSITIVE_SETTINGS = ("resolution", "channels", "num_train_timesteps", "num_inference_steps", "max_batch")
MAX_RESOLUTION = 1024


@dataclass
class SynthDecoderConfig:
    """Architecture (diffusers ``UNet2DConditionModel`` keywords), noise schedule and sampling defaults."""

    embedding_dim: int = 128  # the world CLIP's embed_dim (raw image embeddings)
    resolution: int = 32
    channels: int = 3
    # UNet: Kandinsky 2.2's block types, scaled down
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # 32×32, 16×16, 8×8; attention at 16×16 and 8×8
    layers_per_block: int = 1
    down_block_types: tuple[str, ...] = (
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    )
    up_block_types: tuple[str, ...] = ("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D")
    mid_block_type: str = "UNetMidBlock2DSimpleCrossAttn"
    cross_attention_dim: int = 128  # width of the 32 image tokens made by the image_proj layer
    attention_head_dim: int = 32
    norm_num_groups: int = 8
    resnet_time_scale_shift: str = "scale_shift"
    cross_attention_norm: str | None = "group_norm"
    # noise schedule (DDPM training; DDIM sampling built from the same config)
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    clip_sample: bool = True  # clip predicted x0 to [-1, 1] while sampling (pixel space)
    timestep_spacing: str = "trailing"  # DDIM timesteps: start at t = T-1 whatever the step count
    # sampling defaults (a Protocol overrides them)
    num_inference_steps: int = 25
    guidance_scale: float = 3.0
    max_batch: int = 256  # images per UNet call while decoding (memory bound; results do not depend on it)
    # the UNet's compute dtype while sampling: "bfloat16" runs it under torch.autocast (weights and the
    # sampler's arithmetic stay float32); about 2x faster on CPUs with bf16 units (benchmarks/speed/decoder_flops.py)
    sampling_dtype: str = "float32"
    extra_unet_kwargs: dict = field(default_factory=dict)  # any other UNet2DConditionModel keyword

    def unet_kwargs(self) -> dict:
        kwargs = dict(
            sample_size=self.resolution,
            in_channels=self.channels,
            out_channels=self.channels,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            down_block_types=tuple(self.down_block_types),
            up_block_types=tuple(self.up_block_types),
            mid_block_type=self.mid_block_type,
            cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=self.attention_head_dim,
            norm_num_groups=self.norm_num_groups,
            resnet_time_scale_shift=self.resnet_time_scale_shift,
            cross_attention_norm=self.cross_attention_norm,
            # Kandinsky 2.2's conditioning on an image embedding
            encoder_hid_dim=self.embedding_dim,
            encoder_hid_dim_type="image_proj",
            addition_embed_type="image",
        )
        kwargs.update(self.extra_unet_kwargs)
        return kwargs

    def scheduler_config(self) -> dict:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=self.clip_sample,
            clip_sample_range=1.0,
            timestep_spacing=self.timestep_spacing,
        )


def sample_image_conditioned(
    unet,
    scheduler,
    image_embeds: torch.Tensor,
    negative_image_embeds: torch.Tensor,
    noise: torch.Tensor,
    num_inference_steps: int,
    guidance_scale: float,
) -> torch.Tensor:
    """Reverse diffusion of a UNet conditioned Kandinsky-2.2 style; returns the final sample (x0 space).

    Works for any ``UNet2DConditionModel`` with ``encoder_hid_dim_type="image_proj"`` and
    ``addition_embed_type="image"`` (this decoder's, or Kandinsky 2.2's latent UNet, whose output
    carries a learned variance: the first ``noise.shape[1]`` channels are the noise prediction).
    Guidance > 1 runs the conditional and unconditional branches in one batched call.
    """
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    sample = noise * scheduler.init_noise_sigma
    guided = guidance_scale > 1.0
    cond = torch.cat([negative_image_embeds, image_embeds]) if guided else image_embeds
    step_kwargs = {"eta": 0.0} if "eta" in inspect.signature(scheduler.step).parameters else {}
    channels = sample.shape[1]
    for t in scheduler.timesteps:
        model_input = torch.cat([sample, sample]) if guided else sample
        model_input = scheduler.scale_model_input(model_input, t)
        out = unet(model_input, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample
        out = out[:, :channels].to(sample.dtype)  # a UNet under autocast answers in bfloat16
        if guided:
            uncond, cond_out = out.chunk(2)
            out = uncond + guidance_scale * (cond_out - uncond)
        sample = scheduler.step(out, t, sample, **step_kwargs).prev_sample
    return sample


class SynthDecoder(PretrainedMixin, Decoder, nn.Module):
    name = "synth"
    config_class = SynthDecoderConfig
    embedding_space = EMBEDDING_SPACE
    normalisation = "raw"
    resolution = 32
    default_num_inference_steps = 25
    default_guidance_scale = 3.0
    weights_hint = TRAIN_HINT
    supported_dtypes = SAMPLING_DTYPES

    def __init__(self, config: SynthDecoderConfig | None = None):
        from diffusers import UNet2DConditionModel

        nn.Module.__init__(self)
        self.config = config or SynthDecoderConfig()
        self.embedding_dim = self.config.embedding_dim
        self.resolution = self.config.resolution
        self.default_num_inference_steps = self.config.num_inference_steps
        self.default_guidance_scale = self.config.guidance_scale
        if self.config.sampling_dtype not in SAMPLING_DTYPES:
            raise ValueError(
                f"synth decoder: sampling_dtype {self.config.sampling_dtype!r} is not one of "
                f"{', '.join(SAMPLING_DTYPES)}"
            )
        self.compute_dtype = self.config.sampling_dtype
        self.unet = UNet2DConditionModel(**self.config.unet_kwargs())
        self.eval()  # a decoder; the trainer switches to train mode itself

    @staticmethod
    def tiny_config() -> SynthDecoderConfig:
        return SynthDecoderConfig(
            embedding_dim=16,
            block_out_channels=(8, 16),
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=4,
            num_inference_steps=4,
            guidance_scale=2.0,
        )

    @classmethod
    def tiny(cls) -> "SynthDecoder":
        """A ~76k-parameter instance (random weights) for tests; fits ``WorldCLIP.tiny()`` (dim 16)."""
        return cls(cls.tiny_config())

    # ------------------------------------------------------------------ diffusion pieces

    def training_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.config.scheduler_config())

    def sampling_scheduler(self):
        """A fresh DDIM scheduler (stateful, so one per call) from the training schedule."""
        from diffusers import DDIMScheduler

        return DDIMScheduler(**self.config.scheduler_config(), set_alpha_to_one=True)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """The noise prediction (training)."""
        return self.unet(
            sample, timesteps, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": image_embeds}
        ).sample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """Move the UNet to ``device``; ``dtype`` sets what it samples in (``config.sampling_dtype``: bfloat16
        runs the UNet under autocast). The weights stay float32 whatever the dtype, so a float32 placement of
        any copy gives the images of float32 sampling (None: keep the config's, e.g. the shipped bfloat16)."""
        from evalkit.errors import SettingError

        if dtype is not None:
            if dtype not in SAMPLING_DTYPES:
                raise SettingError(f"synth decoder samples in {' or '.join(SAMPLING_DTYPES)}; not {dtype}")
            self.config.sampling_dtype = dtype
            self.compute_dtype = dtype
        self.to(device=device)

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def decode(self, image_embeds: torch.Tensor, batch: Batch, protocol: Protocol) -> torch.Tensor:
        n = image_embeds.shape[0]
        if image_embeds.ndim != 2 or image_embeds.shape[1] != self.embedding_dim:
            raise ValueError(
                f"synth decoder expects image embeddings (N, {self.embedding_dim}), got {tuple(image_embeds.shape)}"
            )
        if n != len(batch):
            raise ValueError(f"{n} embeddings for a batch of {len(batch)} images")
        if protocol.resolution and protocol.resolution != self.resolution:
            raise ValueError(
                f"synth decoder renders {self.resolution}×{self.resolution}; "
                f"the protocol asks for {protocol.resolution}"
            )
        steps = protocol.num_inference_steps or self.default_num_inference_steps
        r, c = self.resolution, self.config.channels
        device = self.device
        dtype = next(self.parameters()).dtype
        noise = per_image_randn(batch.seeds, (c, r, r))  # on CPU: the same images on any device
        chunks = []
        # eval mode whatever the caller left: train mode (dropout with p=0) takes other kernels, whose
        # multi-threaded sums differ in the last bits, and guidance amplifies that
        was_training = self.training
        self.eval()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bfloat16")
        try:
            for start in range(0, n, self.config.max_batch):
                stop = min(n, start + self.config.max_batch)
                embeds = image_embeds[start:stop].to(device=device, dtype=dtype)
                with autocast:
                    x0 = sample_image_conditioned(
                        self.unet,
                        self.sampling_scheduler(),
                        embeds,
                        torch.zeros_like(embeds),
                        noise[start:stop].to(device=device, dtype=dtype),
                        steps,
                        protocol.guidance_scale,
                    )
                chunks.append(x0.float())
        finally:
            self.train(was_training)
        images = torch.cat(chunks) if chunks else torch.empty((0, c, r, r), device=device)
        return ((images.clamp(-1.0, 1.0) + 1.0) / 2.0).to(image_embeds.device)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ weights

    @classmethod
    def _config_from_dict(cls, raw: dict, where: str = ""):
        config = super().config_from_dict(raw, where)
        for f in dataclasses.fields(config):  # JSON gives lists back; the dataclass holds tuples
            value = getattr(config, f.name)
            if isinstance(value, list):
                setattr(config, f.name, tuple(value))
        return config

    @classmethod
    def from_pretrained(cls, directory=None, allow_pickle: bool = False, **overrides) -> "SynthDecoder":
        """Load ``directory`` (default: the shipped weights); weights stored in fp16 are cast to float32."""
        directory = Path(directory) if directory is not None else SHIPPED_DIR
        if not (directory / CONFIG_NAME).is_file():
            raise WeightsNotFoundError(
                f"the synthetic world's decoder: no weights at {directory} (no {CONFIG_NAME}). {TRAIN_HINT}"
            )
        # config types, a meta build checked against the file's tensor shapes, then the real build
        return cls.load_folder(directory, allow_pickle, overrides)

    @classmethod
    def config_from_dict(cls, raw: dict, where: str = ""):
        config = cls._config_from_dict(raw, where)
        small = [f"{name} = {getattr(config, name)!r}" for name in POSITIVE_SETTINGS if getattr(config, name) < 1]
        if small:
            raise ConfigMismatchError(f"{where or 'decoder config'}: {', '.join(small)} must be at least 1")
        if config.resolution > MAX_RESOLUTION:
            raise ConfigMismatchError(
                f"{where or 'decoder config'}: resolution = {config.resolution} is beyond "
                f"{MAX_RESOLUTION} (the synthetic world renders 32×32)"
            )
        return config
