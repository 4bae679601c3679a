"""The synthetic world's CLIP: an open_clip model built from a custom JSON config.

``open_clip.create_model_and_transforms(MODEL_NAME, pretrained=None)`` builds the architecture
from ``model_configs/<MODEL_NAME>.json``; :class:`WorldCLIP` wraps it with the compact tokenizer
and exposes what priors and decoders need:

- ``encode_text(prompts)`` → :class:`~evalkit.contracts.TextEncoding` with the pooled, projected
  text embedding, the per-token hidden states (after the final LayerNorm) and the attention mask;
- ``encode_image(images)`` → the raw (unnormalised) image embedding, which is what decoders consume.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from pathlib import Path

import torch
from torch import nn

from evalkit.contracts import TextEncoder, TextEncoding
from evalkit.world.models.tokenizer import CompactTokenizer
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.paths import WORLD_WEIGHTS
from evalkit.serialization import CONFIG_NAME, check_config_values, load_config, load_pretrained, save_pretrained

MODEL_NAME = "evalkit-world-clip"
EMBEDDING_SPACE = "synth-clip"
CONFIG_DIR = Path(__file__).parent / "model_configs"
SHIPPED_DIR = WORLD_WEIGHTS / "clip"
TRAIN_HINT = "Train it with `evalkit train-world clip` (or restore the shipped weights from git)."
TINY_VISION = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16, "timm_model_name": None}
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


@functools.lru_cache(maxsize=None)
def register_open_clip_config() -> None:
    import open_clip

    from evalkit.world.models.convnet import register

    register()  # the image tower is a timm model of ours
    open_clip.add_model_config(CONFIG_DIR)


def base_model_config() -> dict:
    return json.loads((CONFIG_DIR / f"{MODEL_NAME}.json").read_text())


def world_words() -> list[str]:
    """Every word a caption of the world can hold (the tokenizer's closed vocabulary)."""
    from evalkit.world.attributes import FAMILIES, RELATIONS, relation_text

    words = {"a", "an", "and"}
    for values in FAMILIES.values():
        words.update(values)
    for relation in RELATIONS:
        words.update(relation_text(relation).split())
    return sorted(words)


def build_open_clip(model_cfg: dict):
    """The open_clip model for ``model_cfg`` (random weights), via open_clip's own factory."""
    import open_clip

    register_open_clip_config()
    # open_clip warns that no pretrained weights were loaded: expected here (ours load right after)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    # on the meta device (a config checked before anything real is allocated) open_clip must not move it to the CPU
    device = "meta" if torch.empty(0).device.type == "meta" else "cpu"
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            MODEL_NAME, pretrained=None, device=device, **_overrides(model_cfg)
        )
    finally:
        logger.setLevel(level)
    return model


def _overrides(model_cfg: dict) -> dict:
    base = base_model_config()
    if model_cfg == base:
        return {}
    # open_clip merges keyword overrides into the named config
    kwargs: dict = {}
    if model_cfg.get("embed_dim") != base.get("embed_dim"):
        kwargs["embed_dim"] = model_cfg["embed_dim"]
    for tower in ("vision_cfg", "text_cfg"):
        if model_cfg.get(tower) != base.get(tower):
            kwargs[tower] = model_cfg[tower]
    return kwargs


class WorldCLIP(nn.Module, TextEncoder):
    """The world's CLIP: image and text towers (open_clip) over the compact tokenizer; the text encoder of the
    ``evalkit-world-clip`` space."""

    embedding_space = EMBEDDING_SPACE
    #: placed by the run like a plugin (:func:`evalkit.placement.place`): every tower computes in these
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, model_cfg: dict | None = None, bpe_ids: list[int] | None = None):
        super().__init__()
        model_cfg = copy.deepcopy(model_cfg or base_model_config())
        context_length = model_cfg["text_cfg"]["context_length"]
        self.tokenizer = (
            CompactTokenizer(bpe_ids, context_length)
            if bpe_ids is not None
            else CompactTokenizer.from_words(world_words(), context_length)
        )
        model_cfg["text_cfg"]["vocab_size"] = self.tokenizer.vocab_size
        self.model_cfg = model_cfg
        self.model = build_open_clip(model_cfg)
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def text_width(self) -> int:
        return int(self.model_cfg["text_cfg"]["width"])

    @property
    def context_length(self) -> int:
        return int(self.model_cfg["text_cfg"]["context_length"])

    def num_text_parameters(self) -> int:
        """Parameters of the text tower (everything but ``visual``): what a prior's text encoder costs."""
        return sum(p.numel() for name, p in self.model.named_parameters() if not name.startswith("visual."))

    @classmethod
    def tiny(cls, embed_dim: int = 16) -> "WorldCLIP":
        cfg = base_model_config()
        cfg["embed_dim"] = embed_dim
        cfg["vision_cfg"] = {**cfg["vision_cfg"], **TINY_VISION}
        cfg["text_cfg"].update(width=32, layers=1, heads=2)
        return cls(cfg)

    # ------------------------------------------------------------------ encoders

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Raw image embeddings ``(N, D)`` of images ``(N, 3, H, W)`` in [0, 1], on the weights' device and in
        their precision (normalised in float32 first)."""
        mean = self.image_mean
        x = (images.to(mean.device).float() - mean.float()) / self.image_std.float()
        return self.model.encode_image(x.to(mean.dtype))

    def encode_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEncoding:
        """The encoding of token ids, on the weights' device; embeddings and hidden states in float32."""
        m = self.model
        device = self.image_mean.device
        ids, mask = ids.to(device), mask.to(device)
        x = m.token_embedding(ids) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        hidden = m.ln_final(x)
        pooled = hidden[torch.arange(ids.shape[0]), ids.argmax(dim=-1)]
        embeds = (
            pooled @ m.text_projection if not isinstance(m.text_projection, nn.Linear) else m.text_projection(pooled)
        )
        return TextEncoding(EMBEDDING_SPACE, embeds.float(), hidden.float(), mask)

    def encode_text(self, prompts: list[str]) -> TextEncoding:
        ids, mask = self.tokenizer(list(prompts))  # on the CPU: encode_tokens moves them to the weights
        return self.encode_tokens(ids, mask)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` outside the world's vocabulary (encoded as ``unk``; the run reports them)."""
        return self.tokenizer.unknown_words(prompt)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    # ------------------------------------------------------------------ weights

    def config_dict(self) -> dict:
        return {
            "_class_name": type(self).__name__,
            "model_name": MODEL_NAME,
            "model_cfg": self.model_cfg,
            "bpe_ids": self.tokenizer.bpe_ids,
            "image_mean": IMAGE_MEAN,
            "image_std": IMAGE_STD,
        }

    def save_pretrained(self, directory, metadata: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        """``config.json`` + ``model.safetensors``; ``dtype=torch.float16`` halves the shipped file."""
        return save_pretrained(directory, self.config_dict(), self.state_dict(), metadata, dtype)

    @classmethod
    def from_pretrained(cls, directory=None, allow_pickle: bool = False) -> "WorldCLIP":
        directory = Path(directory or SHIPPED_DIR)
        if not (directory / "config.json").is_file():
            raise WeightsNotFoundError(f"the synthetic world's CLIP: no weights at {directory}. {TRAIN_HINT}")
        config = load_config(directory)
        where = str(directory / CONFIG_NAME)
        raw = {key: config.get(key) for key in ("model_cfg", "bpe_ids")}
        check_config_values(raw, {"model_cfg": dict, "bpe_ids": list[int]}, where)
        if not all(isinstance(raw["model_cfg"].get(tower), dict) for tower in ("text_cfg", "vision_cfg")):
            raise ConfigMismatchError(
                f"{where}: model_cfg must hold text_cfg and vision_cfg objects (open_clip's layout)"
            )
        # built on the meta device and checked against the file's tensor shapes before the real build
        return load_pretrained(
            directory, lambda r: cls(r["model_cfg"], r["bpe_ids"]), raw, "the world CLIP", allow_pickle=allow_pickle
        )


@functools.lru_cache(maxsize=2)
def load_world_clip(directory: str | None = None) -> WorldCLIP:
    """The shipped (or given) CLIP, loaded once per process."""
    model = WorldCLIP.from_pretrained(directory)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
