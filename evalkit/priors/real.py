"""Priors that load the public text-to-image prior checkpoints from local folders (no hub access).

Two kinds, told apart by their weights (both configs say ``"_class_name": "PriorTransformer"``):

* ECLIPSE (time-free, one forward pass): no ``time_embedding.*`` tensors, 77 + 3 positional tokens.
  :class:`EclipseCheckpointPrior` loads it into :class:`~evalkit.priors.eclipse.EclipsePriorTransformer`
  and samples as :class:`~evalkit.priors.eclipse.EclipsePrior` does (per-image seeded input noise).
* diffusion (Karlo / Kandinsky 2.2): diffusers' ``PriorTransformer`` with ``time_embedding.*``, 77 + 4
  tokens. :class:`DiffusionCheckpointPrior` samples as the public pipelines do: ``UnCLIPScheduler`` from the
  checkpoint's scheduler folder, classifier-free guidance against the empty prompt, ``post_process_latents``
  (``clip_mean`` / ``clip_std``). The scheduler's variance noise of image i comes from seed i alone.

Supported folder layout (``path``)::

    ROOT/prior/config.json + diffusion_pytorch_model.safetensors   (or the two files directly in ROOT)
    ROOT/text_encoder/  (transformers CLIPTextModelWithProjection)   optional: see text_encoder_path
    ROOT/tokenizer/     (CLIPTokenizer, four-file form)
    ROOT/scheduler/ or ROOT/prior_scheduler/                         (diffusion priors only)

The ECLIPSE-Community repos ship only the prior weights (in ROOT directly); their text encoder is the one
of the decoder's original prior: pass ``text_encoder_path`` (a folder holding ``text_encoder/`` +
``tokenizer/``, e.g. a local kandinsky-2-2-prior or karlo-v1-alpha copy).

Without any folder, ``random_init(size="real")`` builds a public checkpoint's architecture (prior, text
encoder, tokenizer, scheduler) with random weights, for speed and memory benchmarks (CLI: ``evalkit run
--random-init``); ``device="meta"`` builds it without memory (parameter counts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from evalkit.contracts import Batch, Placeable, Prior, TextEncoding, seeded_generators
from evalkit.errors import ConfigMismatchError, CorruptFileError, EvalkitError, WeightsNotFoundError
from evalkit.priors.diffusion import DiffusionPrior, DiffusionPriorTransformer
from evalkit.priors.eclipse import EclipsePrior, EclipsePriorTransformer
from evalkit.decoders.karlo import REAL_TEXT_ENCODER_CONFIG
from evalkit.priors.sizes import size_config
from evalkit.serialization import CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME, PICKLE_NAMES, load_state_dict

SPACE_L14 = "clip-vit-l-14"
SPACE_BIGG14 = "clip-vit-bigg-14"

# Public architectures, for random_init (keys not listed have the constructors' default values). Checked
# against the public config.json / scheduler_config.json files (docs/real-priors.md names the sources).
#: ECLIPSE-Community/ECLIPSE_{Karlo,KandinskyV22}_Prior: the paper size (10 layers, 16 heads x 32), 77 + 3 tokens
ECLIPSE_PRIOR_CONFIG_768 = size_config("eclipse", "paper", 768, 77)
ECLIPSE_PRIOR_CONFIG_1280 = size_config("eclipse", "paper", 1280, 77)
#: kakaobrain/karlo-v1-alpha prior/ and kandinsky-community/kandinsky-2-2-prior prior/ (diffusers PriorTransformer)
KARLO_PRIOR_CONFIG: dict[str, Any] = dict(num_attention_heads=32, attention_head_dim=64, num_layers=20,
                                          embedding_dim=768, num_embeddings=77, additional_embeddings=4, dropout=0.0)
KANDINSKY22_PRIOR_CONFIG: dict[str, Any] = dict(KARLO_PRIOR_CONFIG, embedding_dim=1280)
#: their UnCLIPScheduler configs (karlo-v1-alpha prior_scheduler/, kandinsky-2-2-prior scheduler/)
KARLO_PRIOR_SCHEDULER_CONFIG: dict[str, Any] = dict(variance_type="fixed_small_log", prediction_type="sample",
                                                    num_train_timesteps=1000, clip_sample=True, clip_sample_range=5.0)
KANDINSKY22_PRIOR_SCHEDULER_CONFIG: dict[str, Any] = dict(KARLO_PRIOR_SCHEDULER_CONFIG, clip_sample_range=10.0)
#: kandinsky-2-2-prior text_encoder/: OpenCLIP ViT-bigG/14's text tower with its 1280-d projection
#: (token ids as the offline CLIP tokenizer numbers them, as in evalkit.decoders.karlo.REAL_TEXT_ENCODER_CONFIG)
BIGG_TEXT_ENCODER_CONFIG: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, projection_dim=1280, hidden_act="gelu", bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407,
)

#: the public checkpoints. ``training_data`` is reported for a folder only when the sha256 of its weights file is
#: ``weights_sha256`` (the hub's LFS oid of ``diffusion_pytorch_model.safetensors``): None until someone with the
#: file records it (no hub access here), so until then a loaded folder's training data is "unknown"
KNOWN_CHECKPOINTS: list[dict[str, Any]] = [
    dict(name="eclipse-kandinsky22", repo_id="ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior", kind="eclipse",
         layout="config.json + diffusion_pytorch_model.safetensors at the repo root (prior only); text encoder "
                "and tokenizer from kandinsky-community/kandinsky-2-2-prior (text_encoder/, tokenizer/)",
         embedding_dim=1280, embedding_space=SPACE_BIGG14, parameters=34_190_592, text_encoder_parameters=694_659_840,
         pairs_with="kandinsky22", training_data="5M image-text pairs", weights_sha256=None,
         note="trainable parameters (+ 2,560 frozen clip_mean/clip_std) of the public config.json (and kandinsky-2-2-prior's text_encoder/config.json) "
              "built with random weights on the meta device; they match the paper's 34.2 M and the 137 MB fp32 file"),
    dict(name="eclipse-karlo", repo_id="ECLIPSE-Community/ECLIPSE_Karlo_Prior", kind="eclipse",
         layout="config.json + diffusion_pytorch_model.safetensors at the repo root (prior only); text encoder "
                "and tokenizer from kakaobrain/karlo-v1-alpha (text_encoder/, tokenizer/)",
         embedding_dim=768, embedding_space=SPACE_L14, parameters=33_141_504, text_encoder_parameters=123_650_304,
         pairs_with="karlo", training_data="5M image-text pairs", weights_sha256=None,
         note="trainable parameters (+ 1,536 frozen clip_mean/clip_std) of the public config.json (and karlo-v1-alpha's text_encoder/config.json) "
              "built with random weights on the meta device; they match the paper's 33.1 M and the 133 MB fp32 file"),
    dict(name="kandinsky22-prior", repo_id="kandinsky-community/kandinsky-2-2-prior", kind="diffusion",
         layout="prior/, scheduler/ (UnCLIPScheduler), text_encoder/ (CLIP ViT-bigG/14, projection 1280), "
                "tokenizer/ (+ image_encoder/, image_processor/, unused here)",
         embedding_dim=1280, embedding_space=SPACE_BIGG14, parameters=1_026_223_360,
         text_encoder_parameters=694_659_840, pairs_with="kandinsky22", training_data="",
         note="counts from the public prior/ and text_encoder/ config.json built with random weights on the meta "
              "device; they match the 4.1 GB and 2.78 GB fp32 files"),
    dict(name="karlo-prior", repo_id="kakaobrain/karlo-v1-alpha", kind="diffusion",
         layout="prior/, prior_scheduler/ (UnCLIPScheduler), text_encoder/ (CLIP ViT-L/14, projection 768), "
                "tokenizer/ (+ the decoder's folders, unused here); may ship .bin (pickle) weights",
         embedding_dim=768, embedding_space=SPACE_L14, parameters=1_022_028_544, text_encoder_parameters=123_650_304,
         pairs_with="karlo", training_data="",
         note="counts from the public prior/ and text_encoder/ config.json built with random weights on the meta "
              "device; they match the 4.09 GB and 495 MB fp32 files"),
]


def known_checkpoint(name: str) -> dict[str, Any]:
    for entry in KNOWN_CHECKPOINTS:
        if entry["name"] == name:
            return entry
    raise KeyError(f"no known checkpoint {name!r}; known: {', '.join(e['name'] for e in KNOWN_CHECKPOINTS)}")


# --------------------------------------------------------------------------- text encoder


def _use_safetensors(directory: Path, allow_pickle: bool) -> bool:
    """True when ``directory`` holds safetensors; refuse pickle-only folders unless ``allow_pickle``."""
    if any(directory.glob("*.safetensors")) or any(directory.glob("*.safetensors.index.json")):
        return True
    pickles = [p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".ckpt")]
    if not pickles:
        raise WeightsNotFoundError(f"no weights (*.safetensors) in {directory}")
    if not allow_pickle:
        raise WeightsNotFoundError(
            f"{directory} holds only pickle weights ({pickles[0]}); pickle can run arbitrary code, so it is refused "
            "by default. Convert to safetensors, or pass allow_pickle=True (CLI: --allow-pickle) if you trust the file.")
    return False


class HFTextEncoder(Placeable):
    """A transformers ``CLIPTextModelWithProjection`` + ``CLIPTokenizer`` as an evalkit text encoder.

    ``encode_text`` pads to the tokenizer's ``model_max_length`` and runs the encoder on the ids alone,
    as the public prior pipelines do: ``text_embeds`` (projected pooled output), ``last_hidden_state`` and
    the tokenizer's attention mask as bool, all on the encoder's device (embeddings in float32).
    """

    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self, text_encoder, tokenizer, embedding_space: str):
        self.model = text_encoder.eval()
        self.tokenizer = tokenizer
        self.embedding_space = embedding_space
        self.embedding_dim = int(text_encoder.config.projection_dim)
        self.hidden_size = int(text_encoder.config.hidden_size)
        self.context_length = int(tokenizer.model_max_length)

    @classmethod
    def from_pretrained(cls, root: str | os.PathLike | None = None, embedding_space: str = SPACE_L14,
                        text_encoder_path: str | os.PathLike | None = None,
                        tokenizer_path: str | os.PathLike | None = None, allow_pickle: bool = False) -> "HFTextEncoder":
        """Load ``root/text_encoder`` and ``root/tokenizer`` (or the two folders given explicitly)."""
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        if root is None and (text_encoder_path is None or tokenizer_path is None):
            raise ValueError("give root, or both text_encoder_path and tokenizer_path")
        encoder_dir = Path(text_encoder_path) if text_encoder_path is not None else Path(root) / "text_encoder"
        tokenizer_dir = Path(tokenizer_path) if tokenizer_path is not None else Path(root) / "tokenizer"
        for folder, what in ((encoder_dir, CONFIG_NAME), (tokenizer_dir, "vocab.json")):
            if not (folder / what).is_file() and not (what == "vocab.json" and (folder / "tokenizer.json").is_file()):
                raise WeightsNotFoundError(f"text encoder: expected {folder / what}, which does not exist (a "
                                           "transformers CLIPTextModelWithProjection folder and a CLIPTokenizer folder)")
        from evalkit.scorers.hf_folder import quiet_transformers

        use_safetensors = _use_safetensors(encoder_dir, allow_pickle)
        try:
            with quiet_transformers():
                model = CLIPTextModelWithProjection.from_pretrained(encoder_dir, local_files_only=True,
                                                                    use_safetensors=use_safetensors)
                tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise CorruptFileError(f"text encoder: could not load {encoder_dir} / {tokenizer_dir} "
                                   f"({type(error).__name__}: {error})") from error
        return cls(model.float(), tokenizer, embedding_space)

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> TextEncoding:
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.context_length,
                                truncation=True, return_tensors="pt")
        device = self.model.device  # token ids are made on the CPU: they go to the weights
        out = self.model(tokens.input_ids.to(device))
        return TextEncoding(self.embedding_space, out.text_embeds.float(), out.last_hidden_state.float(),
                            tokens.attention_mask.bool().to(device))

    def num_text_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# --------------------------------------------------------------------------- checkpoint folders


def _weight_names(directory: Path, allow_pickle: bool) -> list[str]:
    """Tensor names of a prior folder, read from safetensors headers (pickle: loaded only if allowed)."""
    files = sorted(directory.glob("*.safetensors"))
    if files:
        from safetensors import SafetensorError, safe_open

        names: list[str] = []
        for path in files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    names += list(handle.keys())
            except (SafetensorError, OSError, ValueError) as error:
                raise CorruptFileError(f"{path} is truncated or damaged ({error})") from None
        return names
    return list(load_state_dict(directory, allow_pickle=allow_pickle))


def prior_directory(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """``path/prior`` when present, else ``path`` itself; it must hold ``config.json``."""
    root = Path(path)
    if not root.is_dir():
        raise WeightsNotFoundError(f"{what}: expected a checkpoint folder at {root}, which does not exist. {hint}".strip())
    for candidate in (root / "prior", root):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise WeightsNotFoundError(f"{what}: no prior in {root} (expected {root / 'prior' / CONFIG_NAME} or "
                               f"{root / CONFIG_NAME} with {DIFFUSERS_WEIGHTS_NAME}). {hint}".strip())


def checkpoint_kind(directory: str | os.PathLike, allow_pickle: bool = False) -> str:
    """``"diffusion"`` when the prior has ``time_embedding.*`` weights, else ``"eclipse"``."""
    names = _weight_names(Path(directory), allow_pickle)
    return "diffusion" if any(n.startswith("time_embedding.") for n in names) else "eclipse"


def _require_kind(directory: Path, expected: str, allow_pickle: bool, what: str) -> None:
    found = checkpoint_kind(directory, allow_pickle)
    if found == expected:
        return
    if found == "diffusion":
        raise ConfigMismatchError(
            f"{what}: {directory} holds a diffusion PriorTransformer (it has time_embedding.* weights and a time "
            "token), not a time-free ECLIPSE prior; load it with DiffusionCheckpointPrior (e.g. karlo-prior / "
            "kandinsky22-prior)")
    raise ConfigMismatchError(
        f"{what}: {directory} holds a time-free ECLIPSE prior (no time_embedding.* weights), not a diffusion "
        "PriorTransformer; load it with EclipseCheckpointPrior (e.g. eclipse-karlo / eclipse-kandinsky22)")


def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip() if variable else ""
    return Path(value) if value else None


class _CheckpointMixin:
    """What both checkpoint priors share: resolving folders, the text encoder and the declared space."""

    checkpoint: ClassVar[str] = ""  # a KNOWN_CHECKPOINTS name (subclasses for the public checkpoints)
    env_var: ClassVar[str] = ""  # where the checkpoint folder is read from when no path is given
    text_encoder_env: ClassVar[str] = ""  # where a separate text-encoder folder is read from
    # what random_init builds (None: no public architecture known, e.g. the generic base classes)
    prior_config: ClassVar[dict | None] = None  # the public prior's config.json (real size)
    text_encoder_config: ClassVar[dict | None] = None  # its text encoder's CLIPTextConfig (real size)
    prior_scheduler_config: ClassVar[dict | None] = None  # diffusion priors: the public UnCLIPScheduler config
    tiny_embedding_dim: ClassVar[int] = 32  # size="tiny": the embedding width of the paired decoder's tiny build
    random_weights: dict | None = None  # set by random_init: {"size", "seed"}

    @classmethod
    def _hint(cls) -> str:
        if not cls.checkpoint:
            return ""
        repo = known_checkpoint(cls.checkpoint)["repo_id"]
        where = f" (or set {cls.env_var})" if cls.env_var else ""
        return (f"Download {repo} on a machine with network access (`huggingface-cli download {repo} --local-dir DIR`), "
                f"copy it here and pass --prior-path {cls.checkpoint}=DIR{where}.")

    @classmethod
    def _root(cls, path) -> Path:
        if path is None:
            path = _env_path(cls.env_var)
        if path is None:
            raise WeightsNotFoundError(f"prior {cls.name or cls.__name__!r} needs a checkpoint folder: pass path=DIR"
                                       + (f" or set {cls.env_var}" if cls.env_var else "") + f". {cls._hint()}".rstrip())
        return Path(path)

    def _text_encoder(self, root: Path, text_encoder_path, embedding_space: str, allow_pickle: bool) -> HFTextEncoder:
        from evalkit.train.real_data import load_text_encoder, training_record

        candidates = [Path(text_encoder_path)] if text_encoder_path is not None else []
        candidates += [root] + ([p] if (p := _env_path(self.text_encoder_env)) else [])
        # a prior trained by `evalkit train-baseline --data` names the frozen text encoder it was trained with
        trained_with = training_record(root).get("text_encoder", {}).get("path")
        if trained_with and text_encoder_path is None:
            candidates.insert(1, Path(trained_with))
        for candidate in candidates:
            if (candidate / "text_encoder").is_dir() or text_encoder_path is not None:
                self._pipeline_root = candidate  # the prior pipeline's folder: its image_encoder/ too (Kandinsky 2.2)
                return HFTextEncoder.from_pretrained(candidate, embedding_space, allow_pickle=allow_pickle)
            if trained_with and candidate == Path(trained_with) and candidate.is_dir():
                self._pipeline_root = candidate
                return load_text_encoder(candidate, embedding_space)
        source = ""
        if self.checkpoint:
            entry = known_checkpoint(self.checkpoint)
            source = f" ({entry['layout']})"
        raise WeightsNotFoundError(
            f"prior {self.name or type(self).__name__!r}: no text_encoder/ + tokenizer/ in {root}; pass "
            "text_encoder_path=DIR (a folder holding text_encoder/ and tokenizer/)"
            + (f" or set {self.text_encoder_env}" if self.text_encoder_env else "") + source)

    def zero_image_embedding(self) -> torch.Tensor:
        """``(D,)``: the image embedding of an all-zero image by the prior pipeline's own image encoder, what
        diffusers' ``KandinskyV22PriorPipeline`` (``get_zero_embed``) and ECLIPSE's Kandinsky prior pipeline give
        the decoder as its negative when no negative prompt is set. Computed once, in float32 on the CPU."""
        cached = getattr(self, "_zero_image", None)
        if cached is not None:
            return cached
        root = getattr(self, "_pipeline_root", None)
        folder = Path(root) / "image_encoder" if root is not None else None
        if folder is None or not (folder / CONFIG_NAME).is_file():
            where = f" in {root}" if root is not None else ""
            raise WeightsNotFoundError(
                f"prior {self.name!r}: the zero-image negative of Kandinsky 2.2 needs the prior pipeline's image "
                f"encoder (kandinsky-2-2-prior's image_encoder/){where}; add it, or run with --negative empty-prompt")
        from transformers import CLIPVisionModelWithProjection

        allow_pickle = getattr(self, "allow_pickle", False)
        encoder = CLIPVisionModelWithProjection.from_pretrained(
            folder, local_files_only=True, use_safetensors=_use_safetensors(folder, allow_pickle)).float().eval()
        size = int(encoder.config.image_size)
        with torch.inference_mode():
            self._zero_image = encoder(torch.zeros(1, 3, size, size)).image_embeds[0].float()
        return self._zero_image

    def _finish(self, embedding_space: str) -> None:
        self.embedding_space = embedding_space
        self.text_encoders = (embedding_space,)
        if self.clip.embedding_space != embedding_space:
            raise ConfigMismatchError(f"text encoder space {self.clip.embedding_space!r} is not {embedding_space!r}")

    @classmethod
    def random_init(cls, size: str = "real", device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                    seed: int = 0, **settings):
        """The public checkpoint's architecture with random weights, built in memory (no files).

        ``size="real"``: the public prior config, its text encoder (CLIP ViT-L/14 or ViT-bigG/14 text tower)
        with the 49,408-token CLIP tokenizer and, for diffusion priors, the public ``UnCLIPScheduler`` config.
        ``size="tiny"``: the same path at tiny widths (1 layer, 16 tokens, :attr:`tiny_embedding_dim` wide, so
        it feeds the paired decoder's tiny build). For speed and memory benchmarks: the embeddings are noise.
        ``device="meta"`` builds without memory (parameter counts only); like the folder-loaded priors, a
        built prior then computes where :func:`evalkit.placement.place` puts it. ``settings``: the sampling options
        of the constructor (diffusion priors: ``num_inference_steps``, ``guidance_scale``, ``rerank``).
        The text encoder is built first from ``seed``, so priors of one embedding space get the same one.
        """
        from evalkit.decoders.karlo import clip_tokenizer

        if size not in ("real", "tiny"):
            raise ValueError(f"size must be 'real' or 'tiny', not {size!r}")
        if cls.prior_config is None or cls.text_encoder_config is None:
            raise EvalkitError(f"{cls.__name__} has no public architecture to build; random_init applies to the "
                               f"public-checkpoint priors ({', '.join(e['name'] for e in KNOWN_CHECKPOINTS)})")
        kind = "diffusion" if issubclass(cls, DiffusionPrior) else "eclipse"
        if size == "real":
            tokenizer = clip_tokenizer(None, int(cls.text_encoder_config["max_position_embeddings"]))
            text_config, prior_config = cls.text_encoder_config, cls.prior_config
        else:
            tokenizer = clip_tokenizer(TINY_VOCAB_MERGES, model_max_length=TINY_MAX_LENGTH)
            text_config = _tiny_text_config(len(tokenizer), cls.tiny_embedding_dim)
            prior_config = size_config(kind, "tiny", cls.tiny_embedding_dim, TINY_MAX_LENGTH)
        with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):  # the global RNG is left as it was
            torch.manual_seed(seed)
            text_model, model = _random_models(kind, text_config, prior_config)
        if dtype is not None:
            text_model, model = text_model.to(dtype), model.to(dtype)
        prior = cls._assemble(model, HFTextEncoder(text_model, tokenizer, cls.default_space), **settings)
        prior.random_weights = {"size": size, "seed": int(seed)}
        return prior

    @classmethod
    def _assemble(cls, model, encoder: HFTextEncoder, **settings):
        """An instance around built components (no folder); subclasses add their own state."""
        raise NotImplementedError

    @classmethod
    def tiny(cls, **kwargs):
        """A random-init tiny instance loaded from a tiny checkpoint in the public layout (contract tests)."""
        import tempfile

        folder = tempfile.TemporaryDirectory(prefix="evalkit-tiny-prior-")
        kind = "diffusion" if issubclass(cls, DiffusionPrior) else "eclipse"
        prior = cls(tiny_checkpoint(folder.name, kind), **kwargs)
        prior._tiny_folder = folder  # removed with the instance
        return prior

    def training_data(self) -> str:
        """What the weights were trained on: the folder's own training record (a prior trained by evalkit), else
        the known checkpoint's facts only when the folder's weights are that checkpoint's (their sha256 is the
        recorded one), else "unknown": a folder loaded as ``eclipse-karlo`` is not therefore the public one."""
        if self.random_weights:
            return "none (random weights)"
        own = super().training_data()
        if own or not self.checkpoint:
            return own
        from evalkit.prompts_fetch import sha256_file as file_sha256

        entry = known_checkpoint(self.checkpoint)
        weights = self.path / DIFFUSERS_WEIGHTS_NAME if getattr(self, "path", None) is not None else None
        if entry.get("weights_sha256") and weights is not None and weights.is_file() \
                and file_sha256(weights) == entry["weights_sha256"]:
            return entry["training_data"]
        return f"unknown (weights not verified as {entry['repo_id']})"


class EclipseCheckpointPrior(_CheckpointMixin, EclipsePrior):
    """A public ECLIPSE prior (time-free ``PriorTransformer``) from a local folder; see the module doc."""

    name = "eclipse-checkpoint"
    default_space: ClassVar[str] = SPACE_L14

    def __init__(self, path: str | os.PathLike | None = None, text_encoder_path: str | os.PathLike | None = None,
                 embedding_space: str | None = None, allow_pickle: bool = False):
        root = self._root(path)
        directory = prior_directory(root, f"prior {self.name!r}", self._hint())
        _require_kind(directory, "eclipse", allow_pickle, f"prior {self.name!r}")
        space = embedding_space or self.default_space
        encoder = self._text_encoder(root, text_encoder_path, space, allow_pickle)
        super().__init__(path=directory, clip=encoder, allow_pickle=allow_pickle)
        self.root = root
        self._finish(space)

    @classmethod
    def _assemble(cls, model, encoder: HFTextEncoder, **settings):
        if settings:
            raise TypeError(f"{cls.__name__}.random_init takes no settings {sorted(settings)}")
        prior = cls.__new__(cls)
        EclipsePrior.__init__(prior, model=model, clip=encoder)
        prior.root = None
        prior._finish(cls.default_space)
        return prior


class DiffusionCheckpointPrior(_CheckpointMixin, DiffusionPrior):
    """A public diffusion prior (Karlo / Kandinsky 2.2) from a local folder, sampled as its pipeline does.

    Differences from :class:`~evalkit.priors.diffusion.DiffusionPrior` (which it reuses for loading,
    guidance batching, the empty-prompt branch and best-of-n): the checkpoint's own ``UnCLIPScheduler``
    (``prediction_type="sample"``, stochastic ``fixed_small_log`` steps) replaces DDIM, and each step's
    variance noise for image i is drawn from image i's own generator.
    """

    name = "diffusion-checkpoint"
    default_space: ClassVar[str] = SPACE_L14
    SCHEDULER_FOLDERS: ClassVar[tuple[str, ...]] = ("prior_scheduler", "scheduler")

    def __init__(self, path: str | os.PathLike | None = None, text_encoder_path: str | os.PathLike | None = None,
                 embedding_space: str | None = None, allow_pickle: bool = False, num_inference_steps: int = 25,
                 guidance_scale: float = 4.0, rerank: int = 1):
        from diffusers import UnCLIPScheduler

        root = self._root(path)
        directory = prior_directory(root, f"prior {self.name!r}", self._hint())
        _require_kind(directory, "diffusion", allow_pickle, f"prior {self.name!r}")
        folder = next((root / f for f in self.SCHEDULER_FOLDERS if (root / f / "scheduler_config.json").is_file()), None)
        if folder is None:
            raise WeightsNotFoundError(f"prior {self.name!r}: no scheduler in {root} (expected "
                                       + " or ".join(str(root / f / 'scheduler_config.json') for f in self.SCHEDULER_FOLDERS) + ")")
        try:
            self.scheduler_config = dict(UnCLIPScheduler.load_config(folder))
        except (OSError, ValueError, json.JSONDecodeError) as error:
            raise CorruptFileError(f"could not read {folder / 'scheduler_config.json'} ({error})") from None
        scheduler_class(self.scheduler_config, folder)  # an unsupported scheduler is refused before any weights load
        space = embedding_space or self.default_space
        encoder = self._text_encoder(root, text_encoder_path, space, allow_pickle)
        super().__init__(path=directory, clip=encoder, allow_pickle=allow_pickle,
                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, rerank=rerank)
        self.root = root
        self._finish(space)

    @classmethod
    def _assemble(cls, model, encoder: HFTextEncoder, num_inference_steps: int = 25, guidance_scale: float = 4.0,
                  rerank: int = 1):
        prior = cls.__new__(cls)
        DiffusionPrior.__init__(prior, model=model, clip=encoder, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, rerank=rerank)
        prior.scheduler_config = dict(cls.prior_scheduler_config)
        prior.root = None
        prior._finish(cls.default_space)
        return prior

    def _sample(self, encoding: TextEncoding, seeds) -> torch.Tensor:
        from diffusers import UnCLIPScheduler

        model = self.model
        n = len(seeds)
        guided = self.guidance_scale > 1.0  # as the pipelines: guidance only above 1
        text, hidden, mask = self.conditioning(encoding, n, guided)
        device = text.device
        scheduler_cls = scheduler_class(self.scheduler_config)
        unclip = scheduler_cls is UnCLIPScheduler
        scheduler = scheduler_cls.from_config(self.scheduler_config)
        scheduler.set_timesteps(self.num_inference_steps, device=device)
        # CPU generators on any device, as the public pipelines: the start noise and each step's variance
        # noise (diffusers' randn_tensor draws on a generator's own device, then moves) are device-independent
        generators = seeded_generators(seeds)
        dim = model.config["embedding_dim"]
        latents = torch.stack([torch.randn((dim,), generator=g) for g in generators]).to(device) * scheduler.init_noise_sigma
        timesteps = scheduler.timesteps
        # the sampler's state (latents, the scheduler's arithmetic and noise) stays in float32
        for i, t in enumerate(timesteps):
            model_in = (torch.cat([latents, latents]) if guided else latents).to(text.dtype)
            out = model(model_in, timestep=t, proj_embedding=text, encoder_hidden_states=hidden,
                        attention_mask=mask).predicted_image_embedding.float()
            if guided:
                uncond, cond = out.chunk(2)
                out = uncond + self.guidance_scale * (cond - uncond)
            if unclip:  # the public pipelines' call: each image's variance noise from its own generator
                prev = None if i + 1 == len(timesteps) else timesteps[i + 1]
                latents = scheduler.step(out, timestep=t, sample=latents, generator=generators,
                                         prev_timestep=prev).prev_sample
            else:  # DDIM (deterministic), as a prior trained by `evalkit train-baseline --data` is sampled
                latents = scheduler.step(out, t, latents).prev_sample
        return model.post_process_latents(latents).float()


#: schedulers a diffusion checkpoint's scheduler/ may name: the public priors' UnCLIPScheduler, and DDIM over the
#: linear DDPM schedule that `evalkit train-baseline --prior diffusion --data` trains on
PRIOR_SCHEDULERS = ("UnCLIPScheduler", "DDIMScheduler")


def scheduler_class(config: dict, where=None):
    """The diffusers scheduler class a ``scheduler_config.json`` names (UnCLIPScheduler when it names none)."""
    import diffusers

    name = config.get("_class_name") or "UnCLIPScheduler"
    if name not in PRIOR_SCHEDULERS:
        raise ConfigMismatchError(f"{where or 'the prior scheduler'}: {name} is not a prior scheduler evalkit samples "
                                  f"with (supported: {', '.join(PRIOR_SCHEDULERS)})")
    return getattr(diffusers, name)


# --------------------------------------------------------------------------- the public checkpoints


class EclipseKandinskyV22Prior(EclipseCheckpointPrior):
    negative = "zero-image"  # ECLIPSE's Kandinsky prior pipeline without a negative prompt
    """ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior (text encoder from a kandinsky-2-2-prior folder)."""

    name = "eclipse-kandinsky22"
    checkpoint = "eclipse-kandinsky22"
    default_space = SPACE_BIGG14
    env_var = "EVALKIT_ECLIPSE_KANDINSKY22_PRIOR_DIR"
    text_encoder_env = "EVALKIT_KANDINSKY22_PRIOR_DIR"
    prior_config = ECLIPSE_PRIOR_CONFIG_1280
    text_encoder_config = BIGG_TEXT_ENCODER_CONFIG
    tiny_embedding_dim = 16  # Kandinsky22Decoder.tiny()


class EclipseKarloPrior(EclipseCheckpointPrior):
    """ECLIPSE-Community/ECLIPSE_Karlo_Prior (text encoder from a karlo-v1-alpha folder)."""

    name = "eclipse-karlo"
    checkpoint = "eclipse-karlo"
    default_space = SPACE_L14
    env_var = "EVALKIT_ECLIPSE_KARLO_PRIOR_DIR"
    text_encoder_env = "EVALKIT_KARLO_DIR"
    prior_config = ECLIPSE_PRIOR_CONFIG_768
    text_encoder_config = REAL_TEXT_ENCODER_CONFIG


class Kandinsky22Prior(DiffusionCheckpointPrior):
    negative = "zero-image"  # KandinskyV22PriorPipeline without a negative prompt
    """kandinsky-community/kandinsky-2-2-prior: 25 UnCLIP steps, guidance 4.0 (its pipeline's defaults)."""

    name = "kandinsky22-prior"
    checkpoint = "kandinsky22-prior"
    default_space = SPACE_BIGG14
    env_var = "EVALKIT_KANDINSKY22_PRIOR_DIR"
    prior_config = KANDINSKY22_PRIOR_CONFIG
    text_encoder_config = BIGG_TEXT_ENCODER_CONFIG
    prior_scheduler_config = KANDINSKY22_PRIOR_SCHEDULER_CONFIG
    tiny_embedding_dim = 16  # Kandinsky22Decoder.tiny()


class KarloPrior(DiffusionCheckpointPrior):
    """The prior of kakaobrain/karlo-v1-alpha: 25 UnCLIP steps, guidance 4.0 (UnCLIPPipeline's defaults)."""

    name = "karlo-prior"
    checkpoint = "karlo-prior"
    default_space = SPACE_L14
    env_var = "EVALKIT_KARLO_DIR"
    prior_config = KARLO_PRIOR_CONFIG
    text_encoder_config = REAL_TEXT_ENCODER_CONFIG
    prior_scheduler_config = KARLO_PRIOR_SCHEDULER_CONFIG


# --------------------------------------------------------------------------- tiny checkpoints (tests, examples)

TINY_MAX_LENGTH = 16
TINY_VOCAB_MERGES = 486  # 512 byte tokens + 486 merges + 2 specials = 1,000 tokens


def _tiny_text_config(vocab_size: int, width: int) -> dict[str, Any]:
    """The tiny text encoder of tests: one layer, :data:`TINY_MAX_LENGTH` tokens, ``width`` wide."""
    return dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=TINY_MAX_LENGTH, projection_dim=width,
                bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


def _random_models(kind: str, text_config: dict, prior_config: dict):
    """``(CLIPTextModelWithProjection, prior network)`` with random weights, in that order from the current RNG.

    diffusers leaves the learned tokens and the standardisation statistics at zero / one; they get values.
    """
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    encoder = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    if kind == "eclipse":
        model = EclipsePriorTransformer.from_config(prior_config)
        with torch.no_grad():
            model.prd_embedding.normal_()
            model.positional_embedding.normal_(std=0.02)
    else:
        model = DiffusionPriorTransformer.from_config(prior_config)
        with torch.no_grad():
            model.clip_mean.normal_()
            model.clip_std.uniform_(0.5, 1.5)
            model.prd_embedding.normal_()
    return encoder, model


def tiny_checkpoint(directory: str | os.PathLike, kind: str = "eclipse", embedding_dim: int = 32,
                    seed: int = 0) -> Path:
    """Write a tiny random checkpoint in the public layout: ``prior/``, ``text_encoder/``, ``tokenizer/``
    (and ``scheduler/`` for ``kind="diffusion"``). Returns ``directory``."""
    from evalkit.decoders.karlo import clip_tokenizer, save_clip_tokenizer

    if kind not in ("eclipse", "diffusion"):
        raise ValueError(f"kind must be 'eclipse' or 'diffusion', got {kind!r}")
    root = Path(directory)
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(TINY_VOCAB_MERGES, model_max_length=TINY_MAX_LENGTH)
    encoder, model = _random_models(kind, _tiny_text_config(len(tokenizer), embedding_dim),
                                    size_config(kind, "tiny", embedding_dim, TINY_MAX_LENGTH))
    encoder.save_pretrained(root / "text_encoder")
    save_clip_tokenizer(tokenizer, root / "tokenizer")
    if kind == "diffusion":
        from diffusers import UnCLIPScheduler

        UnCLIPScheduler(**KARLO_PRIOR_SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    model.save_pretrained(root / "prior")
    return root
