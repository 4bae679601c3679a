"""CLIPScore: image–prompt cosine in a CLIP space, the plain metric and torchmetrics' scaled one.

Each row reports

- ``cosine``: the cosine between the image embedding and the prompt's text embedding (unclipped);
- ``score``: that cosine clipped to [0, 1] (the scorer contract). T2I-CompBench's non-spatial CLIP
  metric reports the plain cosine, so ``score`` equals it whenever the cosine is non-negative;
- ``clipscore_100``: ``max(100 · cos, 0)`` as computed by
  :func:`torchmetrics.functional.multimodal.clip_score` on the same image and prompt.

torchmetrics accepts any CLIP through a callable returning ``(model, processor)``, where the model
has ``get_image_features`` / ``get_text_features`` and the processor turns images and strings into
their inputs. :class:`TorchmetricsCLIPAdapter` and :class:`CLIPProcessorAdapter` provide exactly that
for a CLIP with ``encode_image`` / ``encode_text`` (no transformers model is involved). The default
CLIP is the synthetic world's (``synth-clip``); images of another size are resized to its input size.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.contracts import Batch, Scorer


def text_embeds(encoded: Any) -> torch.Tensor:
    """The ``(N, D)`` pooled text embeddings of an ``encode_text`` result (a TextEncoding or a tensor)."""
    return getattr(encoded, "text_embeds", encoded)


def clip_image_size(clip: Any) -> int | None:
    """The square input size of ``clip``'s image tower when it declares one (WorldCLIP: 32), else None."""
    cfg = getattr(clip, "model_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("vision_cfg", {}).get("image_size"), int):
        return int(cfg["vision_cfg"]["image_size"])
    size = getattr(clip, "image_size", None)
    return int(size) if isinstance(size, int) else None


def clip_device(clip: Any) -> torch.device:
    for tensor in (*clip.parameters(), *clip.buffers()) if isinstance(clip, nn.Module) else ():
        return tensor.device
    return torch.device("cpu")


def prepare_images(images: torch.Tensor, image_size: int | None, device: torch.device | None = None) -> torch.Tensor:
    """Check ``(N, 3, H, W)`` images in [0, 1]; resize to ``image_size`` (antialiased bilinear) when set."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"expected images of shape (N, 3, H, W), got {shape}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    if device is not None:
        x = x.to(device)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size) and len(x):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)


class TorchmetricsCLIPAdapter(nn.Module):
    """A CLIP with ``encode_image``/``encode_text`` seen as the model torchmetrics' CLIPScore calls.

    ``get_image_features(pixel_values)`` and ``get_text_features(input_ids, attention_mask)`` return
    plain ``(N, D)`` tensors. ``config`` has no ``text_config``, so torchmetrics' 77-token truncation
    check (meant for transformers CLIPs) does not apply. When the CLIP has a ``tokenizer`` and
    ``encode_tokens`` (WorldCLIP) the processor tokenizes and this model encodes the tokens; otherwise
    the processor passes pre-encoded text embeddings as float ``input_ids``, returned as they are.
    """

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip
        self.config = SimpleNamespace(model_type="evalkit-clip-adapter")

    def get_image_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.clip.encode_image(pixel_values).float()  # features in float32 whatever the CLIP computes in

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        if input_ids.is_floating_point():
            return input_ids
        return text_embeds(self.clip.encode_tokens(input_ids, attention_mask))


class CLIPProcessorAdapter:
    """The processor half of the torchmetrics pair: images → ``pixel_values``, strings → token ids."""

    def __init__(self, clip: Any, image_size: int | None) -> None:
        self.clip = clip
        self.image_size = image_size
        self.tokenizes = callable(getattr(clip, "tokenizer", None)) and hasattr(clip, "encode_tokens")

    def __call__(
        self,
        text: Sequence[str] | None = None,
        images: Sequence[torch.Tensor] | None = None,
        return_tensors: str = "pt",
        padding: bool = True,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        if images is not None:
            return {"pixel_values": prepare_images(torch.stack(list(images)), self.image_size)}
        if text is None:
            raise ValueError("the processor needs text or images")
        prompts = [text] if isinstance(text, str) else list(text)
        if self.tokenizes:
            ids, mask = self.clip.tokenizer(prompts)
            return {"input_ids": ids, "attention_mask": mask}
        with torch.no_grad():
            embeds = text_embeds(self.clip.encode_text(prompts)).float().cpu()
        return {"input_ids": embeds, "attention_mask": torch.ones(len(prompts), 1, dtype=torch.long)}


class CLIPScoreScorer(Scorer):
    """Per image: plain cosine (``score`` clipped to [0, 1], ``cosine`` raw) and torchmetrics' ``clipscore_100``.

    ``clip``: any object with ``encode_image(images (N, 3, H, W) in [0, 1]) -> (N, D)`` and
    ``encode_text(prompts) -> (N, D)`` (or a TextEncoding); default: the shipped world CLIP.
    """

    name = "clipscore"
    version = "1"
    higher_is_better = True
    #: what the default CLIP (the world's) computes in; an instance takes its own CLIP's declaration
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, clip: Any | None = None, image_size: int | None = None) -> None:
        super().__init__()
        if clip is None:
            from evalkit.world.models.clip import load_world_clip

            clip = load_world_clip()
        if not (callable(getattr(clip, "encode_image", None)) and callable(getattr(clip, "encode_text", None))):
            raise TypeError(
                f"CLIPScoreScorer needs a CLIP with encode_image and encode_text, got {type(clip).__name__}"
            )
        self.clip = clip
        # the CLIP's own declaration (the world CLIP: all three); one that declares nothing: float32 only
        self.supported_dtypes = tuple(getattr(clip, "supported_dtypes", ("float32",)))
        self.embedding_space = str(getattr(clip, "embedding_space", type(clip).__name__))
        self.image_size = image_size if image_size is not None else clip_image_size(clip)
        self._adapter = TorchmetricsCLIPAdapter(clip)
        self._processor = CLIPProcessorAdapter(clip, self.image_size)

    @classmethod
    def tiny(cls) -> "CLIPScoreScorer":
        """A scorer on a small random-weight world CLIP (seeded, global RNG untouched)."""
        from evalkit.world.models.clip import WorldCLIP

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            clip = WorldCLIP.tiny(embed_dim=16).eval()
        return cls(clip)

    def _torchmetrics_pair(self) -> tuple[TorchmetricsCLIPAdapter, CLIPProcessorAdapter]:
        return self._adapter, self._processor

    def cosines(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``(N,)`` cosine between each image's embedding and its prompt's text embedding."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        x = prepare_images(images, self.image_size, clip_device(self.clip))
        with torch.no_grad():
            img = self.clip.encode_image(x).float()
            txt = text_embeds(self.clip.encode_text(list(prompts))).float().to(img.device)
        return F.cosine_similarity(img, txt, dim=-1).cpu()

    def torchmetrics_clipscore(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``(N,)`` torchmetrics ``clip_score`` per image–prompt pair: ``max(100 · cos, 0)``."""
        from torchmetrics.functional.multimodal import clip_score

        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        x = prepare_images(images, self.image_size, clip_device(self.clip))
        with torch.no_grad():
            values = [clip_score(x[i], prompts[i], model_name_or_path=self._torchmetrics_pair) for i in range(len(x))]
        return torch.stack([v.detach().float().cpu().reshape(()) for v in values]) if values else torch.empty(0)

    def not_applicable(self, item) -> str | None:
        """A CLIP with a closed vocabulary (the world's) cannot read a prompt with words outside it."""
        finder = getattr(self.clip, "unknown_words", None)
        words = sorted({w.lower() for w in finder(item.prompt)}) if callable(finder) else []
        return (
            f"words outside the {self.embedding_space} text encoder's vocabulary ({', '.join(words)})"
            if words
            else None
        )

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        prompts = batch.prompts
        cos = self.cosines(images, prompts).tolist()
        scaled = self.torchmetrics_clipscore(images, prompts).tolist()
        return [
            {"score": min(max(c, 0.0), 1.0), "cosine": c, "clipscore_100": s, "clip": self.embedding_space}
            for c, s in zip(cos, scaled)
        ]
