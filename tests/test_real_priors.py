"""Priors loading public checkpoint layouts: tiny random checkpoints written in those layouts."""

from __future__ import annotations

import shutil

import pytest
import torch

from evalkit.contracts import Batch, EmbeddingSpec, TextEncoder, check_embedding_contract
from evalkit.errors import ConfigMismatchError, EmbeddingContractError, WeightsNotFoundError
from evalkit.priors.real import (
    KNOWN_CHECKPOINTS,
    DiffusionCheckpointPrior,
    EclipseCheckpointPrior,
    HFTextEncoder,
    checkpoint_kind,
    tiny_checkpoint,
)

PROMPTS = ["a red cube", "a blue ball on a green table", "two yellow cats"]


@pytest.fixture(scope="module")
def eclipse_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("eclipse"), "eclipse")


@pytest.fixture(scope="module")
def diffusion_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("diffusion"), "diffusion")


@pytest.fixture(scope="module")
def eclipse(eclipse_dir):
    return EclipseCheckpointPrior(eclipse_dir)


@pytest.fixture(scope="module")
def diffusion(diffusion_dir):
    return DiffusionCheckpointPrior(diffusion_dir, num_inference_steps=4)


def test_public_layout_on_disk(eclipse_dir, diffusion_dir):
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        assert (eclipse_dir / "tokenizer" / name).is_file()
    assert (eclipse_dir / "prior" / "diffusion_pytorch_model.safetensors").is_file()
    assert (diffusion_dir / "scheduler" / "scheduler_config.json").is_file()
    assert checkpoint_kind(eclipse_dir / "prior") == "eclipse"
    assert checkpoint_kind(diffusion_dir / "prior") == "diffusion"


def test_text_encoder(eclipse_dir):
    encoder = HFTextEncoder.from_pretrained(eclipse_dir, "clip-vit-l-14")
    enc = encoder.encode_text(PROMPTS[:2])
    assert enc.text_embeds.shape == (2, 32) and enc.text_hidden.shape == (2, 16, 32)
    assert enc.attention_mask.dtype == torch.bool and enc.attention_mask[0].sum() < enc.attention_mask[1].sum()
    assert encoder.num_text_parameters() > 0
    assert isinstance(encoder, TextEncoder) and encoder.unknown_words("a zebra") == []  # an open vocabulary


@pytest.mark.parametrize("which", ["eclipse", "diffusion"])
def test_predict_shape_seeds_and_batch_independence(which, request):
    prior = request.getfixturevalue(which)
    assert prior.embedding_dim == 32 and prior.text_encoders == ("clip-vit-l-14",)
    batch = Batch.from_prompts(PROMPTS, [0, 1, 2])
    out = prior.predict(batch)
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    again = prior.predict(Batch.from_prompts(PROMPTS, [0, 1, 2]))
    assert torch.equal(out, again)
    alone = prior.predict(Batch.from_prompts([PROMPTS[1]], [1]))
    assert torch.allclose(alone[0], out[1], atol=1e-4)  # float kernels vary with the batch shape
    other_seed = prior.predict(Batch.from_prompts([PROMPTS[1]], [7]))
    assert (other_seed[0] - out[1]).abs().max() > 1e-4  # the seed (ECLIPSE: its noise token) changes the output
    assert prior.num_parameters() > 0


def test_diffusion_checkpoint_refused_as_eclipse(diffusion_dir, eclipse_dir):
    with pytest.raises(ConfigMismatchError, match="time_embedding"):
        EclipseCheckpointPrior(diffusion_dir)
    with pytest.raises(ConfigMismatchError, match="time_embedding"):
        DiffusionCheckpointPrior(eclipse_dir)


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        EclipseCheckpointPrior(missing)


def test_separate_text_encoder_path(eclipse_dir, tmp_path):
    prior_only = tmp_path / "prior-only"
    shutil.copytree(eclipse_dir / "prior", prior_only)  # the ECLIPSE-Community layout: weights at the root
    with pytest.raises(WeightsNotFoundError, match="text_encoder_path"):
        EclipseCheckpointPrior(prior_only)
    prior = EclipseCheckpointPrior(prior_only, text_encoder_path=eclipse_dir)
    assert prior.predict(Batch.from_prompts(PROMPTS[:1], [0])).shape == (1, 32)


def test_pickle_only_refused_by_default(eclipse_dir, tmp_path):
    from safetensors.torch import load_file

    root = tmp_path / "pickled"
    shutil.copytree(eclipse_dir, root)
    weights = root / "prior" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), root / "prior" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(WeightsNotFoundError, match="pickle"):
        EclipseCheckpointPrior(root)
    assert EclipseCheckpointPrior(root, allow_pickle=True).embedding_dim == 32


def test_contract_against_a_decoder_of_another_dim(eclipse):
    decoder = EmbeddingSpec()
    decoder.embedding_space, decoder.embedding_dim, decoder.normalisation = "clip-vit-l-14", 768, "raw"
    with pytest.raises(EmbeddingContractError, match="dimension 32 vs 768"):
        check_embedding_contract(eclipse, decoder)


def test_known_checkpoints_table():
    names = {e["name"] for e in KNOWN_CHECKPOINTS}
    assert names == {"eclipse-kandinsky22", "eclipse-karlo", "kandinsky22-prior", "karlo-prior"}
    for entry in KNOWN_CHECKPOINTS:
        assert entry["pairs_with"] in ("karlo", "kandinsky22")
        assert entry["embedding_dim"] == (1280 if entry["pairs_with"] == "kandinsky22" else 768)
        assert entry["parameters"] is None or entry["parameters"] > 0


@pytest.mark.parametrize("name", ["EclipseKandinskyV22Prior", "EclipseKarloPrior", "Kandinsky22Prior", "KarloPrior"])
def test_registered_classes_build_tiny_and_need_a_path(name, monkeypatch):
    import evalkit.priors.real as real

    cls = getattr(real, name)
    prior = cls.tiny()
    assert prior.embedding_space == real.known_checkpoint(cls.checkpoint)["embedding_space"]
    assert prior.predict(Batch.from_prompts(PROMPTS[:1], [0])).shape == (1, 32)
    monkeypatch.delenv(cls.env_var, raising=False)
    with pytest.raises(WeightsNotFoundError, match=cls.env_var):
        cls()
