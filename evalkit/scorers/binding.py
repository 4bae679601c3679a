"""The embedded binding scorer: a small VQA model of the synthetic world answering "{noun phrase}?".

It is B-VQA in miniature, trained by project code on world renders (``evalkit train-world
scorer``): for an image and a noun phrase ("a red striped circle") it gives P(yes) — some object in
the image has every attribute the phrase names. Per image, the score is the product of its
phrases' probabilities (:mod:`evalkit.scorers.bvqa`), and every question is kept in the row.

The network reads the image once: a CNN gives, at each of 8×8 locations, a logit for each word of
the world's vocabulary (8 colours, 4 textures, 6 shapes, big/small) — "the object here is red".
A phrase, parsed into those words (:func:`evalkit.world.phrases.parse_phrase`), holds at a
location with probability Π σ(logit) over its words, and P(yes) is the maximum over locations: the
attributes must hold *at the same place*, which is what binding means. Training combines a dense
loss (each location's words, from the renderer's object masks) with the phrase loss on questions
with hard negatives (the attribute-swapped phrase, one attribute changed, shapes absent from the
image); labels come from the scene's ground truth, so distractors count.

**Relation questions** (spatial prompts of the world, "a circle on the left of a square"): the same maps
locate each phrase — the mean of the 8×8 locations weighted by the softmax of their log P(phrase here),
in pixels — and T2I-CompBench's position rule (:func:`~evalkit.scorers.spatial_rules.position_score`) on
the two located points answers the relation, p ∈ {0, 1}; the image's score is the product of the two
phrase answers and the relation's, as for any other question.

Words outside the world's vocabulary are ignored and reported in the question's ``unknown`` field.
Weights: ``evalkit/world/weights/scorer/`` (config.json + model.safetensors, fp16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.contracts import Batch, Scorer
from evalkit.errors import WeightsNotFoundError
from evalkit.paths import WORLD_WEIGHTS
from evalkit.serialization import CONFIG_NAME, PretrainedMixin

SHIPPED_DIR = WORLD_WEIGHTS / "scorer"
TRAIN_HINT = (
    "The shipped weights come with the checkout (restore them from git), or train one with "
    "`evalkit train-world scorer --out DIR` and load DIR/final."
)


def world_vocabulary() -> list[str]:
    from evalkit.world.attributes import COLORS, SHAPES, SIZE_WORDS, TEXTURES

    return [*COLORS, *TEXTURES, *SHAPES, *SIZE_WORDS]


@dataclass
class BindingVQAConfig:
    widths: tuple[int, ...] = (32, 64, 96)  # 32×32, 16×16, 8×8
    vocabulary: list[str] = field(default_factory=world_vocabulary)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    # batch norm (running statistics at inference, so scores stay batch-independent): it trains several
    # times faster here than group norm
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class BindingVQA(PretrainedMixin, nn.Module):
    """Per-location word logits; P(phrase) = max over locations of the product of its words' probabilities."""

    config_class = BindingVQAConfig
    weights_hint = TRAIN_HINT

    def __init__(self, config: BindingVQAConfig | None = None):
        super().__init__()
        self.config = config or BindingVQAConfig()
        self.config.widths = tuple(self.config.widths)
        w1, w2, w3 = self.config.widths
        self.index = {word: i for i, word in enumerate(self.config.vocabulary)}
        self.trunk = nn.Sequential(
            _block(3, w1, 1),
            _block(w1, w2, 2),
            _block(w2, w2, 1),
            _block(w2, w3, 2),
            _block(w3, w3, 1),
            _block(w3, w3, 1),
        )
        self.head = nn.Sequential(nn.Conv2d(w3, w3, 1), nn.GELU(), nn.Conv2d(w3, len(self.config.vocabulary), 1))
        self.register_buffer("image_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def encode_phrases(self, phrases: Sequence[str]) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
        """Multi-hot (N, V) of the phrases' world words, and the unknown words of each."""
        from evalkit.world.phrases import parse_phrase

        hot = torch.zeros(len(phrases), len(self.index))
        unknown = []
        for i, phrase in enumerate(phrases):
            fields, extra = parse_phrase(phrase)
            for _, word in fields:
                hot[i, self.index[word]] = 1.0
            unknown.append(extra)
        return hot, unknown

    def word_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, V, 8, 8): at each location, the logit that the object there has each word's attribute."""
        return self.head(self.trunk(images.float() - self.image_mean))

    @staticmethod
    def phrase_location_log_probs(word_logits: torch.Tensor, phrase_hot: torch.Tensor) -> torch.Tensor:
        """(N, H, W): log P(the object at each location fits the phrase) = Σ_words log σ(logit)."""
        return torch.einsum("nvhw,nv->nhw", F.logsigmoid(word_logits), phrase_hot.to(word_logits.dtype))

    @classmethod
    def phrase_log_prob(cls, word_logits: torch.Tensor, phrase_hot: torch.Tensor) -> torch.Tensor:
        """log P(yes) (N,): max over locations of Σ_words log σ(logit)."""
        return cls.phrase_location_log_probs(word_logits, phrase_hot).flatten(1).amax(dim=1)

    @staticmethod
    def locate(per_location: torch.Tensor, image_size: int = 32) -> torch.Tensor:
        """(N, 2) pixel (x, y) of each phrase: the locations' centres weighted by the softmax of their log-probs."""
        n, h, w = per_location.shape
        weights = torch.softmax(per_location.float().flatten(1), dim=1).view(n, h, w)
        ys = (torch.arange(h, dtype=torch.float32, device=weights.device) + 0.5) * (image_size / h)
        xs = (torch.arange(w, dtype=torch.float32, device=weights.device) + 0.5) * (image_size / w)
        return torch.stack([(weights.sum(1) * xs).sum(1), (weights.sum(2) * ys).sum(1)], dim=1)

    def forward(self, images: torch.Tensor, phrase_hot: torch.Tensor) -> torch.Tensor:
        """log P(yes) that image i holds an object fitting phrase i; images (N, 3, 32, 32) in [0, 1]."""
        return self.phrase_log_prob(self.word_logits(images), phrase_hot)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BindingScorer(Scorer):
    """``binding``: the embedded VQA model's P(yes) per noun phrase, product per image (B-VQA style)."""

    name = "binding"
    version = "2"
    #: the CNN computes in any of these (its batch norms are folded in float32, then cast)
    supported_dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self,
        path: str | Path | None = None,
        model: BindingVQA | None = None,
        mode: str = "full",
        batch_size: int = 1024,
    ):
        super().__init__()
        if model is None:
            directory = Path(path) if path is not None else SHIPPED_DIR
            if not (directory / CONFIG_NAME).is_file():
                raise WeightsNotFoundError(f"the embedded binding scorer: no weights at {directory}. {TRAIN_HINT}")
            model = BindingVQA.from_pretrained(directory).float()
        self.model = model.eval()
        self.mode = mode
        self.batch_size = batch_size
        self._trunk = None  # the trunk with batch norm folded into its convolutions (built on first use)

    def to_placement(self, device: str, dtype: str | None = None) -> None:
        """The default placement; the folded trunk copy is dropped, to be folded again from the placed weights."""
        self._trunk = None
        super().to_placement(device, dtype)

    def word_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's word maps, through a copy of its trunk whose batch norms are folded into the preceding
        convolutions (torch.fx's ``fuse``: the same function up to float rounding, ~1.3× faster on CPU)."""
        mean = self.model.image_mean
        if self._trunk is None:
            import copy

            from torch.fx.experimental.optimization import fuse

            # folded in float32 (a batch norm's 1/sqrt(var + eps) loses digits in half precision), then cast
            self._trunk = fuse(copy.deepcopy(self.model.trunk).eval().float()).to(mean.dtype)
        x = images.to(mean.device).float() - mean.float()
        return self.model.head(self._trunk(x.to(mean.dtype)))

    @classmethod
    def tiny(cls) -> "BindingScorer":
        torch.manual_seed(0)
        return cls(model=BindingVQA(BindingVQAConfig(widths=(8, 8, 8))))

    def not_applicable(self, item) -> str | None:
        from evalkit.world.phrases import unreadable  # the phrase grammar of encode_phrases

        return unreadable(item)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, phrases: Sequence[str], image_index: Sequence[int]) -> torch.Tensor:
        """P(yes) for each (images[image_index[k]], phrases[k]): the CNN runs once per image, whatever the
        number of its questions; each question is then a weighted sum over the word maps."""
        return self.answers(images, phrases, image_index)[0]

    @torch.inference_mode()
    def answers(
        self, images: torch.Tensor, phrases: Sequence[str], image_index: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """P(yes) ``(K,)`` and the phrase's located pixel (x, y) ``(K, 2)`` (:meth:`BindingVQA.locate`) for each
        (images[image_index[k]], phrases[k])."""
        hot, _ = self.model.encode_phrases(phrases)
        maps = (
            torch.cat(
                [self.word_logits(images[s : s + self.batch_size]) for s in range(0, len(images), self.batch_size)]
            )
            if len(images)
            else None
        )
        if maps is None or not len(phrases):
            return torch.empty(0), torch.empty(0, 2)
        # phrases and indices are made on the CPU: they go to the maps; log-probabilities summed in float32
        index = torch.as_tensor(list(image_index), dtype=torch.long, device=maps.device)
        per_location = self.model.phrase_location_log_probs(maps[index].float(), hot.to(maps.device))
        size = images.shape[-1]
        return per_location.flatten(1).amax(dim=1).exp(), self.model.locate(per_location, size)

    def score(self, images: torch.Tensor, batch: Batch) -> list[dict]:
        from evalkit.scorers.bvqa import image_scores
        from evalkit.world.phrases import noun_phrases, relation_of

        per_image = [noun_phrases(item) for item in batch.items]
        flat = [p for phrases in per_image for p in phrases]
        owner = [i for i, phrases in enumerate(per_image) for _ in phrases]
        probs, where = self.answers(images, [f"{p}" for p in flat], owner)
        probs, where = probs.tolist(), where.tolist()
        _, unknown = self.model.encode_phrases(flat)
        rows, k = [], 0
        for item, phrases in zip(batch.items, per_image):
            questions = []
            for phrase in phrases:
                q = {"question": f"{phrase}?", "p": round(float(probs[k]), 6)}
                if unknown[k]:
                    q["unknown"] = list(unknown[k])
                questions.append(q)
                k += 1
            relation = relation_of(item)
            if relation is not None and len(phrases) == 2:
                questions.append(_relation_question(relation, phrases, where[k - 2], where[k - 1]))
            score = float(image_scores([[q["p"] for q in questions]], self.mode)[0]) if questions else 1.0
            rows.append({"score": score, "questions": questions})
        return rows


def _relation_question(relation: str, phrases: Sequence[str], xy1: Sequence[float], xy2: Sequence[float]) -> dict:
    """The relation's question: T2I-CompBench's position rule on the two phrases' located points."""
    from evalkit.scorers.spatial_rules import position_score
    from evalkit.world.attributes import relation_text

    words = relation_text(relation)
    point = lambda xy: (xy[0], xy[1], xy[0], xy[1])  # noqa: E731  (a box of no extent: IoU 0)
    return {
        "question": f"{phrases[0]} {words} {phrases[1]}?",
        "p": position_score(words, point(xy1), point(xy2)),
        "located": [[round(v, 2) for v in xy1], [round(v, 2) for v in xy2]],
    }
