"""Image–caption datasets as *work units*: the two shapes real data comes in, read the same way.

* **webdataset / img2dataset shards**: ``shards/*.tar`` or ``shards/{00000..00099}.tar`` (brace patterns are
  expanded by webdataset's own :func:`webdataset.shardlists.expand_urls`, so a spec that works with
  ``wds.WebDataset`` works here). Each tar holds ``{key}.jpg|jpeg|png|webp`` + ``{key}.txt`` (+ ``{key}.json``)
  and is streamed with webdataset's tar iterators, never loaded whole. One unit = one shard.
* **a manifest** (CSV, TSV, parquet, JSONL) with an image-path column and a caption column, or a folder
  holding one. Image paths are relative to the manifest's folder. One unit = ``rows_per_shard`` rows, so a
  50 M-row manifest splits across processes just like 5,000 shards.

Units, not records, are what processes and DataLoader workers divide between them (unit ``i`` goes to rank
``i % world_size``): each unit is embedded in the same batches whoever runs it, so the output files do not
depend on how many processes or workers made them, and a unit is the grain of resuming.

Real datasets always hold some broken records (a truncated download, an empty alt-text). They are skipped
and counted with a reason (:data:`REASONS`) rather than allowed to stop a week-long job mid-shard; a dataset
where *many* are broken is a wrong spec or a broken download, which :func:`check_bad_fraction` turns into
an error (:class:`BadRecordsError`, exit code 2) that names example keys.
"""

from __future__ import annotations

import abc
import glob
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence

from evalkit.errors import EvalkitError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: column names tried, in order, when --image-column is not given (a ``url`` column is remote: not read)
IMAGE_COLUMNS = ("image", "image_path", "path", "filepath", "file_name")
#: column names tried, in order, when --caption-column is not given
CAPTION_COLUMNS = ("caption", "text", "TEXT", "prompt")
MANIFEST_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl"}
#: why a record was skipped (one reason per record, checked in this order)
REASONS = ("missing image", "missing caption", "empty caption", "undecodable image", "too small")
DEFAULT_ROWS_PER_SHARD = 10_000
#: the bad-record check runs early once this many records have been seen (a wrong spec fails in minutes)
EARLY_CHECK_RECORDS = 1_000


class DataSourceError(EvalkitError, ValueError):
    """A data spec that names nothing readable, or a manifest whose columns cannot be matched."""


class BadRecordsError(EvalkitError, ValueError):
    """More records are broken than ``--max-bad-fraction`` allows: the data or the spec is likely wrong."""


@dataclass(frozen=True)
class RawRecord:
    """One record as stored: encoded image bytes (None when absent) and the caption (None when absent)."""

    key: str
    caption: str | None
    image: bytes | None


@dataclass(frozen=True)
class Unit:
    """A work unit: its global index (the output files' number) and a human-readable name."""

    index: int
    name: str


class Source(abc.ABC):
    """A dataset split into units. Subclasses implement :meth:`records`; everything else is shared."""

    kind = "?"

    def __init__(self, spec: str, units: list[Unit]):
        self.spec = spec
        self.units = units

    def __len__(self) -> int:
        return len(self.units)

    @abc.abstractmethod
    def records(self, unit: int) -> Iterator[RawRecord]:
        """The raw records of unit ``unit``, in the unit's own order (streamed)."""

    def assigned(
        self, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1, skip: Sequence[int] = ()
    ) -> list[int]:
        """The unit indices process ``rank`` (and, inside it, DataLoader ``worker``) handles.

        Ranks take units round-robin by *global* index, so which files exist never depends on the process
        count; workers then take the rank's remaining units round-robin. ``skip``: units already done.
        """
        done = set(skip)
        mine = [u.index for u in self.units if u.index % world_size == rank and u.index not in done]
        return mine[worker::num_workers]

    def describe(self) -> dict:
        """What the output manifest records about the data (enough to refuse resuming with other data)."""
        return {"spec": self.spec, "kind": self.kind, "units": len(self.units)}


# --------------------------------------------------------------------------- webdataset shards


class ShardSource(Source):
    """webdataset / img2dataset tar shards, one unit each, streamed through webdataset's tar iterators."""

    kind = "webdataset"

    def __init__(self, spec: str, shards: list[Path]):
        super().__init__(spec, [Unit(i, str(p)) for i, p in enumerate(shards)])
        self.shards = shards

    def records(self, unit: int) -> Iterator[RawRecord]:
        import tarfile

        import webdataset as wds

        from evalkit.errors import CorruptFileError

        shard = self.shards[unit]
        try:
            for sample in wds.tarfile_samples([{"url": str(shard)}]):
                yield _shard_record(sample)
        except (OSError, EOFError, ValueError, tarfile.TarError) as error:
            raise CorruptFileError(
                f"shard {shard} cannot be read as a tar file ({type(error).__name__}: {error}); "
                "re-download or remove it (finished shards are kept)"
            ) from None

    def describe(self) -> dict:
        return {
            **super().describe(),
            "shards": [str(p) for p in self.shards[:3]] + (["…"] if len(self.shards) > 3 else []),
        }


def _shard_record(sample: dict) -> RawRecord:
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    caption = None
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", errors="replace")
    elif "json" in sample:  # some writers keep the caption only in the metadata
        import json

        try:
            value = json.loads(sample["json"]).get("caption")
            caption = None if value is None else str(value)
        except (ValueError, AttributeError):
            caption = None
    return RawRecord(str(sample["__key__"]), caption, image)


def _expand_shards(spec: str) -> list[Path]:
    """Brace patterns through webdataset's expansion, then shell globs; missing shards are an error."""
    from webdataset.shardlists import expand_urls

    paths: list[Path] = []
    missing: list[str] = []
    for pattern in expand_urls(spec):
        if glob.has_magic(pattern):
            found = sorted(glob.glob(os.path.expanduser(pattern)))
            if not found:
                missing.append(pattern)
            paths += [Path(p) for p in found]
        else:
            path = Path(os.path.expanduser(pattern))
            (paths.append(path) if path.is_file() else missing.append(pattern))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataSourceError(f"--data {spec}: no such shard file {', '.join(missing[:3])}{more}")
    if not paths:
        raise DataSourceError(f"--data {spec}: the pattern matches no shard")
    return paths


# --------------------------------------------------------------------------- manifests


class ManifestSource(Source):
    """A CSV / TSV / parquet / JSONL table of image paths and captions, cut into ``rows_per_shard``-row units."""

    kind = "manifest"

    def __init__(
        self,
        spec: str,
        manifest: Path,
        image_column: str | None = None,
        caption_column: str | None = None,
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    ):
        if rows_per_shard < 1:
            raise DataSourceError(f"--rows-per-shard must be at least 1 (got {rows_per_shard})")
        self.manifest = manifest
        self.base = manifest.parent
        table = _read_table(manifest)
        columns = list(table.column_names)
        self.image_column = _pick_column(manifest, columns, image_column, IMAGE_COLUMNS, "image", "--image-column")
        self.caption_column = _pick_column(
            manifest, columns, caption_column, CAPTION_COLUMNS, "caption", "--caption-column"
        )
        self.key_column = "key" if "key" in columns and "key" not in (self.image_column, self.caption_column) else None
        keep = [self.image_column, self.caption_column] + ([self.key_column] if self.key_column else [])
        self.table = table.select(keep)
        self.rows = self.table.num_rows
        self.rows_per_shard = int(rows_per_shard)
        count = (self.rows + self.rows_per_shard - 1) // self.rows_per_shard
        units = [
            Unit(i, f"{manifest.name}[{i * self.rows_per_shard}:{min((i + 1) * self.rows_per_shard, self.rows)}]")
            for i in range(count)
        ]
        super().__init__(spec, units)

    def records(self, unit: int) -> Iterator[RawRecord]:
        start = unit * self.rows_per_shard
        chunk = self.table.slice(start, self.rows_per_shard)
        paths = chunk.column(self.image_column).to_pylist()
        captions = chunk.column(self.caption_column).to_pylist()
        keys = chunk.column(self.key_column).to_pylist() if self.key_column else [None] * len(paths)
        for path, caption, key in zip(paths, captions, keys):
            name = "" if path is None else str(path)
            if key is None:
                key = _key_of(name, self.base) if name else f"row-{start}"
            start += 1
            data = None
            if name:
                file = Path(name) if os.path.isabs(name) else self.base / name
                try:
                    data = file.read_bytes()
                except OSError:
                    data = None
            yield RawRecord(str(key), None if caption is None else str(caption), data)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "manifest": str(self.manifest),
            "rows": self.rows,
            "rows_per_shard": self.rows_per_shard,
            "image_column": self.image_column,
            "caption_column": self.caption_column,
            "key_column": self.key_column,
        }


def _key_of(path: str, base: Path) -> str:
    """The record key of a manifest row: its image path without extension, relative to the manifest, so the
    same images give the same keys as their webdataset shards (``{key}.jpg``)."""
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute():
        try:
            pure = PurePosixPath(Path(path).resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            pure = PurePosixPath(*pure.parts[1:])
    return str(pure.with_suffix("")) if pure.suffix else str(pure)


def _read_table(manifest: Path):
    kind = MANIFEST_FORMATS.get(manifest.suffix.lower())
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(manifest)
        if kind == "jsonl":
            import pyarrow.json as pj

            return pj.read_json(manifest)
        import pyarrow.csv as pc

        # TSV captions (CC3M, CC12M) are unquoted and may hold '"': only CSV gets quote handling
        parse = pc.ParseOptions(delimiter="\t", quote_char=False) if kind == "tsv" else pc.ParseOptions()
        # every column as text: type inference would turn key "000004" into the integer 4
        with pc.open_csv(manifest, parse_options=parse) as reader:
            names = reader.schema.names
        import pyarrow as pa

        convert = pc.ConvertOptions(column_types={name: pa.string() for name in names})
        return pc.read_csv(manifest, parse_options=parse, convert_options=convert)
    except (OSError, ValueError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise DataSourceError(
            f"--data {manifest}: cannot read it as {kind} ({type(error).__name__}: {error})"
        ) from None


def _pick_column(
    manifest: Path, columns: list[str], wanted: str | None, candidates: Sequence[str], what: str, flag: str
) -> str:
    listing = ", ".join(columns)
    if wanted is not None:
        if wanted not in columns:
            raise DataSourceError(f"{flag} {wanted!r}: {manifest} has no such column; its columns: {listing}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    hint = ""
    if what == "image" and "url" in lower:
        hint = (
            " It has a 'url' column: download the images first (img2dataset writes webdataset shards, "
            "which evalkit reads directly)."
        )
    raise DataSourceError(
        f"{manifest}: no {what} column found (tried {', '.join(candidates)}); its columns: "
        f"{listing}. Name it with {flag}.{hint}"
    )


# --------------------------------------------------------------------------- opening a spec


def open_source(
    spec: str | os.PathLike,
    image_column: str | None = None,
    caption_column: str | None = None,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
) -> Source:
    """The dataset ``spec`` names: a shard pattern (glob or ``{a..b}``), one ``.tar``, a folder of ``.tar``
    shards, a manifest file, or a folder holding exactly one manifest."""
    text = str(spec)
    path = Path(os.path.expanduser(text))
    if re.search(r"\{[^}]*\.\.[^}]*\}", text) or "::" in text or glob.has_magic(text):
        shards = _expand_shards(text)
        return _check_shards(text, shards)
    if path.is_file():
        if path.suffix.lower() == ".tar":
            return ShardSource(text, [path])
        if path.suffix.lower() in MANIFEST_FORMATS:
            return ManifestSource(text, path, image_column, caption_column, rows_per_shard)
        raise DataSourceError(f"--data {text}: not a shard (.tar) or a manifest ({', '.join(MANIFEST_FORMATS)})")
    if path.is_dir():
        manifests = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_FORMATS)
        tars = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".tar")
        if len(manifests) == 1:
            return ManifestSource(text, manifests[0], image_column, caption_column, rows_per_shard)
        if len(manifests) > 1:
            raise DataSourceError(
                f"--data {text}: the folder holds several manifests ({', '.join(p.name for p in manifests)});"
                " name the one to read"
            )
        if tars:
            return ShardSource(text, tars)
        raise DataSourceError(
            f"--data {text}: the folder holds no manifest ({', '.join(MANIFEST_FORMATS)}) and no .tar shards"
        )
    raise DataSourceError(
        f"--data {text}: no such file or folder (expected webdataset shards such as shards/*.tar "
        "or shards/{00000..00099}.tar, a manifest file, or a folder holding one)"
    )


def _check_shards(spec: str, shards: list[Path]) -> ShardSource:
    others = [p for p in shards if p.suffix.lower() != ".tar"]
    if others:
        raise DataSourceError(f"--data {spec}: matches files that are not .tar shards ({others[0]})")
    return ShardSource(spec, shards)


# --------------------------------------------------------------------------- records → batches


def caption_problem(caption: str | None) -> str | None:
    if caption is None:
        return "missing caption"
    if not caption.strip():
        return "empty caption"
    return None


def decode_image(data: bytes | None, min_size: int = 0):
    """``(RGB PIL image, None)`` or ``(None, reason)``.

    Pixels are loaded here, not lazily, so a truncated JPEG fails now (PIL only notices at load time) and is
    counted, instead of failing inside the image processor. ``min_size``: both sides at least this many pixels.
    """
    if data is None:
        return None, "missing image"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as handle:
            handle.load()
            image = handle.convert("RGB")
    except Exception:  # noqa: BLE001 - any decoder failure (truncated, unidentified, bomb) is one bad record
        return None, "undecodable image"
    if min_size and min(image.size) < min_size:
        return None, "too small"
    return image, None


def truncated_count(tokenizer, captions: Sequence[str]) -> int:
    """How many captions ``tokenizer(..., truncation=True, max_length=model_max_length)`` would cut short."""
    if tokenizer is None or not captions:
        return 0
    limit = int(tokenizer.model_max_length)
    ids = tokenizer(list(captions), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return sum(len(row) > limit for row in ids)


def iter_unit_batches(
    source: Source, units: Sequence[int], batch_size: int, preprocess: Callable, min_size: int = 0, tokenizer=None
) -> Iterator[dict]:
    """Batches of each unit in turn, every unit ending with a ``done`` item.

    Each item carries the records consumed since the previous item of its unit (``seen``) and the ones
    skipped among them (``skipped``: ``{key, reason}``), so a consumer interleaving several workers keeps
    exact per-unit counts. A batch never spans two units: a unit embeds identically wherever it runs.
    """
    for unit in units:
        seen, skipped, pending = 0, [], []

        def item(done: bool) -> dict:
            keys = [k for k, _, _ in pending]
            captions = [c for _, c, _ in pending]
            pixels = preprocess([im for _, _, im in pending]) if pending else None
            return {
                "unit": unit,
                "done": done,
                "seen": seen,
                "skipped": list(skipped),
                "keys": keys,
                "captions": captions,
                "pixel_values": pixels,
                "truncated": truncated_count(tokenizer, captions),
            }

        for record in source.records(unit):
            seen += 1
            reason = "missing image" if record.image is None else caption_problem(record.caption)
            image = None
            if reason is None:
                image, reason = decode_image(record.image, min_size)
            if reason is not None:
                skipped.append({"key": record.key, "reason": reason})
                continue
            pending.append((record.key, record.caption, image))
            if len(pending) == batch_size:
                yield item(False)
                seen, skipped, pending = 0, [], []
        yield item(True)


# --------------------------------------------------------------------------- the bad-record check


def check_bad_fraction(seen: int, skipped: Sequence[dict], max_bad_fraction: float, where: str = "") -> None:
    """Raise :class:`BadRecordsError` when more than ``max_bad_fraction`` of ``seen`` records were skipped."""
    if seen <= 0 or len(skipped) <= max_bad_fraction * seen:
        return
    counts: dict[str, int] = {}
    for entry in skipped:
        counts[entry["reason"]] = counts.get(entry["reason"], 0) + 1
    by_reason = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    examples = "; ".join(f"{e['key']} ({e['reason']})" for e in list(skipped)[:5])
    raise BadRecordsError(
        f"{len(skipped)} of {seen} records ({100 * len(skipped) / seen:.1f} %) are bad, more than --max-bad-fraction "
        f"{max_bad_fraction:g} allows: {by_reason}. Examples: {examples}. Check the data spec and the columns; "
        f"if the data is right, rerun with a higher --max-bad-fraction and --resume{where}."
    )
