"""Paired comparisons as JSON rows (``results.json`` key ``paired``), and reports rendered from them."""

import json
import shutil

from evalkit.harness.paired import paired_results
from evalkit.harness.presets import GOLDEN_DIR
from evalkit.report.run_report import write_report
from evalkit.harness.runs import load_run
from evalkit.serialization import seal
from evalkit.world.attributes import CATEGORIES

PAIR = [("oracle", "eclipse")]
KEYS = {
    "a",
    "b",
    "suite",
    "category",
    "seen",
    "scorer",
    "metric",
    "diff",
    "stderr",
    "ci_low",
    "ci_high",
    "p",
    "z",
    "n",
    "n_prompts",
}


def _samples():
    return [json.loads(line) for line in (GOLDEN_DIR / "samples.jsonl").read_text().splitlines() if line.strip()]


def test_rows_are_json_and_per_scorer_suite_and_split():
    run = load_run(GOLDEN_DIR)
    rows = paired_results(_samples(), PAIR, run.results["rows"])
    assert rows and all(set(r) == KEYS for r in rows)
    assert json.loads(json.dumps(rows, allow_nan=False)) == rows
    assert {(r["scorer"], r["suite"]) for r in rows} == {(s["scorer"], s["suite"]) for s in run.samples}
    assert {r["category"] for r in rows} == set(CATEGORIES)
    assert all(r["ci_low"] <= r["diff"] <= r["ci_high"] and r["n_prompts"] == 40 for r in rows if r["seen"] == "all")


def test_default_pairs_follow_the_report():
    run = load_run(GOLDEN_DIR)  # one trained prior beside the oracle: nothing to compare by default
    assert paired_results(_samples(), None, run.results["rows"], run.results["priors"]) == []


def _golden_with(tmp_path, paired):
    folder = tmp_path / "run"
    folder.mkdir(parents=True)
    shutil.copyfile(GOLDEN_DIR / "samples.jsonl", folder / "samples.jsonl")
    results = {k: v for k, v in json.loads((GOLDEN_DIR / "results.json").read_text()).items() if k != "checksum"}
    (folder / "results.json").write_text(json.dumps(seal({**results, "paired": paired})))
    return folder


def _paired_section(report_path) -> list[str]:
    section = report_path.read_text().split("## Paired comparisons\n")[1]
    return section.split("\n## ")[0].splitlines()


def test_a_report_shows_the_stored_rows(tmp_path):
    run = load_run(GOLDEN_DIR)
    rows = paired_results(_samples(), PAIR, run.results["rows"])
    computed = _paired_section(write_report([GOLDEN_DIR], tmp_path / "computed", PAIR))
    assert _paired_section(write_report([_golden_with(tmp_path / "a", rows)], tmp_path / "stored", PAIR)) == computed
    # only the binding rows stored (and edited): they are shown as stored, the others computed as before
    edited = [{**r, "diff": 0.4321} for r in rows if r["scorer"] == "binding"]
    shown = _paired_section(write_report([_golden_with(tmp_path / "b", edited)], tmp_path / "edited", PAIR))
    assert (
        [line for line in shown if "| binding " in line]
        == [line for line in shown if "+0.4321 [" in line and "| binding " in line]
        != []
    )
    assert [line for line in shown if "| binding " not in line] == [
        line for line in computed if "| binding " not in line
    ]
