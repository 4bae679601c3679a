"""``evalkit cache info|verify|prune|clear``: report, check and trim the work cache (:mod:`evalkit.harness.cache`).

An entry is its file and its recorded hash (``.sha256``); its size counts both, its last use is the later
of its access and modification times (a cache hit refreshes the access time, see
:data:`evalkit.harness.cache.TOUCH_EVERY_S`). Temporary files left by a killed write (``.<name>.<random>.tmp``)
and hashes whose entry is gone are removed once older than :data:`STALE_S`, so a write in progress in
another process is never cut. Nothing here removes folders, so it is safe next to a running
``evalkit run``: an entry removed under it is recomputed.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from evalkit.harness.cache import DECODERS, HASH_SUFFIX, KINDS, hash_path, read_entry, remove_entry
from evalkit.errors import EvalkitError

#: temporary files and orphan hashes older than this (seconds) are left-overs of killed writes
STALE_S = 3600
DAY = 86400.0
AGE_BUCKETS = (("< 1 day", DAY), ("1-7 days", 7 * DAY), ("7-30 days", 30 * DAY), ("> 30 days", math.inf))


@dataclass
class Entry:
    kind: str
    path: Path
    size: int  # bytes, its recorded hash included
    last_used: float  # seconds since the epoch


def _stat(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:  # removed meanwhile (another process)
        return None


def entries(root: Path) -> list[Entry]:
    """Every entry under ``root``, in no particular order."""
    found = []
    for kind, suffix in KINDS.items():
        folder = Path(root) / kind
        if not folder.is_dir():
            continue
        for path in folder.glob(f"*/*{suffix}"):
            if path.name.startswith("."):
                continue
            stat = _stat(path)
            if stat is None:
                continue
            sidecar = _stat(hash_path(path))
            found.append(
                Entry(kind, path, stat.st_size + (sidecar.st_size if sidecar else 0), max(stat.st_atime, stat.st_mtime))
            )
    return found


def leftovers(root: Path, older_than: float = STALE_S) -> list[tuple[Path, str]]:
    """Temporary files of killed writes and hashes without their entry, older than ``older_than`` seconds."""
    now = time.time()
    found = []
    for kind, suffix in KINDS.items():
        folder = Path(root) / kind
        if not folder.is_dir():
            continue
        candidates = [(p, "temporary file of an unfinished write") for p in folder.glob("*/.*.tmp")]
        candidates += [
            (p, "recorded hash without its entry")
            for p in folder.glob(f"*/*{suffix}{HASH_SUFFIX}")
            if not p.with_name(p.name[: -len(HASH_SUFFIX)]).exists()
        ]
        for path, reason in candidates:
            stat = _stat(path)
            if stat is not None and now - stat.st_mtime > older_than:
                found.append((path, reason))
    return found


def remove_leftovers(root: Path, older_than: float = STALE_S) -> list[tuple[Path, str]]:
    removed = leftovers(root, older_than)
    for path, _ in removed:
        path.unlink(missing_ok=True)
    return removed


def info(root: Path) -> dict:
    """Size and entries of the cache, by kind and by last use."""
    now = time.time()
    found = entries(root)
    by_kind = {kind: {"entries": 0, "bytes": 0} for kind in KINDS}
    by_age = {label: {"entries": 0, "bytes": 0} for label, _ in AGE_BUCKETS}
    for entry in found:
        by_kind[entry.kind]["entries"] += 1
        by_kind[entry.kind]["bytes"] += entry.size
        label = next(label for label, limit in AGE_BUCKETS if now - entry.last_used < limit)
        by_age[label]["entries"] += 1
        by_age[label]["bytes"] += entry.size
    return {
        "root": str(root),
        "entries": len(found),
        "bytes": sum(e.size for e in found),
        "by_kind": by_kind,
        "by_age": by_age,
        "leftovers": len(leftovers(root)),
    }


def verify(root: Path) -> tuple[int, list[tuple[Path, str]]]:
    """Re-hash and decode every entry; drop the bad ones (and stale left-overs). Returns (checked, dropped)."""
    dropped = remove_leftovers(root)
    found = entries(root)
    for entry in found:
        try:
            data = read_entry(entry.path)
            if data is not None:
                DECODERS[entry.kind](data)
        except Exception as error:  # noqa: BLE001 - whatever fails, the entry cannot be used
            remove_entry(entry.path)
            dropped.append((entry.path, f"{type(error).__name__}: {error}"))
    return len(found), dropped


def prune(root: Path, older_than: float | None = None, max_size: int | None = None) -> tuple[list[Entry], list[Entry]]:
    """Remove entries unused for ``older_than`` seconds, then the least recently used ones until the cache
    holds at most ``max_size`` bytes (and stale left-overs). Returns (removed, kept)."""
    remove_leftovers(root)
    now = time.time()
    kept = sorted(entries(root), key=lambda e: e.last_used)
    removed = []
    if older_than is not None:
        removed = [e for e in kept if now - e.last_used > older_than]
        kept = [e for e in kept if now - e.last_used <= older_than]
    if max_size is not None:
        total = sum(e.size for e in kept)
        while kept and total > max_size:
            entry = kept.pop(0)
            removed.append(entry)
            total -= entry.size
    for entry in removed:
        remove_entry(entry.path)
    return removed, kept


def clear(root: Path) -> list[Entry]:
    """Remove every entry (and stale left-overs); writes in progress elsewhere are left to finish."""
    remove_leftovers(root)
    found = entries(root)
    for entry in found:
        remove_entry(entry.path)
    for kind in KINDS:  # hashes without entries, whatever their age
        folder = Path(root) / kind
        if folder.is_dir():
            for path in folder.glob(f"*/*{HASH_SUFFIX}"):
                path.unlink(missing_ok=True)
    return found


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_UNITS_B = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text).lower())
    if not match:
        raise EvalkitError(f"bad duration {text!r}: a number and a unit (s, m, h, d, w), e.g. 7d or 12h")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``100K``, ``4096`` (bytes) → bytes (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not match:
        raise EvalkitError(f"bad size {text!r}: a number of bytes with an optional unit (K, M, G, T), e.g. 500M or 2G")
    return int(float(match.group(1)) * _UNITS_B[match.group(2)])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
