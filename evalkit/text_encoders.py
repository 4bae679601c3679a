"""Text encoders per embedding space: what a prior that declares ``text_encoders = (space,)`` reads.

A run text-encodes every prompt once per space and hands the encodings to every prior in ``batch.text``
(:class:`evalkit.harness.runner.TextCache`). The encoder of a space comes from, in order: the decoder (its ``clip``),
a prior of the run that holds one (``clip`` / ``text_encoder()``), else the space's own loader below — so a
prior of your own needs to declare only the space it reads (docs/add-a-prior.md).

It also holds what the CLIP text encoders of the public checkpoints are built from, for every plugin that
builds one (the Karlo decoder, the real priors, tiny test models, the scorers' tiny folders): their
architectures (:data:`REAL_TEXT_ENCODER_CONFIG`, :data:`BIGG_TEXT_ENCODER_CONFIG`) and the offline CLIP
tokenizer (:func:`clip_tokenizer`, :func:`save_clip_tokenizer`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError, WeightsNotFoundError

#: openai/clip-vit-large-patch14's text tower with its projection (karlo-v1-alpha's text_encoder/)
REAL_TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
#: kandinsky-2-2-prior text_encoder/: OpenCLIP ViT-bigG/14's text tower with its 1280-d projection
#: (token ids as the offline CLIP tokenizer numbers them, as in :data:`REAL_TEXT_ENCODER_CONFIG`)
BIGG_TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    projection_dim=1280,
    hidden_act="gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
#: the merges of the tiny tokenizer of tests: 512 byte tokens + 486 merges + 2 specials = 1,000 tokens
TINY_VOCAB_MERGES = 486


def clip_tokenizer(num_merges: int | None = None, model_max_length: int = 77):
    """A ``CLIPTokenizer`` built offline from the BPE vocabulary open_clip ships.

    All 48,894 merges give OpenAI CLIP's 49,408-token vocabulary (ids equal on real tokens); fewer
    merges give a small vocabulary for tiny test encoders. Pads with ``<|endoftext|>``.
    """
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise WeightsNotFoundError(f"the CLIP BPE vocabulary is missing at {path}; reinstall open_clip_torch")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    available = 49152 - 256 - 2
    count = available if num_merges is None else min(int(num_merges), available)
    merges = [tuple(line.split()) for line in lines[1 : 1 + count]]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=model_max_length)


def tiny_clip_tokenizer(model_max_length: int):
    """A small offline CLIP BPE tokenizer (1,000 tokens; open_clip's vocabulary, first merges) for tiny models."""
    return clip_tokenizer(TINY_VOCAB_MERGES, model_max_length=model_max_length)


def tiny_clip_text_config(
    vocab_size: int, context_length: int, width: int = 32, layers: int = 1, projection_dim: int | None = None
) -> dict:
    """A tiny random CLIP text tower's config (``CLIPTextConfig`` fields): ``width`` wide, ``layers`` deep, two
    heads, reading :func:`tiny_clip_tokenizer`'s ids (start and end of text are its last two; end pads)."""
    config = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=context_length,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    if projection_dim is not None:
        config["projection_dim"] = projection_dim
    return config


def tiny_clip_tower_configs(vocab_size: int, context_length: int) -> tuple[dict, dict]:
    """``(text_config, vision_config)`` of a tiny random CLIP-style model (width 32, one layer, 32-px images in
    8-px patches): the tiny CLIP and OWLv2 folders of the T2I-CompBench scorers' tests."""
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    return tiny_clip_text_config(vocab_size, context_length), vision


def save_clip_tokenizer(tokenizer, directory) -> None:
    """Save a ``CLIPTokenizer`` in the public repos' four-file form (vocab.json, merges.txt, two JSON configs)."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "unk_token": tokenizer.unk_token,
        "pad_token": tokenizer.pad_token,
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    (directory / "tokenizer.json").unlink(missing_ok=True)


#: space → (environment variable of a folder holding ``text_encoder/`` + ``tokenizer/``, what to download)
FOLDER_SPACES = {
    "clip-vit-l-14": ("EVALKIT_KARLO_DIR", "kakaobrain/karlo-v1-alpha"),
    "clip-vit-bigg-14": ("EVALKIT_KANDINSKY22_PRIOR_DIR", "kandinsky-community/kandinsky-2-2-prior"),
}


def load_text_encoder(space: str):
    """The text encoder of ``space`` without any plugin to hold it: the world CLIP for ``synth-clip`` (shipped),
    the CLIP text tower of a local public folder for the real spaces."""
    if space == "synth-clip":
        from evalkit.world.models.clip import load_world_clip

        return load_world_clip()
    if space in FOLDER_SPACES:
        variable, repo = FOLDER_SPACES[space]
        folder = os.environ.get(variable, "").strip()
        if not folder:
            raise WeightsNotFoundError(
                f"a prior reads text encodings of {space!r}, whose text encoder is the one of "
                f"{repo} (text_encoder/ + tokenizer/): download it and set {variable}=DIR"
            )
        from evalkit.priors.real import HFTextEncoder

        return HFTextEncoder.from_pretrained(folder, space)
    known = ", ".join(["synth-clip", *FOLDER_SPACES])
    raise EvalkitError(
        f"no text encoder is known for embedding space {space!r} (known: {known}); a prior of "
        "another space provides its own (a `text_encoder()` method returning an object with "
        "`encode_text(prompts)`)"
    )


def text_encoders(priors: dict, decoder) -> dict:
    """One text encoder per embedding space the priors read (shared by all priors of the run)."""
    encoders = {}
    clip = decoder.clip or next((p.clip for p in priors.values() if p.clip is not None), None)
    if clip is not None:
        encoders[clip.embedding_space] = clip
    for prior in priors.values():
        for space in prior.text_encoders:
            if space not in encoders and (own := prior.text_encoder()) is not None:
                encoders[space] = own
    for prior in priors.values():
        for space in prior.text_encoders:
            if space not in encoders:
                encoders[space] = load_text_encoder(space)
    return encoders
