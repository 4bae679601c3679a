"""T2I-CompBench relation suites (spatial, non-spatial, complex) from pinned, hash-checked files.

``benchmarks/suites/t2i-compbench-relations.json`` pins the files (sha256 and size) at the commit of the
attribute suites' definition (``t2i-compbench.json``, Karine-Huang/T2I-CompBench ``examples/dataset/``), and
the files are found and checked exactly as those suites' (:mod:`evalkit.suites.t2i_compbench`: ``--prompts-dir``,
``$EVALKIT_PROMPTS_DIR``, the download location; ``evalkit suites fetch t2i-compbench`` downloads both
definitions' files).

Splits: ``val`` = the 300 prompts of ``<stem>_val.txt``, ``train`` = the 700 of ``<stem>_train.txt``, with stem
``spatial``, ``non_spatial`` or ``complex``. There is no seen/unseen split: ``seen=None``. Item ids:
``t2i-<category>-<split>-<index:04d>`` (categories ``spatial``, ``non-spatial``, ``complex``); ``meta`` holds
``{"file", "line"}``.

Complex items also carry ``meta["complex_type"]``: which of T2I-CompBench's 3-in-1 parts they add up
(:mod:`evalkit.scorers.t2i_complex`). ``3_in_1.py`` (l. 44–69) decides it from ``complex_<split>_spatial.txt``
and ``complex_<split>_action.txt``: a prompt whose text before the first "." lowercased is in the spatial list
is ``spatial``, else in the action list ``action``, else ``spatial-action`` — on the pinned files exactly the
prompts of ``complex_<split>_spatialaction.txt`` (val 58 / 212 / 30, train 130 / 504 / 66). The type files are
pinned and read like the prompt files, and the types enter the complex suite's :meth:`version`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

from evalkit.contracts import PromptItem, Suite, content_hash
from evalkit.errors import PromptFileError
from evalkit.prompts_fetch import DEFAULT_TIMEOUT, FileSpec, fetch_files
from evalkit.suites import t2i_compbench as attributes
from evalkit.suites.t2i_compbench import Definition, file_specs, load_definition, read_prompt_file, resolve_prompts_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFINITION_PATH = REPO_ROOT / "benchmarks" / "suites" / "t2i-compbench-relations.json"
CATEGORIES = ("spatial", "non-spatial", "complex")
COMPLEX_TYPES = ("spatial", "action", "spatial-action")


def load_relations_definition(definition: Definition | str | os.PathLike | None = None) -> Definition:
    """The relation suites' definition: the committed JSON by default, or a dict / another JSON file (tests)."""
    return load_definition(definition if definition is not None else DEFINITION_PATH)


def type_key(prompt: str) -> str:
    """What ``3_in_1.py`` compares (l. 47–53): the text before the first "." lowercased (lines are read in
    text mode, so ``\\r\\n`` is already ``\\n``, then ``strip('\\n')``)."""
    return prompt.split(".")[0].lower()


class T2ICompBenchRelationSuite(Suite):
    """One T2I-CompBench relation category (spatial, non-spatial or complex), read from the prompt directory."""

    splits = ("train", "val")

    def __init__(
        self,
        category: str,
        prompts_dir: str | os.PathLike | None = None,
        definition: Definition | str | os.PathLike | None = None,
    ):
        self.definition = load_relations_definition(definition)
        if category not in self.definition["categories"]:
            raise ValueError(
                f"T2I-CompBench relation category {category!r} is not defined; known: "
                f"{', '.join(self.definition['categories'])}"
            )
        self.category = category
        self.name = f"{attributes.FAMILY}-{category}"
        self.info = self.definition["categories"][category]
        self.default_scorers = tuple(self.info.get("default_scorers", ()))
        self.prompts_dir = prompts_dir  # resolved at read time, so building a suite touches no file
        self._cache: dict[str, list[PromptItem]] = {}

    def _name(self, template: str, split: str) -> str:
        return template.format(stem=self.info["stem"], split=split)

    def files(self, split: str | None = None) -> list[str]:
        """File names the split (default: every split) reads: the prompt file, then (complex) the type files."""
        out = []
        for s in [split] if split else list(self.splits):
            out.append(self._name(self.definition["splits"][s]["file"], s))
            out += [self._name(t, s) for t in self.info.get("types", {}).values()]
        return out

    def _read(self, name: str) -> list[tuple[int, str]]:
        info = self.definition["files"].get(name)
        if info is None:  # a definition bug, not a user error
            raise RuntimeError(f"{DEFINITION_PATH.name} has no sha256 for {name}")
        directory, origin = resolve_prompts_dir(self.prompts_dir, self.definition)
        spec = FileSpec(name, info["sha256"], int(info["size"]))
        return read_prompt_file(directory / name, spec, origin=origin, definition=self.definition)

    def complex_types(self, split: str, prompts: list[str]) -> list[str]:
        """Each prompt's 3-in-1 type (module docstring)."""
        types = self.info["types"]
        spatial = {type_key(p) for _, p in self._read(self._name(types["spatial"], split))}
        action = {type_key(p) for _, p in self._read(self._name(types["action"], split))}
        return [
            "spatial" if type_key(p) in spatial else "action" if type_key(p) in action else "spatial-action"
            for p in prompts
        ]

    def load_items(self, split: str) -> list[PromptItem]:
        if split not in self._cache:
            part = self.definition["splits"][split]
            name = self._name(part["file"], split)
            rows = self._read(name)
            if part.get("count") is not None and len(rows) != part["count"]:
                raise PromptFileError(f"{name} holds {len(rows)} prompts; the suite definition expects {part['count']}")
            kinds = self.complex_types(split, [p for _, p in rows]) if "types" in self.info else None
            items = []
            for index, (line, prompt) in enumerate(rows):
                meta: dict[str, Any] = {"file": name, "line": line}
                if kinds is not None:
                    meta["complex_type"] = kinds[index]
                items.append(
                    PromptItem(
                        prompt=prompt,
                        category=self.category,
                        split=split,
                        item_id=f"t2i-{self.category}-{split}-{index:04d}",
                        noun_phrases=None,
                        seen=None,
                        meta=meta,
                    )
                )
            self._cache[split] = items
        return list(self._cache[split])

    def version(self, split: str = "val") -> str:
        """:meth:`Suite.version`, with the complex types (they choose what a complex item's score adds up)."""
        if "types" not in self.info:
            return super().version(split)
        rows = [
            (i.prompt, i.category, i.noun_phrases, i.seen, i.swapped_prompt, i.meta["complex_type"])
            for i in self.items(split)
        ]
        return content_hash([self.name, split, rows])

    def __repr__(self) -> str:
        return f"T2ICompBenchRelationSuite({self.category!r}, prompts_dir={self.prompts_dir!r})"


def t2i_compbench_spatial(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchRelationSuite:
    return T2ICompBenchRelationSuite("spatial", prompts_dir)


def t2i_compbench_non_spatial(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchRelationSuite:
    return T2ICompBenchRelationSuite("non-spatial", prompts_dir)


def t2i_compbench_complex(prompts_dir: str | os.PathLike | None = None) -> T2ICompBenchRelationSuite:
    return T2ICompBenchRelationSuite("complex", prompts_dir)


@functools.lru_cache(maxsize=1)
def _same_source() -> bool:
    a, b = load_definition()["source"], load_relations_definition()["source"]
    if a != b:
        raise RuntimeError(f"{DEFINITION_PATH.name} and {attributes.DEFINITION_PATH.name} pin different sources")
    return True


def fetch_t2i_compbench_all(
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    opener: Callable[[str, float], Any] | None = None,
    definition: Definition | str | os.PathLike | None = None,
) -> Path:
    """``evalkit suites fetch t2i-compbench``: every file of both definitions (attribute and relation suites),
    from one folder at one commit, each checked against its sha256. With ``definition`` (tests, another
    definition) only that definition's files, as :func:`~evalkit.suites.t2i_compbench.fetch_t2i_compbench`."""
    if definition is not None:
        return attributes.fetch_t2i_compbench(
            dest, base_url, force, timeout=timeout, progress=progress, opener=opener, definition=definition
        )
    _same_source()
    d = load_definition()
    directory, _ = resolve_prompts_dir(dest, d)
    specs = file_specs(d) + file_specs(load_relations_definition())
    src = d["source"]
    hint = (
        f"Without network access, copy the files ({', '.join(s.name for s in specs)}) of {src['repository']} "
        f"{src['folder']}/ at commit {src['commit']} into a directory and set {attributes.ENV_PROMPTS_DIR} to it "
        f"(or pass --prompts-dir)."
    )
    return fetch_files(
        specs,
        base_url or attributes.source_base_url(d),
        directory,
        force=force,
        timeout=timeout,
        progress=progress,
        opener=opener,
        desc=attributes.FAMILY,
        offline_hint=hint,
    )


__all__ = [
    "T2ICompBenchRelationSuite",
    "t2i_compbench_spatial",
    "t2i_compbench_non_spatial",
    "t2i_compbench_complex",
    "fetch_t2i_compbench_all",
    "load_relations_definition",
    "type_key",
    "CATEGORIES",
    "COMPLEX_TYPES",
]
