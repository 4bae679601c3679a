"""Synthetic suites: split sizes, seen/unseen construction, leakage, swaps, versions, ground truth."""

from __future__ import annotations

import re

import numpy as np
import pytest

from evalkit.contracts import PromptItem
from evalkit.registry import SUITES
from evalkit.suites import load_suite
from evalkit.suites.synth import SynthSuite, synth_color, synth_shape, synth_texture
from evalkit.world import CATEGORIES, parse_caption, sample_scene
from evalkit.world.grammar import COMBO_FAMILY, is_held_out


@pytest.fixture(scope="module")
def suites():
    return {c: load_suite(f"synth-{c}") for c in CATEGORIES}


def combos(prompt):
    return parse_caption(prompt).combos()


def bound_combos(prompt):
    return parse_caption(prompt).bound_combos()


def test_registry_names_resolve_to_the_factories():
    for category, factory in zip(CATEGORIES, (synth_color, synth_shape, synth_texture)):
        suite = SUITES.get(f"synth-{category}")()
        assert isinstance(suite, SynthSuite) and suite.category == category
        assert suite.name == f"synth-{category}" and factory().name == suite.name
    with pytest.raises(ValueError):
        SynthSuite("size")


@pytest.mark.parametrize("category", CATEGORIES)
def test_val_has_200_seen_and_100_unseen_prompts(suites, category):
    items = suites[category].items("val")
    assert len(items) == 300 and len({i.prompt for i in items}) == 300
    assert sum(i.seen for i in items) == 200 and sum(not i.seen for i in items) == 100
    assert [i.seen for i in items[:3]] == [True, True, False]  # every 3k-prefix holds 2k seen, k unseen
    assert [i.item_id for i in items[:2]] == [f"{category}-val-0000", f"{category}-val-0001"]
    assert all(re.fullmatch(rf"{category}-val-\d{{4}}", i.item_id) for i in items)
    assert all(isinstance(i, PromptItem) and i.category == category and i.split == "val" for i in items)


@pytest.mark.parametrize("category", CATEGORIES)
def test_splits_have_the_planned_sizes(suites, category):
    suite = suites[category]
    assert len(suite.items("dev")) == 100
    assert 1500 <= len(suite.items("train")) <= 6000  # a few thousand train prompts
    with pytest.raises(ValueError):
        suite.items("test")


def test_val_prompts_and_their_swaps_never_occur_in_train_or_dev(suites):
    train = {i.prompt for s in suites.values() for i in s.items("train")}
    dev = {i.prompt for s in suites.values() for i in s.items("dev")}
    assert not train & dev
    for suite in suites.values():
        for item in suite.items("val"):
            assert item.prompt not in train | dev and item.swapped_prompt not in train | dev
        for item in suite.items("dev"):
            assert item.swapped_prompt not in train


@pytest.mark.parametrize("category", CATEGORIES)
def test_seen_items_use_and_swap_into_seen_pairs_only(suites, category):
    train_items = suites[category].items("train")
    train_bound = set().union(*(bound_combos(i.prompt) for i in train_items))
    train_any = set().union(*(combos(i.prompt) for s in suites.values() for i in s.items("train")))
    for item in suites[category].items("val") + suites[category].items("dev"):
        if not item.seen:
            continue
        for prompt in (item.prompt, item.swapped_prompt):
            assert bound_combos(prompt) <= train_bound, prompt
            assert combos(prompt) <= train_any, prompt
            assert not any(is_held_out(c) for c in combos(prompt)), prompt


@pytest.mark.parametrize("category", CATEGORIES)
def test_seen_val_covers_every_pair_that_is_not_held_out(suites, category):
    val_pairs = set()
    for item in suites[category].items("val"):
        if item.seen:
            val_pairs |= bound_combos(item.prompt) | bound_combos(item.swapped_prompt)
    family = COMBO_FAMILY[category]
    assert all(c[0] == family and not is_held_out(c) for c in val_pairs)
    # spatial: 4 places × 6 shapes, less the 4 held out (star left / right, cross top / bottom)
    expected = {"color": 8 * 6 - 6, "texture": 4 * 6 - 3, "shape": 2 * 6 - 2, "spatial": 4 * 6 - 4}
    assert len(val_pairs) == expected[category]


@pytest.mark.parametrize("category", CATEGORIES)
def test_unseen_items_bind_a_held_out_pair_that_no_train_prompt_contains(suites, category):
    train_any = set()
    for suite in suites.values():
        for item in suite.items("train") + suite.items("dev"):
            train_any |= combos(item.prompt) | combos(item.swapped_prompt)
    assert not any(is_held_out(c) for c in train_any)
    for item in suites[category].items("val"):
        held = [c for c in bound_combos(item.prompt) if is_held_out(c)]
        assert bool(held) == (not item.seen), item.prompt
        assert [list(c) for c in sorted(held)] == item.meta["held_out_pairs"]
        assert all(c[0] == COMBO_FAMILY[category] and c not in train_any for c in held)


@pytest.mark.parametrize("category", CATEGORIES)
def test_items_carry_phrases_swaps_and_caption_specs(suites, category):
    for split in ("val", "dev", "train"):
        for item in suites[category].items(split)[:300]:
            assert len(item.noun_phrases) == 2
            spec = SynthSuite.caption_spec(item)
            joint = " and " if category != "spatial" else f" on the {spec.relation} of "
            assert item.prompt == joint.join(item.noun_phrases)  # phrases verbatim, in order
            assert spec == parse_caption(item.prompt) and spec.category == category
            assert item.swapped_prompt == spec.swapped_text != item.prompt
            assert parse_caption(item.swapped_prompt).swapped_text == item.prompt


def test_versions_are_stable_and_distinct(suites):
    versions = {c: s.version("val") for c, s in suites.items()}
    assert versions == {c: load_suite(f"synth-{c}").version("val") for c in CATEGORIES}
    assert len(set(versions.values())) == len(CATEGORIES)
    assert suites["color"].version("dev") != versions["color"]


def test_ground_truth_and_swapped_renders(suites):
    suite = suites["texture"]
    items = suite.items("val")[:6]
    seeds = [42 + k for k in range(6)]
    for item, seed in zip(items, seeds):
        scene = suite.ground_truth(item, seed)
        assert scene == sample_scene(parse_caption(item.prompt), seed) and scene.caption == item.prompt
        assert suite.swapped_ground_truth(item, seed).caption == item.swapped_prompt
    images, swapped = suite.render(items, seeds), suite.render(items, seeds, swapped=True)
    assert images.shape == (6, 32, 32, 3) and swapped.shape == images.shape
    assert all(not np.array_equal(a, b) for a, b in zip(images, swapped))
    grid = suite.render_grid(items[:2], [42, 43])
    assert grid.shape == (2, 2, 32, 32, 3)
    np.testing.assert_array_equal(grid[0, 0], images[0])  # (item 0, seed 42)
    np.testing.assert_array_equal(grid[1, 1], images[1])  # (item 1, seed 43)
    # ad-hoc items (no caption spec in meta) are parsed from the prompt
    adhoc = PromptItem(items[0].prompt, "texture", "val", "adhoc-0")
    assert suite.ground_truth(adhoc, 42) == suite.ground_truth(items[0], 42)
