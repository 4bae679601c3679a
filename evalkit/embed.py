"""``evalkit embed``: image–text data in, CLIP image embeddings out — the training targets of a prior.

ECLIPSE (and every unCLIP prior) learns to predict the CLIP image embedding of an image from its caption, so
training one on real data starts by running the decoder's own image encoder over the dataset once. This
module does that at dataset scale:

* the encoder comes from a local folder in one of the public layouts (:func:`load_image_encoder`) and the
  images are preprocessed by that folder's ``CLIPImageProcessor``, exactly as the Kandinsky 2.2 and Karlo
  pipelines do — an embedding made with other preprocessing is a slightly different target;
* the raw ``image_embeds`` are stored (not L2-normalised): that is what those decoders consume;
* work is divided by unit (a shard, or a chunk of manifest rows; :mod:`evalkit.data.sources`), one output
  file per unit, so ``torchrun --nproc-per-node N`` and DataLoader workers change the speed, never the
  files, and a killed run resumes by skipping the units whose stats file exists.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.data import embeddings as folder_io
from evalkit.data.sources import (
    DEFAULT_ROWS_PER_SHARD,
    EARLY_CHECK_RECORDS,
    REASONS,
    Source,
    check_bad_fraction,
    iter_unit_batches,
    open_source,
)
from evalkit.errors import ConfigMismatchError, EvalkitError, RunExistsError, SettingError, WeightsNotFoundError

#: the number of units after which a run stops as if killed (tests of resuming; never set in real use)
STOP_AFTER_UNITS_VARIABLE = "EVALKIT_EMBED_STOP_AFTER_UNITS"
#: the skipped records the manifest lists as examples (all of them are in the per-unit stats files)
MANIFEST_EXAMPLES = 20
DTYPES = ("float32", "float16", "bfloat16")

LAYOUTS = (
    "(a) a kandinsky-2-2-prior style folder: image_encoder/ (CLIPVisionModelWithProjection: config.json + "
    "model.safetensors) and image_processor/ (preprocessor_config.json); "
    "(b) a CLIPVisionModelWithProjection folder: config.json, model.safetensors, preprocessor_config.json; "
    "(c) a whole CLIPModel folder such as openai/clip-vit-large-patch14: config.json (with vision_config), "
    "model.safetensors, preprocessor_config.json"
)


@dataclass
class ImageEncoder:
    """A loaded image tower with its preprocessing, and what the manifest records about it."""

    model: Any
    processor: Any
    tokenizer: Any
    info: dict = field(default_factory=dict)


class _Preprocess:
    """The folder's CLIPImageProcessor on a list of RGB images (a class, so DataLoader workers can pickle it)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, images):
        return self.processor(images=images, return_tensors="pt")["pixel_values"]


def _fingerprint(directory: Path, use_safetensors: bool) -> str:
    """The weight files' :func:`~evalkit.serialization.files_fingerprint` (name and content): the same weights,
    wherever the folder now lives."""
    from evalkit.serialization import find_weights, files_fingerprint

    safetensors, pickles = find_weights(directory)
    return files_fingerprint(
        directory / name for name in (safetensors if use_safetensors else pickles) if not name.endswith(".index.json")
    )


def _has_tokenizer(directory: Path) -> bool:
    return (
        (directory / "vocab.json").is_file()
        and (directory / "merges.txt").is_file()
        or (directory / "tokenizer.json").is_file()
    )


def _find_layout(root: Path) -> tuple[Path, Path | None, Path | None, str]:
    """(model folder, processor folder, tokenizer folder, layout name) for an --image-encoder path."""
    if not root.is_dir():
        raise WeightsNotFoundError(f"--image-encoder {root}: no such folder. Expected {LAYOUTS}")
    if (root / "image_encoder" / "config.json").is_file():
        model_dir = root / "image_encoder"
        processors = [root / "image_processor", model_dir, root]
        layout = "prior-pipeline"
        tokenizers = [root / "tokenizer", root]
    elif (root / "config.json").is_file():
        try:
            config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        except ValueError as error:
            raise WeightsNotFoundError(f"--image-encoder {root}: config.json is not JSON ({error})") from None
        kind = config.get("model_type")
        if kind not in ("clip", "clip_vision_model"):
            raise WeightsNotFoundError(
                f"--image-encoder {root}: config.json describes a {kind!r} model, not a CLIP "
                f"image encoder. Expected {LAYOUTS}"
            )
        model_dir = root
        processors = [root, root.parent / "image_processor"]
        layout = "clip-model" if kind == "clip" else "vision-model"
        tokenizers = [root, root / "tokenizer", root.parent / "tokenizer"]
    else:
        raise WeightsNotFoundError(
            f"--image-encoder {root}: not an image encoder folder (no image_encoder/config.json "
            f"and no config.json). Expected {LAYOUTS}"
        )
    processor_dir = next((p for p in processors if (p / "preprocessor_config.json").is_file()), None)
    if processor_dir is None:
        raise WeightsNotFoundError(
            f"--image-encoder {root}: no preprocessor_config.json (looked in "
            f"{', '.join(str(p) for p in processors)}); the images must be preprocessed as the "
            f"encoder was trained. Expected {LAYOUTS}"
        )
    tokenizer_dir = next((p for p in tokenizers if p.is_dir() and _has_tokenizer(p)), None)
    return model_dir, processor_dir, tokenizer_dir, layout


def load_image_encoder(path: str | os.PathLike, allow_pickle: bool = False) -> ImageEncoder:
    """A ``CLIPVisionModelWithProjection`` and its ``CLIPImageProcessor`` from a local folder (:data:`LAYOUTS`).

    From a whole ``CLIPModel`` folder only the image tower and its projection are loaded (the same tensor
    names), with the tower's config taken from ``vision_config`` and the projection width from the top level.
    Pickle weights are refused unless ``allow_pickle``. The tokenizer, when the folder has one, is used only
    to count captions the text side will truncate.
    """
    from evalkit.serialization import weights_format

    root = Path(path)
    model_dir, processor_dir, tokenizer_dir, layout = _find_layout(root)
    use_safetensors = weights_format(model_dir, allow_pickle, f"--image-encoder {root}")["use_safetensors"]
    config = _vision_config(model_dir) if layout == "clip-model" else None
    model, processor = _load_vision_model(root, model_dir, processor_dir, use_safetensors, config)
    tokenizer = _load_tokenizer(root, tokenizer_dir)
    dim = int(model.config.projection_dim)
    info = {
        "path": str(root.resolve()),
        "class": type(model).__name__,
        "layout": layout,
        "weights": str(model_dir.resolve()),
        "image_processor": str(processor_dir.resolve()),
        "tokenizer": str(tokenizer_dir.resolve()) if tokenizer_dir is not None else None,
        "embedding_dim": dim,
        "embedding_space": folder_io.EMBEDDING_SPACES.get(dim),
        "fingerprint": _fingerprint(model_dir, use_safetensors),
    }
    return ImageEncoder(model.eval(), processor, tokenizer, info)


def _vision_config(model_dir: Path):
    """The image tower's ``CLIPVisionConfig`` of a whole ``CLIPModel`` folder (``vision_config`` plus the
    top-level projection width)."""
    from transformers import CLIPVisionConfig

    whole = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    vision = dict(whole.get("vision_config") or {})
    if "projection_dim" in whole:
        vision["projection_dim"] = whole["projection_dim"]
    return CLIPVisionConfig(**{k: v for k, v in vision.items() if k not in ("model_type", "transformers_version")})


def _load_vision_model(root: Path, model_dir: Path, processor_dir: Path, use_safetensors: bool, config):
    """The ``CLIPVisionModelWithProjection`` and its image processor; a folder that lacks image-tower tensors
    is refused."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    from evalkit.errors import CorruptFileError

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a CLIPModel folder's text tower is "unexpected" here, by design
    hf_logging.disable_progress_bar()  # one bar per run: embed's own
    try:
        kwargs = {"config": config} if config is not None else {}
        model, loading = CLIPVisionModelWithProjection.from_pretrained(
            model_dir, local_files_only=True, use_safetensors=use_safetensors, output_loading_info=True, **kwargs
        )
        processor = CLIPImageProcessor.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise CorruptFileError(
            f"--image-encoder {root}: could not load {model_dir} ({type(error).__name__}: {error})"
        ) from error
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = list(loading.get("missing_keys") or [])
    if missing:
        raise CorruptFileError(
            f"--image-encoder {root}: {model_dir} lacks {len(missing)} image-tower tensors (e.g. "
            f"{missing[0]}); it is not a CLIP image encoder with a projection. Expected {LAYOUTS}"
        )
    return model, processor


def _load_tokenizer(root: Path, tokenizer_dir: Path | None):
    """The folder's ``CLIPTokenizer``, or None when it has none."""
    from transformers import CLIPTokenizer

    from evalkit.errors import CorruptFileError

    if tokenizer_dir is None:
        return None
    try:
        return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as error:
        raise CorruptFileError(
            f"--image-encoder {root}: tokenizer {tokenizer_dir} cannot be loaded ({error})"
        ) from None


# --------------------------------------------------------------------------- the run folder


def _config(source: Source, encoder: ImageEncoder, min_size: int) -> dict:
    """What a resume must share with the run it continues: the same units of the same data through the same
    weights and filters, or the unit files on disk would be a mixture."""
    return {
        "format": folder_io.FORMAT,
        "format_version": folder_io.FORMAT_VERSION,
        "data": source.describe(),
        "encoder": {k: encoder.info[k] for k in ("fingerprint", "embedding_dim", "class")},
        "min_size": int(min_size),
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return out


def _prepare(out: Path, config: dict, resume: bool) -> None:
    """Create ``out`` for a new run, or check that a resume continues the same run (then drop stray temp files)."""
    config_path = out / folder_io.CONFIG_NAME
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not resume:
            raise RunExistsError(
                f"--out {out} already exists; pass --resume to continue the embedding run in it, or choose a new folder"
            )
        if not config_path.is_file():
            raise RunExistsError(
                f"--out {out} is not empty and holds no embedding run ({folder_io.CONFIG_NAME} is "
                "missing); choose a new folder"
            )
        try:
            old = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ConfigMismatchError(f"{config_path} is damaged ({error}); start a new --out") from None
        differences = _differences(old, config)
        if differences:
            raise ConfigMismatchError(
                f"--resume: {out} was started with other settings, so its finished units "
                f"would not match the rest: {'; '.join(differences)}. Use the run's own data, "
                "encoder and --min-size / --rows-per-shard, or a new --out"
            )
        folder_io.remove_stray_tmp(out)
        return
    out.mkdir(parents=True, exist_ok=True)
    folder_io.atomic_write_json(config_path, config)


def _manifest(
    out: Path, source: Source, encoder: ImageEncoder, stats: list[dict], environment: dict, timing: dict
) -> dict:
    skipped_by_reason = {reason: 0 for reason in REASONS}
    examples: list[dict] = []
    files = []
    for unit in stats:
        for entry in unit["skipped"]:
            skipped_by_reason[entry["reason"]] = skipped_by_reason.get(entry["reason"], 0) + 1
            if len(examples) < MANIFEST_EXAMPLES:
                examples.append({"unit": unit["unit"], **entry})
        files += [unit["files"]["img_emb"], unit["files"]["metadata"]]
    counts = {
        "seen": sum(u["seen"] for u in stats),
        "written": sum(u["written"] for u in stats),
        "skipped": sum(len(u["skipped"]) for u in stats),
        "skipped_by_reason": skipped_by_reason,
        "truncated_captions": sum(u["truncated_captions"] for u in stats),
    }
    return {
        "format": folder_io.FORMAT,
        "format_version": folder_io.FORMAT_VERSION,
        "encoder": encoder.info,
        "embedding_dim": encoder.info["embedding_dim"],
        "dtype": "float16",
        "normalized": False,
        "data": source.describe(),
        "units": len(stats),
        "counts": counts,
        "skipped_examples": examples,
        "files": files,
        "environment": environment,
        "timing": timing,
    }


def _environment(device: str, dtype: str, processes: int) -> dict:
    import platform

    import torch
    import transformers

    from evalkit import __version__

    return {
        "evalkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "processes": processes,
        "device": device.split(":")[0],
        "dtype": dtype,
    }


# --------------------------------------------------------------------------- the loop


def _stream(source, units, batch_size, preprocess, min_size, tokenizer):
    """An IterableDataset over this process's units; DataLoader workers split them by worker id."""
    import torch

    class UnitStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = list(units) if info is None else list(units)[info.id :: info.num_workers]
            try:
                yield from iter_unit_batches(source, mine, batch_size, preprocess, min_size, tokenizer)
            except EvalkitError as error:  # handed over whole: DataLoader would re-wrap it with a traceback
                yield {"error": error}

    return UnitStream()


def _resolve_dtype(dtype: str | None, device: str):
    import torch

    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    if name not in DTYPES:
        raise SettingError(f"--dtype must be one of {', '.join(DTYPES)} (got {name!r})")
    return name, getattr(torch, name)


def embed_dataset(
    spec: str | os.PathLike,
    image_encoder: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 64,
    num_workers: int = 0,
    resume: bool = False,
    max_bad_fraction: float = 0.01,
    min_size: int = 0,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    device: str = "auto",
    dtype: str | None = None,
    progress: bool = True,
    image_column: str | None = None,
    caption_column: str | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Embed every image of ``spec`` with the image encoder in ``image_encoder``; returns ``out/embeddings.json``.

    Under ``torchrun`` each process takes the units ``i % WORLD_SIZE == RANK`` on its own device; process 0
    writes the manifest once all are done. ``dtype``: the encoder's compute precision (default float32 on the
    CPU, float16 on a GPU, as the public pipelines run); the files are float16 either way.
    """
    from evalkit.distributed import gather, state, world

    _check_settings(batch_size, num_workers, max_bad_fraction)
    rank, processes = world()
    device, dtype_name, torch_dtype = _set_up_device(device, dtype, processes)
    out = Path(out)
    started = time.perf_counter()
    source, encoder = _open(
        spec, image_encoder, out, resume, min_size, rows_per_shard, image_column, caption_column, allow_pickle, rank
    )
    done = {u.index for u in source.units if folder_io.read_unit_stats(out, u.index) is not None}
    mine = source.assigned(rank, processes, skip=done)
    loop_started = time.perf_counter()
    written = _embed_units(
        source,
        encoder,
        mine,
        out,
        device,
        torch_dtype,
        batch_size,
        num_workers,
        min_size,
        max_bad_fraction,
        bar_total=(getattr(source, "rows", None) if not done and processes == 1 else None),
        progress=progress and rank == 0,
    )
    if processes > 1:
        state().wait_for_everyone()
    counts = gather([written])
    timing = {
        "images_written_this_run": int(sum(counts)),
        "images_per_s": round(sum(counts) / max(time.perf_counter() - loop_started, 1e-9), 2),
    }
    return _finish(
        out, source, encoder, max_bad_fraction, _environment(device, dtype_name, processes), timing, started, rank
    )


def _set_up_device(device: str, dtype: str | None, processes: int):
    """The resolved device, the compute dtype's name and torch dtype; under ``torchrun``, this process's
    distributed state."""
    from evalkit.distributed import configure, state
    from evalkit.placement import resolve_device

    device = resolve_device(device)
    if device == "meta":
        raise SettingError("--device meta computes nothing; use auto, cpu or cuda")
    dtype_name, torch_dtype = _resolve_dtype(dtype, device)
    if processes > 1:
        configure(device)
        state()
    return device, dtype_name, torch_dtype


def _check_settings(batch_size: int, num_workers: int, max_bad_fraction: float) -> None:
    if batch_size < 1:
        raise SettingError(f"--batch-size must be at least 1 (got {batch_size})")
    if num_workers < 0:
        raise SettingError(f"--num-workers must be 0 or more (got {num_workers})")
    if not 0 <= max_bad_fraction <= 1:
        raise SettingError(f"--max-bad-fraction must be between 0 and 1 (got {max_bad_fraction})")


def _open(
    spec,
    image_encoder,
    out: Path,
    resume: bool,
    min_size: int,
    rows_per_shard: int,
    image_column,
    caption_column,
    allow_pickle: bool,
    rank: int,
):
    """The data source and the encoder; process 0 claims (or, resuming, checks) the output folder. A problem is
    raised on every process alike, so none of them waits for the others forever."""
    from evalkit.distributed import broadcast, finish

    try:
        source = open_source(
            spec, image_column=image_column, caption_column=caption_column, rows_per_shard=rows_per_shard
        )
        encoder = load_image_encoder(image_encoder, allow_pickle=allow_pickle)
        problem = None
        if rank == 0:
            try:
                _prepare(out, _config(source, encoder, min_size), resume)
            except EvalkitError as error:
                problem = error
    except EvalkitError as error:  # every process reads the same spec and encoder, so all of them fail alike
        finish()
        raise error
    problem = broadcast(problem)
    if problem is not None:
        finish()
        raise problem
    return source, encoder


def _new_unit() -> dict:
    return {"embeds": [], "keys": [], "captions": [], "seen": 0, "skipped": [], "truncated": 0}


def _embed_units(
    source,
    encoder,
    mine,
    out: Path,
    device,
    torch_dtype,
    batch_size: int,
    num_workers: int,
    min_size: int,
    max_bad_fraction: float,
    bar_total,
    progress: bool,
) -> int:
    """Embed this process's units, writing each as it completes; returns the images written."""
    import torch
    from tqdm.auto import tqdm

    model = encoder.model.to(device=device, dtype=torch_dtype)
    batches = _batches(source, encoder, mine, batch_size, num_workers, min_size)
    stop_after = os.environ.get(STOP_AFTER_UNITS_VARIABLE)
    stop_after = int(stop_after) if stop_after else None
    bar = tqdm(total=bar_total, unit="rec", desc="embed", disable=not progress, dynamic_ncols=True)
    pending: dict[int, dict] = {}
    started = time.perf_counter()
    seen = written = units_written = 0
    skipped: list[dict] = []
    try:
        with torch.inference_mode():
            for item in batches:
                if "error" in item:
                    raise item["error"]
                _add_to_unit(pending.setdefault(item["unit"], _new_unit()), item, model, device, torch_dtype)
                seen, written, skipped = seen + item["seen"], written + len(item["keys"]), skipped + item["skipped"]
                bar.update(item["seen"])
                bar.set_postfix(
                    {"images/s": f"{written / max(time.perf_counter() - started, 1e-9):.1f}", "skipped": len(skipped)},
                    refresh=False,
                )
                if item["done"]:
                    hook = (
                        _simulated_kill(out, item["unit"])
                        if stop_after is not None and units_written >= stop_after
                        else None
                    )
                    _write(out, source, encoder, item["unit"], pending.pop(item["unit"]), hook)
                    units_written += 1
                if seen >= EARLY_CHECK_RECORDS:
                    check_bad_fraction(
                        seen,
                        skipped,
                        max_bad_fraction,
                        where=f" (checked early, after {seen} records; finished units are kept in {out})",
                    )
    finally:
        bar.close()
    return written


def _batches(source, encoder, mine, batch_size: int, num_workers: int, min_size: int):
    """The preprocessed batches of this process's units (through a ``DataLoader`` when ``num_workers``)."""
    import torch

    stream = _stream(source, mine, batch_size, _Preprocess(encoder.processor), min_size, encoder.tokenizer)
    return (
        torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)
        if num_workers > 0 and mine
        else stream
    )


def _add_to_unit(unit: dict, item: dict, model, device, torch_dtype) -> None:
    """Embed ``item``'s images (if any) into ``unit`` and add its keys, captions and counts."""
    if item["pixel_values"] is not None:
        pixels = item["pixel_values"].to(device=device, dtype=torch_dtype)
        unit["embeds"].append(model(pixel_values=pixels).image_embeds.float().cpu().numpy())
    for key in ("keys", "captions", "seen", "skipped", "truncated"):
        unit[key] += item[key]


def _write(out: Path, source, encoder, index: int, data: dict, hook) -> None:
    """One finished unit: its embeddings, metadata and (last) its stats file."""
    import numpy as np

    embeds = (
        np.concatenate(data["embeds"]) if data["embeds"] else np.zeros((0, encoder.info["embedding_dim"]), np.float32)
    )
    folder_io.write_unit(
        out,
        index,
        embeds,
        data["keys"],
        data["captions"],
        {
            "name": source.units[index].name,
            "seen": data["seen"],
            "skipped": data["skipped"],
            "skipped_by_reason": _by_reason(data["skipped"]),
            "truncated_captions": data["truncated"],
        },
        before_stats=hook,
    )


def _finish(
    out: Path, source, encoder, max_bad_fraction: float, environment: dict, timing: dict, started: float, rank: int
) -> Path:
    """Process 0 checks every unit is complete and the bad fraction, then writes the manifest; every process
    returns its path (or raises the same problem)."""
    from evalkit.distributed import broadcast, finish

    problem = manifest_path = None
    if rank == 0:
        try:
            stats = []
            for u in source.units:
                entry = folder_io.read_unit_stats(out, u.index)
                if entry is None:
                    raise folder_io.CorruptFileError(
                        f"unit {u.index} ({u.name}) has no complete stats file in {out}; rerun with --resume"
                    )
                stats.append(entry)
            check_bad_fraction(
                sum(s["seen"] for s in stats),
                [e for s in stats for e in s["skipped"]],
                max_bad_fraction,
                where=f" (finished units are kept in {out})",
            )
            timing = {"seconds": round(time.perf_counter() - started, 3), **timing}
            manifest = _manifest(out, source, encoder, stats, environment, timing)
            manifest_path = out / folder_io.MANIFEST_NAME
            folder_io.atomic_write_json(manifest_path, manifest)
        except EvalkitError as error:
            problem = error
    problem, manifest_path = broadcast((problem, manifest_path))
    finish()
    if problem is not None:
        raise problem
    return Path(manifest_path)


def _by_reason(skipped: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in skipped:
        counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
    return counts


def _simulated_kill(out: Path, index: int):
    """A kill in the middle of writing unit ``index``: data files in place, stats half-written, no rename."""

    def hook():
        partial = folder_io._tmp_name(folder_io.stats_file(out, index))
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text('{"unit": ', encoding="utf-8")
        raise KeyboardInterrupt(f"{STOP_AFTER_UNITS_VARIABLE}: stopped while writing unit {index}")

    return hook


def summary(manifest_path: str | os.PathLike) -> str:
    """One paragraph for the terminal: written, skipped by reason, truncated captions, speed, where."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    counts = manifest["counts"]
    reasons = ", ".join(f"{n} {r}" for r, n in counts["skipped_by_reason"].items() if n) or "none"
    timing = manifest.get("timing", {})
    encoder = manifest["encoder"]
    space = f", {encoder['embedding_space']}" if encoder.get("embedding_space") else ""
    truncated = (
        f"{counts['truncated_captions']} captions longer than the tokenizer's context (the text side "
        "will truncate them)"
        if encoder.get("tokenizer")
        else "truncated captions not counted (no tokenizer beside the encoder)"
    )
    return (
        f"embedded {counts['written']:,} of {counts['seen']:,} records in {manifest['units']} units "
        f"({encoder['embedding_dim']}-d raw image_embeds{space}); skipped {counts['skipped']:,} ({reasons}); "
        f"{truncated}; {timing.get('images_per_s', 0):,.1f} images/s this run "
        f"({timing.get('images_written_this_run', 0):,} images). Manifest: {manifest_path}"
    )
