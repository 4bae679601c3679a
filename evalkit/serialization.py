"""Weights as ``config.json`` + ``model.safetensors`` in one folder (diffusers' ``save_pretrained`` layout).

Pickle formats (:data:`PICKLE_SUFFIXES`: ``.bin``/``.pt``/``.pth``/``.ckpt``/``.pkl``) load only with
``allow_pickle=True``, and then through ``torch.load(weights_only=True)``: :func:`open_weights` for evalkit's own
models, :func:`weights_format` (the ``from_pretrained`` keywords) for transformers / diffusers folders. Weights are
identified by :func:`weights_fingerprint` (tensors) and :func:`files_fingerprint` (files).

A ``config.json`` is never trusted with memory: :func:`load_pretrained` checks its values' types, builds the
model it describes on the meta device (no storage), compares every tensor's name and shape with the weights
file's header, and only then builds the real model and reads the tensors. A config that asks for more than
its weights hold is a :class:`~evalkit.errors.ConfigMismatchError` naming the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import reprlib
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

from evalkit.errors import ConfigMismatchError, CorruptFileError, EvalkitError, WeightsNotFoundError, WriteError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: the one list of pickle weight formats (``torch.save`` files, and their shard indexes ``<name>.bin.index.json``):
#: refused unless ``allow_pickle``, since unpickling can run code (:func:`weights_format`)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: the whole-model pickle files :func:`open_weights` reads (first found wins); each has a :data:`PICKLE_SUFFIXES` suffix
PICKLE_NAMES = ("pytorch_model.bin", "diffusion_pytorch_model.bin", "model.pt", "model.ckpt")
#: file-name stems of whole-model weights: named first when a folder holds several pickle files
_WEIGHT_STEMS = ("pytorch_model", "diffusion_pytorch_model", "model")


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write, keep_suffix: bool = False) -> Path:
    """``write(temporary path)`` in ``path``'s folder, then a rename onto ``path``: never a half-written file
    under its name; a failed write (a full disk) is a :class:`WriteError` naming ``path``, and the temporary
    file (``.<name>.<random>.tmp``; ``keep_suffix``: ``….tmp.png``, for writers that read the format from
    the extension) is removed. The file gets the permissions a plain ``open()`` would give (``0o666 & ~umask``), not
    ``mkstemp``'s private 0600: a cache or a run folder shared between users stays readable to them."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + (path.suffix if keep_suffix else "")
        )
        os.close(fd)
        write(Path(tmp))
        if hasattr(os, "chmod"):
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {error.strerror or error}; nothing was written there") from error
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def seal(payload: dict) -> dict:
    """``payload`` with a ``checksum`` of its content: a results file edited by hand is detected on load."""
    from evalkit.contracts import content_hash

    body = {k: v for k, v in payload.items() if k != "checksum"}
    return {**body, "checksum": content_hash(body, length=64)}


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def save_pretrained(
    directory: str | os.PathLike,
    config: dict,
    state_dict: dict,
    metadata: dict | None = None,
    dtype=None,
    weights_name: str = WEIGHTS_NAME,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (contiguous CPU tensors) into ``directory``.

    ``dtype`` (e.g. ``torch.float16``) casts floating tensors to halve shipped files; loaders cast back.
    ``weights_name`` is ``diffusion_pytorch_model.safetensors`` for models in diffusers' layout.
    """
    from safetensors.torch import save as save_bytes

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    atomic_write_bytes(
        directory / weights_name, save_bytes(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    )
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
    except RecursionError:
        raise CorruptFileError(f"{path} nests its JSON too deeply to be a config; restore or re-save it") from None
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, or an integer of thousands of digits
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
            raise WeightsNotFoundError(
                f"{what}: no weights folder given: pass a path or set {env_var} to a local "
                f"copy of {repo_id}. {hint(None)}"
            )
        path = value
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise WeightsNotFoundError(
            f"{what}: expected a {repo_id} folder at {directory}, which does not exist. {hint(directory)}"
        )
    return directory


class WeightsFile:
    """The weights of a folder: tensor names and shapes known before any tensor data is read.

    Safetensors: from the files' headers (``safe_open(...).get_slice(name).get_shape()``), which the
    format checks against the file's length. Pickle (only with ``allow_pickle``): read once with
    ``torch.load(weights_only=True)``; a pickle is never larger in memory than on disk.
    """

    def __init__(self, paths: list[Path], shapes: dict[str, tuple[int, ...]], state: dict | None = None):
        self.paths = paths
        self.shapes = shapes
        self._state = state

    @property
    def label(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def numel(self) -> int:
        total = 0
        for shape in self.shapes.values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total

    def tensors(self) -> dict:
        if self._state is not None:
            return self._state
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        state: dict = {}
        for path in self.paths:
            try:
                state.update(load_file(str(path)))
            except (SafetensorError, OSError, ValueError) as error:
                raise _damaged(path, error) from None
        return state


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _damaged(path: Path, error) -> CorruptFileError:
    return CorruptFileError(
        f"{path} is truncated or damaged ({error}); restore it (git checkout, or re-download / retrain the weights)"
    )


def open_weights(directory: str | os.PathLike, allow_pickle: bool = False) -> WeightsFile:
    """The weights file(s) of ``directory`` with their tensor shapes: safetensors, or a pickle file only when
    ``allow_pickle`` is set."""
    directory = Path(directory)
    named = [directory / n for n in (WEIGHTS_NAME, DIFFUSERS_WEIGHTS_NAME) if (directory / n).is_file()]
    safetensors_files = named[:1] or sorted(
        p for p in directory.glob("*.safetensors") if not p.name.startswith("trainer_state")
    )
    if safetensors_files:
        from safetensors import SafetensorError, safe_open

        shapes: dict[str, tuple[int, ...]] = {}
        for path in safetensors_files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for name in handle.keys():
                        shapes[name] = tuple(int(s) for s in handle.get_slice(name).get_shape())
            except (SafetensorError, OSError, ValueError, RuntimeError) as error:
                raise _damaged(path, error) from None
        return WeightsFile(safetensors_files, shapes)
    pickles = [directory / n for n in PICKLE_NAMES if (directory / n).is_file()]
    if pickles and not allow_pickle:
        raise pickle_refused(directory, pickles[0].name)
    if pickles:
        state = load_pickle_state(pickles[0])
        return WeightsFile(pickles[:1], {k: tuple(v.shape) for k, v in state.items()}, state)
    raise WeightsNotFoundError(f"no {WEIGHTS_NAME} in {directory}")


def _is_pickle(name: str) -> bool:
    return name.removesuffix(".index.json").endswith(PICKLE_SUFFIXES)


def _is_safetensors(name: str) -> bool:
    return name.removesuffix(".index.json").endswith(".safetensors")


def find_weights(directory: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(safetensors, pickles)``: names of the weight files in ``directory`` (shard indexes included), sorted;
    pickles of a whole model (``pytorch_model.bin``, ``model.pt``, ...) first."""
    directory = Path(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
    pickles = sorted((n for n in names if _is_pickle(n)), key=lambda n: (not n.startswith(_WEIGHT_STEMS), n))
    return [n for n in names if _is_safetensors(n)], pickles


def _variant(names: list[str], suffix: str) -> str | None:
    """The variant of weight files such as ``diffusion_pytorch_model.fp16.safetensors`` (``fp16``), None when a
    plain file (``<stem><suffix>``, or its index) is among ``names``."""
    stems = [n.removesuffix(".index.json").removesuffix(suffix) for n in names]
    if not stems or any("." not in stem for stem in stems):
        return None
    return stems[0].rsplit(".", 1)[1]


def pickle_refused(directory: Path, name: str, what: str = "", hint: str = "") -> WeightsNotFoundError:
    """The one refusal of a pickle-only weights folder: the folder, the file, why, and how to opt in."""
    return WeightsNotFoundError(
        f"{f'{what}: ' if what else ''}{directory} holds only pickle weights ({name}); pickle can run arbitrary code, "
        f"so it is refused by default. {hint or 'Convert the weights to safetensors.'} If you trust the file, pass "
        "allow_pickle=True (CLI: --allow-pickle); it is then read with torch.load(weights_only=True)."
    )


def weights_format(
    directory: str | os.PathLike, allow_pickle: bool, what: str = "", hint: str = "", missing: str = ""
) -> dict:
    """The ``from_pretrained`` keywords for the weights in ``directory`` (transformers / diffusers folders):
    ``{"use_safetensors": True}`` when it holds safetensors, else ``{"use_safetensors": False}`` for pickle
    weights (:data:`PICKLE_SUFFIXES`), and only with ``allow_pickle``; plus ``"variant"`` (e.g. ``fp16``) when
    the files are only variant-named. A pickle-only folder without ``allow_pickle`` is refused
    (:func:`pickle_refused`, with ``hint``: how to get safetensors), a folder without weights is a
    :class:`WeightsNotFoundError` (``missing``: what to do then). ``what`` names the caller in messages."""
    directory = Path(directory)
    safetensors, pickles = find_weights(directory)
    if safetensors:
        variant = _variant(safetensors, ".safetensors")
        return {"use_safetensors": True, **({"variant": variant} if variant else {})}
    if pickles and not allow_pickle:
        raise pickle_refused(directory, pickles[0], what, hint)
    if pickles:
        variant = _variant(pickles, "." + pickles[0].removesuffix(".index.json").rsplit(".", 1)[1])
        return {"use_safetensors": False, **({"variant": variant} if variant else {})}
    prefix = f"{what}: " if what else ""
    raise WeightsNotFoundError(f"{prefix}no weights (*.safetensors) in {directory}. {missing}".rstrip())


def load_pickle_state(path: Path) -> dict:
    """A pickle checkpoint's tensors through ``torch.load(weights_only=True)``: anything but a plain mapping of
    names to tensors is a :class:`CorruptFileError` (torch's own message, which suggests unpickling with
    ``weights_only=False``, i.e. running the file's code, is not passed on)."""
    import pickle

    import torch

    refused = CorruptFileError(
        f"{path} is not a plain tensor checkpoint; evalkit loads pickles with weights_only=True and will not run "
        "code in them; convert it to safetensors"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise refused from None
    except Exception as error:  # truncated zip, bad magic number, ...: the file is damaged
        if "weights_only" in str(error):
            raise refused from None
        raise _damaged(path, _first_line(error)) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise refused
    return state


def load_state_dict(directory: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Tensors of ``directory``: safetensors, or a pickle file only when ``allow_pickle`` is set."""
    return open_weights(directory, allow_pickle).tensors()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or load reports while loading (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- fingerprints


def weights_fingerprint(weights, *, with_shapes: bool = True) -> str:
    """sha256 (hex) of a module's tensors (its ``state_dict()``) or of a state dict, exact: for each tensor in
    name order, ``name:(shape):dtype`` and then its raw bytes (any dtype, any device).

    ``with_shapes=False`` hashes the name alone before the bytes: the form of the synth decoder's recorded
    ``clip_hash`` (:func:`evalkit.train.world_decoder.weights_hash`), kept so recorded values still match."""
    import hashlib

    import torch

    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        label = f"{name}:{tuple(tensor.shape)}:{tensor.dtype}" if with_shapes else name
        digest.update(label.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def files_fingerprint(paths) -> str:
    """sha256 (hex) over files, by name and content (``"<name> <sha256>\n"`` each, in path order): the same
    weights wherever their folder now lives."""
    import hashlib

    from evalkit.prompts_fetch import sha256_file

    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name} {sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _mismatch_parts(expected: dict, found: dict) -> list[str]:
    """``missing: …``, ``unexpected: …``, ``wrong shape: …`` between two name → tensor (or shape) maps."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k}: expected {_shape(expected[k])}, found {_shape(found[k])}"
        for k in set(expected) & set(found)
        if _shape(expected[k]) != _shape(found[k])
    )
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
            parts.append(f"{label}: {shown}")
    return parts


def check_state_dict(expected: dict, found: dict, where: str) -> None:
    """Raise :class:`ConfigMismatchError` listing missing, unexpected and mis-shaped tensors (tensors or shapes)."""
    parts = _mismatch_parts(expected, found)
    if parts:
        raise ConfigMismatchError(f"weights in {where} do not match the architecture — " + "; ".join(parts))


# --------------------------------------------------------------------------- checking a config before building it


def config_hints(obj) -> dict:
    """Expected types of a config's keys: a dataclass's field annotations, or a callable's parameter
    annotations (else the types of their defaults)."""
    import inspect

    if dataclasses.is_dataclass(obj):
        try:
            return typing.get_type_hints(obj)
        except Exception:  # an annotation that does not resolve: its key goes unchecked
            return {}
    try:
        hints = typing.get_type_hints(obj)
    except Exception:
        hints = {}
    out = {}
    for param in inspect.signature(obj).parameters.values():
        if param.name in hints:
            out[param.name] = hints[param.name]
        elif isinstance(param.default, (bool, int, float, str)):
            out[param.name] = type(param.default)
    return out


def _type_problem(value, hint) -> str | None:
    """Why ``value`` (from JSON) does not fit ``hint``; None when it does or the hint is not understood."""
    import math
    import types

    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = [_type_problem(value, option) for option in options if option is not type(None)]
        return (
            None
            if any(p is None for p in problems)
            else problems[0]
            if len(problems) == 1
            else ("must be " + " or ".join(_type_name(o) for o in options))
        )
    if hint is type(None):
        return None if value is None else "must be null"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        return None if value >= 0 else "must be a non-negative integer"
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if hint in (dict, list, tuple) or origin in (dict, list, tuple):
        container = origin or hint
        if container is dict:
            return None if isinstance(value, dict) else "must be a JSON object"
        if not isinstance(value, (list, tuple)):
            return "must be a list"
        args = typing.get_args(hint)
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return f"must be a list of {len(args)} values"
            pairs = list(zip(value, args))
        else:
            pairs = [(item, args[0]) for item in value] if args else []
        for index, (item, item_hint) in enumerate(pairs):
            problem = _type_problem(item, item_hint)
            if problem is not None:
                return f"item {index} ({reprlib.repr(item)}) {problem}"
        return None
    return None


def _type_name(hint) -> str:
    return {
        int: "a non-negative integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        type(None): "null",
    }.get(hint, str(hint))


def check_config_values(raw: dict, hints: dict, where: str) -> None:
    """Raise :class:`ConfigMismatchError` naming ``where`` and each key whose value does not fit its type
    (a string or a float where a size goes, a negative size, a non-finite number)."""
    problems = []
    for key, value in raw.items():
        if key.startswith("_") or key not in hints:
            continue
        problem = _type_problem(value, hints[key])
        if problem is not None:
            problems.append(f"{key} = {reprlib.repr(value)}: {problem}")
    if problems:
        raise ConfigMismatchError(f"{where}: " + "; ".join(problems))


class _TooLarge(BaseException):
    """The meta build asked for far more tensors than the weights file holds (a BaseException, so that no
    ``except Exception`` in a model's constructor swallows it)."""


def _counting_mode(limit: int):
    from torch.overrides import TorchFunctionMode

    class Budget(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            if self.calls > limit:
                raise _TooLarge()
            return func(*args, **(kwargs or {}))

    return Budget()


def _meta_build(build: Callable[[dict], Any], raw: dict, limit: int):
    """``build(raw)`` on the meta device (no storage), with at most ``limit`` torch calls (so a config with a
    billion layers stops at once instead of making a billion Python objects)."""
    import torch

    with torch.device("meta"), _counting_mode(limit):
        return build(raw)


def _leaves(value, path: tuple = (), depth: int = 0):
    """``(path, value)`` of a config's scalar values (dict keys and short lists, a few levels deep)."""
    if depth > 6:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not (depth == 0 and key.startswith("_")):
                yield from _leaves(item, path + (key,), depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) <= 16:
            for index, item in enumerate(value):
                yield from _leaves(item, path + (index,), depth + 1)
    elif value is None or isinstance(value, (bool, int, float, str)):
        yield path, value


def _key_name(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _thawed(value, depth: int = 0):
    """A copy of a config's containers (tuples as lists) down to where :func:`_leaves` looks."""
    if depth > 7:
        return value
    if isinstance(value, dict):
        return {k: _thawed(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v, depth + 1) for v in value]
    return value


def _replaced(raw: dict, path: tuple, value) -> dict:
    """``raw`` with the value at ``path`` replaced (``raw`` itself unchanged)."""
    out = _thawed(raw)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def _signature(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _differences(a: dict, b: dict) -> set:
    """``(name, dim)`` where two name → shape maps differ (``dim`` None: the name is in one only, or the rank
    differs)."""
    out = set()
    for name in set(a) ^ set(b):
        out.add((name, None))
    for name in set(a) & set(b):
        if len(a[name]) != len(b[name]):
            out.add((name, None))
        else:
            out.update((name, d) for d, (x, y) in enumerate(zip(a[name], b[name])) if x != y)
    return out


def _suspects(build, raw: dict, expected: dict, found: dict, limit: int) -> list[str]:
    """The config keys behind a shape mismatch: those whose change moves the mismatched tensors' sizes (each
    integer is doubled and halved, one at a time, on the meta device); the keys explaining most come first."""
    mismatched = _differences(expected, found)
    scores = {}
    for path, value in _leaves(raw):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        changed = set()
        for other in {value * 2 if value else 1, value // 2 if value > 1 else value + 1}:
            try:
                changed |= _differences(expected, _signature(_meta_build(build, _replaced(raw, path, other), limit)))
            except (Exception, _TooLarge):
                continue
        score = len(changed & mismatched)
        if score:
            scores[path] = score
    if not scores:
        return []
    best = max(scores.values())
    return [f"{_key_name(p)} = {reprlib.repr(_get(raw, p))}" for p, s in scores.items() if s == best]


def _get(raw, path: tuple):
    for part in path:
        raw = raw[part]
    return raw


def _build_error(error: Exception, raw: dict, where: str, what: str) -> ConfigMismatchError:
    """A failed build as a one-line error naming the file, and the keys whose values the message quotes."""
    text = _first_line(error)
    named = []
    for path, value in _leaves(raw):
        if isinstance(value, str) and len(value) >= 3 and value in text:
            named.append(f"{_key_name(path)} = {value!r}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            named.append(f"{_key_name(path)} = {value!r}")
    culprit = f" ({', '.join(named)})" if named else ""
    return ConfigMismatchError(f"{where}: cannot build {what} from this config{culprit}: {text}")


def build_checked(build: Callable[[dict], Any], raw: dict, weights: WeightsFile, where: str, what: str):
    """``build(raw)``, once its tensors are known to be the weights file's.

    The model is first built on the meta device and its tensor names and shapes are compared with the
    file's header; a difference is a :class:`ConfigMismatchError` naming ``where`` (the config.json) and the
    keys behind it. Only then is the real model built (its memory is the file's tensors, plus buffers that
    are not stored, bounded here too).
    """
    limit = 2_000 + 32 * len(weights.shapes)  # torch calls of a meta build: about 5-13 per stored tensor
    try:
        meta = _meta_build(build, raw, limit)
    except _TooLarge:
        # the key: the largest integer whose reduction to 1 makes the build fit (a few tries, largest first)
        sizes = sorted(
            ((v, p) for p, v in _leaves(raw) if isinstance(v, int) and not isinstance(v, bool) and v > 1),
            key=lambda item: -item[0],
        )
        culprit = "it"
        for value, path in sizes[:4]:
            try:
                _meta_build(build, _replaced(raw, path, 1), limit)
            except (Exception, _TooLarge):
                continue
            culprit = f"{_key_name(path)} = {value!r}"
            break
        raise ConfigMismatchError(
            f"{where}: {culprit} asks for far more tensors than the {len(weights.shapes)} "
            f"stored in {weights.label}; fix the config"
        ) from None
    except EvalkitError:
        raise
    except Exception as error:
        if not _meta_unsupported(error):
            raise _build_error(error, raw, where, what) from None
        # a constructor that reads tensor values cannot run on the meta device: build it for real, then compare
        model = _real_build(build, raw, where, what)
        check_state_dict(_signature(model), weights.shapes, where)
        return model
    expected = _signature(meta)
    parts = _mismatch_parts(expected, weights.shapes)
    if parts:
        suspects = _suspects(build, raw, expected, weights.shapes, limit)
        culprit = " or ".join(suspects) if suspects else "the architecture it describes"
        raise ConfigMismatchError(
            f"{where}: {culprit} does not match the weights in {weights.label} — " + "; ".join(parts)
        )
    extra = sum(b.numel() for b in meta.buffers()) + sum(p.numel() for p in meta.parameters()) - weights.numel()
    if extra > 2**26:  # 256 MB of float32 that no stored tensor accounts for
        raise ConfigMismatchError(
            f"{where}: this config makes {what} allocate {extra * 4 / 2**30:.1f} GB beyond the "
            f"tensors stored in {weights.label}; fix the config"
        )
    return _real_build(build, raw, where, what)


def _meta_unsupported(error: Exception) -> bool:
    """Whether a failed meta build failed for the meta device itself (``.item()``, a copy out of a meta tensor)."""
    return isinstance(error, NotImplementedError) or "meta tensor" in str(error).lower()


def _real_build(build: Callable[[dict], Any], raw: dict, where: str, what: str):
    try:
        return build(raw)
    except EvalkitError:
        raise
    except Exception as error:
        raise _build_error(error, raw, where, what) from None


def load_pretrained(
    directory: str | os.PathLike,
    build: Callable[[dict], Any],
    raw: dict,
    what: str,
    allow_pickle: bool = False,
    hints: dict | None = None,
):
    """The model ``build(raw)`` of a weights folder with its tensors loaded, every check done before any real
    allocation: ``raw``'s values against ``hints`` (types), the meta build against the file's tensor shapes
    (:func:`build_checked`). Floating tensors stored in fp16 are cast to the model's dtype."""
    directory = Path(directory)
    where = str(directory / CONFIG_NAME)
    if hints:
        check_config_values(raw, hints, where)
    weights = open_weights(directory, allow_pickle=allow_pickle)
    model = build_checked(build, raw, weights, where, what)
    state = weights.tensors()
    check_state_dict(model.state_dict(), state, str(directory))  # the real build is the meta build: a no-op
    model.load_state_dict(state)
    return model.eval()


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
            raise ConfigMismatchError(
                f"config {where} has keys {unknown} that {cls.config_class.__name__} does not know"
            )
        return cls.config_class(**raw)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, allow_pickle: bool = False, **overrides):
        directory = require_directory(directory, cls.__name__, cls.weights_hint)
        return cls.load_folder(directory, allow_pickle, overrides)

    @classmethod
    def load_folder(cls, directory: Path, allow_pickle: bool = False, overrides: dict | None = None):
        """``directory``'s config (with ``overrides``) and weights, checked by :func:`load_pretrained`."""
        raw = {**load_config(directory), **(overrides or {})}
        where = str(Path(directory) / CONFIG_NAME)
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(k for k in raw if not k.startswith("_") and k not in fields)
        if unknown:
            raise ConfigMismatchError(
                f"config {where} has keys {unknown} that {cls.config_class.__name__} does not know"
            )
        return load_pretrained(
            directory,
            lambda r: cls(cls.config_from_dict(r, where)),
            raw,
            cls.__name__,
            allow_pickle=allow_pickle,
            hints=config_hints(cls.config_class),
        )
