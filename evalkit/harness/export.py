"""``evalkit export --format t2i-compbench RUN_DIR OUT``: a run's images in T2I-CompBench's folder format.

T2I-CompBench's scorers read ``<out_dir>/samples/`` and take an image's prompt from its file name:
``{prompt}_{index:06d}.png``, the prompt being everything before the first ``_`` and the files
ordered by the integer after the last one. So a prompt that contains ``_`` (or a path separator)
cannot be written in that format: it is refused, with every offending prompt named, before anything
is written. The export goes to ``OUT/<prior>/<category>/samples/`` (one of their ``--out_dir`` per
prior and category), with a ``manifest.json`` beside each ``samples/`` mapping each index back to
the run's item and seed. It is written into a temporary folder and renamed into place: a failure
leaves nothing behind, and an existing ``OUT`` is never written into. The run folder is checked
first (:func:`evalkit.harness.runs.load_run`: checksum, samples, plain names), and so is every
image: it must lie inside the run folder and be a PNG that decodes completely.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from evalkit.errors import EvalkitError, WriteError
from evalkit.harness.runs import check_image, load_run
from evalkit.serialization import atomic_write_json

FORBIDDEN = ("_", "/", "\\", "\x00")
MAX_NAME_BYTES = 255


def check_prompts(prompts) -> None:
    """Raise naming every prompt that cannot be a T2I-CompBench file name."""
    bad = sorted(
        {
            p
            for p in prompts
            if any(c in p for c in FORBIDDEN)
            or not p.strip()
            or len(f"{p}_000000.png".encode("utf-8")) > MAX_NAME_BYTES
        }
    )
    if bad:
        shown = "; ".join(repr(p) for p in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise EvalkitError(
            f"{len(bad)} prompt(s) cannot be written as T2I-CompBench file names "
            f"('{{prompt}}_{{index:06d}}.png': their scorer splits the name on '_'; no '/' either; "
            f"at most {MAX_NAME_BYTES} bytes): {shown}. Nothing was exported."
        )


def _export_group(run, folder: Path, prior: str, category: str, rows: list[dict], sources: dict) -> None:
    """Copy one (prior, category)'s images into ``folder/samples`` and write its ``manifest.json``."""
    (folder / "samples").mkdir(parents=True)
    manifest = []
    for index, s in enumerate(sorted(rows, key=lambda r: (r["item_id"], r["seed"]))):
        name = f"{s['prompt']}_{index:06d}.png"
        shutil.copyfile(sources[s["image_path"]], folder / "samples" / name)
        manifest.append(
            {
                "index": index,
                "file": name,
                "item_id": s["item_id"],
                "prompt": s["prompt"],
                "seed": s["seed"],
                "suite": s["suite"],
                "score": s["score"],
                "scorer": s["scorer"],
            }
        )
    atomic_write_json(
        folder / "manifest.json",
        {
            "run": str(run.path),
            "prior": prior,
            "category": category,
            "protocol_hash": run.results["protocol_hash"],
            "images": manifest,
        },
    )


def export_t2i_compbench(run_dir: str | os.PathLike, out: str | os.PathLike, scorer: str | None = None) -> Path:
    run = load_run(run_dir)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvalkitError(f"{out} already exists and is not empty; exports never overwrite: pick a new folder")
    scorers = sorted({s["scorer"] for s in run.samples})
    scorer = scorer or (scorers[0] if scorers else None)
    samples = [s for s in run.samples if s["scorer"] == scorer]
    if not samples:
        raise EvalkitError(f"{run.path} has no image rows to export")
    check_prompts(s["prompt"] for s in samples)
    missing = [s["image_path"] for s in samples if not s["image_path"] or not (run.path / s["image_path"]).is_file()]
    if missing:
        raise EvalkitError(f"{len(missing)} image(s) of the run are missing, e.g. {missing[0]!r}; nothing was exported")
    # every image is checked before anything is written: inside the run folder (symlinks followed), a PNG
    # that decodes completely; the copy is made from the checked file
    sources = {s["image_path"]: check_image(run.path, s["image_path"], formats=("PNG",)) for s in samples}
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        groups.setdefault((s["prior"], s["category"]), []).append(s)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for (prior, category), rows in sorted(groups.items()):
            _export_group(run, staging / prior / category, prior, category, rows, sources)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(f"could not export to {out}: {error.strerror or error}; nothing was exported") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
