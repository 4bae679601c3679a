"""The template scorer: one "question" per noun phrase, answered by the image's mean brightness.

Copy it when adding a scorer (see docs/add-a-scorer.md). It shows the row format B-VQA-style
scorers use: each question with its probability, and the per-image product as the score.
"""

from __future__ import annotations

import math

import torch

from evalkit.contracts import Batch, Scorer


class DummyScorer(Scorer):
    name = "dummy"
    version = "1"
    #: no weights: it reads the images in float32 wherever they are (placement moves nothing)
    supported_dtypes = ("float32",)

    @classmethod
    def tiny(cls) -> "DummyScorer":
        return cls()

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        brightness = images.float().mean(dim=(1, 2, 3)).tolist()
        rows = []
        for item, p in zip(batch.items, brightness):
            phrases = item.noun_phrases or (item.prompt,)
            questions = [{"question": f"{phrase}?", "p": p} for phrase in phrases]
            rows.append({"score": math.prod(q["p"] for q in questions), "questions": questions})
        return rows
