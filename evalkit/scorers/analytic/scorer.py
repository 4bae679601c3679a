"""The analytic scorer: a prompt's noun phrases checked against the objects detected in its image."""

from __future__ import annotations

import math
from typing import Any, Sequence

from evalkit.contracts import Batch, Scorer
from evalkit.scorers.analytic.detection import Detections, detect
from evalkit.scorers.analytic.segmentation import FG_CHROMA, MAX_OBJECTS, MIN_AREA, NOISE_FACTOR
from evalkit.world.phrases import noun_phrases, parse_phrase, unreadable


def _satisfies(obj: dict, fields: tuple[tuple[str, str], ...]) -> bool:
    return all(obj[family] == value for family, value in fields)


def score_phrases(phrases: Sequence[str], objects: list[dict]) -> tuple[list[dict], float, float]:
    """Questions (``{"question", "p", "object"[, "unknown"]}``), HRS accuracy and product."""
    questions = []
    for phrase in phrases:
        fields, unknown = parse_phrase(phrase)
        match = None
        if not unknown and fields:
            match = next((j for j, obj in enumerate(objects) if _satisfies(obj, fields)), None)
        q = {"question": f"{phrase}?", "p": 1.0 if match is not None else 0.0, "object": match}
        if unknown:
            q["unknown"] = list(unknown)
        questions.append(q)
    if not questions:
        return questions, 1.0, 1.0
    ps = [q["p"] for q in questions]
    return questions, sum(ps) / len(ps), float(math.prod(ps))


class AnalyticScorer(Scorer):
    """HRS-style scorer of the synthetic world: detect objects, read their attributes, check phrases.

    ``score`` is the fraction of the prompt's noun phrases that some detected object satisfies;
    rows also carry ``product`` (all phrases satisfied: 1, else 0), the ``questions`` with their
    p ∈ {0, 1} and the detected ``objects``.
    """

    name = "analytic"
    version = "1"
    #: no torch modules: it reads the images on the CPU into numpy (float32 / float64) on any --device
    supported_dtypes = ("float32",)

    def __init__(
        self,
        fg_chroma: float = FG_CHROMA,
        min_area: int = MIN_AREA,
        max_objects: int = MAX_OBJECTS,
        noise_factor: float = NOISE_FACTOR,
    ):
        super().__init__()
        self.fg_chroma = float(fg_chroma)
        self.noise_factor = float(noise_factor)
        self.min_area = int(min_area)
        self.max_objects = int(max_objects)

    @classmethod
    def tiny(cls) -> "AnalyticScorer":
        return cls()

    def not_applicable(self, item) -> str | None:
        return unreadable(item)

    def detect(self, images: Any) -> Detections:
        return detect(images, self.fg_chroma, self.min_area, self.max_objects, self.noise_factor)

    def score(self, images: Any, batch: Batch) -> list[dict]:
        if len(images) != len(batch):
            raise ValueError(f"{len(images)} images for a batch of {len(batch)}")
        found = self.detect(images)
        rows = []
        for i, item in enumerate(batch.items):
            objects = found.objects(i)
            questions, accuracy, product = score_phrases(noun_phrases(item), objects)
            rows.append({"score": accuracy, "product": product, "questions": questions, "objects": objects})
        return rows
