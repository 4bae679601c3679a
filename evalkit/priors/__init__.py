"""Priors: map prompts to image embeddings. ``load_prior(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import PRIORS


def load_prior(name: str, **options):
    """Build the prior registered as ``name``; options its constructor does not take are ignored."""
    cls = PRIORS.get(name)
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
