"""T2I-CompBench suites: pinned definition, hash-checked reading, download, and the docs example.

Tests marked ``needs_real`` read the real prompt files from ``EVALKIT_PROMPTS_DIR`` (``.ci/run`` sets
it) and skip when it is unset. All others build a small fake corpus in a temporary directory, with
its own definition, and never touch the network beyond 127.0.0.1.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from evalkit.errors import PromptFileError, UnknownNameError
from evalkit.prompts_fetch import fetch_suite
from evalkit.registry import SUITES
from evalkit.suites import load_suite
from evalkit.suites import t2i_compbench as t2i
from evalkit.suites.t2i_compbench import T2ICompBenchSuite, fetch_t2i_compbench

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = os.environ.get("EVALKIT_PROMPTS_DIR")
needs_real = pytest.mark.skipif(
    not REAL_DIR,
    reason="EVALKIT_PROMPTS_DIR is unset: point it at a copy of the T2I-CompBench prompt files "
    "(e.g. ../shared/data/t2i-compbench, or run `evalkit suites fetch t2i-compbench`)",
)
PINNED_COMMIT = "1b7094991a57f3c22abdd4f6e8ba6c1a15517073"
CATEGORIES = ("color", "shape", "texture")
FILE_KINDS = ("val_seen", "val_unseen", "val", "train")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No EVALKIT_PROMPTS_DIR; the default location lives under tmp_path/cache."""
    monkeypatch.delenv("EVALKIT_PROMPTS_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


# A small fake corpus: CRLF endings, a blank line, stray spaces, no trailing newline on some files.
FAKE = {
    "color_val_seen.txt": b"a red cube and a blue ball\r\n  a blue cube and a red ball \r\n\r\na green cup",
    "color_val_unseen.txt": b"a pink bear and a gray train\r\na gray bear and a pink train\r\n",
    "color_val.txt": b"a red cube and a blue ball\r\na blue cube and a red ball\r\na green cup\r\n"
    b"a pink bear and a gray train\r\na gray bear and a pink train",
    "color_train.txt": b"a red car\r\na blue car\r\na red car\r\na pi\xc3\xb1ata",
}


@pytest.fixture
def fake(tmp_path):
    """(source dir holding the fake files, matching definition dict)."""
    src = tmp_path / "source"
    src.mkdir()
    for name, data in FAKE.items():
        (src / name).write_bytes(data)
    d = copy.deepcopy(t2i.load_definition())
    d["categories"] = ["color"]
    d["splits"]["val"]["parts"][0]["count"] = 3
    d["splits"]["val"]["parts"][1]["count"] = 2
    d["splits"]["train"]["parts"][0]["count"] = 4
    d["files"] = {name: {"sha256": sha(data), "size": len(data)} for name, data in FAKE.items()}
    return src, d


# --------------------------------------------------------------------------- the committed definition


def test_definition_pins_source_and_every_file():
    raw = json.loads((ROOT / "benchmarks" / "suites" / "t2i-compbench.json").read_text())
    assert raw["source"]["repository"] == "Karine-Huang/T2I-CompBench"
    assert raw["source"]["commit"] == PINNED_COMMIT
    assert raw["source"]["folder"] == "examples/dataset"
    assert raw["categories"] == list(CATEGORIES)
    expected = {f"{c}_{k}.txt" for c in CATEGORIES for k in FILE_KINDS}
    assert set(raw["files"]) == expected
    for info in raw["files"].values():
        assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"]) and info["size"] > 0
    assert t2i.source_base_url() == (
        f"https://raw.githubusercontent.com/Karine-Huang/T2I-CompBench/{PINNED_COMMIT}/examples/dataset"
    )
    # every file a split reads is pinned
    for c in CATEGORIES:
        assert set(T2ICompBenchSuite(c).files()) <= set(raw["files"])


def test_registry_names_build_suites_without_touching_files(clean_env):
    for c in CATEGORIES:
        suite = SUITES.get(f"t2i-compbench-{c}")()
        assert isinstance(suite, T2ICompBenchSuite)
        assert (suite.name, suite.category, suite.splits) == (f"t2i-compbench-{c}", c, ("train", "val"))
    suite = load_suite("t2i-compbench-shape", prompts_dir="/nowhere")
    assert suite.prompts_dir == "/nowhere"
    with pytest.raises(ValueError, match="category"):
        T2ICompBenchSuite("spatial")
    with pytest.raises(ValueError, match="no split 'dev'"):
        SUITES.get("t2i-compbench-color")().items("dev")


# --------------------------------------------------------------------------- real files (EVALKIT_PROMPTS_DIR)


@needs_real
def test_definition_hashes_match_real_files():
    for spec in t2i.file_specs():
        data = (Path(REAL_DIR) / spec.name).read_bytes()
        assert (sha(data), len(data)) == (spec.sha256, spec.size), spec.name


@needs_real
@pytest.mark.parametrize("category", CATEGORIES)
def test_real_suite_splits(category):
    suite = load_suite(f"t2i-compbench-{category}")  # resolves EVALKIT_PROMPTS_DIR
    val = suite.items("val")
    assert len(val) == 300
    assert [i.seen for i in val] == [True] * 200 + [False] * 100
    assert [i.item_id for i in val] == [f"t2i-{category}-val-{n:04d}" for n in range(300)]
    assert {i.meta["file"] for i in val[:200]} == {f"{category}_val_seen.txt"}
    assert {i.meta["file"] for i in val[200:]} == {f"{category}_val_unseen.txt"}
    train = suite.items("train")
    assert len(train) == 700 and all(i.seen is None for i in train)
    assert train[-1].item_id == f"t2i-{category}-train-0699"
    for item in val + train:
        assert item.category == category and item.noun_phrases is None
        assert item.prompt and item.prompt == item.prompt.strip() and "\r" not in item.prompt
    assert not {i.prompt for i in val} & {i.prompt for i in train}


# Pinned: a change here means results are no longer comparable with earlier runs.
EXPECTED_VERSIONS = {
    ("color", "val"): "25c8cdea37de3b38",
    ("color", "train"): "067967f9869e6d70",
    ("shape", "val"): "bbaea2a68ddb0a16",
    ("shape", "train"): "f49b2d8751d752de",
    ("texture", "val"): "6b4557471ad3e6b8",
    ("texture", "train"): "11c695365efb61d4",
}


@needs_real
def test_real_versions_stable_and_distinct(tmp_path):
    # a copy elsewhere gives the same versions: they hash prompts, not paths
    copy_dir = tmp_path / "copy"
    shutil.copytree(REAL_DIR, copy_dir)
    versions = {}
    for c in CATEGORIES:
        a, b = T2ICompBenchSuite(c), T2ICompBenchSuite(c, prompts_dir=copy_dir)
        for split in ("val", "train"):
            assert a.version(split) == a.version(split) == b.version(split)
            versions[(c, split)] = a.version(split)
    assert len(set(versions.values())) == 6
    assert versions == EXPECTED_VERSIONS


@needs_real
def test_real_val_split_against_val_file():
    for c in ("shape", "texture"):
        report = T2ICompBenchSuite(c).compare_val_reference()
        assert report["same_sequence"] and report["same_set"], c
    report = T2ICompBenchSuite("color").compare_val_reference()
    # color_val.txt (2025-09-03) replaced the second copy of 5 duplicated unseen prompts
    assert not report["same_set"]
    assert report["differing_positions"] == [227, 228, 271, 287, 299]
    assert report["only_in_split"] == []
    assert len(report["only_in_reference"]) == 5
    val = [i.prompt for i in T2ICompBenchSuite("color").items("val")]
    assert len(set(val)) == 295 and len(set(val[:200])) == 200


@needs_real
def test_real_altered_file_names_both_hashes(tmp_path):
    copy_dir = tmp_path / "copy"
    shutil.copytree(REAL_DIR, copy_dir)
    target = copy_dir / "texture_train.txt"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01  # one byte
    target.write_bytes(bytes(data))
    spec = next(s for s in t2i.file_specs() if s.name == "texture_train.txt")
    suite = T2ICompBenchSuite("texture", prompts_dir=copy_dir)
    assert len(suite.items("val")) == 300  # other files are fine
    with pytest.raises(PromptFileError) as err:
        suite.items("train")
    msg = str(err.value)
    assert str(target) in msg and spec.sha256 in msg and sha(bytes(data)) in msg


@needs_real
def test_fetch_real_files_from_file_url(tmp_path, clean_env):
    dest = fetch_t2i_compbench(base_url=file_url(Path(REAL_DIR)), progress=False)
    assert dest == t2i.default_prompts_dir()
    assert sorted(p.name for p in dest.iterdir()) == sorted(s.name for s in t2i.file_specs())
    assert T2ICompBenchSuite("color").version("val") == EXPECTED_VERSIONS[("color", "val")]


# --------------------------------------------------------------------------- reading (fake corpus)


def test_parse_prompts():
    assert t2i.parse_prompts(" a \r\n\r\n b\n\tc \r\n") == ["a", "b", "c"]
    assert t2i.parse_prompts("") == []


def test_fake_suite_items_and_parsing(fake):
    src, d = fake
    suite = T2ICompBenchSuite("color", prompts_dir=src, definition=d)
    val = suite.items("val")
    assert [i.prompt for i in val] == [
        "a red cube and a blue ball",
        "a blue cube and a red ball",
        "a green cup",
        "a pink bear and a gray train",
        "a gray bear and a pink train",
    ]
    assert [i.seen for i in val] == [True, True, True, False, False]
    assert [i.item_id for i in val] == [f"t2i-color-val-{n:04d}" for n in range(5)]
    assert [i.meta["line"] for i in val] == [1, 2, 4, 1, 2]
    train = suite.items("train")
    assert [i.prompt for i in train] == ["a red car", "a blue car", "a red car", "a piñata"]  # duplicates kept
    assert all(i.seen is None and i.split == "train" for i in train)
    assert suite.compare_val_reference()["same_sequence"]
    # the version follows the parsed prompts, not the bytes: CRLF -> LF keeps it
    lf = src.parent / "lf"
    lf.mkdir()
    d2 = copy.deepcopy(d)
    for name, data in FAKE.items():
        new = data.replace(b"\r\n", b"\n")
        (lf / name).write_bytes(new)
        d2["files"][name] = {"sha256": sha(new), "size": len(new)}
    assert T2ICompBenchSuite("color", prompts_dir=lf, definition=d2).version("val") == suite.version("val")
    # ... and a changed prompt changes it
    changed = b"a pink bear and a gray train\na gray bear and a pink car\n"
    (lf / "color_val_unseen.txt").write_bytes(changed)
    d2["files"]["color_val_unseen.txt"] = {"sha256": sha(changed), "size": len(changed)}
    assert T2ICompBenchSuite("color", prompts_dir=lf, definition=d2).version("val") != suite.version("val")


def test_resolution_order(clean_env, monkeypatch, tmp_path):
    commit = t2i.load_definition()["source"]["commit"]
    default = tmp_path / "cache" / "prompts" / "t2i-compbench" / commit
    assert t2i.resolve_prompts_dir() == (default, "default download location")
    monkeypatch.setenv("EVALKIT_PROMPTS_DIR", str(tmp_path / "env"))
    assert t2i.resolve_prompts_dir()[0] == tmp_path / "env"
    assert t2i.resolve_prompts_dir(tmp_path / "arg")[0] == tmp_path / "arg"
    monkeypatch.delenv("EVALKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert t2i.default_prompts_dir() == tmp_path / "xdg" / "evalkit" / "prompts" / "t2i-compbench" / commit
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert t2i.default_prompts_dir() == tmp_path / "home" / ".cache" / "evalkit" / "prompts" / "t2i-compbench" / commit


def test_missing_file_names_path_and_remedy(fake, clean_env, tmp_path):
    _, d = fake
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PromptFileError) as err:
        T2ICompBenchSuite("color", prompts_dir=empty, definition=d).items("val")
    msg = str(err.value)
    assert str(empty / "color_val_seen.txt") in msg
    assert "evalkit suites fetch t2i-compbench" in msg and "EVALKIT_PROMPTS_DIR" in msg and "--prompts-dir" in msg
    # with nothing set, it names the file in the default download location
    with pytest.raises(PromptFileError) as err:
        T2ICompBenchSuite("color", definition=d).items("train")
    assert str(t2i.default_prompts_dir() / "color_train.txt") in str(err.value)
    assert "default download location" in str(err.value)


def test_altered_file_names_expected_and_actual_hash(fake):
    src, d = fake
    target = src / "color_val_unseen.txt"
    data = bytearray(target.read_bytes())
    data[0] ^= 0x20  # 'a' -> 'A': one byte
    target.write_bytes(bytes(data))
    with pytest.raises(PromptFileError) as err:
        T2ICompBenchSuite("color", prompts_dir=src, definition=d).items("val")
    msg = str(err.value)
    assert str(target) in msg
    assert d["files"]["color_val_unseen.txt"]["sha256"] in msg and sha(bytes(data)) in msg
    assert "--force" in msg


def test_empty_unreadable_and_blank_files(fake):
    src, d = fake
    (src / "color_train.txt").write_bytes(b"")
    with pytest.raises(PromptFileError, match=r"color_train\.txt is empty"):
        T2ICompBenchSuite("color", prompts_dir=src, definition=d).items("train")
    (src / "color_train.txt").unlink()
    (src / "color_train.txt").mkdir()  # exists but cannot be read as a file
    with pytest.raises(PromptFileError, match=r"cannot read .*color_train\.txt"):
        T2ICompBenchSuite("color", prompts_dir=src, definition=d).items("train")
    # whitespace only, even with a matching hash, holds no prompts
    (src / "color_train.txt").rmdir()
    blank = b" \r\n\r\n"
    (src / "color_train.txt").write_bytes(blank)
    d["files"]["color_train.txt"] = {"sha256": sha(blank), "size": len(blank)}
    with pytest.raises(PromptFileError, match=r"color_train\.txt holds no prompts"):
        T2ICompBenchSuite("color", prompts_dir=src, definition=d).items("train")


def test_count_mismatch_is_reported(fake):
    src, d = fake
    d["splits"]["train"]["parts"][0]["count"] = 700
    with pytest.raises(PromptFileError, match="holds 4 prompts; the suite definition expects 700"):
        T2ICompBenchSuite("color", prompts_dir=src, definition=d).items("train")


# --------------------------------------------------------------------------- download (fake corpus)


class CountingOpener:
    def __init__(self):
        self.urls = []

    def __call__(self, url, timeout):
        import urllib.request

        self.urls.append(url)
        return urllib.request.urlopen(url, timeout=timeout)


def assert_no_partials(directory: Path):
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def test_fetch_from_file_url_verifies_and_is_idempotent(fake, tmp_path, clean_env):
    src, d = fake
    dest = tmp_path / "dest"
    opener = CountingOpener()
    out = fetch_t2i_compbench(dest, base_url=file_url(src), definition=d, opener=opener, progress=True)
    assert out == dest
    for name, data in FAKE.items():
        assert (dest / name).read_bytes() == data
        assert (dest / name).stat().st_mode & 0o777 == 0o644
    assert len(opener.urls) == 4 and opener.urls[0].startswith("file://")
    assert_no_partials(dest)
    assert len(T2ICompBenchSuite("color", prompts_dir=dest, definition=d).items("val")) == 5
    # second run: everything present and correct, nothing downloaded
    fetch_t2i_compbench(dest, base_url=file_url(src), definition=d, opener=opener, progress=False)
    assert len(opener.urls) == 4
    # a damaged local file is replaced; the good ones are left alone
    (dest / "color_train.txt").write_bytes(b"damaged")
    fetch_t2i_compbench(dest, base_url=file_url(src), definition=d, opener=opener, progress=False)
    assert opener.urls[4:] == [file_url(src) + "/color_train.txt"]
    assert (dest / "color_train.txt").read_bytes() == FAKE["color_train.txt"]
    # force downloads everything again
    fetch_t2i_compbench(dest, base_url=file_url(src), definition=d, opener=opener, force=True, progress=False)
    assert len(opener.urls) == 9


def test_fetch_default_dest_is_where_suites_read(fake, clean_env, monkeypatch, tmp_path):
    src, d = fake
    out = fetch_suite("t2i-compbench", base_url=file_url(src), definition=d, progress=False)
    assert out == t2i.default_prompts_dir()
    assert T2ICompBenchSuite("color", definition=d).items("train")[0].prompt == "a red car"
    # with EVALKIT_PROMPTS_DIR set, fetch fills that directory
    monkeypatch.setenv("EVALKIT_PROMPTS_DIR", str(tmp_path / "env"))
    out = fetch_suite("t2i-compbench-color", base_url=file_url(src), definition=d, progress=False)
    assert out == tmp_path / "env" and (out / "color_val.txt").exists()
    with pytest.raises(UnknownNameError, match="t2i-compbench"):
        fetch_suite("no-such-suite")


@pytest.fixture
def http_server():
    """Serve a directory on 127.0.0.1; yields a function dir -> base URL."""
    servers = []

    def serve(directory: Path) -> str:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(directory), **kw)

            def log_message(self, *a):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/examples/dataset"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fetch_over_http(fake, tmp_path, http_server):
    src, d = fake
    root = tmp_path / "www"
    shutil.copytree(src, root / "examples" / "dataset")
    dest = fetch_t2i_compbench(tmp_path / "dest", base_url=http_server(root), definition=d, progress=False)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == FAKE


@pytest.mark.parametrize("how", ["altered", "truncated", "oversized"])
def test_corrupted_source_leaves_nothing_under_final_name(fake, tmp_path, http_server, how):
    src, d = fake
    root = tmp_path / "www"
    shutil.copytree(src, root / "examples" / "dataset")
    bad = root / "examples" / "dataset" / "color_val_unseen.txt"
    data = bad.read_bytes()
    bad.write_bytes({"altered": b"A" + data[1:], "truncated": data[:-3], "oversized": data * 50}[how])
    dest = tmp_path / "dest"
    with pytest.raises(PromptFileError) as err:
        fetch_t2i_compbench(dest, base_url=http_server(root), definition=d, progress=False)
    msg = str(err.value)
    assert "color_val_unseen.txt" in msg and "Nothing was written" in msg
    if how != "oversized":
        assert d["files"]["color_val_unseen.txt"]["sha256"] in msg
    assert not (dest / "color_val_unseen.txt").exists()
    assert (dest / "color_val_seen.txt").read_bytes() == FAKE["color_val_seen.txt"]  # verified ones stay
    assert_no_partials(dest)


def test_fetch_http_404_and_missing_local_source(fake, tmp_path, http_server):
    src, d = fake
    root = tmp_path / "www"
    shutil.copytree(src, root / "examples" / "dataset")
    (root / "examples" / "dataset" / "color_train.txt").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(PromptFileError, match="HTTP 404"):
        fetch_t2i_compbench(dest, base_url=http_server(root), definition=d, progress=False)
    assert not (dest / "color_train.txt").exists()
    assert_no_partials(dest)
    with pytest.raises(PromptFileError, match="could not download file://"):
        fetch_t2i_compbench(dest, base_url=file_url(tmp_path / "nowhere"), definition=d, progress=False)


def test_fetch_without_network_says_how_to_work_offline(fake, tmp_path):
    _, d = fake
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "dest"
    with pytest.raises(PromptFileError) as err:
        fetch_t2i_compbench(dest, base_url=f"http://127.0.0.1:{port}/x", definition=d, timeout=5, progress=False)
    msg = str(err.value)
    assert "could not download" in msg and "network unavailable" in msg
    assert "EVALKIT_PROMPTS_DIR" in msg and "copy the files" in msg
    assert list(dest.iterdir()) == []


def test_fetch_times_out(fake, tmp_path):
    _, d = fake
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with pytest.raises(PromptFileError, match="timed out"):
            fetch_t2i_compbench(
                tmp_path / "dest", base_url=f"http://127.0.0.1:{port}", definition=d, timeout=0.5, progress=False
            )
    assert_no_partials(tmp_path / "dest")


# --------------------------------------------------------------------------- docs/suites.md


def test_docs_example_runs(capsys):
    text = (ROOT / "docs" / "suites.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/suites.md has no ```python block"
    SUITES.unregister("my-suite")
    try:
        namespace: dict = {"__name__": "docs_suites_example"}
        for block in blocks:
            exec(compile(block, "docs/suites.md", "exec"), namespace)
        assert "my-suite" in SUITES
        suite = SUITES.get("my-suite")()
        assert len(suite.items("val")) == 2 and suite.items("val")[1].seen is False
        assert capsys.readouterr().out.startswith("my-suite ")
    finally:
        SUITES.unregister("my-suite")
