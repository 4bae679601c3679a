"""Priors: map prompts to image embeddings. ``load_prior(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import PRIORS


def load_prior(name: str, random_init: str | None = None, **options):
    """Build the prior registered as ``name``; options its constructor does not take are ignored.

    ``random_init="real"`` / ``"tiny"``: the prior's ``random_init(size=...)`` instead (its public
    architecture and text encoder with random weights, no files; for speed and memory measurements).
    """
    from evalkit.errors import EvalkitError

    cls = PRIORS.get(name)
    accepted = inspect.signature(cls).parameters
    if random_init is not None:
        if options.get("path") is not None:
            raise EvalkitError(f"--random-init builds prior {name!r} with random weights; it cannot be combined "
                               "with --prior-path (drop one of them)")
        builder = PRIORS.random_builder(name, random_init)
        loading = {"path", "allow_pickle", "text_encoder_path", "embedding_space"}  # folder options: not used
        settings = {k: v for k, v in options.items() if k in accepted and k not in loading and v is not None}
        return builder(size=random_init, **settings)
    if options.get("path") is not None and "path" not in accepted:
        raise EvalkitError(f"prior {name!r} loads no weights folder; --prior-path applies to trained priors only")
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
