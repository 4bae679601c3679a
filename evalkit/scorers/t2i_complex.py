"""``t2i-complex``: T2I-CompBench's 3-in-1 score of the complex category (``3_in_1_eval/3_in_1.py``).

T2I-CompBench scores every complex image with B-VQA (``annotation_blip``), UniDet (``2D_spatial_eval.py
--complex``) and CLIP (``CLIP_similarity.py --complex``), then per prompt (l. 44–69):

* prompts of ``complex_val_spatial.txt`` (spatial relation + attributes): ``(UniDet + B-VQA) · 0.5``;
* prompts of ``complex_val_action.txt`` (action relation + attributes): ``(CLIP + B-VQA) · 0.5``;
* every other prompt (the ``complex_val_spatialaction.txt`` ones): ``(B-VQA + UniDet + CLIP) / 3``.

A prompt's type is matched on its text before the first "." lowercased (l. 45–53);
:class:`~evalkit.suites.t2i_compbench_relations.T2ICompBenchRelationSuite` stores it in ``item.meta["complex_type"]``
(``spatial`` | ``action`` | ``spatial-action``). An item without one (a prompt file of the user's) is
``spatial-action``, T2I-CompBench's ``else``.

This scorer wraps the three scorers — ``blip-vqa``, ``t2i-spatial`` (complex structure) and ``t2i-clip``
(complex text: the prompt without adjectives) — runs only the parts an item's type needs, combines them with
:func:`three_in_one` and records each part's score and details. The CLIP part is the plain cosine, as
T2I-CompBench adds it. The spatial part is OWLv2's, not UniDet's (:mod:`evalkit.scorers.spatial`).

An item whose type needs the spatial part and whose prompt has no relation or no two objects is not applicable
(:meth:`Scorer.not_applicable`): excluded from the means, counted in the report. T2I-CompBench scores such a
prompt's spatial part 0 instead (2 of the 300 val prompts, see docs/scorers.md).

Weights: ``path`` is a folder holding ``blip-vqa/``, ``t2i-spatial/`` and ``t2i-clip/`` (each in its scorer's
layout); a part missing there is taken from its own environment variable (``$EVALKIT_BLIP_VQA_DIR``,
``$EVALKIT_OWLV2_DIR``, ``$EVALKIT_CLIP_VIT_B32_DIR``) or its own ``*_path`` argument.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from evalkit.contracts import Batch, PromptItem, Scorer
from evalkit.errors import WeightsNotFoundError

#: the item types of the complex category and the parts each one adds up
TYPES = {
    "spatial": ("blip-vqa", "t2i-spatial"),
    "action": ("blip-vqa", "t2i-clip"),
    "spatial-action": ("blip-vqa", "t2i-spatial", "t2i-clip"),
}
DEFAULT_TYPE = "spatial-action"
PARTS = ("blip-vqa", "t2i-spatial", "t2i-clip")


def three_in_one(kind: str, bvqa: float, spatial: float | None = None, clip: float | None = None) -> float:
    """``3_in_1.py`` l. 63–69 for one image, in its order of operations: ``spatial`` ``(spatial + bvqa) · 0.5``,
    ``action`` ``(clip + bvqa) · 0.5``, else ``(bvqa + spatial + clip) / 3``."""
    if kind == "spatial":
        return (spatial + bvqa) * 0.5
    if kind == "action":
        return (clip + bvqa) * 0.5
    if kind == "spatial-action":
        return (bvqa + spatial + clip) / 3
    raise ValueError(f"unknown complex type {kind!r}; expected one of {', '.join(TYPES)}")


def complex_type(item: PromptItem) -> tuple[str, str]:
    """(the item's type, where it came from: ``"suite"`` or ``"default"``)."""
    kind = (item.meta or {}).get("complex_type")
    if kind is None:
        return DEFAULT_TYPE, "default"
    if kind not in TYPES:
        raise ValueError(f"item {item.item_id}: unknown complex_type {kind!r}; expected one of {', '.join(TYPES)}")
    return kind, "suite"


class T2IComplexScorer(Scorer):
    """3-in-1 per image from ``blip-vqa``, ``t2i-spatial`` and ``t2i-clip`` (module docstring).

    ``parts``: ready scorers ``{"blip-vqa": ..., "t2i-spatial": ..., "t2i-clip": ...}`` (tests; the others
    are loaded). ``allow_pickle`` is passed to every part it loads."""

    name = "t2i-complex"
    version = "1-owlv2"
    higher_is_better = True

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        blip_path: str | os.PathLike | None = None,
        spatial_path: str | os.PathLike | None = None,
        clip_path: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        parts: dict | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__()
        from evalkit.scorers.blip_vqa import BlipVQAScorer
        from evalkit.scorers.spatial import T2ISpatialScorer
        from evalkit.scorers.t2i_clip import T2IClipScorer

        parts = dict(parts or {})
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown parts {', '.join(unknown)}; expected {', '.join(PARTS)}")
        root = Path(path).expanduser() if path is not None else None
        if root is not None and not root.is_dir():
            raise WeightsNotFoundError(
                f"t2i-complex: expected a folder at {root} holding blip-vqa/, t2i-spatial/ and t2i-clip/ (each in "
                "its scorer's layout: Salesforce/blip-vqa-capfilt-large, google/owlv2-base-patch16-ensemble, "
                "openai/clip-vit-base-patch32); it does not exist."
            )
        given = {"blip-vqa": blip_path, "t2i-spatial": spatial_path, "t2i-clip": clip_path}
        builders = {
            "blip-vqa": lambda p: BlipVQAScorer(p, allow_pickle=allow_pickle),
            "t2i-spatial": lambda p: T2ISpatialScorer(p, allow_pickle=allow_pickle, structure="complex"),
            "t2i-clip": lambda p: T2IClipScorer(p, allow_pickle=allow_pickle, structure="complex"),
        }
        for name in PARTS:
            if name in parts:
                continue
            folder = given[name]
            if folder is None and root is not None and (root / name).is_dir():
                folder = root / name
            parts[name] = builders[name](folder)  # None: the part's environment variable
        self.bvqa, self.spatial, self.clip = parts["blip-vqa"], parts["t2i-spatial"], parts["t2i-clip"]
        for part in (self.spatial, self.clip):
            if getattr(part, "structure", "complex") != "complex":
                raise ValueError(
                    f"t2i-complex: the {part.name} part must use structure='complex', got {part.structure!r}"
                )
        declared = [set(getattr(p, "supported_dtypes", ("float32",))) for p in self._parts().values()]
        self.supported_dtypes = tuple(d for d in ("float32", "bfloat16", "float16") if all(d in s for s in declared))
        if device is not None:
            self.to_placement(str(device))

    def _parts(self) -> dict[str, Scorer]:
        return {"blip-vqa": self.bvqa, "t2i-spatial": self.spatial, "t2i-clip": self.clip}

    def not_applicable(self, item: PromptItem) -> str | None:
        kind, _ = complex_type(item)
        for name in TYPES[kind]:
            reason = self._parts()[name].not_applicable(item)
            if reason:
                return f"{name} (needed by a {kind} prompt): {reason}"
        return None

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        if len(images) != len(batch):
            raise ValueError(f"t2i-complex: {len(images)} images for a batch of {len(batch)} items")
        kinds = [complex_type(item) for item in batch.items]
        parts = self._parts()
        results: dict[str, dict[int, dict]] = {name: {} for name in PARTS}
        skipped = {i: self.not_applicable(item) for i, item in enumerate(batch.items)}
        for name in PARTS:
            wanted = [i for i, (kind, _) in enumerate(kinds) if name in TYPES[kind] and not skipped[i]]
            if wanted:
                sub = batch.subset(wanted)
                for i, row in zip(wanted, parts[name].score(images[wanted], sub)):
                    results[name][i] = row
        rows = []
        for i, (kind, source) in enumerate(kinds):
            row = {"complex_type": kind, "type_from": source}
            if skipped[i]:
                rows.append({"score": 0.0, **row, "not_applicable": skipped[i]})
                continue
            bvqa = results["blip-vqa"][i]
            spatial = results["t2i-spatial"].get(i)
            clip = results["t2i-clip"].get(i)
            value = three_in_one(
                kind,
                float(bvqa["score"]),
                None if spatial is None else float(spatial["score"]),
                None if clip is None else float(clip["cosine"]),
            )
            details = {"blip-vqa": {k: v for k, v in bvqa.items() if k != "questions"}}
            if spatial is not None:
                details["t2i-spatial"] = spatial
            if clip is not None:
                details["t2i-clip"] = clip
            rows.append(
                {
                    "score": min(max(value, 0.0), 1.0),
                    **row,
                    "three_in_one": value,
                    "parts": {
                        name: (float(r["cosine"]) if name == "t2i-clip" else float(r["score"]))
                        for name, r in (("blip-vqa", bvqa), ("t2i-spatial", spatial), ("t2i-clip", clip))
                        if r is not None
                    },
                    "questions": bvqa.get("questions", []),
                    "part_details": details,
                }
            )
        return rows

    def fingerprint(self) -> str:
        from evalkit.fingerprints import fingerprint, source_digest
        from evalkit.contracts import content_hash

        return content_hash(
            {
                "name": self.name,
                "version": self.version,
                "source": source_digest(self),
                "parts": {name: fingerprint(part) for name, part in self._parts().items()},
            },
            length=32,
        )

    @classmethod
    def tiny(cls) -> "T2IComplexScorer":
        """The wrapper over the three parts' tiny random models."""
        from evalkit.scorers.blip_vqa import BlipVQAScorer
        from evalkit.scorers.spatial import T2ISpatialScorer
        from evalkit.scorers.t2i_clip import T2IClipScorer

        return cls(
            parts={
                "blip-vqa": BlipVQAScorer.tiny(),
                "t2i-spatial": T2ISpatialScorer.tiny(structure="complex"),
                "t2i-clip": T2IClipScorer.tiny(structure="complex"),
            }
        )
