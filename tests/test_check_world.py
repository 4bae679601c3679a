"""`evalkit check-world` (evalkit.checks.world): every part on the shipped components in its quick settings,
its report where asked, and never into the committed results/ by default."""

from __future__ import annotations

import json

from click.testing import CliRunner

from evalkit.checks.world import PARTS, QUICK, check_world
from evalkit.cli import cli
from evalkit.decoders.synth import SHIPPED_DIR as DECODER_DIR
from evalkit.paths import REPO_ROOT


def test_every_part_writes_its_report_where_asked(tmp_path):
    out = tmp_path / "checks"
    report = check_world(out, **QUICK, parts=PARTS)
    assert {"clip", "headroom"} <= set(report)
    assert "mean/seen/caption_binding" in json.loads((out / "clip.json").read_text())["metrics"]
    assert json.loads((out / "headroom" / "summary.json").read_text())["headroom"]
    assert (out / "headroom" / "report.md").is_file()
    if (DECODER_DIR / "config.json").is_file():  # the shipped decoder's weights
        results = json.loads((out / "decoder.json").read_text())["results"]
        assert {r["steps"] for r in results} == set(QUICK["steps_sweep"])
        assert list(out.glob("decoded-synth-*.png"))
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Embedded stack: quality bars") and "## CLIP" in readme
    assert check_world(out, **QUICK, parts=()) == json.loads(json.dumps(report))  # parts not run: read back


def test_the_default_folder_is_a_new_one_under_the_current_directory(tmp_path, monkeypatch):
    committed = REPO_ROOT / "results" / "embedded-stack"
    before = {p: p.stat().st_mtime_ns for p in committed.rglob("*") if p.is_file()} if committed.is_dir() else {}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check-world", "--parts", "clip", "--clip-seeds", "1"])
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "evalkit-checks").glob("*/README.md"))
    assert len(written) == 1 and "## CLIP" in written[0].read_text()
    check_world(None, **QUICK, parts=("clip",))  # the library's default too: a second, new folder
    assert len(list((tmp_path / "evalkit-checks").glob("*/README.md"))) == 2
    after = {p: p.stat().st_mtime_ns for p in committed.rglob("*") if p.is_file()} if committed.is_dir() else {}
    assert after == before  # results/embedded-stack/ is refreshed only with --out results/embedded-stack


def test_refreshing_the_committed_copy_is_a_documented_option():
    result = CliRunner().invoke(cli, ["check-world", "--help"])
    assert "--out results/embedded-stack" in " ".join(result.output.split())
