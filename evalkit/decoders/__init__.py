"""Decoders: turn image embeddings into images. ``load_decoder(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import DECODERS


def load_decoder(name: str, path=None, random_init: str | None = None, dtype: str | None = None):
    """The decoder registered as ``name``: from ``path``, else its default (shipped) weights, else built
    from its default config when it has no weights to load.

    ``random_init="real"`` / ``"tiny"``: the decoder's ``random_init(size=...)`` instead (its public
    architecture with random weights; images are noise, for speed and memory measurements).
    ``dtype``: what the decoder computes in (one of its ``supported_dtypes``; None: its own default).
    """
    from evalkit.errors import EvalkitError

    cls = DECODERS.get(name)
    options = {}
    if dtype is not None:
        supported = tuple(getattr(cls, "supported_dtypes", ("float32",)))
        if dtype not in supported:
            raise EvalkitError(f"decoder {name!r} computes in {' or '.join(supported)}; --dtype {dtype} is not one of them")
        if random_init is not None:
            raise EvalkitError("--dtype chooses how loaded weights compute; it does not apply to --random-init builds")
        options = cls.dtype_options(dtype) if hasattr(cls, "dtype_options") else {}
    if random_init is not None:
        if path is not None:
            raise EvalkitError("--random-init builds the decoder with random weights; it cannot be combined with "
                               "--decoder-path (drop one of them)")
        return DECODERS.random_builder(name, random_init)(size=random_init)
    loader = getattr(cls, "from_pretrained", None)
    if path is not None:
        return loader(path, **options)
    directory = inspect.signature(loader).parameters.get("directory") if loader is not None else None
    if directory is not None and directory.default is not inspect.Parameter.empty:
        return loader(**options)
    return cls(**options)
