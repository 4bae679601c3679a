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

Entries are written to a private temporary file and renamed (a killed run leaves no half-written
entry), and read defensively: an entry that fails to load or whose content hash does not match is
reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.contracts import content_hash

KEY_LENGTH = 32


def work_key(kind: str, **parts: Any) -> str:
    """The one key function of the work cache: ``kind`` plus every determining part, hashed."""
    return content_hash({"kind": kind, **parts}, length=KEY_LENGTH)


def _tensor_digest(modules) -> str:
    import torch

    digest = hashlib.sha256()
    for prefix, module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:KEY_LENGTH]


def _source_digest(obj) -> str:
    """Hash of the source files of ``obj``'s class and its bases inside evalkit (code changes invalidate)."""
    digest = hashlib.sha256()
    for cls in type(obj).__mro__:
        if not cls.__module__.startswith("evalkit"):
            continue
        try:
            digest.update(Path(inspect.getsourcefile(cls)).read_bytes())
        except (TypeError, OSError):
            digest.update(cls.__qualname__.encode())
    return digest.hexdigest()[:KEY_LENGTH]


def weights_fingerprint(plugin) -> str:
    """Hash of the weights a plugin holds: itself if it is a module, and its module-valued attributes."""
    import torch

    modules = []
    if isinstance(plugin, torch.nn.Module):
        modules.append(("", plugin))
    else:
        for name, value in sorted(vars(plugin).items()):
            if isinstance(value, torch.nn.Module):
                modules.append((name, value))
    return _tensor_digest(modules) if modules else ""


#: settings that choose a numeric path (how a decoder computes), not what it computes: left out of the
#: protocol's ``decoder_version`` (``fingerprint(..., numeric=False)``), kept in every cache key
NUMERIC_SETTINGS = frozenset({"compute_dtype", "sampling_dtype"})


def _settings(plugin, numeric: bool = True) -> dict:
    """The plugin's JSON-able scalar settings (options such as steps, guidance, training seed)."""
    out = {}
    for name, value in sorted(vars(plugin).items()):
        if name.startswith("_") or name == "training" or (not numeric and name in NUMERIC_SETTINGS):
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[name] = list(value)
        elif isinstance(value, os.PathLike):
            out[name] = str(value)
    config = getattr(plugin, "config", None)
    if config is not None:
        try:
            out["config"] = json.loads(json.dumps(config, default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o)))
        except (TypeError, ValueError):
            out["config"] = str(config)
        if not numeric and isinstance(out["config"], dict):
            out["config"] = {k: v for k, v in out["config"].items() if k not in NUMERIC_SETTINGS}
    return out


def fingerprint(plugin, code: bool = True, numeric: bool = True) -> str:
    """Identity of a prior, decoder or scorer: class, settings, weights and (``code``) its source.

    ``numeric=False`` leaves out the settings that only choose a numeric path (:data:`NUMERIC_SETTINGS`,
    e.g. the synth decoder's bfloat16 sampling): the protocol's ``decoder_version``, under which a float32
    and a bfloat16 decode of the same weights are one protocol. A plugin may define ``fingerprint()``
    itself (e.g. to hash a weights file instead of its tensors).
    """
    own = getattr(plugin, "fingerprint", None)
    if callable(own):
        return str(own())
    from evalkit import __version__

    parts = {"class": f"{type(plugin).__module__}.{type(plugin).__qualname__}", "name": getattr(plugin, "name", ""),
             "version": getattr(plugin, "version", ""), "settings": _settings(plugin, numeric),
             "weights": weights_fingerprint(plugin)}
    if code:
        parts.update(source=_source_digest(plugin), evalkit=__version__)
    return content_hash(parts, length=KEY_LENGTH)


class WorkCache:
    """Files under ``root``: ``embedding/ab/<key>.npy``, ``image/ab/<key>.png``, ``score/ab/<key>.json``."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
        self.hits = {"embedding": 0, "image": 0, "score": 0}
        self.misses = {"embedding": 0, "image": 0, "score": 0}
        self.stored = {"embedding": 0, "image": 0, "score": 0}  # entries computed and written by this run

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        from evalkit.serialization import atomic_write_bytes

        atomic_write_bytes(path, data)
        self.stored[path.parent.parent.name] += 1

    def _discard(self, path: Path, error: Exception) -> None:
        warnings.warn(f"cache entry {path} is unreadable ({type(error).__name__}: {error}); recomputing it")
        try:
            path.unlink()
        except OSError:
            pass

    def _count(self, kind: str, hit: bool):
        (self.hits if hit else self.misses)[kind] += 1

    # embeddings: float32 vectors as .npy (no pickle)
    def get_embedding(self, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        path = self.path("embedding", key, ".npy")
        value = None
        if path.is_file():
            try:
                value = np.load(path, allow_pickle=False)
                if value.dtype != np.float32 or value.ndim != 1 or not np.isfinite(value).all():
                    raise ValueError(f"expected a finite float32 vector, found {value.dtype} {value.shape}")
            except (OSError, ValueError, EOFError) as error:
                self._discard(path, error)
                value = None
        self._count("embedding", value is not None)
        return value

    def put_embedding(self, key: str, value: np.ndarray) -> None:
        if self.enabled:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(value, dtype=np.float32), allow_pickle=False)
            self._write(self.path("embedding", key, ".npy"), buffer.getvalue())

    # images: uint8 (H, W, 3) as PNG, with their sha256 kept in the score entries that use them
    def image_path(self, key: str) -> Path:
        return self.path("image", key, ".png")

    def get_image(self, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        from PIL import Image

        path = self.image_path(key)
        value = None
        if path.is_file():
            try:
                with Image.open(path) as image:
                    value = np.asarray(image.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as error:
                self._discard(path, error)
        self._count("image", value is not None)
        return value

    def put_image(self, key: str, value: np.ndarray) -> None:
        if self.enabled:
            self._write(self.image_path(key), png_bytes(value))

    # scores: one scorer's row for one image, with the sha256 of the image it scored
    def get_score(self, key: str, image_sha: str) -> dict | None:
        if not self.enabled:
            return None
        path = self.path("score", key, ".json")
        value = None
        if path.is_file():
            try:
                entry = json.loads(path.read_text())
                if entry.get("image_sha256") != image_sha:
                    raise ValueError("it was computed on another image than the cached one")
                value = entry["row"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                self._discard(path, error)
        self._count("score", value is not None)
        return value

    def put_score(self, key: str, image_sha: str, row: dict) -> None:
        if self.enabled:
            self._write(self.path("score", key, ".json"),
                        json.dumps({"image_sha256": image_sha, "row": row}).encode())

    def stats(self) -> dict:
        return {"enabled": self.enabled, "root": str(self.root) if self.root else None,
                "hits": dict(self.hits), "misses": dict(self.misses), "stored": dict(self.stored)}


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
