"""``evalkit eval-prior`` end to end on the calibration priors (no decoding: seconds)."""

import json

import pytest
from click.testing import CliRunner

from evalkit.cli import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-prior")
    result = CliRunner().invoke(
        cli,
        ["eval-prior", "--prior", "oracle,text,none", "--suite", "synth-color", "--num-seeds", "1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    [folder] = list(out.iterdir())
    assert f"wrote {folder}" in result.output and "# Embedding-level evaluation" in result.output
    return folder


def test_writes_rows_summary_and_report(run_dir):
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.md", "rows.jsonl", "summary.json"]
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    assert {r["prior"] for r in rows} == {"oracle", "text", "none"} and {r["seed"] for r in rows} == {42}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["priors"] == ["oracle", "text", "none"] and summary["config"]["seeds"] == [42]
    assert "## Headroom: oracle vs text vs none" in (run_dir / "report.md").read_text()


def test_the_oracle_binds_better_than_no_prior(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    value = {
        (r["prior"], r["seen"]): r["value"]
        for r in summary["summary"]
        if r["metric"] == "binding" and not r["control"] and r["category"] == "color"
    }
    assert value[("oracle", "all")] > value[("none", "all")] + 0.2
    assert all(r["headroom"] for r in summary["headroom"])


def test_the_library_call_is_the_command(tmp_path):
    from evalkit.eval_prior import evaluate_priors

    folder = evaluate_priors(["oracle", "none"], ["synth-color"], num_seeds=1, out=tmp_path, progress=False)
    assert folder.parent == tmp_path and (folder / "summary.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--controls", "mirrored"], "unknown control 'mirrored'"),
        (["--compare", "oracle:eclipse"], "'oracle:eclipse': expected A:B with both in --prior"),
        (["--prior-path", "eclipse=/nowhere"], "NAME must be one of oracle, none"),
    ],
)
def test_bad_names_are_refused_before_anything_runs(tmp_path, args, message):
    result = CliRunner().invoke(
        cli, ["eval-prior", "--prior", "oracle,none", "--suite", "synth-color", *args, "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "runs").exists()
