import math

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch
from evalkit.errors import WeightsNotFoundError
from evalkit.scorers.binding import BindingScorer
from evalkit.suites.synth import SynthSuite
from evalkit.train.world_scorer import KINDS, ScorerTrainConfig, draw_questions, label_of, question, train_scorer
from evalkit.world import render, sample_pairs
from evalkit.world.models.tensors import images_to_tensor


def test_question_labels_follow_the_scene():
    _, scenes = sample_pairs("all", 50, seed=3, split="train")
    rng = np.random.default_rng(0)
    for scene in scenes:
        assert label_of(scene, scene.noun_phrases[0]) and label_of(scene, scene.noun_phrases[1])
        phrase, label = question(scene, "absent", rng)
        assert not label and phrase.split()[-1] not in {o.shape for o in scene.objects}
        for kind in KINDS:
            phrase, label = question(scene, kind, rng)
            assert label == label_of(scene, phrase) and phrase.startswith(("a ", "an "))
    idx, phrases, labels, kinds = draw_questions(scenes, 64, np.random.default_rng(1))
    assert labels.mean() == 0.5 and set(kinds) <= set(KINDS) and len(phrases) == len(idx) == 64


def test_quick_training_ships_a_scorer_that_keeps_every_question(tmp_path):
    final = train_scorer(tmp_path / "run", ScorerTrainConfig.quick(), progress=False)
    scorer = BindingScorer(path=final)
    captions, scenes = sample_pairs("color", 3, seed=5, split="val")
    images = images_to_tensor(render(scenes))
    batch = Batch.from_prompts(captions, seeds=[42] * 3, category="color")
    rows = scorer.score(images, batch)
    assert len(rows) == 3
    for row, caption in zip(rows, captions):
        assert [q["question"] for q in row["questions"]] == [f"{p}?" for p in caption.split(" and ")]
        assert row["score"] == pytest.approx(math.prod(q["p"] for q in row["questions"]), abs=1e-5)
        assert all(0.0 < q["p"] < 1.0 for q in row["questions"])
    odd = scorer.score(images[:1], Batch.from_prompts(["a red zebra"], seeds=[42]))
    assert odd[0]["questions"][0]["unknown"] == ["zebra"]
    # batch-independent: an image's probabilities do not depend on its neighbours
    alone = scorer.score(images[1:2], Batch(batch.items[1:2], [42]))
    assert alone[0]["questions"] == rows[1]["questions"]


def test_missing_weights_name_the_folder(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path)):
        BindingScorer(path=tmp_path)


def test_folded_batch_norm_gives_the_model_s_answers():
    """The scorer's inference trunk (batch norm folded into the convolutions) computes the trained model."""

    from evalkit.scorers.binding import BindingScorer

    scorer = BindingScorer()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = scorer.model.word_logits(images)
        folded = scorer.word_logits(images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scorer._trunk.modules())
    torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def spatial_renders():
    suite = SynthSuite("spatial")
    items = suite.load_items("val")[:60]
    seeds = [42] * len(items)
    true = images_to_tensor(suite.render(items, seeds))
    swapped = images_to_tensor(suite.render(items, seeds, swapped=True))
    return items, seeds, true, swapped


def test_relation_questions_locate_both_phrases_and_apply_the_position_rule(spatial_renders):
    """The shipped scorer on ground-truth renders: the relation holds on the true render, not on the swapped one."""
    items, seeds, true, swapped = spatial_renders
    scorer = BindingScorer()
    rows_true = scorer.score(true, Batch(items, seeds))
    rows_swapped = scorer.score(swapped, Batch(items, seeds))
    for item, row, other in zip(items, rows_true, rows_swapped):
        relation = row["questions"][-1]
        assert relation["question"] == f"{item.prompt}?" and len(row["questions"]) == 3
        assert row["score"] == pytest.approx(math.prod(q["p"] for q in row["questions"]), abs=1e-5)
        assert other["questions"][-1]["p"] in (0.0, 1.0)
    p_true = np.mean([r["questions"][-1]["p"] for r in rows_true])
    p_swapped = np.mean([r["questions"][-1]["p"] for r in rows_swapped])
    assert p_true >= 0.97 and p_swapped <= 0.03, (p_true, p_swapped)
    # the located points are the named objects' centres, to within a few pixels
    from evalkit.world import sample_scene

    for item, row in zip(items[:20], rows_true):
        scene = sample_scene(SynthSuite.caption_spec(item), 42)
        for obj, xy in zip(scene.objects[:2], row["questions"][-1]["located"]):
            assert abs(xy[0] - (obj.x + obj.size_px / 2)) < 4 and abs(xy[1] - (obj.y + obj.size_px / 2)) < 4


def test_locate_is_the_softmax_weighted_centre():
    from evalkit.scorers.binding import BindingVQA

    per_location = torch.full((1, 8, 8), -50.0)
    per_location[0, 2, 5] = 0.0  # one location: its centre, (5.5, 2.5) cells of 4 px
    assert BindingVQA.locate(per_location).tolist() == [[22.0, 10.0]]
    per_location[0, 2, 6] = 0.0  # two equal locations: halfway
    assert BindingVQA.locate(per_location).tolist() == [[24.0, 10.0]]


def test_prompts_without_a_relation_keep_their_phrase_questions_only(spatial_renders):
    items, seeds, true, _ = spatial_renders
    scorer = BindingScorer()
    batch = Batch.from_prompts(["a circle and a square"], seeds=[42], category="color")
    row = scorer.score(true[:1], batch)[0]
    assert [q["question"] for q in row["questions"]] == ["a circle?", "a square?"]
    # an ad-hoc spatial prompt (no caption spec) is read from its words
    batch = Batch.from_prompts([items[0].prompt], seeds=[42], category="spatial")
    row = scorer.score(true[:1], batch)[0]
    assert row["questions"][-1]["question"] == f"{items[0].prompt}?" and row["questions"][-1]["p"] == 1.0
