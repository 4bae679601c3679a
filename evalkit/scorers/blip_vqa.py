"""BLIP-VQA: T2I-CompBench's attribute-binding metric (B-VQA) on transformers' BLIP.

For each image the scorer asks one question per noun phrase of its prompt ("a red car?"), reads
``p = P(yes) / (P(yes) + P(no))`` from the answer decoder's logits at the first decoding step, and
scores the image with the product of its answers (:mod:`evalkit.scorers.bvqa`, mode ``"full"`` or
``"t2i-compbench"``). Rows keep every question with its probability and name the noun-phrase
splitter ("suite" when the suite supplied the phrases).

Weights: a local folder in the layout of the public ``Salesforce/blip-vqa-capfilt-large`` (or
``Salesforce/blip-vqa-base``) repository (``config.json``, ``model.safetensors``,
``preprocessor_config.json``, tokenizer files), given as ``path`` or by ``$EVALKIT_BLIP_VQA_DIR``.
Nothing is downloaded. Pickle weights (``pytorch_model.bin``) are refused unless ``allow_pickle`` (then
read with ``weights_only=True``).

Two *conventions* say how a question and an image reach BLIP's modules (``convention=``):

``"t2i-compbench"`` (default; scorer version ``2-t2i-compbench``)
    T2I-CompBench's ``BLIPvqa_eval`` (``models/blip_vqa.py`` ``forward``/``vqa_prob``,
    ``data/__init__.py`` ``transform_test``, ``data/utils.py`` ``pre_question``, ``configs/vqa.yaml``,
    ``models/vit.py``): the question goes through ``pre_question`` (lowercased; ``.!"()*#:;~`` removed),
    is tokenized with ``truncation=True, max_length=35`` and its first token ([CLS]) is replaced by
    ``[ENC]``; the image is resized to 480 × 480 with PIL bicubic, scaled by 1/255 and normalised with
    CLIP's mean/std; the ViT's position embeddings are interpolated (bicubic, as BLIP's
    ``interpolate_pos_embed``) to the 30 × 30 patch grid and its LayerNorms use BLIP's eps 1e-6.
``"transformers"`` (``blip-vqa-transformers``; scorer version ``1``, evalkit's values before 2)
    transformers' own conventions: the tokenizer's ``[CLS] question [SEP]`` as is, the image processor's
    size (384 px for the public folders) and the config's LayerNorm eps (1e-5).

Both then run ``BlipForQuestionAnswering``'s vision model, text encoder (question over the image) and one
step of the text decoder from its BOS token ``[DEC]``, and read ``P(yes) / (P(yes) + P(no))``. Question
batches hold questions of one token length only: in transformers 5 the padding mask of a padded batch does
not reach the text cross-attention, so padding would make a question's answer depend on its batch
(T2I-CompBench pads with ``padding='longest'`` and masks the padding, so their answer does not depend on
the batch either). Each row names its ``convention``.

Images (float, [0, 1]) are quantised to 8 bits — what a saved PNG holds, which is what T2I-CompBench
scores. Remaining difference from published numbers: transformers' conversion script saved the public
folders at 384 px, resizing the checkpoint's position embeddings (most likely 480 px ones) to 24 × 24, so at
480 px evalkit runs a bicubic round trip of them (docs/scorers.md); a folder converted at 480 px removes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

from evalkit.contracts import Batch, PromptItem, Scorer
from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.scorers import bvqa
from evalkit.scorers import noun_phrases as noun_phrases_module
from evalkit.scorers.hf_folder import load_local_model
from evalkit.serialization import find_weights, quiet_transformers, weights_fingerprint, weights_folder, weights_format

from evalkit.scorers.noun_phrases import split_noun_phrases, splitter_name

ENV_DIR = "EVALKIT_BLIP_VQA_DIR"
#: the public transformers conversion of BLIP's ``model_base_vqa_capfilt_large.pth`` (ViT-B, CapFilt-L), the
#: checkpoint T2I-CompBench's ``configs/vqa.yaml`` loads; ``Salesforce/blip-vqa-base`` has the same layout
REPO_ID = "Salesforce/blip-vqa-capfilt-large"
#: vocabulary size of the public BLIP checkpoints (bert-base-uncased + [DEC] + [ENC])
BLIP_VOCAB_SIZE = 30524
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")

Convention = Literal["t2i-compbench", "transformers"]
#: how questions and images reach BLIP (module docstring); the first is the default
CONVENTIONS: tuple[str, ...] = ("t2i-compbench", "transformers")
#: the scorer version each convention records (the run protocol's ``scorer_version``)
CONVENTION_VERSIONS = {"t2i-compbench": "2-t2i-compbench", "transformers": "1"}
#: T2I-CompBench's ``BLIPvqa_eval``: ``configs/vqa.yaml`` image_size, ``models/blip_vqa.py`` max_length,
#: ``data/__init__.py`` Normalize, ``models/vit.py`` LayerNorm eps
T2I_COMPBENCH_IMAGE_SIZE = 480
T2I_COMPBENCH_PATCH_SIZE = 16  # ViT-B/16: 480 px is a 30 × 30 patch grid
T2I_COMPBENCH_MAX_LENGTH = 35
T2I_COMPBENCH_MEAN = (0.48145466, 0.4578275, 0.40821073)
T2I_COMPBENCH_STD = (0.26862954, 0.26130258, 0.27577711)
T2I_COMPBENCH_VIT_LAYER_NORM_EPS = 1e-6
_PRE_QUESTION_DROP = re.compile(r"([.!\"()*#:;~])")


def pre_question(question: str, max_words: int = 50) -> str:
    """T2I-CompBench's (BLIP's) ``data/utils.py`` ``pre_question``: lowercase, drop ``.!"()*#:;~``,
    strip trailing spaces, keep the first ``max_words`` words."""
    question = _PRE_QUESTION_DROP.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def t2i_compbench_image_size(patch_size: int) -> int:
    """The side T2I-CompBench's ViT sees: 480 px, a 30 × 30 grid of BLIP's 16-px patches. A model with
    other patches (the tests' tiny one: 8 px) gets the same 30 × 30 grid."""
    return T2I_COMPBENCH_IMAGE_SIZE // T2I_COMPBENCH_PATCH_SIZE * int(patch_size)


def weights_hint(directory: str | os.PathLike | None = None) -> str:
    """How to get the weights (shown whenever the folder is missing or incomplete)."""
    target = directory or "DIR"
    return (
        f"Download {REPO_ID} on a machine with network access: "
        f"`huggingface-cli download {REPO_ID} --local-dir {target}`, copy the folder here, then set "
        f"{ENV_DIR}={target} or pass --scorer-path blip-vqa={target}."
    )


def resolve_directory(path: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``path``, else ``$EVALKIT_BLIP_VQA_DIR``; raises if neither names a folder."""
    return weights_folder(path, ENV_DIR, "blip-vqa", REPO_ID, weights_hint)


def check_folder(directory: Path, allow_pickle: bool = False) -> bool:
    """Check the folder's files; returns whether the weights are safetensors (else an allowed pickle)."""
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / name).is_file() for name in PROCESSOR_FILES):
        missing.append(" or ".join(PROCESSOR_FILES))
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if not any(find_weights(directory)):
        missing.append("model.safetensors")
    if missing:
        raise WeightsNotFoundError(
            f"blip-vqa: {directory} is not a complete {REPO_ID} folder: missing "
            f"{', '.join(missing)}. {weights_hint(directory)}"
        )
    hint = f"Download model.safetensors (the public {REPO_ID} repository ships it)."
    return weights_format(directory, allow_pickle, "blip-vqa", hint=hint)["use_safetensors"]


def _chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class BlipVQAScorer(Scorer):
    """B-VQA with ``BlipForQuestionAnswering``: per image, the product of P(yes) over its noun phrases.

    ``convention``: ``"t2i-compbench"`` (default) or ``"transformers"`` (module docstring); it sets
    ``version`` (``2-t2i-compbench`` / ``1``) and is named in every row."""

    name = "blip-vqa"
    version = CONVENTION_VERSIONS["t2i-compbench"]
    default_convention: str = "t2i-compbench"
    higher_is_better = True
    #: BLIP's towers compute in any of these (the yes/no arithmetic reads the logits in float32 / float64)
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        mode: bvqa.Mode = "full",
        batch_size: int = 32,
        device: str | None = None,
        allow_pickle: bool = False,
        convention: Convention | None = None,
    ) -> None:
        """``device``: where to put the model once loaded (None: the CPU); the run places scorers itself
        (:func:`evalkit.placement.place`), and the scorer computes wherever its weights are.
        ``convention``: None for the class's default (``blip-vqa``: t2i-compbench)."""
        super().__init__()
        convention = self.default_convention if convention is None else convention
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown BLIP-VQA convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
        if mode not in bvqa.MODES:
            raise ValueError(f"unknown B-VQA arithmetic mode {mode!r}; expected one of {', '.join(bvqa.MODES)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        directory = resolve_directory(path)
        use_safetensors = check_folder(directory, allow_pickle)
        self.path = str(directory)
        self.convention = convention
        self.version = CONVENTION_VERSIONS[convention]
        self.mode = mode
        self.batch_size = int(batch_size)
        self.allow_pickle = bool(allow_pickle)
        self.model, self.processor = self._load(directory, use_safetensors)
        self.yes_id, self.no_id = self._answer_ids(directory)
        self.bos_id = self._bos_id(directory)
        self.enc_id = self._enc_id(directory) if convention == "t2i-compbench" else None
        #: the side images are resized to (t2i-compbench; None: the transformers convention uses the processor's)
        self.image_size = (
            t2i_compbench_image_size(self.model.config.vision_config.patch_size)
            if convention == "t2i-compbench"
            else None
        )
        if convention == "t2i-compbench":  # BLIP's ViT: LayerNorm(eps=1e-6) (transformers' config: 1e-5)
            for module in self.model.vision_model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.eps = T2I_COMPBENCH_VIT_LAYER_NORM_EPS
        self._fingerprint: str | None = None
        if device is not None:
            self.to_placement(str(device))

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are made there)."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the model's weights (pixel values are cast to it)."""
        return self.model.dtype

    # ------------------------------------------------------------------ loading

    def _load(self, directory: Path, use_safetensors: bool):
        from transformers import BlipForQuestionAnswering, BlipProcessor

        hint = f"Restore the folder: {weights_hint(directory)}"
        return load_local_model(BlipForQuestionAnswering, BlipProcessor, directory, use_safetensors, self.name, hint)

    def _answer_ids(self, directory: Path) -> tuple[int, int]:
        """Vocabulary ids of "yes" and "no" (the real BLIP vocabulary: 2748 and 2053)."""
        tokenizer = self.processor.tokenizer
        vocab_size = self.model.config.text_config.vocab_size
        ids = []
        for word, known in (("yes", bvqa.BLIP_YES_ID), ("no", bvqa.BLIP_NO_ID)):
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is None or token_id == tokenizer.unk_token_id:
                if vocab_size != BLIP_VOCAB_SIZE:
                    raise ConfigMismatchError(
                        f"blip-vqa: the tokenizer in {directory} has no token {word!r}; B-VQA "
                        "reads the first-step logits of 'yes' and 'no'"
                    )
                token_id = known
            if not 0 <= token_id < vocab_size:
                raise ConfigMismatchError(
                    f"blip-vqa: token {word!r} has id {token_id}, outside the model's "
                    f"vocabulary of {vocab_size} in {directory}"
                )
            ids.append(int(token_id))
        return ids[0], ids[1]

    def _bos_id(self, directory: Path) -> int:
        text = self.model.config.text_config
        bos = getattr(self.model, "decoder_start_token_id", None)
        bos = bos if bos is not None else getattr(text, "bos_token_id", None)
        if bos is None or not 0 <= int(bos) < text.vocab_size:
            raise ConfigMismatchError(
                f"blip-vqa: config.json in {directory} names no valid decoder BOS token "
                f"(text_config.bos_token_id = {bos})"
            )
        return int(bos)

    def _enc_id(self, directory: Path) -> int:
        """``[ENC]``: BLIP's ``init_tokenizer`` adds ``[DEC]`` (bos) then ``[ENC]``, so the id after ``[DEC]``
        (30523 in BLIP's vocabulary) where the folder's tokenizer does not know the token."""
        tokenizer = self.processor.tokenizer
        vocab_size = self.model.config.text_config.vocab_size
        token_id = tokenizer.convert_tokens_to_ids("[ENC]")
        if token_id is None or token_id == tokenizer.unk_token_id:
            token_id = self.bos_id + 1
        if not 0 <= int(token_id) < vocab_size:
            raise ConfigMismatchError(
                f"blip-vqa: no [ENC] token in {directory}: id {token_id} is outside the "
                f"model's vocabulary of {vocab_size} (BLIP's is 30524: [DEC] 30522, [ENC] 30523)"
            )
        return int(token_id)

    # ------------------------------------------------------------------ scoring

    @staticmethod
    def phrases(item: PromptItem) -> tuple[tuple[str, ...], str]:
        """The noun phrases asked about for ``item`` and where they came from (``"suite"`` or the splitter)."""
        if item.noun_phrases:
            return tuple(item.noun_phrases), "suite"
        phrases = split_noun_phrases(item.prompt)
        if not phrases and item.prompt.strip():
            phrases = (item.prompt.strip().rstrip(".").lower(),)  # nothing split off: ask about the prompt
        return phrases, splitter_name()

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        if len(images) != len(batch):
            raise ValueError(f"blip-vqa: {len(images)} images for a batch of {len(batch)} items")
        asked = [self.phrases(item) for item in batch.items]
        questions = [[f"{phrase}?" for phrase in phrases] for phrases, _ in asked]
        probs = self.question_probabilities(images, questions)
        products = bvqa.image_scores(probs, self.mode) if probs else []
        rows = []
        for (phrases, source), qs, ps, product in zip(asked, questions, probs, products):
            rows.append(
                {
                    "score": float(product),
                    "questions": [{"question": q, "p": float(p)} for q, p in zip(qs, ps)],
                    "splitter": source,
                    "mode": self.mode,
                    "convention": self.convention,
                }
            )
        return rows

    @torch.no_grad()
    def question_probabilities(self, images: torch.Tensor, questions: Sequence[Sequence[str]]) -> list[list[float]]:
        """``p = P(yes) / (P(yes) + P(no))`` for every question of every image (``questions[i]`` for image i).

        A probability depends only on its image and its question, never on the rest of the batch: images
        are encoded one chunk at a time, and questions are batched with questions of the same token
        length only (no padding).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"blip-vqa: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if len(questions) != len(images):
            raise ValueError(f"blip-vqa: {len(questions)} question lists for {len(images)} images")
        out: list[list[float]] = [[0.0] * len(qs) for qs in questions]
        if not any(questions):
            return out
        image_embeds = self._encode_images(images)
        token_ids = {question: self.question_ids(question) for question in {q for qs in questions for q in qs}}
        by_length: dict[int, list[tuple[int, int, str]]] = {}
        for i, qs in enumerate(questions):
            for k, question in enumerate(qs):
                by_length.setdefault(len(token_ids[question]), []).append((i, k, question))
        for length in sorted(by_length):
            for chunk in _chunks(by_length[length], self.batch_size):
                input_ids = torch.tensor([token_ids[q] for _, _, q in chunk], dtype=torch.long, device=self.device)
                rows = torch.tensor([i for i, _, _ in chunk], dtype=torch.long, device=self.device)
                p = self._first_step_yes_probability(input_ids, image_embeds.index_select(0, rows))
                for (i, k, _), value in zip(chunk, p.tolist()):
                    out[i][k] = float(value)
        return out

    def question_ids(self, question: str) -> list[int]:
        """The token ids the text encoder reads for ``question`` in this scorer's convention.

        t2i-compbench: ``pre_question``, ``truncation=True, max_length=35``, first token → ``[ENC]``
        (``models/blip_vqa.py`` ``forward``); transformers: the tokenizer's ids as they are.
        """
        tokenizer = self.processor.tokenizer
        if self.convention == "transformers":
            max_length = self.model.config.text_config.max_position_embeddings
            return list(tokenizer(question, truncation=True, max_length=max_length)["input_ids"])
        ids = list(tokenizer(pre_question(question), truncation=True, max_length=T2I_COMPBENCH_MAX_LENGTH)["input_ids"])
        ids[0] = self.enc_id
        return ids

    @staticmethod
    def _quantise(images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] → uint8 (N, 3, H, W) on the CPU: what a saved PNG holds."""
        if not torch.is_floating_point(images):
            raise ValueError(f"blip-vqa: expected float images in [0, 1], got dtype {images.dtype}")
        return (images.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)

    def _pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] → 8-bit (as a PNG) → the ViT's pixels in this scorer's convention.

        t2i-compbench: ``data/__init__.py`` ``transform_test``: ``Resize((480, 480), BICUBIC)`` of the PIL
        image, ``ToTensor`` (÷ 255), ``Normalize`` with CLIP's mean/std. transformers: the BLIP image
        processor (its configured size, bicubic, rescale, normalise).
        """
        pixels = self._quantise(images)
        if self.convention == "transformers":
            processed = self.processor.image_processor(images=list(pixels), return_tensors="pt")
            return processed["pixel_values"].to(self.device, self.dtype)
        from PIL import Image

        size = self.image_size
        mean = torch.tensor(T2I_COMPBENCH_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(T2I_COMPBENCH_STD, dtype=torch.float32).view(3, 1, 1)
        out = []
        for image in pixels:
            pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
            resized = pil.resize((size, size), Image.Resampling.BICUBIC)
            tensor = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32).div(255)
            out.append(tensor.sub(mean).div(std))
        return torch.stack(out).to(self.device, self.dtype)

    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:
        # t2i-compbench: the position embeddings are interpolated to the 30 × 30 grid, bicubic, as BLIP's
        # interpolate_pos_embed does when it loads a checkpoint made at another size
        interpolate = self.convention == "t2i-compbench"
        embeds = []
        for chunk in _chunks(range(len(images)), self.batch_size):
            pixel_values = self._pixel_values(images[chunk.start : chunk.stop])
            embeds.append(
                self.model.vision_model(
                    pixel_values=pixel_values, interpolate_pos_encoding=interpolate
                ).last_hidden_state
            )
        return torch.cat(embeds)

    def _first_step_yes_probability(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """One batch of equal-length questions: text encoder over the image, one decoder step from BOS."""
        n, length = input_ids.shape
        question_mask = torch.ones((n, length), dtype=torch.long, device=self.device)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question_embeds = self.model.text_encoder(
            input_ids=input_ids,
            attention_mask=question_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        bos = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=bos, encoder_hidden_states=question_embeds, encoder_attention_mask=question_mask, use_cache=False
        ).logits[:, 0, :]
        return bvqa.yes_probability_from_logits(logits.float().cpu(), self.yes_id, self.no_id, mode=self.mode)

    # ------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """Identity for the work cache: weights, processor, answer ids, mode, splitter and the scoring code."""
        from evalkit.contracts import content_hash

        if self._fingerprint is None:
            import transformers

            from evalkit import __version__

            sources = hashlib.sha256()
            for module_file in (__file__, bvqa.__file__, noun_phrases_module.__file__):
                sources.update(Path(module_file).read_bytes())
            vocab = json.dumps(sorted(self.processor.tokenizer.get_vocab().items()), ensure_ascii=False)
            self._fingerprint = content_hash(
                {
                    "class": f"{type(self).__module__}.{type(self).__qualname__}",
                    "name": self.name,
                    "version": self.version,
                    "convention": self.convention,
                    "mode": self.mode,
                    "image_size": self.image_size,
                    "weights": weights_fingerprint(self.model),
                    "image_processor": self.processor.image_processor.to_dict(),
                    "vocab": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
                    "answer_ids": [self.yes_id, self.no_id, self.bos_id, self.enc_id],
                    "source": sources.hexdigest(),
                    "evalkit": __version__,
                    "transformers": transformers.__version__,
                },
                length=32,
            )
        # the splitter may change with the environment (spaCy installed, $EVALKIT_NOUN_PHRASE_SPLITTER)
        return content_hash([self._fingerprint, splitter_name()], length=32)

    # ------------------------------------------------------------------ tiny

    #: words of the tiny model's vocabulary (besides special tokens): answers and common prompt words
    TINY_WORDS = (
        "yes no ? . , ' a an the and with of on in to next near two one other is are its "
        "red green blue yellow black white brown pink purple gray grey orange gold silver "
        "big small tall short long round square circular triangular rectangular oval spherical cubic conical "
        "cylindrical metallic wooden fluffy leather glass plastic rubber fabric striped dotted "
        "car bench bowl cup apple banana bear dog cat horse sheep cow book chair vase clock table box ball "
        "circle star triangle cube cylinder backpack bag towel lamp desk rug pillow shirt hat sky tree".split()
    )

    @classmethod
    def write_tiny(cls, directory: str | os.PathLike, seed: int = 0) -> Path:
        """Write a tiny random-weight BLIP-VQA (32 px, hidden size 32) in the public repo's layout."""
        from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(cls.TINY_WORDS), "[DEC]", "[ENC]"]
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        with quiet_transformers():
            tokenizer = BertTokenizer.from_pretrained(directory, local_files_only=True)
            text = dict(
                vocab_size=len(vocab),
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                encoder_hidden_size=32,
                pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id,
                bos_token_id=vocab.index("[DEC]"),
                initializer_range=0.3,
            )
            vision = dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                initializer_range=0.3,
            )
            config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = BlipForQuestionAnswering(config).eval()
            model.save_pretrained(directory)
            # the public repo's layout: preprocessor_config.json + tokenizer files (no processor_config.json)
            BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
            tokenizer.save_pretrained(directory)
        return directory

    @classmethod
    def tiny(cls, directory: str | os.PathLike | None = None, **kwargs) -> "BlipVQAScorer":
        """A scorer on a tiny random BLIP written into ``directory`` (None: a temporary folder, removed
        once the model is loaded). Same seed, same weights: tiny scorers are reproducible."""
        if directory is not None:
            return cls(cls.write_tiny(directory), **kwargs)
        with tempfile.TemporaryDirectory(prefix="evalkit-blip-vqa-") as tmp:
            return cls(cls.write_tiny(tmp), **kwargs)


class BlipVQATransformersScorer(BlipVQAScorer):
    """``blip-vqa-transformers``: B-VQA in transformers' own conventions (``convention="transformers"``:
    the tokenizer's [CLS] question, the image processor's size): evalkit's ``blip-vqa`` values before
    scorer version 2."""

    name = "blip-vqa-transformers"
    version = CONVENTION_VERSIONS["transformers"]
    default_convention = "transformers"
