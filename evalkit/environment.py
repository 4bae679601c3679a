"""Where a run ran: the facts that change which kernels compute an image (``results.json`` ``environment``).

Float results differ between CPU models — above all under bfloat16 autocast, where oneDNN picks
other kernels on a CPU with AMX than on one with only AVX-512 — so a result records the device, the
CPU model, the instruction-set flags that select kernels, the thread count, the library versions and
the decoder's compute dtype. ``evalkit compare`` prints the fields in which base and new differ (a
note, never a failure: the statistics have to hold across machines).
"""

from __future__ import annotations

import platform
from pathlib import Path

#: CPU flags (as /proc/cpuinfo names them) that change which kernels oneDNN and torch run
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

#: the fields ``evalkit compare`` checks between base and new (a difference is reported, not gated)
COMPARED_FIELDS = (
    "device",
    "gpu",
    "cpu_model",
    "isa",
    "cpu_capability",
    "threads",
    "processes",
    "torch",
    "diffusers",
    "decoder_dtype",
)


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; ("", {}) where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        if model and flags:
            break
    return model, flags


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def describe(decoder=None, processes: int = 1) -> dict:
    """This process's environment, for ``results.json``; ``decoder``: the run's decoder (device, dtype)."""
    import torch

    model, flags = _cpuinfo()
    device = str(getattr(decoder, "device", "cpu")) if decoder is not None else "cpu"
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        capability = None
    return {
        "device": device,
        "gpu": gpu,
        "cpu_model": model or platform.processor() or platform.machine(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cpu_capability": capability,
        "threads": torch.get_num_threads(),
        "processes": processes,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "decoder_dtype": getattr(decoder, "compute_dtype", None) if decoder is not None else None,
    }


def differences(base: dict | None, new: dict | None) -> list[str]:
    """``field: base → new`` for each compared field that differs; a run made before environments were
    recorded gives one line saying so."""
    if not base or not new:
        missing = [name for name, env in (("base", base), ("new", new)) if not env]
        return [f"{' and '.join(missing)} recorded no environment (made by an older evalkit)"]
    out = []
    for field in COMPARED_FIELDS:
        a, b = base.get(field), new.get(field)
        if a != b:
            show = lambda v: ", ".join(v) if isinstance(v, list) else str(v)
            out.append(f"{field}: {show(a) or '–'} → {show(b) or '–'}")
    return out
