"""``evalkit train-baseline --prior eclipse|projection|diffusion``: the priors of the synthetic world.

Data. The world CLIP is frozen, so its outputs are computed once into an **embedding cache**
(``<cache>/prior-cache/<key>/``, keyed by the pair count, data seed and the CLIP weights): for every
distinct caption (and its attribute-swapped twin, and the empty prompt) the pooled text embedding,
per-token hidden states and mask; for every training pair the raw image embedding of its render and the
indices of its caption and swapped caption. All runs on the same data share the cache; training then
never touches a renderer or a text encoder (``benchmarks/speed/prior_training_cache.py`` measures the gain).

Objectives (all targets are the *raw* CLIP image embedding the decoders consume):

- ``eclipse``: MSE(prediction, image embedding) + λ · L_CLS, where L_CLS is the text→image InfoNCE of the
  batch's predictions: logits[i, j] = cos(text_i, prediction_j) / τ, target j = i. Pairs in a batch that
  share a caption are not counted as each other's negatives. λ = 0.2 (the paper's); τ = 0.1, chosen by
  the sweep recorded in ``results/priors/tau-sweep`` on the dev split (the paper does not state τ).
  ``--hard-negatives`` adds an image→text term whose candidates are the batch's captions *and* their
  attribute-swapped twins — random in-batch negatives almost never contain the binding negative.
- ``projection``: the same network, λ = 0.
- ``diffusion``: diffusers' PriorTransformer (time token) on a 1000-step linear DDPM schedule, predicting
  the clean standardised embedding; the text conditioning is replaced by the empty prompt's encoding with
  probability 0.1 (classifier-free guidance).

Schedule. AdamW, linear warm-up, then ``CosineAnnealingWarmRestarts`` (the paper's scheduler) with one
cycle over the run by default. The paper trains 33 M-parameter priors at lr 5e-5 and batch 1,024 for
~60k steps; our priors are ~100× smaller and train for a few thousand steps, where 5e-5 barely moves
them, so the default lr is 1e-3 (and 5e-4 for sizes with ≥ 4 layers), batch 256.

Every random draw of a step (batch, noise, timesteps, dropout) is a function of (seed, step), so a
resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalkit.contracts import content_hash
from evalkit.errors import EvalkitError, SettingError
from evalkit.priors.sizes import KINDS, SIZES
from evalkit.serialization import atomic_write_json
from evalkit.train.common import (
    Stopwatch,
    TrainingSession,
    check_finite,
    decay_groups,
    refuse_existing_run,
    set_seed,
    ship,
)

#: settings a resumed run may change
RESUMABLE_KEYS = ("checkpoint_every", "eval_every", "log_with")
#: experiment trackers accelerate drives (``--log-with``); log.jsonl is written whatever is chosen
TRACKERS = ("tensorboard", "wandb")
DEFAULT_LAMBDA = 0.2
DEFAULT_TAU = 0.1


#: the ECLIPSE paper's settings, the defaults when training on real data (``--data``)
PAPER_DEFAULTS = {"size": "paper", "steps": 60_000, "batch_size": 1024, "lr": 5e-5}
#: the synthetic world's defaults: priors ~100× smaller than the paper's, trained for a few thousand steps
WORLD_DEFAULTS = {"size": "small", "steps": 2000, "batch_size": 256}


@dataclass
class PriorTrainConfig:
    prior: str = "eclipse"  # eclipse | projection | diffusion
    size: str | None = None  # see evalkit.priors.sizes.SIZES (None: small on the world, paper on real data)
    steps: int | None = None  # None: 2000 on the world, 60,000 on real data
    batch_size: int | None = None  # global batch (None: 256 on the world, 1,024 on real data)
    lr: float | None = None  # None: 5e-5 on real data; world: 1e-3, or 5e-4 for models with >= 4 layers
    warmup_steps: int = 100
    restart_period: int | None = None  # CosineAnnealingWarmRestarts T_0 (None: one cycle over the run)
    min_lr_ratio: float = 0.05  # eta_min = lr × this
    weight_decay: float = 0.01
    lam: float | None = None  # contrastive weight λ (None: 0.2 for eclipse, 0 otherwise)
    tau: float = DEFAULT_TAU
    hard_negatives: bool = False  # eclipse: swapped captions as extra negatives (world only)
    cond_drop_prob: float = 0.1  # diffusion: empty-prompt conditioning (classifier-free guidance)
    num_pairs: int = 50000  # world: training pairs (train split, all categories)
    dev_pairs: int = 1000  # world: held-out pairs (dev split) for the periodic evaluation
    data_seed: int = 0  # which pairs (world) / which held-out split (real data)
    seed: int = 0  # initialisation and batch order (the "training seed")
    checkpoint_every: int = 500
    eval_every: int = 500
    grad_accum_steps: int = 1  # micro-batches per step (each process's share of the batch split this many times)
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate's autocast; fp16 needs a GPU)
    tiny: bool = False  # a tiny random CLIP (tests)
    data: str | None = None  # an `evalkit embed` folder of real image embeddings (None: the synthetic world)
    text_encoder: str | None = None  # real data: the frozen text encoder's folder (text_encoder/ + tokenizer/)
    val_fraction: float = 0.01  # real data: pairs held out for the periodic evaluation (without val_data)
    val_data: str | None = None  # real data: another `evalkit embed` folder as the held-out set
    val_pairs: int = 1000  # real data: held-out pairs evaluated (at most)
    cache_text: bool = False  # real data: encode every caption once (small sets; ~197 KB per caption at 1280-d)
    space: str | None = None  # real data: the decoder space (karlo | kandinsky22); None: from the width (768 / 1280)
    log_with: str | None = None  # tensorboard | wandb (comma-separated): accelerate's trackers, beside log.jsonl

    def __post_init__(self):
        from evalkit.errors import UnknownNameError

        if self.prior not in KINDS:
            raise UnknownNameError("prior kind", self.prior, list(KINDS))
        real = self.data is not None
        for key, value in (PAPER_DEFAULTS if real else WORLD_DEFAULTS).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.size not in SIZES:
            raise UnknownNameError("size", self.size, list(SIZES))
        if self.lam is None:
            self.lam = DEFAULT_LAMBDA if self.prior == "eclipse" else 0.0
        if self.prior == "projection" and self.lam != 0:
            raise SettingError(
                "the projection prior is the eclipse network with λ = 0; use --prior eclipse for λ > 0 "
                f"(got --lam {self.lam})"
            )
        if self.prior == "diffusion" and self.lam != 0:
            raise SettingError(
                f"--lam is the eclipse prior's contrastive weight; the diffusion prior has no such term "
                f"(got --lam {self.lam})"
            )
        if self.lam < 0:
            raise SettingError(f"--lam must be >= 0, got {self.lam}")
        if self.prior != "eclipse" and self.hard_negatives:
            raise SettingError(f"--hard-negatives applies to the eclipse prior's contrastive term, not to {self.prior}")
        if real and self.hard_negatives:
            raise SettingError(
                "--hard-negatives needs each caption's attribute-swapped twin, which only the synthetic "
                "world has; drop it with --data"
            )
        if real and not self.text_encoder:
            raise SettingError(
                "--data needs --text-encoder DIR: the frozen text encoder of the decoder's prior (a "
                "folder with text_encoder/ + tokenizer/, e.g. kandinsky-2-2-prior or karlo-v1-alpha)"
            )
        if not real and (self.text_encoder or self.val_data or self.cache_text):
            raise SettingError("--text-encoder, --val-data and --cache-text apply to real data (--data EMB_DIR)")
        if not 0 < self.val_fraction < 1:
            raise SettingError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.lr is None:
            self.lr = 5e-4 if SIZES[self.size][0] >= 4 else 1e-3
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise SettingError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "num_pairs", "grad_accum_steps", "val_pairs"):
            if getattr(self, name) < 1:
                raise SettingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def quick(cls, prior: str = "eclipse", **overrides) -> "PriorTrainConfig":
        base = dict(
            prior=prior,
            size="tiny",
            steps=6,
            batch_size=8,
            num_pairs=64,
            dev_pairs=16,
            warmup_steps=2,
            checkpoint_every=3,
            eval_every=3,
            tiny=True,
        )
        return cls(**{**base, **overrides})

    def shipped_name(self) -> str:
        """The registry name this run ships under: eclipse, eclipse-large, eclipse-hn, projection, diffusion, ..."""
        name = self.prior + ("-hn" if self.hard_negatives else "")
        return name if self.size == "small" else f"{name}-{self.size}"


# --------------------------------------------------------------------------- the embedding cache


def clip_for(config: PriorTrainConfig, clip_dir=None):
    from evalkit.world.models.clip import WorldCLIP, load_world_clip

    if config.tiny:
        torch.manual_seed(1234)
        clip = WorldCLIP.tiny(embed_dim=32).eval()
        for p in clip.parameters():
            p.requires_grad_(False)
        return clip
    return load_world_clip(str(clip_dir) if clip_dir else None)


def clip_fingerprint(clip) -> str:
    """A hash of the CLIP's weights: the cache is valid only for the CLIP that wrote it.

    Per tensor its name, shape, sum and absolute sum: a summary, not the exact
    :func:`evalkit.serialization.weights_fingerprint`, kept as it is because it names the prior embedding caches
    already on disk (``prior-cache/<key>``); a new hash would make every one of them a miss."""
    state = clip.state_dict()
    digest = [
        f"{k}:{tuple(v.shape)}:{float(v.float().sum()):.6e}:{float(v.float().abs().sum()):.6e}"
        for k, v in sorted(state.items())
    ]
    return content_hash(digest)


def cache_dir(config: PriorTrainConfig, clip) -> Path:
    from evalkit.paths import cache_root

    key = content_hash(
        {
            "num_pairs": config.num_pairs,
            "dev_pairs": config.dev_pairs,
            "data_seed": config.data_seed,
            "clip": clip_fingerprint(clip),
            "format": 1,
        }
    )
    return cache_root() / "prior-cache" / key


@torch.inference_mode()
def encode_pairs(
    clip,
    captions: list[str],
    scenes,
    prompt_index: dict[str, int],
    batch_size: int = 1000,
    progress: bool = True,
    desc: str = "encode images",
) -> dict[str, torch.Tensor]:
    """Image embeddings of the pairs' renders and the indices of their captions and swapped captions."""
    from evalkit.world.models.tensors import render_tensor

    embeds = []
    for start in tqdm(range(0, len(scenes), batch_size), desc=desc, disable=not progress):
        embeds.append(clip.encode_image(render_tensor(scenes[start : start + batch_size])).float())
    return {
        "image_embeds": torch.cat(embeds),
        "caption": torch.tensor([prompt_index[c] for c in captions]),
        "swapped": torch.tensor([prompt_index[s.swapped_caption] for s in scenes]),
    }


@torch.inference_mode()
def encode_prompts(clip, prompts: list[str], batch_size: int = 1000) -> dict[str, torch.Tensor]:
    out = {"text_embeds": [], "text_hidden": [], "attention_mask": []}
    for start in range(0, len(prompts), batch_size):
        encoding = clip.encode_text(prompts[start : start + batch_size])
        out["text_embeds"].append(encoding.text_embeds.float())
        out["text_hidden"].append(encoding.text_hidden.float())
        out["attention_mask"].append(encoding.attention_mask.bool())
    return {k: torch.cat(v) for k, v in out.items()}


def build_cache(config: PriorTrainConfig, clip, progress: bool = True) -> dict:
    """Render, encode and store the training/dev data once; later runs load it in a second."""
    from safetensors.torch import load_file, save_file

    from evalkit.world import sample_pairs

    directory = cache_dir(config, clip)
    if (directory / "complete").is_file():
        tensors = load_file(str(directory / "cache.safetensors"))
        meta = json.loads((directory / "meta.json").read_text())
        return {**tensors, "prompts": meta["prompts"], "dir": directory}
    train_captions, train_scenes = sample_pairs("all", config.num_pairs, config.data_seed, split="train")
    dev_captions, dev_scenes = sample_pairs("all", config.dev_pairs, config.data_seed, split="dev")
    prompts = sorted({*train_captions, *dev_captions, *(s.swapped_caption for s in train_scenes + dev_scenes)})
    prompts = [""] + prompts  # index 0: the empty prompt (the unconditional branch of guidance)
    index = {p: i for i, p in enumerate(prompts)}
    tensors = {f"prompt.{k}": v for k, v in encode_prompts(clip, prompts).items()}
    tensors["prompt.attention_mask"] = tensors["prompt.attention_mask"].to(torch.uint8)
    for split, captions, scenes in (("train", train_captions, train_scenes), ("dev", dev_captions, dev_scenes)):
        for k, v in encode_pairs(
            clip, captions, scenes, index, progress=progress, desc=f"encode {split} renders"
        ).items():
            tensors[f"{split}.{k}"] = v
    # written into a private folder and renamed: concurrent builders never see (or leave) a partial cache
    staging = directory.with_name(f"{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / "cache.safetensors"))
    atomic_write_json(
        staging / "meta.json",
        {
            "prompts": prompts,
            "num_pairs": config.num_pairs,
            "dev_pairs": config.dev_pairs,
            "data_seed": config.data_seed,
        },
    )
    (staging / "complete").write_text("ok\n")
    try:
        staging.rename(directory)
    except OSError:  # another process finished first: its cache is identical
        shutil.rmtree(staging, ignore_errors=True)
    return {**tensors, "prompts": prompts, "dir": directory}


class Data:
    """The synthetic world's training data: batches from the embedding cache, text encodings gathered by caption
    index. The trainer's other source, :class:`evalkit.train.real_data.EmbeddingData`, has the same methods."""

    real = False

    def __init__(self, cache: dict, clip=None):
        self.encoder = clip
        self.text = cache["prompt.text_embeds"]
        self.hidden = cache["prompt.text_hidden"]
        self.mask = cache["prompt.attention_mask"].bool()
        self.splits = {
            s: (cache[f"{s}.image_embeds"], cache[f"{s}.caption"].long(), cache[f"{s}.swapped"].long())
            for s in ("train", "dev")
        }
        self.dim = self.splits["train"][0].shape[1]

    def indices(self, step: int, config: PriorTrainConfig, generator: torch.Generator) -> torch.Tensor:
        """The step's global batch: a fresh random subset each step (drawn first from the step's generator)."""
        return torch.randperm(len(self.splits["train"][0]), generator=generator)[: config.batch_size]

    def batch(self, split: str, idx) -> dict[str, torch.Tensor]:
        images, caption, swapped = self.splits[split]
        idx = torch.as_tensor(idx)
        c, s = caption[idx], swapped[idx]
        return {
            "image": images[idx],
            "caption": c,
            "text": self.text[c],
            "hidden": self.hidden[c],
            "mask": self.mask[c],
            "swapped_text": self.text[s],
        }

    def empty(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.text[:1].expand(n, -1), self.hidden[:1].expand(n, -1, -1), self.mask[:1].expand(n, -1)

    def image_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, D)`` mean and standard deviation of the training image embeddings (the diffusion prior's
        standardisation, ``clip_mean`` / ``clip_std``)."""
        images = self.splits["train"][0]
        return images.mean(0, keepdim=True), images.std(0, keepdim=True).clamp_min(1e-6)

    def held_out_metrics(self, model, config: PriorTrainConfig) -> dict:
        return world_dev_metrics(model, config, self, self.encoder)

    def position(self, step: int) -> dict:
        return {}  # a fresh subset every step: no epochs

    def record(self) -> dict:
        return {}

    def save_final(self, session: TrainingSession, model, record: dict) -> Path:
        return session.finish(model, record)


def open_training_data(config: PriorTrainConfig, accelerator=None, clip_dir=None, progress: bool = True):
    """The data source of ``config``: the world's embedding cache, or an ``evalkit embed`` folder."""
    if config.data is not None:
        from evalkit.train.real_data import EmbeddingData

        return EmbeddingData.open(config, accelerator, progress)
    clip = clip_for(config, clip_dir)
    main_first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with main_first:  # one process builds the embedding cache, the others read it
        cache = build_cache(config, clip, progress)
    return Data(cache, clip)


# --------------------------------------------------------------------------- losses


def info_nce(queries: torch.Tensor, keys: torch.Tensor, tau: float, same: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of cos(query_i, key_j) / τ with target j = i; ``same[i, j]`` marks pairs not to use as
    negatives."""
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / tau
    if same is not None:
        eye = torch.eye(len(queries), logits.shape[1], dtype=torch.bool)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries)))


def gather_with_grad(tensor: torch.Tensor, accelerator) -> torch.Tensor:
    """Every process's ``tensor`` concatenated in rank order; only this process's part carries gradients."""
    if accelerator is None or accelerator.num_processes == 1:
        return tensor
    parts = list(accelerator.gather(tensor.detach().contiguous()).chunk(accelerator.num_processes))
    parts[accelerator.process_index] = tensor
    return torch.cat(parts)


def eclipse_loss(
    model, batch: dict, noise: torch.Tensor, config: PriorTrainConfig, accelerator=None
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(loss to back-propagate, loss to report, its parts) for this process's share of the batch.

    Under several processes the contrastive term is computed over the whole batch (every process's
    predictions gathered), exactly as one process would; each process's gradient reaches only its own
    predictions, so that term is weighted by the number of processes before DDP averages the gradients.
    """
    pred = model(noise, batch["text"], batch["hidden"], batch["mask"])
    mse = F.mse_loss(pred.float(), batch["image"])
    parts = {"mse": mse.detach()}
    loss = report = mse
    if config.lam > 0:
        gather = lambda t: gather_with_grad(t, accelerator)  # noqa: E731
        caption, text, preds = gather(batch["caption"]), gather(batch["text"]), gather(pred.float())
        same = caption[:, None] == caption[None, :]
        cls = info_nce(text, preds, config.tau, same)  # text → image: each text picks its prediction
        if config.hard_negatives:
            # image → text over the batch's captions and their swapped twins (a swapped twin is never a positive)
            keys = torch.cat([text, gather(batch["swapped_text"])])
            same_hn = torch.cat([same, torch.zeros_like(same)], dim=1)
            cls = cls + info_nce(preds, keys, config.tau, same_hn)
        processes = accelerator.num_processes if accelerator is not None else 1
        loss = mse + config.lam * processes * cls
        report = mse + config.lam * cls.detach()
        parts["cls"] = cls.detach()
    return loss, report.detach(), parts


def diffusion_loss(
    model, batch: dict, noise: torch.Tensor, timesteps: torch.Tensor, drop: torch.Tensor, data: Data, scheduler
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    stats = getattr(model, "module", model)  # under DDP the statistics live on the wrapped module
    x0 = (batch["image"] - stats.clip_mean) / stats.clip_std
    noisy = scheduler.add_noise(x0, noise, timesteps)
    empty_text, empty_hidden, empty_mask = (t.to(x0.device) for t in data.empty(len(x0)))
    text = torch.where(drop[:, None], empty_text, batch["text"])
    hidden = torch.where(drop[:, None, None], empty_hidden, batch["hidden"])
    mask = torch.where(drop[:, None], empty_mask, batch["mask"])
    pred = model(
        noisy, timesteps, proj_embedding=text, encoder_hidden_states=hidden, attention_mask=mask
    ).predicted_image_embedding
    loss = F.mse_loss(pred.float(), x0)
    return loss, loss.detach(), {"mse": loss.detach()}


# --------------------------------------------------------------------------- model and evaluation


def prior_class(config: PriorTrainConfig):
    from evalkit.priors.diffusion import DiffusionPrior
    from evalkit.priors.eclipse import EclipsePrior
    from evalkit.priors.projection import ProjectionPrior

    return {"eclipse": EclipsePrior, "projection": ProjectionPrior, "diffusion": DiffusionPrior}[config.prior]


def build_model(config: PriorTrainConfig, encoder):
    """The prior network for a text encoder of this shape (``embedding_dim`` wide, ``context_length`` tokens)."""
    cls = prior_class(config)
    return cls.build_model(cls.size_config(config.size, encoder.embedding_dim, encoder.context_length))


@torch.inference_mode()
def world_dev_metrics(model, config: PriorTrainConfig, data: Data, clip, limit: int = 500) -> dict:
    """Held-out (dev) pairs: cosine of the prediction to the pair's image embedding, and its MSE."""
    from evalkit.contracts import TextEncoding

    cls = prior_class(config)
    trained = model
    if next(model.parameters()).device.type != "cpu":  # the priors sample on the CPU
        import copy

        model = copy.deepcopy(model).float().cpu()
    images, _, _ = data.splits["dev"]
    idx = torch.arange(min(limit, len(images)))
    batch = data.batch("dev", idx)
    prior = (
        cls(model=model, clip=clip)
        if config.prior != "diffusion"
        else cls(model=model, clip=clip, empty_encoding=TextEncoding("synth-clip", *[t[:1] for t in data.empty(1)]))
    )
    encoding = TextEncoding("synth-clip", batch["text"], batch["hidden"], batch["mask"])
    pred = prior.sample(encoding, [10_000 + int(i) for i in idx]).float()
    trained.train()
    return {
        "dev_cos": round(F.cosine_similarity(pred, batch["image"]).mean().item(), 4),
        "dev_mse": round(F.mse_loss(pred, batch["image"]).item(), 5),
    }


def make_scheduler(optimizer, config: PriorTrainConfig):
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=max(1, config.warmup_steps))
    period = config.restart_period or max(1, config.steps - config.warmup_steps + 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=period, eta_min=config.lr * config.min_lr_ratio
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[max(1, config.warmup_steps)])


def trackers(config: PriorTrainConfig) -> list:
    """accelerate's trackers for ``config.log_with``: each must be installed (a clear error names the package)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    names = [n.strip() for n in (config.log_with or "").split(",") if n.strip()]
    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in names:
        if name not in available:
            from evalkit.errors import UnknownNameError

            raise UnknownNameError("tracker", name, list(TRACKERS))
        if not available[name]():
            raise SettingError(
                f"--log-with {name} needs the {name} package, which is not installed (pip install "
                f"{name}); log.jsonl is written without it"
            )
    return names


def _accelerator(config: PriorTrainConfig, out_dir: Path | None = None):
    from accelerate import Accelerator

    log_with = trackers(config)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
        log_with=log_with or None,
        project_dir=str(out_dir / "trackers") if out_dir is not None and log_with else None,
    )
    share = accelerator.num_processes * config.grad_accum_steps
    if config.batch_size % share:
        raise SettingError(
            f"--batch-size {config.batch_size} must be divisible by processes × --grad-accum-steps "
            f"= {accelerator.num_processes} × {config.grad_accum_steps}"
        )
    return accelerator


def _tracker_config(config: PriorTrainConfig) -> dict:
    """The run's settings as trackers take them (scalars and strings; None as "")."""
    return {k: ("" if v is None else v) for k, v in dataclasses.asdict(config).items()}


def _session(out_dir: Path, config: PriorTrainConfig, resume: bool, accelerator) -> TrainingSession:
    def any_process(flag: bool) -> bool:  # all processes stop at the same step, whichever was signalled
        if accelerator.num_processes == 1:
            return flag
        return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum").item())

    return TrainingSession(
        out_dir,
        config,
        resume=resume,
        resumable=RESUMABLE_KEYS,
        main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        any_process=any_process,
    )


def _optimizer(model, config: PriorTrainConfig):
    optimizer = torch.optim.AdamW(decay_groups(model.named_parameters(), config.weight_decay), lr=config.lr)
    return optimizer, make_scheduler(optimizer, config)  # the scheduler is stepped once per optimizer step, by us


@dataclass
class _Run:
    """What one training run holds between its stages."""

    config: PriorTrainConfig
    accelerator: object
    data: object
    session: TrainingSession
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped under several processes)
    raw: torch.nn.Module  # the network itself
    optimizer: torch.optim.Optimizer
    scheduler: object
    noise_schedule: object
    cache_s: float


def train_prior(
    out_dir: str | Path,
    config: PriorTrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    clip_dir=None,
) -> Path:
    """Train into ``out_dir``; returns ``out_dir/final`` (or the checkpoint folder when ``stop_at`` stops early).

    One loop for every data source: the synthetic world (``config.data`` None: the embedding cache of world
    renders) and real image–text pairs (``config.data``: an ``evalkit embed`` folder, text encoded on the fly by
    the frozen ``config.text_encoder``). Runs under accelerate: launched with ``torchrun`` / ``accelerate
    launch`` on N processes, every step's batch (the same global batch as one process draws) is split into N
    equal shares (DDP averages the gradients), each share into ``grad_accum_steps`` micro-batches; process 0
    evaluates, logs and checkpoints.
    """
    from evalkit.distributed import finish as finish_processes

    run = _start(Path(out_dir), config, resume, progress, clip_dir)
    last_eval: dict = {}
    for step in run.session.steps(
        config.steps,
        checkpoint_every=config.checkpoint_every,
        stop_at=stop_at,
        desc=f"train {config.shipped_name()}",
        progress=progress,
    ):
        row = _train_step(run, step)
        if run.accelerator.is_main_process:
            if run.session.due(step, config.eval_every, config.steps):
                last_eval = run.data.held_out_metrics(run.raw, config)
                row.update({f"eval/{key}": v for key, v in last_eval.items()})
            run.session.log(row)
            run.session.bar.set_postfix(loss=f"{row['loss']:.4f}")
            if config.log_with:
                run.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
    if config.log_with:
        run.accelerator.end_training()
    if run.session.stopped_early:
        finish_processes()
        return run.session.checkpoint_dir
    final = Path(out_dir) / "final"
    if run.accelerator.is_main_process:
        final = _save_final(run, last_eval)
    finish_processes()
    return final


def _start(out_dir: Path, config: PriorTrainConfig, resume: bool, progress: bool, clip_dir) -> _Run:
    """Check the folder, open the data, build (or restore) model, optimizer and schedule, and prepare them."""
    from evalkit.priors.diffusion import train_scheduler

    accelerator = _accelerator(config, out_dir)
    refuse_existing_run(out_dir, resume)
    clock = Stopwatch()
    # the data and its encoders are checked before the run folder is made: bad input leaves nothing behind
    data = open_training_data(config, accelerator, clip_dir, progress and accelerator.is_main_process)
    cache_s = clock()
    session = _session(out_dir, config, resume, accelerator)
    set_seed(config.seed)
    model = build_model(config, data.encoder)
    if config.prior == "diffusion" or data.real:  # the standardisation statistics of the training embeddings
        mean, std = data.image_stats()
        model.clip_mean.data.copy_(mean)
        model.clip_std.data.copy_(std)
    model.train()
    optimizer, scheduler = _optimizer(model, config)
    if resume:
        from evalkit.priors.trained import check_config
        from evalkit.serialization import load_config

        check_config(dict(model.config), load_config(session.checkpoint_dir), str(session.checkpoint_dir))
    session.restore(model, optimizer, scheduler)
    if config.log_with:
        accelerator.init_trackers(f"evalkit-{config.shipped_name()}", config=_tracker_config(config))
    model, optimizer = accelerator.prepare(model, optimizer)
    return _Run(
        config,
        accelerator,
        data,
        session,
        model,
        accelerator.unwrap_model(model),
        optimizer,
        scheduler,
        train_scheduler(),
        cache_s,
    )


def _train_step(run: _Run, step: int) -> dict:
    """One optimizer step over the step's global batch; returns its log row (the same on every process)."""
    config, accelerator, data = run.config, run.accelerator, run.data
    device, rank, processes = accelerator.device, accelerator.process_index, accelerator.num_processes
    micro = config.batch_size // (processes * config.grad_accum_steps)
    # the global batch and all of its random draws depend on (seed, step) only: any process count, any resume
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, step]).generate_state(1)[0]))
    idx = data.indices(step, config, g)
    noise = torch.randn(len(idx), data.dim, generator=g)
    if config.prior == "diffusion":
        timesteps = torch.randint(0, run.noise_schedule.config.num_train_timesteps, (len(idx),), generator=g)
        drop = torch.rand(len(idx), generator=g) < config.cond_drop_prob
    reported = []
    for k in range(config.grad_accum_steps):
        # micro-batch k of the step is a contiguous chunk of the batch; process r takes its r-th share
        share = slice((k * processes + rank) * micro, (k * processes + rank + 1) * micro)
        batch = {key: v.to(device) for key, v in data.batch("train", idx[share]).items()}
        with accelerator.accumulate(run.model):
            if config.prior == "diffusion":
                loss, report, parts = diffusion_loss(
                    run.model,
                    batch,
                    noise[share].to(device),
                    timesteps[share].to(device),
                    drop[share].to(device),
                    data,
                    run.noise_schedule,
                )
            else:
                loss, report, parts = eclipse_loss(run.model, batch, noise[share].to(device), config, accelerator)
            # the reported numbers are the whole micro-batch's (mean over processes), identical on every process
            values = accelerator.reduce(torch.stack([report, *parts.values()]).float(), reduction="mean")
            reported.append(values.cpu())
            check_finite(values[0], step, run.session.checkpoint_dir)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), 1.0)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    mean = torch.stack(reported).mean(0).tolist()
    return {
        "step": step + 1,
        "loss": round(mean[0], 5),
        **{key: round(v, 5) for key, v in zip(parts, mean[1:])},
        "grad_norm": round(float(grad_norm), 4),
        "lr": run.scheduler.get_last_lr()[0],
        "elapsed": run.session.elapsed(),
        **data.position(step),
    }


def _save_final(run: _Run, last_eval: dict) -> Path:
    """``final/`` with the training record (process 0)."""
    from evalkit.priors.sizes import count_parameters

    run.raw.eval()
    trainable, frozen = count_parameters(run.raw)
    config = run.config
    record = {
        "config": dataclasses.asdict(config),
        "final_metrics": last_eval or run.data.held_out_metrics(run.raw, config),
        "wall_time_s": run.session.elapsed(),
        "cache_s": round(run.cache_s, 1),
        "torch_threads": torch.get_num_threads(),
        "processes": run.accelerator.num_processes,
        "device": str(run.accelerator.device),
        "shipped_name": config.shipped_name(),
        "num_parameters": trainable + frozen,
        "num_trainable_parameters": trainable,
        **run.data.record(),
    }
    return run.data.save_final(run.session, run.raw, record)


def shipped_dir(config: PriorTrainConfig) -> Path:
    """Where ``--ship`` puts a world prior: ``priors/<name>/seed-<seed>/`` in the checkout."""
    from evalkit.priors.trained import SHIPPED_ROOT

    return SHIPPED_ROOT / config.shipped_name() / f"seed-{config.seed}"


def ship_prior(run_dir: str | Path, dest: str | Path | None = None, overwrite: bool = False) -> Path:
    """Copy a run's final prior to ``priors/<name>/seed-<seed>/`` (fp16, with its training record); weights
    already there are replaced only with ``overwrite``."""
    run_dir = Path(run_dir)
    config = PriorTrainConfig(**json.loads((run_dir / "train_config.json").read_text()))
    if not (run_dir / "final").is_dir():
        raise EvalkitError(f"{run_dir} has no final/ weights: the run has not finished (resume it with --resume)")
    dest = Path(dest) if dest is not None else shipped_dir(config)
    return ship(prior_class(config).model_class, run_dir, dest, overwrite=overwrite)


def describe(prior: str, size: str, embedding_dim: int, num_embeddings: int) -> dict:
    """Parameter count (trainable, as everywhere in evalkit: :func:`evalkit.priors.sizes.count_parameters`) and
    the fp32 / fp16 size of a prior architecture's weights file (every tensor), without training it."""
    from evalkit.priors.sizes import count_parameters

    cfg = PriorTrainConfig(prior=prior, size=size)
    cls = prior_class(cfg)
    model = cls.build_model(cls.size_config(size, embedding_dim, num_embeddings))
    trainable, frozen = count_parameters(model)
    params = trainable + frozen
    return {
        "prior": prior,
        "size": size,
        "embedding_dim": embedding_dim,
        "num_embeddings": num_embeddings,
        "parameters": trainable,
        "frozen_parameters": frozen,
        "fp32_mb": round(params * 4 / 1e6, 1),
        "fp16_mb": round(params * 2 / 1e6, 1),
        "config": {k: v for k, v in dict(model.config).items() if not k.startswith("_")},
    }
