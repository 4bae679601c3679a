import math

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch
from evalkit.errors import WeightsNotFoundError
from evalkit.scorers.binding import BindingScorer
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
