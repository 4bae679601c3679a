"""`evalkit train-baseline --data EMB_DIR`: the baseline priors trained on real-format data end to end, on tiny
models saved in the public layouts — webdataset shards of JPEGs → `evalkit embed` (the decoder's own image
encoder) → training with the frozen text encoder (1 and 2 processes) → the public output layouts → `evalkit run`
through the tiny Kandinsky 2.2 and Karlo decoders to a report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from evalkit.cli import cli

REPO = Path(__file__).resolve().parents[1]
K22_DIM = 16  # Kandinsky22Decoder.tiny()
KARLO_DIM = 32  # KarloDecoder.tiny()


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Encoders in the public layouts, a dataset as webdataset shards, and its embeddings by both encoders."""
    from evalkit.data.tiny import write_tiny_clip, write_tiny_prior_pipeline, write_world_dataset
    from evalkit.embed import embed_dataset

    root = tmp_path_factory.mktemp("real")
    k22 = write_tiny_prior_pipeline(root / "kandinsky-2-2-prior", embedding_dim=K22_DIM)
    clip = write_tiny_clip(root / "clip-vit-large-patch14", embedding_dim=KARLO_DIM)
    data = write_world_dataset(root / "data", n=40, shards=2, formats=("wds",))
    spec = data["shards"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALKIT_CACHE_DIR", str(root / "cache"))
        embed_dataset(spec, k22, root / "emb-k22", batch_size=16, progress=False)
        embed_dataset(spec, clip, root / "emb-karlo", batch_size=16, progress=False)
    (root / "prompts.txt").write_text("a red cube and a blue sphere\na green cone\n")
    return {
        "root": root,
        "k22": Path(k22),
        "clip": Path(clip),
        "emb_k22": root / "emb-k22",
        "emb_karlo": root / "emb-karlo",
        "prompts": root / "prompts.txt",
    }


def _config(world, prior, space="kandinsky22", **overrides):
    from evalkit.train.priors import PriorTrainConfig

    emb, encoder = (world["emb_k22"], world["k22"]) if space == "kandinsky22" else (world["emb_karlo"], world["clip"])
    base = dict(
        prior=prior,
        data=str(emb),
        text_encoder=str(encoder),
        space=space,
        size="tiny",
        steps=6,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        checkpoint_every=3,
        eval_every=3,
        val_fraction=0.2,
    )
    return PriorTrainConfig(**{**base, **overrides})


def _log(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def test_paper_settings_are_the_defaults_on_real_data(world):
    from evalkit.train.priors import PriorTrainConfig

    config = PriorTrainConfig(prior="eclipse", data=str(world["emb_k22"]), text_encoder=str(world["k22"]))
    assert (config.size, config.steps, config.batch_size, config.lr, config.lam) == ("paper", 60_000, 1024, 5e-5, 0.2)
    world_config = PriorTrainConfig(prior="eclipse")
    assert (world_config.size, world_config.steps, world_config.batch_size) == ("small", 2000, 256)


def _torchrun(world, *args):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "EVALKIT_CACHE_DIR": str(world["root"] / "cache"),
    }
    done = subprocess.run(
        [str(a) for a in [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "evalkit", *args]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _train_args(world, prior, out, steps=6):
    return [
        "train-baseline",
        "--prior",
        prior,
        "--data",
        world["emb_k22"],
        "--text-encoder",
        world["k22"],
        "--space",
        "kandinsky22",
        "--size",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "2",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "3",
        "--val-fraction",
        "0.2",
        "--out",
        out,
    ]


def _run_through(world, name, final, decoder, decoder_dir, out, *extra):
    """`evalkit run` of the trained prior ``name`` (from ``final``) through a tiny decoder, scored by `dummy`."""
    return invoke(
        "run",
        "--prior",
        name,
        "--prior-path",
        f"{name}={final}",
        "--decoder",
        decoder,
        "--decoder-path",
        decoder_dir,
        "--scorer",
        "dummy",
        "--prompts",
        world["prompts"],
        "--category",
        "color",
        "--images-per-prompt",
        "1",
        "--num-inference-steps",
        "2",
        *extra,
        "--out",
        out,
        "--no-cache",
    )


@pytest.mark.parametrize("prior", ["eclipse", "projection", "diffusion"])
def test_each_prior_trains_saves_in_the_public_layout_and_runs_to_a_report(world, prior, tmp_path):
    """Trained on 2 processes (torchrun, DDP on gloo), saved, loaded through --prior-path, decoded, scored."""
    from evalkit.data.embeddings import EmbeddingFolder

    _torchrun(world, *_train_args(world, prior, tmp_path / "run"))
    final = tmp_path / "run" / "final"
    rows = _log(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"eval/cos", "eval/rank", "eval/recall1", "eval/shuffled_cos", "eval/shuffled_rank"} <= set(rows[2])
    assert rows[-1]["epoch"] == 1 and all(np.isfinite(r["loss"]) for r in rows)  # 32 training pairs: 4 steps an epoch
    record = json.loads((final / "training_record.json").read_text())
    assert record["embedding_space"] == "clip-vit-bigg-14" and record["data"]["train_pairs"] == 32
    weights_dir = final / "prior" if prior == "diffusion" else final
    assert json.loads((weights_dir / "config.json").read_text())["_class_name"] == "PriorTransformer"
    weights = load_file(str(weights_dir / "diffusion_pytorch_model.safetensors"))
    images = EmbeddingFolder.open(world["emb_k22"]).image_embeds(np.arange(40)).double()
    # clip_mean / clip_std are the training embeddings' (32 of the 40 pairs): close to all 40's, not the init
    assert torch.allclose(weights["clip_mean"][0].double(), images.mean(0), atol=0.2)
    assert not torch.equal(weights["clip_std"], torch.ones_like(weights["clip_std"]))
    if prior == "diffusion":
        scheduler = json.loads((final / "scheduler" / "scheduler_config.json").read_text())
        assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["beta_schedule"] == "linear"
    name = "kandinsky22-prior" if prior == "diffusion" else "eclipse-kandinsky22"
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    Kandinsky22Decoder.tiny().save_pretrained(tmp_path / "k22-decoder")
    extra = ["--prior-num-inference-steps", "3"] if prior == "diffusion" else []
    result = _run_through(world, name, final, "kandinsky22", tmp_path / "k22-decoder", tmp_path / "runs", *extra)
    assert result.exit_code == 0, result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    info = results["priors"][name]
    assert info["data"].startswith("32 image-text pairs")
    assert (run_dir / "report.md").is_file() and len((run_dir / "samples.jsonl").read_text().splitlines()) == 2


def test_an_eclipse_prior_in_the_karlo_space_runs_through_karlo(world, tmp_path, monkeypatch):
    """The openai/clip-vit-large-patch14 layout (one CLIPModel folder) as image and text encoder → eclipse-karlo."""
    from evalkit.decoders.karlo import KarloDecoder
    from evalkit.train.priors import train_prior

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(world["root"] / "cache"))
    final = train_prior(tmp_path / "run", _config(world, "eclipse", space="karlo"), progress=False)
    KarloDecoder.tiny().save_pretrained(tmp_path / "karlo")
    result = _run_through(world, "eclipse-karlo", final, "karlo", tmp_path / "karlo", tmp_path / "runs")
    assert result.exit_code == 0, result.output


def test_two_processes_equal_one_and_resume_mid_epoch(world, tmp_path, monkeypatch):
    """torchrun on 2 CPU processes (each encodes its share of the captions) gives the single-process loss
    curve; stopped at step 5 (mid-epoch 1) and resumed, the weights equal the uninterrupted run's."""
    from evalkit.priors.eclipse import EclipsePriorTransformer
    from evalkit.train.priors import train_prior

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(world["root"] / "cache"))
    config = _config(world, "eclipse", steps=7)
    single = train_prior(tmp_path / "one", config, progress=False)
    for extra in (["--stop-at", "5"], ["--resume"]):
        done = _torchrun(world, *_train_args(world, "eclipse", tmp_path / "two", steps=7), *extra)
    assert "run it: evalkit run --prior eclipse-kandinsky22" in done.stdout
    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["step"] for r in two] == list(range(1, 8))
    for a, b in zip(one, two):
        assert (a["epoch"], a["epoch_step"]) == (b["epoch"], b["epoch_step"])
        for key in ("loss", "mse", "cls"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    from tests.test_priors import _assert_same_function

    _assert_same_function(EclipsePriorTransformer, single, tmp_path / "two" / "final")


def test_resume_mid_epoch_is_exact_and_ctrl_c_checkpoints(world, tmp_path, monkeypatch):
    import signal

    import evalkit.train.priors as trainer
    from evalkit.train.common import TrainingInterrupted

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(world["root"] / "cache"))
    config = _config(world, "projection", steps=7, cache_text=True)
    straight = trainer.train_prior(tmp_path / "a", config, progress=False)
    real_loss, calls = trainer.eclipse_loss, {"n": 0}

    def signalled(*args, **kwargs):  # Ctrl-C arrives during step 5
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(trainer, "eclipse_loss", signalled)
    with pytest.raises(TrainingInterrupted, match="after step 5 .*--resume"):
        trainer.train_prior(tmp_path / "b", config, progress=False)
    assert json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())["step"] == 5
    monkeypatch.setattr(trainer, "eclipse_loss", real_loss)
    resumed = trainer.train_prior(tmp_path / "b", config, resume=True, progress=False)
    assert [r["step"] for r in _log(tmp_path / "b")] == list(range(1, 8))
    a, b = (
        load_file(str(straight / "diffusion_pytorch_model.safetensors")),
        load_file(str(resumed / "diffusion_pytorch_model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_one_clear_line(world, tmp_path):
    common = [
        "--data",
        world["emb_k22"],
        "--text-encoder",
        world["k22"],
        "--space",
        "kandinsky22",
        "--size",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "8",
    ]
    cases = [
        (
            [
                "--prior",
                "eclipse",
                "--data",
                world["root"] / "data",
                "--text-encoder",
                world["k22"],
                "--out",
                tmp_path / "x",
            ],
            "not an embedding folder",
        ),
        (
            [
                "--prior",
                "eclipse",
                "--data",
                world["emb_k22"],
                "--text-encoder",
                world["clip"],
                "--space",
                "kandinsky22",
                "--out",
                tmp_path / "x",
            ],
            "32-d embeddings",
        ),
        (["--prior", "eclipse", "--data", world["emb_k22"], "--out", tmp_path / "x"], "--text-encoder"),
        (["--prior", "eclipse", *common, "--hard-negatives", "--out", tmp_path / "x"], "synthetic world"),
        (["--prior", "diffusion", *common, "--lam", "0.2", "--out", tmp_path / "x"], "no such term"),
        (["--prior", "projection", *common, "--lam", "0.2", "--out", tmp_path / "x"], "λ = 0"),
        (["--prior", "eclipse", *common, "--resume", "--out", tmp_path / "empty"], "no checkpoint"),
        (["--prior", "eclipse", *common, "--batch-size", "64", "--out", tmp_path / "x"], "larger than the 39"),
        (
            [
                "--prior",
                "eclipse",
                "--data",
                world["emb_k22"],
                "--text-encoder",
                world["k22"],
                "--size",
                "tiny",
                "--out",
                tmp_path / "x",
            ],
            "--space karlo|kandinsky22",
        ),
    ]
    for args, message in cases:
        result = invoke("train-baseline", *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, (
            args,
            result.output,
        )
    assert not (tmp_path / "x").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    taken = invoke("train-baseline", "--prior", "eclipse", *common, "--out", tmp_path / "taken")
    assert taken.exit_code == 2 and "already holds" in taken.output
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    shipped = invoke("train-baseline", "--prior", "eclipse", *common, "--ship", "--out", tmp_path / "y")
    assert shipped.exit_code == 2 and "--prior-path" in shipped.output


def test_quick_gives_a_prior_that_evalkit_run_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    trained = invoke("train-baseline", "--prior", "eclipse", "--quick", "--out", tmp_path / "quick")
    assert trained.exit_code == 0, trained.output
    final = tmp_path / "quick" / "final"
    assert f"run it: evalkit run --prior eclipse --prior-path eclipse={final}" in trained.output
    result = invoke(
        "run",
        "--prior",
        "eclipse",
        "--prior-path",
        f"eclipse={final}",
        "--limit",
        "1",
        "--images-per-prompt",
        "1",
        "--scorer",
        "analytic",
        "--out",
        tmp_path / "runs",
        "--no-cache",
    )
    assert result.exit_code == 0, result.output


def test_accelerate_trackers_get_every_logged_row(world, tmp_path, monkeypatch):
    """--log-with hands each log row to accelerate's trackers (here a recording one); log.jsonl is written too.
    A tracker whose package is missing is one clear line."""
    from accelerate.tracking import GeneralTracker
    from accelerate.utils import is_tensorboard_available

    import evalkit.train.priors as trainer

    class Recording(GeneralTracker):
        name, requires_logging_directory = "recording", False
        seen: list = []

        def __init__(self, run_name="", **kwargs):
            super().__init__()
            self.config = None

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            Recording.seen.append((step, values))

    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(world["root"] / "cache"))
    monkeypatch.setattr(trainer, "trackers", lambda config: [Recording()] if config.log_with else [])
    trainer.train_prior(tmp_path / "run", _config(world, "projection", log_with="recording"), progress=False)
    assert [step for step, _ in Recording.seen] == [r["step"] for r in _log(tmp_path / "run")] == list(range(1, 7))
    assert "eval/cos" in Recording.seen[2][1]
    monkeypatch.undo()
    if not is_tensorboard_available():
        result = invoke(
            "train-baseline",
            "--prior",
            "eclipse",
            "--data",
            world["emb_k22"],
            "--text-encoder",
            world["k22"],
            "--space",
            "kandinsky22",
            "--log-with",
            "tensorboard",
            "--out",
            tmp_path / "tb",
        )
        assert result.exit_code == 2 and "needs the tensorboard package" in result.output
