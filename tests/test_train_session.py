"""The world trainers (clip, decoder, scorer) on the shared training session: run-folder rules, exact resume after
an interruption, Ctrl-C / SIGTERM from the command line, and ``--ship`` refusing to replace shipped weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from evalkit.cli import cli
from evalkit.train.common import TrainingInterrupted
from evalkit.train import world_clip, world_decoder, world_scorer

REPO = Path(__file__).resolve().parents[1]

TRAINERS = {
    "clip": (world_clip, world_clip.train_clip, world_clip.CLIPTrainConfig.quick),
    "decoder": (world_decoder, world_decoder.train_decoder, world_decoder.DecoderTrainConfig.quick),
    "scorer": (world_scorer, world_scorer.train_scorer, world_scorer.ScorerTrainConfig.quick),
}
SHIPPED = {
    "clip": "evalkit.world.models.clip",
    "decoder": "evalkit.decoders.synth",
    "scorer": "evalkit.scorers.binding",
}


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def checkpoint_step(run: Path) -> int:
    return json.loads((run / "checkpoint" / "trainer_state.json").read_text())["step"]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_run_interrupted_by_a_signal_resumes_to_the_uninterrupted_weights(name, tmp_path, monkeypatch):
    module, train, quick = TRAINERS[name]
    config = quick()
    expected = train(tmp_path / "straight", config, progress=False)

    # SIGINT during step 4 (0-based 3): not a checkpoint step, so only the interruption can write it
    check = module.check_finite

    def check_then_signal(loss, step, checkpoint_dir):
        check(loss, step, checkpoint_dir)
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(module, "check_finite", check_then_signal)
    run = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(run, config, progress=False)
    assert checkpoint_step(run) == 4 and [r["step"] for r in log_rows(run)] == [1, 2, 3, 4]
    assert not (run / "final").exists()
    monkeypatch.setattr(module, "check_finite", check)

    resumed = train(run, config, progress=False, resume=True)
    want, got = load_file(str(expected / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    losses = lambda folder: [(r["step"], r["loss"]) for r in log_rows(folder)]
    assert losses(run) == losses(tmp_path / "straight")


@pytest.mark.parametrize("name", list(TRAINERS))
def test_cli_refuses_a_folder_holding_another_run_in_one_line(name, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')
    result = CliRunner().invoke(cli, ["train-world", name, "--quick", "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("Error: ") and "--resume" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl"]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_cli_resume_without_a_checkpoint_says_so_in_one_line(name, tmp_path):
    for out in (tmp_path / "missing", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        result = CliRunner().invoke(cli, ["train-world", name, "--quick", "--resume", "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
        assert "no checkpoint" in result.output


def test_cli_resume_with_other_settings_names_them(tmp_path):
    out = tmp_path / "run"
    assert (
        CliRunner().invoke(cli, ["train-world", "scorer", "--quick", "--stop-at", "2", "--out", str(out)]).exit_code
        == 0
    )
    result = CliRunner().invoke(
        cli, ["train-world", "scorer", "--quick", "--resume", "--batch-size", "8", "--out", str(out)]
    )
    assert result.exit_code == 2 and "batch_size" in result.output


@pytest.mark.parametrize("name", list(TRAINERS))
def test_cli_ship_refuses_shipped_weights_before_training(name, tmp_path, monkeypatch):
    import importlib

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "model.safetensors").write_text("the weights everybody uses")
    monkeypatch.setattr(importlib.import_module(SHIPPED[name]), "SHIPPED_DIR", shipped)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train-world", name, "--quick", "--ship", "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output and result.output.startswith("Error: ")
    assert not out.exists() and (shipped / "model.safetensors").read_text() == "the weights everybody uses"


def test_cli_ship_with_overwrite_replaces_the_shipped_scorer(tmp_path, monkeypatch):
    import evalkit.scorers.binding as binding

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "stale.txt").write_text("old")
    monkeypatch.setattr(binding, "SHIPPED_DIR", shipped)
    result = CliRunner().invoke(
        cli, ["train-world", "scorer", "--quick", "--ship", "--overwrite", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert (shipped / "model.safetensors").is_file() and not (shipped / "stale.txt").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):  # the library refuses too
        world_scorer.ship_scorer(tmp_path / "run")
    assert world_scorer.ship_scorer(tmp_path / "run", overwrite=True) == shipped


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signalled_cli_run_checkpoints_exits_130_and_resumes(signum, tmp_path):
    out, steps = tmp_path / "run", 120
    args = ["train-world", "scorer", "--quick", "--steps", str(steps), "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "evalkit", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ((out / "log.jsonl").is_file() and len(log_rows(out)) >= 2):
            assert process.poll() is None, process.communicate()
            assert time.time() < deadline, "the run logged no steps"
            time.sleep(0.02)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "--resume" in stderr.strip().splitlines()[-1]
    rows = log_rows(out)
    assert 2 <= checkpoint_step(out) == rows[-1]["step"] < steps
    assert not (out / "final").exists()

    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in log_rows(out)] == list(range(1, steps + 1))
    assert (out / "final" / "model.safetensors").is_file()
