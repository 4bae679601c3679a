"""The BLIP-VQA scorer on a tiny random BLIP written to disk (no download): row shape, products,
batch-independence, determinism, folder errors and pickle refusal."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch, PromptItem
from evalkit.errors import CorruptFileError, WeightsNotFoundError
from evalkit.scorers import bvqa
from evalkit.scorers.blip_vqa import ENV_DIR, BlipVQAScorer
from evalkit.scorers.noun_phrases import splitter_name

PROMPTS = ["a red car and a green bench", "a big cube", "the bathroom with green tile and a red shower curtain",
           "a blue bowl and a brown dog", "a metallic desk lamp and a fluffy towel"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return BlipVQAScorer.write_tiny(tmp_path_factory.mktemp("blip") / "tiny")


@pytest.fixture(scope="module")
def scorer(tiny_dir):
    return BlipVQAScorer(tiny_dir)


def images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_tiny_folder_has_the_public_layout(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.txt", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)


def test_rows_have_the_contract_shape(scorer):
    batch = Batch.from_prompts(PROMPTS, seeds=list(range(len(PROMPTS))), category="color")
    rows = scorer.update(images(len(PROMPTS)), batch)
    assert len(rows) == len(PROMPTS)
    for row, prompt in zip(rows, PROMPTS):
        assert isinstance(row["score"], float) and 0.0 <= row["score"] <= 1.0
        assert row["questions"] and row["splitter"] == splitter_name() and row["prompt"] == prompt
        for question in row["questions"]:
            assert isinstance(question["question"], str) and question["question"].endswith("?")
            assert isinstance(question["p"], float) and 0.0 < question["p"] < 1.0
    assert [q["question"] for q in rows[0]["questions"]] == ["a red car?", "a green bench?"]
    assert [q["question"] for q in rows[2]["questions"]] == ["the bathroom?", "green tile?", "a red shower curtain?"]
    assert scorer.compute() == pytest.approx({"color": sum(r["score"] for r in rows) / len(rows)})
    scorer.reset()
    assert scorer.rows == []


def test_score_is_the_product_of_the_answers(scorer, tiny_dir):
    batch = Batch.from_prompts(PROMPTS)
    rows = scorer.score(images(len(PROMPTS), seed=1), batch)
    for row in rows:
        assert row["score"] == pytest.approx(math.prod(q["p"] for q in row["questions"]), rel=1e-12)
    ps = [q["p"] for q in rows[0]["questions"]]
    assert len(set(ps)) == len(ps)  # different questions, different answers
    original = BlipVQAScorer(tiny_dir, mode="t2i-compbench")
    rounded = original.score(images(len(PROMPTS), seed=1), batch)
    for row in rounded:
        probs = [[q["p"] for q in row["questions"]]]
        assert row["score"] == bvqa.image_scores(probs, "t2i-compbench")[0]
        assert row["score"] == round(row["score"], 4)


def test_answers_do_not_depend_on_the_batch(tiny_dir, scorer):
    pixels = images(4, seed=2)
    alone = scorer.question_probabilities(pixels[:1], [["a red car?"]])[0][0]
    mixed = scorer.question_probabilities(pixels, [
        ["the bathroom with green tile?", "a red car?", "a?"],
        ["a big green cube?"],
        ["a red car?", "a metallic desk lamp and a fluffy towel?"],
        [],
    ])
    assert mixed[0][1] == pytest.approx(alone, abs=1e-5)
    assert mixed[3] == []
    second_alone = scorer.question_probabilities(pixels[2:3], [["a red car?"]])[0][0]
    assert mixed[2][0] == pytest.approx(second_alone, abs=1e-5)
    assert abs(second_alone - alone) > 1e-4  # the image matters
    # the same with one question per model call and with everything in one call
    one_by_one = BlipVQAScorer(tiny_dir, batch_size=1).question_probabilities(pixels, [["a red car?", "a big cube?"]] * 4)
    together = scorer.question_probabilities(pixels, [["a red car?", "a big cube?"]] * 4)
    np.testing.assert_allclose(one_by_one, together, atol=1e-5, rtol=0)
    # and an image's whole row does not change when the batch around it does
    row_alone = scorer.score(pixels[1:2], Batch.from_prompts(PROMPTS[1:2]))[0]
    row_mixed = scorer.score(pixels[:3], Batch.from_prompts(PROMPTS[:3]))[1]
    assert row_mixed["score"] == pytest.approx(row_alone["score"], abs=1e-5)


def test_suite_noun_phrases_are_used_when_present(scorer):
    item = PromptItem("a red car and a green bench", "color", "val", "c-1", noun_phrases=("a red car", "a bench"))
    row = scorer.score(images(1), Batch([item], [0]))[0]
    assert [q["question"] for q in row["questions"]] == ["a red car?", "a bench?"]
    assert row["splitter"] == "suite"


def test_deterministic(tiny_dir, tmp_path, scorer):
    pixels, batch = images(3, seed=3), Batch.from_prompts(PROMPTS[:3])
    first = scorer.score(pixels, batch)
    assert scorer.score(pixels, batch) == first
    assert BlipVQAScorer(tiny_dir).score(pixels, batch) == first
    rebuilt = BlipVQAScorer.tiny(tmp_path / "again")  # same seed, same weights
    assert rebuilt.score(pixels, batch) == first
    assert rebuilt.fingerprint() == scorer.fingerprint()
    assert BlipVQAScorer.tiny().score(pixels, batch) == first  # a temporary folder


def test_fingerprint_tracks_mode_and_weights(tiny_dir, tmp_path, scorer):
    assert BlipVQAScorer(tiny_dir, mode="t2i-compbench").fingerprint() != scorer.fingerprint()
    assert BlipVQAScorer(tiny_dir, batch_size=3).fingerprint() == scorer.fingerprint()
    assert BlipVQAScorer.tiny(tmp_path / "other").fingerprint() == scorer.fingerprint()
    other_weights = BlipVQAScorer(BlipVQAScorer.write_tiny(tmp_path / "seed1", seed=1))
    assert other_weights.fingerprint() != scorer.fingerprint()


def test_images_are_quantised_like_a_png(scorer):
    pixels = images(2, seed=4)
    as_png = (pixels * 255).round() / 255
    qs = [["a red car?"], ["a big cube?"]]
    assert scorer.question_probabilities(pixels, qs) == scorer.question_probabilities(as_png, qs)


def test_missing_folder_names_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-blip"
    with pytest.raises(WeightsNotFoundError) as info:
        BlipVQAScorer(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "huggingface-cli download Salesforce/blip-vqa-base" in message and ENV_DIR in message
    monkeypatch.delenv(ENV_DIR, raising=False)
    with pytest.raises(WeightsNotFoundError, match=ENV_DIR):
        BlipVQAScorer()
    monkeypatch.setenv(ENV_DIR, str(missing))
    with pytest.raises(WeightsNotFoundError, match="no-such-blip"):
        BlipVQAScorer()


def test_folder_from_the_environment(tiny_dir, monkeypatch, scorer):
    monkeypatch.setenv(ENV_DIR, str(tiny_dir))
    from_env = BlipVQAScorer()
    assert from_env.path == str(tiny_dir)
    pixels, batch = images(2, seed=5), Batch.from_prompts(PROMPTS[:2])
    assert from_env.score(pixels, batch) == scorer.score(pixels, batch)


def test_incomplete_folder(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match=r"missing model\.safetensors") as info:
        BlipVQAScorer(broken)
    assert str(broken) in str(info.value)
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_dir, damaged)
    with open(damaged / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(CorruptFileError, match="could not load the model") as info:
        BlipVQAScorer(damaged)
    assert str(damaged) in str(info.value)


def test_pickle_only_folder_is_refused_by_default(tiny_dir, tmp_path, scorer):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError, match="pickle") as info:
        BlipVQAScorer(pickled)
    assert "allow_pickle" in str(info.value) and "pytorch_model.bin" in str(info.value)
    trusted = BlipVQAScorer(pickled, allow_pickle=True)
    pixels, batch = images(2, seed=6), Batch.from_prompts(PROMPTS[:2])
    assert trusted.score(pixels, batch) == scorer.score(pixels, batch)


def test_bad_arguments(tiny_dir, scorer):
    with pytest.raises(ValueError, match="mode"):
        BlipVQAScorer(tiny_dir, mode="rounded")
    with pytest.raises(ValueError, match="batch_size"):
        BlipVQAScorer(tiny_dir, batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        scorer.score(torch.rand(1, 4, 8, 8), Batch.from_prompts(["a red car"]))
    with pytest.raises(ValueError, match="2 images"):
        scorer.score(torch.rand(2, 3, 8, 8), Batch.from_prompts(["a red car"]))
    with pytest.raises(ValueError, match="float"):
        scorer.score(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), Batch.from_prompts(["a red car"]))


def test_answer_ids_come_from_the_tokenizer(scorer):
    tokenizer = scorer.processor.tokenizer
    assert scorer.yes_id == tokenizer.convert_tokens_to_ids("yes") != tokenizer.unk_token_id
    assert scorer.no_id == tokenizer.convert_tokens_to_ids("no") != tokenizer.unk_token_id
    assert scorer.bos_id == scorer.model.config.text_config.bos_token_id == tokenizer.convert_tokens_to_ids("[DEC]")
