"""``t2i-spatial``: T2I-CompBench's 2-D spatial score (``UniDet_eval/2D_spatial_eval.py``) on an OWLv2 detector.

**The numbers are not UniDet's.** T2I-CompBench detects with UniDet (a detectron2 Cascade R-CNN over a unified
722-class label space, ``Unified_learned_OCIM_RS200_6x+2x``), which does not load here (detectron2, a custom
ResNeSt backbone, a checkpoint outside the Hugging Face layout). This scorer detects with **OWLv2**
(``Owlv2ForObjectDetection`` + ``Owlv2Processor`` from a local ``google/owlv2-base-patch16-ensemble`` folder).
Why OWLv2 rather than Grounding DINO: OWLv2 scores every (box, text query) pair with an independent sigmoid, as
UniDet scores every (box, class) pair, so "the best box of class X and its confidence" is read the same way for
each object, whatever the other object is; Grounding DINO scores boxes against token spans of one joint
caption, so one object's confidence depends on the other's words and on how the phrase maps to tokens. OWLv2
is also one ``from_pretrained`` folder (CLIP tokenizer, no separate backbone), which keeps the tiny test models
in the public layout small. Differences that remain: confidences are calibrated differently (the thresholds
below are UniDet's), and OWLv2 reads any noun, where UniDet finds only nouns that are among its class names.

Everything after the detector is T2I-CompBench's, at the pinned commit (``1b70949``):

1. Relation and objects from the prompt: :mod:`evalkit.scorers.t2i_text` (``2D_spatial_eval.py`` l. 166–232).
2. Detections: UniDet keeps (box, class) pairs scoring above 0.1 (``unified_roi_heads.py`` l. 105–112
   hard-codes ``0.1`` in ``fast_rcnn_inference``, overriding the 0.5 of ``--confidence-threshold``; detectron2
   keeps ``score > threshold``) and the script takes, per object, the first detection of its class
   (``obj.index(obj1)``, l. 234) — detectron2 lists detections by decreasing score, so the most confident one.
   Here: per object query, the box of highest sigmoid score above :data:`DETECTION_THRESHOLD`.
3. Boxes in UniDet's frame: its dataset resizes each image with ``Resize(size=479, max_size=480)``
   (``experts/model_bank.py`` l. 90–92) and detectron2 returns boxes at that size, so "150 px" means 150 px of
   a 479 × 479 picture whatever the generator's resolution. Boxes are rescaled to that frame
   (:func:`unidet_frame`; ``frame="pixels"`` keeps the image's own pixels).
4. :func:`position_score` (``determine_position``, l. 23–78) and :func:`image_score` (l. 233–261).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from evalkit.contracts import Batch, PromptItem, Scorer
from evalkit.scorers import t2i_text
from evalkit.scorers.spatial_rules import (  # noqa: F401  (the rules, importable from here as before)
    DISTANCE_THRESHOLD,
    IOU_THRESHOLD,
    NEAR_RELATIONS,
    SCORE_FLOOR,
    UNIDET_MAX_SIZE,
    UNIDET_SIZE,
    Box,
    image_score,
    iou,
    position_score,
    rescale,
    unidet_frame,
)
from evalkit.scorers.hf_folder import check_model_folder, load_local_model, resolve_model_folder
from evalkit.serialization import quiet_transformers
from evalkit.text_encoders import save_clip_tokenizer, tiny_clip_tokenizer, tiny_clip_tower_configs

ENV_DIR = "EVALKIT_OWLV2_DIR"
REPO_ID = "google/owlv2-base-patch16-ensemble"
MODEL_TYPES = ("owlv2",)

#: UniDet's effective detection threshold (``unified_roi_heads.py``: ``fast_rcnn_inference(..., 0.1, ...)``)
DETECTION_THRESHOLD = 0.1
#: OWL-ViT's prompt for a class name
QUERY_TEMPLATE = "a photo of a {}"
FRAMES = ("unidet", "pixels")
#: ``"t2i-compbench"``: the rules as written ("on top of" scores 0); ``"top-of"``: "on top of" scored as "on the top of"
RELATION_RULES = ("t2i-compbench", "top-of")


def best_detection(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float = DETECTION_THRESHOLD
) -> tuple[Box, float] | None:
    """The box of highest score among those scoring above ``threshold`` (strictly, as detectron2), or None.
    ``boxes`` ``(P, 4)`` xyxy, ``scores`` ``(P,)``; ties go to the first box."""
    if scores.numel() == 0:
        return None
    index = int(torch.argmax(scores))
    if not bool(scores[index] > threshold):  # compared in the scores' dtype, as detectron2's ``scores > thresh``
        return None
    return tuple(float(v) for v in boxes[index].tolist()), float(scores[index])


def _round(values, digits: int = 4):
    return [round(float(v), digits) for v in values]


# --------------------------------------------------------------------------- the scorer


def weights_hint(directory: str | os.PathLike | None = None) -> str:
    from evalkit.scorers.hf_folder import download_hint

    return download_hint(REPO_ID, ENV_DIR, "t2i-spatial")(directory)


class T2ISpatialScorer(Scorer):
    """T2I-CompBench 2-D spatial score per image, objects found by OWLv2 (module docstring).

    ``path``: a local ``google/owlv2-base-patch16-ensemble`` folder (else ``$EVALKIT_OWLV2_DIR``).
    ``structure``: ``"auto"`` (the complex parser for items of category ``complex``, else the simple one),
    ``"simple"`` or ``"complex"``. ``parser``: ``auto`` | ``spacy`` | ``rules`` (:mod:`~evalkit.scorers.t2i_text`).
    ``frame``: ``"unidet"`` (boxes rescaled to UniDet's 479-px input) or ``"pixels"``. ``relation_rules``:
    ``"t2i-compbench"`` (as written) or ``"top-of"`` ("on top of" scored as "on the top of").
    """

    name = "t2i-spatial"
    version = "1-owlv2"
    higher_is_better = True
    #: OWLv2 computes in any of these; scores and boxes are read in float32
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        structure: str = "auto",
        parser: str | None = None,
        detection_threshold: float = DETECTION_THRESHOLD,
        query_template: str = QUERY_TEMPLATE,
        frame: str = "unidet",
        relation_rules: str = "t2i-compbench",
        device: str | None = None,
    ) -> None:
        super().__init__()
        if structure not in ("auto", *t2i_text.STRUCTURES):
            raise ValueError(f"unknown structure {structure!r}; expected auto, simple or complex")
        if frame not in FRAMES:
            raise ValueError(f"unknown box frame {frame!r}; expected one of {', '.join(FRAMES)}")
        if relation_rules not in RELATION_RULES:
            raise ValueError(f"unknown relation_rules {relation_rules!r}; expected one of {', '.join(RELATION_RULES)}")
        if "{}" not in query_template:
            raise ValueError(f"query_template must hold '{{}}' for the object, got {query_template!r}")
        directory = resolve_model_folder(path, ENV_DIR, self.name, REPO_ID)
        use_safetensors = check_model_folder(
            directory,
            scorer=self.name,
            repo_id=REPO_ID,
            model_types=MODEL_TYPES,
            env_var=ENV_DIR,
            allow_pickle=allow_pickle,
        )
        self.path = str(directory)
        self.structure = structure
        self.parser = t2i_text.parser_name(parser)  # resolved once: rows and the fingerprint name it
        self.detection_threshold = float(detection_threshold)
        self.query_template = query_template
        self.frame = frame
        self.relation_rules = relation_rules
        self.model, self.processor = self._load(directory, use_safetensors)
        self.image_processor_class = type(self.processor.image_processor).__name__
        if device is not None:
            self.to_placement(str(device))

    def _load(self, directory: Path, use_safetensors: bool):
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        hint = f"Restore the folder: {weights_hint(directory)}"
        return load_local_model(Owlv2ForObjectDetection, Owlv2Processor, directory, use_safetensors, self.name, hint)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ------------------------------------------------------------------ prompts

    def structure_of(self, item: PromptItem) -> str:
        if self.structure != "auto":
            return self.structure
        return "complex" if item.category == "complex" else "simple"

    def parse(self, item: PromptItem) -> t2i_text.Parsed:
        return t2i_text.parse_spatial(item.prompt, self.structure_of(item), self.parser)

    def not_applicable(self, item: PromptItem) -> str | None:
        """A prompt without one of T2I-CompBench's relations, or whose parser does not find two objects."""
        return self.parse(item).reason

    def rule_relation(self, relation: str | None) -> str | None:
        return "on the top of" if self.relation_rules == "top-of" and relation == "on top of" else relation

    # ------------------------------------------------------------------ detection

    @staticmethod
    def _quantise(images: torch.Tensor) -> np.ndarray:
        """Float images in [0, 1] → uint8 ``(N, H, W, 3)``: what a saved PNG holds, which is what is scored."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"t2i-spatial: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if not torch.is_floating_point(images):
            raise ValueError(f"t2i-spatial: expected float images in [0, 1], got dtype {images.dtype}")
        pixels = (images.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).contiguous().numpy()

    @torch.no_grad()
    def detect(self, image: np.ndarray, objects: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """OWLv2 on one ``(H, W, 3)`` uint8 image with one query per object: ``(boxes (P, 4), scores (P, Q))``,
        boxes as xyxy pixels of the image, scores the per-query sigmoid (float32, on the CPU). One image per
        forward pass, so an image's detections never depend on its batch."""
        height, width = image.shape[:2]
        queries = [self.query_template.format(o) for o in objects]
        inputs = self.processor(text=[queries], images=[image], return_tensors="pt")
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
        }
        out = self.model(**inputs)
        scores = torch.sigmoid(out.logits[0].float()).cpu()  # (P, Q)
        cx, cy, w, h = out.pred_boxes[0].float().cpu().unbind(-1)
        side = float(max(height, width))  # OWLv2 pads to a square (bottom / right) before resizing
        boxes = torch.stack([(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side], -1)
        limit = torch.tensor([width, height, width, height], dtype=boxes.dtype)
        return torch.minimum(boxes.clamp(min=0), limit), scores[:, : len(queries)]

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        if len(images) != len(batch):
            raise ValueError(f"t2i-spatial: {len(images)} images for a batch of {len(batch)} items")
        pixels = self._quantise(images)
        rows = []
        for image, item in zip(pixels, batch.items):
            parsed = self.parse(item)
            row = {
                "relation": parsed.relation,
                "objects": list(parsed.objects or parsed.parsed),
                "parser": parsed.parser,
                "structure": parsed.structure,
                "detector": "owlv2",
            }
            if parsed.reason is not None:
                rows.append({"score": 0.0, **row, "not_applicable": parsed.reason})
                continue
            rows.append({**self.score_image(image, parsed), **row})
        return rows

    def score_image(self, image: np.ndarray, parsed: t2i_text.Parsed) -> dict:
        """Detect both objects in one image and apply the rules; the row without the item fields."""
        height, width = image.shape[:2]
        queries = list(dict.fromkeys(parsed.objects))  # "a dog next to a dog": one query, one box for both
        boxes, scores = self.detect(image, queries)
        if self.frame == "unidet":
            frame_h, frame_w = unidet_frame(height, width)
        else:
            frame_h, frame_w = height, width
        sx, sy = frame_w / width, frame_h / height
        found = {}
        for q, obj in enumerate(queries):
            det = best_detection(boxes, scores[:, q], self.detection_threshold)
            found[obj] = None if det is None else (rescale(det[0], sx, sy), det[1])
        det1, det2 = found[parsed.objects[0]], found[parsed.objects[1]]
        relation = self.rule_relation(parsed.relation)
        position = position_score(relation, det1[0], det2[0]) if det1 is not None and det2 is not None else None
        return {
            "score": image_score(relation, det1, det2),
            "position": position,
            "rule_relation": relation,
            "detections": {
                obj: None if det is None else {"box": _round(det[0], 2), "confidence": round(det[1], 6)}
                for obj, det in found.items()
            },
            "frame": {
                "name": self.frame,
                "width": frame_w,
                "height": frame_h,
                "image_width": width,
                "image_height": height,
            },
        }

    def fingerprint(self) -> str:
        """Identity for the work cache: weights, settings (the parser that runs included), processor, code."""
        from evalkit.scorers import noun_phrases, spatial_rules
        from evalkit.scorers.hf_folder import scorer_fingerprint

        return scorer_fingerprint(
            self,
            {"image_processor": self.processor.image_processor.to_dict()},
            sources=(t2i_text, noun_phrases, spatial_rules),
        )

    # ------------------------------------------------------------------ tiny

    @classmethod
    def write_tiny(cls, directory: str | os.PathLike, seed: int = 0) -> Path:
        """A tiny random-weight OWLv2 (32 px, 8-px patches, width 32) in the public repository's layout."""
        from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer = tiny_clip_tokenizer(16)
        text, vision = tiny_clip_tower_configs(len(tokenizer), 16)
        with quiet_transformers():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = Owlv2ForObjectDetection(
                    Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
                ).eval()
            model.save_pretrained(directory)
            Owlv2ImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
            save_clip_tokenizer(tokenizer, directory)
        return directory

    @classmethod
    def tiny(cls, directory: str | os.PathLike | None = None, **kwargs) -> "T2ISpatialScorer":
        """A scorer on a tiny random OWLv2 written into ``directory`` (None: a temporary folder)."""
        if directory is not None:
            return cls(cls.write_tiny(directory), **kwargs)
        with tempfile.TemporaryDirectory(prefix="evalkit-owlv2-") as tmp:
            return cls(cls.write_tiny(tmp), **kwargs)
