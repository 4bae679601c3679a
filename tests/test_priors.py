"""The trained priors: ECLIPSE checkpoint layout, masking, losses, train-baseline (resume, NaN, mismatches)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from evalkit.contracts import Batch, TextEncoding
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.priors.diffusion import DiffusionPrior, DiffusionPriorTransformer
from evalkit.priors.eclipse import EclipsePrior, EclipsePriorTransformer
from evalkit.priors.projection import ProjectionPrior
from evalkit.train.common import TrainingDivergedError
from evalkit.train.priors import PriorTrainConfig, describe, info_nce, ship_prior, train_prior


def small_eclipse(**overrides) -> EclipsePriorTransformer:
    torch.manual_seed(0)
    config = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=12, num_embeddings=5)
    return EclipsePriorTransformer(**{**config, **overrides}).eval()


def test_parameter_names_are_diffusers_prior_transformer_without_time():
    from diffusers import PriorTransformer

    ours = small_eclipse()
    theirs = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        embedding_dim=12,
        num_embeddings=5,
        additional_embeddings=4,
    )
    expected = {k: v.shape for k, v in theirs.state_dict().items() if not k.startswith("time_")}
    expected["positional_embedding"] = torch.Size([1, 5 + 3, 16])  # one token fewer: no time token
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected


def test_public_eclipse_layout_loads(tmp_path):
    """A checkpoint in the ECLIPSE-Community layout (config.json + diffusion_pytorch_model.safetensors)."""
    from safetensors.torch import save_file

    model = small_eclipse()
    config = {
        "_class_name": "PriorTransformer",
        "_diffusers_version": "0.22.0",
        "added_emb_type": "prd",
        "additional_embeddings": 3,
        "attention_head_dim": 8,
        "clip_embed_dim": None,
        "dropout": 0.0,
        "embedding_dim": 12,
        "embedding_proj_dim": None,
        "embedding_proj_norm_type": None,
        "encoder_hid_proj_type": "linear",
        "norm_in_type": None,
        "num_attention_heads": 2,
        "num_embeddings": 5,
        "num_layers": 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "diffusion_pytorch_model.safetensors"),
    )
    loaded = EclipsePriorTransformer.from_pretrained(tmp_path)
    x, text, hidden = torch.randn(2, 12), torch.randn(2, 12), torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(loaded(x, text, hidden, mask), model(x, text, hidden, mask))
    # a pickle-only folder is refused by default
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(WeightsNotFoundError, match="pickle"):
        EclipsePriorTransformer.from_pretrained(tmp_path)
    assert EclipsePriorTransformer.from_pretrained(tmp_path, allow_pickle=True) is not None


def test_config_keys_and_shapes_checked(tmp_path):
    model = small_eclipse()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "PriorTransformer" and config["additional_embeddings"] == 3
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(ConfigMismatchError, match="transformer_blocks.2"):
        EclipsePriorTransformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "time_embed_dim": 7}))
    with pytest.raises(ConfigMismatchError, match="time_embed_dim"):
        EclipsePriorTransformer.from_pretrained(tmp_path)


def test_padding_tokens_are_masked_and_attention_is_causal():
    model = small_eclipse()
    x, text, hidden = torch.randn(1, 12), torch.randn(1, 12), torch.randn(1, 5, 12)
    mask = torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool)
    out = model(x, text, hidden, mask)
    changed = hidden.clone()
    changed[:, 2:] += 5.0  # padding positions
    torch.testing.assert_close(model(x, text, changed, mask), out)
    changed = hidden.clone()
    changed[:, 1] += 5.0  # a real token
    assert not torch.allclose(model(x, text, changed, mask), out)
    # the input noise matters (it is a token the prd token attends to)
    assert not torch.allclose(model(torch.randn(1, 12), text, hidden, mask), out)


def test_paper_sizes_match_the_paper():
    assert (
        describe("eclipse", "paper", 768, 77)["parameters"] == 33_141_504
    )  # paper: 33.1 M (trainable; + 1,536 frozen clip_mean/std)
    info = describe("eclipse", "paper", 1280, 77)
    assert (
        info["parameters"] == 34_190_592
    )  # paper: 34.2 M (trainable; + 2,560 frozen); public 1280-d checkpoint: 137 MB in fp32
    assert abs(info["fp32_mb"] - 137) < 1


def test_info_nce_matches_naive_reference():
    torch.manual_seed(0)
    q, k = torch.randn(5, 4), torch.randn(5, 4)
    same = torch.zeros(5, 5, dtype=torch.bool)
    same[0, 3] = same[3, 0] = True  # items 0 and 3 share a caption
    expected = []
    for i in range(5):
        logits = torch.stack(
            [F.cosine_similarity(q[i], k[j], dim=0) / 0.1 for j in range(5) if j == i or not same[i, j]]
        )
        target = [j for j in range(5) if j == i or not same[i, j]].index(i)
        expected.append(-torch.log_softmax(logits, 0)[target])
    torch.testing.assert_close(info_nce(q, k, 0.1, same), torch.stack(expected).mean())


def test_config_validation():
    assert PriorTrainConfig(prior="eclipse").lam == 0.2 and PriorTrainConfig(prior="projection").lam == 0.0
    with pytest.raises(ValueError, match="λ = 0"):
        PriorTrainConfig(prior="projection", lam=0.2)
    with pytest.raises(ValueError, match="hard-negatives"):
        PriorTrainConfig(prior="diffusion", hard_negatives=True)
    with pytest.raises(KeyError, match="Did you mean 'eclipse'"):
        PriorTrainConfig(prior="eclipes")
    assert PriorTrainConfig(prior="eclipse", hard_negatives=True, size="large").shipped_name() == "eclipse-hn-large"


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """One embedding cache for the module's quick runs, outside the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize("kind", ["eclipse", "projection", "diffusion"])
def test_train_baseline_quick_trains_ships_and_loads(kind, tmp_path, cache_env):
    from evalkit.train.priors import clip_for

    config = PriorTrainConfig.quick(kind, hard_negatives=(kind == "eclipse"))
    final = train_prior(tmp_path / "run", config, progress=False)
    record = json.loads((final / "training_record.json").read_text())
    assert record["num_parameters"] > 0 and record["final_metrics"]["dev_cos"] == record["final_metrics"]["dev_cos"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert ("cls" in rows[-1]) == (kind == "eclipse")
    dest = ship_prior(tmp_path / "run", tmp_path / "shipped")
    cls = {"eclipse": EclipsePrior, "projection": ProjectionPrior, "diffusion": DiffusionPrior}[kind]
    prior = cls(path=dest, clip=clip_for(config))
    out = prior.predict(Batch.from_prompts(["a red circle and a blue square"] * 2, [1, 2]))
    assert out.shape == (2, prior.embedding_dim) and torch.isfinite(out).all()


def test_resume_continues_exactly(tmp_path, cache_env):
    config = PriorTrainConfig.quick("eclipse")
    straight = train_prior(tmp_path / "a", config, progress=False)
    train_prior(tmp_path / "b", config, progress=False, stop_at=3)
    resumed = train_prior(tmp_path / "b", config, resume=True, progress=False)
    a = EclipsePriorTransformer.from_pretrained(straight).state_dict()
    b = EclipsePriorTransformer.from_pretrained(resumed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    with pytest.raises(FileExistsError):
        train_prior(tmp_path / "a", config, progress=False)
    with pytest.raises(ConfigMismatchError, match="lam"):
        train_prior(tmp_path / "a", PriorTrainConfig.quick("eclipse", lam=0.5), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, cache_env, monkeypatch):
    import evalkit.train.priors as trainer

    real = trainer.eclipse_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, report, parts = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), report * float("nan"), parts) if calls["n"] == 5 else (loss, report, parts)

    monkeypatch.setattr(trainer, "eclipse_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match="checkpoint"):
        train_prior(tmp_path / "run", PriorTrainConfig.quick("eclipse"), progress=False)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3  # the last good checkpoint (every 3 steps) is kept
    assert not (tmp_path / "run" / "final").exists()


def test_diffusion_prior_guidance_and_rerank():
    prior = DiffusionPrior.tiny()
    prior.num_inference_steps = 3
    batch = Batch.from_prompts(["a red circle and a blue square", "a green star"], [5, 6])
    encoding = prior.text_encoding(batch)
    guided = prior.sample(encoding, [5, 6])
    prior.guidance_scale = 1.0
    assert not torch.allclose(prior.sample(encoding, [5, 6]), guided)
    prior.guidance_scale, prior.rerank = 4.0, 3
    best = prior.sample(encoding, [5, 6])
    prior.rerank = 1
    candidates = [prior.sample(encoding, [5 + k * 7_919, 6 + k * 7_919]) for k in range(3)]
    text = F.normalize(encoding.text_embeds, dim=-1)
    for i in range(2):
        scores = [float(F.normalize(c[i], dim=0) @ text[i]) for c in candidates]
        torch.testing.assert_close(best[i], candidates[max(range(3), key=scores.__getitem__)][i])


def test_missing_weights_name_the_folder_and_command(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="train-baseline --prior eclipse"):
        EclipsePrior(path=tmp_path / "nowhere")


def test_prior_rejects_mismatched_text_width():
    prior = EclipsePrior.tiny()
    batch = Batch.from_prompts(["a red circle"], [1])
    batch.text["synth-clip"] = TextEncoding(
        "synth-clip", torch.randn(1, 7), torch.randn(1, 20, 7), torch.ones(1, 20, dtype=torch.bool)
    )
    with pytest.raises(ConfigMismatchError, match="32-d"):
        prior.predict(batch)


def test_diffusion_statistics_are_not_trained():
    model = DiffusionPriorTransformer.from_config(
        {"num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 1, "embedding_dim": 12, "num_embeddings": 5}
    )
    assert not model.clip_mean.requires_grad and not model.clip_std.requires_grad


def test_runner_gets_the_text_encoder_from_trained_priors():
    from evalkit.registry import DECODERS
    from evalkit.harness.runner import text_encoders

    prior = EclipsePrior.tiny()
    encoders = text_encoders({"eclipse": prior}, DECODERS.get("dummy").tiny())
    assert encoders == {"synth-clip": prior.clip}


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _assert_same_function(model_class, a_dir: Path, b_dir: Path) -> None:
    """The two trained priors compute the same function (to float tolerance) on random inputs.

    Outputs, not raw weights: an attention key bias gets no gradient in exact arithmetic (softmax ignores it),
    so Adam turns its float-noise gradient into full-size steps that differ with summation order; the
    function does not depend on it."""
    a, b = model_class.from_pretrained(a_dir).eval(), model_class.from_pretrained(b_dir).eval()
    config = a.config
    g = torch.Generator().manual_seed(0)
    n, dim, tokens = 5, config["embedding_dim"], config["num_embeddings"]
    x, text = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    hidden, mask = torch.randn(n, tokens, dim, generator=g), torch.ones(n, tokens, dtype=torch.bool)
    with torch.no_grad():
        if isinstance(a, EclipsePriorTransformer):
            out_a, out_b = (m(x, text, hidden, mask) for m in (a, b))
        else:
            t = torch.tensor([10, 200, 400, 700, 999])
            out_a, out_b = (
                m(
                    x, t, proj_embedding=text, encoder_hidden_states=hidden, attention_mask=mask
                ).predicted_image_embedding
                for m in (a, b)
            )
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-4)


def test_two_process_training_matches_one_process_and_resumes(tmp_path, cache_env):
    """torchrun on 2 CPU processes (gloo, DDP): stopped at step 3 and resumed, the loss curve and the final
    weights equal the single-process run's within float tolerance (the contrastive term sees the whole batch)."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    config = PriorTrainConfig.quick("eclipse", hard_negatives=True, tiny=False)  # the CLI's --quick: the world CLIP
    single = train_prior(tmp_path / "one", config, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = [
        torchrun,
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "evalkit",
        "train-baseline",
        "--prior",
        "eclipse",
        "--quick",
        "--hard-negatives",
        "--out",
        str(tmp_path / "two"),
    ]
    for extra in (["--stop-at", "3"], ["--resume"]):
        done = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "prior saved to" in done.stdout and done.stdout.count("prior saved to") == 1  # process 0 alone reports
    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["step"] for r in two] == list(range(1, config.steps + 1))
    for a, b in zip(one, two):
        for key in ("loss", "mse", "cls", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    record = json.loads((tmp_path / "two" / "final" / "training_record.json").read_text())
    assert record["processes"] == 2
    _assert_same_function(EclipsePriorTransformer, single, tmp_path / "two" / "final")


@pytest.mark.parametrize("kind", ["projection", "diffusion"])
def test_gradient_accumulation_equals_the_whole_batch(kind, tmp_path, cache_env):
    """With a per-pair loss (MSE), 4 micro-batches of 2 give the gradient of the batch of 8."""
    whole = train_prior(tmp_path / "whole", PriorTrainConfig.quick(kind), progress=False)
    accumulated = train_prior(tmp_path / "acc", PriorTrainConfig.quick(kind, grad_accum_steps=4), progress=False)
    for a, b in zip(_log(tmp_path / "whole"), _log(tmp_path / "acc")):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-6)
    from evalkit.train.priors import prior_class

    _assert_same_function(prior_class(PriorTrainConfig.quick(kind)).model_class, whole, accumulated)
    with pytest.raises(ValueError, match="divisible"):
        train_prior(tmp_path / "bad", PriorTrainConfig.quick(kind, grad_accum_steps=3), progress=False)


def test_cli_resume_needs_only_the_run_folder(tmp_path, cache_env):
    """`train-baseline --resume` takes the run's own settings: a run started with --lam 0.5 resumes without
    repeating it (and ends as the uninterrupted run), while a flag that contradicts the run is refused."""
    from click.testing import CliRunner

    from evalkit.cli import cli

    runner = CliRunner()
    start = ["train-baseline", "--prior", "eclipse", "--quick", "--lam", "0.5", "--threads", "1"]
    done = runner.invoke(cli, [*start, "--out", str(tmp_path / "straight")])
    assert done.exit_code == 0, done.output
    done = runner.invoke(cli, [*start, "--out", str(tmp_path / "run"), "--stop-at", "3"])
    assert done.exit_code == 0, done.output
    refused = runner.invoke(
        cli, ["train-baseline", "--prior", "projection", "--out", str(tmp_path / "run"), "--resume"]
    )
    assert refused.exit_code != 0 and "prior: run has 'eclipse', asked 'projection'" in refused.output
    refused = runner.invoke(
        cli, ["train-baseline", "--prior", "eclipse", "--lam", "0.2", "--out", str(tmp_path / "run"), "--resume"]
    )
    assert refused.exit_code != 0 and "lam: run has 0.5, asked 0.2" in refused.output
    done = runner.invoke(cli, ["train-baseline", "--prior", "eclipse", "--out", str(tmp_path / "run"), "--resume"])
    assert done.exit_code == 0, done.output
    a = EclipsePriorTransformer.from_pretrained(tmp_path / "straight" / "final").state_dict()
    b = EclipsePriorTransformer.from_pretrained(tmp_path / "run" / "final").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
