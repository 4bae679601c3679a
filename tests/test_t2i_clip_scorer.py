"""t2i-clip: T2I-CompBench's plain CLIP cosine on a tiny random CLIPModel saved in the public layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evalkit.contracts import Batch, PromptItem
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.scorers import t2i_text
from evalkit.scorers.t2i_clip import OPENAI_MEAN, OPENAI_STD, T2IClipScorer

HAS_SPACY = t2i_text.load_spacy()[0] is not None


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return T2IClipScorer.write_tiny(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return T2IClipScorer(clip_dir, parser="rules")


def items(*prompts, category="non-spatial"):
    return [PromptItem(p, category, "val", f"c-{i}") for i, p in enumerate(prompts)]


def test_layout(clip_dir, scorer):
    names = {p.name for p in clip_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"} <= names
    assert scorer.clip.input_size == 32 and scorer.embedding_space == "openai-clip-vit-b-32"


def test_plain_cosine_of_normalised_features(scorer):
    """A 32-px image needs no resize or crop: the pixels are (uint8 / 255 - mean) / std, then the plain cosine."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["A person is looking at a rainbow.", "A dog is playing with a chew toy on the carpet."]
    rows = scorer.score(images, Batch(items(*prompts), [42, 43]))
    model, tokenizer = scorer.clip.model, scorer.clip.tokenizer_
    pixels = (images * 255).round() / 255
    pixels = (pixels - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
        for k, prompt in enumerate(prompts):
            ids = torch.tensor([tokenizer(prompt)["input_ids"]])
            text = model.get_text_features(input_ids=ids)
            text = text if isinstance(text, torch.Tensor) else text.pooler_output
            expected = float(F.normalize(image[k : k + 1], dim=-1) @ F.normalize(text, dim=-1).T)
            assert rows[k]["cosine"] == pytest.approx(expected, abs=1e-5)
            assert rows[k]["score"] == pytest.approx(min(max(expected, 0.0), 1.0), abs=1e-5)
            assert rows[k]["clipscore_100"] == pytest.approx(max(100 * expected, 0.0), abs=1e-3)
            assert rows[k]["text"] == prompt


def test_preprocessing_resizes_and_centre_crops(scorer):
    images = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    assert scorer.clip.pixel_values(images).shape == (1, 3, 32, 32)
    row = scorer.score(images, Batch(items("a cat"), [42]))[0]
    assert -1.0 <= row["cosine"] <= 1.0


def test_rows_do_not_depend_on_the_batch(scorer):
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    batch = Batch(items("a cat on a mat.", "a dog.", "a bird in a tree."), [42, 43, 44])
    rows = scorer.score(images, batch)
    alone = scorer.score(images[1:2], batch.subset([1]))
    assert alone[0]["cosine"] == pytest.approx(rows[1]["cosine"], abs=1e-5)


def test_complex_items_lose_their_adjectives(scorer):
    [complex_item] = items("The red hat was on top of the brown coat rack.", category="complex")
    assert scorer.text_of(complex_item) == "The hat was on top of the coat rack ."
    row = scorer.score(torch.rand(1, 3, 32, 32), Batch([complex_item], [42]))[0]
    assert row["text"] == "The hat was on top of the coat rack ." and row["parser"] == "rules-1"
    [plain] = items("The red hat was on top of the brown coat rack.")
    assert scorer.text_of(plain) == plain.prompt
    if HAS_SPACY:  # spaCy tags "next" of "next to" ADJ: T2I-CompBench's text drops it
        spacy_scorer = T2IClipScorer(scorer.path, parser="spacy")
        [near] = items("The square book was next to the notebook.", category="complex")
        assert spacy_scorer.text_of(near) == "The book was to the notebook ."


def test_long_prompts_are_truncated_and_say_so(scorer):
    prompt = " ".join(["word"] * 120)
    row = scorer.score(torch.rand(1, 3, 32, 32), Batch(items(prompt), [42]))[0]
    assert row["truncated_to_tokens"] == 77


def test_wrong_kind_folder(tmp_path, monkeypatch):
    from evalkit.scorers.spatial import T2ISpatialScorer

    owl = T2ISpatialScorer.write_tiny(tmp_path / "owl")
    with pytest.raises(ConfigMismatchError, match=r"holds a 'owlv2' model .*not 'clip'.*openai/clip-vit-base-patch32"):
        T2IClipScorer(owl)
    monkeypatch.delenv("EVALKIT_CLIP_VIT_B32_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError, match="EVALKIT_CLIP_VIT_B32_DIR"):
        T2IClipScorer()


def test_placement_casts_and_scores_in_bfloat16(clip_dir):
    from evalkit.placement import place

    scorer = T2IClipScorer(clip_dir, parser="rules")
    assert place(scorer, "cpu", "bfloat16", "scorer", scorer.name)["dtype"] == "bfloat16"
    assert scorer.clip.dtype == torch.bfloat16
    row = scorer.score(torch.rand(1, 3, 32, 32), Batch(items("a cat"), [42]))[0]
    assert -1.0 <= row["cosine"] <= 1.0
