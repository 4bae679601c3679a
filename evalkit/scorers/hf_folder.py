"""Local transformers model folders for scorers: resolve, check the layout and the model kind, load quietly.

The T2I-CompBench scorers (``t2i-spatial``: OWLv2, ``t2i-clip``: CLIP ViT-B/32) read a folder in the layout of
a public Hugging Face repository. Nothing is downloaded. :func:`check_model_folder` refuses, before anything is
loaded, a folder that lacks a file of that layout, that holds another kind of model (``config.json``'s
``model_type``: a CLIP folder given to the detector), or that holds only pickle weights (unless
``allow_pickle``); each message names the folder, what is wrong and the layout expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.serialization import find_weights, weights_folder, weights_format

SAFETENSORS_INDEX = "model.safetensors.index.json"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: a CLIP BPE tokenizer: the two-file form (vocab.json + merges.txt) or tokenizer.json
CLIP_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def download_hint(repo_id: str, env_var: str, scorer: str):
    """``hint(directory)``: how to get the weights of ``repo_id`` onto this machine."""

    def hint(directory: str | os.PathLike | None = None) -> str:
        target = directory or "DIR"
        return (
            f"Download {repo_id} on a machine with network access: `huggingface-cli download {repo_id} "
            f"--local-dir {target}`, copy the folder here, then set {env_var}={target} or pass "
            f"--scorer-path {scorer}={target}."
        )

    return hint


def layout_text(repo_id: str, model_type: str) -> str:
    """The files a folder needs, in words (named in every error)."""
    return (
        f"the layout of the public {repo_id} repository: config.json (model_type {model_type!r}), "
        f"model.safetensors (or {SAFETENSORS_INDEX} and its shards), preprocessor_config.json, and the "
        "CLIP tokenizer files (vocab.json + merges.txt, or tokenizer.json)"
    )


def resolve_model_folder(path: str | os.PathLike | None, env_var: str, scorer: str, repo_id: str) -> Path:
    """``path``, else ``$env_var``; a :class:`WeightsNotFoundError` unless it names an existing folder."""
    return weights_folder(path, env_var, scorer, repo_id, download_hint(repo_id, env_var, scorer))


def check_model_folder(
    directory: Path, *, scorer: str, repo_id: str, model_types: Sequence[str], env_var: str, allow_pickle: bool = False
) -> bool:
    """Check ``directory`` holds a ``model_types[0]`` model in ``repo_id``'s layout; returns whether the weights are
    safetensors (else allowed pickle). Raises :class:`ConfigMismatchError` for another kind of model and
    :class:`WeightsNotFoundError` for a missing file."""
    hint = download_hint(repo_id, env_var, scorer)(directory)
    layout = layout_text(repo_id, model_types[0])
    config_path = directory / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigMismatchError(
                f"{scorer}: {config_path} is not readable JSON ({error}); expected {layout}. {hint}"
            ) from None
        kind = config.get("model_type") if isinstance(config, dict) else None
        if kind not in model_types:
            what = f"a {kind!r} model" if kind else "no model_type"
            raise ConfigMismatchError(
                f"{scorer}: {directory} holds {what} (config.json model_type), not {model_types[0]!r}: this scorer "
                f"needs a folder in {layout}. {hint}"
            )
    missing = [] if config_path.is_file() else ["config.json"]
    if not any((directory / name).is_file() for name in PROCESSOR_FILES):
        missing.append("preprocessor_config.json")
    if not any(all((directory / name).is_file() for name in group) for group in CLIP_TOKENIZER_FILES):
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    if not any(find_weights(directory)):
        missing.append("model.safetensors")
    if missing:
        raise WeightsNotFoundError(
            f"{scorer}: {directory} is not a complete {repo_id} folder: missing "
            f"{', '.join(missing)}; expected {layout}. {hint}"
        )
    safetensors_hint = f"Download model.safetensors (the public {repo_id} repository ships it)."
    return weights_format(directory, allow_pickle, scorer, hint=safetensors_hint)["use_safetensors"]


def load_local_model(model_cls, processor_cls, directory: Path, use_safetensors: bool, what: str, hint: str):
    """``(model, processor)`` from a local folder, quietly: the model in float32 (``weights_only``, safetensors
    unless ``use_safetensors`` is False), evaluation mode, frozen; the processor (or tokenizer) beside it. A
    folder that does not load is a :class:`CorruptFileError` naming ``what`` (the scorer), the class that failed,
    the folder, the library's reason and ``hint`` (how to restore it)."""
    import torch
    from safetensors import SafetensorError

    from evalkit.errors import CorruptFileError
    from evalkit.serialization import quiet_transformers

    with quiet_transformers():
        try:
            model = model_cls.from_pretrained(
                directory,
                local_files_only=True,
                use_safetensors=use_safetensors,
                weights_only=True,
                dtype=torch.float32,
            )
        except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as error:
            raise CorruptFileError(
                f"{what}: could not load {model_cls.__name__} from {directory} ({error}). {hint}"
            ) from None
        try:
            processor = processor_cls.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise CorruptFileError(
                f"{what}: could not load the {processor_cls.__name__} in {directory} ({error}). {hint}"
            ) from None
    model.eval()
    model.requires_grad_(False)
    return model, processor


def scorer_fingerprint(scorer, extra: dict | None = None, sources: Sequence = ()) -> str:
    """Identity of a scorer on a local model folder for the work cache: class, version, scalar settings (the
    folder's path left out: a moved copy is the same model), weights, image processor, the source of its
    classes and of ``sources`` (modules it computes with), evalkit's and transformers' versions."""
    import hashlib

    import transformers

    from evalkit import __version__
    from evalkit.fingerprints import held_weights_digest, plugin_settings, source_digest
    from evalkit.contracts import content_hash

    code = hashlib.sha256(source_digest(scorer).encode())
    for module in sources:
        code.update(Path(module.__file__).read_bytes())
    settings = {k: v for k, v in plugin_settings(scorer).items() if k != "path"}
    return content_hash(
        {
            "class": f"{type(scorer).__module__}.{type(scorer).__qualname__}",
            "name": scorer.name,
            "version": scorer.version,
            "settings": settings,
            "weights": held_weights_digest(scorer),
            "source": code.hexdigest(),
            "evalkit": __version__,
            "transformers": transformers.__version__,
            **(extra or {}),
        },
        length=32,
    )
