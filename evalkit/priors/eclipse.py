"""``eclipse``: the time-free prior of ECLIPSE (CVPR 2024) — one forward pass, no diffusion loop.

The network is diffusers' ``PriorTransformer`` without its time embedding. Tokens, in order: the text
encoder's per-token hidden states (linear-projected), the projected pooled text embedding, the projected
input (Gaussian noise, drawn from each image's seed), and a learned "prd" token; with the text's attention
mask, a causal mask over all of them (padding tokens masked), without it no mask at all (as upstream);
the prediction is read at the prd token and projected to the CLIP image embedding (raw, unnormalised —
what the decoders consume). No ``post_process_latents``.

Parameter names and config keys follow the public ECLIPSE-Community prior checkpoints
(``config.json`` + ``diffusion_pytorch_model.safetensors``, ``additional_embeddings: 3``), so a real
checkpoint loads into :class:`EclipsePriorTransformer` unchanged. Trained by ``evalkit train-baseline
--prior eclipse``: MSE to the raw image embedding + λ · text→image InfoNCE of the predictions (λ = 0.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from evalkit.contracts import per_image_randn
from evalkit.priors.trained import DiffusersLayoutMixin, TrainedPrior

#: additive mask value of diffusers' prior transformer (finite, so fully masked rows stay finite)
MASK_VALUE = -10000.0


class EclipsePriorTransformer(DiffusersLayoutMixin, ModelMixin, ConfigMixin):
    """diffusers' PriorTransformer with the time token removed (``additional_embeddings=3``)."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 32,
        num_layers: int = 10,
        embedding_dim: int = 768,
        num_embeddings: int = 77,
        additional_embeddings: int = 3,
        dropout: float = 0.0,
        norm_in_type: str | None = None,
        embedding_proj_norm_type: str | None = None,
        encoder_hid_proj_type: str | None = "linear",
        added_emb_type: str | None = "prd",
        embedding_proj_dim: int | None = None,
        clip_embed_dim: int | None = None,
    ):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        embedding_proj_dim = embedding_proj_dim or embedding_dim
        clip_embed_dim = clip_embed_dim or embedding_dim
        if additional_embeddings != 3:
            raise ValueError(
                f"the time-free prior has 3 additional tokens (pooled text, input, prd), got {additional_embeddings}"
            )
        if added_emb_type != "prd":
            raise ValueError("the time-free prior reads its output at the prd token: added_emb_type must be 'prd'")
        self.proj_in = nn.Linear(embedding_dim, inner)
        self.embedding_proj_norm = nn.LayerNorm(embedding_proj_dim) if embedding_proj_norm_type == "layer" else None
        if embedding_proj_norm_type not in (None, "layer"):
            raise ValueError(f"unsupported embedding_proj_norm_type {embedding_proj_norm_type!r}")
        self.embedding_proj = nn.Linear(embedding_proj_dim, inner)
        if encoder_hid_proj_type not in (None, "linear"):
            raise ValueError(f"unsupported encoder_hid_proj_type {encoder_hid_proj_type!r}")
        self.encoder_hidden_states_proj = nn.Linear(embedding_dim, inner) if encoder_hid_proj_type else None
        self.positional_embedding = nn.Parameter(torch.zeros(1, num_embeddings + additional_embeddings, inner))
        self.prd_embedding = nn.Parameter(torch.zeros(1, 1, inner))
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                num_attention_heads,
                attention_head_dim,
                dropout=dropout,
                activation_fn="gelu",
                attention_bias=True,
            )
            for _ in range(num_layers)
        )
        if norm_in_type not in (None, "layer"):
            raise ValueError(f"unsupported norm_in_type {norm_in_type!r}")
        self.norm_in = nn.LayerNorm(inner) if norm_in_type == "layer" else None
        self.norm_out = nn.LayerNorm(inner)
        self.proj_to_clip_embeddings = nn.Linear(inner, clip_embed_dim)
        length = num_embeddings + additional_embeddings
        self.register_buffer(
            "causal_attention_mask", torch.full((length, length), MASK_VALUE).triu_(1)[None], persistent=False
        )
        # present in the public checkpoints (unused by the time-free prior: no post-processing)
        self.clip_mean = nn.Parameter(torch.zeros(1, clip_embed_dim), requires_grad=False)
        self.clip_std = nn.Parameter(torch.zeros(1, clip_embed_dim), requires_grad=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        proj_embedding: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden_states``: input noise (N, D); ``proj_embedding``: pooled text (N, D);
        ``encoder_hidden_states``: text tokens (N, L, D); ``attention_mask``: (N, L) True for real tokens."""
        batch = hidden_states.shape[0]
        if self.embedding_proj_norm is not None:
            proj_embedding = self.embedding_proj_norm(proj_embedding)
        tokens = []
        if encoder_hidden_states is not None:
            if self.encoder_hidden_states_proj is None:
                raise ValueError("this prior has no projection for text hidden states")
            tokens.append(self.encoder_hidden_states_proj(encoder_hidden_states))
        elif self.encoder_hidden_states_proj is not None:
            raise ValueError("this prior needs the text encoder's hidden states (encoder_hidden_states)")
        tokens += [
            self.embedding_proj(proj_embedding)[:, None],
            self.proj_in(hidden_states)[:, None],
            self.prd_embedding.to(hidden_states.dtype).expand(batch, -1, -1),
        ]
        x = torch.cat(tokens, dim=1)
        position = self.positional_embedding.to(x.dtype)
        if position.shape[1] < x.shape[1]:  # as diffusers: no positions for extra tokens
            position = F.pad(position, (0, 0, 0, x.shape[1] - position.shape[1]))
        x = x + position[:, : x.shape[1]]
        length = x.shape[1]
        mask = None  # as upstream (and diffusers' PriorTransformer): no text mask, no mask at all
        if attention_mask is not None:  # the causal mask comes with the text's padding mask
            padding = (1 - attention_mask.to(x.dtype)) * MASK_VALUE
            padding = F.pad(padding, (0, length - padding.shape[1]), value=0.0)
            mask = self.causal_attention_mask[:, :length, :length].to(x.dtype) + padding[:, None, :]
            mask = mask.repeat_interleave(self.config.num_attention_heads, dim=0)
        if self.norm_in is not None:
            x = self.norm_in(x)
        for block in self.transformer_blocks:
            x = block(x, attention_mask=mask)
        return self.proj_to_clip_embeddings(self.norm_out(x)[:, -1])


class EclipsePrior(TrainedPrior):
    """The shipped ECLIPSE prior of the synthetic world (or any folder in the same layout: ``path=DIR``)."""

    name = "eclipse"
    kind = "eclipse"
    model_class = EclipsePriorTransformer

    def sample(self, encoding, seeds) -> torch.Tensor:
        text, hidden, mask = self.model_inputs(encoding)
        # drawn on the CPU from each image's seed, then moved: the same noise on any device
        noise = per_image_randn(seeds, (self.model.config["embedding_dim"],)).to(text.device, text.dtype)
        return self.model(noise, text, hidden, mask)


class EclipseLargePrior(EclipsePrior):
    name = "eclipse-large"


class EclipseHardNegativePrior(EclipsePrior):
    """ECLIPSE trained with each caption's attribute-swapped text as an extra contrastive negative."""

    name = "eclipse-hn"
