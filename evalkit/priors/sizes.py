"""Architectures of the trained priors by size name: one table for ``train-baseline`` and the loaders.

``paper`` is the ECLIPSE paper's prior (10 layers, 16 heads × 32 = width 512; 33.1 M parameters at
768-d, 34.2 M at 1280-d); ``small`` and ``large`` are the synthetic world's sizes (its CLIP is 128-d
with 20 text tokens); ``xl`` is the diffusion rung of the size ladder (≥ 10× ``small``); ``tiny`` is for tests.
"""

from __future__ import annotations

#: (layers, heads, head dim) per size
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (1, 2, 8),
    "small": (2, 2, 32),
    "large": (4, 4, 32),
    "xl": (4, 6, 32),
    "paper": (10, 16, 32),
}
KINDS = ("eclipse", "projection", "diffusion")


def size_config(kind: str, size: str, embedding_dim: int, num_embeddings: int) -> dict:
    """The model config (diffusers keys) of prior ``kind`` at ``size`` for a text encoder of this shape."""
    from evalkit.errors import UnknownNameError

    if kind not in KINDS:
        raise UnknownNameError("prior kind", kind, list(KINDS))
    if size not in SIZES:
        raise UnknownNameError("size", size, list(SIZES))
    layers, heads, head_dim = SIZES[size]
    config = {
        "num_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "embedding_dim": embedding_dim,
        "num_embeddings": num_embeddings,
    }
    if kind == "diffusion":
        # diffusers' PriorTransformer with its time embedding: text tokens, pooled text, time, noisy input, prd
        config.update(
            additional_embeddings=4,
            embedding_proj_norm_type=None,
            encoder_hid_proj_type="linear",
            added_emb_type="prd",
            norm_in_type=None,
            time_embed_act_fn="silu",
        )
    else:
        # ECLIPSE: the same transformer without the time token
        config.update(additional_embeddings=3)
    return config


def count_parameters(module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameters of a network. evalkit's parameter count of a prior — in every table,
    ``--describe`` and ``results.json`` ``trainable_parameters`` — is the *trainable* one: what training
    updates. The frozen ones are the CLIP standardisation statistics ``clip_mean`` / ``clip_std`` (2 × D: 256
    at 128-d, 1,536 at 768-d) that the diffusers layout stores beside the network; they count in the weights
    file's size, not in the parameter count."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters()) - trainable
