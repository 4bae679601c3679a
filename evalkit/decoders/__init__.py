"""Decoders: turn image embeddings into images. ``load_decoder(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import DECODERS


def load_decoder(name: str, path=None, random_init: str | None = None, dtype: str | None = None,
                 allow_pickle: bool = False):
    """The decoder registered as ``name``: from ``path``, else its default (shipped) weights, else built
    from its default config when it has no weights to load.

    ``allow_pickle``: accept pickle checkpoints in the folder (CLI ``--allow-pickle``; read with
    ``torch.load(weights_only=True)``), passed to the decoder's ``from_pretrained``.

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
    if loader is not None and allow_pickle:
        parameters = inspect.signature(loader).parameters
        if "allow_pickle" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            options = {**options, "allow_pickle": True}
        elif path is not None:
            raise EvalkitError(f"decoder {name!r} reads no pickle checkpoints; --allow-pickle does not apply to "
                               "its --decoder-path (convert the folder to safetensors)")
    if path is not None:
        if loader is None:
            raise EvalkitError(f"decoder {name!r} loads no weights folder; --decoder-path does not apply to it")
        return loader(path, **options)
    directory = inspect.signature(loader).parameters.get("directory") if loader is not None else None
    if directory is not None and directory.default is not inspect.Parameter.empty:
        return loader(**options)
    options.pop("allow_pickle", None)
    return cls(**options)
