"""Reading noun phrases back into attribute words: the inverse of the caption grammar's ``phrase()``.

Every scorer of the synthetic world (analytic, binding, embedding-cosine), the world scorer's trainer and
the suites read prompts with this one vocabulary, so that they agree on which prompts they can score; it
lives beside :mod:`evalkit.world.grammar` so that reading a phrase imports no scorer.
"""

from __future__ import annotations

import functools

from evalkit.world.attributes import FAMILIES
from evalkit.world.grammar import split_relation

_WORD_FAMILY = {word: family for family, words in FAMILIES.items() for word in words}
_ARTICLES = frozenset({"a", "an", "the", "one"})


@functools.lru_cache(maxsize=4096)
def parse_phrase(phrase: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``((family, value), ...), (unknown words, ...)`` of a noun phrase, e.g. "a big red star?" →
    ``((size, big), (color, red), (shape, star)), ()``. Families: color, shape, texture, size."""
    words = phrase.lower().replace("?", " ").replace(",", " ").replace(".", " ").split()
    fields: dict[str, str] = {}
    unknown = []
    for word in words:
        if word in _ARTICLES:
            continue
        family = _WORD_FAMILY.get(word)
        if family is None or (family in fields and fields[family] != word):
            unknown.append(word)
        else:
            fields[family] = word
    return tuple(fields.items()), tuple(unknown)


def noun_phrases(item) -> tuple[str, ...]:
    """The item's noun phrases, or its prompt split on " and " (or on a relation: " on the left of ") when the
    suite left them open."""
    if item.noun_phrases:
        return tuple(item.noun_phrases)
    parts, _ = split_relation(item.prompt.strip().rstrip("."))
    return tuple(p.strip() for p in parts if p.strip())


def relation_of(item) -> str | None:
    """The world relation (left, right, top, bottom) the item's prompt binds, or None: its caption spec's
    relation when the suite gave one, else the first relation's words found in the prompt."""
    caption = (item.meta or {}).get("caption")
    if caption is not None:
        return caption.get("relation")
    return split_relation(item.prompt.strip().rstrip("."))[1]


def unreadable(item) -> str | None:
    """Why the world's phrase grammar cannot read ``item`` (its words outside the world's vocabulary), or None:
    the ``not_applicable`` of every scorer of the synthetic world (a score of such a prompt means nothing)."""
    words = sorted({w for phrase in noun_phrases(item) for w in parse_phrase(phrase)[1]})
    return f"words outside the synthetic world's vocabulary ({', '.join(words)})" if words else None
