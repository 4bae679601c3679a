"""CLIPScore scorer (plain cosine and torchmetrics' scaled value) and FID / KID with clean-fid and torchmetrics."""

import os

import numpy as np
import pytest
import torch

from evalkit.contracts import Batch
from evalkit.world.models.clip import WorldCLIP
from evalkit.metrics.fid import (
    FeatureExtractor,
    ReferenceStats,
    fid,
    get_extractor,
    image_features,
    kid,
    reference_stats,
)
from evalkit.scorers.clipscore import CLIPScoreScorer
from evalkit.world import render, sample_pairs
from evalkit.world.models.tensors import images_to_tensor
from tests.test_contracts import check_scorer


def renders(n: int, seed: int, category: str = "all") -> torch.Tensor:
    return images_to_tensor(render(sample_pairs(category, n, seed, split="val")[1]))


def noise_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_clip() -> WorldCLIP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WorldCLIP.tiny(embed_dim=16).eval()


@pytest.fixture(scope="module")
def tiny_extractor(tiny_clip) -> FeatureExtractor:
    return FeatureExtractor(tiny_clip, name="tiny-clip")


@pytest.fixture(scope="module")
def image_sets():
    return {"a": renders(200, 1), "b": renders(200, 2), "noise": noise_images(200)}


# --------------------------------------------------------------------------- CLIPScore


class EncodeOnlyCLIP:
    """A CLIP seen only through encode_image / encode_text (no tokenizer, not a torch module)."""

    def __init__(self, clip):
        self._clip = clip
        self.model_cfg = clip.model_cfg

    def encode_image(self, images):
        return self._clip.encode_image(images)

    def encode_text(self, prompts):
        return self._clip.encode_text(prompts).text_embeds


def test_clipscore_torchmetrics_equals_clamped_cosine(tiny_clip):
    captions, scenes = sample_pairs("all", 6, 3, split="val")
    images = torch.cat([renders(6, 3), noise_images(6)])
    prompts = captions + [s.swapped_caption for s in scenes]
    for scorer in (CLIPScoreScorer(tiny_clip), CLIPScoreScorer(EncodeOnlyCLIP(tiny_clip))):
        cos = scorer.cosines(images, prompts)
        scaled = scorer.torchmetrics_clipscore(images, prompts)
        assert torch.allclose(scaled, (100 * cos).clamp(min=0), atol=1e-4, rtol=0)
        assert (cos > 0).any() and (cos < 0).any()  # both sides of the clamp are exercised
        rows = scorer.score(images, Batch.from_prompts(prompts))
        for row, c, s in zip(rows, cos.tolist(), scaled.tolist()):
            assert row["cosine"] == pytest.approx(c, abs=1e-6)
            assert row["score"] == pytest.approx(min(max(c, 0.0), 1.0), abs=1e-6)
            assert row["clipscore_100"] == pytest.approx(s, abs=1e-6)

    # torchmetrics' module class takes the same (model, processor) factory: max(mean(100·cos), 0)
    from torchmetrics.multimodal import CLIPScore

    scorer = CLIPScoreScorer(tiny_clip)
    metric = CLIPScore(model_name_or_path=scorer._torchmetrics_pair)
    metric.update(list(images), prompts)
    expected = max(float(100 * scorer.cosines(images, prompts).mean()), 0.0)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-4)


def test_clipscore_true_caption_beats_swapped_with_shipped_clip():
    captions, scenes = sample_pairs("all", 64, 0, split="val")
    images = images_to_tensor(render(scenes))
    scorer = CLIPScoreScorer()
    true_cos = scorer.cosines(images, captions)
    swapped_cos = scorer.cosines(images, [s.swapped_caption for s in scenes])
    assert float(true_cos.mean()) > float(swapped_cos.mean()) + 0.02
    assert float((true_cos > swapped_cos).float().mean()) > 0.6
    scaled = scorer.torchmetrics_clipscore(images, captions)
    assert torch.allclose(scaled, (100 * true_cos).clamp(min=0), atol=1e-4, rtol=0)


def test_clipscore_contract_and_errors(tmp_path):
    check_scorer(CLIPScoreScorer.tiny(), tmp_path)  # 16×16 images are resized to the CLIP's 32×32
    scorer = CLIPScoreScorer.tiny()
    with pytest.raises(ValueError, match="images but"):
        scorer.cosines(noise_images(2), ["a red circle"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        scorer.cosines(torch.rand(2, 32, 32), ["a", "b"])
    with pytest.raises(TypeError, match="encode_image and encode_text"):
        CLIPScoreScorer(object())


# --------------------------------------------------------------------------- FID / KID


def test_fid_clean_fid_and_torchmetrics_agree_and_order(tiny_extractor, image_sets):
    a, b, noise = image_sets["a"], image_sets["b"], image_sets["noise"]
    same, far, self_fid = (fid(a, b, tiny_extractor), fid(a, noise, tiny_extractor), fid(a, a, tiny_extractor))
    for result in (same, far):
        assert result.relative_difference < 0.01
    assert same.value < 0.05 * far.value
    assert abs(self_fid.value) < 1e-6 and abs(self_fid.torchmetrics_value) < 1e-6
    assert same.n_real == same.n_fake == 200


def test_kid_clean_fid_and_torchmetrics_agree_and_order(tiny_extractor, image_sets):
    a, b, noise = image_sets["a"], image_sets["b"], image_sets["noise"]
    same, far, self_kid = (
        kid(a, b, tiny_extractor, subsets=20),
        kid(a, noise, tiny_extractor, subsets=20),
        kid(a, a, tiny_extractor, subsets=20),
    )
    assert far.relative_difference < 0.01
    assert abs(same.value - same.torchmetrics_value) < 1e-3 * far.value
    assert abs(same.value) < 0.05 * far.value
    assert abs(self_kid.value) < 0.01 * far.value  # unbiased MMD² of a set with itself: slightly below 0
    assert far.kid_std is not None and far.kid_std >= 0
    # unequal sizes: random subsets, seeded; the global RNGs are left alone
    state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state()
    k1, k2 = (
        kid(a, noise[:150], tiny_extractor, subsets=10, subset_size=100, seed=3),
        kid(a, noise[:150], tiny_extractor, subsets=10, subset_size=100, seed=3),
    )
    assert k1 == k2
    assert np.array_equal(np.random.get_state()[1], state) and torch.equal(torch.get_rng_state(), torch_state)


def test_results_name_the_feature_network(tiny_extractor, image_sets):
    result = fid(image_sets["a"][:40], image_sets["b"][:40], tiny_extractor)
    assert result.feature_network == "tiny-clip image tower (16-d raw embeddings)"
    assert result.feature_fingerprint == tiny_extractor.fingerprint
    assert "Inception" in result.note and "unavailable offline" in result.note
    assert result.to_dict()["feature_network"] == result.feature_network
    assert "tiny-clip image tower" in str(result) and str(result).startswith("FID")
    assert (
        kid(image_sets["a"][:40], image_sets["b"][:40], tiny_extractor, subsets=5).feature_network
        == result.feature_network
    )


def test_image_features_and_input_errors(tiny_extractor, image_sets):
    uint8 = render(sample_pairs("all", 5, 1, split="val")[1])
    feats = image_features(uint8, tiny_extractor, batch_size=2)
    assert feats.shape == (5, 16) and feats.dtype == np.float64
    assert np.allclose(feats, image_features(image_sets["a"][:5], tiny_extractor), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid(image_sets["a"][:1], image_sets["b"], tiny_extractor)
    with pytest.raises(ValueError, match="at least 2 images"):
        kid(image_sets["a"], image_sets["b"][:1], tiny_extractor)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid(image_sets["a"] * 255, image_sets["b"], tiny_extractor)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        image_features(torch.rand(4, 32, 32), tiny_extractor)
    with pytest.raises(ValueError, match="unavailable offline"):
        get_extractor("inception")
    with pytest.raises(ValueError, match="unknown feature network"):
        get_extractor("vgg")
    with pytest.warns(UserWarning, match="rank-deficient"):
        fid(image_sets["a"][:10], image_sets["b"][:10], tiny_extractor)


def test_reference_cache_reused_and_corruption_recomputed(tiny_extractor, image_sets, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    first = reference_stats("color", n=60, seed=5, extractor=tiny_extractor)
    assert not first.from_cache and first.path.parent == tmp_path / "fid-reference" and first.path.is_file()
    assert first.features.shape == (60, 16) and first.renders == {
        "category": "color",
        "n": 60,
        "seed": 5,
        "split": "val",
    }
    assert np.allclose(first.features, image_features(renders(60, 5, "color"), tiny_extractor), atol=1e-6)
    mtime = first.path.stat().st_mtime_ns

    import evalkit.world

    def no_render(*args, **kwargs):
        raise AssertionError("the cached reference should have been read, not rendered again")

    with monkeypatch.context() as m:
        m.setattr(evalkit.world, "render", no_render)
        second = reference_stats("color", n=60, seed=5, extractor=tiny_extractor)
    assert second.from_cache and second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert np.array_equal(second.features, first.features) and np.array_equal(second.sigma, first.sigma)
    with np.load(first.path, allow_pickle=False) as data:
        assert data["features"].shape == (60, 16)
    # another render set is another file
    assert reference_stats("color", n=61, seed=5, extractor=tiny_extractor).path != first.path

    first.path.write_bytes(b"not an npz file")  # garbage
    with pytest.warns(UserWarning, match="damaged"):
        third = reference_stats("color", n=60, seed=5, extractor=tiny_extractor)
    assert not third.from_cache and np.array_equal(third.features, first.features)

    with np.load(first.path, allow_pickle=False) as data:  # a well-formed file with altered numbers
        arrays = {k: data[k] for k in data.files}
    arrays["mu"] = arrays["mu"] + 1.0
    with open(first.path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.warns(UserWarning, match="checksum"):
        fourth = reference_stats("color", n=60, seed=5, extractor=tiny_extractor)
    assert not fourth.from_cache and np.array_equal(fourth.mu, first.mu)
    assert reference_stats("color", n=60, seed=5, extractor=tiny_extractor).from_cache
    assert not [p for p in first.path.parent.iterdir() if p.suffix == ".tmp"]


def test_fid_against_reference_stats(tiny_extractor, image_sets, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path))
    ref = reference_stats("all", n=200, seed=1, extractor=tiny_extractor)
    assert isinstance(ref, ReferenceStats)
    via_ref = fid(ref, image_sets["b"], tiny_extractor)
    via_images = fid(image_sets["a"], image_sets["b"], tiny_extractor)  # the same renders as the reference
    assert via_ref.value == pytest.approx(via_images.value, rel=1e-6)
    assert via_ref.relative_difference < 0.01
    k = kid(ref, image_sets["noise"], tiny_extractor, subsets=10)
    assert k.relative_difference < 0.01 and k.n_real == 200
    other = FeatureExtractor(WorldCLIP.tiny(embed_dim=16).eval(), name="tiny-clip")
    with pytest.raises(ValueError, match="same extractor"):
        fid(ref, image_sets["b"], other)
    with pytest.raises(ValueError, match="at least 2 renders"):
        reference_stats(n=1, extractor=tiny_extractor)
    assert os.environ["EVALKIT_CACHE_DIR"] == str(tmp_path)
