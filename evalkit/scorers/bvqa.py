"""B-VQA arithmetic: per-question probabilities → per-image products → category score. No model.

T2I-CompBench's B-VQA asks one question per noun chunk ("{chunk}?"), reads
``p = P(yes) / (P(yes) + P(no))`` at the first answer step, multiplies the answers of an image and
averages the products over the images of a category. Two arithmetic modes:

``"full"`` (default)
    float64 throughout: the product over *all* of an image's questions, the mean of the products.

``"t2i-compbench"``
    the original scripts' arithmetic (``BLIPvqa_eval/BLIP_vqa.py`` with ``--np_num 8``), for
    comparisons with published numbers: each probability (a float32, as BLIP produced it) is
    written as ``'{:.4f}'`` and read back into a float32 tensor; the image's product runs in float32
    over :data:`T2I_COMPBENCH_SLOTS` noun-phrase slots, an empty slot counting 1 (phrases beyond the
    eighth are dropped); the product is written as ``'{:.4f}'`` again, and the category score is the
    plain (sequential, float64) mean of those rounded products.

Inputs are "ragged": one sequence of probabilities per image (lists, tuples, 1-D arrays or
tensors), or a 2-D array when every image has the same number of questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np

Mode = Literal["full", "t2i-compbench"]
MODES: tuple[str, ...] = ("full", "t2i-compbench")
#: T2I-CompBench's ``--np_num``: the number of noun-phrase slots per image.
T2I_COMPBENCH_SLOTS = 8
#: BLIP's (bert-base-uncased) vocabulary ids of the answers T2I-CompBench reads.
BLIP_YES_ID, BLIP_NO_ID = 2748, 2053


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown B-VQA arithmetic mode {mode!r}; expected one of {', '.join(MODES)}")


# --------------------------------------------------------------------------- one question


def yes_probability(p_yes: Any, p_no: Any) -> Any:
    """``p = P(yes) / (P(yes) + P(no))``, elementwise (floats, numpy arrays or torch tensors).

    Where both probabilities are 0 the answer carries no information and ``p`` is 0.5.
    """
    if _is_torch(p_yes) or _is_torch(p_no):
        import torch

        p_yes, p_no = torch.as_tensor(p_yes), torch.as_tensor(p_no)
        total = p_yes + p_no
        return torch.where(
            total > 0, p_yes / torch.where(total > 0, total, torch.ones_like(total)), torch.full_like(total, 0.5)
        )
    if np.ndim(p_yes) == 0 and np.ndim(p_no) == 0:
        total = float(p_yes) + float(p_no)
        return float(p_yes) / total if total > 0 else 0.5
    p_yes, p_no = np.asarray(p_yes, dtype=np.float64), np.asarray(p_no, dtype=np.float64)
    total = p_yes + p_no
    out = np.full(np.broadcast(p_yes, p_no).shape, 0.5)
    np.divide(p_yes, total, out=out, where=total > 0)
    return out


def yes_probability_from_logits(
    logits: Any, yes_id: int = BLIP_YES_ID, no_id: int = BLIP_NO_ID, mode: Mode = "full"
) -> Any:
    """``p`` from the answer decoder's first-step logits ``(..., vocab)``.

    ``softmax(logits)[yes] / (softmax[yes] + softmax[no])`` equals ``sigmoid(l_yes - l_no)``: the
    ``"full"`` mode computes that (in float64; exact for any logit range). ``"t2i-compbench"``
    follows the original: a float32 softmax over the whole vocabulary, then the ratio.
    """
    _check_mode(mode)
    if _is_torch(logits):
        import torch

        if mode == "full":
            diff = logits[..., yes_id].double() - logits[..., no_id].double()
            return torch.sigmoid(diff)
        prob = torch.softmax(logits.float(), dim=-1)
        return prob[..., yes_id] / (prob[..., yes_id] + prob[..., no_id])
    logits = np.asarray(logits)
    if mode == "full":
        diff = logits[..., yes_id].astype(np.float64) - logits[..., no_id].astype(np.float64)
        return _sigmoid(diff)
    z = logits.astype(np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=-1, keepdims=True, dtype=np.float32)
    return prob[..., yes_id] / (prob[..., yes_id] + prob[..., no_id])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out if out.ndim else float(out)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# --------------------------------------------------------------------------- rounding as the original


def format4(value: float) -> float:
    """``float('{:.4f}'.format(value))``: T2I-CompBench's 4-decimal rounding (correctly rounded
    decimal of the binary value, ties to even), unlike ``np.round`` which scales by 1e4 first."""
    return float(format(float(value), ".4f"))


def t2i_compbench_question_value(p: float) -> np.float32:
    """One stored answer: BLIP's float32 probability, written with 4 decimals, read into float32."""
    return np.float32(format4(np.float32(p)))


# --------------------------------------------------------------------------- images and categories


def _rows(probs: Any) -> list[np.ndarray]:
    """One float64 1-D array per image."""
    if _is_torch(probs):
        probs = probs.detach().cpu().double().numpy()
    if isinstance(probs, np.ndarray):
        if probs.ndim == 1 and probs.dtype != object:
            raise ValueError("expected probabilities grouped per image (one sequence per image), got a 1-D array")
        if probs.ndim == 2:
            return [row.astype(np.float64) for row in probs]
    rows = []
    for row in probs:
        if _is_torch(row):
            row = row.detach().cpu().double().numpy()
        if np.ndim(row) == 0:
            raise ValueError("expected probabilities grouped per image (one sequence per image), got a bare number")
        arr = np.asarray(row, dtype=np.float64).reshape(-1)
        rows.append(arr)
    return rows


def _check_range(rows: list[np.ndarray]) -> None:
    for i, row in enumerate(rows):
        if row.size and (not np.all(np.isfinite(row)) or row.min() < 0.0 or row.max() > 1.0):
            raise ValueError(f"image {i}: question probabilities must lie in [0, 1], got {row.tolist()}")


def image_scores(probs: Any, mode: Mode = "full", max_slots: int = T2I_COMPBENCH_SLOTS) -> np.ndarray:
    """Per-image products ``(N,)`` float64 of per-question probabilities grouped per image.

    ``mode="full"``: product over every question of the image (an image without questions scores 1).
    ``mode="t2i-compbench"``: the original's rounded float32 product over the first ``max_slots``
    questions (see the module docstring); the returned values are the rounded products.
    """
    _check_mode(mode)
    rows = _rows(probs)
    _check_range(rows)
    if mode == "full":
        return np.array([float(np.prod(row)) for row in rows], dtype=np.float64)
    out = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        slots = np.ones(max_slots, dtype=np.float32)
        for j, p in enumerate(row[:max_slots]):
            slots[j] = t2i_compbench_question_value(p)
        product = slots[0]
        for j in range(1, max_slots):
            product = np.float32(product * slots[j])
        out[i] = format4(product)
    return out


def mean_score(values: Iterable[float], mode: Mode = "full") -> float:
    """The category score from per-image scores: ``math.fsum`` mean (full) or the original's
    sequential float64 sum divided by the count (t2i-compbench). NaN for no images."""
    _check_mode(mode)
    values = [float(v) for v in values]
    if not values:
        return float("nan")
    if mode == "full":
        return math.fsum(values) / len(values)
    total = 0.0
    for v in values:
        total += v
    return total / len(values)


def category_score(probs: Any, mode: Mode = "full", max_slots: int = T2I_COMPBENCH_SLOTS) -> float:
    """Mean over images of the per-image products (the B-VQA score of a category)."""
    return mean_score(image_scores(probs, mode, max_slots), mode)


@dataclass(frozen=True)
class BVQAResult:
    image_scores: np.ndarray  # (N,) per-image products
    score: float  # their mean
    mode: str
    n_images: int
    truncated: int  # images with more questions than slots (t2i-compbench mode drops the extra ones)


def aggregate(probs: Any, mode: Mode = "full", max_slots: int = T2I_COMPBENCH_SLOTS) -> BVQAResult:
    """Per-image products and their mean in one call."""
    rows = _rows(probs)
    scores = image_scores(rows, mode, max_slots)
    truncated = sum(len(r) > max_slots for r in rows) if mode == "t2i-compbench" else 0
    return BVQAResult(scores, mean_score(scores, mode), mode, len(rows), truncated)


def probs_from_rows(rows: Sequence[dict]) -> list[list[float]]:
    """Per-image question probabilities from scorer rows (``row["questions"][k]["p"]``)."""
    return [[float(q["p"]) for q in row.get("questions", [])] for row in rows]


def category_scores_from_rows(
    rows: Sequence[dict], mode: Mode = "full", max_slots: int = T2I_COMPBENCH_SLOTS
) -> dict[str, float]:
    """``{category: score}`` recomputed from scorer rows' questions in the given arithmetic mode."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("category", ""), []).append(row)
    return {cat: category_score(probs_from_rows(group), mode, max_slots) for cat, group in groups.items()}
