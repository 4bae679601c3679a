"""Run folders: each run gets its own ``<out>/<run-id>/``, created once, never reused."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from evalkit.errors import EvalkitError

#: the files that make a folder a run folder (unfinished: run.json; finished: results.json)
RUN_MARKERS = ("run.json", "results.json")


def check_parent(parent: str | os.PathLike) -> Path:
    """Refuse an output parent that is itself a run folder: a new run would land inside a finished one."""
    parent = Path(parent)
    found = [name for name in RUN_MARKERS if (parent / name).exists()]
    if found:
        raise EvalkitError(f"--out {parent} is itself a run folder (it holds {found[0]}); --out names the parent "
                           "folder each new run gets its own folder in, and a run folder is never written into: "
                           "pick another --out (e.g. the folder that holds it). Nothing was written.")
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
    return {suite: {"prompts": len(ids), "items_sha256": content_hash(sorted(ids))} for suite, ids in sorted(items.items())}
