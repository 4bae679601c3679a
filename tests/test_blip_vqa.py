"""The BLIP-VQA scorer on a tiny random BLIP written to disk (no download): row shape, products,
batch-independence, determinism, folder errors and pickle refusal; the t2i-compbench convention against an
independent plain-torch re-implementation of T2I-CompBench's BLIPvqa_eval, and the transformers convention
against values pinned from the scorer before the conventions existed."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch, PromptItem
from evalkit.errors import CorruptFileError, WeightsNotFoundError
from evalkit.scorers import bvqa
from evalkit.scorers.blip_vqa import ENV_DIR, BlipVQAScorer, BlipVQATransformersScorer
from evalkit.scorers.noun_phrases import splitter_name

PROMPTS = [
    "a red car and a green bench",
    "a big cube",
    "the bathroom with green tile and a red shower curtain",
    "a blue bowl and a brown dog",
    "a metallic desk lamp and a fluffy towel",
]


@pytest.fixture(autouse=True)
def _splitter(monkeypatch):
    """These tests are about BLIP, not the splitter: the rule-based one unless the environment names one
    (the default, spaCy, need not be installed)."""
    if not os.environ.get("EVALKIT_NOUN_PHRASE_SPLITTER"):
        monkeypatch.setenv("EVALKIT_NOUN_PHRASE_SPLITTER", "rules")


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
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.txt",
        "tokenizer_config.json",
    } <= names
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
    mixed = scorer.question_probabilities(
        pixels,
        [
            ["the bathroom with green tile?", "a red car?", "a?"],
            ["a big green cube?"],
            ["a red car?", "a metallic desk lamp and a fluffy towel?"],
            [],
        ],
    )
    assert mixed[0][1] == pytest.approx(alone, abs=1e-5)
    assert mixed[3] == []
    second_alone = scorer.question_probabilities(pixels[2:3], [["a red car?"]])[0][0]
    assert mixed[2][0] == pytest.approx(second_alone, abs=1e-5)
    assert abs(second_alone - alone) > 1e-4  # the image matters
    # the same with one question per model call and with everything in one call
    one_by_one = BlipVQAScorer(tiny_dir, batch_size=1).question_probabilities(
        pixels, [["a red car?", "a big cube?"]] * 4
    )
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
    assert "huggingface-cli download Salesforce/blip-vqa-capfilt-large" in message and ENV_DIR in message
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
    with pytest.raises(CorruptFileError, match="could not load BlipForQuestionAnswering") as info:
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


# --------------------------------------------------------------------------- conventions


# T2I-CompBench's BLIPvqa_eval, re-done below with plain torch ops on the folder's weights (nothing from
# evalkit.scorers.blip_vqa): data/utils.py pre_question; models/blip_vqa.py forward (tokenizer call, [ENC])
# and vqa_prob; data/__init__.py transform_test; models/vit.py (VisionTransformer, interpolate_pos_embed,
# LayerNorm eps 1e-6); models/med.py (BertModel / BertLMHeadModel, masks (1 - m) * -10000).


def ref_pre_question(question: str, max_ques_words: int = 50) -> str:
    question = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_ques_words]) if len(words) > max_ques_words else question


def ref_interpolate_pos_embed(pos_embed: torch.Tensor, new_size: int) -> torch.Tensor:
    extra, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    orig = int(tokens.shape[1] ** 0.5)
    if orig == new_size:
        return pos_embed
    tokens = tokens.reshape(-1, orig, orig, pos_embed.shape[-1]).permute(0, 3, 1, 2)
    tokens = torch.nn.functional.interpolate(tokens, size=(new_size, new_size), mode="bicubic", align_corners=False)
    return torch.cat((extra, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def ref_t2i_compbench_vqa_prob(folder, image_files, questions, image_size: int) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) per (image file, question) pair, one padded batch, as BLIPvqa_eval."""
    from PIL import Image
    from safetensors.torch import load_file
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode
    from transformers import BertTokenizer

    F = torch.nn.functional
    sd = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    vcfg, tcfg = config["vision_config"], config["text_config"]
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()

    def lin(x, key):
        return F.linear(x, sd[key + ".weight"], sd[key + ".bias"])

    def ln(x, key, eps):
        return F.layer_norm(x, (x.shape[-1],), sd[key + ".weight"], sd[key + ".bias"], eps)

    def heads(x, n):
        return x.view(x.shape[0], x.shape[1], n, -1).permute(0, 2, 1, 3)

    # transform_test: Resize((480, 480), BICUBIC), ToTensor, Normalize(CLIP mean, std), on Image.open().convert('RGB')
    transform = transforms.Compose(
        [
            transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    image = torch.stack([transform(Image.open(f).convert("RGB")) for f in image_files])

    # VisionTransformer.forward (pre-norm blocks, LayerNorm eps 1e-6), pos_embed via interpolate_pos_embed
    p, nh = vcfg["patch_size"], vcfg["num_attention_heads"]
    x = (
        F.conv2d(
            image,
            sd["vision_model.embeddings.patch_embedding.weight"],
            sd["vision_model.embeddings.patch_embedding.bias"],
            stride=p,
        )
        .flatten(2)
        .transpose(1, 2)
    )
    x = torch.cat((sd["vision_model.embeddings.class_embedding"].expand(x.shape[0], -1, -1), x), dim=1)
    x = (
        x
        + ref_interpolate_pos_embed(sd["vision_model.embeddings.position_embedding"], image_size // p)[:, : x.shape[1]]
    )
    for i in range(vcfg["num_hidden_layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        B, N, C = x.shape
        qkv = lin(ln(x, pre + "layer_norm1", 1e-6), pre + "self_attn.qkv").reshape(B, N, 3, nh, C // nh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (C // nh) ** -0.5).softmax(dim=-1)
        x = x + lin((attn @ v).transpose(1, 2).reshape(B, N, C), pre + "self_attn.projection")
        x = x + lin(F.gelu(lin(ln(x, pre + "layer_norm2", 1e-6), pre + "mlp.fc1")), pre + "mlp.fc2")
    image_embeds = ln(x, "vision_model.post_layernorm", 1e-6)
    image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long)

    # med.py BertModel (mode='multimodal': self-attention, cross-attention, feed-forward; post-norm)
    tn, eps = tcfg["num_attention_heads"], 1e-12

    def attention(x, states, ext_mask, pre):
        q, k, v = (
            heads(lin(x, pre + "self.query"), tn),
            heads(lin(states, pre + "self.key"), tn),
            heads(lin(states, pre + "self.value"), tn),
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + ext_mask
        ctx = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3).reshape(x.shape)
        return ln(lin(ctx, pre + "output.dense") + x, pre + "output.LayerNorm", eps)

    def bert(prefix, input_ids, attention_mask, states, states_mask, is_decoder):
        n, length = input_ids.shape
        x = (
            sd[prefix + "embeddings.word_embeddings.weight"][input_ids]
            + sd[prefix + "embeddings.position_embeddings.weight"][torch.arange(length)][None]
        )
        x = ln(x, prefix + "embeddings.LayerNorm", eps)
        mask = attention_mask[:, None, None, :].float()
        if is_decoder:
            mask = torch.tril(torch.ones(length, length))[None, None] * mask
        mask = (1.0 - mask) * -10000.0
        cross = (1.0 - states_mask[:, None, None, :].float()) * -10000.0
        for i in range(tcfg["num_hidden_layers"]):
            pre = f"{prefix}encoder.layer.{i}."
            x = attention(x, x, mask, pre + "attention.")
            x = attention(x, states, cross, pre + "crossattention.")
            x = ln(
                lin(F.gelu(lin(x, pre + "intermediate.dense")), pre + "output.dense") + x, pre + "output.LayerNorm", eps
            )
        return x

    # BLIP_VQA.forward: tokenizer(question, padding='longest', truncation=True, max_length=35); [CLS] -> [ENC]
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    question = tokenizer(
        [ref_pre_question(q) for q in questions], padding="longest", truncation=True, max_length=35, return_tensors="pt"
    )
    input_ids = question.input_ids.clone()
    input_ids[:, 0] = vocab.index("[ENC]")
    question_states = bert("text_encoder.", input_ids, question.attention_mask, image_embeds, image_atts, False)

    # vqa_prob: the decoder from [DEC] alone, cross-attending the question (its padding masked); softmax over
    # the vocabulary; prob_yes / (prob_yes + prob_no)
    start_ids = torch.full((len(questions), 1), vocab.index("[DEC]"), dtype=torch.long)
    h = bert(
        "text_decoder.bert.", start_ids, torch.ones_like(start_ids), question_states, question.attention_mask, True
    )
    h = ln(
        F.gelu(lin(h, "text_decoder.cls.predictions.transform.dense")),
        "text_decoder.cls.predictions.transform.LayerNorm",
        eps,
    )
    logits = F.linear(
        h,
        sd["text_decoder.bert.embeddings.word_embeddings.weight"],  # tied, as in med.py
        sd["text_decoder.cls.predictions.bias"],
    )[:, 0, :]
    prob = torch.softmax(logits, dim=1)
    prob_yes, prob_no = prob[:, vocab.index("yes")], prob[:, vocab.index("no")]
    return prob_yes / (prob_yes + prob_no)


LONG = " ".join(["a red car and a green bench"] * 7) + "?"  # 49 words: longer than 35 tokens
REF_QUESTIONS = [
    ["a red car?", "the bathroom with green tile and a red shower curtain?"],
    ["a big cube?", "A Metallic desk lamp, and a fluffy towel."],
    ["two (pink) cats: next to a dog?", "a?", LONG],
    ["the sky?"],
]


def save_pngs(pixels: torch.Tensor, folder) -> list:
    """Each image as T2I-CompBench reads it: an 8-bit PNG (the values the scorer quantises to)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k, image in enumerate(pixels):
        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(array).save(folder / f"image_{k}.png")
        files.append(folder / f"image_{k}.png")
    return files


def test_t2i_compbench_convention_matches_an_independent_reimplementation(tiny_dir, tmp_path, scorer):
    assert scorer.convention == "t2i-compbench" and scorer.image_size == 240  # 30 × 30 patches of 8 px
    pixels = images(len(REF_QUESTIONS), seed=7)
    files = save_pngs(pixels, tmp_path / "samples")
    pairs = [(i, q) for i, qs in enumerate(REF_QUESTIONS) for q in qs]
    with torch.no_grad():
        reference = ref_t2i_compbench_vqa_prob(tiny_dir, [files[i] for i, _ in pairs], [q for _, q in pairs], 240)
    got = scorer.question_probabilities(pixels, REF_QUESTIONS)
    flat = np.array([p for ps in got for p in ps])
    delta = np.abs(flat - reference.double().numpy()).max()
    assert delta <= 1e-4, delta
    assert len(set(np.round(flat, 4))) == len(flat)  # the questions and images do differ
    # the same probabilities one question and one image at a time
    alone = [
        [scorer.question_probabilities(pixels[i : i + 1], [[q]])[0][0] for q in qs]
        for i, qs in enumerate(REF_QUESTIONS)
    ]
    np.testing.assert_allclose(np.concatenate(alone), flat, atol=1e-6, rtol=0)
    one_by_one = BlipVQAScorer(tiny_dir, batch_size=1).question_probabilities(pixels, REF_QUESTIONS)
    np.testing.assert_allclose(np.concatenate(one_by_one), flat, atol=1e-6, rtol=0)
    # the question edits: pre_question, max_length=35 (34 tokens + [SEP]), [CLS] -> [ENC]
    ids = scorer.question_ids(LONG)
    assert len(ids) == 35 and ids[0] == scorer.enc_id == scorer.bos_id + 1
    assert ids[-1] == scorer.processor.tokenizer.sep_token_id
    assert scorer.question_ids("A Metallic desk lamp, and a fluffy towel.") == scorer.question_ids(
        "a metallic desk lamp, and a fluffy towel"
    )


#: the scorer's values before the conventions existed (evalkit at HEAD before scorer version 2, seed-0 tiny)
PINNED_TRANSFORMERS = [
    [0.8478140695439178, 0.4876925776875258],
    [0.7370440507420886, 0.8267743583903444],
    [0.7739017740573829],
]


def test_transformers_convention_keeps_the_old_values(tiny_dir, scorer):
    pixels = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(11))
    questions = [
        ["a red car?", "a green bench?"],
        ["the bathroom with green tile?", "a?"],
        ["a metallic desk lamp and a fluffy towel?"],
    ]
    old = BlipVQATransformersScorer(tiny_dir)
    assert old.convention == "transformers" and old.name == "blip-vqa-transformers"
    got = old.question_probabilities(pixels, questions)
    for row, pinned in zip(got, PINNED_TRANSFORMERS):
        np.testing.assert_allclose(row, pinned, atol=1e-6, rtol=0)
    # the constructor argument is the same thing under the blip-vqa name
    explicit = BlipVQAScorer(tiny_dir, convention="transformers")
    assert explicit.question_probabilities(pixels, questions) == got
    new = scorer.question_probabilities(pixels, questions)
    assert max(abs(a - b) for ra, rb in zip(new, got) for a, b in zip(ra, rb)) > 1e-3  # the conventions differ


def test_the_convention_is_recorded(tiny_dir, scorer):
    from evalkit.registry import SCORERS

    old = BlipVQAScorer(tiny_dir, convention="transformers")
    assert scorer.version == "2-t2i-compbench" and old.version == "1" and BlipVQATransformersScorer.version == "1"
    assert old.fingerprint() != scorer.fingerprint()
    batch = Batch([PromptItem("a red car", "color", "val", "c-1", noun_phrases=("a red car",))], [0])
    assert {r["convention"] for r in scorer.score(images(1), batch)} == {"t2i-compbench"}
    assert {r["convention"] for r in old.score(images(1), batch)} == {"transformers"}
    assert SCORERS.get("blip-vqa") is BlipVQAScorer
    assert SCORERS.get("blip-vqa-transformers") is BlipVQATransformersScorer
    with pytest.raises(ValueError, match="convention"):
        BlipVQAScorer(tiny_dir, convention="lavis")
