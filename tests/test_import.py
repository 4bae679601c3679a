"""``evalkit import``: T2I-CompBench image folders scored into run folders."""

from __future__ import annotations

import json
import shutil

import pytest

from evalkit.harness.run_config import RunConfig
from evalkit.errors import EvalkitError
from evalkit.harness.export import export_t2i_compbench
from evalkit.harness.importer import BVQA_SCORER, import_t2i_compbench
from evalkit.harness.runs import load_run
from evalkit.harness.runner import run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(original run, its export's dummy/color folder): 3 prompts × 2 seeds of the dummy plugins."""
    root = tmp_path_factory.mktemp("import")
    run_dir = run(
        RunConfig(
            priors=["dummy"],
            decoder="dummy",
            scorers=["dummy"],
            suites=["synth-color"],
            limit=3,
            images_per_prompt=2,
            out=str(root / "runs"),
            cache=False,
        ),
        progress=False,
    )
    out = export_t2i_compbench(run_dir, root / "export")
    return load_run(run_dir), out / "dummy" / "color"


def _scores(run_data, scorer="dummy") -> dict:
    return {(s["item_id"], s["seed"]): s["score"] for s in run_data.samples if s["scorer"] == scorer}


def _copy(folder, tmp_path):
    target = tmp_path / "source"
    shutil.copytree(folder, target)
    return target


def test_import_with_manifest_reproduces_scores(exported, tmp_path):
    original, folder = exported
    run_dir = import_t2i_compbench(folder, "synth-color", tmp_path / "runs", scorers=["dummy"])
    imported = load_run(run_dir)
    assert len(imported.samples) == len(original.samples) == 6
    assert _scores(imported) == _scores(original)
    assert imported.results["protocol"]["decoder"] == "imported"
    assert imported.results["config"]["matched_by"] == "manifest"
    assert (run_dir / "report.md").is_file()
    for sample in imported.samples:
        assert (run_dir / sample["image_path"]).is_file()
        assert sample["image_path"].startswith("images/imported/synth-color/")


def test_import_by_prompt_gives_same_items_and_seeds(exported, tmp_path):
    original, folder = exported
    source = _copy(folder, tmp_path)
    (source / "manifest.json").unlink()
    imported = load_run(import_t2i_compbench(source, "synth-color", tmp_path / "runs", scorers=["dummy"]))
    assert imported.results["config"]["matched_by"] == "prompt"
    assert _scores(imported) == _scores(original)


def test_unknown_prompt_is_named_and_nothing_written(exported, tmp_path):
    _, folder = exported
    source = _copy(folder, tmp_path)
    (source / "manifest.json").unlink()
    first = sorted((source / "samples").iterdir())[0]
    shutil.copyfile(first, source / "samples" / "a purple unicorn_000099.png")
    with pytest.raises(EvalkitError, match="a purple unicorn"):
        import_t2i_compbench(source, "synth-color", tmp_path / "runs", scorers=["dummy"])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_missing_or_empty_samples_folder(tmp_path):
    with pytest.raises(EvalkitError, match="no samples/"):
        import_t2i_compbench(tmp_path, "synth-color", tmp_path / "runs", scorers=["dummy"])
    (tmp_path / "samples").mkdir()
    with pytest.raises(EvalkitError, match="no images"):
        import_t2i_compbench(tmp_path, "synth-color", tmp_path / "runs", scorers=["dummy"])


def test_vqa_result_adds_bvqa_rows(exported, tmp_path):
    _, folder = exported
    source = _copy(folder, tmp_path)
    answers = [0.1, 0.25, 0.5, 0.75, 0.9, 0.3]
    (source / "annotation_blip").mkdir()
    (source / "annotation_blip" / "vqa_result.json").write_text(
        json.dumps([{"question_id": k, "answer": f"{a:.4f}"} for k, a in enumerate(answers)])
    )
    imported = load_run(import_t2i_compbench(source, "synth-color", tmp_path / "runs", scorers=["dummy"]))
    bvqa = _scores(imported, BVQA_SCORER)
    assert len(bvqa) == 6
    assert sum(bvqa.values()) / 6 == pytest.approx(sum(answers) / 6)
    row = next(r for r in imported.results["rows"] if r["metric"] == BVQA_SCORER and r["seen"] == "all")
    assert row["value"] == pytest.approx(sum(answers) / 6)
    # answer k belongs to the k-th file in index order
    manifest = json.loads((source / "manifest.json").read_text())["images"]
    for entry in manifest:
        assert bvqa[(entry["item_id"], entry["seed"])] == pytest.approx(answers[entry["index"]])


def test_two_imports_compare(exported, tmp_path):
    from evalkit.harness.compare import compare_runs

    _, folder = exported
    a = import_t2i_compbench(folder, "synth-color", tmp_path / "a", scorers=["dummy"])
    b = import_t2i_compbench(folder, "synth-color", tmp_path / "b", scorers=["dummy"])
    text, failed = compare_runs(a, b)
    assert not failed and "**pass**: 0 regression(s)" in text
