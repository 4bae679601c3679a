"""The embedded synth decoder (Kandinsky-2.2-style conditioning, DDIM + CFG) and its trainer."""

import dataclasses
import json
import shutil

import pytest
import torch

from evalkit.contracts import Batch, Protocol
from evalkit.decoders import synth
from evalkit.decoders.synth import SynthDecoder
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.train import world_decoder
from evalkit.train.common import TrainingDivergedError
from evalkit.train.world_decoder import DecoderTrainConfig, train_decoder


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models are overhead-bound: one thread is faster, and immune to a busy machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    return SynthDecoder.tiny().eval()


def embeds(n, dim=16, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * 5


def protocol(steps, guidance):
    return Protocol(
        decoder="synth", num_inference_steps=steps, guidance_scale=guidance, resolution=32, images_per_prompt=1
    )


def count_unet_calls(decoder):
    calls = []
    original = decoder.unet.forward

    def forward(sample, timestep, *args, **kwargs):
        calls.append(
            (
                sample.shape[0],
                kwargs.get("encoder_hidden_states", "missing"),
                kwargs["added_cond_kwargs"]["image_embeds"].clone(),
            )
        )
        return original(sample, timestep, *args, **kwargs)

    decoder.unet.forward = forward
    return calls, lambda: delattr(decoder.unet, "forward")


def test_declared_contract(decoder):
    assert (decoder.name, decoder.embedding_space, decoder.normalisation) == ("synth", "synth-clip", "raw")
    assert decoder.embedding_dim == 16 and decoder.resolution == 32
    cfg = decoder.unet.config
    assert (cfg.encoder_hid_dim_type, cfg.addition_embed_type, cfg.encoder_hid_dim) == ("image_proj", "image", 16)
    assert 10_000 < decoder.num_parameters() < 200_000
    full = SynthDecoder()
    assert full.embedding_dim == 128 and full.num_parameters() == 3_941_091  # the shipped architecture


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("steps", [2, 5])
def test_decode_steps_and_guidance(decoder, steps, guidance):
    e = embeds(3)
    calls, restore = count_unet_calls(decoder)
    try:
        images = decoder.decode(e, Batch.from_prompts(["x"] * 3, [1, 2, 3]), protocol(steps, guidance))
    finally:
        restore()
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
    assert len(calls) == steps  # DDIM steps honoured; CFG batched into one call per step
    for size, hidden, cond in calls:
        assert hidden is None  # Kandinsky 2.2: conditioning only through added_cond_kwargs
        if guidance > 1:
            assert size == 6
            assert torch.equal(cond[:3], torch.zeros(3, 16)) and torch.equal(cond[3:], e)  # uncond = zeros
        else:
            assert size == 3 and torch.equal(cond, e)


def test_guidance_changes_images_and_zero_embedding_is_unconditional(decoder):
    e, b = embeds(2), Batch.from_prompts(["x"] * 2, [5, 6])
    plain = decoder.decode(e, b, protocol(3, 1.0))
    guided = decoder.decode(e, b, protocol(3, 4.0))
    assert not torch.allclose(plain, guided)
    # guidance extrapolates from the zero embedding: decoding zeros is unaffected by the scale
    zeros = torch.zeros(2, 16)
    torch.testing.assert_close(decoder.decode(zeros, b, protocol(3, 1.0)), decoder.decode(zeros, b, protocol(3, 4.0)))


def test_decode_rejects_bad_inputs(decoder):
    b = Batch.from_prompts(["x"] * 2, [1, 2])
    with pytest.raises(ValueError, match="16"):
        decoder.decode(torch.zeros(2, 8), b, protocol(2, 1.0))
    with pytest.raises(ValueError, match="64"):
        decoder.decode(embeds(2), b, Protocol("synth", 2, 1.0, 64))


def test_sampler_recovers_the_target_of_an_exact_denoiser(decoder):
    # for a one-image data set the optimal noise prediction is known in closed form: DDIM must land on the image
    from types import SimpleNamespace

    target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    alphas = decoder.training_scheduler().alphas_cumprod

    def exact_unet(sample, t, encoder_hidden_states=None, added_cond_kwargs=None):
        a = alphas[int(t)]
        return SimpleNamespace(
            sample=(sample - a.sqrt() * target.repeat(sample.shape[0] // 2, 1, 1, 1)) / (1 - a).sqrt()
        )

    for steps, guidance in ((4, 1.0), (25, 3.0)):
        out = synth.sample_image_conditioned(
            exact_unet,
            decoder.sampling_scheduler(),
            torch.ones(2, 16),
            torch.zeros(2, 16),
            torch.randn(2, 3, 32, 32),
            steps,
            guidance,
        )
        torch.testing.assert_close(out, target, atol=1e-5, rtol=0)


def test_chunked_decoding_matches(decoder):
    e, b = embeds(5), Batch.from_prompts(["x"] * 5, list(range(5)))
    whole = decoder.decode(e, b, protocol(2, 2.0))
    decoder.config.max_batch = 2
    try:
        torch.testing.assert_close(decoder.decode(e, b, protocol(2, 2.0)), whole)
    finally:
        decoder.config.max_batch = 256


def test_bfloat16_sampling_stays_close_to_float32_and_keeps_float32_weights(decoder, tmp_path):
    decoder.save_pretrained(tmp_path / "w")
    bf16 = SynthDecoder.from_pretrained(tmp_path / "w", sampling_dtype="bfloat16")
    assert (decoder.compute_dtype, bf16.compute_dtype) == ("float32", "bfloat16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    e, b = embeds(4), Batch.from_prompts(["x"] * 4, [1, 2, 3, 4])
    reference, images = decoder.decode(e, b, protocol(3, 2.0)), bf16.decode(e, b, protocol(3, 2.0))
    assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
    other_seeds = decoder.decode(e, Batch.from_prompts(["x"] * 4, [5, 6, 7, 8]), protocol(3, 2.0))
    difference, unrelated = (images - reference).abs().mean(), (other_seeds - reference).abs().mean()
    assert 0 < difference < unrelated / 4  # the UNet really ran in bfloat16, and the images moved little
    torch.testing.assert_close(bf16.decode(e, b, protocol(3, 2.0)), images)  # deterministic
    bf16.save_pretrained(tmp_path / "bf16")
    assert SynthDecoder.from_pretrained(tmp_path / "bf16").compute_dtype == "bfloat16"  # stored in config.json
    with pytest.raises(ValueError, match="float16.*not one of float32, bfloat16"):
        SynthDecoder.from_pretrained(tmp_path / "w", sampling_dtype="float16")


def test_fp16_weights_load_as_float32(decoder, tmp_path):
    decoder.save_pretrained(tmp_path / "w", dtype=torch.float16)
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float16 for t in load_file(str(tmp_path / "w" / "model.safetensors")).values())
    loaded = SynthDecoder.from_pretrained(tmp_path / "w")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.config == decoder.config  # tuples survive the JSON round trip
    e, b = embeds(2), Batch.from_prompts(["x"] * 2, [1, 2])
    torch.testing.assert_close(
        loaded.decode(e, b, protocol(2, 2.0)), decoder.decode(e, b, protocol(2, 2.0)), atol=2e-2, rtol=0
    )


def test_missing_weights_name_the_path_and_the_command(tmp_path, monkeypatch):
    missing = tmp_path / "weights" / "decoder"
    monkeypatch.setattr(synth, "SHIPPED_DIR", missing)
    for call in (lambda: SynthDecoder.from_pretrained(), lambda: SynthDecoder.from_pretrained(missing)):
        with pytest.raises(WeightsNotFoundError) as info:
            call()
        assert str(missing) in str(info.value) and "evalkit train-world decoder" in str(info.value)


def test_default_weights_folder():
    assert synth.SHIPPED_DIR.parts[-4:] == ("evalkit", "world", "weights", "decoder")


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder") / "run"
    final = train_decoder(out, DecoderTrainConfig.quick(), progress=False)
    return out, final


def load_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_quick_training_writes_everything(quick_run):
    out, final = quick_run
    config = DecoderTrainConfig.quick()
    assert final == out / "final"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["loss"] > 0 for r in rows)
    evals = [r for r in rows if "eval/recon_cos" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(0 <= r["eval/swap_acc"] <= 1 for r in evals)
    assert (out / "samples" / "step-000006.png").is_file()
    for name in ("config.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"):
        assert (out / "checkpoint" / name).is_file()
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == config.steps
    assert len(list((out / "cache").glob("embeddings-*.safetensors"))) == 1
    record = json.loads((final / "training_record.json").read_text())
    assert record["num_parameters"] > 0 and record["wall_time_s"] > 0 and record["config"]["steps"] == config.steps
    model = SynthDecoder.from_pretrained(final)
    images = model.decode(embeds(2), Batch.from_prompts(["x"] * 2, [1, 2]), protocol(2, 2.0))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    # training moved the weights away from the initialisation (same seed, same init)
    world_decoder.set_seed(config.seed)
    init = world_decoder.build_decoder(config, 16).state_dict()
    trained = load_tensors(out / "checkpoint")
    assert init.keys() == trained.keys() and any(not torch.equal(v, trained[k]) for k, v in init.items())


def test_refuses_to_overwrite_another_run(quick_run):
    out, _ = quick_run
    with pytest.raises(FileExistsError, match="--resume"):
        train_decoder(out, DecoderTrainConfig.quick(), progress=False)


def test_resume_gives_the_uninterrupted_result(quick_run, tmp_path):
    out, final = quick_run
    config = DecoderTrainConfig.quick()
    stopped = train_decoder(tmp_path / "run", config, progress=False, stop_at=4)
    assert stopped == tmp_path / "run" / "checkpoint" and not (tmp_path / "run" / "final").exists()
    assert json.loads((stopped / "trainer_state.json").read_text())["step"] == 4
    with pytest.raises(ConfigMismatchError, match="batch_size"):
        train_decoder(tmp_path / "run", dataclasses.replace(config, batch_size=4), resume=True, progress=False)
    resumed = train_decoder(tmp_path / "run", config, resume=True, progress=False)
    expected, got = load_tensors(final), load_tensors(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    losses = lambda run: [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "run") == losses(out)


def test_constant_lr_run_extends_with_resume_and_ships(quick_run, tmp_path):
    out, _ = quick_run
    config = DecoderTrainConfig.quick()
    cosine = dataclasses.replace(config, lr_schedule="cosine")
    train_decoder(tmp_path / "cos", cosine, progress=False, stop_at=1)
    with pytest.raises(ConfigMismatchError, match="steps"):  # a cosine schedule is tied to its length
        train_decoder(
            tmp_path / "cos", dataclasses.replace(config, lr_schedule="cosine", steps=8), resume=True, progress=False
        )
    run = tmp_path / "run"
    shutil.copytree(out, run)
    final = train_decoder(run, dataclasses.replace(config, steps=config.steps + 2), resume=True, progress=False)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 3))
    assert json.loads((final / "training_record.json").read_text())["config"]["steps"] == config.steps + 2
    shipped = world_decoder.ship_decoder(run, tmp_path / "shipped")
    assert (shipped / "training_record.json").is_file()
    assert SynthDecoder.from_pretrained(shipped).unet.conv_in.weight.dtype == torch.float32


def test_nan_loss_stops_training(tmp_path, monkeypatch):
    monkeypatch.setattr(world_decoder, "diffusion_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDivergedError, match="step 0"):
        train_decoder(tmp_path / "run", DecoderTrainConfig.quick(), progress=False)


def test_bf16_autocast_training_runs_and_keeps_float32_weights(tmp_path):
    config = dataclasses.replace(DecoderTrainConfig.quick(), mixed_precision="bf16", steps=3, eval_every=3)
    final = train_decoder(tmp_path / "run", config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    fp32 = train_decoder(tmp_path / "fp32", dataclasses.replace(config, mixed_precision="no"), progress=False)
    fp32_rows = [json.loads(line) for line in (tmp_path / "fp32" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] > 0 for r in rows) and [r["loss"] for r in rows] != [r["loss"] for r in fp32_rows]
    assert rows[0]["loss"] == pytest.approx(fp32_rows[0]["loss"], rel=0.05)  # same batch and noise, bf16 rounding
    assert load_tensors(tmp_path / "run" / "checkpoint")["unet.conv_in.weight"].dtype == torch.float32
    assert SynthDecoder.from_pretrained(final).num_parameters() == SynthDecoder.from_pretrained(fp32).num_parameters()
    with pytest.raises(ValueError, match="mixed_precision"):
        train_decoder(tmp_path / "bad", dataclasses.replace(config, mixed_precision="fp8"), progress=False)


def test_cli_decoder_config_sets_the_architecture_and_rejects_bad_json(tmp_path):
    from click.testing import CliRunner

    from evalkit.cli import cli

    base = ["train-world", "decoder", "--quick", "--steps", "1"]
    result = CliRunner().invoke(
        cli, [*base, "--out", str(tmp_path / "run"), "--decoder-config", '{"block_out_channels": [12, 24]}']
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["block_out_channels"] == [12, 24]
    result = CliRunner().invoke(
        cli, [*base, "--out", str(tmp_path / "bad"), "--decoder-config", "{block_out_channels: 1}"]
    )
    assert result.exit_code == 2 and "not JSON" in result.output
    result = CliRunner().invoke(
        cli, [*base, "--out", str(tmp_path / "bad2"), "--decoder-config", '{"widths": [12, 24]}']
    )
    assert result.exit_code != 0 and "widths" in result.output


def test_final_from_checkpoint_takes_the_ema_weights_of_a_stopped_run(quick_run, tmp_path):
    _, base = quick_run
    config = dataclasses.replace(DecoderTrainConfig.quick(), init_from=str(base))
    stopped = train_decoder(tmp_path / "run", config, progress=False, stop_at=4)
    final = world_decoder.final_from_checkpoint(tmp_path / "run")
    model = SynthDecoder.from_pretrained(final)
    holder = world_decoder.build_decoder(config, 16)
    from evalkit.train.common import load_checkpoint

    shadow = load_checkpoint(stopped, holder)["extra"]["ema"]
    assert shadow.keys() <= model.state_dict().keys()
    for key, value in shadow.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert json.loads((final / "training_record.json").read_text())["stopped_at_step"] == 4


def test_load_decoder_refuses_memory_levers_and_other_resolutions():
    from evalkit.decoders import load_decoder
    from evalkit.errors import SettingError

    for lever, value in (("offload", True), ("attention", "sdpa"), ("vae_chunk_size", 4)):
        with pytest.raises(SettingError, match=f"'synth' has no {lever} setting: it applies to .*kandinsky22"):
            load_decoder("synth", **{lever: value})
    with pytest.raises(SettingError, match="'synth' renders 32×32 only; --resolution 64 does not apply"):
        load_decoder("synth", resolution=64)
    assert load_decoder("synth", resolution=32).resolution == 32


def test_placement_sets_the_sampling_dtype_and_keeps_float32_weights(decoder):
    from evalkit.placement import place

    copy = SynthDecoder.tiny()
    copy.load_state_dict(decoder.state_dict())
    assert place(copy, "cpu", "bfloat16", role="decoder")["dtype"] == "bfloat16"
    assert (copy.config.sampling_dtype, copy.compute_dtype) == ("bfloat16", "bfloat16")
    assert all(p.dtype == torch.float32 for p in copy.parameters())
    e, b = embeds(2), Batch.from_prompts(["x"] * 2, [1, 2])
    bf16 = copy.decode(e, b, protocol(2, 2.0))
    place(copy, "cpu", "float32", role="decoder")
    assert torch.equal(copy.decode(e, b, protocol(2, 2.0)), decoder.decode(e, b, protocol(2, 2.0)))
    assert not torch.equal(bf16, decoder.decode(e, b, protocol(2, 2.0)))


def test_cli_resume_takes_the_runs_own_settings(quick_run, tmp_path):
    """`train-world decoder --out RUN --resume` continues a run started with non-default flags (cosine schedule)
    without repeating them; a flag that contradicts the run is still refused."""
    from click.testing import CliRunner

    from evalkit.cli import cli

    runner = CliRunner()
    run = str(tmp_path / "run")
    done = runner.invoke(
        cli, ["train-world", "decoder", "--quick", "--out", run, "--lr-schedule", "cosine", "--stop-at", "2"]
    )
    assert done.exit_code == 0, done.output
    refused = runner.invoke(cli, ["train-world", "decoder", "--out", run, "--resume", "--lr-schedule", "constant"])
    assert refused.exit_code != 0 and "lr_schedule: run has 'cosine', asked 'constant'" in refused.output
    done = runner.invoke(cli, ["train-world", "decoder", "--out", run, "--resume", "--threads", "1"])
    assert done.exit_code == 0, done.output
    config = json.loads((tmp_path / "run" / "final" / "training_record.json").read_text())["config"]
    assert config["lr_schedule"] == "cosine" and config["steps"] == DecoderTrainConfig.quick().steps
