"""The embedding folder ``evalkit embed`` writes, and :class:`EmbeddingFolder`, which prior training reads.

Layout (clip-retrieval's, so embedding-reader and clip-retrieval tooling read it unchanged)::

    OUT/img_emb/img_emb_{i}.npy          (N_i, D) float16 image_embeds, RAW (not L2-normalised)
    OUT/metadata/metadata_{i}.parquet    columns key, caption; row j describes row j of img_emb_{i}.npy
    OUT/stats/stats_{i}.json             unit i: counts, skipped records, truncated captions, sha256 of its two files
    OUT/embed_config.json                what the run was started with (a resume must match it)
    OUT/embeddings.json                  the manifest, written once every unit is done

Two deliberate differences from clip-retrieval: the embeddings are the encoder's raw ``image_embeds``,
because the Karlo and Kandinsky 2.2 decoders (and the priors trained for them) consume raw embeddings —
a normalised folder would train a prior for the wrong target — and ``i`` is the *work unit* index
(shard or manifest chunk), so one process and eight processes write byte-for-byte the same file names.

Every file is written to a temporary name and renamed into place, and a unit's stats file is written
last: a stats file present means the unit is complete, which is all a resume needs to know.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from evalkit.errors import CorruptFileError, EvalkitError, WriteError

FORMAT = "evalkit-embeddings"
FORMAT_VERSION = 1
MANIFEST_NAME = "embeddings.json"
CONFIG_NAME = "embed_config.json"
TMP_MARK = ".tmp."
#: embedding width → the CLIP space it most likely comes from (recorded as a guess, for humans and checks)
EMBEDDING_SPACES = {768: "clip-vit-l-14", 1280: "clip-vit-bigg-14"}


class NotAnEmbeddingFolderError(EvalkitError, FileNotFoundError):
    """A path given as an embedding folder that ``evalkit embed`` did not make (or did not finish)."""


def emb_file(root: Path, index: int) -> Path:
    return Path(root) / "img_emb" / f"img_emb_{index}.npy"


def metadata_file(root: Path, index: int) -> Path:
    return Path(root) / "metadata" / f"metadata_{index}.parquet"


def stats_file(root: Path, index: int) -> Path:
    return Path(root) / "stats" / f"stats_{index}.json"


def file_sha256(path: Path) -> str:
    """sha256 of a regular file, read in chunks (evalkit's one file hash)."""
    from evalkit.prompts_fetch import sha256_file

    return sha256_file(path)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def _atomic(path: Path, write) -> None:
    """``write(tmp_path)``, then rename onto ``path``: a reader (or a resume) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path} ({error.strerror or error})") from error


def atomic_write_json(path: Path, value) -> None:
    _atomic(
        Path(path), lambda tmp: tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    )


def write_unit(
    root: Path,
    index: int,
    embeds: np.ndarray,
    keys: Sequence[str],
    captions: Sequence[str],
    stats: dict,
    before_stats=None,
) -> dict:
    """Write unit ``index``'s embeddings and metadata, then its stats file (the done marker); returns the stats.

    ``before_stats``: called between the data files and the stats file (a test hook simulating a kill).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    embeds = np.ascontiguousarray(embeds, dtype=np.float16)
    if embeds.ndim != 2 or len(embeds) != len(keys) or len(keys) != len(captions):
        raise ValueError(f"unit {index}: {embeds.shape} embeddings for {len(keys)} keys and {len(captions)} captions")

    def save_npy(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so np.save does not append ".npy" to the temporary name
            np.save(handle, embeds)

    table = pa.table({"key": pa.array(list(keys), pa.string()), "caption": pa.array(list(captions), pa.string())})
    files = {}
    for name, path, write in (
        ("img_emb", emb_file(root, index), save_npy),
        ("metadata", metadata_file(root, index), lambda tmp: pq.write_table(table, tmp)),
    ):
        _atomic(path, write)
        files[name] = {"path": path.relative_to(root).as_posix(), "rows": len(keys), "sha256": file_sha256(path)}
    if before_stats is not None:
        before_stats()
    stats = {**stats, "unit": index, "written": len(keys), "files": files}
    atomic_write_json(stats_file(root, index), stats)
    return stats


def read_unit_stats(root: Path, index: int) -> dict | None:
    """Unit ``index``'s stats, or None when the unit is not (completely) done."""
    path = stats_file(root, index)
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all((Path(root) / entry["path"]).is_file() for entry in stats.get("files", {}).values()):
        return None
    return stats


def remove_stray_tmp(root: Path) -> list[Path]:
    """Delete the temporary files of writes that were cut off (a killed run); returns what was removed."""
    removed = []
    for folder in (Path(root), Path(root) / "img_emb", Path(root) / "metadata", Path(root) / "stats"):
        if folder.is_dir():
            for path in folder.iterdir():
                if TMP_MARK in path.name and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


# --------------------------------------------------------------------------- reading


class EmbeddingFolder:
    """Random access to an embedding folder: ``len``, ``captions(indices)``, ``image_embeds(indices)``.

    Rows are numbered globally across units in unit order. Embeddings stay on disk (memory-mapped ``.npy``),
    so a folder of tens of millions of rows costs only what a batch gathers; captions are read per unit
    from parquet and a bounded number of units is kept in memory.
    """

    #: metadata units kept in memory at once (a training sampler touches every unit in every epoch)
    cached_units = 256

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest
        embeddings = [f for f in manifest["files"] if f["path"].startswith("img_emb/")]
        metadata = [f for f in manifest["files"] if f["path"].startswith("metadata/")]
        self._emb_paths = [self.root / f["path"] for f in embeddings]
        self._meta_paths = [self.root / f["path"] for f in metadata]
        rows = np.array([int(f["rows"]) for f in embeddings], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._mmaps: dict[int, np.ndarray] = {}
        self._columns: dict[tuple[int, str], list] = {}

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "EmbeddingFolder":
        """Open and validate ``path``: every file the manifest lists exists with its row count (``verify``:
        and its sha256), so a training run fails at start, not hours in, on a damaged folder."""
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            unfinished = (root / CONFIG_NAME).is_file() or (root / "stats").is_dir()
            hint = (
                " It looks like an unfinished run: finish it with `evalkit embed ... --resume`." if unfinished else ""
            )
            raise NotAnEmbeddingFolderError(
                f"{root} is not an embedding folder: it has no {MANIFEST_NAME}, which is made by `evalkit embed`.{hint}"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorruptFileError(
                f"{manifest_path} is damaged ({error}); rerun `evalkit embed ... --resume`"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise NotAnEmbeddingFolderError(
                f"{manifest_path} is not the manifest of an embedding folder made by `evalkit embed`"
            )
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise CorruptFileError(
                f"{manifest_path} has format version {manifest.get('format_version')}; this evalkit "
                f"reads up to {FORMAT_VERSION}: upgrade evalkit"
            )
        folder = cls(root, manifest)
        folder.check(verify=verify)
        return folder

    def check(self, verify: bool = False) -> None:
        import pyarrow.parquet as pq

        for entry in self.manifest["files"]:
            path = self.root / entry["path"]
            if not path.is_file():
                raise CorruptFileError(
                    f"{path} is missing from the embedding folder {self.root} (its manifest lists "
                    "it); rebuild the folder with `evalkit embed`"
                )
            if verify:
                actual = file_sha256(path)
                if actual != entry["sha256"]:
                    raise CorruptFileError(
                        f"{path}: sha256 mismatch ({actual[:12]}… on disk, {entry['sha256'][:12]}… in "
                        f"{MANIFEST_NAME}): the file was changed or damaged after `evalkit embed` "
                        "wrote it"
                    )
                continue
            try:
                rows = (
                    np.load(path, mmap_mode="r").shape[0] if path.suffix == ".npy" else pq.read_metadata(path).num_rows
                )
            except (OSError, ValueError) as error:
                raise CorruptFileError(f"{path} is damaged ({error})") from None
            if rows != int(entry["rows"]):
                raise CorruptFileError(
                    f"{path} has {rows} rows, its manifest says {entry['rows']}: the file was "
                    "changed or damaged after `evalkit embed` wrote it"
                )

    # -- shape

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def encoder(self) -> dict:
        return dict(self.manifest["encoder"])

    @property
    def counts(self) -> dict:
        return dict(self.manifest["counts"])

    @property
    def units(self) -> int:
        return len(self._emb_paths)

    def stats(self) -> list[dict]:
        """Every unit's stats file (counts, skipped records with reasons, truncated captions)."""
        return [
            json.loads((self.root / "stats" / f"stats_{self._unit_number(u)}.json").read_text(encoding="utf-8"))
            for u in range(self.units)
        ]

    def _unit_number(self, shard: int) -> int:
        return int(self._emb_paths[shard].stem.rsplit("_", 1)[1])

    # -- gathering

    def _locate(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, sort order, per-shard [start, stop) bounds into the sorted indices)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for an embedding folder of {len(self)} rows")
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], self._offsets)
        return idx, order, bounds

    def _mmap(self, shard: int) -> np.ndarray:
        if shard not in self._mmaps:
            self._mmaps[shard] = np.load(self._emb_paths[shard], mmap_mode="r")
        return self._mmaps[shard]

    def image_embeds(self, indices):
        """``(len(indices), D)`` float32 tensor of the rows ``indices`` (any order, repeats allowed)."""
        import torch

        idx, order, bounds = self._locate(indices)
        out = np.empty((len(idx), self.embedding_dim), np.float32)
        sorted_idx = idx[order]
        for shard in range(self.units):
            start, stop = bounds[shard], bounds[shard + 1]
            if stop > start:
                out[order[start:stop]] = self._mmap(shard)[sorted_idx[start:stop] - self._offsets[shard]]
        return torch.from_numpy(out)

    def _column(self, shard: int, name: str) -> list:
        cached = self._columns.get((shard, name))
        if cached is None:
            import pyarrow.parquet as pq

            if len(self._columns) >= self.cached_units:
                self._columns.pop(next(iter(self._columns)))
            cached = pq.read_table(self._meta_paths[shard], columns=[name]).column(name).to_pylist()
            self._columns[(shard, name)] = cached
        return cached

    def _gather_column(self, indices, name: str) -> list:
        idx, order, bounds = self._locate(indices)
        out: list = [None] * len(idx)
        sorted_idx = idx[order]
        for shard in range(self.units):
            start, stop = bounds[shard], bounds[shard + 1]
            if stop > start:
                column = self._column(shard, name)
                for position, row in zip(
                    order[start:stop].tolist(), (sorted_idx[start:stop] - self._offsets[shard]).tolist()
                ):
                    out[position] = column[row]
        return out

    def captions(self, indices) -> list[str]:
        return self._gather_column(indices, "caption")

    def keys(self, indices) -> list[str]:
        return self._gather_column(indices, "key")

    # -- whole-folder passes

    def iter_image_embeds(self, chunk_rows: int = 65_536) -> Iterator:
        """float32 tensors of at most ``chunk_rows`` rows each, all rows in order."""
        import torch

        for shard in range(self.units):
            data = self._mmap(shard)
            for start in range(0, len(data), chunk_rows):
                yield torch.from_numpy(np.asarray(data[start : start + chunk_rows], np.float32))

    def all_image_embeds(self):
        """Every row as one float32 tensor (for statistics on folders that fit in memory)."""
        import torch

        chunks = list(self.iter_image_embeds())
        return torch.cat(chunks) if chunks else torch.empty(0, self.embedding_dim)

    def embedding_stats(self, chunk_rows: int = 65_536):
        """Per-dimension ``(mean, std)`` over all rows, float32, accumulated in float64 chunks (Chan et al.'s
        pairwise update), e.g. the ``clip_mean`` / ``clip_std`` a diffusion prior standardises its target with."""
        import torch

        count, mean, m2 = 0, np.zeros(self.embedding_dim), np.zeros(self.embedding_dim)
        for chunk in self.iter_image_embeds(chunk_rows):
            block = chunk.numpy().astype(np.float64)
            n = len(block)
            block_mean = block.mean(0)
            block_m2 = ((block - block_mean) ** 2).sum(0)
            delta = block_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + block_m2 + delta**2 * (count * n / total)
            count = total
        if count < 2:
            raise ValueError(f"{self.root}: embedding statistics need at least 2 rows (it has {count})")
        std = np.sqrt(m2 / (count - 1))
        return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))
