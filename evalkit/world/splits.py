"""Train / dev / val prompts per category, built deterministically from the world seed.

The unit of a split is a **binding orbit**: the two attribute–object pairs a caption binds,
together with the two pairs of its swapped caption, e.g. {(red, circle), (blue, square)} with
{(blue, circle), (red, square)}. Every caption of an orbit (either binding, either phrase order,
any optional mentions) belongs to the same split, so a val prompt, its swapped prompt and every
rewording of either never occur in train or dev.

* **clean** orbits (no held-out pair in either binding) are divided: 30 % to val (seen), 10 % to
  dev, the rest to train — an orbit leaves the train pool only if each of its four pairs still
  occurs in another train orbit, so every pair of a seen val or dev prompt, and of its swap, is seen
  in train (in a different pairing); orbits that add pairs new to val (or dev) are taken first.
* captions binding a held-out pair are **unseen** val candidates (their swaps are never in train either).
* the remaining captions (their swap binds a held-out pair, they do not) are used nowhere.

Val = 200 seen + 100 unseen prompts, dev = 100 prompts, each drawn without replacement in
proportion to its grammar probability (so unmentioned attributes stay common), at most one prompt
per unordered pair of noun phrases. Train = every caption of the train orbits, with its grammar
probability as sampling weight. Sampling keys are content hashes, so splits do not depend on numpy.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

from evalkit.world.attributes import CATEGORIES, HELD_OUT
from evalkit.world.grammar import COMBO_FAMILY, Caption, CaptionSpec, enumerate_captions, is_held_out
from evalkit.world.seeding import stable_uniform

SPLITS = ("train", "dev", "val")
VAL_SEEN_PROMPTS = 200
VAL_UNSEEN_PROMPTS = 100
DEV_PROMPTS = 100
VAL_ORBIT_FRACTION = 0.3
DEV_ORBIT_FRACTION = 0.1


@dataclass(frozen=True)
class SplitPrompt:
    """One prompt of a split: its caption spec, seen flag and grammar weight."""

    spec: CaptionSpec
    seen: bool
    weight: float  # grammar probability (unnormalised): the sampling weight of train prompts

    @property
    def text(self) -> str:
        return self.spec.text


def held_out_combinations(category: str) -> list[tuple[str, str]]:
    """The (attribute, shape) pairs whose binding makes a prompt of ``category`` unseen."""
    return sorted(HELD_OUT[COMBO_FAMILY[category]])


@functools.lru_cache(maxsize=None)
def world_splits(category: str) -> dict[str, tuple[SplitPrompt, ...]]:
    """``{"train": ..., "dev": ..., "val": ...}`` for one category (cached; ~0.5 s per category the first time)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    orbits: dict[tuple, list[Caption]] = {}
    for caption in enumerate_captions(category):
        orbits.setdefault(caption.core.orbit(), []).append(caption)

    clean = [o for o in orbits if not any(is_held_out(c) for core in o for c in core)]
    clean.sort(key=lambda o: stable_uniform("orbit", category, o))
    train_orbits = list(clean)
    val_orbits = _carve(train_orbits, round(VAL_ORBIT_FRACTION * len(clean)))
    dev_orbits = _carve(train_orbits, max(1, round(DEV_ORBIT_FRACTION * len(clean))))

    def captions(orbit_list):
        return [caption for o in orbit_list for caption in orbits[o]]

    unseen_pool = [c for o in orbits for c in orbits[o] if any(is_held_out(p) for p in c.core.bound_combos())]
    seen_val = _draw(captions(val_orbits), VAL_SEEN_PROMPTS, f"{category}-val-seen")
    unseen_val = _draw(unseen_pool, VAL_UNSEEN_PROMPTS, f"{category}-val-unseen")
    dev = _draw(captions(dev_orbits), DEV_PROMPTS, f"{category}-dev")
    train = sorted(captions(train_orbits), key=lambda c: c.spec.text)

    # val order: seen, seen, unseen, ... so that every prefix of 3k items holds 2k seen and k unseen
    val = []
    for k in range(VAL_UNSEEN_PROMPTS):
        val += [SplitPrompt(c.spec, True, c.weight) for c in seen_val[2 * k : 2 * k + 2]]
        val.append(SplitPrompt(unseen_val[k].spec, False, unseen_val[k].weight))
    return {
        "train": tuple(SplitPrompt(c.spec, True, c.weight) for c in train),
        "dev": tuple(SplitPrompt(c.spec, True, c.weight) for c in dev),
        "val": tuple(val),
    }


def _carve(pool: list[tuple], count: int) -> list[tuple]:
    """Move ``count`` orbits out of ``pool`` (in pool order), keeping every pair of the pool covered:
    an orbit may leave only if each of its pairs occurs in at least one other orbit of the pool.
    For variety, a first pass takes only orbits whose pairs are all new to the carved set, a
    second pass orbits with at least one new pair, a last pass any orbit."""
    remaining = Counter(c for o in pool for core in o for c in core)
    taken: list[tuple] = []
    carved_pairs: set = set()
    for min_new in (4, 1, 0):
        for orbit in list(pool):
            if len(taken) == count:
                return taken
            own = [c for core in orbit for c in core]
            if all(remaining[c] >= 2 for c in own) and len(set(own) - carved_pairs) >= min_new:
                remaining.subtract(own)
                carved_pairs.update(own)
                pool.remove(orbit)
                taken.append(orbit)
    if len(taken) < count:
        raise RuntimeError(f"could only carve {len(taken)} of {count} orbits without losing a pair")
    return taken


def _draw(pool: list[Caption], count: int, salt: str) -> list[Caption]:
    """Weighted sampling without replacement (Efraimidis–Spirakis keys from content hashes),
    at most one caption per unordered pair of noun phrases."""
    keyed = sorted(pool, key=lambda c: -math.log(stable_uniform(salt, c.spec.text)) / c.weight)
    out, phrase_sets = [], set()
    for caption in keyed:
        phrases = frozenset(caption.spec.noun_phrases)
        if phrases in phrase_sets:
            continue
        phrase_sets.add(phrases)
        out.append(caption)
        if len(out) == count:
            return out
    raise RuntimeError(f"{salt}: only {len(out)} distinct prompts for {count} wanted")


def split_prompts(category: str, split: str) -> tuple[SplitPrompt, ...]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return world_splits(category)[split]
