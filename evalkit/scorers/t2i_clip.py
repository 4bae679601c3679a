"""``t2i-clip``: T2I-CompBench's non-spatial CLIPScore (``CLIPScore_eval/CLIP_similarity.py``) on a local CLIP.

T2I-CompBench loads OpenAI CLIP ViT-B/32 (``clip.load("ViT-B/32")``) and scores an image by the plain cosine of
its L2-normalised image and text features — no ×100, no clipping (l. 71–80). This scorer runs the same network
from a local folder in the transformers ``CLIPModel`` layout of the public ``openai/clip-vit-base-patch32``
repository (``$EVALKIT_CLIP_VIT_B32_DIR`` or ``--scorer-path t2i-clip=DIR``), with OpenAI's preprocessing
(``clip.py`` ``_transform``): ``Resize(224, bicubic)`` of the PIL image, ``CenterCrop(224)``, ``ToTensor``,
``Normalize`` with CLIP's mean/std, on the 8-bit picture a saved PNG holds. Text: the CLIP BPE tokenizer,
77 tokens (``clip.tokenize`` refuses longer prompts; here they are truncated and the row says so).

Complex category (``--complex`` in T2I-CompBench, l. 61–64): the text is the prompt without the tokens spaCy
tags ``ADJ`` (:func:`evalkit.scorers.t2i_text.without_adjectives`); ``structure="auto"`` does that for items of
category ``complex``.

Built on :class:`~evalkit.scorers.clipscore.CLIPScoreScorer`: the transformers CLIP is wrapped as a CLIP with
``encode_image`` / ``encode_text`` (:class:`TransformersCLIP`), so each row has the same fields as
``clipscore``'s — ``cosine`` (T2I-CompBench's number), ``score`` (the cosine clipped to [0, 1], the scorer
contract; equal to the cosine for any real CLIP, whose cosines are positive) and ``clipscore_100``
(torchmetrics' ``max(100·cos, 0)``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from evalkit.contracts import Batch, PromptItem
from evalkit.scorers import t2i_text
from evalkit.scorers.clipscore import CLIPScoreScorer
from evalkit.scorers.hf_folder import check_model_folder, load_local_model, resolve_model_folder
from evalkit.serialization import quiet_transformers
from evalkit.text_encoders import save_clip_tokenizer, tiny_clip_tokenizer, tiny_clip_tower_configs

ENV_DIR = "EVALKIT_CLIP_VIT_B32_DIR"
REPO_ID = "openai/clip-vit-base-patch32"
MODEL_TYPES = ("clip",)
#: ``clip.py`` ``_transform``: Normalize
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: ``clip.tokenize`` context length
CONTEXT_LENGTH = 77


def _features(out) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose ``pooler_output`` is the projected feature; 4 a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class TransformersCLIP(nn.Module):
    """A transformers ``CLIPModel`` + tokenizer as a CLIP with ``encode_image`` / ``encode_text``.

    ``encode_image(images (N, 3, H, W) in [0, 1])``: 8-bit quantisation, then OpenAI's preprocessing at the
    model's input size; ``encode_text(prompts)``: one prompt at a time (no padding, so a feature depends on
    its prompt alone). Features are the projected ones, unnormalised, in float32.
    """

    def __init__(self, model, tokenizer, space: str = "openai-clip-vit-b-32") -> None:
        super().__init__()
        self.model = model
        self.tokenizer_ = tokenizer  # not "tokenizer": clipscore's processor would tokenize for encode_tokens
        self.embedding_space = space
        self.input_size = int(model.config.vision_config.image_size)
        self.max_length = min(CONTEXT_LENGTH, int(model.config.text_config.max_position_embeddings))
        self.supported_dtypes = ("float32", "bfloat16", "float16")
        self.truncated: set[str] = set()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """``clip.py`` ``_transform(n_px)`` on the 8-bit images (torchvision on PIL, as OpenAI's code)."""
        from PIL import Image
        from torchvision import transforms

        n_px = self.input_size
        transform = transforms.Compose(
            [
                transforms.Resize(n_px, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(n_px),
                lambda image: image.convert("RGB"),
                transforms.ToTensor(),
                transforms.Normalize(OPENAI_MEAN, OPENAI_STD),
            ]
        )
        pixels = (images.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        pil = [Image.fromarray(np.ascontiguousarray(p.permute(1, 2, 0).numpy())) for p in pixels]
        return torch.stack([transform(image) for image in pil]).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return torch.empty(0, self.model.config.projection_dim)
        return _features(self.model.get_image_features(pixel_values=self.pixel_values(images))).float()

    def token_ids(self, prompt: str) -> list[int]:
        ids = list(self.tokenizer_(prompt, truncation=False)["input_ids"])
        if len(ids) > self.max_length:
            self.truncated.add(prompt)
            ids = ids[: self.max_length - 1] + [ids[-1]]  # keep the end-of-text token, whose feature is pooled
        return ids

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            ids = torch.tensor([self.token_ids(prompt)], dtype=torch.long, device=self.device)
            rows.append(
                _features(self.model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))).float()
            )
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.projection_dim)


class T2IClipScorer(CLIPScoreScorer):
    """T2I-CompBench's CLIP similarity per image on a local CLIP ViT-B/32 folder (module docstring).

    ``structure``: ``"auto"`` (prompts of category ``complex`` lose their adjectives, as T2I-CompBench's
    ``--complex``), ``"simple"`` (the prompt as it is) or ``"complex"``; ``parser``: as
    :mod:`~evalkit.scorers.t2i_text` (used for the complex text only)."""

    name = "t2i-clip"
    version = "1"
    higher_is_better = True
    supported_dtypes = ("float32", "bfloat16", "float16")
    score_resolution = 0.01  # a cosine: real CLIPs' image-prompt cosines lie within ~0.15–0.40

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        structure: str = "auto",
        parser: str | None = None,
        device: str | None = None,
    ) -> None:
        if structure not in ("auto", *t2i_text.STRUCTURES):
            raise ValueError(f"unknown structure {structure!r}; expected auto, simple or complex")
        directory = resolve_model_folder(path, ENV_DIR, self.name, REPO_ID)
        use_safetensors = check_model_folder(
            directory,
            scorer=self.name,
            repo_id=REPO_ID,
            model_types=MODEL_TYPES,
            env_var=ENV_DIR,
            allow_pickle=allow_pickle,
        )
        super().__init__(clip=self._load(directory, use_safetensors), image_size=None)
        self.supported_dtypes = type(self).supported_dtypes
        self.path = str(directory)
        self.structure = structure
        self.parser = t2i_text.parser_name(parser) if structure != "simple" else ""  # "": never needed
        vision = self.clip.model.config.vision_config
        self.architecture = f"ViT patch {vision.patch_size}, width {vision.hidden_size}, {vision.image_size} px"
        if device is not None:
            self.to_placement(str(device))

    def _load(self, directory: Path, use_safetensors: bool) -> TransformersCLIP:
        from transformers import CLIPModel, CLIPTokenizer

        hint = f"Restore the folder (layout of {REPO_ID})."
        model, tokenizer = load_local_model(CLIPModel, CLIPTokenizer, directory, use_safetensors, self.name, hint)
        return TransformersCLIP(model, tokenizer)

    def structure_of(self, item: PromptItem) -> str:
        if self.structure != "auto":
            return self.structure
        return "complex" if item.category == "complex" else "simple"

    def text_of(self, item: PromptItem) -> str:
        """The text CLIP reads for ``item``: the prompt, or (complex) the prompt without adjectives."""
        if self.structure_of(item) == "complex":
            return t2i_text.without_adjectives(item.prompt, self.parser)
        return item.prompt

    def not_applicable(self, item: PromptItem) -> str | None:
        return None  # an open-vocabulary CLIP reads every prompt

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        texts = [self.text_of(item) for item in batch.items]
        cos = self.cosines(images, texts).tolist()
        scaled = self.torchmetrics_clipscore(images, texts).tolist()
        rows = []
        for item, text, c, s in zip(batch.items, texts, cos, scaled):
            row = {
                "score": min(max(c, 0.0), 1.0),
                "cosine": c,
                "clipscore_100": s,
                "clip": self.embedding_space,
                "text": text,
            }
            if text != item.prompt:
                row["parser"] = self.parser
            if text in self.clip.truncated:
                row["truncated_to_tokens"] = self.clip.max_length
            rows.append(row)
        return rows

    def fingerprint(self) -> str:
        from evalkit.scorers import noun_phrases
        from evalkit.scorers.hf_folder import scorer_fingerprint

        return scorer_fingerprint(self, {"clip": self.embedding_space}, sources=(t2i_text, noun_phrases))

    # ------------------------------------------------------------------ tiny

    @classmethod
    def write_tiny(cls, directory: str | os.PathLike, seed: int = 0) -> Path:
        """A tiny random-weight CLIP (32 px, 8-px patches, width 32) in the public repository's layout."""
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer = tiny_clip_tokenizer(CONTEXT_LENGTH)
        text, vision = tiny_clip_tower_configs(len(tokenizer), CONTEXT_LENGTH)
        with quiet_transformers():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
            model.save_pretrained(directory)
            CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
                directory
            )
            save_clip_tokenizer(tokenizer, directory)
        return directory

    @classmethod
    def tiny(cls, directory: str | os.PathLike | None = None, **kwargs) -> "T2IClipScorer":
        """A scorer on a tiny random CLIP written into ``directory`` (None: a temporary folder)."""
        if directory is not None:
            return cls(cls.write_tiny(directory), **kwargs)
        with tempfile.TemporaryDirectory(prefix="evalkit-clip-b32-") as tmp:
            return cls(cls.write_tiny(tmp), **kwargs)
