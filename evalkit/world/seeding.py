"""Stable randomness: seeds and uniforms from content hashes (never Python's salted ``hash()``)."""

from __future__ import annotations

import numpy as np

from evalkit.contracts import content_hash

#: The world seed: fixes the splits. Changing it changes every synthetic suite's version.
WORLD_SEED = 20240607


def stable_int(*parts) -> int:
    """A 64-bit integer determined by ``parts`` (JSON-able values)."""
    return int(content_hash([WORLD_SEED, *parts], length=16), 16)


def stable_uniform(*parts) -> float:
    """A float in (0, 1) determined by ``parts``."""
    return (stable_int(*parts) + 0.5) / 2.0**64


def stable_rng(*parts) -> np.random.Generator:
    """A numpy Generator (PCG64) seeded by ``parts``."""
    return np.random.default_rng(stable_int(*parts))
