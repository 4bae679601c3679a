"""Embedding-level scoring inside ``evalkit run``: how close the prior's embedding is to the true image's.

``embedding-cosine`` reads the prior's output, not the decoded image: per image, the cosine between the
predicted embedding and the world CLIP's embedding of the item's own render (the image-level oracle's
embedding), as ``score = (1 + cos) / 2`` in [0, 1] (``details.cosine`` holds the cosine). It needs no
decoding, so it is immune to the decoder's numeric path — what makes it the regression gate's most
sensitive row for a changed prior: a degradation moves every image's embedding a little, where the
binding score flips only some images (docs/runs.md, "The gate's power"). Synthetic suites only (the
render needs the item's scene). The oracle prior scores 1 by construction.
"""

from __future__ import annotations

import torch

from evalkit.contracts import Batch, Scorer
from evalkit.errors import EvalkitError


class EmbeddingCosineScorer(Scorer):
    name = "embedding-cosine"
    version = "1"
    reads = "embeddings"
    score_resolution = 0.01  # a cosine change of 0.02 for one image; float noise across CPUs is ~1e-7
    #: what the world CLIP (rendering the oracle's embeddings) computes in
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, clip=None):
        super().__init__()
        from evalkit.priors.calibration import OraclePrior

        self.oracle = OraclePrior(clip)
        self.embedding_space, self.embedding_dim = self.oracle.embedding_space, self.oracle.embedding_dim

    @classmethod
    def tiny(cls) -> "EmbeddingCosineScorer":
        """Against a tiny random world CLIP (16-d) for tests."""
        from evalkit.world.models.clip import WorldCLIP

        torch.manual_seed(0)
        return cls(WorldCLIP.tiny().eval())

    def not_applicable(self, item) -> str | None:
        """The oracle renders the item's caption: captions of the synthetic world only."""
        from evalkit.world.phrases import unreadable

        return unreadable(item)

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        raise EvalkitError("the embedding-cosine scorer reads the prior's embeddings (score_embeddings), not images")

    @torch.inference_mode()
    def score_embeddings(self, image_embeds: torch.Tensor, batch: Batch) -> list[dict]:
        if image_embeds.shape[-1] != self.oracle.embedding_dim:
            raise EvalkitError(
                f"embedding-cosine compares with {self.oracle.embedding_dim}-d world-CLIP embeddings; "
                f"the prior gave {image_embeds.shape[-1]}-d ones"
            )
        target = self.oracle.predict(batch).float()
        image_embeds = image_embeds.to(target.device, torch.float32)  # the prior's, from wherever it computed
        cosine = torch.nn.functional.cosine_similarity(image_embeds, target, dim=-1).clamp(-1.0, 1.0)
        return [{"score": (1.0 + c) / 2.0, "cosine": c} for c in cosine.tolist()]
