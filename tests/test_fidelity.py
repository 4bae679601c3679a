"""Numbers comparable with the public code: the Kandinsky 2.2 prior pipelines' zero-image negative, the ECLIPSE
prior without a text mask, checkpoint labels only for verified weights, one definition of a parameter count.
Tiny models in the public layouts, built here."""

import json

import pytest
import torch
from click.testing import CliRunner

from evalkit.cli import cli

DIM = 16  # Kandinsky22Decoder.tiny()'s embedding width


def image_encoder(folder):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(3)
    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=DIM,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def kandinsky_prior_folder(tmp_path_factory):
    """A kandinsky-2-2-prior layout: prior/, scheduler/, text_encoder/, tokenizer/, image_encoder/."""
    from evalkit.priors.real import tiny_checkpoint

    root = tiny_checkpoint(tmp_path_factory.mktemp("k22prior"), kind="diffusion", embedding_dim=DIM)
    image_encoder(root / "image_encoder")
    return root


def test_the_zero_image_negative_is_the_public_pipelines(kandinsky_prior_folder):
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

    from evalkit.priors.real import Kandinsky22Prior

    root = kandinsky_prior_folder
    pipeline = KandinskyV22PriorPipeline(
        prior=PriorTransformer.from_pretrained(root / "prior"),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder"),
        text_encoder=CLIPTextModelWithProjection.from_pretrained(root / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer"),
        scheduler=UnCLIPScheduler.from_pretrained(root / "scheduler"),
        image_processor=CLIPImageProcessor(),
    )
    reference = pipeline.get_zero_embed(batch_size=1, device="cpu")[0]
    prior = Kandinsky22Prior(root)
    assert prior.negative == "zero-image"
    assert torch.allclose(prior.zero_image_embedding(), reference, atol=1e-6)


def test_a_run_gives_kandinsky_the_negative_of_the_priors_pipeline(kandinsky_prior_folder, tmp_path, monkeypatch):
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    Kandinsky22Decoder.tiny().save_pretrained(tmp_path / "k22")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red car and a blue bench\n")
    runs = {}
    for negative in (None, "empty-prompt"):
        out = tmp_path / f"runs-{negative}"
        flags = ["--negative", negative] if negative else []
        result = CliRunner().invoke(
            cli,
            [
                "run",
                "--prior",
                "diffusion",
                "--prior-path",
                f"kandinsky22-prior={kandinsky_prior_folder}",
                "--decoder",
                "kandinsky22",
                "--decoder-path",
                str(tmp_path / "k22"),
                "--prompts",
                str(prompts),
                "--category",
                "color",
                "--scorer",
                "dummy",
                "--images-per-prompt",
                "1",
                "--num-inference-steps",
                "2",
                "--prior-num-inference-steps",
                "2",
                "--no-cache",
                "--out",
                str(out),
                *flags,
            ],
        )
        assert result.exit_code == 0, result.output
        [run_dir] = list(out.iterdir())
        runs[negative] = run_dir, json.loads((run_dir / "results.json").read_text())
    (default_dir, default), (empty_dir, empty) = runs[None], runs["empty-prompt"]
    assert default["priors"]["kandinsky22-prior"]["negative"] == "zero-image" and default["protocol"]["negative"] == ""
    assert empty["priors"]["kandinsky22-prior"]["negative"] == "empty-prompt"
    assert empty["protocol"]["negative"] == "empty-prompt" and empty["protocol_hash"] != default["protocol_hash"]
    image = "images/kandinsky22-prior/prompts-p/color-val-0000_42.png"
    assert (default_dir / image).read_bytes() != (empty_dir / image).read_bytes()  # guidance 4: the negative matters


def test_kandinsky_decoder_takes_the_negative_as_an_argument():
    from evalkit.contracts import Batch, Protocol
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    decoder = Kandinsky22Decoder.tiny()
    protocol = Protocol(decoder="kandinsky22", num_inference_steps=2, guidance_scale=4.0, resolution=decoder.resolution)
    batch = Batch.from_prompts(["a", "b"], seeds=[1, 2])
    embeds, negative = torch.randn(2, DIM), torch.randn(DIM)
    one = decoder.decode(embeds, batch, protocol, negative_image_embeds=negative)
    assert torch.equal(one, decoder.decode(embeds, batch, protocol, negative_image_embeds=negative.expand(2, -1)))
    assert not torch.equal(one, decoder.decode(embeds, batch, protocol))  # the folder's zeros
    with pytest.raises(Exception, match="negative image embedding must be"):
        decoder.decode(embeds, batch, protocol, negative_image_embeds=torch.zeros(DIM + 1))


def test_eclipse_prior_without_a_text_mask_applies_no_mask():
    """As upstream (and diffusers' PriorTransformer): the causal mask comes only with the text's attention mask."""
    from evalkit.priors.eclipse import EclipsePriorTransformer

    torch.manual_seed(0)  # two layers: with one, the prd token (the last) sees every token under either mask
    model = EclipsePriorTransformer(
        num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=16, num_embeddings=8
    ).eval()
    torch.nn.init.normal_(model.positional_embedding, std=0.5)
    n, d = 2, model.config["embedding_dim"]
    noise, text = torch.randn(n, d), torch.randn(n, d)
    hidden = torch.randn(n, model.config["num_embeddings"], d)
    without = model(noise, text, hidden, None)
    with_mask = model(noise, text, hidden, torch.ones(n, hidden.shape[1], dtype=torch.bool))
    assert not torch.allclose(without, with_mask)  # the causal mask matters, and is only applied with a text mask
    model.causal_attention_mask.zero_()  # no causal mask at all: the unmasked call must not change
    assert torch.equal(model(noise, text, hidden, None), without)


def test_checkpoint_facts_only_for_verified_weights(tmp_path, monkeypatch):
    import hashlib

    from evalkit.priors import real
    from evalkit.priors.real import EclipseKarloPrior, tiny_checkpoint

    folder = tiny_checkpoint(tmp_path / "eclipse", kind="eclipse")
    prior = EclipseKarloPrior(folder)
    assert prior.training_data() == "unknown (weights not verified as ECLIPSE-Community/ECLIPSE_Karlo_Prior)"
    digest = hashlib.sha256((folder / "prior" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    entries = [dict(e, weights_sha256=digest) if e["name"] == "eclipse-karlo" else e for e in real.KNOWN_CHECKPOINTS]
    monkeypatch.setattr(real, "KNOWN_CHECKPOINTS", entries)
    assert EclipseKarloPrior(folder).training_data() == "5M image-text pairs"  # the public weights: its facts


def test_a_parameter_count_is_the_trainable_one_everywhere():
    import re
    import types

    from evalkit.priors import load_prior
    from evalkit.priors.sizes import count_parameters
    from evalkit.harness.runner import prior_info
    from tests.conftest import REPO

    for name in ("eclipse", "diffusion"):
        prior = load_prior(name)
        trainable, frozen = count_parameters(prior.model)
        assert frozen == 2 * prior.embedding_dim  # clip_mean / clip_std
        record = json.loads((prior.path / "training_record.json").read_text())
        assert record["num_trainable_parameters"] == trainable == prior.num_parameters(trainable_only=True)
        no_decoder = types.SimpleNamespace(num_parameters=lambda: 0)
        assert prior_info(prior, {}, no_decoder)["trainable_parameters"] == trainable
    readme = (REPO / "README.md").read_text()
    for name in ("eclipse", "projection", "eclipse-hn"):  # both README tables give one number for a prior
        counts = set(re.findall(rf"^\| {name}(?: \(3 seeds\))? \| ([\d,]+) \|", readme, flags=re.M))
        assert counts == {"134,720"}, (name, counts)
