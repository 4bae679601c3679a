"""Run folders: each run gets its own ``<out>/<run-id>/``, created once, never reused; and finished ones read
back (:func:`load_run`) with every check that report, compare, export and FID rely on, in one place."""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from evalkit.errors import CorruptFileError, EvalkitError

#: the files that make a folder a run folder (unfinished: run.json; finished: results.json)
RUN_MARKERS = ("run.json", "results.json")


def check_parent(parent: str | os.PathLike) -> Path:
    """Refuse an output parent that is itself a run folder: a new run would land inside a finished one."""
    parent = Path(parent)
    found = [name for name in RUN_MARKERS if (parent / name).exists()]
    if found:
        raise EvalkitError(
            f"--out {parent} is itself a run folder (it holds {found[0]}); --out names the parent "
            "folder each new run gets its own folder in, and a run folder is never written into: "
            "pick another --out (e.g. the folder that holds it). Nothing was written."
        )
    return parent


def new_run_dir(parent: str | os.PathLike, label: str) -> Path:
    """Create and return a fresh ``<parent>/<UTC time>-<label>[-k]`` folder (atomic ``mkdir``)."""
    parent = check_parent(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvalkitError(f"cannot create output folder {parent}: {error.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise EvalkitError(f"output folder {parent} is not writable")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:80]
    for k in range(1000):
        candidate = parent / (f"{stamp}-{safe}" + (f"-{k}" if k else ""))
        try:
            candidate.mkdir()  # fails if another run took the name: never two runs in one folder
            return candidate
        except FileExistsError:
            continue
    raise EvalkitError(f"could not find a free run folder name in {parent}")


def prompt_subsets(rows: list[dict]) -> dict:
    """Per suite: how many prompts the run scored and a hash of their item ids. Two runs of one suite
    version compare only when these match (``--limit 8`` against ``--limit 4`` is another prompt set)."""
    from evalkit.contracts import content_hash

    items: dict[str, set] = {}
    for row in rows:
        items.setdefault(row["suite"], set()).add(row["item_id"])
    return {
        suite: {"prompts": len(ids), "items_sha256": content_hash(sorted(ids))} for suite, ids in sorted(items.items())
    }


@dataclass
class RunData:
    """A finished run folder, loaded."""

    path: Path
    results: dict
    samples: list[dict] = field(default_factory=list)


#: sample fields that name things (report and export make folder and file names of them): plain names only
SAMPLE_NAME_FIELDS = ("prior", "suite", "scorer", "item_id", "category")
ROW_NAME_FIELDS = ("prior", "suite", "metric", "category")


def is_plain_name(value) -> bool:
    """A non-empty name without path separators, NUL or a leading dot (so never ``.`` or ``..``)."""
    return (
        isinstance(value, str) and bool(value) and not value.startswith(".") and not any(c in value for c in "/\\\x00")
    )


def _inside_path(image_path) -> bool:
    """``image_path`` is, as written, a relative path below the run folder (no ``..``, not absolute)."""
    if not isinstance(image_path, str) or "\x00" in image_path:
        return False
    parts = image_path.replace("\\", "/").split("/")
    return (
        not image_path.startswith(("/", "\\")) and ":" not in parts[0] and all(p not in ("", ".", "..") for p in parts)
    )


def _plain_names(row: dict, fields: Sequence[str], where: str) -> None:
    for name in fields:
        if name not in row:
            raise CorruptFileError(f"{where}: no {name!r}; not a row evalkit wrote, or edited by hand")
        if not is_plain_name(row[name]):
            raise CorruptFileError(
                f"{where}: {name} {row[name]!r} is not a plain name (no path separators, no "
                "'..', no leading dot); this run folder was not written by evalkit, or was "
                "edited: refused"
            )


def load_run(path: str | os.PathLike) -> RunData:
    """Read ``results.json`` and ``samples.jsonl`` of a run folder (clear errors for unfinished or edited runs).

    Both files are required (``samples.jsonl.gz``, as kept in ``results/``, stands for ``samples.jsonl``):
    ``results.json`` must carry its checksum and the samples' sha256, and every name in them must be a
    plain name and every image path a relative path inside the run folder. A bare ``results.json`` path
    stands for its folder, so its samples must lie beside it.
    """
    path = Path(path)
    results_path = path / "results.json"
    if path.is_file() and path.name == "results.json":
        path, results_path = path.parent, path
    results = _load_results(path, results_path)
    return RunData(path, results, _load_samples(path, results_path, results))


def _load_results(path: Path, results_path: Path) -> dict:
    """``results.json``, refused unless evalkit sealed it and its rows name things plainly."""
    from evalkit.serialization import seal

    if not results_path.is_file():
        hint = (
            " (it has run.json: an unfinished run; start its command again to finish it from the cache)"
            if (path / "run.json").is_file()
            else ""
        )
        raise EvalkitError(f"{path} is not a finished evalkit run: no results.json{hint}")
    try:
        results = json.loads(results_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{results_path} is not valid JSON ({error}); was it edited by hand?") from None
    if not isinstance(results, dict):
        raise CorruptFileError(f"{results_path} holds a JSON {type(results).__name__}, not an evalkit results file")
    for key in ("protocol", "protocol_hash", "rows"):
        if key not in results:
            raise CorruptFileError(f"{results_path} has no {key!r}: not an evalkit results file, or edited by hand")
    if "checksum" not in results:
        raise CorruptFileError(
            f"{results_path} has no checksum: evalkit seals every results.json it writes, so this "
            "one was edited by hand or not written by evalkit; refused. Re-run the command "
            "(finished work comes from the cache) instead of editing results."
        )
    if seal(results)["checksum"] != results["checksum"]:
        raise CorruptFileError(
            f"{results_path} does not match its checksum: it was edited after the run wrote it. "
            "Re-run the command (finished work comes from the cache) instead of editing results."
        )
    if not isinstance(results["rows"], list) or not all(isinstance(r, dict) for r in results["rows"]):
        raise CorruptFileError(f"{results_path}: 'rows' is not a list of result rows")
    for number, row in enumerate(results["rows"]):
        _plain_names(row, ROW_NAME_FIELDS, f"{results_path}, row {number}")
    return results


def _samples_text(path: Path, results_path: Path, results: dict) -> tuple[Path, str]:
    """(the samples file, its text), refused unless its sha256 is the one ``results.json`` recorded."""
    samples_path = path / "samples.jsonl"
    if not samples_path.is_file() and (path / "samples.jsonl.gz").is_file():  # kept compressed in results/
        samples_path = path / "samples.jsonl.gz"
    if not samples_path.is_file():
        raise CorruptFileError(
            f"{path} has results.json but no samples.jsonl (nor samples.jsonl.gz): report, compare "
            "and export all need the per-image rows beside results.json; copy the whole run "
            "folder, not results.json alone"
        )
    expected = results.get("samples_sha256")
    if not expected:
        raise CorruptFileError(
            f"{results_path} records no samples_sha256, so {samples_path.name} cannot be checked; "
            "not a results file evalkit wrote"
        )
    try:
        raw = samples_path.read_bytes()
        text = (gzip.decompress(raw) if samples_path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{samples_path} cannot be read ({error}): truncated or damaged") from None
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != expected:
        raise CorruptFileError(f"{samples_path} does not match the hash recorded in results.json (truncated or edited)")
    return samples_path, text


def _load_samples(path: Path, results_path: Path, results: dict) -> list[dict]:
    """The scored sample rows (a scorer's "not applicable" rows have no score and are left out)."""
    samples_path, text = _samples_text(path, results_path, results)
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                raise CorruptFileError(f"{samples_path}, line {number}: not valid JSON") from None
            if not isinstance(sample, dict):
                raise CorruptFileError(f"{samples_path}, line {number}: not a sample row")
            _plain_names(sample, SAMPLE_NAME_FIELDS, f"{samples_path}, line {number}")
            image = sample.get("image_path")
            if image and not _inside_path(image):
                raise CorruptFileError(
                    f"{samples_path}, line {number}: image_path {image!r} is not a relative path "
                    "inside the run folder; refused"
                )
            if not (sample.get("details") or {}).get("not_applicable"):
                samples.append(sample)
    return samples


def check_image(
    run_path: str | os.PathLike, image_path: str | os.PathLike, formats: Sequence[str] | None = None
) -> Path:
    """The file of an image of a run, after checking it: it resolves (symlinks followed) inside the run
    folder, is a regular file and decodes completely (in one of ``formats``, e.g. ``("PNG",)``, when given).
    Raises :class:`CorruptFileError` naming the file."""
    from PIL import Image as PILImage

    root = Path(run_path).resolve()
    shown = Path(run_path) / image_path
    target = (root / image_path).resolve()
    if target != root and root not in target.parents:
        raise CorruptFileError(f"image {shown} resolves to {target}, outside the run folder {run_path}: refused")
    if not target.is_file():
        raise CorruptFileError(f"image {shown} is missing or not a regular file")
    try:
        with PILImage.open(target) as picture:
            found = picture.format
            picture.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib errors ... on damaged files
        raise CorruptFileError(
            f"image {shown} is truncated or damaged ({error}); restore it, or run the command "
            "that made the run again (finished work comes from the cache)"
        ) from None
    if formats and found not in formats:
        raise CorruptFileError(f"image {shown} is a {found} file, not {' or '.join(formats)}")
    return target
