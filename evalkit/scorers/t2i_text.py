"""What T2I-CompBench's spatial and CLIP scripts read from a prompt: the relation, the two objects, the text
without adjectives.

All rules are those of Karine-Huang/T2I-CompBench at the commit the suites pin (``1b70949``):

* **Relation** (``UniDet_eval/2D_spatial_eval.py`` l. 168–174): the first of :data:`RELATIONS`, in that
  order, that occurs in the prompt as a substring (case-sensitive). None when none occurs.
* **Objects, simple structure** (l. 221–226, the spatial category): the first and the last token that spaCy
  (``en_core_web_sm``) tags ``NOUN``.
* **Objects, complex structure** (l. 176–220, ``--complex``, the complex category): for every token where one of
  :data:`COMPLEX_PREPOSITIONS` starts (3-, then 2-, then 1-token spans), the nearest ``NOUN`` or ``PROPN``
  before it and the first ``NOUN`` after it (else, when no NOUN follows, the first ``PROPN`` not followed
  by another ``PROPN``). Exactly two objects in all are needed, else none.
* **Person** (l. 228–232): the objects ``girl``, ``boy``, ``man`` and ``woman`` become ``person``.
* **No adjectives** (``CLIPScore_eval/CLIP_similarity.py`` l. 61–64, ``--complex``): the tokens spaCy does not
  tag ``ADJ``, joined by single spaces.

spaCy is used when it loads (:data:`evalkit.scorers.noun_phrases.SPACY_MODELS`). Without it the parser falls
back to rules, and says so: ``parser_name()`` is ``"rules-1"`` (else ``"spacy:<model>-<version>"``), and every
scorer row and fingerprint records it. The rules (:func:`~evalkit.scorers.noun_phrases.rule_based_noun_phrases`
phrases; a *modifier* is a determiner, an attribute word of evalkit's lists, or a word in -ed / -ing): simple
structure, the first non-modifier of the first phrase before the relation and the last non-modifier of the last
phrase after it; complex structure, around each preposition the last non-modifier of the phrase before and the
first of the phrase after; adjectives, the attribute words (and "next" of "next to", which spaCy tags ``ADJ``).
On the 1,000 prompts of T2I-CompBench's spatial category (``a|an X <relation> a|an Y`` throughout) the
simple rules give spaCy's objects exactly (``tests/test_spatial_scorer.py``).

``$EVALKIT_T2I_PARSER`` (``auto`` | ``spacy`` | ``rules``) or a scorer's ``parser=`` chooses; ``auto`` (the
default) takes spaCy when it loads. ``spacy`` without spaCy is an :class:`~evalkit.errors.EvalkitError`.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.scorers import noun_phrases

#: ``2D_spatial_eval.py`` l. 168 ``vocab_spatial``, in its order (the first one found is the relation)
RELATIONS: tuple[str, ...] = (
    "on side of",
    "next to",
    "near",
    "on the left of",
    "on the right of",
    "on the bottom of",
    "on the top of",
    "on top of",
)
#: l. 184: the spans the complex-structure parser takes objects around
COMPLEX_PREPOSITIONS: tuple[str, ...] = (
    "on top of",
    "on bottom of",
    "on the left",
    "on the right",
    "next to",
    "on side of",
    "near",
)
#: l. 228: these objects are looked for as "person"
PERSON_WORDS: frozenset[str] = frozenset({"girl", "boy", "man", "woman"})
PERSON = "person"
STRUCTURES = ("simple", "complex")
PARSERS = ("auto", "spacy", "rules")
PARSER_ENV = "EVALKIT_T2I_PARSER"
#: the rules' name in rows and fingerprints (change the suffix whenever a rule changes what it returns)
RULES_NAME = "rules-1"

_WORD = re.compile(r"[^\W_]+(?:['\-:.][^\W_]+)*|[^\w\s]")


# --------------------------------------------------------------------------- spaCy


@functools.lru_cache(maxsize=1)
def load_spacy() -> tuple[Any | None, str]:
    """(the first loadable pipeline of ``SPACY_MODELS``, its name ``spacy:<model>-<version>``) or (None, why not)."""
    try:
        import spacy
    except ImportError as error:
        return None, f"spaCy is not importable ({error})"
    failures = []
    for model in noun_phrases.SPACY_MODELS:
        try:
            nlp = spacy.load(model)
        except Exception as error:  # noqa: BLE001 - a missing or incompatible model: try the next one
            failures.append(f"{model}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
            continue
        meta = getattr(nlp, "meta", {}) or {}
        return nlp, f"spacy:{meta.get('lang', 'en')}_{meta.get('name', model)}-{meta.get('version', '?')}"
    return None, f"spaCy {spacy.__version__} loads no English model ({'; '.join(failures)})"


def chosen_parser(parser: str | None = None) -> str:
    """``parser``, else ``$EVALKIT_T2I_PARSER``, else ``auto``."""
    choice = (parser or os.environ.get(PARSER_ENV) or "auto").strip()
    if choice not in PARSERS:
        raise ValueError(
            f"unknown T2I-CompBench prompt parser {choice!r}; expected one of {', '.join(PARSERS)}"
            + ("" if parser else f" (from ${PARSER_ENV})")
        )
    return choice


def parser_name(parser: str | None = None) -> str:
    """The parser that runs: ``spacy:<model>-<version>`` or :data:`RULES_NAME` (``auto`` without spaCy).
    A name this function returned is returned as it is (scorers resolve once and keep the name)."""
    if parser == RULES_NAME or (parser or "").startswith("spacy:"):
        return parser
    choice = chosen_parser(parser)
    if choice == "rules":
        return RULES_NAME
    nlp, name = load_spacy()
    if nlp is not None:
        return name
    if choice == "spacy":
        raise EvalkitError(
            f"the T2I-CompBench prompt parser is spaCy, but {name}. Install the pinned "
            f"{' and '.join(noun_phrases.SPACY_REQUIREMENTS)} (requirements.lock), or choose the "
            f"rules with {PARSER_ENV}=rules or auto (rows then record {RULES_NAME!r})"
        )
    return RULES_NAME


# --------------------------------------------------------------------------- relation and objects


def find_relation(prompt: str) -> str | None:
    """The first of :data:`RELATIONS` that is a substring of ``prompt`` (``2D_spatial_eval.py`` l. 170–174)."""
    for word in RELATIONS:
        if word in prompt:
            return word
    return None


def map_person(word: str | None) -> str | None:
    return PERSON if word in PERSON_WORDS else word


@dataclass(frozen=True)
class Parsed:
    """What the spatial scorer reads from a prompt. ``objects`` are after the person mapping; ``reason`` says
    why the prompt cannot be scored (no relation, not two objects), else it is None."""

    relation: str | None
    parsed: tuple[str, ...]  # the objects as found, before the person mapping
    objects: tuple[str, str] | None
    parser: str
    structure: str
    reason: str | None = None


def _spacy_simple(doc) -> list[str]:
    nouns = [token.text for token in doc if token.pos_ == "NOUN"]
    return [nouns[0], nouns[-1]] if nouns else []


def _spacy_complex(doc) -> list[str]:
    """``2D_spatial_eval.py`` l. 186–214, as written."""
    objects: list[str] = []
    for i in range(len(doc)):
        if (
            doc[i : i + 3].text in COMPLEX_PREPOSITIONS
            or doc[i : i + 2].text in COMPLEX_PREPOSITIONS
            or doc[i : i + 1].text in COMPLEX_PREPOSITIONS
        ):
            k = (
                3
                if doc[i : i + 3].text in COMPLEX_PREPOSITIONS
                else 2
                if doc[i : i + 2].text in COMPLEX_PREPOSITIONS
                else 1
            )
            for j in range(i - 1, -1, -1):
                if doc[j].pos_ in ("NOUN", "PROPN"):
                    objects.append(doc[j].text)
                    break
            flag = False
            for j in range(i + k, len(doc)):
                if doc[j].pos_ == "NOUN":
                    objects.append(doc[j].text)
                    break
                if j == len(doc) - 1:
                    flag = True
            if flag:
                for j in range(i + k, len(doc)):
                    if j + 1 < len(doc) and doc[j].pos_ == "PROPN" and doc[j + 1].pos_ != "PROPN":
                        objects.append(doc[j].text)
                        break
    return objects


def _modifier(word: str) -> bool:
    """A word that modifies a noun rather than being one: a determiner, an attribute ("silver", "square"), a
    participle ("tiled", "rocking")."""
    w = word.lower()
    return (
        w in noun_phrases.DETERMINERS
        or w in noun_phrases.ATTRIBUTES
        or w in _adjectives()
        or (len(w) > 4 and w.endswith(("ed", "ing")))
    )


def _head(phrase: str) -> str:
    """The noun that ends a phrase (spaCy's nearest NOUN before a word that follows the phrase): its last word,
    past a trailing verb in -ed ("the river flowed")."""
    words = [w for w in _WORD.findall(phrase) if w[0].isalnum()]
    for w in reversed(words):
        if not _modifier(w):
            return w
    return words[-1] if words else ""


def _first_noun(phrase: str) -> str:
    """The first word of a phrase that modifies nothing ("the brown coat rack": "coat", spaCy's first NOUN after a
    word that precedes the phrase); else its last word."""
    words = [w for w in _WORD.findall(phrase) if w[0].isalnum()]
    return next((w for w in words if not _modifier(w)), words[-1] if words else "")


def _rules_simple(prompt: str, relation: str | None) -> list[str]:
    if relation is None:
        return []
    before, _, after = prompt.partition(relation)
    first = noun_phrases.rule_based_noun_phrases(before)
    last = noun_phrases.rule_based_noun_phrases(after)
    return [_first_noun(first[0]), _head(last[-1])] if first and last else []


def _rules_complex(prompt: str) -> list[str]:
    words = [w for w in _WORD.findall(prompt)]
    lowered = [w.lower() for w in words]
    spans = sorted({tuple(p.split()) for p in COMPLEX_PREPOSITIONS}, key=len, reverse=True)
    objects: list[str] = []
    for i in range(len(words)):
        k = next((len(s) for s in spans if tuple(lowered[i : i + len(s)]) == s), 0)
        if not k:
            continue
        before = noun_phrases.rule_based_noun_phrases(" ".join(words[:i]))
        after = noun_phrases.rule_based_noun_phrases(" ".join(words[i + k :]))
        if before:
            objects.append(_head(before[-1]))
        if after:
            objects.append(_first_noun(after[0]))
    return objects


@functools.lru_cache(maxsize=65536)
def _parse(prompt: str, structure: str, parser: str) -> Parsed:
    relation = find_relation(prompt)
    if parser == RULES_NAME:
        found = _rules_simple(prompt, relation) if structure == "simple" else _rules_complex(prompt)
    else:
        doc = load_spacy()[0](prompt)
        found = _spacy_simple(doc) if structure == "simple" else _spacy_complex(doc)
    found = [w for w in found if w]
    reason = None
    if relation is None:
        reason = (
            "no spatial relation of T2I-CompBench's list in the prompt (" + ", ".join(repr(r) for r in RELATIONS) + ")"
        )
    elif len(found) != 2:
        what = "no noun" if not found else f"{len(found)} object(s) ({', '.join(found)})"
        rule = "first and last NOUN" if structure == "simple" else "one object on each side of a preposition"
        reason = f"the {parser} parser ({structure} structure: {rule}) found {what}, not the two objects it needs"
    objects = (map_person(found[0]), map_person(found[1])) if reason is None else None
    return Parsed(relation, tuple(found), objects, parser, structure, reason)


def parse_spatial(prompt: str, structure: str = "simple", parser: str | None = None) -> Parsed:
    """The relation and the two objects of ``prompt`` (module docstring); ``parser`` as :func:`chosen_parser`."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown prompt structure {structure!r}; expected one of {', '.join(STRUCTURES)}")
    return _parse(prompt, structure, parser_name(parser))


# --------------------------------------------------------------------------- CLIP text of the complex category


def _adjectives() -> frozenset[str]:
    words = getattr(noun_phrases, "PURE_ADJECTIVES", None) or getattr(noun_phrases, "ATTRIBUTES", frozenset())
    return frozenset(words)


@functools.lru_cache(maxsize=65536)
def _without_adjectives(prompt: str, parser: str) -> str:
    if parser == RULES_NAME:
        adjectives = _adjectives()
        words = _WORD.findall(prompt)
        # spaCy (en_core_web_sm 3.8) tags "next" of "next to" ADJ, so T2I-CompBench's text drops it
        return " ".join(
            w
            for i, w in enumerate(words)
            if w.lower() not in adjectives
            and not (w.lower() == "next" and i + 1 < len(words) and words[i + 1].lower() == "to")
        )
    return " ".join(token.text for token in load_spacy()[0](prompt) if token.pos_ != "ADJ")


def without_adjectives(prompt: str, parser: str | None = None) -> str:
    """``CLIP_similarity.py``'s complex-category text: the prompt's tokens that are not ``ADJ``, space-joined."""
    return _without_adjectives(prompt, parser_name(parser))
