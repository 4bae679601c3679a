"""``RunConfig``: everything ``evalkit run`` needs, one field per CLI flag.

Each field's default and help live here only: ``evalkit run``'s options are generated from
``dataclasses.fields(RunConfig)`` (:mod:`evalkit.cli`), and ``evalkit run --config FILE`` reads the
same fields from a JSON or TOML file (:func:`load_config_file`), so a flag, a file key and a library
call can never disagree on a default. A field's ``metadata`` holds what the flag needs beyond its
name and type: ``help``; ``flag`` when the flag is not ``--<field-name>``; ``parse`` for flags that
are parsed on the CLI side (``names``: one comma-separated value; ``pairs``: repeatable ``NAME=DIR``);
``multiple``, ``choices``, ``metavar``, ``path`` (``file`` | ``dir`` | ``any``), ``negatable``
(``--x/--no-x``), ``flag_value`` (a value the bare flag stands for) and ``show_default``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import SettingError, UnknownNameError

#: the keys of a field's metadata that :mod:`evalkit.cli` reads (see the module docstring)
FLAG_KEYS = (
    "help",
    "flag",
    "parse",
    "multiple",
    "choices",
    "metavar",
    "path",
    "negatable",
    "flag_value",
    "show_default",
)


def flag(default=None, help: str = "", *, factory=None, **cli):
    """A RunConfig field carrying its flag's help and CLI details, so they sit beside the default they describe."""
    unknown = set(cli) - set(FLAG_KEYS)
    if unknown:  # a typo here would silently drop part of a flag
        raise TypeError(f"unknown flag metadata {sorted(unknown)}")
    metadata = {"help": help, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


PATHS = dict(metavar="NAME=DIR", parse="pairs", multiple=True)


@dataclass
class RunConfig:
    """Everything ``evalkit run`` needs; each field is one CLI flag."""

    priors: list[str] = flag(
        factory=lambda: ["oracle"],
        flag="--prior",
        parse="names",
        help="comma-separated priors: a name (eclipse, projection and diffusion follow the decoder's space: eclipse "
        "beside karlo is eclipse-karlo), or LABEL=NAME to run a class under a label of your own (a second "
        "checkpoint: eclipse,mine=eclipse --prior-path mine=DIR)",
    )
    decoder: str = flag("synth", "decoder name")
    decoder_path: str | None = flag(None, "load the decoder from this folder (e.g. a local karlo-v1-alpha)", path="any")
    suites: list[str] = flag(
        factory=lambda: ["synth-color"],
        flag="--suite",
        parse="names",
        show_default=False,
        help="comma-separated suite names [default: synth-color, unless --prompts is given]",
    )
    scorers: list[str] = flag(
        factory=list,
        flag="--scorer",
        parse="names",
        help="comma-separated scorer names (default: the suites' own: binding,analytic for "
        "synthetic suites, blip-vqa for T2I-CompBench)",
    )
    split: str = flag("val", "train | dev | val")
    images_per_prompt: int = flag(10, "images per prompt (seeds seed … seed+n−1)")
    seed: int = flag(42, "seed of each prompt's first image")  # image i of a prompt uses seed + i (T2I-CompBench)
    num_inference_steps: int | None = flag(None, "decoder steps (default: the decoder's)")
    guidance_scale: float | None = flag(None, "decoder classifier-free guidance (default: the decoder's)")
    prior_num_inference_steps: int | None = flag(None, "diffusion priors: sampling steps (default 25)")
    prior_guidance_scale: float | None = flag(None, "diffusion priors: classifier-free guidance (default 4.0)")
    # 16 measured fastest for the synth decoder on 2 CPU cores
    batch_size: int = flag(16, "images per decoder call (raise it on a GPU)")
    limit: int | None = flag(None, "only the first N prompts of each suite")
    out: str = flag("evalkit-runs", "parent folder; each run gets its own new folder inside", path="dir")
    prior_paths: dict = flag(
        factory=dict,
        flag="--prior-path",
        **PATHS,
        help="load trained prior NAME from a weights folder instead of its shipped seed 0 (repeatable)",
    )
    scorer_paths: dict = flag(
        factory=dict,
        flag="--scorer-path",
        **PATHS,
        help="load scorer NAME (e.g. blip-vqa) from a weights folder (repeatable)",
    )
    allow_pickle: bool = flag(
        False,
        "accept pickle checkpoints (.bin/.pt) in --prior-path, --decoder-path and "
        "--scorer-path folders (read with weights_only=True: plain tensors only, no "
        "code runs); refused by default",
    )
    tag: str = flag("", "a label stored in every result row (e.g. a branch name)")
    cache: bool = flag(
        True,
        "reuse embeddings, images and scores of earlier runs (content-addressed) and store new ones",
        negatable=True,
    )
    cache_dir: str | None = flag(None, "work cache folder (default: <evalkit cache>/work)", path="dir")
    random_init: str | None = flag(
        None,
        "build the priors and the decoder at their public architectures (real; "
        "tiny: test sizes) with random weights, without any weights folder: images "
        "are noise, for speed and memory measurements only (bare --random-init = "
        "real; no work cache)",
        choices=("real", "tiny"),
        flag_value="real",
    )
    dtype: str | None = flag(
        None,
        "float32 | bfloat16 | float16 for every stage, or per stage: decoder=float16,"
        "prior=float32,scorer=float32 (default: each plugin's own; each declares what it "
        "supports); recorded with the run, not part of the protocol",
        metavar="DTYPE|STAGE=DTYPE,...",
    )
    device: str = flag(
        "auto",
        "auto | cpu | cuda | cuda:N (auto: CUDA when present; under torchrun / accelerate "
        "each process uses its own GPU, cuda:$LOCAL_RANK)",
    )
    resolution: int | None = flag(
        None,
        "output side for decoders that support several (kandinsky22: a multiple of "
        "64, default 512); recorded in the protocol",
    )
    offload: bool = flag(
        False,
        "real decoders: model CPU offload, each component on the GPU only while it runs (less GPU memory, slower)",
    )
    attention: str | None = flag(
        None,
        "real decoders: attention processors (default: as loaded, sdpa where torch has it)",
        choices=("sdpa", "eager"),
    )
    vae_chunk_size: int | None = flag(None, "real decoders: decode at most N latents per VAE / MoVQ call")
    plugins: list[str] = flag(
        factory=list,
        flag="--plugin",
        multiple=True,
        metavar="[NAME=]module:Class",
        help="register a Prior, Decoder, Scorer or Suite class for this run, without packaging (repeatable)",
    )
    prompts_dir: str | None = flag(
        None,
        "local copy of the T2I-CompBench prompt files (default: $EVALKIT_PROMPTS_DIR or the fetched copy)",
        path="dir",
    )
    prompt_files: list[str] = flag(
        factory=list,
        flag="--prompts",
        multiple=True,
        path="file",
        help="your own prompts (a .txt file, one per line; or .jsonl / .csv with a prompt "
        "column): a suite named prompts-<file stem> (repeatable; needs --category)",
    )
    category: str | None = flag(None, "the binding category of the --prompts prompts (color, shape, texture, ...)")
    negative: str | None = flag(
        None,
        "kandinsky22's guidance negative: the prior's embedding of the empty prompt, or "
        "the zero-image embedding of the prior pipeline's image encoder (default: each "
        "prior's pipeline's own — zero-image for the Kandinsky priors, as the public "
        "pipelines); recorded in the protocol",
        choices=("empty-prompt", "zero-image"),
    )


def field_types() -> dict[str, object]:
    """Each field's resolved annotation (the module's annotations are strings)."""
    return typing.get_type_hints(RunConfig)


def base_type(hint) -> tuple[type, bool]:
    """(the annotation's type without ``| None``, whether None is allowed)."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    if args:
        rest = [a for a in args if a is not type(None)]
        return typing.get_origin(rest[0]) or rest[0], len(rest) < len(args)
    return typing.get_origin(hint) or hint, False


# --------------------------------------------------------------------------- config files


def load_config_file(path: str | os.PathLike) -> dict:
    """The RunConfig fields a JSON or TOML file sets, checked (unknown keys, types) before anything runs,
    so that a typo in a file fails in a second rather than after (or, worse, silently during) a long run."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingError(f"cannot read the run config {path}: {error}") from None
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise SettingError(f"{path} is not valid TOML: {error}") from None
    elif path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise SettingError(f"{path} is not valid JSON: {error}") from None
    else:
        raise SettingError(f"{path}: a run config is a .json or .toml file")
    if not isinstance(values, dict):
        raise SettingError(f"{path} holds a {type(values).__name__}; a run config is one object of RunConfig fields")
    return check_values(values, str(path))


def check_values(values: dict, where: str = "run config") -> dict:
    """``values`` with each checked against its field's type and choices (ints are accepted for floats and
    made floats, as a flag would: 4 and 4.0 must give one protocol)."""
    hints = field_types()
    meta = {f.name: f.metadata for f in dataclasses.fields(RunConfig)}
    out = {}
    for key, value in values.items():
        if key not in hints:
            error = UnknownNameError("RunConfig field", key, list(hints))
            error.args = (f"{where}: {error.args[0]}",)  # which file holds the typo
            raise error
        out[key] = _checked(key, value, hints[key], meta[key], where)
    return out


def _checked(key: str, value, hint, meta, where: str):
    kind, optional = base_type(hint)
    if value is None and optional:
        return None
    if kind is list and meta.get("parse") == "names" and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]  # as the flag: "oracle,eclipse"
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list) and all(isinstance(v, str) for v in value),
        dict: isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
    }[kind]
    if not ok:
        wanted = {
            list: "a list of strings",
            dict: "a table of NAME = DIR strings",
            int: "an integer",
            float: "a number",
            bool: "true or false",
            str: "a string",
        }[kind]
        raise SettingError(
            f"{where}: {key} must be {wanted}{' (or null)' if optional else ''}, not {type(value).__name__} {value!r}"
        )
    if meta.get("choices") and value not in meta["choices"]:
        raise SettingError(f"{where}: {key} must be one of {', '.join(meta['choices'])}, not {value!r}")
    return float(value) if kind is float else value


def resolve(layers: list[dict]) -> RunConfig:
    """RunConfig from layers of field values, later ones winning (a preset, a config file, the flags given)."""
    merged: dict = {}
    for layer in layers:
        merged.update(layer)
    if "suites" not in merged and merged.get("prompt_files"):  # your own prompts alone, not synth-color as well
        merged["suites"] = []
    return RunConfig(**merged)
