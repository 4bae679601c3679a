"""T2I-CompBench's 2-D spatial rules (``UniDet_eval/2D_spatial_eval.py`` at ``1b70949``), pure and torch-free.

The position rule (``determine_position``, l. 23–78), the image score (l. 233–261) and UniDet's input frame,
shared by the ``t2i-spatial`` scorer (OWLv2 boxes) and the analytic scorer of the synthetic world (the boxes of
the objects it detects): one copy of the rules, whatever finds the boxes.
"""

from __future__ import annotations

from typing import Sequence

#: ``determine_position`` defaults (l. 23)
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150
#: relations scored by distance (l. 43); "on top of" (in the relation list) has no branch and scores 0 (l. 76)
NEAR_RELATIONS = ("next to", "on side of", "near")
#: an image score below this is 0 (l. 260–261)
SCORE_FLOOR = 0.5
#: UniDet's input frame (``model_bank.py``: ``transforms.Resize(size=479, max_size=480)``)
UNIDET_SIZE, UNIDET_MAX_SIZE = 479, 480


# --------------------------------------------------------------------------- the rules (pure)


def iou(box1: Sequence[float], box2: Sequence[float]) -> float:
    """Intersection over union of two ``(x_min, y_min, x_max, y_max)`` boxes (l. 32–39); 0 when both are empty
    (T2I-CompBench divides by zero there)."""
    x_overlap = max(0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    y_overlap = max(0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    intersection = x_overlap * y_overlap
    box1_area = (box1[2] - box1[0]) * (box1[3] - box1[1])
    box2_area = (box2[2] - box2[0]) * (box2[3] - box2[1])
    union = box1_area + box2_area - intersection
    return intersection / union if union > 0 else 0.0


def position_score(
    relation: str | None,
    box1: Sequence[float],
    box2: Sequence[float],
    iou_threshold: float = IOU_THRESHOLD,
    distance_threshold: float = DISTANCE_THRESHOLD,
) -> float:
    """``determine_position(locality, box1, box2)`` of ``2D_spatial_eval.py`` (l. 23–78), branch for branch.

    ``dx``/``dy``: box 2's centre minus box 1's (image y grows downwards).

    * "next to" / "on side of" / "near": 1 if ``|dx| < 150`` or ``|dy| < 150``, else ``150 / max(|dx|, |dy|)``.
    * "on the right of" (``dx < 0``), "on the left of" (``dx > 0``): 1 if ``|dx| > |dy|`` and IoU < 0.1,
      ``0.1 / IoU`` if ``|dx| > |dy|`` and IoU ≥ 0.1, else 0; the wrong direction: 0.
    * "on the bottom of" (``dy < 0``), "on the top of" (``dy > 0``): the same with ``|dy| > |dx|``.
    * anything else — "on top of" (in the relation list but without a branch), None: 0.
    """
    c1 = ((box1[0] + box1[2]) / 2, (box1[1] + box1[3]) / 2)
    c2 = ((box2[0] + box2[2]) / 2, (box2[1] + box2[3]) / 2)
    x_distance = c2[0] - c1[0]
    y_distance = c2[1] - c1[1]
    overlap = iou(box1, box2)
    score = 0
    if relation in NEAR_RELATIONS:
        if abs(x_distance) < distance_threshold or abs(y_distance) < distance_threshold:
            score = 1
        else:
            score = distance_threshold / max(abs(x_distance), abs(y_distance))
    elif relation in ("on the right of", "on the left of"):
        if (x_distance < 0) if relation == "on the right of" else (x_distance > 0):
            if abs(x_distance) > abs(y_distance) and overlap < iou_threshold:
                score = 1
            elif abs(x_distance) > abs(y_distance) and overlap >= iou_threshold:
                score = iou_threshold / overlap
    elif relation in ("on the bottom of", "on the top of"):
        if (y_distance < 0) if relation == "on the bottom of" else (y_distance > 0):
            if abs(y_distance) > abs(x_distance) and overlap < iou_threshold:
                score = 1
            elif abs(y_distance) > abs(x_distance) and overlap >= iou_threshold:
                score = iou_threshold / overlap
    return float(score)


def image_score(
    relation: str | None,
    det1: tuple[Sequence[float], float] | None,
    det2: tuple[Sequence[float], float] | None,
    **thresholds,
) -> float:
    """One image's score from the chosen detection ``(box, confidence)`` of each object (None: not found),
    l. 233–261: both found, ``0.25·conf₁ + 0.25·conf₂ + position / 2``; one found, ``0.25·conf``; none, 0;
    then any score below 0.5 is 0 (so one object alone, or a wrong position, scores 0)."""
    if det1 is not None and det2 is not None:
        score = 0.25 * det1[1] + 0.25 * det2[1]
        score += position_score(relation, det1[0], det2[0], **thresholds) / 2
    elif det1 is not None:
        score = 0.25 * det1[1]
    elif det2 is not None:
        score = 0.25 * det2[1]
    else:
        score = 0
    if score < SCORE_FLOOR:
        score = 0
    return float(score)


Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max


def unidet_frame(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` of an image after torchvision ``Resize(size=479, max_size=480)``: the short side to
    479 (the long one truncated), unless the long side would pass 480, which then is 480."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = UNIDET_SIZE, int(UNIDET_SIZE * long / short)
    if new_long > UNIDET_MAX_SIZE:
        new_short, new_long = int(UNIDET_MAX_SIZE * new_short / new_long), UNIDET_MAX_SIZE
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def rescale(box: Sequence[float], sx: float, sy: float) -> Box:
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
