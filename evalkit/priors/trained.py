"""What the trained priors share: loading a weights folder, reading text encodings, the contract.

A trained prior is a network in diffusers' layout (``config.json`` + ``diffusion_pytorch_model.safetensors``)
plus a small wrapper that turns a :class:`~evalkit.contracts.Batch` into its inputs. Shipped priors of the
synthetic world live in ``priors/<name>/seed-<k>/`` (written by ``evalkit train-baseline --ship``); any
other folder in the same layout loads with ``path=DIR`` (CLI: ``--prior-path``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import torch

from evalkit.contracts import Batch, Prior
from evalkit.errors import ConfigMismatchError, EvalkitError, WeightsNotFoundError
from evalkit.paths import REPO_ROOT
from evalkit.serialization import (
    CONFIG_NAME,
    DIFFUSERS_WEIGHTS_NAME,
    config_hints,
    load_config,
    load_pretrained,
    save_pretrained,
)

SHIPPED_ROOT = REPO_ROOT / "priors"
EMBEDDING_SPACE = "synth-clip"
TRAIN_HINT = (
    "The shipped weights come with the checkout: restore them with `git checkout -- priors/`. Or train "
    "one (`evalkit train-baseline --prior {kind} --out DIR`) and pass --prior-path NAME=DIR/final."
)


class DiffusersLayoutMixin:
    """``save_pretrained`` / ``from_pretrained`` for a diffusers ``ModelMixin`` through evalkit's safe loaders.

    Weights are read with safetensors (pickle only with ``allow_pickle``), every tensor's name and shape is
    checked against the model built from ``config.json`` on the meta device before anything real is allocated
    (a mismatch names the config key and lists the tensors), and fp16 files are cast back to float32.
    """

    def save_pretrained(self, directory, metadata: dict | None = None, dtype=None, **_ignored) -> Path:
        config = {
            "_class_name": self.public_class_name,
            **{k: v for k, v in dict(self.config).items() if not k.startswith("_")},
        }
        return save_pretrained(
            directory, config, self.state_dict(), metadata, dtype, weights_name=DIFFUSERS_WEIGHTS_NAME
        )

    @classmethod
    def from_pretrained(cls, directory, allow_pickle: bool = False, **_ignored):
        """Through :func:`~evalkit.serialization.load_pretrained`: the config's keys and value types are
        checked, the model is built on the meta device and compared with the weights file's tensor shapes,
        and only then built for real and loaded (fp16 tensors are cast to float32)."""
        directory = Path(directory)
        raw = load_config(directory)
        known = set(cls._init_params())
        unknown = sorted(k for k in raw if not k.startswith("_") and k not in known)
        if unknown:
            raise ConfigMismatchError(f"{directory / CONFIG_NAME} has keys {unknown} that {cls.__name__} does not take")
        config = {k: v for k, v in raw.items() if not k.startswith("_")}
        return load_pretrained(
            directory,
            cls.from_config,
            config,
            cls.__name__,
            allow_pickle=allow_pickle,
            hints=config_hints(cls._init_function()),
        )

    @classmethod
    def _init_function(cls):
        """The first ``__init__`` in the MRO that declares named parameters: its parameters are the config keys."""
        import inspect

        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                params = [
                    p
                    for p in inspect.signature(klass.__init__).parameters.values()
                    if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                ]
                if params:
                    return klass.__init__
        return None

    @classmethod
    def _init_params(cls) -> list[str]:
        """The config keys: the named parameters of the first ``__init__`` in the MRO that declares any."""
        import inspect

        init = cls._init_function()
        if init is None:
            return []
        return [
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    public_class_name: ClassVar[str] = "PriorTransformer"


def weights_placement(module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``module``'s weights: where (and in what precision) its inputs go."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def check_config(expected: dict, found: dict, where: str) -> None:
    """Raise :class:`ConfigMismatchError` listing every architecture key whose value differs."""
    keys = sorted(set(expected) | set(found))
    diff = [
        f"{k}: requested {expected.get(k)!r}, found {found.get(k)!r}"
        for k in keys
        if not k.startswith("_") and expected.get(k) != found.get(k)
    ]
    if diff:
        raise ConfigMismatchError(f"{where} was built for another architecture:\n  " + "\n  ".join(diff))


def training_record(root: Path) -> dict:
    """A checkpoint folder's ``training_record.json`` (in the folder or its parent: the diffusion layout keeps the
    record beside ``prior/``), or ``{}``."""
    import json

    for candidate in (Path(root) / "training_record.json", Path(root).parent / "training_record.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError):
                return {}
    return {}


class TrainedPrior(Prior):
    """A prior whose network is loaded from a weights folder; subclasses set ``model_class`` and ``kind``."""

    kind: ClassVar[str] = ""  # eclipse | projection | diffusion: what train-baseline trains
    variant: ClassVar[str] = ""  # shipped folder name (default: the registry name)
    model_class: ClassVar[type]
    embedding_space = EMBEDDING_SPACE
    normalisation = "raw"
    text_encoders = (EMBEDDING_SPACE,)
    #: the prior network and the text encoder it holds compute in any of these (samplers stay in float32)
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self, path: str | Path | None = None, training_seed: int = 0, model=None, clip=None, allow_pickle: bool = False
    ):
        if model is None:
            directory = Path(path) if path is not None else self.shipped_dir(training_seed)
            if not (directory / CONFIG_NAME).is_file():
                hint = TRAIN_HINT.format(kind=self.kind)
                raise WeightsNotFoundError(
                    f"prior {self.name!r}: no weights at {directory} (expected {CONFIG_NAME} + "
                    f"{DIFFUSERS_WEIGHTS_NAME}). {hint}"
                )
            model = self.model_class.from_pretrained(directory, allow_pickle=allow_pickle)
            self.path = directory
        else:
            self.path = None
        self.model = model.eval()
        self._clip = clip  # the text encoder of the prior's space: read by the run, not part of the prior's identity
        self.training_seed = training_seed
        self.embedding_dim = self.output_dim(model)

    @classmethod
    def shipped_dir(cls, training_seed: int = 0) -> Path:
        return SHIPPED_ROOT / (cls.variant or cls.name) / f"seed-{training_seed}"

    @staticmethod
    def output_dim(model) -> int:
        config = model.config
        return int(config.get("clip_embed_dim") or config["embedding_dim"])

    def num_parameters(self, trainable_only: bool = False) -> int:
        params = self.model.parameters()
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)

    def training_data(self) -> str:
        """From the weights folder's ``training_record.json`` (e.g. "50k synth pairs")."""

        record = training_record(self.path) if self.path is not None else {}
        if record.get("training_data"):  # trained on real pairs (evalkit train-baseline --data)
            return record["training_data"]
        pairs = record.get("config", {}).get("num_pairs")
        return f"{pairs / 1000:g}k synth pairs" if pairs else ""

    @property
    def clip(self):
        """The text encoder given or loaded so far (None until :meth:`text_encoder` loads it). Kept private:
        whether a run loaded it through this prior must not change the prior's fingerprint; the run's
        work-cache keys carry the text encoder's own fingerprint instead."""
        return self._clip

    def text_encoder(self):
        """The encoder of the prior's space (the world CLIP, loaded once, unless one was given)."""
        if self._clip is None:
            from evalkit.world.models.clip import load_world_clip

            self._clip = load_world_clip()
        return self._clip

    def text_encoding(self, batch: Batch):
        encoding = batch.text.get(self.embedding_space)
        if encoding is None:
            encoding = self.text_encoder().encode_text(batch.prompts)
        if encoding.text_hidden is None:
            raise EvalkitError(
                f"prior {self.name!r} reads per-token text hidden states, which the "
                f"{self.embedding_space!r} encoding of this batch lacks"
            )
        width = encoding.text_hidden.shape[-1]
        expected = self.model.config["embedding_dim"]
        if width != expected or encoding.text_embeds.shape[-1] != expected:
            raise ConfigMismatchError(
                f"prior {self.name!r} takes {expected}-d text embeddings and hidden states, but the "
                f"{self.embedding_space!r} encoder gives {encoding.text_embeds.shape[-1]}-d / {width}-d"
            )
        return encoding

    def model_inputs(self, encoding) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(text_embeds, text_hidden, attention_mask)`` of ``encoding`` on the network's device, the
        embeddings in its precision (encodings arrive in float32, from wherever the text encoder is)."""
        device, dtype = weights_placement(self.model)
        return (
            encoding.text_embeds.to(device, dtype),
            encoding.text_hidden.to(device, dtype),
            encoding.attention_mask.to(device),
        )

    @torch.inference_mode()
    def predict(self, batch: Batch) -> torch.Tensor:
        return self.sample(self.text_encoding(batch), batch.seeds).float()

    @abc.abstractmethod
    def sample(self, encoding, seeds) -> torch.Tensor:
        """``(N, D)`` image embeddings from a batch's text encoding and its per-image seeds."""

    @classmethod
    def tiny(cls):
        """A random-init tiny instance (contract tests)."""
        from evalkit.world.models.clip import WorldCLIP

        torch.manual_seed(0)
        clip = WorldCLIP.tiny(embed_dim=32).eval()  # priors read hidden states as wide as the embedding
        model = cls.build_model(cls.size_config("tiny", clip.embedding_dim, clip.context_length))
        return cls(model=model, clip=clip)

    @classmethod
    def size_config(cls, size: str, embedding_dim: int, num_embeddings: int) -> dict:
        from evalkit.priors.sizes import size_config

        return size_config(cls.kind, size, embedding_dim, num_embeddings)

    @classmethod
    def build_model(cls, config: dict):
        return cls.model_class.from_config(config)
