"""Decoders: turn image embeddings into images. ``load_decoder(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import DECODERS


def load_decoder(name: str, path=None):
    """The decoder registered as ``name``: from ``path``, else its default (shipped) weights, else built
    from its default config when it has no weights to load."""
    cls = DECODERS.get(name)
    loader = getattr(cls, "from_pretrained", None)
    if path is not None:
        return loader(path)
    directory = inspect.signature(loader).parameters.get("directory") if loader is not None else None
    if directory is not None and directory.default is not inspect.Parameter.empty:
        return loader()
    return cls()
