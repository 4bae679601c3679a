"""The work cache of ``evalkit run``: prior embeddings, images and scores, keyed by content.

Every key comes from :func:`work_key` — a hash of *everything* that determines the cached value:

- an **embedding** (prior output): the prior's fingerprint (class, code, options, weights), the
  prompt and the image's seed;
- an **image**: its embedding's key, the decoder's fingerprint and the decoding part of the protocol
  (steps, guidance, resolution, dtype);
- a **score**: its image's key, the scorer's fingerprint (name, version, code) and the item the
  image was made for (suite, version, prompt, category, noun phrases).

So a re-run (or an interrupted run started again) recomputes only what changed, and two runs that
share work share it. Unseeded work (a prior that declares ``seeded = False``) is never cached.

Every entry is stored with the sha256 of its bytes (a sidecar ``<entry>.sha256``, written before the
entry) and checked against it on every read: an entry whose bytes do not match (edited, bit rot, swapped
for another valid file), that fails to load for any reason, or whose score was computed on another image,
is reported, deleted and recomputed. An entry without a recorded hash (written by an older evalkit) is
not trusted either: it is recomputed. Files are written to a temporary name and renamed (a killed run
leaves no half-written entry, only a ``.tmp`` file that :mod:`evalkit.harness.cache_admin` removes), with the
permissions a plain ``open()`` gives, so a cache can be shared between users. Run folders get copies of
the cached images, never links. ``evalkit cache info|verify|prune|clear`` manage the cache
(:mod:`evalkit.harness.cache_admin`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.contracts import content_hash
from evalkit.fingerprints import KEY_LENGTH


def work_key(kind: str, **parts: Any) -> str:
    """The one key function of the work cache: ``kind`` plus every determining part, hashed."""
    return content_hash({"kind": kind, **parts}, length=KEY_LENGTH)


#: kind of entry → file suffix, under ``<root>/<kind>/<key[:2]>/<key><suffix>``
KINDS = {"embedding": ".npy", "image": ".png", "score": ".json"}
#: the sidecar holding the sha256 (hex) of an entry's bytes
HASH_SUFFIX = ".sha256"
#: an entry's last use is refreshed (its access time) at most this often, so pruning by age sees it in use
TOUCH_EVERY_S = 3600


def hash_path(path: Path) -> Path:
    return path.with_name(path.name + HASH_SUFFIX)


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class UnverifiedEntry(ValueError):
    """A cache entry without a recorded hash (written by an older evalkit)."""


def read_entry(path: Path) -> bytes | None:
    """The bytes of the entry at ``path``, checked against its recorded sha256; None when there is none.

    Raises :class:`UnverifiedEntry` without a recorded hash, ValueError when the bytes do not match it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        recorded = hash_path(path).read_text().strip()
    except FileNotFoundError:
        raise UnverifiedEntry("it has no recorded sha256") from None
    if bytes_sha256(data) != recorded:
        raise ValueError("its content does not match its recorded sha256 (changed after it was written)")
    return data


def decode_embedding(data: bytes) -> np.ndarray:
    value = np.load(io.BytesIO(data), allow_pickle=False)
    if value.dtype != np.float32 or value.ndim != 1 or not np.isfinite(value).all():
        raise ValueError(f"expected a finite float32 vector, found {value.dtype} {value.shape}")
    return value


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        value = np.asarray(image.convert("RGB"))
    if value.ndim != 3 or value.shape[2] != 3 or value.dtype != np.uint8:
        raise ValueError(f"expected a (H, W, 3) uint8 image, found {value.dtype} {value.shape}")
    return value


def decode_score(data: bytes) -> dict:
    """A score entry: ``{"image_sha256": str, "row": {"score": number, ...}}``."""
    entry = json.loads(data)
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("image_sha256"), str)
        or not isinstance(entry.get("row"), dict)
        or not isinstance(entry["row"].get("score"), (int, float))
    ):
        raise ValueError("not a score entry")
    return entry


DECODERS = {"embedding": decode_embedding, "image": decode_image, "score": decode_score}


def remove_entry(path: Path) -> None:
    """Delete an entry and its recorded hash (what is already gone is fine)."""
    for file in (path, hash_path(path)):
        try:
            file.unlink()
        except FileNotFoundError:
            pass


class WorkCache:
    """Files under ``root``: ``embedding/ab/<key>.npy``, ``image/ab/<key>.png``, ``score/ab/<key>.json``,
    each with its ``.sha256``."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
        self.hits = {"embedding": 0, "image": 0, "score": 0}
        self.misses = {"embedding": 0, "image": 0, "score": 0}
        self.stored = {"embedding": 0, "image": 0, "score": 0}  # entries computed and written by this run
        self._warned_unverified = False

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        """Store ``data`` at ``path`` with its sha256: the hash first, so an entry never exists without it."""
        from evalkit.serialization import atomic_write_bytes

        atomic_write_bytes(hash_path(path), bytes_sha256(data).encode())
        atomic_write_bytes(path, data)
        self.stored[path.parent.parent.name] += 1

    def _discard(self, path: Path, error: Exception) -> None:
        if isinstance(error, UnverifiedEntry):
            if not self._warned_unverified:  # a cache of an older evalkit: said once, not per entry
                self._warned_unverified = True
                warnings.warn(
                    f"cache entries without a recorded sha256 (written by an older evalkit, e.g. {path}) "
                    "are not trusted; recomputing them"
                )
        else:
            warnings.warn(
                f"cache entry {path} is unreadable or was altered ({type(error).__name__}: {error}); "
                "deleted, recomputing it"
            )
        try:
            remove_entry(path)
        except OSError:
            pass

    def _touch(self, path: Path) -> None:
        """Record a use (access time), for ``evalkit cache prune``; a read-only shared cache is fine."""
        try:
            stat = path.stat()
            now = time.time()
            if now - stat.st_atime > TOUCH_EVERY_S:
                os.utime(path, (now, stat.st_mtime))
        except OSError:
            pass

    def _get(self, kind: str, key: str, check=None):
        """The decoded, verified entry, or None (missing; or bad: reported and deleted). Whatever goes wrong
        while reading or decoding an entry, it is discarded, never trusted and never raised."""
        if not self.enabled:
            return None
        path = self.path(kind, key, KINDS[kind])
        value = None
        try:
            data = read_entry(path)
            if data is not None:
                value = DECODERS[kind](data)
                if check is not None:
                    value = check(value)
                self._touch(path)
        except Exception as error:  # noqa: BLE001 - any failure means the entry cannot be trusted
            self._discard(path, error)
            value = None
        self._count(kind, value is not None)
        return value

    def _count(self, kind: str, hit: bool):
        (self.hits if hit else self.misses)[kind] += 1

    # embeddings: float32 vectors as .npy (no pickle)
    def get_embedding(self, key: str) -> np.ndarray | None:
        return self._get("embedding", key)

    def put_embedding(self, key: str, value: np.ndarray) -> None:
        if self.enabled:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(value, dtype=np.float32), allow_pickle=False)
            self._write(self.path("embedding", key, ".npy"), buffer.getvalue())

    # images: uint8 (H, W, 3) as PNG, with their sha256 kept in the score entries that use them
    def image_path(self, key: str) -> Path:
        return self.path("image", key, ".png")

    def get_image(self, key: str) -> np.ndarray | None:
        return self._get("image", key)

    def put_image(self, key: str, value: np.ndarray) -> None:
        if self.enabled:
            self._write(self.image_path(key), png_bytes(value))

    # scores: one scorer's row for one image, with the sha256 of the image it scored
    def get_score(self, key: str, image_sha: str) -> dict | None:
        def computed_on(entry: dict) -> dict:
            if entry["image_sha256"] != image_sha:
                raise ValueError("it was computed on another image than the cached one")
            return entry["row"]

        return self._get("score", key, computed_on)

    def put_score(self, key: str, image_sha: str, row: dict) -> None:
        if self.enabled:
            self._write(self.path("score", key, ".json"), json.dumps({"image_sha256": image_sha, "row": row}).encode())

    def stats(self) -> dict:
        return {
            "enabled": self.enabled,
            "root": str(self.root) if self.root else None,
            "hits": dict(self.hits),
            "misses": dict(self.misses),
            "stored": dict(self.stored),
        }


def png_bytes(image: np.ndarray) -> bytes:
    """Deterministic PNG bytes of a uint8 (H, W, 3) image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_sha256(image: np.ndarray) -> str:
    """Content hash of an image's pixels (shape included)."""
    array = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


def default_root() -> Path:
    from evalkit.paths import cache_root

    return cache_root() / "work"
