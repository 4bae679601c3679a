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

:class:`TrainingSession` is the skeleton every trainer runs its own step inside: the run-folder rules (a new
run never writes over another; ``--resume`` needs a checkpoint and the same settings), the log that never
repeats a step, checkpoints every N steps and at the end, and Ctrl-C / SIGTERM turned into a checkpoint at
the next step boundary (a run killed by a scheduler's time limit resumes where it stopped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from evalkit.errors import ConfigMismatchError, EvalkitError, RunExistsError
from evalkit.serialization import atomic_write_json

TENSOR_MARK = "__tensor__"


class TrainingDivergedError(EvalkitError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(EvalkitError):
    """Ctrl-C or SIGTERM: the state at the last finished step was checkpointed; ``--resume`` continues it."""

    exit_code = 130


class NothingToResumeError(EvalkitError, FileNotFoundError):
    """``--resume`` on a folder without a checkpoint."""


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
        last = getattr(self, "_last_step", "unread")
        if last == "unread":
            last = max((r["step"] for r in self.rows() if "step" in r), default=None)
        step = row.get("step")
        if step is not None and last is not None and step <= last:
            raise RuntimeError(f"{self.path}: step {step} is already logged (last logged step {last})")
        self._last_step = step if step is not None else last
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
        self._last_step = max((r["step"] for r in kept if "step" in r), default=None)


#: what a run that failed before its first checkpoint leaves: a new run may start over it
FAILED_START_FILES = {"train_config.json", "log.jsonl"}


def refuse_existing_run(out_dir: Path, resume: bool) -> None:
    """A :class:`RunExistsError` when ``out_dir`` holds files and this is not a ``--resume``: a new run never
    writes over another. A folder holding only what a failed start leaves (its config, no checkpoint, no logged
    step) is not a run: starting again there loses nothing."""
    out_dir = Path(out_dir)
    if resume or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RunExistsError(f"{out_dir} is a file; pick another --out")
    names = {p.name for p in out_dir.iterdir()}
    if names <= FAILED_START_FILES and not JsonlLogger(out_dir / "log.jsonl").rows():
        return
    if names:
        raise RunExistsError(
            f"{out_dir} already holds a training run (or other files); pass --resume to continue "
            "it or pick another --out"
        )


def refuse_existing_weights(dest: Path, overwrite: bool) -> None:
    """Weights in ``dest`` (a shipped folder) are replaced only with ``overwrite`` (CLI: ``--overwrite``)."""
    dest = Path(dest)
    if not overwrite and dest.is_dir() and any(dest.iterdir()):
        raise RunExistsError(f"{dest} already holds weights; add --overwrite to replace them (or ship elsewhere)")


def save_checkpoint(
    directory: Path, model, optimizer=None, scheduler=None, step: int = 0, extra: dict | None = None
) -> None:
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
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


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


def ship(model_cls, run_dir: Path, dest: Path, dtype=torch.float16, overwrite: bool = False) -> Path:
    """Copy a run's final model (``run_dir/final`` or a weights folder) to ``dest`` as fp16, with its record.

    Weights already in ``dest`` are replaced only with ``overwrite`` (CLI: ``--overwrite``); the new folder is
    written beside it and swapped in, so a failed copy leaves the old weights."""
    source = Path(run_dir)
    source = source / "final" if (source / "final").is_dir() else source
    dest = Path(dest)
    refuse_existing_weights(dest, overwrite)
    staging = dest.with_name(dest.name + ".shipping")
    shutil.rmtree(staging, ignore_errors=True)
    model_cls.from_pretrained(source).save_pretrained(staging, dtype=dtype)
    if (source / "training_record.json").is_file():
        shutil.copyfile(source / "training_record.json", staging / "training_record.json")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dest)
    return dest


class Stopwatch:
    def __init__(self):
        self.start = time.time()

    def __call__(self) -> float:
        return time.time() - self.start


def decay_groups(named_parameters, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices, none on biases, norms and embeddings (trainable only)."""
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in trainable if not (p.ndim >= 2 and "embedding" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float = 0.0) -> Callable[[int], float]:
    """A ``LambdaLR`` factor: linear warm-up to 1 over ``warmup_steps`` (step s gives (s + 1) / warmup), times a
    half cosine from 1 down to ``floor`` over ``total_steps`` (held there after). The world trainers' schedule;
    the priors use the paper's ``CosineAnnealingWarmRestarts`` instead."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * (
            floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )

    return factor


def run_settings(out_dir: str | Path, config):
    """``config`` with every setting the run in ``out_dir`` was started with (its ``train_config.json``), so
    that ``--resume`` needs only the flags that change something (``--steps``, ``--threads``): the command
    line's explicit options go on top of this, and :func:`check_resumable` still refuses a contradiction.
    ``config`` unchanged when the folder holds no run."""
    path = Path(out_dir) / "train_config.json"
    if not path.is_file():
        return config
    saved = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(config)}
    values = {}
    for name, value in saved.items():
        if name in fields:
            current = getattr(config, name)
            values[name] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    return dataclasses.replace(config, **values)


def check_resumable(out_dir: Path, config, resumable: tuple[str, ...] = ()) -> None:
    """A :class:`ConfigMismatchError` listing every setting (other than ``resumable``) that differs from the
    ``train_config.json`` the run in ``out_dir`` was started with: a resume continues *that* run."""
    path = Path(out_dir) / "train_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    asked = json.loads(json.dumps(dataclasses.asdict(config)))  # as it was saved: tuples are lists there
    defaults = {
        f.name: (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else None
        )
        for f in dataclasses.fields(config)
    }
    defaults = json.loads(json.dumps(defaults, default=str))
    diff = [
        f"{k}: run has {saved.get(k, defaults[k])!r}, asked {asked[k]!r}"
        for k in asked
        if k not in resumable and saved.get(k, defaults[k]) != asked[k]
    ]
    if diff:
        raise ConfigMismatchError(
            f"cannot resume {out_dir} with another configuration (--resume with only --out and the flags the "
            "run may change takes its own settings; or start a new run with another --out):\n  " + "\n  ".join(diff)
        )


class TrainingSession:
    """The part of training that is the same for every model: one object per run, used as ::

        session = TrainingSession(out_dir, config, resume=resume, resumable=("eval_every",))
        start = session.restore(model, optimizer, scheduler)      # 0, or the checkpoint's step
        for step in session.steps(config.steps, checkpoint_every=..., desc="train x"):
            ...one optimizer step...
            session.log({"step": step + 1, "loss": ...})
        final = session.finish(model, record)

    What it guarantees: a new run never writes into a folder holding another (:class:`RunExistsError`);
    ``resume`` needs a checkpoint (:class:`NothingToResumeError`) and the same settings
    (:class:`ConfigMismatchError`, except ``resumable`` ones); the log holds each step once (rows after the
    checkpoint are dropped on resume); a checkpoint every ``checkpoint_every`` steps, at ``stop_at`` and at the
    end; Ctrl-C or SIGTERM during a step lets the step finish, checkpoints it and raises
    :class:`TrainingInterrupted` (a second Ctrl-C stops at once, losing the steps since the last checkpoint).

    Multi-process training passes ``main`` (only process 0 writes), ``barrier`` (called after every checkpoint so
    no process runs ahead of a checkpoint being written) and ``any_process`` (reduces the stop flag, so all
    processes stop at the same step when the launcher signals only some of them).
    """

    def __init__(
        self,
        out_dir,
        config,
        *,
        resume: bool = False,
        resumable: tuple[str, ...] = (),
        main: bool = True,
        barrier: Callable[[], None] | None = None,
        any_process: Callable[[bool], bool] | None = None,
        extra_state: Callable[[], dict] | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoint"
        self.config = config
        self.main = main
        self._barrier = barrier or (lambda: None)
        self._any_process = any_process or (lambda flag: flag)
        self._extra_state = extra_state or (lambda: {})
        refuse_existing_run(self.out_dir, resume)
        self.resume = resume and self.out_dir.exists()
        if resume:
            if not (self.checkpoint_dir / "trainer_state.json").is_file():
                raise NothingToResumeError(
                    f"--resume: {self.out_dir} holds no checkpoint to continue ({self.checkpoint_dir} does not exist); "
                    "start the run without --resume (into a new or empty --out)"
                )
            check_resumable(self.out_dir, config, resumable)
        self._barrier()  # every process has checked the folder before process 0 writes into it
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out_dir / "train_config.json", dataclasses.asdict(config))
        self.logger = JsonlLogger(self.out_dir / "log.jsonl")
        self.start_step = 0
        self.elapsed_before = 0.0
        self.extra: dict = {}
        self.clock = Stopwatch()
        self._tracked: tuple = (None, None, None)
        self._stop: str | None = None

    # ------------------------------------------------------------------ state
    def restore(self, model, optimizer=None, scheduler=None) -> int:
        """Track the objects a checkpoint holds; on resume load them and return the checkpoint's step."""
        self._tracked = (model, optimizer, scheduler)
        if self.resume:
            state = load_checkpoint(self.checkpoint_dir, model, optimizer, scheduler)
            self.start_step = int(state["step"])
            self.extra = state["extra"]
            self.elapsed_before = float(self.extra.get("elapsed", 0.0))
            self._barrier()
            if self.main:
                self.logger.truncate_after(self.start_step)
        self.clock = Stopwatch()
        return self.start_step

    def elapsed(self) -> float:
        """Training seconds over every session of this run."""
        return round(self.elapsed_before + self.clock(), 1)

    def log(self, row: dict) -> None:
        if self.main:
            self.logger.log(row)

    def save(self, step: int) -> None:
        model, optimizer, scheduler = self._tracked
        if self.main:
            save_checkpoint(
                self.checkpoint_dir,
                model,
                optimizer,
                scheduler,
                step,
                extra={"elapsed": self.elapsed(), **self._extra_state()},
            )
        self._barrier()

    @staticmethod
    def due(step: int, every: int, total: int) -> bool:
        """Whether the work done every ``every`` steps is due after (0-based) ``step``: each ``every``-th step
        and the last."""
        return (step + 1) % every == 0 or step + 1 == total

    # ------------------------------------------------------------------ the loop
    def steps(
        self,
        total: int,
        *,
        checkpoint_every: int,
        stop_at: int | None = None,
        desc: str = "train",
        progress: bool = True,
        bar_callback: Callable[[Any], None] | None = None,
    ) -> Iterator[int]:
        """The 0-based steps still to run, with a progress bar; after each, a checkpoint when due, and the stop
        on Ctrl-C / SIGTERM. Stops early (with a checkpoint) at ``stop_at``."""
        from tqdm.auto import tqdm

        end = min(total, stop_at) if stop_at else total
        self.end = end
        bar = tqdm(
            range(self.start_step, end),
            initial=self.start_step,
            total=total,
            desc=desc,
            disable=not (progress and self.main),
        )
        self.bar = bar
        with self._signals():
            for step in bar:
                yield step
                stop = self._any_process(self._stop is not None)
                if (step + 1) % checkpoint_every == 0 or step + 1 in (total, end) or stop:
                    self.save(step + 1)
                if stop:
                    bar.close()
                    raise TrainingInterrupted(
                        f"interrupted ({self._stop or 'another process was signalled'}) after step {step + 1} of "
                        f"{total}: checkpoint written to {self.checkpoint_dir}; run the same command with --resume "
                        "to continue"
                    )
        bar.close()

    @property
    def stopped_early(self) -> bool:
        return getattr(self, "end", 0) < getattr(self.config, "steps", 0)

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT / SIGTERM set a flag the loop checks between steps; a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)

    def finish(self, model, record: dict) -> Path:
        """Save ``final/`` with the training record (process 0); every process gets its path."""
        final = self.out_dir / "final"
        if self.main:
            final = finish(self.out_dir, model, record)
        return final
