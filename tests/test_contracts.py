"""Contract tests: every registered prior, decoder and scorer (the dummies included) must pass these.

A plugin provides ``tiny()``: a small instance built in code (random weights) for these tests.
"""

import pytest
import torch

from evalkit.contracts import Batch, Protocol, check_embedding_contract
from evalkit.errors import EmbeddingContractError
from evalkit.registry import DECODERS, PRIORS, SCORERS

PROMPTS = ["a red circle and a blue square", "a striped star and a dotted square", "a big triangle and a small circle"]


def tiny(registry, name):
    cls = registry.get(name)
    assert hasattr(cls, "tiny"), f"{registry.kind} {name!r} must provide tiny() for contract tests"
    return cls.tiny()


def batch(n=3, seeds=None):
    prompts = (PROMPTS * n)[:n]
    return Batch.from_prompts(prompts, seeds if seeds is not None else list(range(42, 42 + n)), category="color")


def protocol_for(decoder):
    return Protocol(
        decoder=decoder.name,
        num_inference_steps=2,
        guidance_scale=decoder.default_guidance_scale,
        resolution=decoder.resolution,
        images_per_prompt=1,
    )


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_contract(name, tmp_path):
    check_prior(tiny(PRIORS, name), tmp_path)


def check_prior(prior, tmp_path):
    assert prior.normalisation in ("raw", "l2") and prior.embedding_dim > 0 and prior.embedding_space
    out = prior.predict(batch(3))
    assert out.shape == (3, prior.embedding_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(prior.predict(batch(3)), out)  # deterministic under fixed seeds
    # a row does not depend on the batch it is in
    torch.testing.assert_close(prior.predict(batch(1)), out[:1])
    if prior.normalisation == "l2":
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    if hasattr(prior, "save_pretrained"):
        prior.save_pretrained(tmp_path / "prior")
        reloaded = type(prior).from_pretrained(tmp_path / "prior")
        torch.testing.assert_close(reloaded.predict(batch(3)), out)
        assert reloaded.num_parameters() == prior.num_parameters()


@pytest.mark.parametrize("name", DECODERS.names())
def test_decoder_contract(name, tmp_path):
    check_decoder(tiny(DECODERS, name), tmp_path)


def check_decoder(decoder, tmp_path):
    protocol = protocol_for(decoder)
    embeds = torch.randn(3, decoder.embedding_dim, generator=torch.Generator().manual_seed(0))
    images = decoder.decode(embeds, batch(3), protocol)
    r = decoder.resolution
    assert images.shape == (3, 3, r, r) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    torch.testing.assert_close(decoder.decode(embeds, batch(3), protocol), images)  # same seeds, same images
    torch.testing.assert_close(
        decoder.decode(embeds[1:2], batch(3).subset([1]), protocol), images[1:2]
    )  # alone = in a batch
    other = decoder.decode(embeds.flip(0), batch(3), protocol)
    assert not torch.allclose(other[0], images[0]), "different embeddings must give different images"
    reseeded = decoder.decode(embeds, batch(3, seeds=[7, 8, 9]), protocol)
    assert not torch.allclose(reseeded, images), "different seeds must give different images"
    if hasattr(decoder, "save_pretrained"):
        decoder.save_pretrained(tmp_path / "decoder")
        reloaded = type(decoder).from_pretrained(tmp_path / "decoder")
        torch.testing.assert_close(reloaded.decode(embeds, batch(3), protocol), images)


@pytest.mark.parametrize("name", SCORERS.names())
def test_scorer_contract(name, tmp_path):
    check_scorer(tiny(SCORERS, name), tmp_path)


def check_scorer(scorer, tmp_path=None):
    assert scorer.reads in ("images", "embeddings")
    generator = torch.Generator().manual_seed(0)
    images = (
        torch.rand(4, 3, 16, 16, generator=generator)
        if scorer.reads == "images"
        else torch.randn(4, scorer.embedding_dim, generator=generator)
    )
    b = batch(4)
    rows = scorer.update(images, b)
    assert len(rows) == 4 and len(scorer.rows) == 4
    for row, item in zip(rows, b.items):
        assert 0.0 <= row["score"] <= 1.0 and row["prompt"] == item.prompt
        for question in row.get("questions", []):
            assert 0.0 <= question["p"] <= 1.0 and question["question"]
    values = scorer.compute()
    assert set(values) == {"color"}
    assert values["color"] == pytest.approx(sum(r["score"] for r in rows) / 4)
    scorer.reset()
    assert scorer.rows == []


def test_embedding_contract_checked():
    prior, decoder = PRIORS.get("dummy").tiny(), DECODERS.get("dummy").tiny()
    check_embedding_contract(prior, decoder)
    wide = PRIORS.get("dummy")(type(prior.config)(embedding_dim=12, num_buckets=16))
    with pytest.raises(EmbeddingContractError, match="dimension 12 vs 8"):
        check_embedding_contract(wide, decoder)
    prior.embedding_space = "clip-vit-l-14"
    with pytest.raises(EmbeddingContractError, match="embedding space"):
        check_embedding_contract(prior, decoder)


def test_batch_validates_lengths():
    with pytest.raises(ValueError):
        Batch(batch(2).items, [1])


def test_protocol_hash_changes_with_settings():
    a = Protocol("synth", 25, 3.0, 32)
    assert a.hash() == Protocol("synth", 25, 3.0, 32).hash()
    assert a.hash() != Protocol("synth", 50, 3.0, 32).hash()
    assert a.seeds()[:2] == [42, 43] and len(a.seeds()) == 10


@pytest.mark.parametrize("name", __import__("evalkit.registry", fromlist=["SUITES"]).SUITES.names())
def test_suite_contract(name, request):
    from evalkit.suites import load_suite

    if name.startswith("t2i-compbench"):
        request.getfixturevalue("prompts_dir")  # skips without a local copy of the prompt files
    suite = load_suite(name)
    for split in suite.splits:
        items = suite.items(split)
        assert items, f"{name} [{split}] is empty"
        assert len({i.item_id for i in items}) == len(items), "item ids must be unique"
        assert all(i.split == split and i.category == suite.category for i in items)
        for item in items[:50]:
            for phrase in item.noun_phrases or ():
                assert phrase in item.prompt
        assert suite.version(split) == suite.version(split)
    if "val" in suite.splits:
        val = suite.items("val")
        assert len(val) == 300
        if any(i.seen is not None for i in val):  # suites with a seen/unseen split (relation suites have none)
            assert sum(1 for i in val if i.seen) == 200
