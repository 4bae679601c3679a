"""Kandinsky 2.2's decoder (``kandinsky-community/kandinsky-2-2-decoder``): CLIP image embedding → image.

The public decoder is three diffusers components in one folder:

- ``unet/``: a latent ``UNet2DConditionModel`` (1.25 B parameters) conditioned Kandinsky-2.2 style on a
  **raw** (not L2-normalised) OpenCLIP ViT-bigG/14 image embedding of 1280 dimensions
  (``encoder_hid_dim_type="image_proj"``, ``addition_embed_type="image"``); its output carries a
  learned-variance half, which is dropped;
- ``movq/``: a ``VQModel`` (MoVQ, 68 M parameters) whose decoder maps 4×(H/8)×(W/8) latents to pixels in
  [-1, 1] (decoded with ``force_not_quantize=True``);
- ``scheduler/``: a ``DDPMScheduler`` config (1000-step linear betas 0.00085 → 0.012, epsilon prediction).

Decoding follows diffusers' ``KandinskyV22Pipeline``: classifier-free guidance between the embedding and a
*negative* embedding (:attr:`Kandinsky22Decoder.negative_image_embeds`), the scheduler named in the folder
(DDPM for the public one), ``movq.decode``, then ``x * 0.5 + 0.5`` clamped to [0, 1]. The initial latents of
image i come from seed i alone (:func:`~evalkit.contracts.per_image_randn`), and a stochastic scheduler's
per-step noise from a generator of that same seed, so an image never depends on its batch. With CPU
generators ``[torch.Generator().manual_seed(s) for s in seeds]`` the public pipeline draws the same noise.

The negative is an argument of :meth:`Kandinsky22Decoder.decode` (``negative_image_embeds``): ``evalkit run``
passes what the prior's pipeline gives — for the Kandinsky priors the zero-image embedding of the prior
pipeline's image encoder, as ``KandinskyV22PriorPipeline`` without a negative prompt (``--negative``). Without
it, the folder's own (:attr:`Kandinsky22Decoder.negative_image_embeds`, zeros unless the folder holds one).

Nothing is downloaded: :meth:`Kandinsky22Decoder.from_pretrained` reads a local copy of the public repository
(``directory``, else ``$EVALKIT_KANDINSKY22_DIR``). :meth:`Kandinsky22Decoder.random_init` builds the real
architecture without weights (speed and memory benchmarks); :meth:`Kandinsky22Decoder.tiny` a small one for tests.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from evalkit.contracts import Batch, Decoder, Protocol, per_image_randn, seeded_generators
from evalkit.decoders.synth import sample_image_conditioned
from evalkit.errors import (
    ConfigMismatchError,
    CorruptFileError,
    EmbeddingContractError,
    SettingError,
    WeightsNotFoundError,
)
from evalkit.serialization import (
    atomic_write_bytes,
    atomic_write_json,
    read_json_object,
    weights_folder,
    weights_format,
)

REPO_ID = "kandinsky-community/kandinsky-2-2-decoder"
ENV_DIR = "EVALKIT_KANDINSKY22_DIR"
EMBEDDING_SPACE = "clip-vit-bigg-14"  # the Kandinsky 2.2 prior's image space (OpenCLIP ViT-bigG/14, 1280-d)
SUBFOLDERS = ("unet", "movq", "scheduler")
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
SETTINGS_NAME = "evalkit_decoder.json"  # resolution of a folder written by save_pretrained (optional)
NEGATIVE_NAME = "negative_image_embeds.safetensors"  # the negative embedding, likewise optional
DEFAULT_RESOLUTION = 512

# Architectures of the public repository (unet/config.json, movq/config.json, scheduler/scheduler_config.json),
# without diffusers' bookkeeping keys; every other constructor argument has diffusers' default value.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 8,  # noise prediction + learned variance
    "down_block_types": (
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "up_block_types": (
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ),
    "block_out_channels": (384, 768, 1152, 1536),
    "layers_per_block": 3,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "cross_attention_norm": None,
    "attention_head_dim": 64,
    "encoder_hid_dim": 1280,
    "encoder_hid_dim_type": "image_proj",
    "addition_embed_type": "image",
    "addition_embed_type_num_heads": 64,
    "resnet_time_scale_shift": "scale_shift",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "time_embedding_type": "positional",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "only_cross_attention": False,
    "upcast_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
}
MOVQ_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (128, 256, 256, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_type": "spatial",
    "num_vq_embeddings": 16384,
    "vq_embed_dim": 4,
    "sample_size": 32,
    "scaling_factor": 0.18215,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
}

# The same block types, scaled down for tests (UNet 0.87 M + MoVQ 0.72 M parameters; 16×16 images from 8×8 latents).
TINY_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "sample_size": 8,
    "down_block_types": ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    "up_block_types": ("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "encoder_hid_dim": 16,
    "addition_embed_type_num_heads": 4,
}
TINY_MOVQ_CONFIG: dict[str, Any] = {
    **MOVQ_CONFIG,
    "down_block_types": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "num_vq_embeddings": 12,
    "sample_size": 16,
}
TINY_RESOLUTION = 16
TINY_STEPS = 4


def weights_hint(directory: Path | None = None) -> str:
    where = f" into {directory}" if directory is not None else ""
    return (
        f"Download {REPO_ID} (its unet/, movq/ and scheduler/ folders, safetensors weights) on a machine with "
        f"network, e.g. `huggingface-cli download {REPO_ID} --local-dir DIR`{where}, copy it here, and pass "
        f"`--decoder-path DIR` (or set ${ENV_DIR})."
    )


def _weights_directory(directory: str | os.PathLike | None) -> Path:
    directory = weights_folder(directory, ENV_DIR, "kandinsky22", REPO_ID, weights_hint)
    for sub in SUBFOLDERS:
        if not (directory / sub).is_dir():
            raise WeightsNotFoundError(
                f"kandinsky22: {directory} is not a complete {REPO_ID} folder: it has no {sub}/ "
                f"subfolder (expected {directory / sub}). {weights_hint(directory)}"
            )
    return directory


def _weights_format(folder: Path, allow_pickle: bool) -> dict:
    """``from_pretrained`` keywords for the weights in ``folder`` (:func:`evalkit.serialization.weights_format`)."""
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(f"kandinsky22: no config.json in {folder}. {weights_hint(folder.parent)}")
    return weights_format(
        folder,
        allow_pickle,
        "kandinsky22",
        hint=f"Download the safetensors weights ({REPO_ID} ships them).",
        missing=f"(diffusion_pytorch_model.safetensors expected). {weights_hint(folder.parent)}",
    )


def _scheduler_class(config: dict, where: str):
    import diffusers

    name = config.get("_class_name", "")
    cls = getattr(diffusers, name, None) if name else None
    if cls is None or not hasattr(cls, "from_config"):
        raise ConfigMismatchError(
            f"kandinsky22: {where} names scheduler class {name!r}, which diffusers "
            f"{diffusers.__version__} does not have"
        )
    if config.get("variance_type") in ("learned", "learned_range"):
        raise ConfigMismatchError(
            f"kandinsky22: {where} asks for a learned variance ({config['variance_type']!r}); this "
            "decoder uses the UNet's noise prediction only (as the public scheduler config does)"
        )
    return cls


def _public_keys(config) -> dict:
    """A diffusers config without its bookkeeping keys (``_name_or_path``, ``_diffusers_version``, ...)."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in dict(config).items()
        if not k.startswith("_") or k == "_class_name"
    }


def _check_components(unet_config, movq_config) -> None:
    """A :class:`ConfigMismatchError` unless the UNet is conditioned Kandinsky-2.2 style and denoises the
    latents the MoVQ decodes."""
    if unet_config.get("encoder_hid_dim_type") != "image_proj" or unet_config.get("addition_embed_type") != "image":
        raise ConfigMismatchError(
            "kandinsky22: the UNet is not conditioned Kandinsky-2.2 style (it needs "
            "encoder_hid_dim_type='image_proj' "
            f"and addition_embed_type='image'; it has {unet_config.get('encoder_hid_dim_type')!r} and "
            f"{unet_config.get('addition_embed_type')!r}). Kandinsky 2.1 folders are not supported."
        )
    if unet_config.in_channels != movq_config.latent_channels:
        raise ConfigMismatchError(
            f"kandinsky22: the UNet denoises {unet_config.in_channels}-channel latents but the "
            f"MoVQ decodes {movq_config.latent_channels}-channel ones"
        )


class _PerImageNoise:
    """A scheduler whose ``step`` draws row i's noise from generator i (stochastic samplers such as DDPM)."""

    def __init__(self, scheduler, generators: list[torch.Generator]):
        self._scheduler = scheduler
        self._generators = generators
        self._takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    def __getattr__(self, name: str):
        return getattr(self._scheduler, name)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, **kwargs):
        if self._takes_generator:
            kwargs["generator"] = self._generators
        return self._scheduler.step(model_output, timestep, sample, **kwargs)


class Kandinsky22Decoder(Decoder, nn.Module):
    """Kandinsky 2.2's latent diffusion decoder (UNet + MoVQ + scheduler) behind evalkit's decoder contract."""

    name = "kandinsky22"
    embedding_space = EMBEDDING_SPACE
    embedding_dim = 1280
    normalisation = "raw"
    resolution = DEFAULT_RESOLUTION
    default_num_inference_steps = 50
    takes_negative_image_embeds = True
    default_guidance_scale = 4.0
    #: what it computes in: its weights' dtype (as the public pipeline's ``torch_dtype``), cast by :meth:`to_placement`
    supported_dtypes = ("float32", "bfloat16", "float16")
    #: square sides a load may choose: multiples of 64 (MoVQ ×8 × UNet ×8) from 256 to 1024 (the sides the public
    #: model was trained at); ``decode`` itself renders any multiple of 64 a protocol asks for
    supported_resolutions = tuple(range(256, 1025, 64))
    #: model CPU offload order (diffusers' ``KandinskyV22Pipeline.model_cpu_offload_seq``)
    offload_sequence = ("unet", "movq")

    def __init__(
        self,
        unet,
        movq,
        scheduler_config: dict | None = None,
        resolution: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        max_batch: int = 16,
        offload: bool = False,
        attention: str | None = None,
        vae_chunk_size: int | None = None,
    ):
        """Wrap loaded diffusers components; ``scheduler_config`` holds ``_class_name`` (default: the public DDPM one).

        Memory levers (off by default; images do not depend on ``offload`` and ``vae_chunk_size``): ``offload``:
        model CPU offload once placed on a device (:meth:`to_placement`); ``attention``: ``"sdpa"`` | ``"eager"``
        kernels in the UNet's and the MoVQ's attention (None: as loaded, i.e. sdpa); ``vae_chunk_size``: the MoVQ
        decodes at most that many latents at a time.
        """
        from evalkit.decoders import check_levers

        nn.Module.__init__(self)
        check_levers("kandinsky22", offload=offload, attention=attention, vae_chunk_size=vae_chunk_size)
        unet_config = unet.config
        _check_components(unet_config, movq.config)
        self.unet = unet
        self.movq = movq
        self.scheduler_config = dict(scheduler_config or SCHEDULER_CONFIG)
        _scheduler_class(self.scheduler_config, "the scheduler config")
        self.embedding_dim = int(unet_config.encoder_hid_dim)
        self.latent_channels = int(unet_config.in_channels)
        self.movq_scale_factor = 2 ** (len(movq.config.block_out_channels) - 1)
        self.unet_scale_factor = 2 ** (len(unet_config.block_out_channels) - 1)
        self.max_batch = int(max_batch)
        if num_inference_steps is not None:
            self.default_num_inference_steps = int(num_inference_steps)
        if guidance_scale is not None:
            self.default_guidance_scale = float(guidance_scale)
        self.resolution = self._checked_resolution(resolution or DEFAULT_RESOLUTION)
        self.register_buffer(
            "negative_image_embeds", torch.zeros(self.embedding_dim, dtype=unet.dtype, device=unet.device)
        )
        # what determines an image besides the weights (read by the work cache's fingerprint)
        self.config = {
            "unet": _public_keys(unet_config),
            "movq": _public_keys(movq.config),
            "scheduler": _public_keys(self.scheduler_config),
        }
        # levers (private: they choose how, not what, it computes, so they stay out of the fingerprint)
        self._offload, self._attention, self._vae_chunk_size = offload, attention, vae_chunk_size
        self._offload_hooks: list = []
        self._execution_device: torch.device | None = None
        if attention is not None:
            from evalkit.decoders import set_attention

            set_attention("kandinsky22", attention, [unet, movq])
        self.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def random_init(
        cls,
        resolution: int | None = None,
        size: Literal["real", "tiny"] = "real",
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        **settings,
    ) -> "Kandinsky22Decoder":
        """The public architecture (``size="real"``: UNet 1.25 B + MoVQ 68 M parameters) with random weights.

        For speed and memory benchmarks: images are noise. ``device="meta"`` builds it without memory (parameter
        counts only); ``device="cuda"`` builds it on the GPU directly. ``settings``: the constructor's
        (``max_batch``, ``offload``, ``attention``, ``vae_chunk_size``).
        """
        from diffusers import UNet2DConditionModel, VQModel

        if size not in ("real", "tiny"):
            raise ValueError(f"size must be 'real' or 'tiny', not {size!r}")
        unet_config, movq_config = (
            (UNET_CONFIG, MOVQ_CONFIG) if size == "real" else (TINY_UNET_CONFIG, TINY_MOVQ_CONFIG)
        )
        if resolution is None:
            resolution = DEFAULT_RESOLUTION if size == "real" else TINY_RESOLUTION
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.device(device) if device is not None else contextlib.nullcontext():
                unet = UNet2DConditionModel(**unet_config)
                movq = VQModel(**movq_config)
        if dtype is not None:
            unet, movq = unet.to(dtype), movq.to(dtype)
        steps = None if size == "real" else TINY_STEPS
        return cls(unet, movq, dict(SCHEDULER_CONFIG), resolution=resolution, num_inference_steps=steps, **settings)

    @classmethod
    def tiny(cls, resolution: int | None = None, **settings) -> "Kandinsky22Decoder":
        """A ~1.6 M-parameter instance (random weights, 16-d embeddings, 16×16 images, 4 steps) for tests.

        ``resolution``: any multiple of 4 (default 16); ``settings``: the constructor's (levers, ``max_batch``)."""
        return cls.random_init(resolution=resolution, size="tiny", **settings)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        resolution: int | None = None,
        **settings,
    ) -> "Kandinsky22Decoder":
        """Load a local copy of the public ``kandinsky-2-2-decoder`` layout (``unet/``, ``movq/``, ``scheduler/``).

        ``directory`` defaults to ``$EVALKIT_KANDINSKY22_DIR``. Weights are read from safetensors; a folder with
        only pickle weights (``.bin``) is refused unless ``allow_pickle`` (then ``torch.load(weights_only=True)``).
        ``resolution`` defaults to the one a ``save_pretrained`` folder records, else 512. Weights are read as
        float32 on the CPU (fp16 files are widened exactly); :func:`evalkit.placement.place` casts to what it
        computes in. ``settings``: the constructor's (``max_batch``, ``offload``, ``attention``, ``vae_chunk_size``).
        """
        from diffusers import UNet2DConditionModel, VQModel
        from safetensors import SafetensorError

        directory = _weights_directory(directory)
        scheduler_path = directory / "scheduler" / SCHEDULER_CONFIG_NAME
        if not scheduler_path.is_file():
            raise WeightsNotFoundError(
                f"kandinsky22: no {SCHEDULER_CONFIG_NAME} in {scheduler_path.parent}. {weights_hint(directory)}"
            )
        scheduler_config = read_json_object(scheduler_path)
        _scheduler_class(scheduler_config, str(scheduler_path))
        dtype = torch.float32
        components = {}
        for sub, model_cls in (("unet", UNet2DConditionModel), ("movq", VQModel)):
            kwargs = _weights_format(directory / sub, allow_pickle)
            try:
                components[sub] = model_cls.from_pretrained(directory, subfolder=sub, torch_dtype=dtype, **kwargs)
            except (SafetensorError, OSError, ValueError, RuntimeError) as error:
                raise CorruptFileError(
                    f"kandinsky22: could not load {directory / sub} ({error}). Re-download it: "
                    f"{weights_hint(directory)}"
                ) from None
        saved = read_json_object(directory / SETTINGS_NAME) if (directory / SETTINGS_NAME).is_file() else {}
        decoder = cls(
            components["unet"],
            components["movq"],
            scheduler_config,
            resolution=resolution or saved.get("resolution"),
            **settings,
        )
        negative = directory / NEGATIVE_NAME
        if negative.is_file():
            from safetensors.torch import load_file

            try:
                decoder.set_negative_embedding(load_file(str(negative))["negative_image_embeds"])
            except (SafetensorError, OSError, KeyError) as error:
                raise CorruptFileError(
                    f"kandinsky22: {negative} is damaged ({error}); delete it to use zeros"
                ) from None
        return decoder.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the public layout (``unet/``, ``movq/``, ``scheduler/``, ``model_index.json``) plus the resolution
        and negative embedding; ``KandinskyV22Pipeline.from_pretrained`` reads the folder as well."""
        import diffusers
        from safetensors.torch import save as save_bytes

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(directory / "unet", safe_serialization=True)
        self.movq.save_pretrained(directory / "movq", safe_serialization=True)
        self.make_scheduler().save_pretrained(directory / "scheduler")
        atomic_write_json(
            directory / "model_index.json",
            {
                "_class_name": "KandinskyV22Pipeline",
                "_diffusers_version": diffusers.__version__,
                "movq": ["diffusers", "VQModel"],
                "scheduler": ["diffusers", self.scheduler_config["_class_name"]],
                "unet": ["diffusers", "UNet2DConditionModel"],
            },
        )
        atomic_write_json(
            directory / SETTINGS_NAME,
            {
                "_class_name": type(self).__name__,
                "resolution": self.resolution,
                "embedding_space": self.embedding_space,
            },
        )
        tensor = self.negative_image_embeds.detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(directory / NEGATIVE_NAME, save_bytes({"negative_image_embeds": tensor}))
        return directory

    # ------------------------------------------------------------------ settings

    def set_negative_embedding(self, embedding: torch.Tensor) -> None:
        """The unconditional branch of guidance: the prior's embedding of the empty prompt (public pipeline)."""
        embedding = torch.as_tensor(embedding)
        if embedding.ndim == 2 and embedding.shape[0] == 1:
            embedding = embedding[0]
        if tuple(embedding.shape) != (self.embedding_dim,):
            raise EmbeddingContractError(
                f"kandinsky22: the negative embedding must have shape ({self.embedding_dim},), "
                f"got {tuple(embedding.shape)}"
            )
        with torch.no_grad():
            self.negative_image_embeds.copy_(embedding.to(self.negative_image_embeds))

    def make_scheduler(self):
        """A fresh scheduler (they are stateful: one per decoding call)."""
        return _scheduler_class(self.scheduler_config, "the scheduler config").from_config(self.scheduler_config)

    def _checked_resolution(self, resolution: int) -> int:
        multiple = self.movq_scale_factor * self.unet_scale_factor
        if int(resolution) != resolution or resolution <= 0 or resolution % multiple:
            raise SettingError(
                f"kandinsky22 renders square images whose side is a multiple of {multiple} (MoVQ ×"
                f"{self.movq_scale_factor}, UNet ×{self.unet_scale_factor}); got {resolution}"
            )
        return int(resolution)

    @property
    def compute_dtype(self) -> str:
        return str(self.unet.dtype).removeprefix("torch.")

    @property
    def device(self) -> torch.device:
        """Where it computes: the execution device under offload (the weights wait on the CPU), else the UNet's."""
        return self._execution_device or next(self.unet.parameters()).device

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """Cast every weight to ``dtype`` (None: keep) and put UNet and MoVQ on ``device``; with ``offload`` the
        weights stay on the CPU and each model moves to ``device`` only while it runs (the chain of diffusers'
        ``enable_model_cpu_offload``: unet → movq). On ``meta`` offload does not apply (nothing computes there).

        The MoVQ computes in the UNet's dtype, as in the public pipeline (``torch_dtype`` for all components);
        a MoVQ whose config sets ``force_upcast`` stays float32 under float16 (diffusers' VAE convention)."""
        from evalkit.decoders import install_offload, remove_offload
        from evalkit.placement import torch_dtype

        cast = torch_dtype(dtype) if dtype is not None else None
        models = [self.unet, self.movq]
        remove_offload(models)
        self._offload_hooks, self._execution_device = [], None
        offload = self._offload and torch.device(device).type != "meta"
        target = "cpu" if offload else device
        self.to(device=target, dtype=cast) if cast is not None else self.to(device=target)
        if cast == torch.float16 and self.movq.config.get("force_upcast", False):
            self.movq.to(dtype=torch.float32)
        if offload:
            self._offload_hooks = install_offload(models, device)
            self._execution_device = torch.device(device)

    def _offload_all(self) -> None:
        """Send both models back to the CPU (diffusers' ``maybe_free_model_hooks``)."""
        for hook in self._offload_hooks:
            hook.offload()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def decode(
        self,
        image_embeds: torch.Tensor,
        batch: Batch,
        protocol: Protocol,
        negative_image_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images ``(N, 3, R, R)`` in [0, 1], ``R`` = ``protocol.resolution`` (else :attr:`resolution`).

        ``negative_image_embeds``: the guidance's negative, ``(D,)`` or ``(N, D)`` — what the prior's pipeline gives
        (the run passes :meth:`evalkit.contracts.Prior.negative_image_embedding`); None: the folder's own
        (:attr:`negative_image_embeds`, zeros unless the folder holds one)."""
        self._check_embeds(image_embeds)
        n = image_embeds.shape[0]
        if n != len(batch):
            raise ValueError(f"{n} embeddings for a batch of {len(batch)} images")
        resolution = self._checked_resolution(protocol.resolution or self.resolution)
        steps = protocol.num_inference_steps or self.default_num_inference_steps
        latent = resolution // self.movq_scale_factor
        shape = (self.latent_channels, latent, latent)
        device, dtype = self.device, self.unet.dtype
        negative = self._expanded_negative(negative_image_embeds, n)
        chunks = []
        was_training = self.training
        self.eval()
        try:
            for start in range(0, n, self.max_batch):
                seeds = batch.seeds[start : start + self.max_batch]
                rows = slice(start, start + len(seeds))
                chunks.append(
                    self._decode_chunk(
                        image_embeds[rows].to(device=device, dtype=dtype),
                        negative[rows].to(device=device, dtype=dtype),
                        seeds,
                        shape,
                        steps,
                        protocol.guidance_scale,
                    )
                )
        finally:
            self._offload_all()
            self.train(was_training)
        images = torch.cat(chunks) if chunks else torch.empty((0, 3, resolution, resolution), device=device)
        return images.to(image_embeds.device)

    def _check_embeds(self, image_embeds: torch.Tensor) -> None:
        """An :class:`EmbeddingContractError` unless ``image_embeds`` is ``(N, embedding_dim)``."""
        if image_embeds.ndim != 2 or image_embeds.shape[1] != self.embedding_dim:
            got = (
                f"{image_embeds.shape[1]}-d embeddings"
                if image_embeds.ndim == 2
                else f"shape {tuple(image_embeds.shape)}"
            )
            raise EmbeddingContractError(
                f"kandinsky22 decodes raw {self.embedding_dim}-d image embeddings of {self.embedding_space!r} "
                f"(N, {self.embedding_dim}); got {got}. A prior for another CLIP space (e.g. a 768-d ViT-L/14 one, "
                "as Karlo's) cannot feed this decoder."
            )

    def _expanded_negative(self, negative_image_embeds: torch.Tensor | None, n: int) -> torch.Tensor:
        """The guidance's negative as ``(n, D)`` (None: the folder's own), checked to be ``(D,)`` or ``(n, D)``."""
        negative = self.negative_image_embeds if negative_image_embeds is None else negative_image_embeds
        if (
            negative.shape[-1] != self.embedding_dim
            or negative.ndim > 2
            or (negative.ndim == 2 and negative.shape[0] != n)
        ):
            raise EmbeddingContractError(
                f"kandinsky22: the negative image embedding must be ({self.embedding_dim},) or "
                f"({n}, {self.embedding_dim}); got {tuple(negative.shape)}"
            )
        return negative.expand(n, -1) if negative.ndim == 1 else negative

    def _decode_chunk(
        self,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        seeds: Sequence[int],
        shape: tuple[int, int, int],
        steps: int,
        guidance_scale: float,
    ) -> torch.Tensor:
        device, dtype = embeds.device, embeds.dtype
        noise = per_image_randn(seeds, shape)  # on CPU: the same latents on any device
        generators = seeded_generators(seeds)  # then the step noise, continuing each seed's stream
        for generator in generators:
            torch.randn(shape, generator=generator)
        scheduler = _PerImageNoise(self.make_scheduler(), generators)
        latents = sample_image_conditioned(
            self.unet, scheduler, embeds, negative, noise.to(device=device, dtype=dtype), steps, guidance_scale
        )
        return (self._movq_decode(latents).float() * 0.5 + 0.5).clamp(0.0, 1.0)

    def _movq_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → pixels in [-1, 1], at most ``vae_chunk_size`` latents per MoVQ call (every row is decoded on its
        own: no layer of the MoVQ mixes rows, so the chunks change the peak memory, not the images)."""
        latents = latents.to(self.movq.dtype)  # a force_upcast MoVQ under float16 (to_placement)
        size = self._vae_chunk_size or max(1, latents.shape[0])
        parts = [
            self.movq.decode(latents[i : i + size], force_not_quantize=True).sample
            for i in range(0, latents.shape[0], size)
        ]
        return torch.cat(parts) if len(parts) != 1 else parts[0]
