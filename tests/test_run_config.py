"""``RunConfig`` as the one source of ``evalkit run``'s flags, and ``evalkit run --config FILE``."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from evalkit.cli import cli
from evalkit.harness.run_config import RunConfig, load_config_file

FLAGS = [
    "--prior",
    "oracle,none",
    "--suite",
    "synth-color,synth-shape",
    "--scorer",
    "binding",
    "--limit",
    "4",
    "--images-per-prompt",
    "2",
    "--guidance-scale",
    "4",
    "--no-cache",
    "--tag",
    "t",
    "--prior-path",
    "eclipse=/w/e",
    "--plugin",
    "m:C",
    "--random-init",
    "tiny",
    "--attention",
    "sdpa",
]
FILE = {
    "priors": ["oracle", "none"],
    "suites": ["synth-color", "synth-shape"],
    "scorers": ["binding"],
    "limit": 4,
    "images_per_prompt": 2,
    "guidance_scale": 4,
    "cache": False,
    "tag": "t",
    "prior_paths": {"eclipse": "/w/e"},
    "plugins": ["m:C"],
    "random_init": "tiny",
    "attention": "sdpa",
}
TOML = """priors = ["oracle", "none"]
suites = ["synth-color", "synth-shape"]
scorers = ["binding"]
limit = 4
images_per_prompt = 2
guidance_scale = 4
cache = false
tag = "t"
plugins = ["m:C"]
random_init = "tiny"
attention = "sdpa"

[prior_paths]
eclipse = "/w/e"
"""


class _Stop(Exception):
    pass


@pytest.fixture
def resolved(monkeypatch):
    """``evalkit run ARGS`` -> the RunConfig it would run (the pipeline itself is not started)."""
    import evalkit.harness.runner

    def invoke(*args):
        seen = []

        def spy(config, *rest, **kwargs):
            seen.append(config)
            raise _Stop()

        monkeypatch.setattr(evalkit.harness.runner, "run", spy)
        result = CliRunner().invoke(cli, ["run", *map(str, args)])
        if not seen:
            return result
        assert isinstance(result.exception, _Stop), result.output
        return seen[0]

    return invoke


def test_every_field_is_a_flag_with_its_help_and_default():
    out = CliRunner().invoke(cli, ["run", "--help"], terminal_width=400).output
    for spec in dataclasses.fields(RunConfig):
        flag = spec.metadata.get("flag") or "--" + spec.name.replace("_", "-")
        assert flag in out and spec.metadata["help"][:30] in out, spec.name
    assert "[default: oracle]" in out and "[default: 10]" in out and "[default: cache]" in out


def test_no_flags_give_runconfigs_defaults(resolved):
    assert resolved() == RunConfig()


def test_a_json_file_equals_the_same_flags(resolved, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(FILE))
    from_flags = resolved(*FLAGS)
    assert resolved("--config", path) == from_flags
    assert from_flags.guidance_scale == 4.0 and isinstance(resolved("--config", path).guidance_scale, float)


def test_a_toml_file_equals_the_same_flags(resolved, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    assert resolved("--config", path) == resolved(*FLAGS)


def test_flags_override_the_file_and_the_file_the_preset(resolved, tmp_path):
    from evalkit.harness.presets import PRESETS

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"limit": 4, "tag": "file", "seed": 7}))
    config = resolved("--preset", "smoke", "--config", path, "--tag", "flag")
    assert (config.limit, config.tag, config.seed) == (4, "flag", 7)
    assert config.priors == PRESETS["smoke"]["priors"] and config.images_per_prompt == 2


def test_a_preset_keeps_working_without_a_file(resolved):
    config = resolved("--preset", "smoke", "--limit", "3")
    assert config.limit == 3 and config.dtype == "float32" and config.scorers[-1] == "embedding-cosine"


def test_prompts_alone_drop_the_default_suite(resolved, tmp_path):
    assert resolved("--prompts", __file__, "--category", "color").suites == []
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"prompt_files": [__file__], "category": "color"}))
    assert resolved("--config", path).suites == []


def test_an_unknown_key_is_named_with_a_suggestion(resolved, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"prior": ["oracle"]}))
    result = resolved("--config", path)
    assert result.exit_code == 2
    assert "unknown RunConfig field 'prior'" in result.output and "Did you mean 'priors'" in result.output
    assert str(path) in result.output


@pytest.mark.parametrize(
    "values, message",
    [
        ({"images_per_prompt": "ten"}, "images_per_prompt must be an integer"),
        ({"cache": "no"}, "cache must be true or false"),
        ({"priors": [1, 2]}, "priors must be a list of strings"),
        ({"limit": True}, "limit must be an integer (or null)"),
        ({"attention": "flash"}, "attention must be one of sdpa, eager"),
        ({"prior_paths": ["eclipse=/w"]}, "prior_paths must be a table of NAME = DIR strings"),
    ],
)
def test_a_wrong_type_names_the_key(tmp_path, values, message):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config_file(path)


def test_a_file_that_is_no_config_is_refused(resolved, tmp_path):
    for name, text in (("run.json", "[1]"), ("run.json", "{"), ("run.toml", "x = "), ("run.yaml", "x: 1")):
        path = tmp_path / name
        path.write_text(text)
        result = resolved("--config", path)
        assert result.exit_code == 2 and str(path) in result.output, result.output


def test_scorer_paths_from_a_file_are_checked_against_the_scorers(resolved, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"scorers": ["binding"], "scorer_paths": {"blip-vqa": "/w"}}))
    result = resolved("--config", path)
    assert result.exit_code == 2 and "expected NAME=DIR with NAME one of binding" in result.output
