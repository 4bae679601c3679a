"""Decoders: turn image embeddings into images. ``load_decoder(name)`` resolves a registered name."""

from __future__ import annotations

import inspect

from evalkit.registry import DECODERS


#: memory levers of ``load_decoder`` and their off values (only the large decoders take them)
LEVERS = {"offload": False, "attention": None, "vae_chunk_size": None}


def describe_resolutions(sides) -> str:
    """``(256, 320, …, 1024)`` → "a multiple of 64 from 256 to 1024"; ``(64, 256)`` → "64 or 256"."""
    sides = sorted(int(s) for s in sides)
    steps = {b - a for a, b in zip(sides, sides[1:])}
    if len(sides) >= 4 and len(steps) == 1 and sides[0] % next(iter(steps)) == 0:
        return f"a multiple of {next(iter(steps))} from {sides[0]} to {sides[-1]}"
    return " or ".join(str(s) for s in sides)


def _takes(function, keyword: str, strict: bool = True) -> bool:
    """Whether ``function`` takes ``keyword``: by name (``strict``), or also through ``**kwargs``."""
    parameters = inspect.signature(function).parameters
    return keyword in parameters or (not strict and any(p.kind is p.VAR_KEYWORD for p in parameters.values()))


def _takes_lever(cls, loader, lever: str) -> bool:
    """A lever is the decoder's constructor keyword, which its loader names or passes on (``**settings``)."""
    return _takes(cls.__init__, lever) and (loader is None or _takes(loader, lever, strict=False))


def _decoders_taking(lever: str) -> list[str]:
    """Registered decoders that take ``lever`` (for error messages)."""
    names = []
    for other in DECODERS.names():
        try:
            other_cls = DECODERS.get(other)
        except Exception:  # a plugin that does not even import is not one to suggest
            continue
        if _takes_lever(other_cls, getattr(other_cls, "from_pretrained", None), lever):
            names.append(other)
    return names


def load_decoder(
    name: str,
    path=None,
    random_init: str | None = None,
    allow_pickle: bool = False,
    *,
    resolution: int | None = None,
    offload: bool = False,
    attention: str | None = None,
    vae_chunk_size: int | None = None,
    **options,
):
    """The decoder registered as ``name``, on the CPU in the precision of its files: from ``path``, else its
    default (shipped) weights, else built from its default config when it has no weights to load. Where and in
    what dtype it computes is chosen afterwards by :func:`evalkit.placement.place` (``--device``, ``--dtype``).

    ``allow_pickle``: accept pickle checkpoints in the folder (CLI ``--allow-pickle``; read with
    ``torch.load(weights_only=True)``), passed to the decoder's ``from_pretrained``.

    ``random_init="real"`` / ``"tiny"``: the decoder's ``random_init(size=...)`` instead (its public
    architecture with random weights; images are noise, for speed and memory measurements).

    ``resolution``: the output side (``--resolution``), one of the decoder's ``supported_resolutions``; a decoder
    with a single side accepts only that one (None: its default).

    Memory levers, off by default, for the large decoders (karlo, kandinsky22; a :class:`SettingError` for the
    others): ``offload`` (each big component stays on the CPU and moves to the device only while it runs),
    ``attention`` (``"sdpa"`` | ``"eager"``: the attention kernels), ``vae_chunk_size`` (the VAE / MoVQ decodes
    at most that many latents at a time). ``options``: other keywords of the decoder's loader (e.g. ``max_batch``).
    """
    from evalkit.errors import SettingError

    if options.pop("dtype", None) is not None:
        raise SettingError(
            "load_decoder loads a decoder in the precision of its files; choose what it computes in "
            "with evalkit.placement.place(decoder, device, dtype) (--dtype)"
        )
    cls = DECODERS.get(name)
    builder = _pick_builder(name, cls, path, random_init)
    target = builder if builder is not None else cls
    options.update(
        _chosen_levers(name, cls, builder, offload=offload, attention=attention, vae_chunk_size=vae_chunk_size)
    )
    if resolution is not None and _check_resolution(name, cls, target, resolution, random_init):
        options["resolution"] = resolution
    decoder = _build(name, cls, builder, path, random_init, allow_pickle, options)
    if resolution is not None and int(getattr(decoder, "resolution", 0)) != resolution:
        raise SettingError(
            f"decoder {name!r} renders {decoder.resolution}×{decoder.resolution} only; "
            f"--resolution {resolution} does not apply to it"
        )
    return decoder


def _pick_builder(name, cls, path, random_init):
    """What builds the decoder: its ``random_init`` builder, else its ``from_pretrained`` (None: the class)."""
    from evalkit.errors import EvalkitError

    if random_init is not None:
        if path is not None:
            raise EvalkitError(
                "--random-init builds the decoder with random weights; it cannot be combined with "
                "--decoder-path (drop one of them)"
            )
        return DECODERS.random_builder(name, random_init)
    return getattr(cls, "from_pretrained", None)


def _chosen_levers(name, cls, builder, **values) -> dict:
    """The memory levers that are on, each checked to be one the decoder takes (a :class:`SettingError`)."""
    from evalkit.errors import SettingError

    levers = {k: v for k, v in values.items() if v is not None and v is not LEVERS[k]}  # None: off, for every lever
    for lever in levers:
        if not _takes_lever(cls, builder, lever):
            others = [n for n in _decoders_taking(lever) if n != name]
            raise SettingError(
                f"decoder {name!r} has no {lever} setting: it applies to {', '.join(others) or 'no registered decoder'}"
            )
    return levers


def _check_resolution(name, cls, target, resolution, random_init) -> bool:
    """A :class:`SettingError` for a ``resolution`` the decoder cannot render; True when its loader takes it
    (the decoder declares ``supported_resolutions``), False when it is checked on the built decoder only."""
    from evalkit.errors import SettingError

    sides = tuple(getattr(cls, "supported_resolutions", ()) or ())
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise SettingError(f"--resolution must be a positive whole number of pixels (got {resolution!r})")
    if not sides:
        return False
    if random_init != "tiny" and resolution not in sides:  # a tiny build checks its own (smaller) sides
        raise SettingError(
            f"decoder {name!r} renders square images of side {describe_resolutions(sides)}; "
            f"--resolution {resolution} is not one of them"
        )
    if not _takes(target, "resolution", strict=False):
        raise SettingError(
            f"decoder {name!r} declares resolutions {describe_resolutions(sides)} but its loader takes no resolution="
        )
    return True


def _build(name, cls, builder, path, random_init, allow_pickle, options):
    from evalkit.errors import EvalkitError

    if random_init is not None:
        return builder(size=random_init, **options)
    loader = builder
    if loader is not None and allow_pickle:
        if _takes(loader, "allow_pickle", strict=False):
            options = {**options, "allow_pickle": True}
        elif path is not None:
            raise EvalkitError(
                f"decoder {name!r} reads no pickle checkpoints; --allow-pickle does not apply to "
                "its --decoder-path (convert the folder to safetensors)"
            )
    if path is not None:
        if loader is None:
            raise EvalkitError(f"decoder {name!r} loads no weights folder; --decoder-path does not apply to it")
        return loader(path, **options)
    directory = inspect.signature(loader).parameters.get("directory") if loader is not None else None
    if directory is not None and directory.default is not inspect.Parameter.empty:
        return loader(**options)
    options.pop("allow_pickle", None)
    return cls(**options)


# --------------------------------------------------------------------------- memory levers of the large decoders

#: ``attention=`` values: PyTorch's fused scaled-dot-product attention, or the plain matmul-softmax-matmul one
ATTENTION_BACKENDS = ("sdpa", "eager")


def check_levers(name: str, offload=False, attention=None, vae_chunk_size=None) -> None:
    """A :class:`SettingError` for a lever value that cannot work."""
    from evalkit.errors import SettingError

    if not isinstance(offload, bool):
        raise SettingError(f"{name}: offload must be True or False (got {offload!r})")
    if attention is not None and attention not in ATTENTION_BACKENDS:
        raise SettingError(f"{name}: attention must be one of {', '.join(ATTENTION_BACKENDS)} (got {attention!r})")
    if vae_chunk_size is not None and (
        isinstance(vae_chunk_size, bool) or not isinstance(vae_chunk_size, int) or vae_chunk_size < 1
    ):
        raise SettingError(
            f"{name}: vae_chunk_size must be a whole number ≥ 1 (latents per decode; got {vae_chunk_size!r})"
        )


def set_attention(name: str, backend: str, diffusers_models=(), transformers_models=()) -> None:
    """Attention kernels: diffusers' ``AttnProcessor2_0`` / ``AttnAddedKVProcessor2_0`` (``"sdpa"``) or
    ``AttnProcessor`` / ``AttnAddedKVProcessor`` (``"eager"``) on every ``Attention`` layer of the diffusers
    models, and ``set_attn_implementation(backend)`` on the transformers models (their config then dispatches
    every attention call to that backend)."""
    from diffusers.models.attention_processor import (
        Attention,
        AttnAddedKVProcessor,
        AttnAddedKVProcessor2_0,
        AttnProcessor,
        AttnProcessor2_0,
    )

    from evalkit.errors import SettingError

    sdpa = backend == "sdpa"
    for model in diffusers_models:
        for module_name, module in model.named_modules():
            if not isinstance(module, Attention):
                continue
            if isinstance(module.processor, (AttnAddedKVProcessor, AttnAddedKVProcessor2_0)):
                module.set_processor(AttnAddedKVProcessor2_0() if sdpa else AttnAddedKVProcessor())
            elif isinstance(module.processor, (AttnProcessor, AttnProcessor2_0)):
                module.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
            else:
                raise SettingError(
                    f"{name}: attention={backend!r} cannot replace the "
                    f"{type(module.processor).__name__} of {type(model).__name__}.{module_name}"
                )
    for model in transformers_models:
        model.set_attn_implementation(backend)


def install_offload(models, device) -> list:
    """Model CPU offload as diffusers' ``enable_model_cpu_offload`` does it: every model on the CPU, moved to
    ``device`` by an accelerate hook when its forward (or ``decode``) starts, the previous model of the chain
    going back to the CPU then. Returns the hooks, in order (``hook.offload()`` sends a model back)."""
    import torch
    from accelerate import cpu_offload_with_hook

    remove_offload(models)
    hooks, hook = [], None
    for model in models:
        _, hook = cpu_offload_with_hook(model, torch.device(device), prev_module_hook=hook)
        hooks.append(hook)
    return hooks


def remove_offload(models) -> None:
    """Take the offload hooks off (the models stay where they are)."""
    from accelerate.hooks import remove_hook_from_module

    for model in models:
        if hasattr(model, "_hf_hook"):
            remove_hook_from_module(model, recurse=True)
