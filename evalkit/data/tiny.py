"""Tiny encoders and datasets in the public on-disk layouts, for tests and worked examples.

Everything is written with the libraries' own writers (``save_pretrained``, webdataset's ``TarWriter``,
pyarrow), so a loader that reads these folders reads the real ones: the tiny folders differ from
``kandinsky-2-2-prior`` or ``openai/clip-vit-large-patch14`` only in their sizes and random weights.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Sequence


def _tiny_vision_config(embedding_dim: int, image_size: int) -> dict:
    return dict(
        hidden_size=embedding_dim,
        intermediate_size=2 * embedding_dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=max(1, image_size // 4),
        projection_dim=embedding_dim,
    )


def _image_processor(image_size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def write_tiny_prior_pipeline(
    root: str | os.PathLike, embedding_dim: int = 16, image_size: int = 32, seed: int = 0
) -> Path:
    """A kandinsky-2-2-prior folder without the prior: ``image_encoder/`` (CLIPVisionModelWithProjection),
    ``image_processor/`` (CLIPImageProcessor), ``text_encoder/`` + ``tokenizer/`` (loadable with
    :meth:`evalkit.priors.real.HFTextEncoder.from_pretrained`). Returns ``root``."""
    import torch
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from evalkit.priors.real import TINY_MAX_LENGTH, _tiny_text_config
    from evalkit.text_encoders import TINY_VOCAB_MERGES, clip_tokenizer, save_clip_tokenizer

    root = Path(root)
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**_tiny_vision_config(embedding_dim, image_size))).save_pretrained(
        root / "image_encoder"
    )
    _image_processor(image_size).save_pretrained(root / "image_processor")
    tokenizer = clip_tokenizer(TINY_VOCAB_MERGES, model_max_length=TINY_MAX_LENGTH)
    CLIPTextModelWithProjection(CLIPTextConfig(**_tiny_text_config(len(tokenizer), embedding_dim))).save_pretrained(
        root / "text_encoder"
    )
    save_clip_tokenizer(tokenizer, root / "tokenizer")
    return root


def write_tiny_clip(root: str | os.PathLike, embedding_dim: int = 32, image_size: int = 32, seed: int = 0) -> Path:
    """An ``openai/clip-vit-large-patch14``-style single folder: a whole ``CLIPModel`` (config.json with
    text_config / vision_config, model.safetensors), ``preprocessor_config.json`` and the tokenizer files.

    Karlo's prior and decoder work in this model's space; its towers load separately from the one folder:
    ``CLIPVisionModelWithProjection`` for images (``evalkit embed --image-encoder ROOT``) and, for text,
    ``HFTextEncoder.from_pretrained(text_encoder_path=ROOT, tokenizer_path=ROOT)``. Returns ``root``.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    from evalkit.priors.real import TINY_MAX_LENGTH, _tiny_text_config
    from evalkit.text_encoders import TINY_VOCAB_MERGES, clip_tokenizer, save_clip_tokenizer

    root = Path(root)
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(TINY_VOCAB_MERGES, model_max_length=TINY_MAX_LENGTH)
    # projection_dim inside both tower configs too, as the public config.json has it: a tower loaded on its
    # own reads its own config, not the top-level one
    config = CLIPConfig(
        text_config=_tiny_text_config(len(tokenizer), embedding_dim),
        vision_config=_tiny_vision_config(embedding_dim, image_size),
        projection_dim=embedding_dim,
    )
    CLIPModel(config).save_pretrained(root)
    _image_processor(image_size).save_pretrained(root)
    save_clip_tokenizer(tokenizer, root)
    return root


def _jpeg(image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_world_dataset(
    root: str | os.PathLike,
    n: int = 24,
    shards: int = 3,
    image_px: int = 64,
    seed: int = 0,
    formats: Sequence[str] = ("wds", "csv"),
    corrupt_keys: Sequence[str] = (),
    empty_caption_keys: Sequence[str] = (),
) -> dict:
    """``n`` synthetic-world (caption, render) pairs as a real dataset: JPEGs of ``image_px`` pixels.

    ``"wds"``: webdataset tar shards ``root/shards/{00000..}.tar`` (``{key}.jpg``, ``{key}.txt``,
    ``{key}.json``), as img2dataset writes them; ``"csv"``: ``root/csv/images/{key}.jpg`` and
    ``root/csv/manifest.csv`` (columns key, image, caption). Keys are ``000000``, ``000001``, …;
    ``corrupt_keys`` get a truncated JPEG, ``empty_caption_keys`` an empty caption (in both formats).

    Returns ``{"root", "keys", "captions", "shards" (brace spec), "shard_files", "csv" (manifest path),
    "csv_dir"}`` (the keys for formats not written are absent).
    """
    from PIL import Image

    from evalkit.world import render
    from evalkit.world.dataset import sample_pairs

    root = Path(root)
    captions, scenes = sample_pairs("all", n, seed, split="train")
    keys = [f"{i:06d}" for i in range(n)]
    pixels = render(scenes)
    corrupt, empty = set(corrupt_keys), set(empty_caption_keys)
    images, texts = [], []
    for key, caption, array in zip(keys, captions, pixels):
        data = _jpeg(Image.fromarray(array).resize((image_px, image_px), Image.BICUBIC))
        images.append(data[: len(data) // 3] if key in corrupt else data)
        texts.append("" if key in empty else caption)
    out: dict = {"root": root, "keys": keys, "captions": texts}
    if "wds" in formats:
        out.update(_write_wds_shards(root / "shards", keys, images, texts, shards, image_px))
    if "csv" in formats:
        out.update(_write_csv_folder(root / "csv", keys, images, texts))
    return out


def _write_wds_shards(
    folder: Path, keys: list[str], images: list[bytes], texts: list[str], shards: int, image_px: int
) -> dict:
    """Webdataset tar shards ``folder/{00000..}.tar``; returns ``{"shard_files", "shards" (brace spec)}``."""
    import webdataset as wds

    n = len(keys)
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-n // shards)
    files = []
    for s in range(shards):
        path = folder / f"{s:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(s * per_shard, min((s + 1) * per_shard, n)):
                sink.write(
                    {
                        "__key__": keys[i],
                        "jpg": images[i],
                        "txt": texts[i],
                        "json": json.dumps(
                            {"key": keys[i], "caption": texts[i], "width": image_px, "height": image_px}
                        ).encode("utf-8"),
                    }
                )
        files.append(path)
    return {"shard_files": files, "shards": str(folder / ("{00000..%05d}.tar" % (shards - 1)))}


def _write_csv_folder(folder: Path, keys: list[str], images: list[bytes], texts: list[str]) -> dict:
    """``folder/images/{key}.jpg`` and ``folder/manifest.csv``; returns ``{"csv" (manifest path), "csv_dir"}``."""
    import pyarrow as pa
    import pyarrow.csv as pc

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for key, data in zip(keys, images):
        (folder / "images" / f"{key}.jpg").write_bytes(data)
    table = pa.table({"key": keys, "image": [f"images/{k}.jpg" for k in keys], "caption": texts})
    pc.write_csv(table, folder / "manifest.csv")
    return {"csv": folder / "manifest.csv", "csv_dir": folder}
