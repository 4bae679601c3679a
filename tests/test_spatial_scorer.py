"""t2i-spatial: T2I-CompBench's 2-D spatial rules (hand-computed boxes, every branch), the prompt parser, and the
scorer on a tiny random OWLv2 saved in the public layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from evalkit.contracts import Batch, PromptItem
from evalkit.errors import ConfigMismatchError, EvalkitError, WeightsNotFoundError
from evalkit.scorers import t2i_text
from evalkit.scorers.spatial import (
    DETECTION_THRESHOLD,
    T2ISpatialScorer,
    best_detection,
    image_score,
    iou,
    position_score,
    unidet_frame,
)

HAS_SPACY = t2i_text.load_spacy()[0] is not None
needs_spacy = pytest.mark.skipif(not HAS_SPACY, reason="spaCy (requirements.lock) is not installed here")


def item(prompt, category="spatial", index=0, **meta):
    return PromptItem(prompt, category, "val", f"t-{index}", meta=meta)


# --------------------------------------------------------------------------- position rules


A = (0, 0, 10, 10)  # centre (5, 5)


@pytest.mark.parametrize("relation", ["next to", "on side of", "near"])
def test_near_relations_by_centre_distance(relation):
    assert position_score(relation, A, (200, 100, 210, 110)) == 1  # dx 200, dy 100 < 150
    assert position_score(relation, A, (100, 300, 110, 310)) == 1  # dx 100 < 150
    assert position_score(relation, A, (300, 400, 310, 410)) == pytest.approx(150 / 400)  # max(300, 400)
    assert position_score(relation, A, (150, 150, 160, 160)) == pytest.approx(1.0)  # dx = dy = 150: 150/150
    assert position_score(relation, A, A) == 1  # overlapping boxes are near


def test_left_and_right():
    right_of_a = (100, 0, 110, 10)  # box 2 to the right: dx = 100 > 0, dy = 0, IoU 0
    assert position_score("on the left of", A, right_of_a) == 1  # obj1 is left of obj2
    assert position_score("on the right of", A, right_of_a) == 0  # wrong direction
    assert position_score("on the right of", right_of_a, A) == 1
    assert position_score("on the left of", right_of_a, A) == 0
    # the right direction but |dx| <= |dy|: 0
    below_right = (10, 100, 20, 110)  # dx 10, dy 100
    assert position_score("on the left of", A, below_right) == 0
    assert position_score("on the left of", A, (100, 100, 110, 110)) == 0  # |dx| == |dy|: not >
    # IoU >= 0.1: 0.1 / IoU
    big, shifted = (0, 0, 100, 100), (50, 0, 150, 100)  # inter 5000, union 15000: IoU 1/3, dx 50
    assert iou(big, shifted) == pytest.approx(1 / 3)
    assert position_score("on the left of", big, shifted) == pytest.approx(0.1 / (1 / 3))
    assert position_score("on the right of", shifted, big) == pytest.approx(0.3)
    # IoU exactly 0.1 takes the >= branch: 0.1 / 0.1
    edge = (8, 0, 20, 10)  # area 120, inter 20, union 200
    assert iou(A, edge) == 0.1 and position_score("on the left of", A, edge) == 1.0
    # IoU just under 0.1: 1
    assert position_score("on the left of", A, (8.5, 0, 20.5, 10)) == 1


def test_top_and_bottom():
    below = (0, 100, 10, 110)  # image y grows downwards: box 2 below box 1, dy = 100 > 0
    assert position_score("on the top of", A, below) == 1  # obj1 above obj2
    assert position_score("on the bottom of", A, below) == 0
    assert position_score("on the bottom of", below, A) == 1
    assert position_score("on the top of", below, A) == 0
    assert position_score("on the top of", A, (100, 10, 110, 20)) == 0  # dy 10 < dx 100
    tall, lower = (0, 0, 100, 100), (0, 50, 100, 150)  # IoU 1/3, dy 50
    assert position_score("on the top of", tall, lower) == pytest.approx(0.3)
    assert position_score("on the bottom of", lower, tall) == pytest.approx(0.3)


def test_relations_without_a_branch_score_zero():
    below = (0, 100, 10, 110)
    assert position_score("on top of", A, below) == 0  # in the relation list, but determine_position has no branch
    assert position_score(None, A, below) == 0
    assert position_score("on the top of", (0, 0, 0, 0), (0, 0, 0, 0)) == 0  # empty boxes: IoU 0, dy 0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_image_score_branches():
    left, right = ((0, 0, 10, 10), 0.8), ((100, 0, 110, 10), 0.6)
    # both found: 0.25·c1 + 0.25·c2 + position/2
    assert image_score("on the left of", left, right) == pytest.approx(0.2 + 0.15 + 0.5)
    big, shifted = ((0, 0, 100, 100), 0.8), ((50, 0, 150, 100), 0.6)  # position 0.3: 0.35 + 0.15 = 0.5, kept
    assert image_score("on the left of", big, shifted) == pytest.approx(0.5)
    # wrong direction: 0.35 < 0.5 -> 0
    assert image_score("on the right of", left, right) == 0
    # both found with confidence 1 and position 0: exactly 0.5, kept (the floor is "< 0.5")
    assert image_score("on the right of", (left[0], 1.0), (right[0], 1.0)) == 0.5
    # one found: 0.25·conf < 0.5 -> 0; none found: 0
    assert image_score("on the left of", left, None) == 0
    assert image_score("on the left of", None, right) == 0
    assert image_score("on the left of", None, None) == 0
    # near, far apart: 0.25·(0.9 + 0.9) + (150/400)/2 = 0.6375
    assert image_score("near", ((0, 0, 10, 10), 0.9), ((300, 400, 310, 410), 0.9)) == pytest.approx(0.45 + 0.1875)
    assert image_score("on top of", ((0, 0, 10, 10), 0.9), ((0, 100, 10, 110), 0.9)) == 0  # position 0: 0.45


def test_best_detection_threshold_and_choice():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0], [4.0, 4.0, 5.0, 5.0]])
    assert best_detection(boxes, torch.tensor([0.3, 0.7, 0.7])) == (
        (2.0, 2.0, 3.0, 3.0),
        pytest.approx(0.7),
    )  # first max
    assert best_detection(boxes, torch.tensor([0.05, 0.1, 0.02])) is None  # not above 0.1 (strict, as detectron2)
    assert best_detection(boxes, torch.tensor([0.05, 0.11, 0.02]))[1] == pytest.approx(0.11)
    assert best_detection(boxes, torch.tensor([0.4, 0.2, 0.3]), threshold=0.5) is None
    assert best_detection(torch.empty(0, 4), torch.empty(0)) is None
    assert DETECTION_THRESHOLD == 0.1


def test_unidet_frame_is_torchvision_resize_479_max_480():
    assert unidet_frame(512, 512) == (479, 479)
    assert unidet_frame(256, 256) == (479, 479)
    assert unidet_frame(512, 768) == (320, 480)  # the long side would be 718 > 480
    assert unidet_frame(100, 120) == (400, 480)
    from PIL import Image
    from torchvision import transforms

    resize = transforms.Resize(size=479, max_size=480)  # experts/model_bank.py, task obj_detection
    for height, width in [(512, 512), (256, 256), (480, 481), (300, 200), (64, 1000), (479, 479)]:
        w, h = resize(Image.new("RGB", (width, height))).size
        assert unidet_frame(height, width) == (h, w), (height, width)


# --------------------------------------------------------------------------- the prompt


def test_relation_is_the_first_of_the_list_as_a_substring():
    assert t2i_text.find_relation("a giraffe next to a lamp") == "next to"
    assert t2i_text.find_relation("a mouse on side of a key") == "on side of"
    assert t2i_text.find_relation("a cat on the top of a box") == "on the top of"
    assert t2i_text.find_relation("The hat was on top of the rack.") == "on top of"
    assert t2i_text.find_relation("a car nearby a tree") == "near"  # a substring, as T2I-CompBench
    assert t2i_text.find_relation("a dog next to a cat near a tree") == "next to"  # list order, not prompt order
    assert t2i_text.find_relation("a red car and a blue bench") is None
    assert t2i_text.find_relation("A cat Next to a dog") is None  # case-sensitive


def test_rules_parser_simple_and_person():
    parsed = t2i_text.parse_spatial("a girl on the top of a frog", "simple", "rules")
    assert parsed.relation == "on the top of" and parsed.parsed == ("girl", "frog")
    assert parsed.objects == ("person", "frog") and parsed.parser == "rules-1" and parsed.reason is None
    assert t2i_text.parse_spatial("an apple near a woman", "simple", "rules").objects == ("apple", "person")
    none = t2i_text.parse_spatial("a red car and a blue bench", "simple", "rules")
    assert none.objects is None and "no spatial relation" in none.reason


def test_rules_parser_complex():
    parsed = t2i_text.parse_spatial("The red hat was on top of the brown coat rack.", "complex", "rules")
    assert parsed.objects == ("hat", "coat") and parsed.relation == "on top of"  # the first noun after, as spaCy's
    many = t2i_text.parse_spatial("a cat next to a dog near a tree", "complex", "rules")  # four objects: none
    assert many.objects is None and "4 object(s)" in many.reason


@needs_spacy
def test_spacy_parser_as_t2i_compbench():
    parsed = t2i_text.parse_spatial("a girl on the top of a frog", "simple", "spacy")
    assert parsed.parsed == ("girl", "frog") and parsed.objects == ("person", "frog")
    assert parsed.parser.startswith("spacy:")
    # complex: the nearest NOUN before "on top of" and the first NOUN after it (not the phrase's head)
    assert t2i_text.parse_spatial("The red hat was on top of the brown coat rack.", "complex", "spacy").objects == (
        "hat",
        "coat",
    )


def test_parser_choice(monkeypatch):
    monkeypatch.setenv(t2i_text.PARSER_ENV, "rules")
    assert t2i_text.parser_name() == "rules-1"
    monkeypatch.setenv(t2i_text.PARSER_ENV, "bogus")
    with pytest.raises(ValueError, match="EVALKIT_T2I_PARSER"):
        t2i_text.parser_name()
    monkeypatch.delenv(t2i_text.PARSER_ENV)
    assert t2i_text.parser_name("auto") == ("rules-1" if not HAS_SPACY else t2i_text.load_spacy()[1])
    if not HAS_SPACY:
        with pytest.raises(EvalkitError, match="spaCy"):
            t2i_text.parser_name("spacy")


@pytest.mark.skipif(not os.environ.get("EVALKIT_PROMPTS_DIR"), reason="EVALKIT_PROMPTS_DIR is not set")
def test_every_spatial_prompt_has_a_relation_and_two_objects():
    prompts = []
    for name in ("spatial_val.txt", "spatial_train.txt"):
        text = (Path(os.environ["EVALKIT_PROMPTS_DIR"]) / name).read_text(encoding="utf-8")
        prompts += [line.strip() for line in text.split("\n") if line.strip()]
    assert len(prompts) == 1000
    for prompt in prompts:
        rules = t2i_text.parse_spatial(prompt, "simple", "rules")
        assert rules.reason is None, prompt
        if HAS_SPACY:  # the rules give spaCy's first and last NOUN on every spatial prompt
            assert t2i_text.parse_spatial(prompt, "simple", "spacy").parsed == rules.parsed, prompt


# --------------------------------------------------------------------------- the scorer (tiny OWLv2)


@pytest.fixture(scope="module")
def owlv2_dir(tmp_path_factory):
    return T2ISpatialScorer.write_tiny(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="module")
def scorer(owlv2_dir):
    return T2ISpatialScorer(owlv2_dir, parser="rules")


def test_public_layout_and_loading(owlv2_dir, scorer):
    names = {p.name for p in owlv2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"} <= names
    assert scorer.image_processor_class == "Owlv2ImageProcessor" and scorer.device.type == "cpu"
    assert scorer.fingerprint() == T2ISpatialScorer(owlv2_dir, parser="rules").fingerprint()


def test_detect_shapes_and_boxes_inside_the_image(scorer):
    image = (torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8).numpy()
    boxes, scores = scorer.detect(image, ["cat", "dog"])
    assert boxes.shape == (16, 4) and scores.shape == (16, 2)  # 32 px / 8-px patches: 16 boxes
    assert (boxes >= 0).all() and (boxes <= 40).all() and ((scores >= 0) & (scores <= 1)).all()


def test_rows_details_not_applicable_and_batch_independence(scorer):
    items = [
        item("a giraffe next to a lamp", index=0),
        item("a girl on the top of a frog", index=1),
        item("a red car and a blue bench", index=2),
    ]
    batch = Batch(items, [42, 43, 44])
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    rows = scorer.update(images, batch)
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert rows[1]["objects"] == ["person", "frog"] and rows[1]["relation"] == "on the top of"
    assert set(rows[1]["detections"]) == {"person", "frog"} and rows[1]["frame"]["width"] == 479
    assert rows[0]["parser"] == "rules-1" and rows[0]["detector"] == "owlv2"
    assert rows[2]["score"] == 0.0 and "no spatial relation" in rows[2]["not_applicable"]
    assert scorer.not_applicable(items[2]) == rows[2]["not_applicable"] and scorer.not_applicable(items[0]) is None
    alone = scorer.score(images[1:2], batch.subset([1]))
    assert alone[0]["score"] == pytest.approx(rows[1]["score"], abs=1e-6)
    assert alone[0]["detections"] == rows[1]["detections"]


def test_score_image_applies_the_rules_in_unidet_frame(scorer, monkeypatch):
    """Boxes 100 px apart in a 256-px image are 187 px apart in UniDet's 479-px frame: 'near' is then 150/187."""
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [100.0, 100.0, 120.0, 120.0]])
    scores = torch.tensor([[0.9, 0.05], [0.05, 0.7]])
    monkeypatch.setattr(scorer, "detect", lambda image, objects: (boxes, scores))
    image = torch.zeros(256, 256, 3, dtype=torch.uint8).numpy()
    parsed = t2i_text.parse_spatial("a cat near a dog", "simple", "rules")
    row = scorer.score_image(image, parsed)
    distance = 100 * 479 / 256
    assert row["position"] == pytest.approx(150 / distance)
    assert row["score"] == pytest.approx(0.25 * 0.9 + 0.25 * 0.7 + 150 / distance / 2)
    assert row["detections"]["cat"]["box"] == pytest.approx([0, 0, 20 * 479 / 256, 20 * 479 / 256], abs=0.01)
    pixels = T2ISpatialScorer.__new__(T2ISpatialScorer)
    pixels.__dict__.update(scorer.__dict__, frame="pixels", detect=lambda image, objects: (boxes, scores))
    assert pixels.score_image(image, parsed)["position"] == 1  # 100 px < 150 px
    # one object below the detection threshold: one found -> 0
    monkeypatch.setattr(scorer, "detect", lambda image, objects: (boxes, torch.tensor([[0.9, 0.05], [0.05, 0.08]])))
    row = scorer.score_image(image, parsed)
    assert row["detections"]["dog"] is None and row["score"] == 0 and row["position"] is None
    # "on top of": scored 0 as written, or as "on the top of" when asked (the cat above the dog)
    above = torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 100.0, 20.0, 120.0]])
    monkeypatch.setattr(scorer, "detect", lambda image, objects: (above, scores))
    on_top = t2i_text.parse_spatial("The cat was on top of the dog.", "complex", "rules")
    assert on_top.objects == ("cat", "dog") and scorer.score_image(image, on_top)["score"] == 0
    fixed = T2ISpatialScorer.__new__(T2ISpatialScorer)
    fixed.__dict__.update(scorer.__dict__, relation_rules="top-of", detect=lambda image, objects: (above, scores))
    assert fixed.score_image(image, on_top)["score"] == pytest.approx(0.25 * 0.9 + 0.25 * 0.7 + 0.5)


def test_same_object_twice_is_one_query_one_box(scorer, monkeypatch):
    seen = []
    monkeypatch.setattr(
        scorer,
        "detect",
        lambda image, objects: (
            seen.append(list(objects)) or (torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.tensor([[0.9]]))
        ),
    )
    row = scorer.score_image(
        torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(),
        t2i_text.parse_spatial("a dog next to a dog", "simple", "rules"),
    )
    assert seen == [["dog"]] and row["score"] == pytest.approx(0.45 + 0.5)


def test_complex_structure_for_complex_items(scorer):
    complex_item = item("The red hat was on top of the brown coat rack.", category="complex")
    assert scorer.structure_of(complex_item) == "complex" and scorer.structure_of(item("a cat near a dog")) == "simple"
    assert scorer.parse(complex_item).objects == ("hat", "coat")


def test_wrong_kind_and_incomplete_folders(tmp_path, owlv2_dir, monkeypatch):
    from evalkit.scorers.t2i_clip import T2IClipScorer

    clip_dir = T2IClipScorer.write_tiny(tmp_path / "clip")
    with pytest.raises(
        ConfigMismatchError, match=r"holds a 'clip' model .*not 'owlv2'.*google/owlv2-base-patch16-ensemble"
    ):
        T2ISpatialScorer(clip_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match="missing config.json, preprocessor_config.json"):
        T2ISpatialScorer(empty)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        T2ISpatialScorer(tmp_path / "nowhere")
    monkeypatch.delenv("EVALKIT_OWLV2_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError, match="EVALKIT_OWLV2_DIR"):
        T2ISpatialScorer()
    monkeypatch.setenv("EVALKIT_OWLV2_DIR", str(owlv2_dir))
    assert T2ISpatialScorer(parser="rules").path == str(owlv2_dir)


def test_placement_casts_and_scores_in_bfloat16(owlv2_dir):
    from evalkit.placement import place

    scorer = T2ISpatialScorer(owlv2_dir, parser="rules")
    record = place(scorer, "cpu", "bfloat16", "scorer", scorer.name)
    assert record["dtype"] == "bfloat16" and scorer.dtype == torch.bfloat16
    rows = scorer.score(torch.rand(1, 3, 32, 32), Batch([item("a cat near a dog")], [42]))
    assert 0.0 <= rows[0]["score"] <= 1.0
    assert rows[0]["position"] is None or 0 <= rows[0]["position"] <= 1
