"""T2I-CompBench relation suites (spatial, non-spatial, complex): pinned definition, counts against the local
files (``EVALKIT_PROMPTS_DIR``; skipped without it), complex types, and fetching both definitions' files."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest

from evalkit.errors import PromptFileError
from evalkit.registry import SUITES
from evalkit.suites import load_suite
from evalkit.suites import t2i_compbench as attributes
from evalkit.suites import t2i_compbench_relations as relations
from evalkit.suites.t2i_compbench_relations import T2ICompBenchRelationSuite, type_key

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = os.environ.get("EVALKIT_PROMPTS_DIR")
needs_real = pytest.mark.skipif(not REAL_DIR, reason="EVALKIT_PROMPTS_DIR is unset: no local copy of the prompt files")
NAMES = {
    "spatial": "t2i-compbench-spatial",
    "non-spatial": "t2i-compbench-non-spatial",
    "complex": "t2i-compbench-complex",
}
DEFAULTS = {"spatial": ("t2i-spatial",), "non-spatial": ("t2i-clip",), "complex": ("t2i-complex",)}


def test_definition_pins_the_attribute_suites_source_and_every_file():
    raw = json.loads((ROOT / "benchmarks" / "suites" / "t2i-compbench-relations.json").read_text())
    assert raw["source"] == attributes.load_definition()["source"]  # one folder, one commit
    assert set(raw["categories"]) == set(NAMES)
    read = {name for category in NAMES for name in T2ICompBenchRelationSuite(category).files()}
    assert read == set(raw["files"]) and len(read) == 12
    assert not read & set(attributes.load_definition()["files"])


def test_registered_names_build_without_touching_files(monkeypatch):
    monkeypatch.setenv("EVALKIT_PROMPTS_DIR", "/nowhere")
    for category, name in NAMES.items():
        suite = SUITES.get(name)()
        assert (suite.name, suite.category, suite.splits) == (name, category, ("train", "val"))
        assert suite.default_scorers == DEFAULTS[category]
    with pytest.raises(ValueError, match="relation category"):
        T2ICompBenchRelationSuite("color")
    with pytest.raises(PromptFileError, match="evalkit suites fetch t2i-compbench"):
        load_suite("t2i-compbench-spatial").items("val")


def test_type_key_is_3_in_1s():
    assert type_key("The Red hat was on top of the rack. Really.") == "the red hat was on top of the rack"
    assert type_key("a cat near a dog") == "a cat near a dog"


# --------------------------------------------------------------------------- a fake corpus


FAKE = {
    "complex_val.txt": b"The red hat was on top of the rack.\r\nA dog is chasing a ball.\r\n"
    b"The cat sat near a lamp, purring",
    "complex_val_spatial.txt": b"the red hat was on top of the rack.\r\n",
    "complex_val_action.txt": b"A dog is chasing a ball.",
    "complex_val_spatialaction.txt": b"The cat sat near a lamp, purring\r\n",
}


def fake_definition(src: Path) -> dict:
    for name, data in FAKE.items():
        (src / name).write_bytes(data)
    d = copy.deepcopy(relations.load_relations_definition())
    d["splits"] = {"val": {"file": "{stem}_val.txt", "count": 3}, "train": {"file": "{stem}_val.txt", "count": 3}}
    d["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in FAKE.items()}
    d["categories"]["complex"]["types"] = {
        k: v.replace("{split}", "val") for k, v in d["categories"]["complex"]["types"].items()
    }
    return d


def test_fake_complex_types_ids_and_version(tmp_path):
    d = fake_definition(tmp_path)
    suite = T2ICompBenchRelationSuite("complex", tmp_path, definition=d)
    items = suite.items("val")
    assert [i.meta["complex_type"] for i in items] == ["spatial", "action", "spatial-action"]  # matched lowercased
    assert [i.item_id for i in items] == ["t2i-complex-val-0000", "t2i-complex-val-0001", "t2i-complex-val-0002"]
    assert all(i.seen is None and i.noun_phrases is None and i.category == "complex" for i in items)
    assert items[2].prompt == "The cat sat near a lamp, purring" and items[0].meta["line"] == 1
    version = suite.version("val")
    moved = fake_definition(tmp_path)
    (tmp_path / "complex_val_action.txt").write_bytes(b"The cat sat near a lamp, purring")  # another type
    moved["files"]["complex_val_action.txt"] = {
        "sha256": hashlib.sha256(b"The cat sat near a lamp, purring").hexdigest(),
        "size": 32,
    }
    other = T2ICompBenchRelationSuite("complex", tmp_path, definition=moved)
    assert other.items("val")[2].meta["complex_type"] == "action" and other.version("val") != version
    (tmp_path / "complex_val_spatial.txt").write_bytes(b"altered\r\n")  # every type file is hash-checked
    with pytest.raises(PromptFileError, match="not the pinned version"):
        T2ICompBenchRelationSuite("complex", tmp_path, definition=d).items("val")


# --------------------------------------------------------------------------- the real files


@needs_real
def test_definition_hashes_match_the_local_files():
    for spec in attributes.file_specs(relations.load_relations_definition()):
        data = (Path(REAL_DIR) / spec.name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (spec.sha256, spec.size), spec.name


@needs_real
@pytest.mark.parametrize("category", list(NAMES))
def test_real_suites_counts_ids_and_versions(category):
    suite = load_suite(NAMES[category])  # resolves EVALKIT_PROMPTS_DIR
    stem = category.replace("-", "_")
    for split, count in (("val", 300), ("train", 700)):
        items = suite.items(split)
        assert len(items) == count and all(i.seen is None for i in items)
        assert [i.item_id for i in items] == [f"t2i-{category}-{split}-{n:04d}" for n in range(count)]
        assert {i.meta["file"] for i in items} == {f"{stem}_{split}.txt"}
        assert len({i.prompt for i in items}) == count  # no repeated prompts in these files
    assert suite.version("val") == load_suite(NAMES[category]).version("val") != suite.version("train")
    assert items[0].prompt.strip() == items[0].prompt


@needs_real
def test_real_complex_types_are_the_three_lists():
    suite = load_suite("t2i-compbench-complex")
    for split, expected in (
        ("val", {"spatial": 58, "action": 212, "spatial-action": 30}),
        ("train", {"spatial": 130, "action": 504, "spatial-action": 66}),
    ):
        items = suite.items(split)
        counts = {kind: sum(1 for i in items if i.meta["complex_type"] == kind) for kind in expected}
        assert counts == expected
        both = (Path(REAL_DIR) / f"complex_{split}_spatialaction.txt").read_text(encoding="utf-8")
        assert {i.prompt for i in items if i.meta["complex_type"] == "spatial-action"} == {
            line.strip() for line in both.split("\n") if line.strip()
        }


@needs_real
def test_fetch_gets_both_definitions(tmp_path, monkeypatch):
    from evalkit.prompts_fetch import fetch_suite

    monkeypatch.delenv("EVALKIT_PROMPTS_DIR")
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    dest = fetch_suite("t2i-compbench-spatial", base_url=Path(REAL_DIR).resolve().as_uri(), progress=False)
    expected = {
        s.name
        for d in (attributes.load_definition(), relations.load_relations_definition())
        for s in attributes.file_specs(d)
    }
    assert {p.name for p in dest.iterdir()} == expected and len(expected) == 24
    assert len(load_suite("t2i-compbench-non-spatial").items("val")) == 300  # read from the download location
