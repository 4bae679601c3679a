"""How accurate the analytic scorer is on ground-truth renders, where every answer is known.

The thresholds of ``tests/test_analytic_scorer.py`` sit a little below what this measures; degrading
the renders (blur, noise, contrast) stands in for decoder artefacts. Kept out of the library: it is a
measurement of the scorer, not part of scoring.

    python -m evalkit.bootstrap python benchmarks/scorers/analytic_validation.py \\
        [--categories color shape texture] [--prompts 300] [--seeds 42 43] [--blur 0.7 --noise 6 --gain 0.8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import numpy as np

from evalkit.scorers.analytic import AnalyticScorer, degrade, score_phrases
from evalkit.scorers.analytic.scorer import score_relation
from evalkit.scorers.analytic.templates import _template_bank

_FAMILY_NAMES = ("color", "shape", "texture", "size")


def _match(gt: Sequence, boxes: np.ndarray) -> dict[int, int]:
    """Greedy one-to-one matching of ground-truth objects to detected boxes by IoU ≥ 0.5."""
    pairs = []
    for g, obj in enumerate(gt):
        for d, (x, y, s) in enumerate(boxes):
            ix = max(0, min(obj.x + obj.size_px, x + s) - max(obj.x, x))
            iy = max(0, min(obj.y + obj.size_px, y + s) - max(obj.y, y))
            inter = ix * iy
            iou = inter / (obj.size_px**2 + s * s - inter)
            if iou >= 0.5:
                pairs.append((-iou, g, d))
    out: dict[int, int] = {}
    used = set()
    for _, g, d in sorted(pairs):
        if g not in out and d not in used:
            out[g] = d
            used.add(d)
    return out


def validate(
    category: str,
    n_prompts: int = 300,
    seeds: Sequence[int] = (42, 43),
    split: str = "val",
    scorer: AnalyticScorer | None = None,
    keep_failures: int = 20,
    **degradation: Any,
) -> dict:
    """Accuracy of the scorer on ground-truth renders of one category.

    Renders (prompt, seed) for the first ``n_prompts`` prompts of ``split`` and each seed, and the
    attribute-swapped scene of the same pair (optionally degraded: keyword arguments of
    :func:`degrade`). Reports detection (each scene object found once, by box IoU ≥ 0.5; extra
    detections), per-attribute accuracy of matched objects (color, shape, texture, size class), the
    most frequent confusions, and the phrase-level agreement of the scorer's p with the ground truth
    (does some scene object satisfy the phrase?) on true renders and on swapped renders scored
    against the original prompt, whose phrases the swapped scene does not satisfy.
    """
    from evalkit.world import render, sample_scene, split_prompts

    scorer = scorer or AnalyticScorer()
    _template_bank()  # built once (≈0.1 s), outside the timing
    prompts = split_prompts(category, split)[:n_prompts]
    pairs = [(p.spec, s) for p in prompts for s in seeds]
    result: dict[str, Any] = {"category": category, "split": split, "images": len(pairs), "degradation": degradation}
    failures: list[dict] = []
    for kind in ("true", "swapped"):
        scenes = [sample_scene(spec.swapped() if kind == "swapped" else spec, seed) for spec, seed in pairs]
        images = render(scenes)
        if degradation:
            images = degrade(images, **degradation)
        start = time.perf_counter()
        found = scorer.detect(images)
        elapsed = time.perf_counter() - start
        result[kind] = _measure(kind, pairs, scenes, found, elapsed, failures, keep_failures)
    result["failures"] = failures
    return result


def _measure(
    kind: str, pairs: list, scenes: list, found, elapsed: float, failures: list[dict], keep_failures: int
) -> dict:
    """Detection, attribute and phrase accuracy of one kind of render; failures are appended in place."""
    counts = {"objects": 0, "found": 0, "extra": 0, "color": 0, "shape": 0, "texture": 0, "size": 0, "all": 0}
    confusions: dict[str, int] = {}
    phrase_agree = phrase_total = 0
    scores = []
    for i, ((spec, seed), scene) in enumerate(zip(pairs, scenes)):
        objects = found.objects(i)
        matched = _match(scene.objects, np.array([o["box"] for o in objects]).reshape(-1, 3))
        counts["objects"] += len(scene.objects)
        counts["found"] += len(matched)
        counts["extra"] += len(objects) - len(matched)
        wrong = _compare_attributes(scene, objects, matched, counts, confusions)
        missed = [g for g in range(len(scene.objects)) if g not in matched]
        if spec.relation is not None:  # spatial: T2I-CompBench's rule on the detected boxes
            row = score_relation(spec.relation, spec.noun_phrases, objects)
            questions, accuracy = row["questions"][:2], row["score"]
        else:
            questions, accuracy, _ = score_phrases(spec.noun_phrases, objects)
        scores.append(accuracy)
        truth_p = [float(any(o.satisfies(phrase) for o in scene.objects)) for phrase in spec.objects]
        agree = [q["p"] == t for q, t in zip(questions, truth_p)]
        phrase_agree += sum(agree)
        phrase_total += len(agree)
        if (wrong or missed or len(objects) > len(matched) or not all(agree)) and len(failures) < keep_failures:
            failures.append(
                {
                    "kind": kind,
                    "caption": spec.text,
                    "seed": seed,
                    "index": i,
                    "wrong": wrong,
                    "missed": missed,
                    "extra": len(objects) - len(matched),
                    "phrases_disagree": [q["question"] for q, a in zip(questions, agree) if not a],
                    "objects": objects,
                }
            )
    n_found = max(counts["found"], 1)
    return {
        "detected": counts["found"] / max(counts["objects"], 1),
        "extra_per_image": counts["extra"] / max(len(pairs), 1),
        **{f"acc_{f}": counts[f] / n_found for f in (*_FAMILY_NAMES, "all")},
        "phrase_agreement": phrase_agree / max(phrase_total, 1),
        "mean_score": float(np.mean(scores)) if scores else float("nan"),
        "images_per_s": len(pairs) / max(elapsed, 1e-9),
        "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:10]),
    }


def _compare_attributes(
    scene, objects: list[dict], matched: dict[int, int], counts: dict[str, int], confusions: dict[str, int]
) -> list[dict]:
    """Count the matched objects' correct attributes into ``counts`` and their confusions; the wrong calls."""
    wrong = []
    for g, d in matched.items():
        truth, got = scene.objects[g], objects[d]
        ok_all = True
        for family, true_value in zip(_FAMILY_NAMES, (truth.color, truth.shape, truth.texture, truth.size_class)):
            ok = got[family] == true_value
            counts[family] += ok
            ok_all &= ok
            if not ok:
                wrong.append(
                    {"object": g, "family": family, "truth": true_value, "got": got[family], "size_px": truth.size_px}
                )
                key = f"{family}: {true_value} -> {got[family]} ({truth.size_px} px)"
                confusions[key] = confusions.get(key, 0) + 1
        counts["all"] += ok_all
    return wrong


def _dump_failures(result: dict, out_dir: str, scale: int = 8) -> list[str]:
    """Write each kept failure as an upscaled PNG (``{category}-{kind}-{index}.png``)."""
    from pathlib import Path

    from PIL import Image

    from evalkit.world import parse_caption, render, sample_scene

    paths = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for f in result["failures"]:
        spec = parse_caption(f["caption"])
        scene = sample_scene(spec.swapped() if f["kind"] == "swapped" else spec, f["seed"])
        image = render([scene])
        if result.get("degradation"):
            image = degrade(image, **result["degradation"])
        big = np.kron(image[0], np.ones((scale, scale, 1), np.uint8))
        path = Path(out_dir) / f"{result['category']}-{f['kind']}-{f['index']}.png"
        Image.fromarray(big).save(path)
        paths.append(str(path))
    return paths


def _table(results: list[dict]) -> str:
    head = (
        "category",
        "renders",
        "detected",
        "extra/img",
        "color",
        "shape",
        "texture",
        "size",
        "all",
        "phrase agr.",
        "mean score",
        "img/s",
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        for kind in ("true", "swapped"):
            k = r[kind]
            lines.append(
                " | ".join(
                    [
                        f"{r['category']}",
                        f"{kind} ({r['images']})",
                        f"{k['detected']:.4f}",
                        f"{k['extra_per_image']:.4f}",
                        *(f"{k['acc_' + f]:.4f}" for f in ("color", "shape", "texture", "size", "all")),
                        f"{k['phrase_agreement']:.4f}",
                        f"{k['mean_score']:.4f}",
                        f"{k['images_per_s']:.0f}",
                    ]
                )
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/scorers/analytic_validation.py",
        description="Measure the analytic scorer on ground-truth renders.",
    )
    parser.add_argument("--categories", nargs="+", default=["color", "shape", "texture"])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--split", default="val")
    parser.add_argument("--failures", default=None, help="write failure PNGs (×8) to this directory")
    parser.add_argument("--json", default=None, help="write the full results (with failures) as JSON here")
    parser.add_argument("--blur", type=float, default=0.0, help="degrade renders: Gaussian blur std (px)")
    parser.add_argument("--noise", type=float, default=0.0, help="degrade renders: extra pixel noise std (0-255)")
    parser.add_argument("--gain", type=float, default=1.0, help="degrade renders: contrast gain")
    parser.add_argument("--show", type=int, default=5, help="failures to print per category")
    args = parser.parse_args(argv)
    degradation = {
        k: v
        for k, v in (("blur", args.blur), ("noise", args.noise), ("gain", args.gain))
        if v != (1.0 if k == "gain" else 0.0)
    }
    results = [validate(c, args.prompts, args.seeds, args.split, **degradation) for c in args.categories]
    print(
        f"renders: first {args.prompts} {args.split} prompts x seeds {args.seeds}; degradation: {degradation or 'none'}"
    )
    print(_table(results))
    for r in results:
        for kind in ("true", "swapped"):
            if r[kind]["confusions"]:
                print(f"{r['category']} {kind} confusions: {r[kind]['confusions']}")
        for f in r["failures"][: args.show]:
            print(json.dumps({"category": r["category"], **{k: v for k, v in f.items() if k != "objects"}}))
        if args.failures:
            _dump_failures(r, args.failures)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
