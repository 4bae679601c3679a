"""Identity of a plugin (prior, decoder, scorer): its class, settings, weights and source code, hashed.

One home for these hashes: the work cache keys every entry with :func:`fingerprint`
(:mod:`evalkit.harness.cache`), the protocol records ``decoder_version`` / ``prior_version`` from it, and
plugins that define their own ``fingerprint()`` (the scorers on local model folders, the 3-in-1 scorer) build
it from :func:`source_digest`, :func:`plugin_settings` and :func:`held_weights_digest`. Tensors are hashed by
:func:`evalkit.serialization.weights_fingerprint`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from pathlib import Path

from evalkit.contracts import content_hash
from evalkit.serialization import weights_fingerprint

#: hex digits of a work-cache key and of a plugin fingerprint
KEY_LENGTH = 32


def _tensor_digest(modules) -> str:
    """:func:`evalkit.serialization.weights_fingerprint` of ``(prefix, module)`` pairs, as one state dict whose
    names are ``prefix.name`` (the same bytes as hashing the modules one after another, in prefix order)."""
    state = {f"{prefix}.{name}": tensor for prefix, module in modules for name, tensor in module.state_dict().items()}
    return weights_fingerprint(state)[:KEY_LENGTH]


#: top-level packages whose classes are not hashed into a plugin's code digest (with the standard library
#: and builtins): frameworks a plugin builds on, whose versions are recorded with each run instead
FRAMEWORKS = frozenset({"torch", "diffusers", "transformers", "open_clip", "numpy"})


def _hashes_source(cls) -> bool:
    top = (cls.__module__ or "").split(".")[0]
    return not (top in sys.stdlib_module_names or top == "builtins" or top in FRAMEWORKS)


def source_digest(obj) -> str:
    """Hash of the source files of ``obj``'s class and of every base outside the standard library and the
    big frameworks (:data:`FRAMEWORKS`): evalkit's own, a third-party package's, a test module's. A code
    edit in any of them invalidates the plugin's cached outputs."""
    digest = hashlib.sha256()
    for cls in type(obj).__mro__:
        if not _hashes_source(cls):
            continue
        try:
            digest.update(Path(inspect.getsourcefile(cls)).read_bytes())
        except (TypeError, OSError):
            digest.update(cls.__qualname__.encode())
    return digest.hexdigest()[:KEY_LENGTH]


def held_weights_digest(plugin) -> str:
    """Hash of the weights a plugin holds: itself if it is a module, and its module-valued attributes.

    Attributes whose name starts with ``_`` are derived state (e.g. the binding scorer's fused copy of its
    trunk, built on first use) and are left out: a plugin's fingerprint is the same before and after use.
    """
    import torch

    modules = []
    if isinstance(plugin, torch.nn.Module):
        modules.append(("", plugin))
    else:
        for name, value in sorted(vars(plugin).items()):
            if isinstance(value, torch.nn.Module) and not name.startswith("_"):
                modules.append((name, value))
    return _tensor_digest(modules) if modules else ""


#: settings that choose a numeric path (how a decoder computes), not what it computes: left out of the
#: protocol's ``decoder_version`` (``fingerprint(..., numeric=False)``), kept in every cache key
NUMERIC_SETTINGS = frozenset({"compute_dtype", "sampling_dtype"})


def plugin_settings(plugin, numeric: bool = True) -> dict:
    """The plugin's JSON-able scalar settings (options such as steps, guidance, training seed)."""
    out = {}
    for name, value in sorted(vars(plugin).items()):
        if name.startswith("_") or name == "training" or (not numeric and name in NUMERIC_SETTINGS):
            continue
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[name] = list(value)
        elif isinstance(value, os.PathLike):
            out[name] = str(value)
    config = getattr(plugin, "config", None)
    if config is not None:
        try:
            out["config"] = json.loads(
                json.dumps(config, default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o))
            )
        except (TypeError, ValueError):
            out["config"] = str(config)
        if not numeric and isinstance(out["config"], dict):
            out["config"] = {k: v for k, v in out["config"].items() if k not in NUMERIC_SETTINGS}
    return out


def fingerprint(plugin, code: bool = True, numeric: bool = True) -> str:
    """Identity of a prior, decoder or scorer: class, settings, weights and (``code``) its source.

    ``numeric=False`` leaves out the settings that only choose a numeric path (:data:`NUMERIC_SETTINGS`,
    e.g. the synth decoder's bfloat16 sampling): the protocol's ``decoder_version``, under which a float32
    and a bfloat16 decode of the same weights are one protocol. A plugin may define ``fingerprint()``
    itself (e.g. to hash a weights file instead of its tensors).
    """
    own = getattr(plugin, "fingerprint", None)
    if callable(own):
        return str(own())
    from evalkit import __version__

    parts = {
        "class": f"{type(plugin).__module__}.{type(plugin).__qualname__}",
        "name": getattr(plugin, "name", ""),
        "version": getattr(plugin, "version", ""),
        "settings": plugin_settings(plugin, numeric),
        "weights": held_weights_digest(plugin),
    }
    if code:
        parts.update(source=source_digest(plugin), evalkit=__version__)
    return content_hash(parts, length=KEY_LENGTH)
