"""`evalkit run` as the design card means it: prior names that follow the decoder's space, labels for a
second checkpoint of one class, classes plugged in for one run, devices and dtypes, scorers that say what
they cannot score, your own prompt files. Real models are tiny random ones saved in the public layouts."""

import json
import os
import shutil
import textwrap

import pytest
import torch
from click.testing import CliRunner

from evalkit.cli import cli

FAST = ["--images-per-prompt", "1", "--num-inference-steps", "2", "--no-cache"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def only_run(folder):
    [run_dir] = [p for p in folder.iterdir() if p.is_dir()]
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def public_folders(tmp_path_factory):
    """A karlo-v1-alpha-layout folder (decoder stack + prior/ + prior_scheduler/, one text encoder for both),
    an ECLIPSE-Community-layout folder (the prior weights only) and a blip-vqa-base-layout folder."""
    from evalkit.decoders.karlo import KarloDecoder
    from evalkit.priors.real import tiny_checkpoint
    from evalkit.scorers.blip_vqa import BlipVQAScorer

    root = tmp_path_factory.mktemp("public")
    karlo = root / "karlo-v1-alpha"
    KarloDecoder.tiny().save_pretrained(karlo)
    diffusion = tiny_checkpoint(root / "diffusion-parts", kind="diffusion", embedding_dim=32)
    shutil.copytree(diffusion / "prior", karlo / "prior")
    shutil.copytree(diffusion / "scheduler", karlo / "prior_scheduler")
    eclipse = tiny_checkpoint(root / "eclipse-parts", kind="eclipse", embedding_dim=32)
    shutil.copytree(eclipse / "prior", root / "ECLIPSE_Karlo_Prior")  # config.json + weights at the root
    blip = root / "blip-vqa-base"
    BlipVQAScorer.write_tiny(blip)
    return {
        "EVALKIT_KARLO_DIR": karlo,
        "EVALKIT_ECLIPSE_KARLO_PRIOR_DIR": root / "ECLIPSE_Karlo_Prior",
        "EVALKIT_BLIP_VQA_DIR": blip,
    }


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text(
        "# two of the world's captions and one it cannot read\na red square and a blue circle\n"
        "a green circle and a yellow star\na green bench and a red car\n"
    )
    return path


def test_the_design_card_command_runs_the_paper_priors_for_karlo(public_folders, tmp_path, monkeypatch, prompts_file):
    for variable, folder in public_folders.items():
        monkeypatch.setenv(variable, str(folder))
    prompts_dir = os.environ.get("EVALKIT_PROMPTS_DIR")
    suite = ["--suite", "t2i-compbench-color"] if prompts_dir else ["--prompts", prompts_file, "--category", "color"]
    result = invoke(
        "run",
        "--prior",
        "eclipse,diffusion",
        "--decoder",
        "karlo",
        *suite,
        "--scorer",
        "blip-vqa",
        "--limit",
        "2",
        "--prior-num-inference-steps",
        "2",
        "--device",
        "auto",
        *FAST,
        "--out",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    assert "'eclipse-karlo'" in result.output and "'karlo-prior'" in result.output  # the notes say what ran
    run_dir, results = only_run(tmp_path / "runs")
    assert set(results["priors"]) == {"eclipse-karlo", "karlo-prior"}
    assert results["config"]["priors"] == ["eclipse-karlo", "karlo-prior"]
    placements = results["environment"]["placements"]
    assert placements["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert set(placements["priors"]) == {"eclipse-karlo", "karlo-prior"} and "blip-vqa" in placements["scorers"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(0 < s["score"] < 1 for s in samples)


def test_a_space_mismatch_is_found_from_metadata_before_any_weights_load(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALKIT_KARLO_DIR", raising=False)  # the decoder's weights are not even here
    result = invoke("run", "--prior", "eclipse-large", "--decoder", "karlo", "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert "cannot feed decoder 'karlo'" in result.output and "Did you mean 'eclipse-karlo'?" in result.output
    assert "Priors for karlo: eclipse-karlo, karlo-prior" in result.output and not (tmp_path / "runs").exists()
    result = invoke("run", "--prior", "projection", "--decoder", "kandinsky22", "--out", tmp_path / "runs")
    assert result.exit_code == 2 and "no projection prior is registered for 'clip-vit-bigg-14'" in result.output


def test_a_label_runs_a_second_checkpoint_beside_the_shipped_one_and_reports_merge(tmp_path):
    from evalkit.priors.eclipse import EclipsePrior

    other = EclipsePrior.shipped_dir(training_seed=1)
    common = ["--suite", "synth-color", "--limit", "2", *FAST, "--scorer", "binding"]
    result = invoke(
        "run", "--prior", "eclipse,mine=eclipse", "--prior-path", f"mine={other}", *common, "--out", tmp_path / "both"
    )
    assert result.exit_code == 0, result.output
    both_dir, results = only_run(tmp_path / "both")
    assert set(results["priors"]) == {"eclipse", "mine"}
    assert "Seen / unseen" in (both_dir / "report.md").read_text()  # synthetic suites have the split
    assert results["priors"]["eclipse"]["version"] != results["priors"]["mine"]["version"]
    assert results["config"]["priors"] == ["eclipse", "mine=eclipse"]
    # the same two as separate runs, merged by `evalkit report`
    assert invoke("run", "--prior", "eclipse", *common, "--out", tmp_path / "a").exit_code == 0
    assert (
        invoke(
            "run", "--prior", "mine=eclipse", "--prior-path", f"mine={other}", *common, "--out", tmp_path / "b"
        ).exit_code
        == 0
    )
    (a, _), (b, _) = only_run(tmp_path / "a"), only_run(tmp_path / "b")
    merged = invoke("report", a, b, "--out", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    assert "| mine" in (tmp_path / "merged" / "report.md").read_text()
    # one name twice, and a path for a prior the run does not have: errors that say how to label
    twice = invoke("run", "--prior", "eclipse,eclipse", *common, "--out", tmp_path / "x")
    assert twice.exit_code == 2 and "mine=eclipse" in twice.output
    stray = invoke("run", "--prior", "eclipse", "--prior-path", f"mine={other}", *common, "--out", tmp_path / "x")
    assert stray.exit_code == 2 and "mine=eclipse --prior-path mine=DIR" in stray.output
    assert not (tmp_path / "x").exists()


def test_a_plugged_in_prior_gets_the_text_encodings_of_its_space(tmp_path, monkeypatch):
    (tmp_path / "plugged_priors.py").write_text(
        textwrap.dedent('''
        import torch
        from evalkit.contracts import Prior

        class TextAsImage(Prior):
            """Reads the world CLIP's text embedding (declared, not held) and returns it as the image embedding."""
            name = "text-as-image"
            embedding_space, embedding_dim, text_encoders = "synth-clip", 128, ("synth-clip",)

            def predict(self, batch):
                return batch.text["synth-clip"].text_embeds.float()
        ''')
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke(
        "run",
        "--plugin",
        "plugged_priors:TextAsImage",
        "--plugin",
        "mine=plugged_priors:TextAsImage",
        "--prior",
        "text-as-image,mine",
        "--suite",
        "synth-color",
        "--limit",
        "2",
        "--scorer",
        "binding",
        *FAST,
        "--out",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    _, results = only_run(tmp_path / "runs")
    assert set(results["priors"]) == {"text-as-image", "mine"}
    assert results["config"]["plugins"] == ["plugged_priors:TextAsImage", "mine=plugged_priors:TextAsImage"]
    bad = invoke("run", "--plugin", "plugged_priors:Nope", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "has no 'Nope'" in bad.output
    clash = invoke("run", "--plugin", "eclipse=plugged_priors:TextAsImage", "--out", tmp_path / "x")
    assert clash.exit_code == 2 and "already registered" in clash.output


def test_items_a_closed_vocabulary_scorer_cannot_read_are_counted_not_scored(tmp_path, prompts_file):
    result = invoke(
        "run",
        "--prior",
        "eclipse",
        "--prompts",
        prompts_file,
        "--category",
        "color",
        "--scorer",
        "binding",
        *FAST,
        "--out",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    assert "binding cannot score 1 of 3 prompts" in result.output
    run_dir, results = only_run(tmp_path / "runs")
    [row] = [r for r in results["rows"] if r["seen"] == "all"]
    assert row["suite"] == "prompts-mine" and row["n_prompts"] == 2 and row["n"] == 2
    skipped = results["not_applicable"]["prompts-mine"]["binding"]
    assert skipped["prompts"] == 1 and "bench" in next(iter(skipped["reasons"]))
    report = (run_dir / "report.md").read_text()
    assert "**Not scored.** prompts-mine: binding cannot score 1 prompt(s)" in report
    assert "Seen / unseen" not in report  # a prompt file has no seen / unseen split: no empty table
    # nothing at all it can read: refused before anything is generated or written
    unreadable = tmp_path / "bench.txt"
    unreadable.write_text("a green bench and a red car\n")
    refused = invoke(
        "run",
        "--prior",
        "eclipse",
        "--prompts",
        unreadable,
        "--category",
        "color",
        "--scorer",
        "binding",
        *FAST,
        "--out",
        tmp_path / "refused",
    )
    assert refused.exit_code == 2 and "no scorer of this run can score any prompt" in refused.output
    assert not (tmp_path / "refused").exists()


def test_devices_and_dtypes_are_checked_and_recorded(tmp_path, monkeypatch):
    from evalkit import placement
    from evalkit.errors import SettingError

    if not torch.cuda.is_available():
        result = invoke("run", "--device", "cuda", "--out", tmp_path / "x")
        assert result.exit_code == 2 and "no CUDA device here" in result.output
    for bad in ("tpu", "cuda:x"):
        with pytest.raises(SettingError, match="--device must be"):
            placement.resolve_device(bad)
    negative = invoke("run", "--negative", "zero-image", "--out", tmp_path / "x")  # synth takes no negative
    assert negative.exit_code == 2 and "decoder 'synth' takes none" in negative.output
    no_category = invoke("run", "--prompts", __file__, "--out", tmp_path / "x")
    assert no_category.exit_code == 2 and "--prompts needs --category" in no_category.output
    meta = invoke("run", "--device", "meta", "--out", tmp_path / "x")
    assert meta.exit_code == 2 and "--device meta holds no data" in meta.output and not (tmp_path / "x").exists()
    # under a launcher each process takes the GPU of its LOCAL_RANK; pinning one GPU for all is refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert placement.resolve_device("auto") == placement.resolve_device("cuda") == "cuda:3"
    with pytest.raises(SettingError, match="all 8 processes on one GPU"):
        placement.resolve_device("cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "9")
    with pytest.raises(SettingError, match="LOCAL_RANK 9 has no GPU"):
        placement.resolve_device("auto")
    assert placement.parse_dtypes("bfloat16") == {"prior": "bfloat16", "decoder": "bfloat16", "scorer": "bfloat16"}
    assert placement.parse_dtypes("decoder=float16") == {"prior": None, "decoder": "float16", "scorer": None}
    for bad in ("float8", "decoder=half", "vae=float16"):
        with pytest.raises(SettingError):
            placement.parse_dtypes(bad)


def test_a_bfloat16_run_records_what_ran_and_keeps_the_protocol(tmp_path):
    common = ["--prior", "eclipse", "--suite", "synth-color", "--limit", "2", "--scorer", "binding", *FAST]
    assert invoke("run", *common, "--dtype", "float32", "--out", tmp_path / "f32").exit_code == 0
    result = invoke("run", *common, "--dtype", "bfloat16", "--out", tmp_path / "bf16")
    assert result.exit_code == 0, result.output
    (_, f32), (_, bf16) = only_run(tmp_path / "f32"), only_run(tmp_path / "bf16")
    assert bf16["protocol"]["prior_dtype"] == "bfloat16" and bf16["protocol"]["dtype"] == "bfloat16"
    assert f32["protocol"]["prior_dtype"] == "float32"
    assert bf16["protocol_hash"] == f32["protocol_hash"]  # the numeric path, not the protocol
    assert bf16["environment"]["placements"]["priors"]["eclipse"]["dtype"] == "bfloat16"
    refused = invoke("run", *common, "--dtype", "decoder=float16", "--out", tmp_path / "x")
    assert refused.exit_code == 2 and "decoder 'synth' computes in float32 or bfloat16" in refused.output


def test_a_presets_priors_take_prior_paths(tmp_path):
    from evalkit.priors.eclipse import EclipsePrior

    result = invoke(
        "run",
        "--preset",
        "smoke",
        "--prior-path",
        f"eclipse={EclipsePrior.shipped_dir(1)}",
        "--suite",
        "synth-color",
        "--limit",
        "1",
        "--images-per-prompt",
        "1",
        "--scorer",
        "binding",
        "--out",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    _, results = only_run(tmp_path / "runs")
    assert set(results["priors"]) == {"oracle", "eclipse"}


def test_ls_priors_shows_space_dimension_and_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_KARLO_DIR", str(tmp_path))
    monkeypatch.delenv("EVALKIT_ECLIPSE_KARLO_PRIOR_DIR", raising=False)
    lines = {line.split()[0]: line for line in invoke("ls", "priors").output.splitlines()[2:]}
    assert "synth-clip" in lines["eclipse"] and " 128 " in lines["eclipse"] and "shipped" in lines["eclipse"]
    assert "clip-vit-l-14" in lines["karlo-prior"] and f"$EVALKIT_KARLO_DIR = {tmp_path}" in lines["karlo-prior"]
    assert "missing: set $EVALKIT_ECLIPSE_KARLO_PRIOR_DIR" in lines["eclipse-karlo"]


def test_registry_metadata_matches_the_plugins():
    """What `ls` and the space check read without importing must be what the plugins declare."""
    from evalkit.decoders import load_decoder
    from evalkit.priors import load_prior
    from evalkit.priors.real import known_checkpoint
    from evalkit.registry import DECODERS, PRIORS

    for registry in (PRIORS, DECODERS):
        for entry in registry.entries():
            assert registry.get(entry.name).tiny().embedding_space == entry.meta["space"], entry.name
    for name in ("eclipse-karlo", "eclipse-kandinsky22", "karlo-prior", "kandinsky22-prior"):
        checkpoint = known_checkpoint(name)
        assert (checkpoint["embedding_space"], checkpoint["embedding_dim"]) == (
            PRIORS.entry(name).meta["space"],
            PRIORS.entry(name).meta["dim"],
        )
    assert load_prior("eclipse").embedding_dim == PRIORS.entry("eclipse").meta["dim"]
    for name in ("karlo", "kandinsky22"):
        cls, meta = DECODERS.get(name), DECODERS.entry(name).meta
        assert (cls.default_num_inference_steps, cls.default_guidance_scale) == (meta["steps"], meta["guidance"])
    synth, meta = load_decoder("synth"), DECODERS.entry("synth").meta
    assert (synth.default_num_inference_steps, synth.default_guidance_scale, synth.embedding_dim) == (
        meta["steps"],
        meta["guidance"],
        meta["dim"],
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_computes_on_the_gpu_through_evalkit_run(public_folders, tmp_path, monkeypatch, prompts_file):
    for variable, folder in public_folders.items():
        monkeypatch.setenv(variable, str(folder))
    result = invoke(
        "run",
        "--prior",
        "eclipse,diffusion",
        "--decoder",
        "karlo",
        "--prompts",
        prompts_file,
        "--category",
        "color",
        "--scorer",
        "blip-vqa",
        "--device",
        "cuda",
        "--dtype",
        "float16",
        "--prior-num-inference-steps",
        "2",
        *FAST,
        "--out",
        tmp_path / "runs",
    )
    assert result.exit_code == 0, result.output
    _, results = only_run(tmp_path / "runs")
    placements = results["environment"]["placements"]
    assert placements["device"] == "cuda:0" and placements["decoder"]["dtype"] == "float16"
    assert results["environment"]["gpu"]
