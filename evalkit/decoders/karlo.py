"""Karlo (Kakao Brain's unCLIP, ``kakaobrain/karlo-v1-alpha``) as a decoder fed by an external prior.

diffusers' ``UnCLIPPipeline`` is deprecated and always runs its own prior: it cannot start from image
embeddings. This module composes the public components itself, step for step as that pipeline does
after its prior:

1. the prompt goes through Karlo's CLIP text encoder (``text_encoder/``, ``tokenizer/``): the pooled,
   projected ``text_embeds``, the ``last_hidden_state`` and the tokenizer's attention mask;
2. ``text_proj`` (``UnCLIPTextProjModel``) mixes the image embedding into the time embedding
   (``class_labels`` of the decoder UNet) and into four extra context tokens put before the projected
   text hidden states; the UNet's attention mask gets ``True`` for those four tokens;
3. the decoder UNet (64×64 pixels, learned variance) samples with ``UnCLIPScheduler``;
4. the 64×64 image is clamped to [-1, 1], upsampled bicubically to 256×256 and concatenated to the
   noise of the super-resolution stage: ``super_res_first`` runs every step but the last, which
   ``super_res_last`` runs (7 steps by default, no guidance).

Classifier-free guidance (scale > 1) is unCLIP's: the unconditional branch is the empty prompt's
encoding together with ``text_proj``'s *learned* guidance embedding in place of the image embedding
(``learned_classifier_free_guidance_embeddings``). Only the noise half of the UNet output is guided;
the predicted variance is the conditional branch's.

Every image has its own ``torch.Generator`` (seeded from its seed, on the CPU): it draws the decoder's
initial noise, the decoder's per-step noise, the super-resolution initial noise and per-step noise,
in that order. Text encodings are padded to the tokenizer's fixed length. An image therefore depends
only on its embedding row, its prompt and its seed, never on its batch.

Embeddings: Karlo's prior outputs, and its image-variation pipeline feeds, CLIP ViT-L/14 image
embeddings as ``CLIPVisionModelWithProjection`` returns them (``image_embeds``, 768 dims, not
L2-normalised): ``normalisation = "raw"``.
"""

from __future__ import annotations

import functools

import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from evalkit.contracts import Batch, Decoder, Protocol, seeded_generators
from evalkit.errors import ConfigMismatchError, CorruptFileError, WeightsNotFoundError
from evalkit.serialization import atomic_write_json, weights_folder, weights_format
from evalkit.text_encoders import REAL_TEXT_ENCODER_CONFIG, TINY_VOCAB_MERGES, clip_tokenizer, tiny_clip_text_config

REPO_ID = "kakaobrain/karlo-v1-alpha"
ENV_DIR = "EVALKIT_KARLO_DIR"
EMBEDDING_SPACE = "clip-vit-l-14"

#: subfolders of the public layout this decoder reads (``prior/``, ``prior_scheduler/`` are ignored)
BASE_COMPONENTS = ("text_encoder", "tokenizer", "text_proj", "decoder", "decoder_scheduler")
SUPER_RES_COMPONENTS = ("super_res_first", "super_res_last", "super_res_scheduler")
#: how to get safetensors from a pickle-only component folder (part of the refusal)
PICKLE_HINT = "Convert the folder to safetensors (load it once with allow_pickle=True and call save_pretrained)."

# Real-size architecture of karlo-v1-alpha, as diffusers' conversion script builds it
# (huggingface/diffusers scripts/convert_kakao_brain_unclip_to_diffusers.py) and the Hub folder stores it.
REAL_DECODER_CONFIG: dict[str, Any] = dict(
    sample_size=64,
    layers_per_block=3,
    down_block_types=(
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    up_block_types=(
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    block_out_channels=(320, 640, 960, 1280),
    in_channels=3,
    out_channels=6,
    cross_attention_dim=1536,
    class_embed_type="identity",
    attention_head_dim=64,
    resnet_time_scale_shift="scale_shift",
)
REAL_SUPER_RES_CONFIG: dict[str, Any] = dict(
    sample_size=256,
    layers_per_block=3,
    down_block_types=("ResnetDownsampleBlock2D",) * 4,
    up_block_types=("ResnetUpsampleBlock2D",) * 4,
    block_out_channels=(320, 640, 960, 1280),
    in_channels=6,
    out_channels=3,
    add_attention=False,
)
# time_embed_dim = 4 × the decoder's first block width; cross_attention_dim = the decoder's
REAL_TEXT_PROJ_CONFIG: dict[str, Any] = dict(
    clip_extra_context_tokens=4, clip_embeddings_dim=768, time_embed_dim=1280, cross_attention_dim=1536
)
DECODER_SCHEDULER_CONFIG: dict[str, Any] = dict(
    variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000
)
SUPER_RES_SCHEDULER_CONFIG: dict[str, Any] = dict(
    variance_type="fixed_small_log", prediction_type="epsilon", num_train_timesteps=1000
)

# The tiny stack of tests and examples: 16×16 decoder, 32×32 super-resolution, 1,000-token vocabulary.
TINY_MAX_LENGTH = 16
TINY_WIDTH = 32
TINY_DECODER_CONFIG: dict[str, Any] = dict(
    sample_size=16,
    layers_per_block=1,
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    block_out_channels=(16, 32),
    in_channels=3,
    out_channels=6,
    cross_attention_dim=TINY_WIDTH,
    class_embed_type="identity",
    attention_head_dim=8,
    resnet_time_scale_shift="scale_shift",
    norm_num_groups=8,
)
TINY_SUPER_RES_CONFIG: dict[str, Any] = dict(
    sample_size=32,
    layers_per_block=1,
    down_block_types=("ResnetDownsampleBlock2D",) * 2,
    up_block_types=("ResnetUpsampleBlock2D",) * 2,
    block_out_channels=(16, 32),
    in_channels=6,
    out_channels=3,
    add_attention=False,
    norm_num_groups=8,
)
TINY_TEXT_PROJ_CONFIG: dict[str, Any] = dict(
    clip_extra_context_tokens=4, clip_embeddings_dim=TINY_WIDTH, time_embed_dim=4 * 16, cross_attention_dim=TINY_WIDTH
)
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = tiny_clip_text_config(
    512 + TINY_VOCAB_MERGES + 2, TINY_MAX_LENGTH, TINY_WIDTH, layers=2, projection_dim=TINY_WIDTH
)


def weights_hint(directory: str | os.PathLike | None = None) -> str:
    """How to get the weights (part of every missing-folder message)."""
    target = directory or "DIR"
    return (
        f"Download {REPO_ID} on a machine with network access (`huggingface-cli download {REPO_ID} "
        f"--local-dir {target}`), copy the folder here, then pass --decoder-path {target} "
        f"(or set {ENV_DIR}={target})."
    )


def install_diffusers_aliases() -> None:
    """Make diffusers 0.42 resolve the names a karlo-v1-alpha ``model_index.json`` uses.

    Only needed to open such a folder with diffusers' own ``DiffusionPipeline.from_pretrained``;
    :meth:`KarloDecoder.from_pretrained` loads the components one by one and does not need it.
    """
    import diffusers
    import diffusers.pipelines
    from diffusers.pipelines.deprecated import unclip
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    if not hasattr(diffusers.pipelines, "unclip"):
        diffusers.pipelines.unclip = unclip
    if not hasattr(diffusers, "UnCLIPTextProjModel"):
        setattr(diffusers, "UnCLIPTextProjModel", UnCLIPTextProjModel)


def _own_memory(module: nn.Module) -> None:
    """Copy tensors read from memory-mapped files into fresh (aligned) storage.

    Tensors mapped straight from a safetensors file can start at any byte offset; CPU kernels then take
    other vectorised paths and results differ in the last bits from the same weights held in ordinary
    memory. Copying makes a reloaded decoder reproduce the saved one exactly (and releases the file).
    """
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


def _sample_size(folder: Path) -> int | None:
    """``sample_size`` of a component folder's ``config.json`` (None when it has none)."""
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["sample_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _super_res_for(
    resolution: int | None, super_res: bool | None, base: int | None, upscaled: int | None, what: str
) -> bool:
    """Whether a stack renders ``resolution``: its decoder's side (no super-resolution) or the super-resolution
    side; a :class:`SettingError` for another side or one that contradicts ``super_res``."""
    from evalkit.errors import SettingError

    if resolution is None:
        return True if super_res is None else super_res
    sides = {base: False, upscaled: True}
    sides.pop(None, None)
    if resolution not in sides:
        with_sr = (
            f" or {upscaled}×{upscaled} (with super-resolution)" if upscaled else " only (no super-resolution found)"
        )
        raise SettingError(
            f"{what} renders {base}×{base} (its decoder alone, no super-resolution){with_sr}; "
            f"--resolution {resolution} is {'neither' if upscaled else 'not that'}"
        )
    if super_res is not None and super_res != sides[resolution]:
        raise SettingError(
            f"{what}: resolution={resolution} means super_res={sides[resolution]}, but super_res={super_res} was given"
        )
    return sides[resolution]


def resolve_directory(directory: str | os.PathLike | None) -> Path:
    """The Karlo folder: ``directory``, else ``$EVALKIT_KARLO_DIR``; raises unless it exists."""
    return weights_folder(directory, ENV_DIR, "karlo", REPO_ID, weights_hint)


class KarloDecoder(Decoder, nn.Module):
    """Karlo's decoder stack: text_proj → 64×64 decoder UNet → 64→256 super-resolution (two UNets)."""

    name = "karlo"
    embedding_space = EMBEDDING_SPACE
    normalisation = "raw"
    embedding_dim = 768
    resolution = 256
    default_num_inference_steps = 25
    default_guidance_scale = 7.5  # the ECLIPSE paper's protocol (diffusers' UnCLIPPipeline defaults to 8.0)
    default_super_res_num_inference_steps = 7
    #: what it computes in: its weights' dtype (as the public pipeline's ``torch_dtype``), cast by :meth:`to_placement`
    supported_dtypes = ("float32", "bfloat16", "float16")
    #: 64: the decoder UNet alone (no super-resolution components loaded); 256: with the 64 → 256 super-resolution
    supported_resolutions = (64, 256)
    #: model CPU offload order (diffusers' ``UnCLIPPipeline.model_cpu_offload_seq``)
    offload_sequence = ("text_encoder", "text_proj", "decoder", "super_res_first", "super_res_last")

    def __init__(
        self,
        text_encoder,
        tokenizer,
        text_proj,
        decoder,
        decoder_scheduler,
        super_res_first=None,
        super_res_last=None,
        super_res_scheduler=None,
        *,
        super_res_num_inference_steps: int | None = None,
        max_batch: int = 8,
        offload: bool = False,
        attention: str | None = None,
    ):
        """Wrap loaded components (see :meth:`from_pretrained`, :meth:`tiny`, :meth:`random_init`).

        Without ``super_res_first``/``super_res_last`` the decoder returns the 64×64 (tiny: 16×16) images.
        ``max_batch`` bounds the images per UNet call; results do not depend on it. ``offload``: model CPU offload
        once placed on a device (:meth:`to_placement`); ``attention``: ``"sdpa"`` | ``"eager"`` kernels in the
        UNets' and the text encoder's attention (None: as loaded, i.e. sdpa).
        """
        from evalkit.decoders import check_levers

        nn.Module.__init__(self)
        check_levers("karlo", offload=offload, attention=attention)
        super_res = [super_res_first, super_res_last, super_res_scheduler]
        if any(m is None for m in super_res) and not all(m is None for m in super_res):
            raise ValueError("karlo: give super_res_first, super_res_last and super_res_scheduler together, or none")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_proj = text_proj
        self.decoder = decoder
        self.decoder_scheduler = decoder_scheduler
        self.super_res_first = super_res_first
        self.super_res_last = super_res_last
        self.super_res_scheduler = super_res_scheduler
        self.super_res = super_res_first is not None
        self.super_res_num_inference_steps = int(
            super_res_num_inference_steps or self.default_super_res_num_inference_steps
        )
        self.max_batch = int(max_batch)
        self._check_components()
        self.embedding_dim = int(text_proj.config.clip_embeddings_dim)
        self.resolution = int(super_res_first.config.sample_size if self.super_res else decoder.config.sample_size)
        # levers (private: they choose how, not what, it computes, so they stay out of the fingerprint)
        self._offload, self._attention = offload, attention
        self._offload_hooks: list = []
        self._execution_device: torch.device | None = None
        if attention is not None:
            from evalkit.decoders import set_attention

            set_attention(
                "karlo",
                attention,
                [m for m in (decoder, super_res_first, super_res_last) if m is not None],
                [text_encoder],
            )
        self.eval()

    def _check_components(self) -> None:
        problems = []
        text, proj, unet = self.text_encoder.config, self.text_proj.config, self.decoder.config
        width = proj.clip_embeddings_dim
        if text.projection_dim != width or text.hidden_size != width:
            problems.append(
                f"text encoder width {text.hidden_size} / projection {text.projection_dim} vs "
                f"text_proj clip_embeddings_dim {width}"
            )
        if unet.cross_attention_dim != proj.cross_attention_dim:
            problems.append(
                f"decoder cross_attention_dim {unet.cross_attention_dim} vs text_proj {proj.cross_attention_dim}"
            )
        if unet.block_out_channels[0] * 4 != proj.time_embed_dim:
            problems.append(
                f"decoder time embedding {unet.block_out_channels[0] * 4} vs text_proj {proj.time_embed_dim}"
            )
        if unet.class_embed_type != "identity":
            problems.append(
                f"decoder class_embed_type {unet.class_embed_type!r} (Karlo adds the CLIP embedding: 'identity')"
            )
        if self.super_res:
            for part in (self.super_res_first, self.super_res_last):
                if part.config.in_channels != 2 * unet.in_channels:
                    problems.append(f"super-resolution in_channels {part.config.in_channels} vs 2 × {unet.in_channels}")
            if not self.super_res_first.config.sample_size:
                problems.append("super_res_first has no sample_size (the output resolution)")
        if problems:
            raise ConfigMismatchError("karlo components do not fit together: " + "; ".join(problems))

    # ------------------------------------------------------------------ construction

    @classmethod
    def tiny(
        cls, super_res: bool | None = None, seed: int = 0, resolution: int | None = None, **settings
    ) -> "KarloDecoder":
        """A tiny random stack (~0.63 M parameters, 16×16 → 32×32) for tests and examples; embedding dim 32.

        ``resolution`` 16 (no super-resolution) or 32; ``settings``: the constructor's (``max_batch``, levers).
        """
        from diffusers import UNet2DConditionModel, UNet2DModel
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
        from diffusers.schedulers import UnCLIPScheduler
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        super_res = _super_res_for(
            resolution,
            super_res,
            TINY_DECODER_CONFIG["sample_size"],
            TINY_SUPER_RES_CONFIG["sample_size"],
            "the tiny karlo stack",
        )
        with torch.random.fork_rng(devices=[]):  # seeded init; the global RNG is left as it was
            torch.manual_seed(seed)
            parts = dict(
                text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**TINY_TEXT_ENCODER_CONFIG)),
                tokenizer=clip_tokenizer(TINY_VOCAB_MERGES, TINY_MAX_LENGTH),
                text_proj=UnCLIPTextProjModel(**TINY_TEXT_PROJ_CONFIG),
                decoder=UNet2DConditionModel(**TINY_DECODER_CONFIG),
                decoder_scheduler=UnCLIPScheduler(**DECODER_SCHEDULER_CONFIG),
            )
            if super_res:
                parts.update(
                    super_res_first=UNet2DModel(**TINY_SUPER_RES_CONFIG),
                    super_res_last=UNet2DModel(**TINY_SUPER_RES_CONFIG),
                    super_res_scheduler=UnCLIPScheduler(**SUPER_RES_SCHEDULER_CONFIG),
                )
            with torch.no_grad():  # zero-initialised by diffusers: give the guidance embedding a value
                parts["text_proj"].learned_classifier_free_guidance_embeddings.normal_()
        return cls(**parts, **settings)

    @classmethod
    def random_init(
        cls,
        size: str = "real",
        super_res: bool | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        resolution: int | None = None,
        **settings,
    ) -> "KarloDecoder":
        """karlo-v1-alpha's architecture with random weights (speed and memory benchmarks).

        ``size="real"``: the public configs (decoder UNet, two super-resolution UNets, text_proj, CLIP
        ViT-L/14 text tower and its 49,408-token tokenizer); ``size="tiny"``: :meth:`tiny`.
        ``device="meta"`` builds without memory (parameter counts only). ``resolution``: 64 or 256 (tiny: 16 or
        32); ``settings``: the constructor's (``max_batch``, ``offload``, ``attention``).
        """
        if size == "tiny":
            model = cls.tiny(super_res=super_res, seed=seed, resolution=resolution, **settings)
            return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model
        if size != "real":
            raise ValueError(f"karlo: unknown size {size!r}; use 'real' or 'tiny'")
        super_res = _super_res_for(
            resolution, super_res, REAL_DECODER_CONFIG["sample_size"], REAL_SUPER_RES_CONFIG["sample_size"], "karlo"
        )
        from diffusers import UNet2DConditionModel, UNet2DModel
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
        from diffusers.schedulers import UnCLIPScheduler
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
            torch.manual_seed(seed)
            parts = dict(
                text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**REAL_TEXT_ENCODER_CONFIG)),
                text_proj=UnCLIPTextProjModel(**REAL_TEXT_PROJ_CONFIG),
                decoder=UNet2DConditionModel(**REAL_DECODER_CONFIG),
            )
            if super_res:
                last = {k: v for k, v in REAL_SUPER_RES_CONFIG.items() if k != "sample_size"}
                parts.update(super_res_first=UNet2DModel(**REAL_SUPER_RES_CONFIG), super_res_last=UNet2DModel(**last))
        parts.update(tokenizer=clip_tokenizer(None, 77), decoder_scheduler=UnCLIPScheduler(**DECODER_SCHEDULER_CONFIG))
        if super_res:
            parts["super_res_scheduler"] = UnCLIPScheduler(**SUPER_RES_SCHEDULER_CONFIG)
        model = cls(**parts, **settings)
        return model.to(dtype=dtype) if dtype is not None else model

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        super_res: bool | None = None,
        resolution: int | None = None,
        **settings,
    ) -> "KarloDecoder":
        """Load a folder in the public karlo-v1-alpha layout (default: ``$EVALKIT_KARLO_DIR``), on the CPU in float32.

        Reads text_encoder, tokenizer, text_proj, decoder, decoder_scheduler and, with ``super_res`` (default;
        ``resolution=256``), super_res_first, super_res_last, super_res_scheduler; ``resolution=64`` (or
        ``super_res=False``) loads the 64×64 decoder alone. Prior folders are ignored. Safetensors
        are preferred; a component stored only as pickle (``.bin``) loads only with ``allow_pickle``
        (then through ``torch.load(weights_only=True)``). Every component is read as float32 (fp16 files are
        widened exactly); :func:`evalkit.placement.place` casts to what it computes in. ``settings``:
        ``super_res_num_inference_steps``, ``max_batch``, ``offload``, ``attention``.
        """
        from diffusers import UNet2DConditionModel, UNet2DModel
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
        from diffusers.schedulers import UnCLIPScheduler
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        root = resolve_directory(directory)
        sizes = [_sample_size(root / name) for name in ("decoder", "super_res_first")] if resolution else [None, None]
        super_res = _super_res_for(resolution, super_res, *sizes, f"karlo at {root}")
        wanted = BASE_COMPONENTS + (SUPER_RES_COMPONENTS if super_res else ())
        missing = [name for name in wanted if not (root / name).is_dir()]
        if missing:
            raise WeightsNotFoundError(
                f"karlo: {root} is not a {REPO_ID} folder: missing {', '.join(f'{m}/' for m in missing)}"
                + (" (or load with super_res=False)" if set(missing) <= set(SUPER_RES_COMPONENTS) else "")
                + f". {weights_hint(root)}"
            )
        install_diffusers_aliases()
        load = functools.partial(_load_component, root)
        weights = functools.partial(_load_weights, root, allow_pickle)

        def scheduler(name: str):
            return load(name, lambda folder, **_: UnCLIPScheduler.from_config(UnCLIPScheduler.load_config(folder)))

        parts = dict(
            text_encoder=weights("text_encoder", CLIPTextModelWithProjection, "transformers"),
            tokenizer=load("tokenizer", CLIPTokenizer.from_pretrained),
            text_proj=weights("text_proj", UnCLIPTextProjModel, "diffusers"),
            decoder=weights("decoder", UNet2DConditionModel, "diffusers"),
            decoder_scheduler=scheduler("decoder_scheduler"),
        )
        if super_res:
            parts.update(
                super_res_first=weights("super_res_first", UNet2DModel, "diffusers"),
                super_res_last=weights("super_res_last", UNet2DModel, "diffusers"),
                super_res_scheduler=scheduler("super_res_scheduler"),
            )
        for part in parts.values():
            if isinstance(part, nn.Module):
                _own_memory(part)
        return cls(**parts, **settings)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the public layout (safetensors weights, configs, tokenizer, schedulers, model_index.json)."""
        import diffusers

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.text_encoder.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        index: dict[str, Any] = {
            "_class_name": "UnCLIPPipeline",
            "_diffusers_version": diffusers.__version__,
            "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "text_proj": ["unclip", "UnCLIPTextProjModel"],
            "decoder": ["diffusers", "UNet2DConditionModel"],
            "decoder_scheduler": ["diffusers", "UnCLIPScheduler"],
        }
        modules = [("text_proj", self.text_proj), ("decoder", self.decoder)]
        schedulers = [("decoder_scheduler", self.decoder_scheduler)]
        if self.super_res:
            modules += [("super_res_first", self.super_res_first), ("super_res_last", self.super_res_last)]
            schedulers.append(("super_res_scheduler", self.super_res_scheduler))
            index.update(
                super_res_first=["diffusers", "UNet2DModel"],
                super_res_last=["diffusers", "UNet2DModel"],
                super_res_scheduler=["diffusers", "UnCLIPScheduler"],
            )
        for name, module in modules:
            module.save_pretrained(directory / name, safe_serialization=True)
        for name, sched in schedulers:
            sched.save_pretrained(directory / name)
        atomic_write_json(directory / "model_index.json", index)
        return directory

    # ------------------------------------------------------------------ decoding

    @property
    def device(self) -> torch.device:
        """Where it computes: the execution device under offload (the weights wait on the CPU), else its weights'."""
        return self._execution_device or next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def _offloaded_models(self) -> list[nn.Module]:
        return [m for m in (getattr(self, name) for name in self.offload_sequence) if m is not None]

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """Cast every weight to ``dtype`` (None: keep) and put the stack on ``device``; with ``offload`` the
        weights stay on the CPU and each component moves to ``device`` only while it runs (the chain of
        diffusers' ``enable_model_cpu_offload``). On ``meta`` offload does not apply (nothing computes there)."""
        from evalkit.decoders import install_offload, remove_offload
        from evalkit.placement import torch_dtype

        cast = torch_dtype(dtype) if dtype is not None else None
        models = self._offloaded_models()
        remove_offload(models)
        self._offload_hooks, self._execution_device = [], None
        if self._offload and torch.device(device).type != "meta":
            self.to(device="cpu", dtype=cast) if cast is not None else self.to(device="cpu")
            self._offload_hooks = install_offload(models, device)
            self._execution_device = torch.device(device)
        else:
            self.to(device=device, dtype=cast) if cast is not None else self.to(device=device)

    def _offload_all(self) -> None:
        """Send every offloaded component back to the CPU (diffusers' ``maybe_free_model_hooks``)."""
        for hook in self._offload_hooks:
            hook.offload()

    @property
    def compute_dtype(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def config(self) -> dict:
        """Settings and component configs (part of the decoder's fingerprint)."""

        def public(config) -> dict:  # drop bookkeeping keys such as _use_default_values, _diffusers_version
            return {k: v for k, v in dict(config).items() if not k.startswith("_")}

        names = ["text_proj", "decoder", "decoder_scheduler"]
        names += ["super_res_first", "super_res_last", "super_res_scheduler"] if self.super_res else []
        out: dict[str, Any] = {name: public(getattr(self, name).config) for name in names}
        out.update(
            super_res=self.super_res,
            super_res_num_inference_steps=self.super_res_num_inference_steps,
            text_encoder=public(self.text_encoder.config.to_dict()),
            tokenizer={
                "model_max_length": self.tokenizer.model_max_length,
                "vocab_size": len(self.tokenizer),
                "pad_token_id": self.tokenizer.pad_token_id,
            },
        )
        return json.loads(json.dumps(out, default=str))

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(text_embeds (N, D), last_hidden_state (N, L, W), attention_mask (N, L) bool)``, padded to
        L = max length."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        out = self.text_encoder(tokens.input_ids.to(self.device))
        return out.text_embeds, out.last_hidden_state, tokens.attention_mask.bool().to(self.device)

    def _sample_decoder(
        self,
        image_embeds: torch.Tensor,
        prompts: Sequence[str],
        generators: list[torch.Generator],
        steps: int,
        guidance_scale: float,
    ) -> torch.Tensor:
        """The 64×64 stage: x in [-1, 1], ``(n, 3, s, s)``."""
        from diffusers.schedulers import UnCLIPScheduler

        n = image_embeds.shape[0]
        guided = guidance_scale > 1.0
        prompt_embeds, hidden, mask = self.encode_prompts(prompts)
        if guided:
            neg_embeds, neg_hidden, neg_mask = self.encode_prompts([""])
            prompt_embeds = torch.cat([neg_embeds.expand(n, -1), prompt_embeds])
            hidden = torch.cat([neg_hidden.expand(n, -1, -1), hidden])
            mask = torch.cat([neg_mask.expand(n, -1), mask])
        hidden, time_embeds = self.text_proj(
            image_embeddings=image_embeds,
            prompt_embeds=prompt_embeds,
            text_encoder_hidden_states=hidden,
            do_classifier_free_guidance=guided,
        )
        mask = F.pad(mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)

        scheduler = UnCLIPScheduler.from_config(self.decoder_scheduler.config)  # stateful: one per call
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps
        channels, size = self.decoder.config.in_channels, self.decoder.config.sample_size
        sample = self._noise(generators, (channels, size, size)) * scheduler.init_noise_sigma
        for i, t in enumerate(timesteps):
            model_input = torch.cat([sample, sample]) if guided else sample
            out = self.decoder(
                sample=model_input,
                timestep=t,
                encoder_hidden_states=hidden,
                class_labels=time_embeds,
                attention_mask=mask,
            ).sample
            if guided:
                uncond, cond = out.chunk(2)
                eps_uncond = uncond[:, :channels]
                eps_cond, variance = cond[:, :channels], cond[:, channels:]
                out = torch.cat([eps_uncond + guidance_scale * (eps_cond - eps_uncond), variance], dim=1)
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            sample = scheduler.step(out, t, sample, prev_timestep=prev, generator=generators).prev_sample
        return sample.clamp(-1.0, 1.0)

    def _super_resolve(self, image_small: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """64 → 256: super_res_first for all steps but the last, super_res_last for the last; no guidance."""
        from diffusers.schedulers import UnCLIPScheduler

        scheduler = UnCLIPScheduler.from_config(self.super_res_scheduler.config)
        scheduler.set_timesteps(self.super_res_num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps
        channels = self.super_res_first.config.in_channels // 2
        size = self.super_res_first.config.sample_size
        sample = self._noise(generators, (channels, size, size)) * scheduler.init_noise_sigma
        antialias = {"antialias": True} if "antialias" in inspect.signature(F.interpolate).parameters else {}
        # in float32: the CPU has no half-precision antialiased bicubic kernel (float32 inputs are unchanged)
        upscaled = F.interpolate(
            image_small.float(), size=[size, size], mode="bicubic", align_corners=False, **antialias
        ).to(image_small.dtype)
        for i, t in enumerate(timesteps):
            unet = self.super_res_last if i == len(timesteps) - 1 else self.super_res_first
            out = unet(sample=torch.cat([sample, upscaled], dim=1), timestep=t).sample
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
            sample = scheduler.step(out, t, sample, prev_timestep=prev, generator=generators).prev_sample
        return sample

    def _noise(self, generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        """One row per generator, drawn on the CPU (the same images on any device)."""
        rows = [torch.randn(shape, generator=g) for g in generators]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def decode(self, image_embeds: torch.Tensor, batch: Batch, protocol: Protocol) -> torch.Tensor:
        """Images ``(N, 3, R, R)`` in [0, 1] from raw CLIP ViT-L/14 image embeddings ``(N, 768)``."""
        if image_embeds.ndim != 2 or image_embeds.shape[1] != self.embedding_dim:
            raise ValueError(
                f"karlo decoder expects raw CLIP ViT-L/14 image embeddings of shape (N, {self.embedding_dim}), "
                f"got {tuple(image_embeds.shape)}"
            )
        n = image_embeds.shape[0]
        if n != len(batch):
            raise ValueError(f"{n} embeddings for a batch of {len(batch)} images")
        if protocol.resolution and protocol.resolution != self.resolution:
            raise ValueError(
                f"karlo decoder renders {self.resolution}×{self.resolution}; the protocol asks for "
                f"{protocol.resolution} (load it with resolution={protocol.resolution} for that size)"
            )
        steps = protocol.num_inference_steps or self.default_num_inference_steps
        for label, value in (("decoder", steps), ("super-resolution", self.super_res_num_inference_steps)):
            if value < 2 and (label == "decoder" or self.super_res):
                raise ValueError(
                    f"karlo: the {label} stage needs at least 2 inference steps (UnCLIPScheduler), got {value}"
                )
        generators = seeded_generators(batch.seeds)  # one per image, on the CPU
        prompts = batch.prompts
        was_training = self.training
        self.eval()
        chunks = []
        try:
            for start in range(0, n, self.max_batch):
                stop = min(n, start + self.max_batch)
                embeds = image_embeds[start:stop].to(device=self.device, dtype=self.dtype)
                gens = generators[start:stop]
                x = self._sample_decoder(embeds, prompts[start:stop], gens, steps, float(protocol.guidance_scale))
                if self.super_res:
                    x = self._super_resolve(x, gens)
                chunks.append((x.float() * 0.5 + 0.5).clamp(0.0, 1.0))
                self._offload_all()  # the text encoder starts the next chunk: nothing else stays on the device
        finally:
            self._offload_all()
            self.train(was_training)
        if not chunks:
            return torch.empty((0, 3, self.resolution, self.resolution), device=image_embeds.device)
        return torch.cat(chunks).to(image_embeds.device)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """All weights of the stack: text encoder, text_proj, decoder UNet and super-resolution UNets."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _load_component(root: Path, name: str, loader, **kwargs):
    """``loader(root/name)``, a damaged folder reported as such (naming it and how to restore it)."""
    folder = root / name
    try:
        return loader(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        if isinstance(error, WeightsNotFoundError):
            raise
        raise CorruptFileError(
            f"karlo: could not load {folder} ({type(error).__name__}: {error}); "
            f"restore that folder from a fresh copy of {REPO_ID}"
        ) from error


def _load_weights(root: Path, allow_pickle: bool, name: str, loader, library: str):
    """A model component in float32, through the one weights policy (safetensors, pickle only if allowed)."""
    extra = weights_format(root / name, allow_pickle, "karlo", hint=PICKLE_HINT, missing=weights_hint(root))
    use_safetensors = extra.pop("use_safetensors")
    # float32 for all: diffusers reads into float32 by default, transformers (v5) in the file's dtype
    if library == "transformers":
        extra.update(weights_only=True, dtype=torch.float32)
    else:
        extra["torch_dtype"] = torch.float32
    return _load_component(root, name, loader.from_pretrained, use_safetensors=use_safetensors, **extra)
