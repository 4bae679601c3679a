"""T2I-CompBench attribute-binding suites (color, shape, texture) from pinned, hash-checked files.

The prompt files are not part of the repository. ``benchmarks/suites/t2i-compbench.json`` pins
the source (Karine-Huang/T2I-CompBench, ``examples/dataset/``, one commit) and each file's
sha256 and size. The files are looked up in, in this order:

1. the ``prompts_dir`` argument (the CLI's ``--prompts-dir``);
2. the environment variable ``EVALKIT_PROMPTS_DIR``;
3. ``<cache>/prompts/t2i-compbench/<commit>``, where ``evalkit suites fetch t2i-compbench``
   puts them; ``<cache>`` is ``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``, else
   ``~/.cache/evalkit``.

Every read checks the file's sha256; a missing, altered, empty or unreadable file, or one that is
not a regular file (a symlink to a device, a FIFO) or holds over 10 MB, raises
:class:`~evalkit.errors.PromptFileError` saying which file and what to do.

Splits: ``val`` = the 200 prompts of ``<category>_val_seen.txt`` (``seen=True``) followed by the
100 of ``<category>_val_unseen.txt`` (``seen=False``); ``train`` = the 700 of
``<category>_train.txt`` (``seen=None``). Item ids: ``t2i-<category>-<split>-<index:04d>``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from evalkit.contracts import PromptItem, Suite
from evalkit.paths import cache_root
from evalkit.errors import PromptFileError
from evalkit.prompts_fetch import DEFAULT_TIMEOUT, FileSpec, fetch_files, read_regular_file

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFINITION_PATH = REPO_ROOT / "benchmarks" / "suites" / "t2i-compbench.json"
FAMILY = "t2i-compbench"
CATEGORIES = ("color", "shape", "texture")
ENV_PROMPTS_DIR = "EVALKIT_PROMPTS_DIR"

Definition = dict[str, Any]


# --------------------------------------------------------------------------- definition


@functools.lru_cache(maxsize=8)
def _load_definition_file(path: str) -> str:
    try:
        return read_regular_file(path).decode("utf-8")
    except OSError as e:
        raise PromptFileError(f"cannot read suite definition {path}: {e.strerror or e}") from e


def load_definition(definition: Definition | str | os.PathLike | None = None) -> Definition:
    """The suite definition: the committed JSON by default, or a dict / another JSON file (tests)."""
    if isinstance(definition, dict):
        return definition
    path = Path(definition) if definition is not None else DEFINITION_PATH
    return json.loads(_load_definition_file(str(path)))


def file_specs(definition: Definition | None = None) -> list[FileSpec]:
    """Every file of the definition, in its order."""
    d = load_definition(definition)
    return [FileSpec(name, info["sha256"], int(info["size"])) for name, info in d["files"].items()]


def source_base_url(definition: Definition | None = None) -> str:
    """The raw-file URL of the pinned folder (the definition's template without ``/{file}``)."""
    src = load_definition(definition)["source"]
    template = src["url_template"]
    if not template.endswith("/{file}"):
        raise ValueError(f"url_template must end with '/{{file}}': {template!r}")
    return template[: -len("/{file}")].format(repo=src["repository"], commit=src["commit"], folder=src["folder"])


def default_prompts_dir(definition: Definition | None = None) -> Path:
    """Where ``evalkit suites fetch t2i-compbench`` downloads to when nothing else is named."""
    return cache_root() / "prompts" / FAMILY / load_definition(definition)["source"]["commit"]


def resolve_prompts_dir(
    prompts_dir: str | os.PathLike | None = None, definition: Definition | None = None
) -> tuple[Path, str]:
    """The prompt directory and where it came from: argument, ``EVALKIT_PROMPTS_DIR``, or the cache."""
    if prompts_dir is not None and str(prompts_dir) != "":
        return Path(prompts_dir).expanduser(), "--prompts-dir"
    if os.environ.get(ENV_PROMPTS_DIR):
        return Path(os.environ[ENV_PROMPTS_DIR]).expanduser(), ENV_PROMPTS_DIR
    return default_prompts_dir(definition), "default download location"


# --------------------------------------------------------------------------- reading


def parse_prompts(text: str) -> list[str]:
    """One prompt per line; whitespace (``\\r`` included) stripped, empty lines skipped, order kept."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def _how_to_get(directory: Path, origin: str, definition: Definition) -> str:
    src = definition["source"]
    fetch = f"`evalkit suites fetch {FAMILY}" + (f" --prompts-dir {directory}`" if origin == "--prompts-dir" else "`")
    return (
        f"Download the files with {fetch}, or point --prompts-dir / {ENV_PROMPTS_DIR} at a directory holding "
        f"a copy of {src['repository']} {src['folder']}/ at commit {src['commit']}."
    )


def read_prompt_file(
    path: Path, spec: FileSpec, *, origin: str = "", definition: Definition | None = None
) -> list[tuple[int, str]]:
    """Verify ``path`` against ``spec`` and return its (line number, prompt) pairs."""
    definition = load_definition(definition)
    where = f" (prompt directory from {origin})" if origin else ""
    if not path.exists():
        raise PromptFileError(
            f"T2I-CompBench prompt file not found: {path}{where}. {_how_to_get(path.parent, origin, definition)}"
        )
    try:
        data = read_regular_file(path)  # a device or FIFO is refused, and at most 10 MB are read
    except OSError as e:
        raise PromptFileError(f"cannot read T2I-CompBench prompt file {path}{where}: {e.strerror or e}") from e
    if not data:
        raise PromptFileError(
            f"T2I-CompBench prompt file {path} is empty (0 bytes; expected {spec.size} bytes, sha256 {spec.sha256}). "
            f"Re-download it with `evalkit suites fetch {FAMILY} --force`."
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise PromptFileError(
            f"T2I-CompBench prompt file {path} is not the pinned version "
            f"(commit {definition['source']['commit']}): expected sha256 {spec.sha256} ({spec.size} bytes), "
            f"found sha256 {actual} ({len(data)} bytes). Restore it, or re-download it with "
            f"`evalkit suites fetch {FAMILY} --force`."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"T2I-CompBench prompt file {path} is not valid UTF-8 text: {e}") from e
    rows = [(n, line.strip()) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]  # = parse_prompts
    if not rows:
        raise PromptFileError(f"T2I-CompBench prompt file {path} holds no prompts (only whitespace).")
    return rows


# --------------------------------------------------------------------------- the suite


class T2ICompBenchSuite(Suite):
    """One T2I-CompBench attribute-binding category, read from the prompt directory."""

    splits = ("train", "val")
    default_scorers = ("blip-vqa",)  # T2I-CompBench's own metric (a local BLIP-VQA folder)

    def __init__(
        self,
        category: str,
        prompts_dir: str | os.PathLike | None = None,
        definition: Definition | str | os.PathLike | None = None,
    ):
        self.definition = load_definition(definition)
        if category not in self.definition["categories"]:
            raise ValueError(
                f"T2I-CompBench category {category!r} is not defined; known: {', '.join(self.definition['categories'])}"
            )
        self.category = category
        self.name = f"{FAMILY}-{category}"
        self.prompts_dir = prompts_dir  # resolved at read time, so building a suite touches no file
        self._cache: dict[str, list[PromptItem]] = {}

    # The files behind a split, as (file name, seen flag, expected count).
    def _parts(self, split: str) -> list[tuple[str, bool | None, int | None]]:
        parts = self.definition["splits"][split]["parts"]
        return [(p["file"].format(category=self.category), p["seen"], p.get("count")) for p in parts]

    def files(self, split: str | None = None) -> list[str]:
        """File names the split (default: every split) reads."""
        splits = [split] if split else list(self.splits)
        return [name for s in splits for name, _, _ in self._parts(s)]

    def _spec(self, name: str) -> FileSpec:
        info = self.definition["files"].get(name)
        if info is None:  # a definition bug, not a user error
            raise RuntimeError(f"{DEFINITION_PATH.name} has no sha256 for {name}")
        return FileSpec(name, info["sha256"], int(info["size"]))

    def _read(self, name: str) -> list[tuple[int, str]]:
        directory, origin = resolve_prompts_dir(self.prompts_dir, self.definition)
        return read_prompt_file(directory / name, self._spec(name), origin=origin, definition=self.definition)

    def load_items(self, split: str) -> list[PromptItem]:
        if split not in self._cache:
            items: list[PromptItem] = []
            for name, seen, count in self._parts(split):
                rows = self._read(name)
                if count is not None and len(rows) != count:
                    raise PromptFileError(f"{name} holds {len(rows)} prompts; the suite definition expects {count}")
                for line, prompt in rows:
                    items.append(
                        PromptItem(
                            prompt=prompt,
                            category=self.category,
                            split=split,
                            item_id=f"t2i-{self.category}-{split}-{len(items):04d}",
                            noun_phrases=None,
                            seen=seen,
                            meta={"file": name, "line": line},
                        )
                    )
            self._cache[split] = items
        return list(self._cache[split])

    def compare_val_reference(self) -> dict:
        """Compare the val split (seen + unseen files) with ``<category>_val.txt``.

        Returns ``{"same_sequence", "same_set", "only_in_split", "only_in_reference", "differing_positions"}``.
        """
        ref_name = self.definition["splits"]["val"]["reference_file"].format(category=self.category)
        split = [i.prompt for i in self.items("val")]
        ref = [p for _, p in self._read(ref_name)]
        return {
            "same_sequence": split == ref,
            "same_set": set(split) == set(ref),
            "only_in_split": sorted(set(split) - set(ref)),
            "only_in_reference": sorted(set(ref) - set(split)),
            "differing_positions": [i for i, (a, b) in enumerate(zip(split, ref)) if a != b]
            + list(range(min(len(split), len(ref)), max(len(split), len(ref)))),
        }

    def __repr__(self) -> str:
        return f"T2ICompBenchSuite({self.category!r}, prompts_dir={self.prompts_dir!r})"


def t2i_compbench_color(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchSuite:
    return T2ICompBenchSuite("color", prompts_dir)


def t2i_compbench_shape(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchSuite:
    return T2ICompBenchSuite("shape", prompts_dir)


def t2i_compbench_texture(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchSuite:
    return T2ICompBenchSuite("texture", prompts_dir)


# --------------------------------------------------------------------------- download


def fetch_t2i_compbench(
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    opener: Callable[[str, float], Any] | None = None,
    definition: Definition | str | os.PathLike | None = None,
) -> Path:
    """Download every T2I-CompBench file of the definition into ``dest`` and verify its sha256.

    ``dest`` defaults to the directory the suites read from (``EVALKIT_PROMPTS_DIR`` if set, else
    the default download location), so a plain fetch is what a plain run needs. Files already
    there with the pinned sha256 are skipped (unless ``force``); each download is checked before
    it is moved into place. ``base_url`` replaces the raw GitHub folder URL (a mirror, or a
    ``file://`` / ``http://127.0.0.1`` copy in tests). Returns the directory.
    """
    d = load_definition(definition)
    directory, _ = resolve_prompts_dir(dest, d)
    src = d["source"]
    hint = (
        f"Without network access, copy the files ({', '.join(d['files'])}) of {src['repository']} "
        f"{src['folder']}/ at commit {src['commit']} into a directory and set {ENV_PROMPTS_DIR} to it "
        f"(or pass --prompts-dir)."
    )
    return fetch_files(
        file_specs(d),
        base_url or source_base_url(d),
        directory,
        force=force,
        timeout=timeout,
        progress=progress,
        opener=opener,
        desc=FAMILY,
        offline_hint=hint,
    )


__all__ = [
    "T2ICompBenchSuite",
    "t2i_compbench_color",
    "t2i_compbench_shape",
    "t2i_compbench_texture",
    "fetch_t2i_compbench",
    "resolve_prompts_dir",
    "default_prompts_dir",
    "cache_root",
    "load_definition",
    "file_specs",
    "parse_prompts",
    "read_prompt_file",
]
