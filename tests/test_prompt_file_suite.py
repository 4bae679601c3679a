"""The user prompt-file suite (evalkit.suites.prompt_file): formats, items, versions, errors. Fast, no models."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from evalkit.errors import EvalkitError, PromptFileError, SettingError
from evalkit.prompts_fetch import MAX_PROMPT_FILE_BYTES
from evalkit.suites.prompt_file import PromptFileSuite, prompt_file_suite, read_prompt_bytes


def write(tmp_path, name, content):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


TEXT = "# my colour prompts\n\n  a red car and a blue bench  \r\n# a comment\na green apple and a yellow cup\n\n"


def test_plain_text_items_ids_and_meta(tmp_path):
    path = write(tmp_path, "my.txt", TEXT)
    suite = prompt_file_suite(path, "color")
    assert isinstance(suite, PromptFileSuite)
    assert suite.name == "prompts-my" and suite.category == "color" and suite.splits == ("val",)
    assert suite.default_scorers == ("blip-vqa",)
    items = suite.items("val")
    assert [i.prompt for i in items] == ["a red car and a blue bench", "a green apple and a yellow cup"]
    assert [i.item_id for i in items] == ["color-val-0000", "color-val-0001"]
    assert all(i.split == "val" and i.seen is None and i.category == "color" for i in items)
    assert all(i.noun_phrases is None for i in items)  # the scorer's splitter fills them in, as for T2I-CompBench
    assert [i.meta for i in items] == [{"file": "my.txt", "line": 3}, {"file": "my.txt", "line": 5}]
    assert suite.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == suite.meta["sha256"]
    assert suite.meta["format"] == "text" and suite.meta["prompts"] == 2
    with pytest.raises(ValueError, match="no split 'train'"):
        suite.items("train")


def test_name_override_bom_and_any_category(tmp_path):
    path = write(tmp_path, "p.txt", "\ufeffa cat on the left of a dog\n".encode("utf-8"))
    suite = prompt_file_suite(path, "spatial", name="mine")
    assert suite.name == "mine" and suite.items()[0].prompt == "a cat on the left of a dog"
    assert suite.items()[0].item_id == "spatial-val-0000"
    for bad in ("", "  ", "two words"):
        with pytest.raises(SettingError, match="category"):
            prompt_file_suite(path, bad)


def test_version_follows_prompts_not_layout(tmp_path):
    v = prompt_file_suite(write(tmp_path, "a.txt", TEXT), "color").version()
    relaid = "a red car and a blue bench\n\n\n# other comment\n   a green apple and a yellow cup"
    assert prompt_file_suite(write(tmp_path, "a.txt", relaid), "color").version() == v
    changed = TEXT.replace("green apple", "green pear")
    assert prompt_file_suite(write(tmp_path, "a.txt", changed), "color").version() != v
    assert prompt_file_suite(write(tmp_path, "a.txt", TEXT), "shape").version() != v  # category is hashed
    assert prompt_file_suite(write(tmp_path, "a.txt", TEXT), "color", name="x").version() != v  # as is the name


def test_duplicates_refused_with_line_numbers(tmp_path):
    path = write(tmp_path, "d.txt", "a red car\na blue bench\n  a red car\n# x\na blue bench\na red car\n")
    with pytest.raises(PromptFileError) as e:
        prompt_file_suite(path, "color")
    msg = str(e.value)
    assert str(path) in msg and "2 prompt(s)" in msg
    assert "'a red car' (color) on lines 1, 3, 6" in msg and "'a blue bench' (color) on lines 2, 5" in msg


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(PromptFileError, match=f"prompt file not found: {missing}"):
        prompt_file_suite(missing, "color")
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(PromptFileError, match="cannot read prompt file .*folder.txt: a folder, not a regular file"):
        prompt_file_suite(folder, "color")
    with pytest.raises(PromptFileError, match=r"empty.txt is empty \(0 bytes\)"):
        prompt_file_suite(write(tmp_path, "empty.txt", b""), "color")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        prompt_file_suite(write(tmp_path, "blank.txt", "\n  \n# only a comment\n"), "color")
    with pytest.raises(PromptFileError, match="latin1.txt is not valid UTF-8"):
        prompt_file_suite(write(tmp_path, "latin1.txt", "a caf\xe9 table\n".encode("latin-1")), "color")
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: the size is refused before any byte is read
        f.truncate(MAX_PROMPT_FILE_BYTES + 1)
    with pytest.raises(PromptFileError, match=f"big.txt: {MAX_PROMPT_FILE_BYTES + 1} bytes, more than"):
        prompt_file_suite(big, "color")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.txt"
        os.mkfifo(fifo)
        with pytest.raises(PromptFileError, match="a FIFO, not a regular file"):
            prompt_file_suite(fifo, "color")
    with pytest.raises(PromptFileError, match=r"\.json is not read"):
        prompt_file_suite(write(tmp_path, "p.json", '["a red car"]'), "color")
    assert issubclass(PromptFileError, EvalkitError)


def test_read_prompt_bytes_hints(tmp_path):
    with pytest.raises(PromptFileError, match=r"^X file not found: .*gone \(from here\)\. fetch it$"):
        read_prompt_bytes(tmp_path / "gone", what="X file", where=" (from here)", missing_hint="fetch it")
    assert read_prompt_bytes(write(tmp_path, "ok", b"abc")) == b"abc"


def test_jsonl(tmp_path):
    rows = [
        {"prompt": " a red car and a blue bench "},
        {"prompt": "a cube left of a ball", "category": "spatial", "noun_phrases": ["a cube", " a ball "]},
        {"prompt": "a green apple", "noun_phrases": "a green apple|", "item_id": "apple-1"},
        {"prompt": "a red car and a blue bench", "category": "complex"},
    ]  # same prompt, other category: allowed
    path = write(tmp_path, "p.jsonl", "# header comment\n" + "\n".join(json.dumps(r) for r in rows) + "\n\n")
    suite = prompt_file_suite(path, "color")
    items = suite.items()
    assert suite.meta["format"] == "jsonl"
    assert [i.item_id for i in items] == ["color-val-0000", "spatial-val-0001", "apple-1", "complex-val-0003"]
    assert [i.category for i in items] == ["color", "spatial", "color", "complex"]
    assert [i.noun_phrases for i in items] == [None, ("a cube", "a ball"), ("a green apple",), None]
    assert [i.meta["line"] for i in items] == [2, 3, 4, 5]
    # custom ids are part of the version (runs are paired by item id)
    renamed = path.read_text().replace("apple-1", "apple-2")
    assert prompt_file_suite(write(tmp_path, "p.jsonl", renamed), "color").version() != suite.version()
    # phrases are part of it too
    rephrased = path.read_text().replace('" a ball "', '"the ball"')
    assert prompt_file_suite(write(tmp_path, "p.jsonl", rephrased), "color").version() != suite.version()


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", ', "line 1 is not valid JSON"),
        ('["a red car"]', "line 1: expected a JSON object, found list"),
        ('{"text": "a red car"}', "unknown field\\(s\\) 'text'"),
        ('{"prompt": "  "}', "line 1: no prompt"),
        ('{"prompt": "a", "noun_phrases": 3}', "noun_phrases must be a list of strings"),
        ('{"prompt": "a", "noun_phrases": "|"}', "names no phrase"),
        ('{"prompt": "a", "item_id": 7}', "item_id must be a string"),
        ('{"prompt": "a", "category": "two words"}', "line 1: category must be a non-blank word"),
    ],
)
def test_jsonl_errors(tmp_path, line, message):
    with pytest.raises(PromptFileError, match=message):
        prompt_file_suite(write(tmp_path, "bad.jsonl", line + "\n"), "color")


def test_jsonl_repeated_item_ids(tmp_path):
    text = '{"prompt": "a", "item_id": "color-val-0001"}\n{"prompt": "b"}\n'  # collides with the default id of line 2
    with pytest.raises(PromptFileError, match="repeats item ids: 'color-val-0001' on lines 1, 2"):
        prompt_file_suite(write(tmp_path, "ids.jsonl", text), "color")


def test_csv(tmp_path):
    text = (
        'prompt,noun_phrases,category\n"a red car, parked",a red car|,\n\n"a two\nline prompt",,shape\na blue bench,,\n'
    )
    suite = prompt_file_suite(write(tmp_path, "p.csv", text), "color")
    items = suite.items()
    assert [i.prompt for i in items] == ["a red car, parked", "a two\nline prompt", "a blue bench"]
    assert [i.noun_phrases for i in items] == [("a red car",), None, None]
    assert [i.item_id for i in items] == ["color-val-0000", "shape-val-0001", "color-val-0002"]
    assert [i.meta["line"] for i in items] == [2, 4, 6]
    with pytest.raises(PromptFileError, match="has no 'prompt' column; it has text"):
        prompt_file_suite(write(tmp_path, "h.csv", "text\na red car\n"), "color")
    with pytest.raises(PromptFileError, match="line 3: 2 fields, the header has 1"):
        prompt_file_suite(write(tmp_path, "n.csv", "prompt\na red car\na,b\n"), "color")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        prompt_file_suite(write(tmp_path, "only.csv", "prompt\n\n"), "color")
    with pytest.raises(PromptFileError, match="on lines 2, 3"):
        prompt_file_suite(write(tmp_path, "dup.csv", "prompt\na red car\n a red car \n"), "color")


def test_format_override(tmp_path):
    path = write(tmp_path, "prompts.list", '{"prompt": "a red car"}\n')
    assert prompt_file_suite(path, "color").items()[0].prompt == '{"prompt": "a red car"}'
    assert prompt_file_suite(path, "color", format="jsonl").items()[0].prompt == "a red car"
    with pytest.raises(SettingError, match="unknown prompt file format 'yaml'"):
        prompt_file_suite(path, "color", format="yaml")
