"""Priors: map prompts to image embeddings. ``load_prior(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import PRIORS


def load_prior(name: str, **options):
    """Build the prior registered as ``name``; options its constructor does not take are ignored."""
    cls = PRIORS.get(name)
    accepted = inspect.signature(cls).parameters
    if options.get("path") is not None and "path" not in accepted:
        from evalkit.errors import EvalkitError

        raise EvalkitError(f"prior {name!r} loads no weights folder; --prior-path applies to trained priors only")
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
