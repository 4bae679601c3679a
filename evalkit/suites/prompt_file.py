"""A suite from the user's own prompt file: ``evalkit run --prompts my.txt --category color``.

Formats, chosen by the file's suffix (or ``format=``):

* **plain text** (any suffix but ``.jsonl`` / ``.csv``): one prompt per line. Surrounding whitespace
  (``\\r`` included) is stripped; blank lines and lines whose first non-blank character is ``#`` are
  skipped, so a prompt cannot start with ``#``. A UTF-8 byte-order mark is ignored.
* **JSON lines** (``.jsonl``): one object per line with a string ``prompt`` and optional ``category``
  (string), ``noun_phrases`` (a list of strings, or one string split on ``|``) and ``item_id``
  (string). Blank lines and ``#`` lines are skipped as in plain text.
* **CSV** (``.csv``): a header row naming a ``prompt`` column and optionally the same columns as
  JSON lines (``noun_phrases`` ``|``-separated). Empty rows are skipped; there are no comments.

Any other key or column is refused (a misspelt ``noun_phrases`` would otherwise be silently ignored).

Every file is read once, when the suite is built, with the checks of the T2I-CompBench reader: the
path must exist and be a regular file (after symlinks) of at most 10 MB
(:func:`evalkit.prompts_fetch.read_regular_file`), not empty, UTF-8, and hold at least one prompt.
Each problem raises :class:`~evalkit.errors.PromptFileError` naming the file (and line).

**Duplicates are refused.** A prompt that appears twice in one category would count twice in the
category mean and in the bootstrap over prompts; the error names every repeated prompt's line
numbers, so the user removes the copies (or gives them distinct categories on purpose).
Prompts are compared exactly after stripping.

Items: split ``val`` only (a user's file is an evaluation set); ids ``<category>-val-<index:04d>``,
the index counting every prompt of the file in order (an ``item_id`` column replaces it; ids must
be unique); ``seen=None``; ``noun_phrases`` from the file, else None: as for T2I-CompBench,
the scorer's splitter fills them in at scoring time and records which splitter it used.
``meta`` of each item holds ``{"file", "line"}``.

The category is free text: no scorer changes what it does by category (B-VQA asks "{phrase}?" for
every category; results are grouped by it), so any non-blank string without whitespace is taken,
e.g. ``color``, ``shape``, ``texture``, ``spatial``, ``non-spatial``, ``complex``.

:meth:`Suite.version` hashes the parsed prompts (comments, blank lines and whitespace do not
count); custom item ids are hashed too, since runs are paired by item id. :attr:`PromptFileSuite.sha256`
is the hash of the file's bytes, for the run to print; :attr:`PromptFileSuite.meta` has it with the
path, size and format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

from evalkit.contracts import PromptItem, Suite, content_hash
from evalkit.errors import PromptFileError, SettingError
from evalkit.prompts_fetch import MAX_PROMPT_FILE_BYTES, read_regular_file

FORMATS = ("text", "jsonl", "csv")
COLUMNS = ("prompt", "category", "noun_phrases", "item_id")
PHRASE_SEPARATOR = "|"
NAME_PREFIX = "prompts-"
_BOM = "\ufeff"


# --------------------------------------------------------------------------- shared file checks


def read_prompt_bytes(
    path: str | os.PathLike,
    *,
    what: str = "prompt file",
    where: str = "",
    missing_hint: str = "",
    empty_hint: str = "",
    limit: int = MAX_PROMPT_FILE_BYTES,
) -> bytes:
    """The bytes of the prompt file ``path``: it must exist, be a regular file of at most ``limit`` bytes
    and not be empty. ``what`` names the file in messages, ``where`` follows the path (e.g. where the
    folder came from), the hints end the missing / empty messages. Raises :class:`PromptFileError`."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"{what} not found: {path}{where}." + (f" {missing_hint}" if missing_hint else ""))
    try:
        data = read_regular_file(path, limit)  # a folder, device or FIFO is refused; at most limit + 1 bytes read
    except OSError as e:
        raise PromptFileError(f"cannot read {what} {path}{where}: {e.strerror or e}") from e
    if not data:
        raise PromptFileError(f"{what} {path} is empty (0 bytes)." + (f" {empty_hint}" if empty_hint else ""))
    return data


def decode_prompt_text(data: bytes, path: str | os.PathLike, *, what: str = "prompt file") -> str:
    """``data`` as UTF-8 text, or a :class:`PromptFileError` naming ``path`` and the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{what} {path} is not valid UTF-8 text: {e}") from e


# --------------------------------------------------------------------------- parsing


def file_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``format`` if given, else from the suffix: ``.jsonl`` → jsonl, ``.csv`` → csv, anything else → text."""
    if format is not None:
        if format not in FORMATS:
            raise SettingError(f"unknown prompt file format {format!r}; expected one of {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        raise PromptFileError(
            f"prompt file {path}: .json is not read; write one JSON object per line "
            f"(.jsonl) or one prompt per line (.txt)"
        )
    return {".jsonl": "jsonl", ".csv": "csv"}.get(suffix, "text")


def _lines(text: str):
    """(line number, stripped line) of non-blank, non-comment lines."""
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield n, line


def _phrases(value: Any, path, line: int) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(PHRASE_SEPARATOR)
    elif isinstance(value, list) and all(isinstance(p, str) for p in value):
        parts = value
    else:
        raise PromptFileError(
            f"prompt file {path} line {line}: noun_phrases must be a list of strings or a "
            f"'{PHRASE_SEPARATOR}'-separated string, not {type(value).__name__}"
        )
    phrases = tuple(p.strip() for p in parts if p.strip())
    if not phrases and (value if isinstance(value, list) else value.strip()):
        raise PromptFileError(f"prompt file {path} line {line}: noun_phrases {value!r} names no phrase")
    return phrases or None


def _record(fields: dict, path, line: int) -> dict:
    """Check one JSON-lines / CSV record; return {prompt, category, noun_phrases, item_id, line}."""
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise PromptFileError(
            f"prompt file {path} line {line}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(COLUMNS)}"
        )
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(f"prompt file {path} line {line}: no prompt (a non-empty string 'prompt' is required)")
    out = {
        "prompt": prompt.strip(),
        "line": line,
        "category": None,
        "item_id": None,
        "noun_phrases": _phrases(fields.get("noun_phrases"), path, line),
    }
    for key in ("category", "item_id"):
        value = fields.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str):
            raise PromptFileError(f"prompt file {path} line {line}: {key} must be a string, not {type(value).__name__}")
        out[key] = value.strip()
    return out


def parse_text(text: str, path="<text>") -> list[dict]:
    return [{"prompt": p, "line": n, "category": None, "item_id": None, "noun_phrases": None} for n, p in _lines(text)]


def parse_jsonl(text: str, path="<jsonl>") -> list[dict]:
    records = []
    for n, line in _lines(text):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"prompt file {path} line {n} is not valid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise PromptFileError(f"prompt file {path} line {n}: expected a JSON object, found {type(obj).__name__}")
        records.append(_record(obj, path, n))
    return records


def parse_csv(text: str, path="<csv>") -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records, end = [], 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:
                    raise PromptFileError(
                        f"prompt file {path} line {start}: column(s) {', '.join(repeated)} appear twice in the header"
                    )
                if "prompt" not in header:
                    raise PromptFileError(
                        f"prompt file {path}: the header (line {start}) has no 'prompt' column; "
                        f"it has {', '.join(header)}"
                    )
                continue
            if len(row) != len(header):
                raise PromptFileError(
                    f"prompt file {path} line {start}: {len(row)} fields, the header has {len(header)}"
                )
            records.append(_record(dict(zip(header, row)), path, start))
    except csv.Error as e:
        raise PromptFileError(f"prompt file {path} line {reader.line_num}: {e}") from e
    return records


PARSERS = {"text": parse_text, "jsonl": parse_jsonl, "csv": parse_csv}


def check_category(category: Any, where: str = "category", error: type[Exception] = SettingError) -> str:
    """A usable category: a non-blank string without whitespace (it is part of item ids and result keys)."""
    if not isinstance(category, str) or not category.strip() or any(c.isspace() for c in category.strip()):
        raise error(
            f"{where} must be a non-blank word without spaces (e.g. color, spatial, non-spatial), not {category!r}"
        )
    return category.strip()


# --------------------------------------------------------------------------- the suite


class PromptFileSuite(Suite):
    """The prompts of one user file, as a ``val``-only suite (see the module docstring)."""

    splits = ("val",)
    default_scorers = ("blip-vqa",)  # as T2I-CompBench's suites

    def __init__(self, path: str | os.PathLike, category: str, name: str | None = None, *, format: str | None = None):
        self.path = Path(path).expanduser()
        self.category = check_category(category)
        if name is not None and not str(name).strip():
            raise SettingError("suite name must not be blank")
        self.name = str(name).strip() if name is not None else f"{NAME_PREFIX}{self.path.stem}"
        self.format = file_format(self.path, format)
        data = read_prompt_bytes(self.path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        text = decode_prompt_text(data, self.path)
        records = PARSERS[self.format](text[1:] if text.startswith(_BOM) else text, self.path)
        if not records:
            raise PromptFileError(f"prompt file {self.path} holds no prompts (only blank lines, comments or a header)")
        self._items = self._build(records)
        self._custom_ids = any(r["item_id"] is not None for r in records)
        self.meta = {
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": len(data),
            "format": self.format,
            "prompts": len(self._items),
        }

    def _build(self, records: list[dict]) -> list[PromptItem]:
        items, lines_of, id_lines = [], {}, {}
        for index, r in enumerate(records):
            category = (
                check_category(r["category"], f"prompt file {self.path} line {r['line']}: category", PromptFileError)
                if r["category"] is not None
                else self.category
            )
            item_id = r["item_id"] or f"{category}-val-{index:04d}"
            lines_of.setdefault((category, r["prompt"]), []).append(r["line"])
            id_lines.setdefault(item_id, []).append(r["line"])
            items.append(
                PromptItem(
                    prompt=r["prompt"],
                    category=category,
                    split="val",
                    item_id=item_id,
                    noun_phrases=r["noun_phrases"],
                    seen=None,
                    meta={"file": self.path.name, "line": r["line"]},
                )
            )
        duplicates = [(key, lines) for key, lines in lines_of.items() if len(lines) > 1]
        if duplicates:
            shown = "; ".join(
                f"{prompt!r} ({category}) on lines {', '.join(map(str, lines))}"
                for (category, prompt), lines in duplicates[:10]
            )
            more = f"; and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
            raise PromptFileError(
                f"prompt file {self.path} repeats {len(duplicates)} prompt(s): {shown}{more}. "
                f"A repeated prompt would count twice in its category's score: keep one copy."
            )
        repeated_ids = [(i, lines) for i, lines in id_lines.items() if len(lines) > 1]
        if repeated_ids:
            shown = "; ".join(f"{i!r} on lines {', '.join(map(str, lines))}" for i, lines in repeated_ids[:10])
            raise PromptFileError(f"prompt file {self.path} repeats item ids: {shown}")
        return items

    def load_items(self, split: str) -> list[PromptItem]:
        return list(self._items)

    def version(self, split: str = "val") -> str:
        base = super().version(split)
        if not self._custom_ids:
            return base
        return content_hash([base, [i.item_id for i in self.items(split)]])

    def __repr__(self) -> str:
        return f"PromptFileSuite({str(self.path)!r}, {self.category!r}, name={self.name!r})"


def prompt_file_suite(
    path: str | os.PathLike, category: str, name: str | None = None, *, format: str | None = None
) -> PromptFileSuite:
    """The suite of the prompt file ``path`` (read now); ``name`` defaults to ``prompts-<file stem>``."""
    return PromptFileSuite(path, category, name, format=format)


__all__ = [
    "PromptFileSuite",
    "prompt_file_suite",
    "read_prompt_bytes",
    "decode_prompt_text",
    "file_format",
    "check_category",
    "parse_text",
    "parse_jsonl",
    "parse_csv",
    "FORMATS",
    "COLUMNS",
]
