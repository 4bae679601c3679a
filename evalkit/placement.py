"""Where and in what precision plugins compute: ``evalkit run --device`` and ``--dtype``.

One mechanism for every prior, decoder, scorer and text encoder: the run loads each plugin on the CPU in the
precision of its files, computes the identities that name its work (fingerprints, the protocol's
``decoder_version``), then calls :func:`place` on it. ``place`` checks the dtype against the plugin's
``supported_dtypes`` and calls the plugin's ``to_placement(device, dtype)`` (the default, in
:class:`evalkit.contracts.Placeable`, moves every torch module the plugin holds and casts its floating weights).
A plugin's compute code then makes its tensors on the device of its own weights; the per-image noise is drawn
on the CPU from each image's seed and moved (the same noise on any device).

Devices: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` and ``meta`` (parameter
counts and placement tests: nothing is computed). Under ``torchrun`` / ``accelerate launch`` ``auto`` and
``cuda`` mean ``cuda:$LOCAL_RANK``: every process its own GPU.
"""

from __future__ import annotations

import os
from typing import Any

from evalkit.errors import SettingError

#: --dtype values and their torch dtypes (names as torch spells them)
DTYPES = ("float32", "bfloat16", "float16")
#: --device values besides cuda:N
DEVICES = ("auto", "cpu", "cuda", "meta")
#: what a plugin computes in where it declares nothing
DEFAULT_DTYPE = "float32"


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise SettingError(f"--dtype must be one of {', '.join(DTYPES)} (got {name!r})")
    return getattr(torch, name)


def dtype_name(dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def local_rank() -> int | None:
    """The launcher's LOCAL_RANK (torchrun, accelerate), None when not launched."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def resolve_device(spec: str | None = "auto") -> str:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``meta`` → a torch device string; a clear error for a GPU
    that is not here, or for one GPU pinned under a multi-process launcher."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec not in DEVICES and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise SettingError(f"--device must be auto, cpu, cuda, cuda:N or meta (got {spec!r})")
    if spec in ("cpu", "meta"):
        return spec
    available = torch.cuda.is_available()
    if spec == "auto" and not available:
        return "cpu"
    if not available:
        raise SettingError(
            f"--device {spec}: no CUDA device here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); use --device cpu "
            "or auto"
        )
    count = torch.cuda.device_count()
    rank = local_rank()
    processes = int(os.environ.get("WORLD_SIZE", 1))
    if spec.startswith("cuda:"):
        index = int(spec[5:])
        if index >= count:
            raise SettingError(f"--device {spec}: this machine has {count} CUDA device(s) (cuda:0 … cuda:{count - 1})")
        if processes > 1:
            raise SettingError(
                f"--device {spec} would put all {processes} processes on one GPU; use --device cuda "
                "(each process its own GPU, by LOCAL_RANK) or CUDA_VISIBLE_DEVICES"
            )
        return spec
    index = rank or 0
    if index >= count:
        raise SettingError(
            f"process with LOCAL_RANK {index} has no GPU of its own: this machine has {count} CUDA "
            "device(s); start at most that many processes per node"
        )
    return f"cuda:{index}"


def modules_of(plugin) -> list:
    """The torch modules ``plugin`` computes with (its ``torch_modules()``, or the default discovery)."""
    from evalkit.contracts import Placeable

    own = getattr(plugin, "torch_modules", None)
    return list(own() if callable(own) else Placeable.torch_modules(plugin))


def current_placement(plugin) -> dict:
    """``{"device", "dtype"}`` of the plugin's floating weights (its declared ``compute_dtype`` first);
    ``dtype "none"`` for a plugin without torch modules (e.g. the analytic scorer)."""
    device, dtype = "cpu", None
    for module in modules_of(plugin):
        tensor = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
        if tensor is not None:
            device, dtype = str(tensor.device), dtype_name(tensor.dtype)
            break
    declared = getattr(plugin, "compute_dtype", None)
    if isinstance(declared, str):
        dtype = declared
    return {"device": device, "dtype": dtype or "none"}


def place(plugin, device: str, dtype: str | None = None, role: str = "plugin", name: str = "") -> dict:
    """Put ``plugin`` on ``device`` computing in ``dtype`` (None: the precision it loaded in); returns its
    placement ``{"device", "dtype", "cast"}``. A dtype the plugin does not declare in ``supported_dtypes`` is a
    :class:`SettingError` naming it."""
    from evalkit.contracts import Placeable

    label = f"{role} {name or getattr(plugin, 'name', '') or type(plugin).__name__!r}"
    if dtype is not None and not modules_of(plugin):
        dtype = None  # nothing to cast (e.g. the analytic scorer reads images in numpy): it runs as it always does
    if dtype is not None:
        torch_dtype(dtype)  # a known name
        supported = tuple(getattr(plugin, "supported_dtypes", (DEFAULT_DTYPE,)))
        if dtype not in supported:
            raise SettingError(
                f"{label} computes in {' or '.join(supported)}; --dtype {dtype} is not one of them "
                f"(set the stage alone, e.g. --dtype {role}={supported[0]})"
            )
    mover = getattr(plugin, "to_placement", None)
    if callable(mover):
        mover(device, dtype)
    else:  # a third-party plugin without the Placeable base: move the modules it holds
        Placeable.to_placement(plugin, device, dtype)
    record = {**current_placement(plugin), "device": str(device), "cast": dtype is not None}
    try:
        plugin._placement = record
    except AttributeError:  # a plugin with __slots__: its placement is still in its tensors
        pass
    return dict(record)


def parse_dtypes(value: str | None) -> dict[str, str | None]:
    """``--dtype``: one dtype for every stage (``bfloat16``), or per stage (``decoder=bfloat16,prior=float32``);
    stages not named keep their plugins' own precision (None)."""
    stages = {"prior": None, "decoder": None, "scorer": None}
    if value is None or not str(value).strip():
        return stages
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    if len(parts) == 1 and "=" not in parts[0]:
        torch_dtype(parts[0])
        return {stage: parts[0] for stage in stages}
    for part in parts:
        stage, sep, name = part.partition("=")
        if not sep or stage.strip() not in stages:
            raise SettingError(
                f"--dtype {value!r}: give one dtype, or STAGE=DTYPE pairs with STAGE one of "
                f"prior, decoder, scorer (got {part!r})"
            )
        torch_dtype(name.strip())
        stages[stage.strip()] = name.strip()
    return stages


def numeric_path(record: dict[str, Any] | None, dtype: bool = True) -> dict:
    """The part of a placement that goes into work-cache keys (a numeric path: other kernels, other bits):
    the device type when it is not the CPU, and (``dtype``) a precision other than float32. Empty on the
    CPU in float32, so the keys of that default stay what they were before devices existed."""
    if not record:
        return {}
    out = {}
    device = str(record.get("device", "cpu")).split(":")[0]
    if device not in ("cpu", "meta"):
        out["device"] = device
    if dtype and record.get("dtype") not in (None, "none", DEFAULT_DTYPE):
        out["dtype"] = record["dtype"]
    return out
