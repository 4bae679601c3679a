"""`evalkit run` end to end on the dummy plugins: cache and resume, results schema, report, compare."""

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from evalkit.fingerprints import fingerprint
from evalkit.harness.cache import WorkCache, work_key
from evalkit.cli import cli
from evalkit.harness.compare import ProtocolMismatchError, compare_results
from evalkit.contracts import Batch, Protocol
from evalkit.harness.run_config import RunConfig
from evalkit.decoders.dummy import DummyDecoder
from evalkit.errors import EvalkitError
from evalkit.priors.dummy import DummyPrior, DummyPriorConfig
from evalkit.report.run_report import write_report
from evalkit.harness.runs import load_run
from evalkit.harness.runner import evaluate, run
from evalkit.scorers.dummy import DummyScorer
from evalkit.serialization import seal
from evalkit.suites import load_suite
from tests.conftest import dummy_run_args

PROTOCOL = Protocol(decoder="dummy", num_inference_steps=1, guidance_scale=1.0, resolution=16, images_per_prompt=2)


def config(tmp_path, **overrides) -> RunConfig:
    base = dict(
        priors=["dummy"],
        decoder="dummy",
        suites=["synth-color", "synth-shape"],
        scorers=["dummy"],
        limit=3,
        images_per_prompt=2,
        out=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
    )
    return RunConfig(**{**base, **overrides})


class CountingPrior(DummyPrior):
    calls = 0

    def predict(self, batch):
        CountingPrior.calls += len(batch)
        return super().predict(batch)


def test_cache_reuses_everything_and_gives_identical_rows(tmp_path):
    suite = load_suite("synth-color")
    cache = WorkCache(tmp_path / "cache")
    CountingPrior.calls = 0
    cold, _ = evaluate(
        {"p": CountingPrior()},
        DummyDecoder(),
        suite,
        {"dummy": DummyScorer()},
        PROTOCOL,
        tmp_path / "a",
        limit=3,
        batch_size=4,
        progress=False,
        cache=cache,
    )
    assert CountingPrior.calls == 6 and cache.misses == {"embedding": 6, "image": 6, "score": 6}
    warm_cache = WorkCache(tmp_path / "cache")
    warm, timings = evaluate(
        {"p": CountingPrior()},
        DummyDecoder(),
        suite,
        {"dummy": DummyScorer()},
        PROTOCOL,
        tmp_path / "b",
        limit=3,
        batch_size=5,
        progress=False,
        cache=warm_cache,
    )
    assert CountingPrior.calls == 6, "a warm run must not call the prior"
    assert warm_cache.hits == {"embedding": 0, "image": 6, "score": 6} and timings["decoder"] == 0
    assert warm == [{**r, "image_path": r["image_path"]} for r in cold]
    assert all(
        (tmp_path / "b" / r["image_path"]).read_bytes() == (tmp_path / "a" / r["image_path"]).read_bytes() for r in warm
    )
    # anything that determines the work changes the keys: another protocol decodes again (from cached embeddings)
    other = Protocol(decoder="dummy", num_inference_steps=2, guidance_scale=1.0, resolution=16, images_per_prompt=2)
    third = WorkCache(tmp_path / "cache")
    evaluate(
        {"p": CountingPrior()},
        DummyDecoder(),
        suite,
        {"dummy": DummyScorer()},
        other,
        None,
        limit=3,
        progress=False,
        cache=third,
    )
    assert CountingPrior.calls == 6 and third.hits["embedding"] == 6 and third.misses["image"] == 6


def test_prior_weights_and_settings_change_the_fingerprint():
    assert fingerprint(DummyPrior()) == fingerprint(DummyPrior())
    assert fingerprint(DummyPrior()) != fingerprint(DummyPrior(DummyPriorConfig(seed=1)))
    changed = DummyPrior()
    with torch.no_grad():
        changed.proj.bias.add_(1e-3)
    assert fingerprint(changed) != fingerprint(DummyPrior())
    assert work_key("embedding", prior="a", prompt="x", seed=1) != work_key("embedding", prior="a", prompt="x", seed=2)


def test_unseeded_prior_is_never_cached(tmp_path):
    class Unseeded(DummyPrior):
        seeded = False

    cache = WorkCache(tmp_path / "cache")
    evaluate(
        {"u": Unseeded()},
        DummyDecoder(),
        load_suite("synth-color"),
        {"dummy": DummyScorer()},
        PROTOCOL,
        None,
        limit=2,
        progress=False,
        cache=cache,
    )
    assert not (tmp_path / "cache").exists() and sum(cache.misses.values()) == 0


def test_corrupted_cache_entries_are_recomputed(tmp_path):
    suite = load_suite("synth-color")
    args = ({"p": DummyPrior()}, DummyDecoder(), suite, {"dummy": DummyScorer()}, PROTOCOL)
    first, _ = evaluate(*args, None, limit=2, progress=False, cache=WorkCache(tmp_path / "cache"))
    images = sorted((tmp_path / "cache" / "image").rglob("*.png"))
    scores = sorted((tmp_path / "cache" / "score").rglob("*.json"))
    images[0].write_bytes(images[0].read_bytes()[:20])  # truncated PNG
    scores[1].write_text("{not json")  # damaged score entry
    cache = WorkCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="unreadable"):
        again, _ = evaluate(*args, None, limit=2, progress=False, cache=cache)
    assert [r["score"] for r in again] == [r["score"] for r in first]
    assert cache.misses["image"] == 1 and cache.misses["score"] >= 1


def test_run_writes_schema_report_and_resumes_after_a_crash(tmp_path):
    cfg = config(tmp_path)
    reference = run(config(tmp_path, cache=False, out=str(tmp_path / "reference")), progress=False)

    class Boom(RuntimeError):
        pass

    original = DummyDecoder.decode
    calls = {"n": 0}

    def failing(self, embeds, batch, protocol):
        calls["n"] += 1
        if calls["n"] == 2:  # the second suite: the first one is finished and cached
            raise Boom("killed")
        return original(self, embeds, batch, protocol)

    DummyDecoder.decode = failing
    try:
        with pytest.raises(Boom):
            run(cfg, progress=False)
    finally:
        DummyDecoder.decode = original
    unfinished = [d for d in (tmp_path / "runs").iterdir()]
    assert (
        len(unfinished) == 1
        and (unfinished[0] / "run.json").is_file()
        and not (unfinished[0] / "results.json").exists()
    )
    with pytest.raises(EvalkitError, match="unfinished"):
        load_run(unfinished[0])

    resumed = run(cfg, progress=False)
    assert resumed != unfinished[0]  # a new folder: the unfinished one is left as it was
    results = json.loads((resumed / "results.json").read_text())
    assert results["cache"]["hits"]["image"] == 6 and results["cache"]["misses"]["image"] == 6
    ref = json.loads((reference / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tag"} for r in rows]
    assert strip(results["rows"]) == strip(ref["rows"])
    assert (resumed / "samples.jsonl").read_text() == (reference / "samples.jsonl").read_text()
    row = results["rows"][0]
    for key in (
        "prior",
        "decoder",
        "suite",
        "suite_version",
        "category",
        "seen",
        "metric",
        "value",
        "stderr",
        "ci_low",
        "ci_high",
        "n",
        "protocol_hash",
        "num_parameters",
        "total_parameters",
        "higher_is_better",
    ):
        assert key in row
    assert results["schema"] == "evalkit.results/2" and results["protocol"]["decoder_version"]
    assert (
        set(results["timings_s"]) >= {"prior", "decoder", "scorer"}
        and results["priors"]["dummy"]["trainable_parameters"] > 0
    )
    report = (resumed / "report.md").read_text()
    assert "Parameters versus composition" in report and "Lowest-scored images" in report
    html = (resumed / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html and "grid-synth-color.png" in html
    assert (resumed / "grid-synth-color.png").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(images_per_prompt=0), "--images-per-prompt"),
        (dict(num_inference_steps=-1), "--num-inference-steps"),
        (dict(guidance_scale=float("nan")), "--guidance-scale"),
        (dict(priors=["dummy", "dummy"]), "named twice"),
    ],
)
def test_bad_numeric_flags_fail_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(EvalkitError, match=message):
        run(config(tmp_path, **overrides), progress=False)
    assert not (tmp_path / "runs").exists()


def _results(tmp_path, name, **overrides) -> Path:
    return run(config(tmp_path, out=str(tmp_path / name), **overrides), progress=False)


def test_compare_passes_noise_fails_a_real_drop_and_refuses_other_protocols(tmp_path):
    base = _results(tmp_path, "base")
    runner = CliRunner()
    same = runner.invoke(cli, ["compare", str(base), str(base)])
    assert same.exit_code == 0 and "**pass**: 0 regression(s)" in same.output

    data = json.loads((base / "results.json").read_text())
    noisy = json.loads(json.dumps(data))
    for row in noisy["rows"]:  # moves inside the stored uncertainty
        row["value"] -= 0.5 * row["stderr"]
    changes = compare_results(data, noisy).changes  # no samples given: the unpaired test of the rows
    assert changes and all(c.status in ("same", "ungated") for c in changes) and not all(c.paired for c in changes)

    dropped = json.loads(json.dumps(data))
    target = next(r for r in dropped["rows"] if r["stderr"] > 0)
    target["value"] = 0.0  # a collapse; with 6 images it lies beyond 1.5 floored errors (not 3)
    (tmp_path / "dropped").mkdir()  # as a run that measured it: its samples (required) hold the drop too
    samples = [json.loads(line) for line in (base / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        if (s["prior"], s["suite"], s["category"], s["scorer"]) == (
            target["prior"],
            target["suite"],
            target["category"],
            target["metric"],
        ):
            s["score"] = 0.0
    text = "".join(json.dumps(s) + "\n" for s in samples)
    (tmp_path / "dropped" / "samples.jsonl").write_text(text)
    dropped["samples_sha256"] = __import__("hashlib").sha256(text.encode()).hexdigest()
    (tmp_path / "dropped" / "results.json").write_text(json.dumps(seal(dropped)))
    result = runner.invoke(cli, ["compare", str(base), str(tmp_path / "dropped"), "--min-prompts", "1", "--z", "1.5"])
    assert result.exit_code == 1 and "REGRESSION" in result.output and "**FAIL**" in result.output

    lower_better = json.loads(json.dumps(dropped))  # the same drop is an improvement when lower is better
    for row in lower_better["rows"]:
        row["higher_is_better"] = False
    changes = compare_results(data, lower_better, z=1.5, min_prompts=1).changes
    assert {c.status for c in changes} == {"same", "improvement"}

    other = _results(tmp_path, "other", images_per_prompt=3)
    refused = runner.invoke(cli, ["compare", str(base), str(other)])
    assert refused.exit_code == 2 and "different protocols" in refused.output and "images_per_prompt" in refused.output
    with pytest.raises(ProtocolMismatchError):
        compare_results(data, json.loads((other / "results.json").read_text()))


def test_report_merges_runs_of_one_protocol_and_refuses_mixed_ones(tmp_path):
    import shutil

    a = _results(tmp_path, "a")
    twin = tmp_path / "twin"  # the same run under another prior name, as if run on another day
    shutil.copytree(a, twin)
    results = json.loads((twin / "results.json").read_text())
    results["priors"] = {"dummy-b": results["priors"]["dummy"]}
    for row in results["rows"]:
        row["prior"] = "dummy-b"
    (twin / "results.json").write_text(json.dumps(seal(results)))
    samples = (twin / "samples.jsonl").read_text().replace('"prior": "dummy"', '"prior": "dummy-b"')
    (twin / "samples.jsonl").write_text(samples)
    results["samples_sha256"] = __import__("hashlib").sha256(samples.encode()).hexdigest()
    (twin / "results.json").write_text(json.dumps(seal(results)))
    out = write_report([a, twin], tmp_path / "report", pairs=[("dummy", "dummy-b")])
    text = out.read_text()
    assert text.startswith("# evalkit run report") and "dummy-b − dummy" in text and "+0.0000" in text
    assert re.search(r"\(\.\./a/[^/)]+/images/", text)  # images stay in their run folders
    result = CliRunner().invoke(cli, ["report", str(a), "--out", str(a)])
    assert result.exit_code != 0 and "never overwritten" in result.output
    other = _results(tmp_path, "other", images_per_prompt=1)
    mixed = CliRunner().invoke(cli, ["report", str(a), str(other), "--out", str(tmp_path / "mixed")])
    assert mixed.exit_code == 2 and "different protocols" in mixed.output


def test_compare_floors_a_zero_stderr_so_one_flip_is_noise_and_a_collapse_is_not():
    row = dict(
        prior="p",
        suite="s",
        suite_version="v",
        category="c",
        seen="all",
        metric="m",
        stderr=0.0,
        n=16,
        higher_is_better=True,
    )
    base = {"protocol_hash": "h", "protocol": {}, "rows": [{**row, "value": 1.0}]}
    one_flip = {"protocol_hash": "h", "protocol": {}, "rows": [{**row, "value": 15 / 16, "stderr": 0.06}]}
    collapse = {"protocol_hash": "h", "protocol": {}, "rows": [{**row, "value": 0.5, "stderr": 0.12}]}
    assert compare_results(base, one_flip, min_prompts=1).changes[0].status == "same"
    assert compare_results(base, collapse, min_prompts=1).changes[0].status == "regression"


def test_export_t2i_compbench_layout_and_refusals(tmp_path):
    from evalkit.harness.export import export_t2i_compbench

    run_dir = _results(tmp_path, "runs")
    out = export_t2i_compbench(run_dir, tmp_path / "export")
    samples = sorted((out / "dummy" / "color" / "samples").iterdir())
    assert len(samples) == 6 and all(re.fullmatch(r"[^_]+_\d{6}\.png", p.name) for p in samples)
    # their scorer's reading of a file name gives back the prompt
    manifest = json.loads((out / "dummy" / "color" / "manifest.json").read_text())
    for entry in manifest["images"]:
        assert (
            entry["file"].split("_")[0] == entry["prompt"] and int(entry["file"].split("_")[-1][:-4]) == entry["index"]
        )
    result = CliRunner().invoke(cli, ["export", str(run_dir), str(out)])
    assert result.exit_code == 2 and "never overwrite" in result.output

    lines = (run_dir / "samples.jsonl").read_text().splitlines()  # a prompt that their format cannot hold
    rows = [json.loads(line) for line in lines]
    rows[0]["prompt"] = "a red_cube and a blue ball"
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run_dir / "samples.jsonl").write_text(text)
    results = json.loads((run_dir / "results.json").read_text())
    results["samples_sha256"] = __import__("hashlib").sha256(text.encode()).hexdigest()
    (run_dir / "results.json").write_text(json.dumps(seal(results)))
    result = CliRunner().invoke(cli, ["export", str(run_dir), str(tmp_path / "export2")])
    assert result.exit_code == 2 and "'a red_cube and a blue ball'" in result.output
    assert not (tmp_path / "export2").exists() and not list(tmp_path.glob(".export2*"))


def test_run_with_a_local_blip_vqa_folder(tmp_path):
    from evalkit.scorers.blip_vqa import BlipVQAScorer

    BlipVQAScorer.write_tiny(tmp_path / "blip")
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--prior",
            "dummy",
            "--decoder",
            "dummy",
            "--scorer",
            "blip-vqa,dummy",
            "--scorer-path",
            f"blip-vqa={tmp_path / 'blip'}",
            "--limit",
            "1",
            "--images-per-prompt",
            "1",
            "--out",
            str(tmp_path / "runs"),
            "--no-cache",
        ],
    )
    assert result.exit_code == 0, result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    blip = [r for r in rows if r["scorer"] == "blip-vqa"]
    assert blip and all(0 < q["p"] < 1 for r in blip for q in r["questions"])
    bad = CliRunner().invoke(
        cli,
        dummy_run_args("--scorer-path", f"dummy={tmp_path}", "--out", str(tmp_path / "x")),
    )
    assert bad.exit_code == 2 and "does not apply" in bad.output


def test_fid_of_a_run_names_its_feature_network(tmp_path):
    import warnings

    from evalkit.metrics.fid import run_distances

    run_dir = _results(tmp_path, "runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 6 images in 128-d features: rank-deficient, as the warning says
        rows = run_distances(run_dir, n_reference=40)
    assert {(r["prior"], r["suite"]) for r in rows} == {("dummy", "synth-color"), ("dummy", "synth-shape")}
    for r in rows:
        assert r["fid"] > 0 and r["fid"] == pytest.approx(r["fid_torchmetrics"], rel=1e-3)
        assert "synth-clip" in r["feature_network"] and r["images"] == 6


def test_kandinsky_decoder_guides_against_each_priors_empty_prompt(tmp_path):
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    decoder = Kandinsky22Decoder.tiny()

    class Prior16(DummyPrior):
        embedding_space = decoder.embedding_space

    priors = {
        "a": Prior16(DummyPriorConfig(embedding_dim=decoder.embedding_dim)),
        "b": Prior16(DummyPriorConfig(embedding_dim=decoder.embedding_dim, seed=3)),
    }
    protocol = Protocol(
        decoder="kandinsky22",
        num_inference_steps=2,
        guidance_scale=4.0,
        resolution=decoder.resolution,
        images_per_prompt=1,
    )
    evaluate(
        priors, decoder, load_suite("synth-color"), {"dummy": DummyScorer()}, protocol, None, limit=1, progress=False
    )
    empty = Batch.from_prompts([""], [42])
    assert torch.allclose(decoder.negative_image_embeds, priors["b"].predict(empty)[0])  # the last prior's


def test_default_scorers_come_from_the_suites(tmp_path, monkeypatch):
    from evalkit.harness.runner import resolve

    config = RunConfig(priors=["dummy"], decoder="dummy", suites=["synth-color", "synth-shape"])
    resolve(config)
    assert config.scorers == ["binding", "analytic"]
    mixed = RunConfig(priors=["dummy"], decoder="dummy", suites=["synth-color", "t2i-compbench-color"])
    with pytest.raises(EvalkitError, match="--scorer"):
        resolve(mixed)
    monkeypatch.delenv("EVALKIT_BLIP_VQA_DIR", raising=False)
    real = RunConfig(priors=["dummy"], decoder="dummy", suites=["t2i-compbench-color"])
    with pytest.raises(EvalkitError, match="blip-vqa|BLIP"):  # the default for T2I-CompBench needs a local BLIP folder
        resolve(real)
    assert real.scorers == ["blip-vqa"]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_give_the_single_process_results(launcher, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    executable = shutil.which(launcher, path=os.path.dirname(sys.executable))
    if executable is None:
        pytest.skip(f"{launcher} is not installed beside this Python")
    # accelerate's --multi_gpu launcher starts torchrun-style processes; without CUDA they use gloo on the CPU
    launch = (
        [executable, "--standalone", "--nproc-per-node", "2"]
        if launcher == "torchrun"
        else [
            executable,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    )
    args = dummy_run_args(
        "--suite",
        "synth-color,synth-shape",
        "--limit",
        "3",
        "--images-per-prompt",
        "2",
        "--batch-size",
        "4",
        "--no-cache",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    two = subprocess.run(
        [*launch, "-m", "evalkit", *args, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    single = run(
        config(tmp_path, suites=["synth-color", "synth-shape"], batch_size=4, cache=False, out=str(tmp_path / "one")),
        progress=False,
    )
    [multi] = list((tmp_path / "two").iterdir())
    assert json.loads((multi / "run.json").read_text())["processes"] == 2
    assert (multi / "samples.jsonl").read_text() == (single / "samples.jsonl").read_text()
    strip = lambda d: [
        {k: v for k, v in r.items() if k != "tag"} for r in json.loads((d / "results.json").read_text())["rows"]
    ]
    assert strip(multi) == strip(single)
    assert sorted(p.name for p in (multi / "images").rglob("*.png")) == sorted(
        p.name for p in (single / "images").rglob("*.png")
    )


def test_prompt_words_outside_the_world_vocabulary_are_reported(tmp_path, prompts_dir):
    """T2I-CompBench prompts through the embedded stack: the run says which words its CLIP could not read."""
    run_dir = run(
        config(
            tmp_path,
            priors=["eclipse"],
            decoder="synth",
            suites=["t2i-compbench-color"],
            scorers=["dummy"],
            limit=6,
            images_per_prompt=1,
            num_inference_steps=2,
            cache=False,
        ),
        progress=False,
    )
    found = json.loads((run_dir / "results.json").read_text())["unknown_words"]["t2i-compbench-color"]["synth-clip"]
    from evalkit.world.models.clip import world_words

    prompts = [item.prompt for item in load_suite("t2i-compbench-color").items("val")[:6]]
    outside = {w.lower() for p in prompts for w in p.split()} - set(world_words())
    assert found["prompts"] == 6 and found["with_unknown_words"] >= 1 and found["words"]
    assert set(found["words"]) <= outside  # every reported word is foreign to the world (a few may share BPE pieces)
    assert sum(found["words"].values()) >= found["with_unknown_words"]
    report = (run_dir / "report.md").read_text()
    assert "**Vocabulary.** t2i-compbench-color:" in report and max(found["words"], key=found["words"].get) in report
    synth = run(
        config(
            tmp_path,
            priors=["eclipse"],
            decoder="synth",
            suites=["synth-color"],
            scorers=["dummy"],
            limit=3,
            images_per_prompt=1,
            num_inference_steps=2,
            cache=False,
        ),
        progress=False,
    )
    assert "unknown_words" not in json.loads((synth / "results.json").read_text())
