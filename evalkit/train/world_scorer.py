"""``evalkit train-world scorer``: the embedded binding scorer (a VQA model of the world), trained on renders.

Each training image (a render of the train split, all categories) is asked questions drawn from
its ground truth, half of them true and half false, of five kinds:

- ``caption``: one of the caption's own noun phrases (true);
- ``object``: any object of the scene, distractors included, described by a random subset of its
  attributes (shape always; true);
- ``swapped``: a noun phrase of the attribute-swapped caption (false unless the scene happens to
  hold such an object);
- ``wrong``: an object's description with one attribute changed to another value;
- ``absent``: a shape that is not in the image.

The label of every question is computed from the scene (some object satisfies the phrase), never
assumed from its kind. The loss adds a dense term: each 4×4-pixel cell of the 8×8 output grid must
name the words of the object covering at least half of it (from the renderer's masks), nothing
where there is background. Evaluation: accuracy per kind on dev/val renders (seen and unseen
combinations) and agreement with the analytic scorer on val renders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.train.common import TrainingSession, check_finite, set_seed, ship, warmup_cosine
from evalkit.world.models.tensors import images_to_tensor

if TYPE_CHECKING:
    from evalkit.world.grammar import ObjectSpec

KINDS = ("caption", "object", "swapped", "wrong", "absent")


@dataclass
class ScorerTrainConfig:
    steps: int = 3000
    batch_size: int = 128  # (image, question) pairs per step
    lr: float = 3e-3
    pos_weight: float = 4.0  # dense loss: weight of a word present at a cell (about 4 % of targets are)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    num_scenes: int = 40000
    seed: int = 0
    eval_every: int = 500
    eval_scenes: int = 600
    checkpoint_every: int = 500
    tiny: bool = False

    @classmethod
    def quick(cls) -> "ScorerTrainConfig":
        return cls(
            steps=6,
            batch_size=16,
            num_scenes=64,
            eval_every=3,
            eval_scenes=16,
            checkpoint_every=3,
            warmup_steps=2,
            tiny=True,
        )


# --------------------------------------------------------------------------- questions


def _describe(obj, families, rng) -> "ObjectSpec":
    from evalkit.world.grammar import ObjectSpec

    values = {"shape": obj.shape}
    for family in families:
        if family == "size":
            if obj.size_class in ("big", "small"):
                values["size"] = obj.size_class
        else:
            values[family] = getattr(obj, family)
    return ObjectSpec(**values)


def _random_families(rng) -> list[str]:
    families = [f for f in ("color", "texture", "size") if rng.random() < 0.5]
    return families or [("color", "texture")[int(rng.random() * 2)]]


def question(scene, kind: str, rng) -> tuple[str, bool]:
    """A (phrase, label) of ``kind`` about ``scene``; the label is the scene's truth."""
    from evalkit.world.attributes import COLORS, SHAPES, SIZE_WORDS, TEXTURES
    from evalkit.world.grammar import parse_caption

    if kind == "caption":
        phrase = scene.noun_phrases[int(rng.random() * 2)]
    elif kind == "swapped":
        phrase = parse_caption(scene.swapped_caption).noun_phrases[int(rng.random() * 2)]
    elif kind == "absent":
        present = {o.shape for o in scene.objects}
        shape = [s for s in SHAPES if s not in present][int(rng.random() * (len(SHAPES) - len(present)))]
        obj = scene.objects[int(rng.random() * len(scene.objects))]
        phrase = dataclasses.replace(_describe(obj, _random_families(rng), rng), shape=shape).phrase()
    else:
        obj = scene.objects[int(rng.random() * len(scene.objects))]
        spec = _describe(obj, _random_families(rng), rng)
        if kind == "wrong":
            family = [f for f in ("shape", "color", "texture", "size") if spec.get(f) is not None][
                int(rng.random() * sum(spec.get(f) is not None for f in ("shape", "color", "texture", "size")))
            ]
            options = {"shape": SHAPES, "color": tuple(COLORS), "texture": TEXTURES, "size": SIZE_WORDS}[family]
            others = [v for v in options if v != spec.get(family)]
            spec = spec.replace(**{family: others[int(rng.random() * len(others))]})
        phrase = spec.phrase()
    return phrase, label_of(scene, phrase)


def label_of(scene, phrase: str) -> bool:
    from evalkit.world.grammar import ObjectSpec
    from evalkit.world.phrases import parse_phrase

    fields, _ = parse_phrase(phrase)
    spec = ObjectSpec(**dict(fields))
    return any(obj.satisfies(spec) for obj in scene.objects)


def draw_questions(scenes, n: int, rng) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """``n`` questions about random scenes, balanced true/false: (scene index, phrase, label, kind)."""
    idx, phrases, labels, kinds = [], [], [], []
    want_true = n // 2
    trues = falses = 0
    while len(phrases) < n:
        i = int(rng.integers(len(scenes)))
        kind = KINDS[int(rng.integers(len(KINDS)))]
        phrase, label = question(scenes[i], kind, rng)
        if (label and trues >= want_true) or (not label and falses >= n - want_true):
            continue
        trues, falses = trues + label, falses + (not label)
        idx.append(i), phrases.append(phrase), labels.append(label), kinds.append(kind)
    return np.array(idx), phrases, np.array(labels, dtype=np.float32), kinds


# --------------------------------------------------------------------------- training


def build_model(config: ScorerTrainConfig):
    from evalkit.scorers.binding import BindingVQA, BindingVQAConfig

    return BindingVQA(BindingVQAConfig(widths=(8, 8, 8)) if config.tiny else BindingVQAConfig())


def object_words(scenes, index: dict[str, int]) -> np.ndarray:
    """(N, MAX_OBJECTS, V) multi-hot words of each object (colour, texture, shape, big/small)."""
    from evalkit.world.renderer import MAX_OBJECTS

    out = np.zeros((len(scenes), MAX_OBJECTS, len(index)), np.float32)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            for word in (obj.color, obj.texture, obj.shape, obj.size_class):
                if word in index:
                    out[i, j, index[word]] = 1.0
    return out


def dense_targets(masks: np.ndarray, words: np.ndarray, grid: int) -> torch.Tensor:
    """(N, V, grid, grid): each cell carries the words of the object covering most of it (≥ half), else none."""
    n, objects, size, _ = masks.shape
    cells = torch.from_numpy(masks).view(n, objects, grid, size // grid, grid, size // grid).mean(dim=(3, 5))
    owner = (cells >= 0.5).float()  # objects never overlap: at most one owner per cell
    return torch.einsum("nohw,nov->nvhw", owner, torch.from_numpy(words))


def phrase_loss(log_p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on log P(yes): −[y log p + (1 − y) log(1 − p)], stable near p = 1."""
    log_not = torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))
    return -(labels * log_p + (1 - labels) * log_not).mean()


@torch.inference_mode()
def scorer_accuracy(model, config: ScorerTrainConfig, split: str = "dev") -> dict:
    """Accuracy per question kind (and seen/unseen on val) on renders of ``split``."""
    from evalkit.world import render, sample_pairs

    _, scenes = sample_pairs("all", config.eval_scenes, seed=config.seed + 7, split=split)
    images = images_to_tensor(render(scenes))
    rng = np.random.default_rng([config.seed, 99])
    metrics = {}
    for kind in KINDS:
        pairs = [question(scene, kind, rng) for scene in scenes]
        hot, _ = model.encode_phrases([p for p, _ in pairs])
        log_p = torch.cat([model(images[s : s + 512], hot[s : s + 512]) for s in range(0, len(scenes), 512)])
        labels = torch.tensor([float(label) for _, label in pairs])
        metrics[f"acc_{kind}"] = round(((log_p.exp() > 0.5).float() == labels).float().mean().item(), 4)
        metrics[f"true_share_{kind}"] = round(labels.mean().item(), 3)
    metrics["acc_mean"] = round(float(np.mean([metrics[f"acc_{k}"] for k in KINDS])), 4)
    return metrics


#: settings a resumed run may change: they decide when to evaluate and checkpoint, not what is learnt
RESUMABLE_KEYS = ("checkpoint_every", "eval_every")


def train_scorer(
    out_dir: str | Path,
    config: ScorerTrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train into ``out_dir``; returns ``out_dir/final`` (or the checkpoint when ``stop_at`` stops early).

    Every step's questions come from a generator seeded by (seed, step), so a resumed run asks the same
    questions the uninterrupted one would have.
    """
    from evalkit.world import render, sample_pairs

    session = TrainingSession(out_dir, config, resume=resume, resumable=RESUMABLE_KEYS)
    set_seed(config.seed)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, config.steps))
    session.restore(model, optimizer, schedule)
    _, scenes = sample_pairs("all", config.num_scenes, seed=config.seed, split="train")
    images, masks = render(scenes, return_masks=True)
    words = object_words(scenes, model.index)
    last: dict = {}
    model.train()
    for step in session.steps(
        config.steps, checkpoint_every=config.checkpoint_every, stop_at=stop_at, desc="train scorer", progress=progress
    ):
        loss = _scorer_batch_loss(model, scenes, images, masks, words, config, step)
        check_finite(loss, step, session.checkpoint_dir)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        row = {"step": step + 1, "loss": round(loss.item(), 5), "elapsed": session.elapsed()}
        if session.due(step, config.eval_every, config.steps):
            model.eval()
            last = scorer_accuracy(model, config, "dev")
            model.train()
            row.update({f"dev/{k}": v for k, v in last.items()})
        session.log(row)
        session.bar.set_postfix(loss=f"{row['loss']:.4f}")
    if session.stopped_early:
        return session.checkpoint_dir
    model.eval()
    record = {
        "config": dataclasses.asdict(config),
        "dev": last or scorer_accuracy(model, config, "dev"),
        "val": scorer_accuracy(model, config, "val"),
        "num_parameters": model.num_parameters(),
        "wall_time_s": session.elapsed(),
        "torch_threads": torch.get_num_threads(),
    }
    return session.finish(model, record)


def _scorer_batch_loss(model, scenes, images, masks, words, config: ScorerTrainConfig, step: int) -> torch.Tensor:
    """Step ``step``'s loss: the dense word-map loss plus the phrase loss on questions drawn from (seed, step)."""
    rng = np.random.default_rng([config.seed, step])
    idx, phrases, labels, _ = draw_questions(scenes, config.batch_size, rng)
    hot, _ = model.encode_phrases(phrases)
    word_logits = model.word_logits(images_to_tensor(images[idx]))
    dense = F.binary_cross_entropy_with_logits(
        word_logits,
        dense_targets(masks[idx], words[idx], word_logits.shape[-1]),
        pos_weight=torch.full((word_logits.shape[1], 1, 1), config.pos_weight),
    )
    return dense + phrase_loss(model.phrase_log_prob(word_logits, hot), torch.from_numpy(labels))


def ship_scorer(
    run_dir: str | Path,
    dest: str | Path | None = None,
    dtype: torch.dtype | None = torch.float16,
    overwrite: bool = False,
) -> Path:
    """Copy a run's final scorer to ``dest`` (default: ``evalkit/world/weights/scorer``) as fp16.

    Weights already there are replaced only with ``overwrite``: the default folder is the checkout's shipped
    scorer, which every benchmark run scores with.
    """
    from evalkit.scorers.binding import SHIPPED_DIR, BindingVQA

    return ship(BindingVQA, run_dir, dest if dest is not None else SHIPPED_DIR, dtype, overwrite=overwrite)
