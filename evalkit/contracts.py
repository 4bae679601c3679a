"""The contracts between evalkit's plugins: read this module first.

Data flow of one run::

    Suite.items(split) ──► PromptItem (prompt, category, noun phrases, seen/unseen, swapped prompt)
        × seeds          ──► Batch (one entry per image: item + seed [+ ground-truth scene])
    Prior.predict(batch) ──► image_embeds (N, D)   dim + normalisation declared by the prior
    Decoder.decode(image_embeds, batch, protocol) ──► images (N, 3, H, W), float in [0, 1]
    Scorer.update(images, batch) ──► per-image rows;  Scorer.compute() ──► {category: value}

The prior↔decoder contract is the embedding: :func:`check_embedding_contract` runs before
any generation. Torch is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

from evalkit.errors import EmbeddingContractError, EvalkitError

if TYPE_CHECKING:  # pragma: no cover
    import torch

Normalisation = Literal["raw", "l2"]
NORMALISATIONS = ("raw", "l2")


def content_hash(obj: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able object (dataclasses allowed). The one hashing function of evalkit."""

    def default(o):
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(f"cannot hash {type(o).__name__}")

    text = json.dumps(obj, sort_keys=True, default=default, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a suite. An *item* of a run is (PromptItem, seed)."""

    prompt: str
    category: str  # the binding family: "color" | "shape" | "texture" | ...
    split: str  # "train" | "dev" | "val"
    item_id: str  # stable within the suite, e.g. "color-val-0007"
    noun_phrases: tuple[str, ...] | None = None  # None: a splitter fills them in at scoring time
    seen: bool | None = None  # attribute–object combinations seen in training (None: unknown)
    swapped_prompt: str | None = None  # the attribute-swapped counterpart, when the suite has one
    meta: dict = field(default_factory=dict, hash=False, compare=False)  # JSON-able extras

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Suite(abc.ABC):
    """A versioned prompt set. Subclasses implement :meth:`load_items`."""

    name: str = ""
    category: str = ""
    splits: tuple[str, ...] = ("val",)
    #: scorers ``evalkit run`` uses for this suite when ``--scorer`` is not given
    default_scorers: tuple[str, ...] = ()

    @abc.abstractmethod
    def load_items(self, split: str) -> list[PromptItem]:
        """All items of ``split`` in a fixed order."""

    def items(self, split: str = "val") -> list[PromptItem]:
        if split not in self.splits:
            raise ValueError(f"suite {self.name!r} has no split {split!r}; it has {', '.join(self.splits)}")
        return self.load_items(split)

    def version(self, split: str = "val") -> str:
        """Hash of the parsed prompt list of ``split`` (prompts, categories, phrases, seen flags)."""
        rows = [(i.prompt, i.category, i.noun_phrases, i.seen, i.swapped_prompt) for i in self.items(split)]
        return content_hash([self.name, split, rows])

    def ground_truth(self, item: PromptItem, seed: int) -> Any | None:
        """The scene an (item, seed) pair denotes, for suites that know it (synthetic); else None."""
        return None


# --------------------------------------------------------------------------- batches


@dataclass
class TextEncoding:
    """Text encodings of one embedding space, one row per prompt in the batch."""

    encoder: str  # name of the embedding space, e.g. "synth-clip" or "clip-vit-l-14"
    text_embeds: "torch.Tensor"  # (N, D) pooled, projected text embeddings
    text_hidden: "torch.Tensor | None" = None  # (N, L, W) per-token hidden states
    attention_mask: "torch.Tensor | None" = None  # (N, L) bool, True = real token


@dataclass
class Batch:
    """One entry per image to produce: the item, its seed and (synthetic suites) its scene."""

    items: list[PromptItem]
    seeds: list[int]
    scenes: list[Any] | None = None
    text: dict[str, TextEncoding] = field(default_factory=dict)  # filled by the runner, per encoder

    def __post_init__(self):
        if len(self.items) != len(self.seeds):
            raise ValueError(f"batch has {len(self.items)} items but {len(self.seeds)} seeds")
        if self.scenes is not None and len(self.scenes) != len(self.items):
            raise ValueError("batch scenes must match items one to one")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def prompts(self) -> list[str]:
        return [item.prompt for item in self.items]

    def subset(self, indices: Sequence[int]) -> "Batch":
        """The entries at ``indices`` (text encodings are not carried over: the runner fills them per batch)."""
        return Batch(
            [self.items[i] for i in indices],
            [self.seeds[i] for i in indices],
            None if self.scenes is None else [self.scenes[i] for i in indices],
        )

    @classmethod
    def from_prompts(cls, prompts: Sequence[str], seeds: Sequence[int] | None = None, category: str = "") -> "Batch":
        items = [PromptItem(p, category, "val", f"adhoc-{i}") for i, p in enumerate(prompts)]
        return cls(items, list(seeds) if seeds is not None else [0] * len(items))


def seeded_generators(seeds: Sequence[int], device: str = "cpu") -> list["torch.Generator"]:
    """One generator per image: an image's randomness comes from its own seed, never from its batch."""
    import torch

    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def per_image_randn(seeds: Sequence[int], shape: Sequence[int], device: str = "cpu", dtype=None) -> "torch.Tensor":
    """Gaussian noise of ``(len(seeds), *shape)``, row i drawn from seed i alone. Plugins draw it on the CPU
    (the default) and move it to their device: CUDA generators give other numbers than CPU ones, so noise drawn
    on the device would make a GPU run start from other noise than a CPU run."""
    import torch

    rows = [
        torch.randn(tuple(shape), generator=g, device=device, dtype=dtype) for g in seeded_generators(seeds, device)
    ]
    return torch.stack(rows) if rows else torch.empty((0, *shape), device=device, dtype=dtype)


# --------------------------------------------------------------------------- plugins


def _quiet_diffusers():
    """A context in which diffusers logs errors only (restored after)."""
    import contextlib

    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def quiet():
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            yield
        finally:
            diffusers_logging.set_verbosity(level)

    return quiet()


class Placeable:
    """Where a plugin computes (``evalkit run --device / --dtype``; :mod:`evalkit.placement`).

    The run loads every plugin on the CPU, then calls :meth:`to_placement`. The default moves every torch
    module of :meth:`torch_modules` to the device and casts its floating weights to the dtype; a plugin whose
    precision is not its weights' (the synth decoder samples under autocast) overrides it. Compute code makes
    its tensors on the device of its own weights and returns results there or on the CPU (the run moves them).
    """

    #: what ``--dtype`` may choose for this plugin (torch names)
    supported_dtypes: ClassVar[tuple[str, ...]] = ("float32",)

    def torch_modules(self) -> list:
        """Every ``torch.nn.Module`` the plugin computes with: itself when it is one, else its module-valued
        attributes (private ones too) and the modules of attributes that are plugins themselves (a text
        encoder held by a prior). No module is listed twice."""
        import torch

        found: list = []
        seen: set[int] = set()

        def visit(value, depth: int) -> None:
            if id(value) in seen or depth > 2:
                return
            if isinstance(value, torch.nn.Module):
                seen.add(id(value))
                found.append(value)
            elif isinstance(value, Placeable) and value is not self:
                seen.add(id(value))
                for module in value.torch_modules():
                    if id(module) not in seen:
                        seen.add(id(module))
                        found.append(module)
            elif isinstance(value, (list, tuple)) or (
                hasattr(value, "__dict__")
                and type(value).__module__.startswith("evalkit")
                and not isinstance(value, type)
            ):
                seen.add(id(value))
                for item in value if isinstance(value, (list, tuple)) else vars(value).values():
                    visit(item, depth + 1)

        if isinstance(self, torch.nn.Module):
            return [self]
        seen.add(id(self))
        for value in vars(self).values():
            visit(value, 0)
        return found

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """Move every module to ``device``; cast floating weights to ``dtype`` (None: keep their precision)."""
        from evalkit.placement import torch_dtype

        cast = torch_dtype(dtype) if dtype is not None else None
        own = getattr(self, "torch_modules", None)  # placement.place also calls this on non-Placeable plugins
        with _quiet_diffusers():  # its ModelMixin warns on every cast about modules to keep in float32 (none here)
            for module in own() if callable(own) else Placeable.torch_modules(self):
                module.to(device=device, dtype=cast) if cast is not None else module.to(device=device)


class EmbeddingSpec:
    """What an embedding-producing or -consuming plugin declares."""

    embedding_space: str = ""
    embedding_dim: int = 0
    normalisation: Normalisation = "raw"


class TextEncoder(abc.ABC):
    """The text encoder of one embedding space: what a prior that declares ``text_encoders = (space,)`` reads
    from ``batch.text`` (the run encodes every prompt once per space, :class:`evalkit.harness.runner.TextCache`).

    The run takes a space's encoder from :meth:`Decoder.text_encoder`, else a prior's :meth:`Prior.text_encoder`,
    else :func:`evalkit.text_encoders.load_text_encoder`. evalkit's encoders derive from it (the world CLIP,
    :class:`evalkit.world.models.clip.WorldCLIP`; the transformers CLIP text towers,
    :class:`evalkit.priors.real.HFTextEncoder`); a third-party encoder that only has ``encode_text`` is read
    through :func:`text_encoder_parameters` and :func:`text_encoder_unknown_words`."""

    embedding_space: str = ""

    @abc.abstractmethod
    def encode_text(self, prompts: Sequence[str]) -> TextEncoding:
        """One row per prompt, in the order given."""

    def num_text_parameters(self) -> int:
        """Parameters of the text tower (counted in a prior's ``total_parameters``); 0 by default."""
        return 0

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of ``prompt`` outside a closed vocabulary (the world CLIP's); [] (the default): it reads any text."""
        return []


def text_encoder_parameters(encoder) -> int:
    """:meth:`TextEncoder.num_text_parameters` of ``encoder`` (0 for None, and its default for an encoder that
    does not derive from :class:`TextEncoder` and lacks the method)."""
    if encoder is None:
        return 0
    count = (
        encoder.num_text_parameters
        if isinstance(encoder, TextEncoder)
        else getattr(encoder, "num_text_parameters", None)
    )
    return int(count()) if callable(count) else 0


def text_encoder_unknown_words(encoder, prompt: str) -> list[str] | None:
    """:meth:`TextEncoder.unknown_words` of ``encoder`` on ``prompt``; None when the encoder has no closed
    vocabulary to check (it does not derive from :class:`TextEncoder` and lacks the method)."""
    finder = encoder.unknown_words if isinstance(encoder, TextEncoder) else getattr(encoder, "unknown_words", None)
    return None if finder is None else list(finder(prompt))


def _no_tiny(cls) -> NotImplementedError:
    return NotImplementedError(
        f"{cls.__module__}.{cls.__qualname__} has no tiny(): a plugin provides tiny() — a small "
        "instance built in code with random weights, in seconds on a CPU — for the contract "
        "tests (tests/test_contracts.py)"
    )


class Prior(Placeable, EmbeddingSpec, abc.ABC):
    """Maps a batch of prompts to image embeddings of a declared space, dim and normalisation."""

    name: ClassVar[str] = ""
    #: embedding spaces whose text encodings the prior reads from ``batch.text`` (empty: none)
    text_encoders: tuple[str, ...] = ()
    #: the output is a function of (weights, settings, prompt, seed): runs may cache it (False: never cached)
    seeded: ClassVar[bool] = True
    #: the guidance negative its pipeline gives a decoder that takes one (Kandinsky 2.2): "empty-prompt" (the
    #: prior's embedding of ""), or "zero-image" (:meth:`zero_image_embedding`, the public Kandinsky pipelines')
    negative: ClassVar[str] = "empty-prompt"
    #: the text encoder (a CLIP) the prior holds already, shared by the run under its ``embedding_space`` when
    #: the decoder holds none; reading it loads nothing. None (the default): it holds none (yet)
    clip: "TextEncoder | None" = None
    #: set on builds with random weights (``--random-init``): ``{"size", "seed"}``; None: loaded weights
    random_weights: dict | None = None

    @abc.abstractmethod
    def predict(self, batch: Batch) -> "torch.Tensor":
        """Return ``(len(batch), embedding_dim)`` float32 image embeddings."""

    @classmethod
    def tiny(cls) -> "Prior":
        """A small instance built in code (random weights, seconds on a CPU), for the contract tests."""
        raise _no_tiny(cls)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return 0

    def training_data(self) -> str:
        """What the prior was trained on, for the parameter-versus-composition table ("" when untrained)."""
        return ""

    def text_encoder(self) -> "TextEncoder | None":
        """The encoder of a space in :attr:`text_encoders` that no plugin of the run holds yet (:attr:`clip`),
        loaded by the prior if need be (the trained priors load the world CLIP once). None (the default): the
        run loads the space's own (:func:`evalkit.text_encoders.load_text_encoder`)."""
        return None

    def zero_image_embedding(self) -> "torch.Tensor | None":
        """``(D,)``: a zero image embedded by the image encoder of the prior's pipeline, the guidance negative of
        ``--negative zero-image`` (the public Kandinsky 2.2 prior pipelines'). None (the default): its
        pipeline has no image encoder, and the run refuses that negative."""
        return None


@dataclass(frozen=True)
class Protocol:
    """The generation protocol: everything besides the prior that determines an image and its score.

    ``dtype`` records what the decoder computed in; it is the numeric path, not the protocol, so it is
    left out of :meth:`hash`: a float32 and a bfloat16 decode of one decoder compare (``evalkit compare``
    notes the difference with the rest of the run's environment) while the work cache keeps them apart
    (:meth:`decoding`)."""

    decoder: str
    num_inference_steps: int
    guidance_scale: float
    resolution: int
    images_per_prompt: int = 10
    seed: int = 42  # image i of a prompt uses seed + i, as T2I-CompBench
    dtype: str = "float32"
    scorer: str = ""
    scorer_version: str = ""
    decoder_version: str = (
        ""  # fingerprint of the decoder's weights and settings (a retrained decoder is another protocol)
    )
    random_init: str = (
        ""  # "real" | "tiny": every model had random weights (--random-init; speed runs); "": loaded weights
    )
    negative: str = ""  # --negative for decoders that take one: "empty-prompt" | "zero-image" ("": each prior's own)
    prior_dtype: str = "float32"  # what the priors computed in (the numeric path: not hashed, as dtype)
    scorer_dtype: str = "float32"  # what the scorers computed in (idem)

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.images_per_prompt)]

    def decoding(self) -> dict:
        """The fields that determine an image given its embedding, prompt and seed."""
        return {
            "decoder": self.decoder,
            "decoder_version": self.decoder_version,
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "resolution": self.resolution,
            "dtype": self.dtype,
        }

    def hash(self) -> str:
        fields = dataclasses.asdict(self)
        for name in ("dtype", "prior_dtype", "scorer_dtype"):  # the numeric path (class docstring)
            del fields[name]
        for name in ("random_init", "negative"):  # unset: the hash protocols had before the field existed
            if not fields[name]:
                del fields[name]
        return content_hash(fields)


class Decoder(Placeable, EmbeddingSpec, abc.ABC):
    """Turns image embeddings (plus prompts and per-image seeds) into images."""

    name: ClassVar[str] = ""
    resolution: int = 0
    default_num_inference_steps: int = 25
    default_guidance_scale: float = 1.0
    compute_dtype: str = "float32"  # what the decoder computes in; recorded as the protocol's dtype
    #: decoders whose guidance takes a negative image embedding from the prior's pipeline (``decode(...,
    #: negative_image_embeds=)``; Kandinsky 2.2): the run passes it explicitly (``--negative``)
    takes_negative_image_embeds: ClassVar[bool] = False
    #: the output sides ``--resolution`` may choose (empty: only :attr:`resolution`); a decoder that has several
    #: takes ``resolution=`` in its constructor / ``from_pretrained`` (``load_decoder(..., resolution=)``)
    supported_resolutions: ClassVar[tuple[int, ...]] = ()
    #: the text encoder (a CLIP) the decoder holds, shared by the run under its ``embedding_space`` before any
    #: prior's (:meth:`evalkit.text_encoders.text_encoders`); None (the default): it holds none
    clip: "TextEncoder | None" = None

    @abc.abstractmethod
    def decode(self, image_embeds: "torch.Tensor", batch: Batch, protocol: Protocol) -> "torch.Tensor":
        """Return images ``(N, 3, H, W)`` as float in [0, 1]; image i depends only on row i and seed i."""

    @classmethod
    def tiny(cls) -> "Decoder":
        """A small instance built in code (random weights, seconds on a CPU), for the contract tests."""
        raise _no_tiny(cls)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return 0


class Scorer(Placeable, abc.ABC):
    """Per-image scores, torchmetrics style: ``update`` accumulates, ``compute`` aggregates."""

    name: ClassVar[str] = ""
    version: str = "1"
    higher_is_better: bool = True
    #: "images": ``score(images, batch)``; "embeddings": ``score_embeddings(image_embeds, batch)`` on the
    #: prior's output, before (and without) decoding
    reads: ClassVar[str] = "images"
    #: the smallest change of one image's score that means something: 1 for scores that flip (a P(yes)
    #: product, a share of phrases); smaller for continuous ones. It sets the floor of a paired test's error
    #: (:func:`evalkit.stats.paired_floor`): half a pseudo-image differing by this much
    score_resolution: ClassVar[float] = 1.0

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def reset(self) -> None:
        self.rows = []

    @abc.abstractmethod
    def score(self, images: "torch.Tensor", batch: Batch) -> list[dict]:
        """One row per image: at least ``{"score": float}``; B-VQA scorers add ``questions``."""

    @classmethod
    def tiny(cls) -> "Scorer":
        """A small instance built in code (random weights, seconds on a CPU), for the contract tests."""
        raise _no_tiny(cls)

    def not_applicable(self, item: PromptItem) -> str | None:
        """Why this scorer's score of ``item`` would mean nothing (None: it applies). A scorer with a closed
        vocabulary (the synthetic world's) says so for prompts with words outside it; the run then excludes the
        item's rows from every mean, counts them and shows them in the report (``details.not_applicable``)."""
        return None

    def score_embeddings(self, image_embeds: "torch.Tensor", batch: Batch) -> list[dict]:
        """Scorers that read the prior's output (``reads = "embeddings"``): one row per embedding."""
        raise NotImplementedError(f"scorer {self.name!r} reads images")

    def update(self, inputs: "torch.Tensor", batch: Batch) -> list[dict]:
        """Score a batch — images, or the prior's embeddings for a scorer with ``reads = "embeddings"`` —
        and keep its rows."""
        rows = self.score_checked(inputs, batch)
        for row, item, seed in zip(rows, batch.items, batch.seeds):
            row.setdefault("item_id", item.item_id)
            row.setdefault("prompt", item.prompt)
            row.setdefault("category", item.category)
            row.setdefault("seen", item.seen)
            row.setdefault("seed", seed)
        self.rows.extend(rows)
        return rows

    def score_checked(
        self, inputs: "torch.Tensor", batch: Batch, label: str | None = None, reads: str | None = None
    ) -> list[dict]:
        """The one scorer call: :meth:`score` on images, or :meth:`score_embeddings` on embeddings (``reads``:
        which ``inputs`` are; default :attr:`reads`), with the row count checked (:class:`ScorerRowsError`
        names the scorer by ``label``, its name in the run, else :attr:`name`)."""
        rows = (self.score_embeddings if (reads or self.reads) == "embeddings" else self.score)(inputs, batch)
        if len(rows) != len(batch):
            raise ScorerRowsError(
                f"scorer {label if label is not None else self.name!r} returned {len(rows)} rows "
                f"for {len(batch)} images"
            )
        return rows

    def compute(self) -> dict[str, float]:
        """Mean score per category over the images seen since the last reset."""
        sums: dict[str, list[float]] = {}
        for row in self.rows:
            sums.setdefault(row["category"], []).append(float(row["score"]))
        return {cat: sum(v) / len(v) for cat, v in sums.items()}


class ScorerRowsError(EvalkitError, RuntimeError):
    """A scorer returned another number of rows than it was given images."""


def check_embeddings(prior_name: str, embeds: "torch.Tensor", batch: Batch, dim: int) -> None:
    """A prior's output for ``batch``: ``(len(batch), dim)`` and finite (NaN / inf is an error naming the first
    prompt and seed it happened for; the run checks before anything of it is cached)."""
    import torch

    if embeds.shape != (len(batch), dim):
        raise EvalkitError(
            f"prior {prior_name!r} returned {tuple(embeds.shape)} embeddings; expected ({len(batch)}, {dim})"
        )
    bad = (~torch.isfinite(embeds)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise EvalkitError(
            f"prior {prior_name!r} returned NaN/inf embeddings for {len(bad)} image(s), the first for "
            f"prompt {batch.prompts[bad[0]]!r} (seed {batch.seeds[bad[0]]}); nothing of it was cached"
        )


def check_embedding_contract(prior: EmbeddingSpec, decoder: EmbeddingSpec) -> None:
    """Raise :class:`EmbeddingContractError` unless the prior's embeddings fit the decoder."""
    pname = getattr(prior, "name", type(prior).__name__)
    dname = getattr(decoder, "name", type(decoder).__name__)
    problems = []
    if prior.embedding_dim != decoder.embedding_dim:
        problems.append(f"dimension {prior.embedding_dim} vs {decoder.embedding_dim}")
    if prior.embedding_space != decoder.embedding_space:
        problems.append(f"embedding space {prior.embedding_space!r} vs {decoder.embedding_space!r}")
    if prior.normalisation != decoder.normalisation:
        problems.append(f"normalisation {prior.normalisation!r} vs {decoder.normalisation!r}")
    if problems:
        raise EmbeddingContractError(
            f"prior {pname!r} cannot feed decoder {dname!r}: "
            + "; ".join(problems)
            + ". Pick a prior trained for the decoder's CLIP space (see `evalkit ls priors`)."
        )


# --------------------------------------------------------------------------- runs and results


@dataclass
class ResultRow:
    """One aggregated number of a run (the schema of ``results.json`` rows)."""

    prior: str
    decoder: str
    suite: str
    suite_version: str
    category: str
    split: str
    seen: str  # "all" | "seen" | "unseen"
    metric: str
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int  # images
    protocol_hash: str
    tag: str = ""
    num_parameters: int = 0  # the prior's trainable parameters
    higher_is_better: bool = True
    total_parameters: int = 0  # prior + the text encoder it reads + the decoder
    prior_version: str = ""  # fingerprint of the prior's weights and settings
    n_prompts: int = 0  # prompts behind the row (the bootstrap's clusters)
    score_resolution: float = 1.0  # the scorer's (Scorer.score_resolution): floors paired tests of the row


@dataclass
class SampleRow:
    """One scored image (the schema of ``samples.jsonl``: one row per prior × item × seed × scorer)."""

    prior: str
    suite: str
    scorer: str
    item_id: str
    prompt: str
    seed: int
    category: str
    seen: bool | None
    image_path: str  # relative to the run folder ("" when images are not kept)
    score: float
    questions: list[dict] = field(default_factory=list)  # [{"question": str, "p": float}]: why an image scored low
    details: dict = field(default_factory=dict)  # anything else the scorer reports (e.g. per-object readings)
