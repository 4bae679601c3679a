"""The analytic scorer: a prompt's noun phrases checked against the objects detected in its image."""

from __future__ import annotations

import math
from typing import Any, Sequence

from evalkit.contracts import Batch, Scorer
from evalkit.scorers.analytic.detection import Detections, detect
from evalkit.scorers.analytic.segmentation import FG_CHROMA, MAX_OBJECTS, MIN_AREA, NOISE_FACTOR
from evalkit.scorers.spatial_rules import image_score, position_score, rescale, unidet_frame
from evalkit.world.attributes import CANVAS, relation_text
from evalkit.world.phrases import noun_phrases, parse_phrase, relation_of, unreadable


def _satisfies(obj: dict, fields: tuple[tuple[str, str], ...]) -> bool:
    return all(obj[family] == value for family, value in fields)


def score_phrases(phrases: Sequence[str], objects: list[dict]) -> tuple[list[dict], float, float]:
    """Questions (``{"question", "p", "object"[, "unknown"]}``), HRS accuracy and product. Each phrase takes the
    first (largest) object that fits it and that no earlier phrase took."""
    questions = []
    taken: set[int] = set()
    for phrase in phrases:
        fields, unknown = parse_phrase(phrase)
        match = None
        if not unknown and fields:
            match = next(
                (j for j, obj in enumerate(objects) if j not in taken and _satisfies(obj, fields)),
                None,
            )
            if match is not None:
                taken.add(match)
        q = {"question": f"{phrase}?", "p": 1.0 if match is not None else 0.0, "object": match}
        if unknown:
            q["unknown"] = list(unknown)
        questions.append(q)
    if not questions:
        return questions, 1.0, 1.0
    ps = [q["p"] for q in questions]
    return questions, sum(ps) / len(ps), float(math.prod(ps))


def score_relation(relation: str, phrases: Sequence[str], objects: list[dict]) -> dict:
    """T2I-CompBench's spatial score of one image from the detected objects: the objects of the two phrases
    (:func:`score_phrases`; confidence 1 when found, as the analytic reading is yes / no), their foreground
    boxes in UniDet's 479-px frame, :func:`~evalkit.scorers.spatial_rules.position_score` and
    :func:`~evalkit.scorers.spatial_rules.image_score` (both found: 0.5 + position / 2; otherwise 0). The
    relation's own question is added to the phrase questions with p = the position score."""
    questions, _, product = score_phrases(phrases, objects)
    found = [None if q["object"] is None else objects[q["object"]] for q in questions[:2]]
    frame_h, frame_w = unidet_frame(CANVAS, CANVAS)
    boxes = [None if o is None else rescale(_xyxy(o["bbox"]), frame_w / CANVAS, frame_h / CANVAS) for o in found]
    words = relation_text(relation)
    position = position_score(words, boxes[0], boxes[1]) if len(boxes) == 2 and None not in boxes else None
    dets = [None if box is None else (box, 1.0) for box in boxes] + [None] * (2 - len(boxes))
    questions.append({"question": f"{' '.join(phrases[:1])} {words} {' '.join(phrases[1:2])}?", "p": position or 0.0})
    return {
        "score": image_score(words, dets[0], dets[1]),
        "product": float(product * (position or 0.0)),
        "position": position,
        "relation": words,
        "questions": questions,
    }


def _xyxy(bbox: Sequence[int]) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return float(x), float(y), float(x + w), float(y + h)


class AnalyticScorer(Scorer):
    """HRS-style scorer of the synthetic world: detect objects, read their attributes, check phrases.

    ``score`` is the fraction of the prompt's noun phrases that some detected object satisfies;
    rows also carry ``product`` (all phrases satisfied: 1, else 0), the ``questions`` with their
    p ∈ {0, 1} and the detected ``objects``. A spatial prompt of the world ("a circle on the left of a
    square") is scored by T2I-CompBench's 2-D spatial rules on the detected objects' boxes instead
    (:func:`score_relation`): ``score`` ∈ {0} ∪ [0.5, 1], ``position`` and ``relation`` in the row.
    """

    name = "analytic"
    version = "2"
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
            relation = relation_of(item)
            if relation is not None:
                rows.append({**score_relation(relation, noun_phrases(item), objects), "objects": objects})
                continue
            questions, accuracy, product = score_phrases(noun_phrases(item), objects)
            rows.append({"score": accuracy, "product": product, "questions": questions, "objects": objects})
        return rows
