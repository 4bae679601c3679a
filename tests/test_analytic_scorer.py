"""The analytic (HRS-style) scorer: segmentation, attribute reading and phrase scores on world renders.

Thresholds sit a little below the measured values (``benchmarks/scorers/analytic_validation.py``): on
clean renders every attribute measured 1.0000 over 3 × 6,000 renders (300 val prompts × 10 seeds,
true and swapped); under blur 0.7 px + noise 6 + gain 0.8 texture measured 0.98–0.99, the rest 1.0.
"""

import importlib.util
from collections import deque

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch
from evalkit.registry import SCORERS
from evalkit.scorers.analytic import AnalyticScorer, degrade, detect, score_phrases
from evalkit.scorers.analytic.segmentation import _label
from evalkit.suites.synth import SynthSuite
from evalkit.world import CATEGORIES, render
from evalkit.world.phrases import parse_phrase
from evalkit.world.scene import Background, Scene, SceneObject
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "analytic_validation", REPO / "benchmarks" / "scorers" / "analytic_validation.py"
)
_validation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_validation)
validate = _validation.validate

FAMILIES = ("color", "shape", "texture", "size")


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


# --------------------------------------------------------------------------- accuracy on renders


@pytest.mark.parametrize("category", CATEGORIES)
def test_clean_renders(category):
    result = validate(category, n_prompts=60, seeds=(42, 43))
    for kind in ("true", "swapped"):
        r = result[kind]
        assert r["detected"] >= 0.99 and r["extra_per_image"] <= 0.01, (kind, r)
        for family in FAMILIES:
            assert r[f"acc_{family}"] >= 0.98, (kind, family, r)
        assert r["phrase_agreement"] >= 0.98, (kind, r)
    assert result["true"]["mean_score"] >= 0.98
    if category == "spatial":  # T2I-CompBench's rule: both objects found (0.25 + 0.25), the place wrong (0)
        assert result["swapped"]["mean_score"] == pytest.approx(0.5, abs=0.01)
    else:
        assert result["swapped"]["mean_score"] <= 0.02  # the swapped scene fails both phrases of the prompt


def test_degraded_renders():
    """Stand-ins for decoder artefacts: blur, extra noise and a contrast loss together."""
    result = validate("texture", n_prompts=40, seeds=(42,), blur=0.7, noise=6.0, gain=0.8)
    r = result["true"]
    assert r["detected"] >= 0.97 and r["extra_per_image"] <= 0.05
    for family in ("color", "shape", "size"):
        assert r[f"acc_{family}"] >= 0.95, (family, r)
    assert r["acc_texture"] >= 0.9, r
    assert r["mean_score"] >= 0.9 and result["swapped"]["mean_score"] <= 0.1


def _scene(objects):
    return Scene("", "", "shape", 0, ("", ""), tuple(objects), Background(35.0, 4.0, 7))


def test_blur_merged_neighbours_are_split():
    """Two same-coloured big squares 1 px apart: blur bridges the gap; the scorer cuts it again."""
    objects = [
        SceneObject("square", "red", "plain", "big", 15, 0, 8, 0),
        SceneObject("circle", "red", "striped", "big", 15, 16, 8, 1),
    ]
    image = degrade(render([_scene(objects)]), blur=1.0)
    found = detect(image).objects(0)
    assert sorted((o["shape"], o["texture"], o["size"], o["color"]) for o in found) == [
        ("circle", "striped", "big", "red"),
        ("square", "plain", "big", "red"),
    ]


def test_small_objects_each_shape_and_texture():
    """Every shape × texture at the smallest size (8 px), three per image (the renderer's limit), read exactly."""
    looks = [
        (s, t)
        for s in ("circle", "square", "triangle", "diamond", "cross", "star")
        for t in ("plain", "striped", "dotted", "checkered")
    ]
    colors = ("pink", "blue", "yellow", "green", "red", "orange", "cyan", "purple")
    corners = ((2, 2), (18, 5), (7, 20))
    scenes = []
    for k in range(0, len(looks), 3):
        objects = [
            SceneObject(s, colors[(k + j) % len(colors)], t, "small", 8, *corners[j], None)
            for j, (s, t) in enumerate(looks[k : k + 3])
        ]
        scenes.append(_scene(objects))
    found = detect(render(scenes))
    for i, scene in enumerate(scenes):
        got = sorted((o["shape"], o["texture"], o["color"], o["size"]) for o in found.objects(i))
        assert got == sorted((o.shape, o.texture, o.color, "small") for o in scene.objects)


# --------------------------------------------------------------------------- rows


@pytest.fixture(scope="module")
def color_batch():
    suite = SynthSuite("color")
    items = suite.items("val")[:12]
    seeds = [42 + i % 3 for i in range(len(items))]
    return suite, items, seeds


def test_rows(color_batch):
    suite, items, seeds = color_batch
    scorer = SCORERS.get("analytic")()
    true_rows = scorer.update(as_tensor(suite.render(items, seeds)), Batch(items, seeds))
    swapped_rows = scorer.update(as_tensor(suite.render(items, seeds, swapped=True)), Batch(items, seeds))
    for item, row in zip(items, true_rows):
        assert row["score"] == 1.0 and row["product"] == 1.0
        assert [q["question"] for q in row["questions"]] == [f"{p}?" for p in item.noun_phrases]
        for q in row["questions"]:
            obj = row["objects"][q["object"]]
            fields, unknown = parse_phrase(q["question"])
            assert not unknown and all(obj[f] == v for f, v in fields)
        for obj in row["objects"]:
            assert set(obj) >= {"color", "shape", "texture", "size", "box", "bbox", "area", "margins"}
    for row in swapped_rows:
        assert row["score"] == 0.0 and all(q["p"] == 0.0 and q["object"] is None for q in row["questions"])
    values = scorer.compute()
    assert values == {"color": pytest.approx(0.5)}


def test_rows_do_not_depend_on_the_batch(color_batch):
    suite, items, seeds = color_batch
    images = as_tensor(suite.render(items, seeds))
    scorer = AnalyticScorer()
    full = scorer.score(images, Batch(items, seeds))
    for i in (0, 5, 11):
        assert scorer.score(images[i : i + 1], Batch(items[i : i + 1], seeds[i : i + 1])) == full[i : i + 1]


def test_other_resolutions(color_batch):
    suite, items, seeds = color_batch
    images = as_tensor(suite.render(items, seeds))
    scorer = AnalyticScorer()
    base = [
        [(o["color"], o["shape"], o["texture"], o["size"]) for o in r["objects"]]
        for r in scorer.score(images, Batch(items, seeds))
    ]
    for scale in (2, 4):
        big = images.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        rows = scorer.score(big, Batch(items, seeds))
        assert [[(o["color"], o["shape"], o["texture"], o["size"]) for o in r["objects"]] for r in rows] == base


def test_phrase_parsing_and_matching():
    assert parse_phrase("a big red striped triangle?") == (
        (("size", "big"), ("color", "red"), ("texture", "striped"), ("shape", "triangle")),
        (),
    )
    assert parse_phrase("a dotted ring") == ((("texture", "dotted"),), ("ring",))
    objects = [
        {"color": "red", "shape": "circle", "texture": "plain", "size": "big"},
        {"color": "blue", "shape": "square", "texture": "dotted", "size": "middle"},
    ]
    questions, accuracy, product = score_phrases(["a red circle", "a big square", "a dotted ring"], objects)
    assert [q["p"] for q in questions] == [1.0, 0.0, 0.0]
    assert questions[0]["object"] == 0 and questions[2]["unknown"] == ["ring"]
    assert accuracy == pytest.approx(1 / 3) and product == 0.0
    assert score_phrases([], objects)[1:] == (1.0, 1.0)


def test_prompt_split_without_noun_phrases():
    images = as_tensor(
        render(
            [
                _scene(
                    [
                        SceneObject("circle", "red", "plain", "big", 14, 2, 2, 0),
                        SceneObject("square", "blue", "dotted", "middle", 11, 18, 18, 1),
                    ]
                )
            ]
        )
    )
    rows = AnalyticScorer().score(images, Batch.from_prompts(["a red circle and a blue dotted square"]))
    assert [q["question"] for q in rows[0]["questions"]] == ["a red circle?", "a blue dotted square?"]
    assert rows[0]["score"] == 1.0


# --------------------------------------------------------------------------- robustness of the machinery


def flood_fill(mask):
    labels = -np.ones(mask.shape, int)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start] >= 0:
            continue
        labels[start] = count
        queue = deque([start])
        while queue:
            n, y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if (
                        0 <= yy < mask.shape[1]
                        and 0 <= xx < mask.shape[2]
                        and mask[n, yy, xx]
                        and labels[n, yy, xx] < 0
                    ):
                        labels[n, yy, xx] = count
                        queue.append((n, yy, xx))
        count += 1
    return labels


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_labelling_matches_flood_fill(density):
    mask = np.random.default_rng(int(density * 100)).random((6, 32, 32)) < density
    (n, y, x), comp = _label(mask)
    reference = flood_fill(mask)[n, y, x]
    pairs = set(zip(comp.tolist(), reference.tolist()))
    assert len(pairs) == len(set(comp.tolist())) == len(set(reference.tolist()))  # the same partition


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (4, 3, 32, 32), (2, 3, 64, 48), (3, 1, 32, 32), (2, 4, 32, 32)])
def test_noise_images_do_not_crash(shape):
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    batch = Batch.from_prompts(
        [
            "a red circle and a blue square",
            "a striped star and a dotted ring",
            "a big triangle and a small circle",
            "a red",
        ][: shape[0]]
        * 2
    )
    batch = Batch(batch.items[: shape[0]], batch.seeds[: shape[0]])
    for x in (images, images.round(), torch.full(shape, float("nan")), torch.zeros(shape)):
        rows = AnalyticScorer().score(x, batch)
        assert len(rows) == shape[0]
        for row in rows:
            assert 0.0 <= row["score"] <= 1.0 and 0.0 <= row["product"] <= 1.0
            assert all(q["p"] in (0.0, 1.0) for q in row["questions"])


def test_degenerate_images():
    x = torch.zeros(4, 3, 32, 32)
    x[0, 0] = 1.0  # a uniform colour: no object
    x[1, :, :, :16] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # half the image
    x[2, 1, ::2] = 1.0  # stripes
    x[3, 0] = torch.linspace(0, 1, 32)  # a gradient
    found = detect(x)
    assert len(found.image) <= 4 * 6
    assert AnalyticScorer().score(torch.zeros(0, 3, 32, 32), Batch([], [])) == []


def _detected(shape, x, y, w, h, color="red"):
    return {"color": color, "shape": shape, "texture": "plain", "size": "big", "bbox": [x, y, w, h]}


def test_spatial_prompts_apply_t2i_compbench_rules_to_the_detected_boxes():
    """Hand-computed cases: boxes of a 32-px image go to UniDet's 479-px frame; the score is
    0.25 + 0.25 + position / 2 with both objects found, else at most 0.25 and so 0."""
    from evalkit.scorers.analytic import score_relation

    left = [_detected("circle", 0, 10, 10, 10), _detected("square", 20, 12, 10, 10)]
    row = score_relation("left", ["a circle", "a square"], left)
    assert row["position"] == 1.0 and row["score"] == 1.0 and row["product"] == 1.0
    assert (
        row["relation"] == "on the left of" and row["questions"][-1]["question"] == "a circle on the left of a square?"
    )
    wrong = score_relation("right", ["a circle", "a square"], left)
    assert wrong["position"] == 0.0 and wrong["score"] == 0.5 and wrong["product"] == 0.0
    # |dy| > |dx|: neither left nor right, but "top" holds for the upper object
    stacked = [_detected("circle", 10, 0, 10, 10), _detected("square", 12, 20, 10, 10)]
    assert score_relation("left", ["a circle", "a square"], stacked)["position"] == 0.0
    assert score_relation("top", ["a circle", "a square"], stacked)["score"] == 1.0
    assert score_relation("bottom", ["a square", "a circle"], stacked)["score"] == 1.0
    # overlapping boxes: IoU 0.25 ≥ 0.1 → position 0.1 / IoU = 0.4, score 0.5 + 0.2
    overlap = [_detected("circle", 0, 0, 10, 10), _detected("square", 6, 0, 10, 10)]
    row = score_relation("left", ["a circle", "a square"], overlap)
    assert row["position"] == pytest.approx(0.1 / (40 / 160)) and row["score"] == pytest.approx(0.7)
    # one object missing: 0.25 < 0.5 → 0, and no position
    missing = score_relation("left", ["a circle", "a star"], left)
    assert missing["position"] is None and missing["score"] == 0.0
    # one object cannot stand for both phrases
    assert score_relation("left", ["a circle", "a circle"], left[:1])["score"] == 0.0


def test_spatial_items_are_scored_by_the_rule_through_the_scorer():
    suite = SynthSuite("spatial")
    items = suite.load_items("val")[:12]
    seeds = [7] * len(items)
    scorer = AnalyticScorer()
    rows = scorer.score(as_tensor(suite.render(items, seeds)), Batch(items, seeds))
    assert all(r["score"] == 1.0 and r["position"] == 1.0 for r in rows)
    rows = scorer.score(as_tensor(suite.render(items, seeds, swapped=True)), Batch(items, seeds))
    assert all(r["score"] == 0.5 and r["position"] == 0.0 for r in rows)
