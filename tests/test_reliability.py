"""What evalkit promises under interruption, concurrency, corruption, bad input and full disks (README)."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from evalkit.cli import cli
from evalkit.errors import CorruptFileError, WeightsNotFoundError
from evalkit.priors.dummy import DummyPrior
from evalkit.registry import PRIORS
from evalkit.harness.runs import load_run
from evalkit.serialization import load_state_dict
from tests.conftest import REPO, dummy_run_args

# a run whose decoder takes 0.15 s per batch of 4 images: slow enough to be killed mid-way
SLOW_RUN = textwrap.dedent("""
    import sys, time
    from evalkit.cli import cli
    from evalkit.decoders.dummy import DummyDecoder
    from evalkit.registry import DECODERS

    class SlowDecoder(DummyDecoder):
        def decode(self, embeds, batch, protocol):
            time.sleep(0.15)
            return super().decode(embeds, batch, protocol)

    DECODERS.register("slow-dummy", SlowDecoder)
    cli(sys.argv[1:])
""")
ARGS = [
    "run",
    "--prior",
    "dummy",
    "--decoder",
    "slow-dummy",
    "--scorer",
    "dummy",
    "--suite",
    "synth-color,synth-shape",
    "--limit",
    "10",
    "--images-per-prompt",
    "2",
    "--batch-size",
    "4",
]
TOTAL_IMAGES = 2 * 10 * 2


def _start(tmp_path, out: str, cache: str, extra=()) -> subprocess.Popen:
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *ARGS, "--out", out, "--cache-dir", cache, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )


def _cached_images(cache: Path) -> int:
    return len(list((cache / "image").rglob("*.png"))) if (cache / "image").exists() else 0


def _rows(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "tag"} for r in json.loads((run_dir / "results.json").read_text())["rows"]
    ]


def _finished(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if (p / "results.json").is_file())


def test_sigkill_at_several_points_then_rerun_gives_identical_results_without_recomputing(tmp_path):
    reference = _start(tmp_path, str(tmp_path / "reference"), str(tmp_path / "ref-cache"), ["--no-cache"])
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()[-2000:]
    cache = tmp_path / "cache"
    for kill_after in (4, 16, 28):  # images finished before each SIGKILL
        before = _cached_images(cache)
        process = _start(tmp_path, str(tmp_path / "runs"), str(cache))
        deadline = time.time() + 60
        while _cached_images(cache) < kill_after and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _cached_images(cache) > before  # progress was kept
    assert not _finished(tmp_path / "runs"), "a killed run must not look finished"
    done_before = _cached_images(cache)
    final = _start(tmp_path, str(tmp_path / "runs"), str(cache))
    assert final.wait(timeout=120) == 0, final.stderr.read().decode()[-2000:]
    [run_dir] = _finished(tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    # nothing finished is recomputed: at most the batch (4 images) the last kill cut in half is made again
    remaining = TOTAL_IMAGES - done_before
    assert remaining <= results["cache"]["stored"]["image"] <= remaining + 3
    assert results["cache"]["hits"]["image"] == done_before
    [ref_dir] = _finished(tmp_path / "reference")
    assert _rows(run_dir) == _rows(ref_dir)
    assert (run_dir / "samples.jsonl").read_text() == (ref_dir / "samples.jsonl").read_text()


def test_two_runs_into_one_folder_never_share_files(tmp_path):
    first = _start(tmp_path, str(tmp_path / "runs"), str(tmp_path / "cache"))
    second = _start(tmp_path, str(tmp_path / "runs"), str(tmp_path / "cache"))
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    a, b = _finished(tmp_path / "runs")
    assert a != b and _rows(a) == _rows(b)
    stamp = {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()}
    third = _start(tmp_path, str(tmp_path / "runs"), str(tmp_path / "cache"))
    assert third.wait(timeout=120) == 0
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()} == stamp  # a finished run is never modified
    assert len(_finished(tmp_path / "runs")) == 3


def _dummy_run(tmp_path, *extra) -> Path:
    result = CliRunner().invoke(
        cli,
        dummy_run_args(
            "--limit",
            "2",
            "--images-per-prompt",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--cache-dir",
            str(tmp_path / "cache"),
            *extra,
        ),
    )
    assert result.exit_code == 0, result.output
    return _finished(tmp_path / "runs")[-1]


def test_results_edited_by_hand_or_truncated_samples_are_detected(tmp_path):
    run_dir = _dummy_run(tmp_path)
    load_run(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    results["rows"][0]["value"] += 0.1
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(CorruptFileError, match="edited"):
        load_run(run_dir)
    outcome = CliRunner().invoke(cli, ["compare", str(run_dir), str(run_dir)])
    assert outcome.exit_code == 2 and "results.json" in outcome.output

    other = _dummy_run(tmp_path / "b")
    samples = other / "samples.jsonl"
    samples.write_text(samples.read_text()[:-40])
    with pytest.raises(CorruptFileError, match="samples.jsonl"):
        load_run(other)


def test_truncated_weights_and_damaged_config_name_the_file(tmp_path):
    DummyPrior().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        DummyPrior.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"embedding_dim": 1')
    with pytest.raises(CorruptFileError, match="config.json"):
        DummyPrior.from_pretrained(tmp_path)


class _Payload:
    """Unpickling this runs code: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "marker"
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": _Payload(marker)}, handle, protocol=2)
    with pytest.raises(WeightsNotFoundError, match="allow_pickle"):
        load_state_dict(tmp_path)
    assert not marker.exists()
    # opted in: still loaded with weights_only=True, and refused in one line that never suggests otherwise
    with pytest.raises(CorruptFileError, match="not a plain tensor checkpoint") as refused:
        load_state_dict(tmp_path, allow_pickle=True)
    assert "weights_only=False" not in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prior", "eclipes"], "Did you mean 'eclipse'"),
        (["--images-per-prompt", "0"], "--images-per-prompt"),
        (["--num-inference-steps", "-3"], "--num-inference-steps"),
        (["--prior", "dummy"], "cannot feed decoder 'synth'"),
        (["--prior", "nan-prior", "--decoder", "dummy", "--scorer", "dummy"], "'nan-prior' returned NaN/inf"),
        (["--prior", "eclipse", "--prior-path", "eclipse=/nonexistent/weights"], "no weights at /nonexistent/weights"),
    ],
)
def test_bad_input_exits_nonzero_before_anything_is_written(tmp_path, args, message):
    class NanPrior(DummyPrior):
        name = "nan-prior"

        def predict(self, batch):
            return torch.full((len(batch), self.embedding_dim), float("nan"))

    PRIORS.register("nan-prior", NanPrior)
    try:
        result = CliRunner().invoke(cli, ["run", "--limit", "1", "--out", str(tmp_path / "runs"), *args])
    finally:
        PRIORS.unregister("nan-prior")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()
    if "nan" in message:
        assert "a red" in result.output or "prompt" in result.output  # the prompt is named


def test_empty_prompt_file_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    for name in ("color_val.txt", "color_val_seen.txt", "color_val_unseen.txt", "color_train.txt"):
        (prompts / name).write_text("\n\n")
    monkeypatch.setenv("EVALKIT_PROMPTS_DIR", str(prompts))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--suite",
            "t2i-compbench-color",
            "--prior",
            "dummy",
            "--decoder",
            "dummy",
            "--scorer",
            "dummy",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 2 and "color_val" in result.output and "prompt file" in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_unusable_output_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        cli,
        dummy_run_args("--limit", "1", "--out", str(blocker / "runs")),
    )
    assert result.exit_code == 2 and "cannot create output folder" in result.output


def test_a_failed_write_leaves_no_partial_results(tmp_path, monkeypatch):
    import errno

    import evalkit.serialization as serialization

    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(serialization.os, "replace", full_disk)
    result = CliRunner().invoke(
        cli,
        dummy_run_args("--limit", "1", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")),
    )
    assert result.exit_code == 2 and "results.json" in result.output and "No space left" in result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert not (run_dir / "results.json").exists() and not (run_dir / "samples.jsonl").exists()
    assert not list(run_dir.glob(".*.tmp")), "no temporary file is left behind"


def test_prior_path_loads_a_folder_and_refuses_pickle_unless_allowed(tmp_path):
    from evalkit.priors.eclipse import EclipsePrior

    folder = tmp_path / "eclipse"
    prior = EclipsePrior()
    torch.save(prior.model.state_dict(), tmp_path / "state.bin")
    (folder).mkdir()
    (folder / "config.json").write_text((prior.path / "config.json").read_text())
    (tmp_path / "state.bin").rename(folder / "diffusion_pytorch_model.bin")
    args = [
        "run",
        "--prior",
        "eclipse",
        "--prior-path",
        f"eclipse={folder}",
        "--limit",
        "1",
        "--images-per-prompt",
        "1",
        "--num-inference-steps",
        "2",
        "--out",
        str(tmp_path / "runs"),
        "--no-cache",
    ]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "pickle" in refused.output and not (tmp_path / "runs").exists()
    allowed = CliRunner().invoke(cli, args + ["--allow-pickle"])
    assert allowed.exit_code == 0, allowed.output
    wrong = CliRunner().invoke(
        cli, ["run", "--prior", "oracle", "--prior-path", f"oracle={folder}", "--out", str(tmp_path / "x")]
    )
    assert wrong.exit_code == 2 and "trained priors only" in wrong.output


def test_missing_real_decoder_folder_is_named(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--prior",
            "diffusion",
            "--decoder",
            "kandinsky22",
            "--decoder-path",
            str(tmp_path / "k22"),
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 2 and str(tmp_path / "k22") in result.output and not (tmp_path / "runs").exists()
