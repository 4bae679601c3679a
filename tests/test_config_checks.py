"""Hostile weights folders and options: every bad config.json, pickle or option is a one-line error naming
the file and the key, refused before anything real is allocated (the model is built on the meta device and
compared with the safetensors header first)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from evalkit.errors import ConfigMismatchError, CorruptFileError, EvalkitError
from evalkit.priors.diffusion import DiffusionPriorTransformer
from evalkit.priors.eclipse import EclipsePriorTransformer

TINY_PRIOR = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=12, num_embeddings=5)


@pytest.fixture
def no_real_allocation(monkeypatch):
    """Fails the test if a loader builds the model for real (anything but the meta build) before refusing."""
    import evalkit.serialization as serialization

    real_build = serialization.build_checked

    def build_checked(build, raw, weights, where, what):
        def guarded(config):
            if torch.empty(0).device.type != "meta":
                raise AssertionError(f"{what} was built for real from a config that does not fit its weights")
            return build(config)

        return real_build(guarded, raw, weights, where, what)

    monkeypatch.setattr(serialization, "build_checked", build_checked)


def edit_config(folder: Path, **changes) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def eclipse_dir(tmp_path):
    torch.manual_seed(0)
    EclipsePriorTransformer(**TINY_PRIOR).save_pretrained(tmp_path / "eclipse")
    return tmp_path / "eclipse"


@pytest.fixture
def decoder_dir(tmp_path):
    from evalkit.decoders.synth import SynthDecoder

    torch.manual_seed(0)
    SynthDecoder.tiny().save_pretrained(tmp_path / "decoder")
    return tmp_path / "decoder"


# --------------------------------------------------------------------------- sizes checked against the header


def test_huge_embedding_dim_is_refused_from_the_header(eclipse_dir, no_real_allocation):
    path = edit_config(eclipse_dir, embedding_dim=1_000_000_000)  # 256 GB if allocated
    with pytest.raises(ConfigMismatchError) as caught:
        EclipsePriorTransformer.from_pretrained(eclipse_dir)
    message = str(caught.value)
    assert str(path) in message and "embedding_dim = 1000000000" in message
    assert "proj_in.weight: expected (16, 1000000000), found (16, 12)" in message


def test_num_embeddings_is_refused_before_anything_is_allocated(eclipse_dir, no_real_allocation):
    path = edit_config(eclipse_dir, num_embeddings=20000)  # the causal mask alone: 1.6 GB
    with pytest.raises(ConfigMismatchError, match="num_embeddings = 20000") as caught:
        EclipsePriorTransformer.from_pretrained(eclipse_dir)
    assert str(path) in str(caught.value) and "positional_embedding" in str(caught.value)


def test_a_billion_layers_stop_at_once(eclipse_dir):
    path = edit_config(eclipse_dir, num_layers=100_000_000)
    with pytest.raises(ConfigMismatchError, match="num_layers = 100000000") as caught:
        EclipsePriorTransformer.from_pretrained(eclipse_dir)
    assert str(path) in str(caught.value) and "far more tensors" in str(caught.value)


def test_diffusion_prior_sizes_are_checked_the_same_way(tmp_path, no_real_allocation):
    DiffusionPriorTransformer.from_config(TINY_PRIOR).save_pretrained(tmp_path)
    path = edit_config(tmp_path, embedding_dim=1_000_000_000)
    with pytest.raises(ConfigMismatchError, match=f"{path}: embedding_dim = 1000000000"):
        DiffusionPriorTransformer.from_pretrained(tmp_path)


def test_trained_prior_path_names_the_config(eclipse_dir):
    from evalkit.world.models.clip import WorldCLIP
    from evalkit.priors.eclipse import EclipsePrior

    path = edit_config(eclipse_dir, embedding_dim=1_000_000_000)
    with pytest.raises(ConfigMismatchError, match="embedding_dim = 1000000000") as caught:
        EclipsePrior(path=eclipse_dir, clip=WorldCLIP.tiny(embed_dim=12))
    assert str(path) in str(caught.value)


def test_decoder_block_out_channels_of_a_million(decoder_dir, no_real_allocation):
    from evalkit.decoders.synth import SynthDecoder

    path = edit_config(decoder_dir, block_out_channels=[8, 1_000_000])  # terabytes if allocated
    with pytest.raises(ConfigMismatchError) as caught:
        SynthDecoder.from_pretrained(decoder_dir)
    assert f"{path}: block_out_channels[1] = 1000000 does not match the weights" in str(caught.value)
    edit_config(decoder_dir, block_out_channels=[8, 1e6])  # JSON 1e6 is a float
    with pytest.raises(
        ConfigMismatchError, match=r"block_out_channels = \[8, 1000000.0\]: item 1 .* must be an integer"
    ):
        SynthDecoder.from_pretrained(decoder_dir)


def test_decoder_path_through_load_decoder_names_the_key(decoder_dir):
    from evalkit.decoders import load_decoder

    path = edit_config(decoder_dir, embedding_dim=1_000_000_000)
    with pytest.raises(ConfigMismatchError, match=f"{path}: embedding_dim = 1000000000"):
        load_decoder("synth", decoder_dir)


def test_world_clip_sizes(tmp_path, no_real_allocation):
    from evalkit.world.models.clip import WorldCLIP

    WorldCLIP.tiny().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["model_cfg"]["text_cfg"]["context_length"] = 20000
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigMismatchError, match=f"{path}: model_cfg.text_cfg.context_length = 20000"):
        WorldCLIP.from_pretrained(tmp_path)
    config["model_cfg"] = "ViT-B-32"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigMismatchError, match="model_cfg = 'ViT-B-32': must be a JSON object"):
        WorldCLIP.from_pretrained(tmp_path)


def test_binding_scorer_widths(tmp_path, no_real_allocation):
    from evalkit.scorers.binding import BindingScorer, BindingVQA, BindingVQAConfig

    BindingVQA(BindingVQAConfig(widths=(8, 8, 8))).save_pretrained(tmp_path)
    path = edit_config(tmp_path, widths=[8, 8, 1_000_000])
    with pytest.raises(ConfigMismatchError, match=rf"{path}: widths\[2\] = 1000000"):
        BindingScorer(path=tmp_path)


# --------------------------------------------------------------------------- bad values: errors, not tracebacks


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("embedding_dim", -4, "embedding_dim = -4: must be a non-negative integer"),
        ("embedding_dim", "12", "embedding_dim = '12': must be an integer"),
        ("num_layers", True, "num_layers = True: must be an integer"),
        ("dropout", "none", "dropout = 'none': must be a number"),
        ("norm_in_type", "batch", "cannot build EclipsePriorTransformer from this config (norm_in_type = 'batch')"),
        ("additional_embeddings", 4, "the time-free prior has 3 additional tokens"),
    ],
)
def test_bad_prior_values(eclipse_dir, key, value, expected):
    path = edit_config(eclipse_dir, **{key: value})
    with pytest.raises(ConfigMismatchError) as caught:
        EclipsePriorTransformer.from_pretrained(eclipse_dir)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"block_out_channels": [-8, 16]}, "item 0 (-8) must be a non-negative integer"),
        ({"block_out_channels": "8,16"}, "block_out_channels = '8,16': must be a list"),
        (
            {"down_block_types": ["ResnetDownsampleBlock2D", "NoSuchBlock2D"]},
            "(down_block_types[1] = 'NoSuchBlock2D'): NoSuchBlock2D does not exist",
        ),
        ({"mid_block_type": "NoSuchMidBlock"}, "mid_block_type = 'NoSuchMidBlock'"),
        ({"extra_unet_kwargs": {"no_such_keyword": 1}}, "unexpected keyword argument 'no_such_keyword'"),
        ({"resolution": 1_000_000_000}, "resolution = 1000000000 is beyond 1024"),
        ({"max_batch": 0}, "max_batch = 0 must be at least 1"),
        ({"guidance_scale": float("inf")}, "guidance_scale = inf: must be a finite number"),
    ],
)
def test_bad_decoder_values(decoder_dir, changes, expected):
    from evalkit.decoders.synth import SynthDecoder

    path = edit_config(decoder_dir, **changes)
    with pytest.raises(ConfigMismatchError) as caught:
        SynthDecoder.from_pretrained(decoder_dir)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


@pytest.mark.parametrize(
    "text", ['{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"embedding_dim": ' + "9" * 5000 + "}"]
)
def test_deep_or_absurd_json_is_a_corrupt_file(eclipse_dir, text):
    (eclipse_dir / "config.json").write_text(text)
    with pytest.raises(CorruptFileError, match=str(eclipse_dir / "config.json")):
        EclipsePriorTransformer.from_pretrained(eclipse_dir)


def test_forged_safetensors_header_is_a_corrupt_file(eclipse_dir):
    import struct

    weights = eclipse_dir / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    header["proj_in.weight"]["shape"] = [16, 1_000_000_000]  # claims more than the file holds
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + size :])
    with pytest.raises(CorruptFileError, match=str(weights)):
        EclipsePriorTransformer.from_pretrained(eclipse_dir)


def test_valid_folders_still_load_with_equal_weights(eclipse_dir, decoder_dir):
    from evalkit.decoders.synth import SynthDecoder

    torch.manual_seed(0)
    reference = EclipsePriorTransformer(**TINY_PRIOR)
    loaded = EclipsePriorTransformer.from_pretrained(eclipse_dir)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in reference.state_dict().items())
    assert torch.equal(loaded.causal_attention_mask, reference.causal_attention_mask)  # not stored: rebuilt for real
    decoder = SynthDecoder.from_pretrained(decoder_dir)
    assert decoder.device.type == "cpu" and decoder.config.block_out_channels == (8, 16)


# --------------------------------------------------------------------------- pickle


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def test_malicious_pickle_is_a_corrupt_file_that_never_suggests_weights_only_false(tmp_path):
    from evalkit.serialization import load_state_dict

    torch.save({"proj.weight": _RunsCode()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CorruptFileError) as caught:
        load_state_dict(tmp_path, allow_pickle=True)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'pytorch_model.bin'} is not a plain tensor checkpoint")
    assert "will not run code in them; convert it to safetensors" in message and "weights_only=False" not in message


def test_pickle_of_something_else_is_refused(tmp_path):
    from evalkit.serialization import load_state_dict

    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(CorruptFileError, match="not a plain tensor checkpoint"):
        load_state_dict(tmp_path, allow_pickle=True)
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptFileError, match="pytorch_model.bin"):
        load_state_dict(tmp_path, allow_pickle=True)


def test_pickle_sizes_are_checked_too(eclipse_dir, no_real_allocation):
    from safetensors.torch import load_file

    weights = eclipse_dir / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), eclipse_dir / "diffusion_pytorch_model.bin")
    weights.unlink()
    edit_config(eclipse_dir, embedding_dim=1_000_000_000)
    with pytest.raises(ConfigMismatchError, match="embedding_dim = 1000000000"):
        EclipsePriorTransformer.from_pretrained(eclipse_dir, allow_pickle=True)


def test_allow_pickle_reaches_the_decoder_path(decoder_dir):
    from safetensors.torch import load_file

    from evalkit.decoders import load_decoder
    from evalkit.errors import WeightsNotFoundError

    weights = decoder_dir / "model.safetensors"
    torch.save(load_file(str(weights)), decoder_dir / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(WeightsNotFoundError, match="allow_pickle"):
        load_decoder("synth", decoder_dir)
    decoder = load_decoder("synth", decoder_dir, allow_pickle=True)
    assert decoder.config.block_out_channels == (8, 16)


class _Stop(Exception):
    pass


def test_runner_passes_allow_pickle_to_the_decoder(decoder_dir, monkeypatch):
    import evalkit.decoders as decoders
    from evalkit.harness.runner import RunConfig, resolve

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop()

    monkeypatch.setattr(decoders, "load_decoder", spy)
    config = RunConfig(
        priors=["none"], decoder="synth", decoder_path=str(decoder_dir), suites=["synth-color"], allow_pickle=True
    )
    with pytest.raises(_Stop):
        resolve(config)
    assert seen.get("allow_pickle") is True


def test_allow_pickle_help_names_the_decoder_path():
    from evalkit.cli import cli

    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--decoder-path" in out.split("--allow-pickle", 1)[1].split("--tag", 1)[0]


# --------------------------------------------------------------------------- options a prior does not take


def test_sampling_options_for_a_prior_without_sampling_are_an_error():
    from evalkit.priors import load_prior

    with pytest.raises(
        EvalkitError,
        match=r"prior 'eclipse' takes no num_inference_steps / guidance_scale "
        r"\(it is not a diffusion prior\)",
    ):
        load_prior("eclipse", num_inference_steps=50, guidance_scale=9.0)
    with pytest.raises(EvalkitError, match="prior 'none' takes no guidance_scale"):
        load_prior("none", guidance_scale=2.0)


def test_unset_options_stay_silent():
    from evalkit.priors import load_prior

    prior = load_prior("none", num_inference_steps=None, guidance_scale=None)
    assert prior.name == "none"


def test_several_priors_share_an_option_one_of_them_takes(monkeypatch):
    import inspect

    from evalkit.priors import load_prior
    from evalkit.registry import PRIORS

    real_get, built = PRIORS.get, {}

    def stand_in(name):  # the real constructor's signature, recording what it is given
        def make(**kwargs):
            built[name] = kwargs
            return name

        make.__signature__ = inspect.signature(real_get(name))
        return make

    monkeypatch.setattr(PRIORS, "get", stand_in)
    run = ["eclipse", "diffusion"]
    load_prior("eclipse", among=run, guidance_scale=4.0, num_inference_steps=None)
    load_prior("diffusion", among=run, guidance_scale=4.0, num_inference_steps=None)
    assert built == {"eclipse": {}, "diffusion": {"guidance_scale": 4.0}}
    with pytest.raises(EvalkitError, match=r"none of the priors 'eclipse', 'text' takes guidance_scale \(none of them"):
        load_prior("eclipse", among=["eclipse", "text"], guidance_scale=4.0)


def test_runner_gives_the_option_to_the_prior_that_takes_it():
    from evalkit.harness.runner import RunConfig, resolve

    config = RunConfig(priors=["eclipse", "diffusion"], suites=["synth-color"], prior_guidance_scale=2.0)
    priors, _, _, _ = resolve(config)
    assert priors["diffusion"].guidance_scale == 2.0 and not hasattr(priors["eclipse"], "guidance_scale")
    config = RunConfig(priors=["eclipse"], suites=["synth-color"], prior_num_inference_steps=50)
    with pytest.raises(EvalkitError, match="prior 'eclipse' takes no num_inference_steps"):
        resolve(config)


# --------------------------------------------------------------------------- trainers: one line, exit 2


def test_train_baseline_bad_settings_are_one_line_errors(tmp_path):
    from evalkit.cli import cli

    result = CliRunner().invoke(
        cli, ["train-baseline", "--prior", "projection", "--lam", "0.2", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped ValueError
    assert result.output.startswith("Error: the projection prior is the eclipse network with λ = 0")
    assert "--lam 0.2" in result.output and len(result.output.strip().splitlines()) == 1


def test_train_baseline_refuses_an_existing_run_folder(tmp_path):
    from evalkit.cli import cli

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("{}\n")
    result = CliRunner().invoke(
        cli, ["train-baseline", "--prior", "eclipse", "--quick", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2, result.output
    assert "already holds a training run" in result.output and "--resume" in result.output


def test_train_world_refuses_an_existing_run_folder(tmp_path):
    from evalkit.cli import cli

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("{}\n")
    result = CliRunner().invoke(cli, ["train-world", "scorer", "--quick", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "already holds a training run" in result.output


def test_train_config_errors_are_evalkit_errors_and_value_errors():
    from evalkit.errors import SettingError
    from evalkit.train.priors import PriorTrainConfig

    with pytest.raises(SettingError, match="--batch-size must be >= 1"):
        PriorTrainConfig(prior="eclipse", batch_size=0)
    assert issubclass(SettingError, ValueError) and issubclass(SettingError, EvalkitError)


def test_a_constructor_that_reads_tensor_values_still_loads(tmp_path):
    """Such a constructor cannot run on the meta device: it is built for real, then compared with the file."""
    from dataclasses import dataclass

    from torch import nn

    from evalkit.serialization import PretrainedMixin

    @dataclass
    class Config:
        width: int = 4

    class Plugin(PretrainedMixin, nn.Module):
        config_class = Config

        def __init__(self, config=None):
            nn.Module.__init__(self)
            self.config = config or Config()
            self.proj = nn.Linear(self.config.width, 2)
            self.scale = float(torch.ones(1).sum().item())

    Plugin().save_pretrained(tmp_path)
    assert Plugin.from_pretrained(tmp_path).proj.weight.shape == (2, 4)
    edit_config(tmp_path, width=5)
    with pytest.raises(ConfigMismatchError, match=r"wrong shape: proj.weight: expected \(2, 5\), found \(2, 4\)"):
        Plugin.from_pretrained(tmp_path)
