"""The regression gate's statistics (``evalkit compare``): floors, paired tests, ungated rows, like for like."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from evalkit.cli import cli
from evalkit.harness.compare import MIN_PROMPTS, ProtocolMismatchError, compare_results, headline
from evalkit.harness.run_config import RunConfig
from evalkit.harness.runner import run
from evalkit.stats import binomial_floor, paired_bootstrap, paired_floor

ROW = dict(
    prior="p", suite="s", suite_version="v", category="color", seen="all", metric="binding", higher_is_better=True
)


def _results(rows, **extra):
    return {"protocol_hash": "h", "protocol": {"images_per_prompt": 2}, "rows": rows, **extra}


def _samples(scores, prior="p", prompts=None):
    """Per-image sample rows of one row: image k belongs to prompt k // 2, seeds 42 and 43."""
    return [
        {
            "prior": prior,
            "suite": "s",
            "scorer": "binding",
            "category": "color",
            "seen": True,
            "item_id": f"i{k // 2}",
            "seed": 42 + k % 2,
            "score": float(v),
        }
        for k, v in enumerate(scores)
    ]


def _pair(base_scores, new_scores, min_prompts=MIN_PROMPTS, z=3.0):
    rows = lambda scores: [
        {**ROW, "value": float(np.mean(scores)), "stderr": 1e-12, "n": len(scores), "n_prompts": len(scores) // 2}
    ]
    return compare_results(
        _results(rows(base_scores)),
        _results(rows(new_scores)),
        z,
        _samples(base_scores),
        _samples(new_scores),
        min_prompts,
    )


def test_a_saturated_row_with_a_tiny_bootstrap_error_is_not_infinitely_certain():
    # the failing CI's first row: 1.0000 → 1.0000 (−1e-9), bootstrap stderr 1e-12, 2 images
    base = _results([{**ROW, "value": 1.0, "stderr": 1e-12, "n": 2}])
    new = _results([{**ROW, "value": 1.0 - 1e-9, "stderr": 1e-12, "n": 2}])
    change = compare_results(base, new, min_prompts=1).changes[0]
    assert abs(change.z) < 1e-6 and change.status == "same"
    assert change.stderr >= binomial_floor(1.0, 2) > 0.2
    # a row of 16 images: one flip is noise, a collapse is not
    sixteen = [{**ROW, "value": 1.0, "stderr": 1e-12, "n": 16, "n_prompts": 8}]
    flip = [{**ROW, "value": 15 / 16, "stderr": 1e-12, "n": 16, "n_prompts": 8}]
    collapse = [{**ROW, "value": 0.3, "stderr": 1e-12, "n": 16, "n_prompts": 8}]
    assert compare_results(_results(sixteen), _results(flip)).changes[0].status == "same"
    assert compare_results(_results(sixteen), _results(collapse)).changes[0].status == "regression"


def test_paired_identical_images_give_z_zero_one_flip_is_noise_and_a_shared_drop_is_caught():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 96)
    same = _pair(base, base).changes[0]
    assert same.paired and same.z == 0 and same.stderr == pytest.approx(paired_floor(96)) and same.status == "same"
    flipped = base.copy()
    flipped[np.argmax(base)] = 0.0  # one image's score collapses (another CPU drew it differently)
    assert abs(_pair(base, flipped).changes[0].z) < 3
    dropped = np.clip(base - 0.05, 0, 1)  # every image a little lower
    change = _pair(base, dropped).changes[0]
    assert change.status == "regression" and change.z < -3
    # the unpaired test of the same rows cannot see it: pairing is what gives the gate its power
    rows = lambda s: [{**ROW, "value": float(np.mean(s)), "stderr": 0.03, "n": 96, "n_prompts": 48}]
    assert compare_results(_results(rows(base)), _results(rows(dropped))).changes[0].status == "same"


def test_rows_with_few_prompts_are_reported_not_gated():
    base, new = np.ones(6), np.zeros(6)  # 3 prompts: a total collapse
    change = _pair(base, new).changes[0]
    assert change.status == "ungated" and change.n_prompts == 3 and change.z < -3
    comparison = _pair(base, new)
    assert not comparison.failed and headline(comparison).startswith("**pass**") and "not gated" in headline(comparison)
    assert _pair(base, new, min_prompts=3).failed


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "0", "-1", "three"])
def test_z_must_be_a_finite_positive_number(tmp_path, bad):
    result = CliRunner().invoke(cli, ["compare", str(tmp_path), str(tmp_path), "--z", bad])
    assert result.exit_code == 2 and "--z must be a finite positive number" in result.output
    with pytest.raises(Exception, match="finite positive"):
        compare_results(_results([]), _results([]), z=float(bad) if bad != "three" else bad)


def test_paired_bootstrap_gives_ci_z_and_p_from_one_procedure():
    rng = np.random.default_rng(3)
    for a, b in [(rng.normal(0, 1, 40), None), (np.zeros(20), None)]:
        b = a + rng.normal(0.1, 0.3, a.size) if a.any() else a + 1e-7  # the second: a tiny shift everywhere
        c = paired_bootstrap(a, b, clusters=np.arange(a.size) // 2, score_range=1.0)
        assert (c.p_value < 0.05) == (c.ci_low > 0 or c.ci_high < 0) == (abs(c.z) > 1.959963984540054)
        assert c.ci_low < c.difference < c.ci_high and math.isclose(c.p_value, math.erfc(abs(c.z) / math.sqrt(2)))
    tiny = paired_bootstrap(np.zeros(20), np.full(20, 1e-7), score_range=1.0)
    assert abs(tiny.z) < 0.01 and tiny.p_value > 0.99  # was "−0.0000 [−0.0000, −0.0000], p < 0.001"


def _dummy(tmp_path, name, **overrides):
    config = RunConfig(
        **{
            **dict(
                priors=["dummy"],
                decoder="dummy",
                suites=["synth-color"],
                scorers=["dummy"],
                limit=4,
                images_per_prompt=2,
                out=str(tmp_path / name),
                cache_dir=str(tmp_path / "cache"),
            ),
            **overrides,
        }
    )
    return run(config, progress=False)


def test_other_prompt_subsets_are_refused(tmp_path):
    eight, four = _dummy(tmp_path, "eight", limit=8), _dummy(tmp_path, "four", limit=4)
    result = CliRunner().invoke(cli, ["compare", str(eight), str(four)])
    assert result.exit_code == 2 and "other prompt sets" in result.output and "--limit 8 vs 4" in result.output
    with pytest.raises(ProtocolMismatchError, match="synth-color: base scored 8 prompts, new 4"):
        compare_results(
            json.loads((eight / "results.json").read_text()), json.loads((four / "results.json").read_text())
        )


def test_results_record_where_the_run_ran_and_compare_notes_differences(tmp_path):
    a = _dummy(tmp_path, "a")
    results = json.loads((a / "results.json").read_text())
    env = results["environment"]
    for field in ("device", "cpu_model", "isa", "cpu_capability", "threads", "torch", "diffusers", "decoder_dtype"):
        assert field in env
    assert env["device"] == "cpu" and env["threads"] >= 1 and isinstance(env["isa"], list)
    other = json.loads(json.dumps(results))
    other["environment"] = {
        **env,
        "cpu_model": "Intel(R) Xeon(R) Platinum",
        "isa": env["isa"] + ["amx_bf16"],
        "threads": env["threads"] + 1,
    }
    comparison = compare_results(results, other)
    assert not comparison.failed
    assert any(n.startswith("cpu_model:") for n in comparison.notes) and any("amx_bf16" in n for n in comparison.notes)
    assert any(n.startswith("threads:") for n in comparison.notes)


def test_the_headline_agrees_with_the_exit_code_when_rows_are_missing(tmp_path):
    both = _dummy(tmp_path, "both", suites=["synth-color", "synth-shape"])
    one = _dummy(tmp_path, "one", suites=["synth-color"])
    result = CliRunner().invoke(cli, ["compare", str(both), str(one)])
    assert result.exit_code == 1 and "**FAIL**" in result.output and "missing from new" in result.output
    assert "**pass**" not in result.output
    fine = CliRunner().invoke(cli, ["compare", str(one), str(both)])
    assert fine.exit_code == 0 and "**pass**" in fine.output and "only in new" in fine.output


def test_runs_under_other_prior_names_say_so(tmp_path):
    a = _dummy(tmp_path, "a")
    results = json.loads((a / "results.json").read_text())
    renamed = json.loads(json.dumps(results))
    for row in renamed["rows"]:
        row["prior"] = "mine"
    with pytest.raises(
        ProtocolMismatchError, match=r"share suite versions .* but no prior: base has \['dummy'\], new has \['mine'\]"
    ):
        compare_results(results, renamed)


def test_decoder_dtype_is_the_numeric_path_not_the_protocol():
    from evalkit.fingerprints import fingerprint
    from evalkit.contracts import Protocol
    from evalkit.decoders.synth import SynthDecoder

    f32, bf16 = SynthDecoder(SynthDecoder.tiny_config()), SynthDecoder(SynthDecoder.tiny_config())
    bf16.config.sampling_dtype = bf16.compute_dtype = "bfloat16"
    bf16.load_state_dict(f32.state_dict())
    assert fingerprint(f32, code=False, numeric=False) == fingerprint(bf16, code=False, numeric=False)
    assert fingerprint(f32) != fingerprint(bf16)  # the work cache keeps their images apart
    p = Protocol("synth", 10, 2.0, 32, dtype="float32")
    q = Protocol("synth", 10, 2.0, 32, dtype="bfloat16")
    assert p.hash() == q.hash() and p.decoding() != q.decoding()


def test_reports_show_prompts_and_images(tmp_path):
    a = _dummy(tmp_path, "a", limit=6)
    text = (a / "report.md").read_text()
    assert "prompts × images" in text and "| 6 × 2 " in text
    assert "over the val prompts this run scored" in text and "all val prompts" not in text


def test_verdicts_name_the_leader_and_whether_the_paired_test_resolves_it():
    from evalkit.report.run_report import verdicts

    rows = [
        {**ROW, "prior": p, "suite": "s", "value": v, "n": 200, "n_prompts": 100} for p, v in (("a", 0.50), ("b", 0.52))
    ]
    close = [
        {
            "a": "a",
            "b": "b",
            "metric": "binding",
            "suite": "s",
            "seen": "all",
            "difference": 0.02,
            "z": 1.1,
            "ci_low": -0.016,
            "ci_high": 0.056,
        }
    ]
    line = verdicts(close, rows, {"s": "binding"})[0]
    assert line.startswith("**s**: b leads with 0.520, 0.020 ahead of a (0.500)") and "not resolved at this n" in line
    assert "100 prompts, 200 images" in line
    far = [{**close[0], "z": 4.0, "ci_low": 0.01, "ci_high": 0.03}]
    assert "— resolved (paired z 4.0" in verdicts(far, rows, {"s": "binding"})[0]


def test_each_category_is_scored_by_the_papers_metric_in_the_parameter_table_and_the_verdicts():
    """T2I-CompBench's Table 2: color / shape / texture by B-VQA, spatial by the detector, non-spatial by CLIP."""
    from evalkit.report.run_report import column_metrics, parameter_table, suite_metrics, verdicts

    scored = {
        "t2i-compbench-color": ("color", ("blip-vqa", "clipscore")),
        "t2i-compbench-spatial": ("spatial", ("blip-vqa", "t2i-spatial")),
        "t2i-compbench-non-spatial": ("non-spatial", ("t2i-clip", "blip-vqa")),
        "t2i-compbench-complex": ("complex", ("t2i-complex",)),
        "odd": ("odd", ("clipscore",)),  # none of the headline metrics: no column
    }
    rows = [
        {**ROW, "prior": prior, "suite": suite, "category": category, "metric": metric, "value": value, "n": 20}
        for suite, (category, metrics) in scored.items()
        for metric in metrics
        for prior, value in (("a", 0.40 + 0.1 * metrics.index(metric)), ("b", 0.45 + 0.1 * metrics.index(metric)))
    ]
    columns = column_metrics(rows)
    assert columns == {
        "color": "blip-vqa",
        "spatial": "t2i-spatial",
        "non-spatial": "t2i-clip",
        "complex": "t2i-complex",
    }
    assert list(columns) == ["color", "spatial", "non-spatial", "complex"]  # the paper's column order
    table = parameter_table(rows, {"a": {}, "b": {}}, ["a", "b"], columns)
    assert table.headers[4:8] == ["color", "spatial (t2i-spatial)", "non-spatial (t2i-clip)", "complex (t2i-complex)"]
    assert table.rows[0][4:8] == ["0.400", "0.500", "0.400", "0.400"]  # spatial: t2i-spatial's 0.5, not B-VQA's 0.4
    metrics = suite_metrics(rows)
    assert metrics["t2i-compbench-spatial"] == "t2i-spatial" and "odd" not in metrics
    lines = verdicts([], rows, metrics)
    assert "**t2i-compbench-spatial** (t2i-spatial): b leads with 0.550" in "\n".join(lines)


def test_the_parameter_plot_is_legible_and_labels_of_one_size_do_not_collide(tmp_path):
    from PIL import Image

    from evalkit.report.run_report import _spread_labels, plot_parameters

    names = {
        "eclipse": 134720,
        "projection": 134720,
        "eclipse-hn": 134720,
        "diffusion": 143104,
        "diffusion-xl": 1957760,
    }
    rows = [
        {
            "prior": n,
            "metric": "binding",
            "seen": "all",
            "category": "color",
            "value": 0.40 + 0.001 * k,
            "ci_low": 0.35,
            "ci_high": 0.45,
        }
        for k, n in enumerate(names)
    ]
    priors = {n: {"trainable_parameters": p} for n, p in names.items()}
    path = plot_parameters(rows, priors, {"color": "binding"}, tmp_path / "parameters.png")
    width, height = Image.open(path).size
    assert width >= 800 and height >= 600
    points = [(priors[r["prior"]]["trainable_parameters"], r) for r in rows]
    labels = _spread_labels(points, gap=0.03)
    close = sorted(y for x, y, n in labels if n != "diffusion-xl")  # four priors within 0.03 decades
    assert len(close) == 4 and min(b - a for a, b in zip(close, close[1:])) >= 0.03 - 1e-12
    assert sum(close) / 4 == pytest.approx(sum(r["value"] for r in rows if r["prior"] != "diffusion-xl") / 4)


def test_dtype_chooses_the_decoders_numeric_path_and_refuses_what_it_cannot_do(tmp_path):
    from evalkit.decoders import load_decoder
    from evalkit.errors import EvalkitError
    from evalkit.placement import place

    decoder = load_decoder("synth")  # the shipped config samples in bfloat16; placement chooses
    assert place(decoder, "cpu", "float32", role="decoder")["dtype"] == decoder.compute_dtype == "float32"
    assert place(decoder, "cpu", "bfloat16", role="decoder")["dtype"] == decoder.compute_dtype == "bfloat16"
    with pytest.raises(EvalkitError, match="computes in float32 or bfloat16; --dtype float16"):
        place(decoder, "cpu", "float16", role="decoder")
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--decoder",
            "dummy",
            "--prior",
            "dummy",
            "--scorer",
            "dummy",
            "--dtype",
            "bfloat16",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 2 and "decoder 'dummy' computes in float32" in result.output
    assert not (tmp_path / "runs").exists()
