"""Weights as ``config.json`` + ``model.safetensors`` in one folder (diffusers' ``save_pretrained`` layout).

Pickle formats (``.bin``/``.pt``/``.ckpt``) load only with ``allow_pickle=True``, and then through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigMismatchError, CorruptFileError, WeightsNotFoundError, WriteError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "diffusion_pytorch_model.bin", "model.pt", "model.ckpt")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {error.strerror or error}; nothing was written there") from error
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def seal(payload: dict) -> dict:
    """``payload`` with a ``checksum`` of its content: a results file edited by hand is detected on load."""
    from evalkit.contracts import content_hash

    body = {k: v for k, v in payload.items() if k != "checksum"}
    return {**body, "checksum": content_hash(body, length=64)}


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def save_pretrained(directory: str | os.PathLike, config: dict, state_dict: dict, metadata: dict | None = None,
                    dtype=None, weights_name: str = WEIGHTS_NAME) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (contiguous CPU tensors) into ``directory``.

    ``dtype`` (e.g. ``torch.float16``) casts floating tensors to halve shipped files; loaders cast back.
    ``weights_name`` is ``diffusion_pytorch_model.safetensors`` for models in diffusers' layout.
    """
    from safetensors.torch import save as save_bytes

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    atomic_write_bytes(directory / weights_name, save_bytes(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()}))
    atomic_write_json(directory / CONFIG_NAME, config)
    return directory


def require_directory(directory: str | os.PathLike, what: str, hint: str) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsNotFoundError(f"{what}: expected a weights folder at {directory}, which does not exist. {hint}")
    return directory


def load_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"no {CONFIG_NAME} in {directory}")
    return read_json_object(path)


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; a damaged file is a :class:`CorruptFileError` naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{path} is not valid JSON ({error}); restore or re-save it") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def weights_folder(path: str | os.PathLike | None, env_var: str, what: str, repo_id: str, hint) -> Path:
    """A local weights folder: ``path``, else ``$env_var``; unless it exists, a :class:`WeightsNotFoundError`
    naming it, with ``hint(folder or None)`` saying how to get the weights."""
    if path is None:
        value = os.environ.get(env_var, "").strip()
        if not value:
            raise WeightsNotFoundError(f"{what}: no weights folder given: pass a path or set {env_var} to a local "
                                       f"copy of {repo_id}. {hint(None)}")
        path = value
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise WeightsNotFoundError(f"{what}: expected a {repo_id} folder at {directory}, which does not exist. "
                                   f"{hint(directory)}")
    return directory


def load_state_dict(directory: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Tensors of ``directory``: safetensors, or a pickle file only when ``allow_pickle`` is set."""
    directory = Path(directory)
    named = [directory / n for n in (WEIGHTS_NAME, DIFFUSERS_WEIGHTS_NAME) if (directory / n).is_file()]
    safetensors_files = named[:1] or sorted(p for p in directory.glob("*.safetensors") if not p.name.startswith("trainer_state"))
    if safetensors_files:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        state: dict = {}
        for path in safetensors_files:
            try:
                state.update(load_file(str(path)))
            except (SafetensorError, OSError, ValueError) as error:
                raise CorruptFileError(f"{path} is truncated or damaged ({error}); restore it (git checkout, or "
                                       "re-download / retrain the weights)") from None
        return state
    pickles = [directory / n for n in PICKLE_NAMES if (directory / n).is_file()]
    if pickles and not allow_pickle:
        raise WeightsNotFoundError(
            f"{directory} holds only pickle weights ({pickles[0].name}); pickle can run arbitrary code, so it is "
            "refused by default. Convert to safetensors, or pass allow_pickle=True (CLI: --allow-pickle) if you trust the file."
        )
    if pickles:
        import torch

        return torch.load(pickles[0], map_location="cpu", weights_only=True)
    raise WeightsNotFoundError(f"no {WEIGHTS_NAME} in {directory}")


def check_state_dict(expected: dict, found: dict, where: str) -> None:
    """Raise :class:`ConfigMismatchError` listing missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
        for k in set(expected) & set(found)
        if tuple(expected[k].shape) != tuple(found[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                shown = ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise ConfigMismatchError(f"weights in {where} do not match the architecture — " + "; ".join(parts))


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for a ``torch.nn.Module`` with a dataclass ``config``.

    Subclasses set ``config_class`` and build themselves from ``__init__(config)``.
    """

    config_class: type
    #: how a user gets the weights when a folder is missing (shown in the error)
    weights_hint: str = ""

    def config_dict(self) -> dict:
        return {"_class_name": type(self).__name__, **dataclasses.asdict(self.config)}

    def save_pretrained(self, directory: str | os.PathLike, metadata: dict | None = None, dtype=None) -> Path:
        return save_pretrained(directory, self.config_dict(), self.state_dict(), metadata, dtype)

    @classmethod
    def config_from_dict(cls, raw: dict, where: str = ""):
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        raw = {k: v for k, v in raw.items() if not k.startswith("_")}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ConfigMismatchError(f"config {where} has keys {unknown} that {cls.config_class.__name__} does not know")
        return cls.config_class(**raw)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, allow_pickle: bool = False, **overrides):
        directory = require_directory(directory, cls.__name__, cls.weights_hint)
        raw = load_config(directory)
        raw.update(overrides)
        model = cls(cls.config_from_dict(raw, str(directory / CONFIG_NAME)))
        state = load_state_dict(directory, allow_pickle=allow_pickle)
        check_state_dict(model.state_dict(), state, str(directory))
        model.load_state_dict(state)
        model.eval()
        return model
