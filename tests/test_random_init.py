"""``--random-init``: the real-model plugins built at their public architectures with random weights.

Real sizes are only ever built on the meta device here (ViT-bigG/14's text tower plus a 1 B prior is
several GB). Their parameter counts are checked against numbers worked out below from the public
configs by hand (and, to three digits, the public fp32 file sizes), not against the code's output.
"""

import dataclasses
import json
import os

import pytest
from click.testing import CliRunner

from evalkit.cli import cli
from evalkit.contracts import Batch
from tests.conftest import REPO

# --------------------------------------------------------------------------- counts from the public configs


def clip_text_tower(vocab: int, width: int, mlp: int, layers: int, projection: int, tokens: int = 77) -> int:
    """CLIPTextModelWithProjection: embeddings, pre-LN blocks (biased q/k/v/out, two-layer MLP), final LN,
    bias-free projection."""
    block = 2 * width + 4 * (width * width + width) + 2 * width + (width * mlp + mlp) + (mlp * width + width)
    return vocab * width + tokens * width + layers * block + 2 * width + width * projection


def prior_transformer(
    dim: int, heads: int, head_dim: int, layers: int, extra_tokens: int, time: bool, tokens: int = 77
) -> int:
    """diffusers' PriorTransformer layout: proj_in, embedding_proj, encoder_hidden_states_proj (dim → inner),
    positional and prd embeddings, self-attention blocks (LN, biased q/k/v/out, LN, GELU MLP ×4), norm_out,
    proj_to_clip_embeddings; the diffusion prior adds a two-layer time MLP (inner → inner). Trainable parameters:
    the frozen clip_mean/clip_std (2 × dim) are not counted (evalkit.priors.sizes.count_parameters)."""
    inner = heads * head_dim
    block = (
        2 * inner
        + 4 * (inner * inner + inner)
        + 2 * inner
        + (inner * 4 * inner + 4 * inner)
        + (4 * inner * inner + inner)
    )
    total = 3 * (dim * inner + inner) + (tokens + extra_tokens) * inner + inner + layers * block
    total += 2 * inner + (inner * dim + dim)
    if time:
        total += 2 * (inner * inner + inner)
    return total


VIT_L14_TEXT = clip_text_tower(
    49408, 768, 3072, 12, 768
)  # openai/clip-vit-large-patch14 (karlo-v1-alpha text_encoder/)
VIT_BIGG14_TEXT = clip_text_tower(49408, 1280, 5120, 32, 1280)  # kandinsky-2-2-prior text_encoder/
ECLIPSE_768 = prior_transformer(768, 16, 32, 10, 3, time=False)  # ECLIPSE paper size, public ECLIPSE_Karlo_Prior
ECLIPSE_1280 = prior_transformer(1280, 16, 32, 10, 3, time=False)  # ECLIPSE_KandinskyV22_Prior
KARLO_PRIOR = prior_transformer(768, 32, 64, 20, 4, time=True)  # karlo-v1-alpha prior/
KANDINSKY22_PRIOR = prior_transformer(1280, 32, 64, 20, 4, time=True)  # kandinsky-2-2-prior prior/


def test_hand_counts_match_published_sizes():
    """The formulas against published figures: 33.1 M / 34.2 M (ECLIPSE paper), 123.65 M (CLIP ViT-L/14 text
    with projection) and the public fp32 safetensors sizes (GB = 4 bytes × parameters / 1e9)."""
    assert round(ECLIPSE_768 / 1e6, 1) == 33.1 and round(ECLIPSE_1280 / 1e6, 1) == 34.2
    assert (VIT_L14_TEXT, VIT_BIGG14_TEXT) == (123_650_304, 694_659_840)
    for count, gigabytes in (
        (ECLIPSE_768, 0.133),
        (ECLIPSE_1280, 0.137),
        (KARLO_PRIOR, 4.09),
        (KANDINSKY22_PRIOR, 4.1),
        (VIT_L14_TEXT, 0.495),
        (VIT_BIGG14_TEXT, 2.78),
    ):
        assert abs(4 * count / 1e9 - gigabytes) < 0.006, (count, gigabytes)


@pytest.mark.parametrize(
    "name, prior_count, text_count, dim, space",
    [
        ("eclipse-karlo", ECLIPSE_768, VIT_L14_TEXT, 768, "clip-vit-l-14"),
        ("eclipse-kandinsky22", ECLIPSE_1280, VIT_BIGG14_TEXT, 1280, "clip-vit-bigg-14"),
        ("karlo-prior", KARLO_PRIOR, VIT_L14_TEXT, 768, "clip-vit-l-14"),
        ("kandinsky22-prior", KANDINSKY22_PRIOR, VIT_BIGG14_TEXT, 1280, "clip-vit-bigg-14"),
    ],
)
def test_real_size_priors_on_the_meta_device(name, prior_count, text_count, dim, space):
    from evalkit.priors.real import known_checkpoint
    from evalkit.registry import PRIORS

    prior = PRIORS.get(name).random_init("real", device="meta")
    assert prior.num_parameters(trainable_only=True) == prior_count == known_checkpoint(name)["parameters"]
    assert prior.num_parameters() == prior_count + 2 * dim  # + the frozen clip_mean / clip_std
    assert prior.clip.num_text_parameters() == text_count == known_checkpoint(name)["text_encoder_parameters"]
    assert (prior.embedding_dim, prior.embedding_space, prior.clip.context_length, len(prior.clip.tokenizer)) == (
        dim,
        space,
        77,
        49408,
    )
    assert next(prior.model.parameters()).device.type == "meta"
    assert prior.random_weights == {"size": "real", "seed": 0} and prior.training_data() == "none (random weights)"
    if name.endswith("-prior"):  # diffusion: the public UnCLIPScheduler config
        assert prior.scheduler_config["prediction_type"] == "sample"
        assert prior.scheduler_config["clip_sample_range"] == (5.0 if name == "karlo-prior" else 10.0)
        assert prior.model.config["num_embeddings"] + prior.model.config["additional_embeddings"] == 81
    else:
        assert prior.model.config["num_embeddings"] + prior.model.config["additional_embeddings"] == 80


def test_real_size_decoders_on_the_meta_device():
    # karlo-v1-alpha: text encoder + text_proj + decoder UNet + two super-resolution UNets
    # (fp32 files: 3.54 GB, 2.77 GB ×2)
    text_proj = 768 + 2 * (768 * 1280 + 1280) + (768 * 1536 + 1536) + (768 * 4 * 1536 + 4 * 1536) + 2 * 1536
    assert text_proj == 7_878_400  # fp32 file 31.5 MB
    from evalkit.decoders.karlo import KarloDecoder

    karlo = KarloDecoder.random_init(size="real", device="meta")
    unet, super_res = karlo.decoder.num_parameters(), karlo.super_res_first.num_parameters()
    assert abs(4 * unet / 1e9 - 3.54) < 0.006 and abs(4 * super_res / 1e9 - 2.77) < 0.006
    assert karlo.super_res_last.num_parameters() == super_res
    assert karlo.text_encoder.num_parameters() == VIT_L14_TEXT and karlo.text_proj.num_parameters() == text_proj
    assert karlo.num_parameters() == VIT_L14_TEXT + text_proj + unet + 2 * super_res
    assert round(karlo.num_parameters() / 1e9, 2) == 2.40
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    kandinsky = Kandinsky22Decoder.random_init(size="real", device="meta")
    assert kandinsky.unet.num_parameters() == 1_253_057_288 and kandinsky.movq.num_parameters() == 67_832_495
    assert kandinsky.num_parameters() == 1_253_057_288 + 67_832_495


def test_tiny_builds_pair_with_the_tiny_decoders_and_share_a_text_encoder():
    import torch

    from evalkit.contracts import check_embedding_contract
    from evalkit.decoders import load_decoder
    from evalkit.priors import load_prior

    batch = Batch.from_prompts(["a red book and a blue cup"], [3])
    for decoder_name, prior_names in (
        ("karlo", ("eclipse-karlo", "karlo-prior")),
        ("kandinsky22", ("eclipse-kandinsky22", "kandinsky22-prior")),
    ):
        decoder = load_decoder(decoder_name, random_init="tiny")
        priors = [
            load_prior(n, random_init="tiny", num_inference_steps=2, guidance_scale=None, among=prior_names)
            for n in prior_names
        ]
        for prior in priors:
            check_embedding_contract(prior, decoder)
            out = prior.predict(batch)
            assert out.shape == (1, decoder.embedding_dim) and torch.isfinite(out).all()
            assert torch.equal(out, prior.predict(batch))  # seeded
        assert priors[1].num_inference_steps == 2 and priors[1].guidance_scale == 4.0
        # the runner shares one text encoder per space: both priors of a space build the same one from the seed
        a, b = (p.clip.model.state_dict() for p in priors)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def prompts(monkeypatch):
    if not os.environ.get("EVALKIT_PROMPTS_DIR"):
        local = REPO.parent / "shared" / "data" / "t2i-compbench"
        if not local.is_dir():
            pytest.skip("no local copy of the T2I-CompBench prompt files (EVALKIT_PROMPTS_DIR)")
        monkeypatch.setenv("EVALKIT_PROMPTS_DIR", str(local))


@pytest.mark.parametrize(
    "decoder, priors",
    [("karlo", "eclipse-karlo,karlo-prior"), ("kandinsky22", "eclipse-kandinsky22,kandinsky22-prior")],
)
def test_tiny_random_init_run_end_to_end(prompts, tmp_path, decoder, priors):
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--random-init",
            "tiny",
            "--prior",
            priors,
            "--decoder",
            decoder,
            "--scorer",
            "dummy",
            "--suite",
            "t2i-compbench-color",
            "--limit",
            "1",
            "--images-per-prompt",
            "1",
            "--num-inference-steps",
            "2",
            "--prior-num-inference-steps",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["random_init"] == "tiny" and results["protocol"]["random_init"] == "tiny"
    assert results["protocol"]["dtype"] == "float32"  # what the decoder computed in
    assert set(results["priors"]) == set(priors.split(","))
    assert all(info["data"] == "none (random weights)" for info in results["priors"].values())
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2
    assert "Random weights" in (run_dir / "report.md").read_text()
    assert not results["cache"]["enabled"] and not (tmp_path / "cache").exists()  # a speed run times no cache hits


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--random-init", "--decoder", "synth", "--prior", "oracle"], "decoder 'synth' has no random-weight build"),
        (
            ["--random-init", "tiny", "--decoder", "karlo", "--prior", "l14-plain"],
            "prior 'l14-plain' has no random-weight build",
        ),
        (
            ["--random-init", "--decoder", "karlo", "--decoder-path", "DIR", "--prior", "eclipse-karlo"],
            "cannot be combined with --decoder-path",
        ),
        (
            [
                "--random-init",
                "tiny",
                "--decoder",
                "karlo",
                "--prior",
                "eclipse-karlo",
                "--prior-path",
                "eclipse-karlo=DIR",
            ],
            "cannot be combined with --prior-path",
        ),
    ],
)
def test_refused_before_anything_is_written(tmp_path, monkeypatch, extra, message):
    from evalkit.decoders.karlo import KarloDecoder

    from evalkit.registry import PRIORS

    monkeypatch.setattr(KarloDecoder, "random_init", classmethod(lambda cls, **_: pytest.fail("built a decoder")))
    # a prior of Karlo's space without a random-weight build
    PRIORS.register("l14-plain", "evalkit.priors.dummy:DummyPrior", space="clip-vit-l-14", dim=768)
    try:
        result = CliRunner().invoke(
            cli, ["run", *extra, "--suite", "synth-color", "--scorer", "dummy", "--out", str(tmp_path / "runs")]
        )
    finally:
        PRIORS.unregister("l14-plain")
    assert result.exit_code == 2 and message in result.output, result.output
    if "no random-weight build" in message:  # and it names the plugins that have one
        assert ("kandinsky22, karlo" if "decoder" in message else "eclipse-karlo") in result.output
    assert not (tmp_path / "runs").exists()


def test_library_errors():
    from evalkit.errors import EvalkitError
    from evalkit.priors import load_prior
    from evalkit.priors.real import EclipseCheckpointPrior
    from evalkit.harness.runner import RunConfig, check_config

    with pytest.raises(EvalkitError, match="must be real or tiny"):
        check_config(RunConfig(random_init="huge"))
    with pytest.raises(EvalkitError, match="one of real, tiny"):
        load_prior("eclipse-karlo", random_init="huge")
    with pytest.raises(EvalkitError, match="no public architecture"):
        EclipseCheckpointPrior.random_init("tiny")


def test_protocol_records_random_init_and_compare_refuses_to_mix():
    from evalkit.harness.compare import ProtocolMismatchError, compare_results
    from evalkit.contracts import Protocol

    golden = json.loads((REPO / "results" / "golden" / "smoke" / "results.json").read_text())
    assert (
        Protocol(**golden["protocol"]).hash() == golden["protocol_hash"]
    )  # loaded weights: no random_init in the hash
    loaded = Protocol("karlo", 25, 7.5, 256)
    noise = dataclasses.replace(loaded, random_init="tiny")
    assert len({loaded.hash(), noise.hash(), dataclasses.replace(loaded, random_init="real").hash()}) == 3
    row = dict(
        prior="p", suite="s", suite_version="v", category="color", seen="all", metric="m", value=0.5, stderr=0.1, n=4
    )
    runs = [{"protocol_hash": p.hash(), "protocol": dataclasses.asdict(p), "rows": [row]} for p in (loaded, noise)]
    with pytest.raises(ProtocolMismatchError, match="random_init: '' → 'tiny'"):
        compare_results(*runs)
