"""``evalkit train-world decoder``: the synthetic world's diffusion decoder, trained on CLIP image embeddings.

The decoder learns p(image | CLIP image embedding) on renders of the world's train split (all
categories). The CLIP is frozen, so the embeddings of the training pool are computed once
(batched, inference mode) and cached in the run folder, keyed by (num_pairs, seed, CLIP weights);
a resumed run reuses them. Each step then draws a batch of (render, embedding) pairs, replaces
each embedding by zeros with probability ``cond_drop_prob`` (the unconditional branch of
classifier-free guidance) and takes a DDPM epsilon-prediction step (Min-SNR-γ weighted), keeping an
EMA of the weights. Everything random in a step (batch, timesteps, noise, dropout) is a function of
(seed, step), so a resumed run continues exactly as the uninterrupted one would have.

The periodic evaluation decodes the embeddings of dev-split renders with DDIM + guidance and
re-embeds the decoded images with the same CLIP:

- ``eval/recon_cos``: cosine between a decoded image's embedding and the embedding it was decoded from;
- ``eval/swap_acc``: the decoded image is closer to its target than to the target's attribute-swapped
  twin (same layout, bound attributes exchanged) — binding, as far as the CLIP can tell;
- ``eval/top1``: the decoded image retrieves its own target among all evaluated targets.

It also writes ``samples/step-<step>.png`` (top row: targets, bottom row: decoded).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalkit.contracts import Batch, Protocol, content_hash
from evalkit.errors import ConfigMismatchError
from evalkit.train.common import (
    NothingToResumeError,
    Stopwatch,
    TrainingSession,
    check_finite,
    set_seed,
    ship,
    warmup_cosine,
)
from evalkit.world.models.tensors import embed_images, images_to_tensor

CACHE_DIR_NAME = "cache"


#: settings a resumed run may change (with the constant learning rate, ``steps`` only extends the run)
RESUMABLE_KEYS = ("steps", "checkpoint_every", "eval_every")


@dataclass
class DecoderTrainConfig:
    steps: int = 1300  # ≈ 30 min on 2 idle cores at batch 64 (≈1.2 s/step); extend later with resume
    batch_size: int = 64
    lr: float = 5e-4
    lr_schedule: str = "constant"  # "constant" (after warm-up; the EMA smooths) or "cosine" (to 0.1× at `steps`)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float = 0.995  # 0 disables the EMA; the EMA weights are the final model
    snr_gamma: float | None = 5.0  # Min-SNR-γ loss weighting (None: plain epsilon MSE)
    cond_drop_prob: float = 0.1  # embeddings replaced by zeros (classifier-free guidance)
    num_pairs: int = 32000  # rendered training pool (train split, all categories)
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 600
    eval_pairs: int = 48  # dev renders decoded per evaluation
    eval_steps: int = 25  # DDIM steps in the evaluation
    eval_guidance: float | None = None  # None: the decoder's default
    embed_batch_size: int = 512
    tiny: bool = False  # tiny decoder and a random tiny CLIP (tests)
    decoder: dict = field(default_factory=dict)  # SynthDecoderConfig overrides (architecture, schedule)
    init_from: str | None = None  # start from these decoder weights (e.g. the shipped ones) with a fresh optimizer
    mixed_precision: str = (
        "no"  # "no" | "bf16": the forward pass under torch.autocast (weights and optimizer stay float32)
    )

    @classmethod
    def quick(cls) -> "DecoderTrainConfig":
        return cls(
            steps=6,
            batch_size=8,
            num_pairs=64,
            warmup_steps=2,
            checkpoint_every=3,
            eval_every=3,
            eval_pairs=4,
            eval_steps=2,
            embed_batch_size=32,
            tiny=True,
        )


# --------------------------------------------------------------------------- pieces


def build_clip(config: DecoderTrainConfig, clip_dir: str | Path | None):
    from evalkit.world.models.clip import WorldCLIP, load_world_clip

    if clip_dir is not None:
        clip = WorldCLIP.from_pretrained(clip_dir)
    elif config.tiny:
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            clip = WorldCLIP.tiny()
    else:
        clip = load_world_clip()
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


def build_decoder(config: DecoderTrainConfig, embedding_dim: int):
    """A fresh decoder, or (``config.init_from``) one holding those weights in float32, on their architecture."""
    from evalkit.decoders.synth import SynthDecoder

    if config.init_from:
        if config.decoder:
            raise ConfigMismatchError(
                "--init-from takes the architecture of its weights; drop the decoder overrides "
                f"({', '.join(sorted(config.decoder))})"
            )
        decoder = SynthDecoder.from_pretrained(config.init_from).float()
        if decoder.config.embedding_dim != embedding_dim:
            raise ConfigMismatchError(
                f"{config.init_from} decodes {decoder.config.embedding_dim}-d embeddings but the "
                f"CLIP gives {embedding_dim}-d ones"
            )
        return decoder.train()
    base = dataclasses.asdict(SynthDecoder.tiny_config()) if config.tiny else {}
    decoder_config = SynthDecoder.config_from_dict({**base, **config.decoder, "embedding_dim": embedding_dim})
    return SynthDecoder(decoder_config)


def weights_hash(module: torch.nn.Module) -> str:
    """The CLIP's ``clip_hash`` of training records and of the embedding cache's key: its
    :func:`~evalkit.serialization.weights_fingerprint` in the name-and-bytes form, 16 hex digits (the form
    recorded in the shipped decoder's training_record.json, kept so that record still matches)."""
    from evalkit.serialization import weights_fingerprint

    return weights_fingerprint(module, with_shapes=False)[:16]


def training_renders(num_pairs: int, seed: int) -> np.ndarray:
    from evalkit.world import render, sample_pairs

    _, scenes = sample_pairs("all", num_pairs, seed=seed, split="train")
    return render(scenes)


@torch.inference_mode()
def cached_embeddings(
    cache_dir: Path, clip, clip_hash: str, images: np.ndarray, config: DecoderTrainConfig, progress: bool
) -> torch.Tensor:
    """CLIP embeddings of the training pool, computed once per (pool, CLIP) and kept as safetensors."""
    from safetensors.torch import load_file, save_file

    key = content_hash({"num_pairs": config.num_pairs, "seed": config.seed, "clip": clip_hash})
    path = cache_dir / f"embeddings-{key}.safetensors"
    if path.is_file():
        embeds = load_file(str(path))["embeds"]
        if embeds.shape == (len(images), clip.embedding_dim):
            return embeds
    if progress:
        tqdm.write(f"embedding {len(images)} training renders with the CLIP (once; cached in {path.name})")
    embeds = embed_images(clip, images, config.embed_batch_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(
        {"embeds": embeds.contiguous()},
        str(tmp),
        metadata={"num_pairs": str(config.num_pairs), "seed": str(config.seed), "clip": clip_hash},
    )
    tmp.replace(path)
    return embeds


def step_generator(seed: int, step: int) -> torch.Generator:
    """The torch randomness of one step: a function of (seed, step) only."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 1]).integers(2**62)))


def diffusion_loss(
    decoder,
    scheduler,
    images: torch.Tensor,
    embeds: torch.Tensor,
    generator: torch.Generator,
    cond_drop_prob: float,
    snr_gamma: float | None,
) -> torch.Tensor:
    """DDPM epsilon loss on images in [0, 1]; embeddings dropped to zeros with ``cond_drop_prob``."""
    x0 = images * 2.0 - 1.0
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator)
    keep = (torch.rand(n, generator=generator) >= cond_drop_prob).float().unsqueeze(1)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    pred = decoder(noisy, timesteps, embeds * keep)
    per_image = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma:
        alphas = scheduler.alphas_cumprod[timesteps]
        snr = alphas / (1.0 - alphas)
        per_image = per_image * torch.clamp(snr, max=snr_gamma) / snr
    return per_image.mean()


class EMA:
    """Exponential moving average of float parameters and buffers, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1.0 - decay)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({**model.state_dict(), **self.shadow})


def eval_pool(num: int, seed: int):
    """Dev-split renders and their attribute-swapped twins (same layout, bound attributes exchanged)."""
    from evalkit.world import render, sample_pairs, sample_scene

    _, scenes = sample_pairs("all", num, seed=seed, split="dev")
    swapped = [sample_scene(scene.swapped_caption, scene.seed) for scene in scenes]
    return render(scenes), render(swapped)


@torch.inference_mode()
def evaluate_decoder(
    decoder, clip, targets: torch.Tensor, swapped: torch.Tensor, steps: int, guidance: float, seed: int = 42
) -> tuple[dict, torch.Tensor]:
    """Decode ``targets`` (CLIP embeddings), re-embed, compare; returns (metrics, decoded images)."""
    n = len(targets)
    batch = Batch.from_prompts([""] * n, [seed + i for i in range(n)])
    protocol = Protocol(
        decoder=decoder.name,
        num_inference_steps=steps,
        guidance_scale=guidance,
        resolution=decoder.resolution,
        images_per_prompt=1,
    )
    images = decoder.decode(targets, batch, protocol)
    got = F.normalize(clip.encode_image(images).float(), dim=-1)
    tgt, swp = F.normalize(targets, dim=-1), F.normalize(swapped, dim=-1)
    own = (got * tgt).sum(-1)
    metrics = {
        "recon_cos": round(own.mean().item(), 4),
        "swap_acc": round((own > (got * swp).sum(-1)).float().mean().item(), 4),
        "top1": round(((got @ tgt.T).argmax(dim=1) == torch.arange(n)).float().mean().item(), 4),
    }
    return metrics, images


def save_grid(path: Path, targets_uint8: np.ndarray, decoded: torch.Tensor, columns: int = 16) -> None:
    from PIL import Image

    decoded_uint8 = (decoded.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    k = min(columns, len(decoded_uint8))
    rows = [np.concatenate(list(a[:k]), axis=1) for a in (targets_uint8, decoded_uint8)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).resize(
        (rows[0].shape[1] * 2, rows[0].shape[0] * 4), Image.NEAREST
    ).save(path)


def lr_lambda(config: DecoderTrainConfig):
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {config.lr_schedule!r}")
    if config.lr_schedule == "constant":
        return lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
    return warmup_cosine(config.warmup_steps, config.steps, floor=0.1)


def resumable_keys(config: DecoderTrainConfig) -> tuple[str, ...]:
    """The settings a resume of this run may change: a cosine schedule is tied to the run's length, so its
    ``steps`` is fixed; after the constant one's warm-up, more steps only extend the run."""
    return RESUMABLE_KEYS if config.lr_schedule == "constant" else RESUMABLE_KEYS[1:]


# --------------------------------------------------------------------------- training


def train_decoder(
    out_dir: str | Path,
    config: DecoderTrainConfig,
    resume: bool = False,
    clip_dir: str | Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> Path:
    """Train the synth decoder into ``out_dir``; returns ``out_dir/final`` (or the checkpoint when ``stop_at``
    stops early).

    ``clip_dir``: the CLIP whose image embeddings condition the decoder (default: the shipped one;
    ``config.tiny``: a random tiny CLIP). ``stop_at``: stop after that step with a checkpoint (a
    time-boxed session; continue later with ``resume=True``). The CLIP is loaded before the run folder
    is claimed, so missing CLIP weights leave no half-started run behind.
    """
    if config.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {config.mixed_precision!r}")
    clock = Stopwatch()
    clip = build_clip(config, clip_dir)
    clip_hash = weights_hash(clip)
    ema = None  # built after the seed, below; every checkpoint from then on carries it
    session = TrainingSession(
        out_dir,
        config,
        resume=resume,
        resumable=resumable_keys(config),
        extra_state=lambda: {"ema": ema.shadow} if ema is not None else {},
    )
    out_dir = session.out_dir
    decoder, scheduler, optimizer, lr_scheduler, ema = _decoder_training_state(config, clip, session)

    images = training_renders(config.num_pairs, config.seed)
    embeds = cached_embeddings(out_dir / CACHE_DIR_NAME, clip, clip_hash, images, config, progress)
    eval_decoder, eval_at_step = _decoder_evaluator(config, clip, decoder, ema, out_dir)

    setup_s = clock()
    last_eval: dict = {}
    decoder.train()
    for step in session.steps(
        config.steps, checkpoint_every=config.checkpoint_every, stop_at=stop_at, desc="train decoder", progress=progress
    ):
        row = _decoder_step(decoder, scheduler, optimizer, lr_scheduler, ema, images, embeds, config, step, session)
        if session.due(step, config.eval_every, config.steps):
            last_eval = eval_at_step(step + 1)
            row.update({f"eval/{k}": v for k, v in last_eval.items()})
        session.log(row)
        session.bar.set_postfix(loss=f"{row['loss']:.4f}")
    if session.stopped_early:
        return session.checkpoint_dir

    final_model = decoder
    if ema is not None:
        ema.copy_to(eval_decoder)
        final_model = eval_decoder
    final_model.eval()
    if not last_eval:
        last_eval = eval_at_step(config.steps)
    record = _decoder_record(config, final_model, last_eval, ema, session, setup_s, clip_dir, clip_hash)
    return session.finish(final_model, record)


def _decoder_training_state(config: DecoderTrainConfig, clip, session: TrainingSession):
    """Seed, then build the decoder, its noise scheduler, optimizer, LR schedule and EMA (restored on resume)."""
    set_seed(config.seed)
    decoder = build_decoder(config, clip.embedding_dim)
    scheduler = decoder.training_scheduler()
    optimizer = torch.optim.AdamW(
        decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999)
    )
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    ema = EMA(decoder, config.ema_decay) if config.ema_decay > 0 else None
    session.restore(decoder, optimizer, lr_scheduler)
    if session.resume and ema is not None:
        ema.shadow = {k: v.clone() for k, v in session.extra["ema"].items()}
    return decoder, scheduler, optimizer, lr_scheduler, ema


def _decoder_evaluator(config: DecoderTrainConfig, clip, decoder, ema: EMA | None, out_dir: Path):
    """Embed the eval pool once; returns the model that is evaluated (the EMA copy, or ``decoder`` itself) and
    ``eval_at_step(step) -> metrics``, which also writes that step's sample grid."""
    eval_images, eval_swapped_images = eval_pool(config.eval_pairs, config.seed)
    eval_targets = embed_images(clip, eval_images, config.embed_batch_size)
    eval_swapped = embed_images(clip, eval_swapped_images, config.embed_batch_size)
    eval_decoder = build_decoder(config, clip.embedding_dim) if ema is not None else decoder
    guidance = config.eval_guidance if config.eval_guidance is not None else decoder.default_guidance_scale

    def eval_at_step(step: int) -> dict:
        if ema is not None:
            ema.copy_to(eval_decoder)
        eval_decoder.eval()
        metrics, decoded = evaluate_decoder(eval_decoder, clip, eval_targets, eval_swapped, config.eval_steps, guidance)
        save_grid(out_dir / "samples" / f"step-{step:06d}.png", eval_images, decoded)
        decoder.train()
        return metrics

    return eval_decoder, eval_at_step


def _decoder_record(
    config: DecoderTrainConfig,
    final_model,
    last_eval: dict,
    ema: EMA | None,
    session: TrainingSession,
    setup_s: float,
    clip_dir: str | Path | None,
    clip_hash: str,
) -> dict:
    """The run record that ``final/`` ships with."""
    return {
        "config": dataclasses.asdict(config),
        "decoder_config": dataclasses.asdict(final_model.config),
        "final_metrics": last_eval,
        "weights": "ema" if ema is not None else "last",
        "wall_time_s": session.elapsed(),
        "setup_time_s": round(setup_s, 1),
        "torch_threads": torch.get_num_threads(),
        "num_parameters": final_model.num_parameters(),
        "clip": str(clip_dir) if clip_dir else ("tiny-random" if config.tiny else "shipped"),
        "clip_hash": clip_hash,
    }


def _decoder_step(
    decoder,
    scheduler,
    optimizer,
    lr_scheduler,
    ema,
    images,
    embeds,
    config: DecoderTrainConfig,
    step: int,
    session: TrainingSession,
) -> dict:
    """One optimizer step (and EMA update); returns its log row."""
    n = len(images)
    # the batch order and all noise are functions of (seed, step): a resumed run draws the same
    idx = np.random.default_rng([config.seed, step]).choice(n, size=min(config.batch_size, n), replace=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
        loss = diffusion_loss(
            decoder,
            scheduler,
            images_to_tensor(images[idx]),
            embeds[idx],
            step_generator(config.seed, step),
            config.cond_drop_prob,
            config.snr_gamma,
        )
    check_finite(loss, step, session.checkpoint_dir)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
    optimizer.step()
    lr_scheduler.step()
    if ema is not None:
        ema.update(decoder, step)
    return {
        "step": step + 1,
        "loss": round(loss.item(), 5),
        "grad_norm": round(float(grad_norm), 4),
        "lr": lr_scheduler.get_last_lr()[0],
        "elapsed": session.elapsed(),
    }


def final_from_checkpoint(run_dir: str | Path) -> Path:
    """The EMA weights of a run's last checkpoint as ``run_dir/final`` (a run stopped before its last step).

    The run is reopened as a resume would reopen it (its own settings, its checkpoint, log rows after the
    checkpoint dropped), so ``final/`` and the log describe the same weights. The training record says at
    which step and learning rate the weights were taken.
    """
    import json

    run_dir = Path(run_dir)
    config_path = run_dir / "train_config.json"
    if not config_path.is_file():
        raise NothingToResumeError(f"{run_dir} is not a decoder training run ({config_path.name} is missing)")
    config = DecoderTrainConfig(**json.loads(config_path.read_text()))
    try:
        session = TrainingSession(run_dir, config, resume=True)
    except NothingToResumeError:
        raise NothingToResumeError(
            f"{run_dir} holds no checkpoint to take final weights from ({run_dir / 'checkpoint'} is missing)"
        ) from None
    embedding_dim = json.loads((session.checkpoint_dir / "config.json").read_text())["embedding_dim"]
    decoder = build_decoder(config, embedding_dim)  # the architecture the run trained (weights replaced below)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    step = session.restore(decoder, optimizer, lr_scheduler)
    if "ema" in session.extra:
        decoder.load_state_dict({**decoder.state_dict(), **session.extra["ema"]})
    decoder.eval()
    evals = [row for row in session.logger.rows() if "eval/recon_cos" in row and row["step"] <= step]
    record = {
        "config": dataclasses.asdict(config),
        "decoder_config": dataclasses.asdict(decoder.config),
        "stopped_at_step": step,
        "lr_at_stop": lr_scheduler.get_last_lr()[0],
        "final_metrics": {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {},
        "weights": "ema" if "ema" in session.extra else "last",
        "wall_time_s": session.extra.get("elapsed"),
        "num_parameters": decoder.num_parameters(),
    }
    return session.finish(decoder, record)


def ship_decoder(
    run_dir: str | Path,
    dest: str | Path | None = None,
    dtype: torch.dtype | None = torch.float16,
    overwrite: bool = False,
) -> Path:
    """Copy a run's final decoder to ``dest`` (default: ``evalkit/world/weights/decoder``) as fp16.

    Weights already there are replaced only with ``overwrite``: the default folder is the checkout's shipped
    decoder, which every benchmark run decodes with.
    """
    from evalkit.decoders.synth import SHIPPED_DIR, SynthDecoder

    return ship(SynthDecoder, run_dir, dest if dest is not None else SHIPPED_DIR, dtype, overwrite=overwrite)
