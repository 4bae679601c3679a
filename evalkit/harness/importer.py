"""``evalkit import``: a folder of images in T2I-CompBench's format, scored into an evalkit run folder.

The folder is one T2I-CompBench ``--out_dir`` (one category) holding ``samples/{prompt}_{index}.png``.
As their scorers do, files are ordered by the integer after the last ``_`` and the prompt is the file
name before the first ``_``. Each prompt is matched to the suite's item with exactly that text (after
stripping), and the k-th image of a prompt, in index order, gets seed ``42 + k``. A ``manifest.json``
beside ``samples/`` (written by ``evalkit export``) gives each file's item and seed instead. When
``annotation_blip/vqa_result.json`` (their B-VQA output) is present, its per-image answers are kept as
rows of the scorer ``t2i-compbench-bvqa``.

The result is an ordinary run folder (``run.json``, ``images/``, ``samples.jsonl``, sealed
``results.json``, report) whose protocol names the decoder ``imported`` with ``decoder_version``
``imported``: two imports are comparable when they share the suite version, the scorers (and their
versions) and the number of images per prompt, whatever produced the images. Everything is checked
before the run folder is created: a bad input leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError

#: the scorer name of rows read from T2I-CompBench's own B-VQA output
BVQA_SCORER = "t2i-compbench-bvqa"
DECODER = "imported"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FIRST_SEED = 42
_INDEX = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ImportedImage:
    """One file of ``samples/`` and the (item, seed) it stands for."""

    file: Path
    index: int  # the integer after the last "_" (their sort key and question_id order)
    item: object  # PromptItem
    seed: int


def _shown(values: Sequence[str]) -> str:
    values = list(values)
    return "; ".join(repr(v) for v in values[:5]) + (f" (+{len(values) - 5} more)" if len(values) > 5 else "")


def list_samples(folder: Path) -> list[tuple[int, str, Path]]:
    """(index, prompt, path) of every image in ``folder/samples``, in T2I-CompBench's order (by index)."""
    samples = folder / "samples"
    if not samples.is_dir():
        raise EvalkitError(
            f"{folder} has no samples/ folder: pass a T2I-CompBench out_dir "
            "(the folder holding samples/{prompt}_{index}.png)"
        )
    entries, bad = [], []
    for path in samples.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        stem, suffix = os.path.splitext(path.name)
        index = stem.rsplit("_", 1)[-1] if "_" in stem else ""
        if suffix.lower() not in IMAGE_SUFFIXES or not _INDEX.match(index):
            bad.append(path.name)
            continue
        entries.append((int(index), stem.split("_", 1)[0], path))
    if bad:
        raise EvalkitError(
            f"{len(bad)} file(s) in {samples} are not named {{prompt}}_{{index}}.png (an image whose "
            f"name ends in _<integer>): {_shown(sorted(bad))}. Nothing was imported."
        )
    if not entries:
        raise EvalkitError(f"{samples} holds no images. Nothing was imported.")
    entries.sort(key=lambda e: e[0])
    indices = [e[0] for e in entries]
    if len(set(indices)) != len(indices):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise EvalkitError(f"{samples}: index {dup[0]} is used by more than one file; indices must be unique")
    return entries


def _match_by_manifest(entries, manifest_path: Path, suite, items: list) -> list[ImportedImage]:
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = {m["file"]: m for m in manifest["images"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise EvalkitError(
            f"{manifest_path} is not an evalkit export manifest ({error}); delete it to match images by prompt instead"
        ) from None
    by_id = {item.item_id: item for item in items}
    out, problems = [], []
    for index, _prompt, path in entries:
        entry = listed.get(path.name)
        if entry is None:
            problems.append(f"{path.name}: not in the manifest")
        elif entry.get("suite", suite.name) != suite.name:
            problems.append(f"{path.name}: exported from suite {entry['suite']!r}, not {suite.name!r}")
        elif entry.get("item_id") not in by_id:
            problems.append(f"{path.name}: item {entry.get('item_id')!r} is not in the suite")
        else:
            out.append(ImportedImage(path, index, by_id[entry["item_id"]], int(entry["seed"])))
    if problems:
        raise EvalkitError(f"{manifest_path} does not fit {suite.name!r}: {_shown(problems)}. Nothing was imported.")
    return out


def _match_by_prompt(entries, suite, items: list, split: str) -> list[ImportedImage]:
    by_prompt: dict[str, object] = {}
    for item in items:
        by_prompt.setdefault(item.prompt.strip(), item)  # a repeated prompt: its first item
    unknown = sorted({prompt for _, prompt, _ in entries if prompt.strip() not in by_prompt})
    if unknown:
        raise EvalkitError(
            f"{len(unknown)} prompt(s) in the file names are not prompts of suite {suite.name!r} "
            f"({split} split; matched exactly, case-sensitive): {_shown(unknown)}. Nothing was imported."
        )
    counts: dict[str, int] = {}
    out = []
    for index, prompt, path in entries:
        item = by_prompt[prompt.strip()]
        k = counts.get(item.item_id, 0)
        counts[item.item_id] = k + 1
        out.append(ImportedImage(path, index, item, FIRST_SEED + k))
    return out


def read_vqa_result(path: Path, entries) -> dict[int, float]:
    """Index → their B-VQA score, from ``vqa_result.json`` (answers in the sorted order of ``samples/``)."""
    try:
        answers = json.loads(Path(path).read_text())
        values = [float(a["answer"]) for a in answers]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EvalkitError(
            f"{path} is not a T2I-CompBench vqa_result.json (a list of {{'question_id', 'answer'}}): {error}"
        ) from None
    if len(values) != len(entries):
        raise EvalkitError(
            f"{path} has {len(values)} answers but samples/ holds {len(entries)} images; "
            "it must come from scoring exactly these files"
        )
    bad = [v for v in values if not (0.0 <= v <= 1.0)]
    if bad:
        raise EvalkitError(f"{path}: answers must be probabilities in [0, 1], e.g. got {bad[0]}")
    return {index: value for (index, _, _), value in zip(entries, values)}


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise EvalkitError(f"cannot read image {path}: {error}") from None


def _score(scorer, name: str, images: list[np.ndarray], batch, batch_size: int) -> list[dict]:
    """One row per image (the score stage's :func:`evalkit.harness.runner.score_rows`); images of one size are scored
    together, in chunks of ``batch_size``."""
    import torch

    from evalkit.harness.runner import score_rows, to_pixels

    rows: list[dict | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            with torch.inference_mode():
                new = score_rows(
                    scorer, to_pixels([images[i] for i in chunk]), batch.subset(chunk), name, reads="images"
                )
            for i, row in zip(chunk, new):
                rows[i] = row
    return rows  # type: ignore[return-value]


def _check_arguments(folder: Path, out, prior: str, scorers: list[str], suite_name: str) -> None:
    from evalkit.registry import SCORERS, SUITES
    from evalkit.harness.runs import check_parent

    if not folder.is_dir():
        raise EvalkitError(f"{folder} is not a folder")
    check_parent(out)  # a finished run folder is never written into
    if len(set(scorers)) != len(scorers) or BVQA_SCORER in scorers:
        raise EvalkitError(f"name each scorer once ({BVQA_SCORER!r} comes from vqa_result.json, not from --scorer)")
    if not prior or any(c in prior for c in "/\\\x00") or prior.startswith("."):
        raise EvalkitError(f"--prior must be a plain name (got {prior!r})")
    SUITES.check([suite_name])
    SCORERS.check(scorers)


def match_images(folder: Path, suite, split: str) -> tuple[list, list[ImportedImage]]:
    """The entries of ``samples/`` and the (item, seed) each stands for (by ``manifest.json`` when there is one,
    else by prompt), in the runner's order: suite order, then seed."""
    items = suite.items(split)
    entries = list_samples(folder)
    manifest = folder / "manifest.json"
    images = (
        _match_by_manifest(entries, manifest, suite, items)
        if manifest.is_file()
        else _match_by_prompt(entries, suite, items, split)
    )
    pairs = [(im.item.item_id, im.seed) for im in images]
    if len(set(pairs)) != len(pairs):
        dup = next(p for p in pairs if pairs.count(p) > 1)
        raise EvalkitError(f"two images stand for item {dup[0]!r} with seed {dup[1]}; each (item, seed) once")
    order = {item.item_id: k for k, item in enumerate(items)}
    images.sort(key=lambda im: (order[im.item.item_id], im.seed))
    return entries, images


def _their_bvqa(folder: Path, vqa_result, entries) -> tuple[Path, dict[int, float] | None]:
    """Where their B-VQA output is (``vqa_result``, else ``annotation_blip/vqa_result.json``) and its scores."""
    vqa_path = Path(vqa_result) if vqa_result is not None else folder / "annotation_blip" / "vqa_result.json"
    if vqa_result is not None and not vqa_path.is_file():
        raise EvalkitError(f"{vqa_path} does not exist")
    return vqa_path, (read_vqa_result(vqa_path, entries) if vqa_path.is_file() else None)


def _import_protocol(images: list[ImportedImage], metric_names: list[str], loaded: dict, bvqa):
    from evalkit.contracts import Protocol

    per_prompt: dict[str, int] = {}
    for im in images:
        per_prompt[im.item.item_id] = per_prompt.get(im.item.item_id, 0) + 1
    return Protocol(
        decoder=DECODER,
        num_inference_steps=0,
        guidance_scale=0.0,
        resolution=0,
        images_per_prompt=max(per_prompt.values()),
        seed=FIRST_SEED,
        scorer=",".join(metric_names),
        scorer_version=",".join([loaded[n].version for n in loaded] + (["external"] if bvqa else [])),
        decoder_version=DECODER,
    )


def write_samples(
    run_dir: Path,
    prior: str,
    suite,
    images: list[ImportedImage],
    pixels: list[np.ndarray],
    scored: dict[str, list[dict]],
    bvqa: dict | None,
) -> list[dict]:
    """The write stage of an import: each image into ``images/`` and its sample rows (the runner's
    :func:`evalkit.harness.runner.sample_row`), the scorers' then their B-VQA's."""
    from evalkit.harness.cache import png_bytes
    from evalkit.harness.runner import sample_row

    (run_dir / "images" / prior / suite.name).mkdir(parents=True)
    rows: list[dict] = []
    for k, im in enumerate(images):
        rel = Path("images") / prior / suite.name / f"{im.item.item_id}_{im.seed}.png"
        if im.file.suffix.lower() == ".png":
            shutil.copyfile(im.file, run_dir / rel)
        else:
            (run_dir / rel).write_bytes(png_bytes(pixels[k]))
        for name, scorer_rows in scored.items():
            rows.append(sample_row(prior, suite.name, name, im.item, im.seed, str(rel), scorer_rows[k]))
        if bvqa is not None:
            rows.append(
                sample_row(
                    prior,
                    suite.name,
                    BVQA_SCORER,
                    im.item,
                    im.seed,
                    str(rel),
                    {"score": bvqa[im.index], "source_file": im.file.name},
                )
            )
    return rows


def import_t2i_compbench(
    folder: str | os.PathLike,
    suite_name: str,
    out: str | os.PathLike,
    prior: str = "imported",
    scorers: Sequence[str] = ("analytic",),
    split: str = "val",
    vqa_result: str | os.PathLike | None = None,
    batch_size: int = 64,
    tag: str = "",
    prompts_dir: str | None = None,
) -> Path:
    """Score the images of a T2I-CompBench ``out_dir`` as ``prior`` on ``suite_name``; returns the new run folder.

    ``scorers``: evalkit scorers to run on the images (may be empty when ``vqa_result`` rows are all
    that is wanted). ``vqa_result``: their B-VQA output (default: ``annotation_blip/vqa_result.json``
    in ``folder`` when present).
    """
    from evalkit.registry import SCORERS
    from evalkit.report.run_report import write_report
    from evalkit.harness.runner import run_record
    from evalkit.harness.runs import new_run_dir
    from evalkit.serialization import atomic_write_json
    from evalkit.suites import load_suite

    folder, scorers = Path(folder), list(scorers)
    _check_arguments(folder, out, prior, scorers, suite_name)
    suite = load_suite(suite_name, prompts_dir=prompts_dir)
    entries, images = match_images(folder, suite, split)  # everything checked before anything is written
    vqa_path, bvqa = _their_bvqa(folder, vqa_result, entries)
    if not scorers and bvqa is None:
        raise EvalkitError("nothing to score: name a scorer, or import a folder with annotation_blip/vqa_result.json")
    pixels = [_read_image(im.file) for im in images]
    loaded = {name: SCORERS.get(name)() for name in scorers}

    clock = time.time()
    scored, timings = _score_images(suite, images, pixels, loaded, batch_size)

    metric_names = scorers + ([BVQA_SCORER] if bvqa is not None else [])
    protocol = _import_protocol(images, metric_names, loaded, bvqa)
    config = _import_config(folder, prior, suite_name, metric_names, split, tag, vqa_path, bvqa)
    run_dir = new_run_dir(out, f"{prior}_{suite_name}")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(run_dir / "run.json", run_record(config, protocol, started))
    t0 = time.perf_counter()
    rows = write_samples(run_dir, prior, suite, images, pixels, scored, bvqa)
    timings["io"] = time.perf_counter() - t0

    _write_import_results(
        run_dir, rows, folder, prior, suite, split, tag, loaded, config, protocol, timings, clock, started
    )
    write_report([run_dir], run_dir)
    return run_dir


def _score_images(suite, images, pixels, loaded: dict, batch_size: int) -> tuple[dict, dict]:
    """Run each loaded scorer on the imported images; returns the scores by scorer and the scoring time."""
    from evalkit.contracts import Batch

    batch = Batch(
        [im.item for im in images],
        [im.seed for im in images],
        scenes=[suite.ground_truth(im.item, im.seed) for im in images],
    )
    t0 = time.perf_counter()
    scored = {name: _score(scorer, name, pixels, batch, batch_size) for name, scorer in loaded.items()}
    timings = {"scorer": time.perf_counter() - t0}
    return scored, timings


def _import_config(
    folder: Path, prior: str, suite_name: str, metric_names: list, split: str, tag: str, vqa_path, bvqa
) -> dict:
    """The ``config`` record of an imported run."""
    return {
        "source": str(folder.resolve()),
        "format": "t2i-compbench",
        "priors": [prior],
        "decoder": DECODER,
        "suites": [suite_name],
        "scorers": metric_names,
        "split": split,
        "tag": tag,
        "matched_by": "manifest" if (folder / "manifest.json").is_file() else "prompt",
        "vqa_result": str(vqa_path) if bvqa is not None else None,
    }


def _write_import_results(
    run_dir: Path,
    rows: list,
    folder: Path,
    prior: str,
    suite,
    split: str,
    tag: str,
    loaded: dict,
    config: dict,
    protocol: dict,
    timings: dict,
    clock: float,
    started: str,
) -> None:
    """Aggregate the imported run's rows and write its results."""
    from evalkit.environment import describe as describe_environment
    from evalkit.harness.runner import aggregate, prior_record, write_results

    info = {prior: prior_record(DECODER, source=str(folder.resolve()))}
    versions = {suite.name: suite.version(split)}
    higher = {name: scorer.higher_is_better for name, scorer in loaded.items()}
    results = aggregate(
        rows,
        versions,
        protocol,
        {prior: 0},
        split=split,
        priors_info=info,
        tag=tag,
        higher_is_better={**higher, BVQA_SCORER: True},
    )
    write_results(
        run_dir,
        rows,
        results,
        config=config,
        protocol=protocol,
        versions=versions,
        priors_info=info,
        timings=timings,
        wall_time_s=time.time() - clock,
        cache_stats={},
        started=started,
        environment={
            **describe_environment(None),
            "device": None,
            "decoder_dtype": None,
            "note": "images made elsewhere; this machine scored them",
        },
    )
