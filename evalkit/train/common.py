"""Shared training machinery: seeds, JSONL logs, safetensors checkpoints with resume, NaN guard.

Every trainer (``evalkit train-world``, ``evalkit train-baseline``) uses these, so checkpoints look
the same everywhere::

    <run_dir>/
      train_config.json          # the trainer's config (what was asked)
      log.jsonl                  # one JSON row per logged step
      checkpoint/                # latest good state, replaced atomically
        config.json  model.safetensors       # the model (loadable with from_pretrained)
        trainer_state.safetensors            # optimizer / scheduler / RNG tensors
        trainer_state.json                   # step and the non-tensor parts of that state
      final/                     # the model at the end, with training_record.json

Optimizer and scheduler states are stored as safetensors plus JSON (no pickle), so resuming
never unpickles anything.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import EvalkitError, RunExistsError
from evalkit.serialization import atomic_write_json

TENSOR_MARK = "__tensor__"


class TrainingDivergedError(EvalkitError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in a nested dict/list by a reference into ``tensors`` (JSON skeleton)."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {TENSOR_MARK: key}
    if isinstance(obj, dict):
        return {str(k): flatten_state(v, tensors, f"{prefix}.{k}" if prefix else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if TENSOR_MARK in skeleton:
            return tensors[skeleton[TENSOR_MARK]]
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _optimizer_state_from_json(state: dict) -> dict:
    # JSON turns the optimizer's integer parameter ids into strings; torch wants ints back
    state = dict(state)
    state["state"] = {int(k): v for k, v in state.get("state", {}).items()}
    return state


class JsonlLogger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (work that a resume will redo)."""
        kept = [r for r in self.rows() if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def refuse_existing_run(out_dir: Path, resume: bool) -> None:
    """A :class:`RunExistsError` when ``out_dir`` holds files and this is not a ``--resume``: a new run never
    writes over another."""
    out_dir = Path(out_dir)
    if not resume and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunExistsError(f"{out_dir} already holds a training run (or other files); pass --resume to continue "
                             "it or pick another --out")


def save_checkpoint(directory: Path, model, optimizer=None, scheduler=None, step: int = 0, extra: dict | None = None) -> None:
    """Write the latest state into ``directory`` atomically (a new folder, then a rename)."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {
        "step": step,
        "optimizer": flatten_state(optimizer.state_dict(), tensors, "optimizer") if optimizer else None,
        "scheduler": flatten_state(scheduler.state_dict(), tensors, "scheduler") if scheduler else None,
        "torch_rng": flatten_state(torch.get_rng_state(), tensors, "torch_rng"),
        "numpy_rng": flatten_state(_numpy_rng_state(), tensors, "numpy_rng"),
        "python_rng": flatten_state(_python_rng_state(), tensors, "python_rng"),
        "extra": flatten_state(extra or {}, tensors, "extra"),
    }
    save_pretrained_tensors(staging / "trainer_state.safetensors", tensors)
    atomic_write_json(staging / "trainer_state.json", skeleton)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def save_pretrained_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))


def load_checkpoint(directory: Path, model, optimizer=None, scheduler=None) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns ``{"step": ..., "extra": ...}``."""
    from safetensors.torch import load_file

    from evalkit.serialization import check_state_dict, load_state_dict

    directory = Path(directory)
    state = load_state_dict(directory)
    check_state_dict(model.state_dict(), state, str(directory))
    model.load_state_dict(state)
    tensors = load_file(str(directory / "trainer_state.safetensors"))
    skeleton = json.loads((directory / "trainer_state.json").read_text())
    restored = unflatten_state(skeleton, tensors)
    if optimizer is not None and restored["optimizer"] is not None:
        optimizer.load_state_dict(_optimizer_state_from_json(restored["optimizer"]))
    if scheduler is not None and restored["scheduler"] is not None:
        scheduler.load_state_dict(restored["scheduler"])
    torch.set_rng_state(restored["torch_rng"])
    np.random.set_state(_numpy_rng_from(restored["numpy_rng"]))
    random.setstate(_python_rng_from(restored["python_rng"]))
    return {"step": restored["step"], "extra": restored["extra"]}


def _numpy_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_rng_from(state: dict):
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def _python_rng_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_rng_from(state: dict):
    return (state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"])


def check_finite(loss: torch.Tensor, step: int, checkpoint_dir: Path) -> None:
    if not torch.isfinite(loss).all():
        raise TrainingDivergedError(
            f"loss became {loss.item()} at step {step}; training stopped. The last good checkpoint is kept in "
            f"{checkpoint_dir} (lower the learning rate, or resume from it with --resume)."
        )


def finish(run_dir: Path, model, record: dict) -> Path:
    """Save the final model with its training record (config, metrics, wall time)."""
    final = Path(run_dir) / "final"
    model.save_pretrained(final)
    atomic_write_json(final / "training_record.json", record)
    return final


def ship(model_cls, run_dir: Path, dest: Path, dtype=torch.float16) -> Path:
    """Copy a run's final model (``run_dir/final`` or a weights folder) to ``dest`` as fp16, with its record."""
    source = Path(run_dir)
    source = source / "final" if (source / "final").is_dir() else source
    dest = Path(dest)
    model_cls.from_pretrained(source).save_pretrained(dest, dtype=dtype)
    if (source / "training_record.json").is_file():
        shutil.copyfile(source / "training_record.json", dest / "training_record.json")
    return dest


class Stopwatch:
    def __init__(self):
        self.start = time.time()

    def __call__(self) -> float:
        return time.time() - self.start
