"""The work cache trusts nothing it reads: values are verified by hash, run folders own their files, plugin code
and weights (and nothing else) key the entries, and `evalkit cache info|verify|prune|clear` manage it."""

import importlib.util
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evalkit.fingerprints import fingerprint
from evalkit.harness.cache import WorkCache
from evalkit.cli import cli
from evalkit.contracts import Batch, Protocol
from evalkit.harness.run_config import RunConfig
from evalkit.decoders.dummy import DummyDecoder
from evalkit.priors.dummy import DummyPrior
from evalkit.harness.runner import evaluate, run
from evalkit.scorers.dummy import DummyScorer
from evalkit.serialization import atomic_write_bytes
from evalkit.suites import load_suite

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


def _evaluate(tmp_path, run_dir=None, cache=None):
    cache = cache if cache is not None else WorkCache(tmp_path / "cache")
    rows, _ = evaluate(
        {"p": DummyPrior()},
        DummyDecoder(),
        load_suite("synth-color"),
        {"dummy": DummyScorer()},
        PROTOCOL,
        run_dir,
        limit=3,
        batch_size=4,
        progress=False,
        cache=cache,
    )
    return rows, cache


def _entries(tmp_path, kind: str, suffix: str) -> list[Path]:
    return sorted((tmp_path / "cache" / kind).rglob(f"*{suffix}"))


def _clean_rerun(tmp_path, run_dir=None):
    """A re-run that must read the cache without a single warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _evaluate(tmp_path, run_dir)


def _scores(rows):
    return [(r["item_id"], r["seed"], r["score"], r["questions"]) for r in rows]


# values are verified by hash


def test_an_edited_score_entry_is_detected_and_recomputed(tmp_path):
    cold = run(config(tmp_path, out=str(tmp_path / "cold")), progress=False)
    entry = _entries(tmp_path, "score", ".json")[0]
    value = json.loads(entry.read_text())
    value["row"]["score"] = 1.0  # well-formed, and wrong
    entry.write_text(json.dumps(value))
    with pytest.warns(UserWarning, match="cache entry .* recomputing it"):
        warm = run(config(tmp_path, out=str(tmp_path / "warm")), progress=False)
    assert not entry.exists() or json.loads(entry.read_text())["row"]["score"] != 1.0
    assert (warm / "samples.jsonl").read_text() == (cold / "samples.jsonl").read_text()
    rows = lambda d: [
        {k: v for k, v in r.items() if k != "tag"} for r in json.loads((d / "results.json").read_text())["rows"]
    ]
    assert rows(warm) == rows(cold)
    assert json.loads((warm / "results.json").read_text())["cache"]["misses"]["score"] == 1


def test_a_flipped_float_in_an_embedding_is_detected_and_recomputed(tmp_path):
    cold, _ = _evaluate(tmp_path, tmp_path / "cold")
    entry = _entries(tmp_path, "embedding", ".npy")[0]
    data = bytearray(entry.read_bytes())
    data[-4:] = np.float32(1e3).tobytes()  # one float of the vector: still a valid, finite .npy
    entry.write_bytes(bytes(data))
    shutil.rmtree(tmp_path / "cache" / "image")  # images are decoded again from the cached embeddings
    with pytest.warns(UserWarning, match=f"cache entry {entry}"):
        warm, cache = _evaluate(tmp_path, tmp_path / "warm")
    assert cache.misses["embedding"] >= 1
    assert _scores(warm) == _scores(cold)
    assert all(
        (tmp_path / "warm" / r["image_path"]).read_bytes() == (tmp_path / "cold" / r["image_path"]).read_bytes()
        for r in warm
    )


def test_an_image_entry_replaced_by_another_valid_png_is_not_trusted(tmp_path):
    cold, _ = _evaluate(tmp_path, tmp_path / "cold")
    images = _entries(tmp_path, "image", ".png")
    images[0].write_bytes(images[1].read_bytes())  # another image, a valid PNG
    with pytest.warns(UserWarning, match=f"cache entry {images[0]}"):
        warm, cache = _evaluate(tmp_path, tmp_path / "warm")
    assert cache.misses["image"] >= 1
    assert _scores(warm) == _scores(cold)
    assert all(
        (tmp_path / "warm" / r["image_path"]).read_bytes() == (tmp_path / "cold" / r["image_path"]).read_bytes()
        for r in warm
    )
    _clean_rerun(tmp_path)  # the entry was replaced by the right one


def test_a_byte_flipped_in_an_npy_header_is_discarded_once(tmp_path):
    cold, _ = _evaluate(tmp_path)
    entry = _entries(tmp_path, "embedding", ".npy")[0]
    data = bytearray(entry.read_bytes())
    data[11:12] = b"("  # inside the header's dict literal: numpy raises tokenize.TokenError
    entry.write_bytes(bytes(data))
    shutil.rmtree(tmp_path / "cache" / "image")
    with pytest.warns(UserWarning, match=f"cache entry {entry}"):
        warm, _ = _evaluate(tmp_path)
    assert _scores(warm) == _scores(cold)
    _, cache = _clean_rerun(tmp_path)
    assert sum(cache.misses.values()) == 0


def test_any_exception_while_decoding_an_entry_discards_it(tmp_path):
    cache = WorkCache(tmp_path / "cache")
    cache.put_embedding("ab" * 16, np.ones(4, np.float32))
    path = cache.path("embedding", "ab" * 16, ".npy")
    data = bytearray(path.read_bytes())
    data[11:12] = b"("
    cache._write(path, bytes(data))  # stored with its own hash: only decoding fails (tokenize.TokenError)
    with pytest.warns(UserWarning, match="TokenError"):
        assert cache.get_embedding("ab" * 16) is None
    assert not path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get_embedding("ab" * 16) is None


def test_entries_without_a_recorded_hash_are_recomputed_with_one_warning(tmp_path):
    cold, _ = _evaluate(tmp_path)
    for sidecar in (tmp_path / "cache").rglob("*.sha256"):  # as an older evalkit left its cache
        sidecar.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warm, cache = _evaluate(tmp_path)
    assert [str(w.message) for w in caught if "older evalkit" in str(w.message)] and len(caught) == 1
    assert cache.misses["image"] == 6 and _scores(warm) == _scores(cold)
    _clean_rerun(tmp_path)


# run folders are independent of the cache


def test_run_images_are_copies_that_share_nothing_with_the_cache(tmp_path):
    cold, _ = _evaluate(tmp_path, tmp_path / "cold")
    cached = {p.read_bytes(): p for p in _entries(tmp_path, "image", ".png")}
    for row in cold:
        image = tmp_path / "cold" / row["image_path"]
        assert os.stat(image).st_nlink == 1
        assert not any(os.path.samefile(image, entry) for entry in cached.values())
    # editing a finished run's image in place leaves the cache (and every other run) as it was
    image = tmp_path / "cold" / cold[0]["image_path"]
    before = {p: p.read_bytes() for p in cached.values()}
    with open(image, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\x00\x01\x02\x03")
    assert {p: p.read_bytes() for p in cached.values()} == before
    warm, cache = _clean_rerun(tmp_path, tmp_path / "warm")
    assert cache.misses == {"embedding": 0, "image": 0, "score": 0} and _scores(warm) == _scores(cold)


# fingerprints: stable, and covering every plugin's code


def test_binding_scorer_fingerprint_is_stable_across_score(tmp_path):
    from evalkit.scorers.binding import BindingScorer

    scorer = BindingScorer()
    before = fingerprint(scorer)
    items = load_suite("synth-color").items("val")[:2]
    scorer.score(torch.rand(2, 3, 32, 32), Batch(items, [0, 0]))
    assert scorer._trunk is not None  # the derived, fused trunk now exists
    assert fingerprint(scorer) == before == fingerprint(BindingScorer())


def test_a_warm_two_suite_run_with_the_binding_scorer_recomputes_no_score(tmp_path):
    cfg = config(tmp_path, scorers=["binding"], limit=2, images_per_prompt=1)
    cold = json.loads((run(cfg, progress=False) / "results.json").read_text())["cache"]
    assert cold["stored"]["score"] == 4
    warm = json.loads((run(cfg, progress=False) / "results.json").read_text())["cache"]
    assert warm["misses"]["score"] == 0 and warm["stored"]["score"] == 0 and warm["hits"]["score"] == 4
    assert len(_entries(tmp_path, "score", ".json")) == 4  # no duplicates under a second fingerprint


PLUGIN = '''
from evalkit.scorers.dummy import DummyScorer


class ThirdPartyScorer(DummyScorer):
    name = "third-party"

    def score(self, images, batch):
        return [{{**row, "score": row["score"] * {factor}}} for row in super().score(images, batch)]
'''


def _load(path: Path, name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_a_third_party_plugins_source_is_part_of_its_fingerprint(tmp_path, monkeypatch):
    path = tmp_path / "acme_plugins.py"
    path.write_text(PLUGIN.format(factor=1.0))
    scorer = _load(path, "acme_plugins", monkeypatch).ThirdPartyScorer()
    first = fingerprint(scorer)
    assert fingerprint(scorer) == first
    path.write_text(PLUGIN.format(factor=0.5))  # a code edit
    assert fingerprint(_load(path, "acme_plugins", monkeypatch).ThirdPartyScorer()) != first
    # a class defined here (a test module) counts too; standard-library and framework bases do not
    from evalkit.fingerprints import source_digest

    class Local(DummyScorer):
        pass

    assert source_digest(Local()) != source_digest(DummyScorer())
    assert source_digest(DummyPrior()) == source_digest(DummyPrior())


# files are shared-cache friendly, and a killed write is cleaned up


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        cache = WorkCache(tmp_path / "cache")
        cache.put_embedding("cd" * 16, np.ones(4, np.float32))
        atomic_write_bytes(tmp_path / "other.bin", b"x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert (cache.path("embedding", "cd" * 16, ".npy").stat().st_mode & 0o777) == expected
    assert ((tmp_path / "other.bin").stat().st_mode & 0o777) == expected


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("command", [["verify"], ["prune", "--older-than", "30d"]])
def test_stale_temporary_files_are_removed(tmp_path, command):
    _evaluate(tmp_path)
    folder = _entries(tmp_path, "image", ".png")[0].parent
    stale, fresh = folder / ".x.png.abc123.tmp", folder / ".y.png.def456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    _age(stale, 2 * 3600)
    result = CliRunner().invoke(cli, ["cache", *command, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and fresh.exists()
    _clean_rerun(tmp_path)


# evalkit cache info | verify | prune | clear


def _cli(tmp_path, *args, input=None):
    return CliRunner().invoke(cli, ["cache", *args, "--cache-dir", str(tmp_path / "cache")], input=input)


def test_cache_info_reports_size_and_entries_by_kind_and_age(tmp_path):
    _evaluate(tmp_path)
    for path in _entries(tmp_path, "score", ".json"):
        _age(path, 10 * 86400)
    result = _cli(tmp_path, "info")
    assert result.exit_code == 0, result.output
    assert "18 entries" in result.output
    for kind in ("embedding", "image", "score"):
        assert f"{kind}: 6 " in result.output
    assert "7-30 days: 6 " in result.output and "< 1 day: 12 " in result.output
    empty = CliRunner().invoke(cli, ["cache", "info", "--cache-dir", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "0 entries" in empty.output


def test_cache_verify_drops_bad_entries_and_names_them(tmp_path):
    _evaluate(tmp_path)
    score = _entries(tmp_path, "score", ".json")[0]
    score.write_text(score.read_text().replace('"score": ', '"score": 0.5 + '))
    image = _entries(tmp_path, "image", ".png")[0]
    image.write_bytes(image.read_bytes()[:30])
    result = _cli(tmp_path, "verify")
    assert result.exit_code == 0, result.output
    assert str(score) in result.output and str(image) in result.output
    assert "18 entries checked, 2 dropped" in result.output
    assert not score.exists() and not image.exists()
    assert "0 dropped" in _cli(tmp_path, "verify").output
    rows, cache = _evaluate(tmp_path)  # recomputed, silently
    assert cache.misses["image"] == 1 and cache.misses["score"] >= 1


def test_cache_prune_by_age_and_by_size_oldest_first(tmp_path):
    _evaluate(tmp_path)
    for path in _entries(tmp_path, "embedding", ".npy"):
        _age(path, 8 * 86400)
    result = _cli(tmp_path, "prune", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert _entries(tmp_path, "embedding", ".npy") == [] and len(_entries(tmp_path, "image", ".png")) == 6
    assert "6 entries removed" in result.output
    images = _entries(tmp_path, "image", ".png")
    for i, path in enumerate(images):
        _age(path, 3600 * (10 - i))  # images[0] is the least recently used
    remaining = sum(p.stat().st_size for p in tmp_path.joinpath("cache").rglob("*") if p.is_file())
    result = _cli(tmp_path, "prune", "--max-size", f"{remaining - 1}")
    assert result.exit_code == 0, result.output
    assert not images[0].exists() and all(p.exists() for p in images[1:])
    assert _cli(tmp_path, "prune", "--max-size", "0").exit_code == 0
    assert _entries(tmp_path, "image", ".png") == [] and _entries(tmp_path, "score", ".json") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["prune", "--older-than", "7 days"], "duration"),
        (["prune", "--max-size", "2X"], "size"),
        (["prune"], "--older-than"),
    ],
)
def test_cache_prune_refuses_bad_input_with_one_line(tmp_path, args, message):
    result = _cli(tmp_path, *args)
    assert result.exit_code == 2 and message in result.output


def test_cache_clear_asks_first(tmp_path):
    _evaluate(tmp_path)
    declined = _cli(tmp_path, "clear", input="n\n")
    assert declined.exit_code != 0 and len(_entries(tmp_path, "image", ".png")) == 6
    result = _cli(tmp_path, "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    _, cache = _evaluate(tmp_path)
    assert cache.stored["image"] == 6


def test_a_priors_cached_work_does_not_depend_on_the_other_priors_of_the_run(tmp_path):
    """A trained prior alone in a run loads the text encoder itself; beside the oracle it reads the shared one.
    Its cache keys must be the same either way (they hold the text encoder's fingerprint, not the prior's
    copy), so a warm run with another set of priors recomputes nothing of it."""
    import json

    from evalkit.harness.run_config import RunConfig
    from evalkit.harness.runner import run

    def config(out, priors):
        return RunConfig(
            priors=priors,
            suites=["synth-color"],
            scorers=["binding"],
            limit=2,
            images_per_prompt=1,
            out=str(tmp_path / out),
            cache_dir=str(tmp_path / "cache"),
        )

    run(config("both", ["oracle", "eclipse"]), progress=False)
    alone = run(config("alone", ["eclipse"]), progress=False)
    cache = json.loads((alone / "results.json").read_text())["cache"]
    assert cache["hits"]["image"] == 2 and cache["misses"]["image"] == 0 and cache["misses"]["score"] == 0
