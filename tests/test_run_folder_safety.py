"""Run folders are checked before they are trusted, and every write is atomic with a clear error.

Run folders: ``results.json`` needs its checksum and ``samples.jsonl`` beside it; names in them are plain
names and image paths stay inside the run folder; images are checked before a report or an export
uses them; ``report --out`` is a new (or empty) folder created atomically. Writes and inputs: a full
disk while writing images or report pictures, prompt files that are devices or FIFOs, ``--out`` naming
a finished run, and Ctrl-C.
"""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalkit.cli import cli
from evalkit.harness.run_config import RunConfig
from evalkit.errors import CorruptFileError, EvalkitError, PromptFileError
from evalkit.report.run_report import write_report
from evalkit.harness.runs import load_run
from evalkit.harness.runner import run
from evalkit.serialization import seal
from tests.conftest import REPO, dummy_run_args


def _config(tmp_path, name="runs", **overrides) -> RunConfig:
    base = dict(
        priors=["dummy"],
        decoder="dummy",
        suites=["synth-color"],
        scorers=["dummy"],
        limit=2,
        images_per_prompt=2,
        out=str(tmp_path / name),
        cache_dir=str(tmp_path / "cache"),
    )
    return RunConfig(**{**base, **overrides})


def _run(tmp_path, name="runs", **overrides) -> Path:
    return run(_config(tmp_path, name, **overrides), progress=False)


def _rewrite(run_dir: Path, samples: list[dict] | None = None, sealed: bool = True, **changes) -> None:
    """Rewrite a run's samples (when given) and results (with ``changes``), sealed or with no checksum."""
    results = json.loads((run_dir / "results.json").read_text())
    if samples is not None:
        text = "".join(json.dumps(s) + "\n" for s in samples)
        (run_dir / "samples.jsonl").write_text(text)
        results["samples_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    results.update(changes)
    results = seal(results) if sealed else {k: v for k, v in results.items() if k != "checksum"}
    (run_dir / "results.json").write_text(json.dumps(results))


def _samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def _one_error_line(result) -> str:
    """The one ``Error:`` line of a failed command (progress bars aside), with no traceback."""
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert result.output.count("Error: ") == 1, result.output
    return "Error: " + result.output.split("Error: ", 1)[1].splitlines()[0]  # a progress bar may precede it


# --------------------------------------------------------------------------- run folders taken on trust


def test_results_without_a_checksum_are_refused(tmp_path):
    run_dir = _run(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    del results["checksum"]
    results["rows"][0]["value"] = 1.133  # a score no scorer can give, accepted once the checksum is gone
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(CorruptFileError, match="no checksum"):
        load_run(run_dir)
    for args in (
        ["report", str(run_dir), "--out", str(tmp_path / "report")],
        ["compare", str(run_dir), str(run_dir)],
        ["compare", str(run_dir / "results.json"), str(run_dir)],
        ["export", str(run_dir), str(tmp_path / "x")],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "no checksum" in _one_error_line(result), (args, result.output)
    assert not (tmp_path / "report").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare-results.json"])
def test_a_run_without_its_samples_is_refused_by_report_compare_and_export(tmp_path, bare):
    run_dir = _run(tmp_path)
    (run_dir / "samples.jsonl").unlink()
    target = str(run_dir / "results.json") if bare else str(run_dir)
    with pytest.raises(CorruptFileError, match="no samples.jsonl"):
        load_run(target)
    commands = [["report", target, "--out", str(tmp_path / "report")], ["compare", target, target]]
    if not bare:  # export takes a folder
        commands.append(["export", target, str(tmp_path / "x")])
    for args in commands:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "no samples.jsonl" in _one_error_line(result), (args, result.output)
    assert not (tmp_path / "report").exists() and not (tmp_path / "x").exists()


def test_committed_run_folders_carry_checksums_and_samples_and_load():
    folders = sorted({p.parent for p in (REPO / "results").rglob("results.json")})
    assert REPO / "results" / "golden" / "smoke" in folders and len(folders) >= 3
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        assert "checksum" in results and results.get("samples_sha256"), folder
        assert (folder / "samples.jsonl").is_file() or (folder / "samples.jsonl.gz").is_file(), folder
        assert load_run(folder).samples, folder


def _crafted(tmp_path) -> Path:
    """A finished run whose samples name the prior ``../../trav-EVIL`` and the image ``/etc/hostname``."""
    run_dir = _run(tmp_path)
    samples = _samples(run_dir)
    for s in samples:
        s["prior"], s["image_path"] = "../../trav-EVIL", "/etc/hostname"
    _rewrite(run_dir, samples, sealed=False)
    return run_dir


@pytest.mark.skipif(not Path("/etc/hostname").is_file(), reason="needs /etc/hostname")
def test_a_crafted_run_folder_cannot_make_export_write_outside_out_or_copy_other_files(tmp_path):
    run_dir = _crafted(tmp_path)
    out = tmp_path / "a" / "b" / "export"
    result = CliRunner().invoke(cli, ["export", str(run_dir), str(out)])
    assert result.exit_code == 2, result.output
    _one_error_line(result)
    # the same names under a valid checksum: refused all the same (a checksum is no proof of origin)
    _rewrite(run_dir, sealed=True)
    with pytest.raises(CorruptFileError, match="not a plain name"):
        load_run(run_dir)
    samples = _samples(run_dir)
    for s in samples:
        s["prior"] = "dummy"
    _rewrite(run_dir, samples)
    with pytest.raises(CorruptFileError, match="not a relative path inside the run folder"):
        load_run(run_dir)
    for bad in ("images/../../../etc/hostname", "..", "images/./x.png"):
        samples[0]["image_path"] = bad
        _rewrite(run_dir, samples)
        with pytest.raises(CorruptFileError, match="image_path"):
            load_run(run_dir)
    for field, bad in (("suite", "synth/../../x"), ("scorer", ".hidden"), ("item_id", "a\\b"), ("category", "..")):
        fresh = [{**s, "image_path": "images/x.png"} for s in samples]
        fresh[0][field] = bad
        _rewrite(run_dir, fresh)
        with pytest.raises(CorruptFileError, match=f"{field} .* is not a plain name"):
            load_run(run_dir)
    # a plain relative name that is a symlink out of the run folder
    original = _samples(_run(tmp_path, "clean"))
    (run_dir / "images" / "leak.png").symlink_to("/etc/hostname")
    leaked = [{**s, "image_path": "images/leak.png"} for s in original]
    _rewrite(run_dir, leaked)
    result = CliRunner().invoke(cli, ["export", str(run_dir), str(out)])
    assert result.exit_code == 2 and "outside the run folder" in _one_error_line(result), result.output
    assert not list(tmp_path.rglob("*trav-EVIL*")) and not (tmp_path / "a").exists()
    assert not [
        p
        for p in tmp_path.rglob("*.png")
        if p.is_file() and not p.is_symlink() and p.read_bytes() == Path("/etc/hostname").read_bytes()
    ]


def test_a_truncated_image_stops_report_and_export_before_they_write(tmp_path):
    run_dir = _run(tmp_path)
    damaged = sorted((run_dir / "images" / "dummy" / "synth-color").glob("*_42.png"))[0]  # in the report's grid
    damaged.write_bytes(damaged.read_bytes()[:60])
    report = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert report.exit_code == 2 and damaged.name in _one_error_line(report) and "truncated" in report.output
    assert not (tmp_path / "report").exists() and not list(tmp_path.glob(".report*"))
    exported = CliRunner().invoke(cli, ["export", str(run_dir), str(tmp_path / "export")])
    assert exported.exit_code == 2 and damaged.name in _one_error_line(exported), exported.output
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export*"))


def test_report_out_is_a_new_folder_and_nothing_there_is_overwritten(tmp_path, monkeypatch):
    import evalkit.report.run_report as run_report

    run_dir = _run(tmp_path)
    mine = tmp_path / "mine"  # a user's folder with files of the names a report writes
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    (mine / "grid-synth-color.png").write_bytes(b"my picture")
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(mine)])
    assert result.exit_code == 2 and "never overwritten" in result.output
    assert (mine / "report.html").read_text() == "my page" and sorted(p.name for p in mine.iterdir()) == [
        "grid-synth-color.png",
        "report.html",
    ]

    # two reports into one folder at once: the second to finish is refused, the first one's files stay
    real_blocks = run_report.report_blocks

    def meanwhile(runs, out_dir, pairs=None):
        target = tmp_path / "shared"
        target.mkdir(exist_ok=True)
        (target / "report.md").write_text("the other report")
        return real_blocks(runs, out_dir, pairs)

    monkeypatch.setattr(run_report, "report_blocks", meanwhile)
    raced = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "shared")])
    assert raced.exit_code == 2 and "another command" in raced.output, raced.output
    assert (tmp_path / "shared" / "report.md").read_text() == "the other report"
    assert os.listdir(tmp_path / "shared") == ["report.md"] and not list(tmp_path.glob(".shared*"))
    monkeypatch.setattr(run_report, "report_blocks", real_blocks)

    # a refused report leaves no folder behind, with --out or without
    other = _run(tmp_path, "other", images_per_prompt=1)
    mixed = CliRunner().invoke(cli, ["report", str(run_dir), str(other), "--out", str(tmp_path / "mixed")])
    assert mixed.exit_code == 2 and "different protocols" in mixed.output
    assert not (tmp_path / "mixed").exists() and not list(tmp_path.glob(".mixed*"))
    monkeypatch.chdir(tmp_path)
    default = CliRunner().invoke(cli, ["report", str(run_dir), str(other)])  # default: a new folder in evalkit-runs/
    assert default.exit_code == 2 and "different protocols" in default.output
    assert not (tmp_path / "evalkit-runs").exists() or not list((tmp_path / "evalkit-runs").iterdir())

    # an empty folder is taken, as a new one is
    (tmp_path / "empty").mkdir()
    fine = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "empty")])
    assert fine.exit_code == 0, fine.output
    assert (tmp_path / "empty" / "report.md").is_file() and (tmp_path / "empty" / "grid-synth-color.png").is_file()
    again = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "empty")])
    assert again.exit_code == 2 and "never overwritten" in again.output
    with pytest.raises(EvalkitError, match="never overwritten"):  # the library call refuses as well
        write_report([run_dir], run_dir)


# --------------------------------------------------------------------------- writes and inputs


def _full_disk_for_images(monkeypatch):
    """Writing a PNG under images/ fails with ENOSPC (Path.write_bytes leaves the 0-byte file it made)."""
    real_write_bytes, real_fdopen = Path.write_bytes, os.fdopen

    def is_image(name: str) -> bool:
        return f"{os.sep}images{os.sep}" in name and ".png" in name

    def write_bytes(self, data):
        if is_image(str(self)):
            real_write_bytes(self, b"")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return handle
        return Full(handle) if is_image(name) and "w" in (args[0] if args else kwargs.get("mode", "r")) else handle

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_full_disk_while_writing_images_is_a_clear_error_and_no_empty_png(tmp_path, monkeypatch):
    _full_disk_for_images(monkeypatch)
    result = CliRunner().invoke(
        cli,
        dummy_run_args("--limit", "1", "--images-per-prompt", "1", "--no-cache", "--out", str(tmp_path / "runs")),
    )
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert "No space left" in line and ".png" in line
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert not [p for p in run_dir.rglob("*.png")] and not [p for p in run_dir.rglob("*.tmp")]
    assert not (run_dir / "results.json").exists()


def test_a_full_disk_while_writing_report_pictures_keeps_the_results_and_says_how_to_render(tmp_path, monkeypatch):
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        if isinstance(fname, (str, os.PathLike)) and "grid-" in os.fspath(fname):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    result = CliRunner().invoke(
        cli,
        dummy_run_args(
            "--limit",
            "2",
            "--images-per-prompt",
            "1",
            "--out",
            str(tmp_path / "runs"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ),
    )
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert "No space left" in line and "grid-synth-color.png" in line and f"evalkit report {run_dir}" in line
    assert load_run(run_dir).samples  # the results stay valid
    assert not [p.name for p in run_dir.iterdir() if p.suffix in (".md", ".html", ".png", ".tmp") or ".tmp" in p.name]
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", real_savefig)
    again = CliRunner().invoke(cli, ["report", str(run_dir), "--out", str(tmp_path / "report")])
    assert again.exit_code == 0 and (tmp_path / "report" / "grid-synth-color.png").is_file(), again.output


# The cases of a device and a FIFO run in a child with limited memory and a timeout: should the checks ever
# regress, reading /dev/zero fails there quickly instead of filling this machine's memory, and a FIFO times out.
PROMPT_CHILD = textwrap.dedent("""
    import copy, hashlib, json, os, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from evalkit.errors import PromptFileError
    from evalkit.suites import t2i_compbench as t2i

    src = sys.argv[1]
    files = {"color_val_seen.txt": b"a red cube\\n", "color_val_unseen.txt": b"a blue cube\\n",
             "color_val.txt": b"a red cube\\na blue cube\\n", "color_train.txt": b"a red car\\n"}
    d = copy.deepcopy(t2i.load_definition())
    d["categories"] = ["color"]
    for part in d["splits"]["val"]["parts"] + d["splits"]["train"]["parts"]:
        part["count"] = 1
    d["files"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in files.items()}
    for name, data in files.items():
        if not os.path.lexists(os.path.join(src, name)):
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
    found = {}
    for split in ("train", "val"):
        try:
            t2i.T2ICompBenchSuite("color", prompts_dir=src, definition=d).items(split)
            found[split] = "read"
        except PromptFileError as error:
            found[split] = str(error)
        except MemoryError:
            found[split] = "MemoryError"
    print(json.dumps(found))
""")


@pytest.mark.skipif(not (hasattr(os, "mkfifo") and Path("/dev/zero").exists()), reason="needs mkfifo and /dev/zero")
def test_prompt_files_that_are_devices_or_fifos_are_refused_without_reading(tmp_path):
    src = tmp_path / "prompts"
    src.mkdir()
    (src / "color_train.txt").symlink_to("/dev/zero")
    os.mkfifo(src / "color_val_seen.txt")
    script = tmp_path / "child.py"
    script.write_text(PROMPT_CHILD)
    child = subprocess.run(
        [sys.executable, str(script), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    found = json.loads(child.stdout.strip().splitlines()[-1])
    assert "color_train.txt" in found["train"] and "character device" in found["train"], found
    assert "color_val_seen.txt" in found["val"] and "FIFO" in found["val"], found


def test_a_prompt_file_over_the_size_cap_is_refused_by_name(tmp_path):
    from evalkit.prompts_fetch import FileSpec
    from evalkit.suites.t2i_compbench import read_prompt_file

    big = tmp_path / "color_train.txt"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.truncate(10 * 1024 * 1024 + 1)  # over the 10 MB cap (the real files hold tens of kilobytes)
    with pytest.raises(PromptFileError, match=r"color_train\.txt.*more than the"):
        read_prompt_file(big, FileSpec("color_train.txt", "0" * 64, 10))


def test_out_naming_a_run_folder_is_refused_before_anything_is_written(tmp_path):
    run_dir = _run(tmp_path)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    result = CliRunner().invoke(
        cli,
        dummy_run_args(
            "--limit", "1", "--images-per-prompt", "1", "--out", str(run_dir), "--cache-dir", str(tmp_path / "cache")
        ),
    )
    assert result.exit_code == 2 and "itself a run folder" in _one_error_line(result), result.output
    exported = tmp_path / "export"
    assert CliRunner().invoke(cli, ["export", str(run_dir), str(exported)]).exit_code == 0
    imported = CliRunner().invoke(
        cli,
        [
            "import",
            str(exported / "dummy" / "color"),
            "--suite",
            "synth-color",
            "--scorer",
            "dummy",
            "--out",
            str(run_dir),
        ],
    )
    assert imported.exit_code == 2 and "itself a run folder" in _one_error_line(imported), imported.output
    unfinished = tmp_path / "unfinished"  # run.json alone marks a run folder too
    unfinished.mkdir()
    (unfinished / "run.json").write_text("{}")
    again = CliRunner().invoke(
        cli,
        dummy_run_args("--limit", "1", "--out", str(unfinished)),
    )
    assert again.exit_code == 2 and "run.json" in again.output
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert os.listdir(unfinished) == ["run.json"]


@pytest.mark.parametrize("raised", [KeyboardInterrupt, "abort"])
def test_ctrl_c_exits_130_and_says_the_same_command_resumes(tmp_path, monkeypatch, raised):
    import click

    import evalkit.harness.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt() if raised is KeyboardInterrupt else click.exceptions.Abort()

    monkeypatch.setattr(evalkit.harness.runner, "run", interrupted)
    result = CliRunner().invoke(
        cli, ["run", "--prior", "dummy", "--decoder", "dummy", "--scorer", "dummy", "--out", str(tmp_path / "runs")]
    )
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.output and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("interrupted:") and "run the same command again to resume" in line


def test_a_full_disk_while_copying_cached_images_into_the_run_is_a_clear_error(tmp_path, monkeypatch):
    """With the cache on, images are copied from it into the run folder: a full disk there is one line
    naming the file, exit 2, and no partial PNG."""
    import errno

    from click.testing import CliRunner

    from evalkit.cli import cli
    import evalkit.serialization as serialization

    args = dummy_run_args(
        "--suite", "synth-color", "--limit", "2", "--images-per-prompt", "1", "--cache-dir", str(tmp_path / "cache")
    )
    assert CliRunner().invoke(cli, args + ["--out", str(tmp_path / "warm")]).exit_code == 0  # fills the cache
    real = serialization.os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(serialization.os, "replace", full)
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "full")])
    assert result.exit_code == 2 and "No space left on device" in result.output and ".png" in result.output
    assert not [p for p in (tmp_path / "full").rglob("*.png")] and not [p for p in (tmp_path / "full").rglob("*.tmp")]
