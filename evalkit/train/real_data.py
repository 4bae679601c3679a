"""Real image–text pairs as a data source of ``evalkit train-baseline``: the ``--data EMB_DIR`` path.

The image side is precomputed once by ``evalkit embed`` (the decoder's own frozen image encoder, raw
``image_embeds``), because the image tower is the expensive one. The text side is the frozen text encoder
of the decoder's prior, run on the fly on each step's captions: caching per-token hidden states costs
77 × D × 2 bytes per caption (≈ 197 KB at 1280-d, ≈ 1 TB for 5 M captions) while the text tower costs about
a tenth of the image tower. ``--cache-text`` encodes every caption once instead, for small sets.

Held-out pairs come from ``--val-data`` or a ``--val-fraction`` split fixed by ``data_seed``; the periodic
evaluation reports what a prior is for rather than its loss: the cosine of each prediction to its pair's
true image embedding, the text→image retrieval rank of that image among the held-out images, and the same
two numbers for the shuffled-caption control (the caption's words in random order), which a prior that
reads word order must do worse on.

Batches follow epochs: epoch e is a permutation of the training pairs drawn from (seed, e), and step s takes
the slice at ``(s mod steps_per_epoch) × batch``. The data position is thus a function of the step, so a
resumed run (any process count) continues exactly where the interrupted one stood, mid-epoch included.

Outputs are in the public layouts, loaded by evalkit's checkpoint priors: eclipse / projection as
ECLIPSE-Community's (``config.json`` with ``_class_name: PriorTransformer`` + ``diffusion_pytorch_model.safetensors``
holding ``clip_mean`` / ``clip_std`` of the training embeddings) → ``--prior-path eclipse-karlo=DIR`` /
``eclipse-kandinsky22=DIR``; diffusion as karlo-v1-alpha / kandinsky-2-2-prior's ``prior/`` + ``scheduler/``
→ ``karlo-prior`` / ``kandinsky22-prior``. ``training_record.json`` names the text encoder the prior was
trained with, which the loaders use when no other text encoder is given.
"""

from __future__ import annotations

import functools
import hashlib
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.errors import ConfigMismatchError, SettingError

#: what the prior's embedding space is called, and the checkpoint names that load the result, per space
SPACES = {
    "clip-vit-l-14": {"decoder": "karlo", "eclipse": "eclipse-karlo", "diffusion": "karlo-prior"},
    "clip-vit-bigg-14": {"decoder": "kandinsky22", "eclipse": "eclipse-kandinsky22", "diffusion": "kandinsky22-prior"},
}
#: the embedding width of each public space (the space of other widths must be named: ``--space``)
SPACE_OF_DIM = {768: "clip-vit-l-14", 1280: "clip-vit-bigg-14"}
EVAL_BATCH = 250


def resolve_space(space: str | None, dim: int) -> str:
    """The prior's embedding space: ``space`` (a space or a decoder name), else the one of a public width."""
    if space:
        by_decoder = {v["decoder"]: k for k, v in SPACES.items()}
        resolved = by_decoder.get(space, space)
        if resolved not in SPACES:
            from evalkit.errors import UnknownNameError

            raise UnknownNameError("embedding space", space, [*SPACES, *by_decoder])
        return resolved
    if dim not in SPACE_OF_DIM:
        raise SettingError(
            f"{dim}-d embeddings are not a public decoder's space (768: karlo, 1280: kandinsky22); "
            "say which decoder they feed with --space karlo|kandinsky22"
        )
    return SPACE_OF_DIM[dim]


def caption_ids(captions: list[str]) -> torch.Tensor:
    """A 63-bit id per caption: equal captions get equal ids on every process (the contrastive term does not
    count a pair sharing the caption as a negative)."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(c.encode(), digest_size=8).digest(), "little") >> 1 for c in captions],
        dtype=torch.int64,
    )


def shuffle_words(prompt: str, rng: random.Random) -> str:
    words = prompt.split()
    rng.shuffle(words)
    return " ".join(words)


class EmbeddingData:
    """An ``evalkit embed`` folder (and its frozen text encoder) as the trainer's data; see the module doc."""

    real = True

    def __init__(self, folder, encoder, config, val_folder=None, progress: bool = True):
        self.folder, self.encoder, self.config = folder, encoder, config
        self.dim = folder.embedding_dim
        self.space = encoder.embedding_space
        if encoder.embedding_dim != self.dim or encoder.hidden_size != self.dim:
            raise ConfigMismatchError(
                f"the text encoder gives {encoder.embedding_dim}-d embeddings and {encoder.hidden_size}-d hidden "
                f"states, but {config.data} holds {self.dim}-d image embeddings: a prior maps one space to itself, so "
                "use the text encoder of the image encoder's CLIP (the decoder's own prior pipeline)"
            )
        order = np.random.default_rng([config.data_seed, 7]).permutation(len(folder))
        if val_folder is not None:
            if val_folder.embedding_dim != self.dim:
                raise ConfigMismatchError(
                    f"--val-data holds {val_folder.embedding_dim}-d embeddings, --data {self.dim}-d"
                )
            self.sources = {"train": folder, "dev": val_folder}
            self.rows = {"train": np.sort(order), "dev": np.arange(min(config.val_pairs, len(val_folder)))}
        else:
            held = max(1, int(round(config.val_fraction * len(folder))))
            if held >= len(folder):
                raise SettingError(f"{config.data} has {len(folder)} pairs: too few to hold out {held} for evaluation")
            self.sources = {"train": folder, "dev": folder}
            self.rows = {"train": np.sort(order[held:]), "dev": np.sort(order[:held])[: config.val_pairs]}
        if len(self.rows["train"]) < config.batch_size:
            raise SettingError(
                f"--batch-size {config.batch_size} is larger than the {len(self.rows['train'])} "
                f"training pairs of {config.data}"
            )
        self._empty = None
        self._text_cache = self._encode_all(progress) if config.cache_text else None

    @classmethod
    def open(cls, config, accelerator=None, progress: bool = True) -> "EmbeddingData":
        from evalkit.data.embeddings import EmbeddingFolder
        from evalkit.priors.real import load_text_encoder_folder

        folder = EmbeddingFolder.open(config.data)
        val = EmbeddingFolder.open(config.val_data) if config.val_data else None
        space = resolve_space(getattr(config, "space", None), folder.embedding_dim)
        encoder = load_text_encoder_folder(config.text_encoder, space)
        for p in encoder.model.parameters():
            p.requires_grad_(False)
        if accelerator is not None and accelerator.device.type != "cpu":
            # the frozen tower runs in the training's reduced precision on a GPU (fp32 on the CPU)
            dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(config.mixed_precision)
            encoder.to_placement(str(accelerator.device), dtype)
        return cls(folder, encoder, config, val, progress)

    # ------------------------------------------------------------------ batches
    def steps_per_epoch(self) -> int:
        return len(self.rows["train"]) // self.config.batch_size

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> torch.Tensor:
        seed = int(np.random.SeedSequence([self.config.seed, epoch, 11]).generate_state(1)[0])
        return torch.randperm(len(self.rows["train"]), generator=torch.Generator().manual_seed(seed))

    def indices(self, step: int, config, generator: torch.Generator) -> torch.Tensor:
        """The step's global batch: the step's slice of its epoch's permutation (``generator`` is not drawn from)."""
        epoch, position = divmod(step, self.steps_per_epoch())
        start = position * config.batch_size
        return self._permutation(epoch)[start : start + config.batch_size]

    def position(self, step: int) -> dict:
        """Where in the data a step stands (logged, so a resumed run's position can be checked)."""
        epoch, position = divmod(step, self.steps_per_epoch())
        return {"epoch": epoch, "epoch_step": position}

    def batch(self, split: str, idx) -> dict[str, torch.Tensor]:
        rows = self.rows[split][np.asarray(idx, dtype=np.int64)]
        source = self.sources[split]
        captions = source.captions(rows)
        out = {
            "image": torch.as_tensor(source.image_embeds(rows), dtype=torch.float32),
            "caption": caption_ids(captions),
        }
        if self._text_cache is not None and split == "train":
            position = torch.as_tensor(np.asarray(idx, dtype=np.int64))
            out.update(
                text=self._text_cache["text"][position],
                hidden=self._text_cache["hidden"][position].float(),
                mask=self._text_cache["mask"][position],
            )
        else:
            encoding = self.encoder.encode_text(captions)  # under inference_mode: cloned into ordinary tensors
            out.update(
                text=encoding.text_embeds.float().clone(),
                hidden=encoding.text_hidden.float().clone(),
                mask=encoding.attention_mask.clone(),
            )
        return out

    def empty_encoding(self):
        if self._empty is None:
            self._empty = self.encoder.encode_text([""])
        return self._empty

    def empty(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.empty_encoding()
        return (
            e.text_embeds.float().clone().expand(n, -1),
            e.text_hidden.float().clone().expand(n, -1, -1),
            e.attention_mask.clone().expand(n, -1),
        )

    def _encode_all(self, progress: bool) -> dict[str, torch.Tensor]:
        """``--cache-text``: every training caption's encoding, in training-row order (hidden states in fp16)."""
        from tqdm.auto import tqdm

        rows = self.rows["train"]
        text, hidden, mask = [], [], []
        for start in tqdm(range(0, len(rows), 256), desc="encode captions", disable=not progress):
            encoding = self.encoder.encode_text(self.folder.captions(rows[start : start + 256]))
            text.append(encoding.text_embeds.float().cpu())
            hidden.append(encoding.text_hidden.half().cpu())
            mask.append(encoding.attention_mask.cpu())
        return {"text": torch.cat(text), "hidden": torch.cat(hidden), "mask": torch.cat(mask)}

    def image_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, D)`` mean and standard deviation of the training image embeddings (float64 sums, in chunks)."""
        total = np.zeros(self.dim)
        squares = np.zeros(self.dim)
        rows = self.rows["train"]
        for start in range(0, len(rows), 65_536):
            chunk = np.asarray(self.folder.image_embeds(rows[start : start + 65_536]), dtype=np.float64)
            total += chunk.sum(0)
            squares += (chunk**2).sum(0)
        n = len(rows)
        mean = total / n
        var = np.maximum(squares / n - mean**2, 0.0) * n / max(1, n - 1)
        return (torch.from_numpy(mean).float()[None], torch.from_numpy(np.sqrt(var)).float().clamp_min(1e-6)[None])

    # ------------------------------------------------------------------ evaluation
    def _prior(self, model, config):
        from evalkit.contracts import TextEncoding
        from evalkit.priors.diffusion import DiffusionPrior
        from evalkit.priors.eclipse import EclipsePrior

        if config.prior == "diffusion":
            e = self.empty_encoding()
            empty = TextEncoding(self.space, e.text_embeds, e.text_hidden, e.attention_mask)
            return DiffusionPrior(model=model, clip=self.encoder, empty_encoding=empty)
        return EclipsePrior(model=model, clip=self.encoder)

    @torch.inference_mode()
    def _predict(self, prior, captions: list[str], seeds: list[int]) -> torch.Tensor:
        out = []
        for start in range(0, len(captions), EVAL_BATCH):
            encoding = self.encoder.encode_text(captions[start : start + EVAL_BATCH])
            out.append(prior.sample(encoding, seeds[start : start + EVAL_BATCH]).float().cpu())
        return torch.cat(out)

    def held_out_metrics(self, model, config) -> dict:
        """Held-out pairs: cosine to the true image embedding, text→image retrieval among the held-out images
        (recall@1, mean rank), and both for the shuffled-caption control."""
        from evalkit.embedding_metrics import own_rank

        was_training = model.training
        rows = np.arange(len(self.rows["dev"]))
        batch_rows = self.rows["dev"][rows]
        source = self.sources["dev"]
        captions = source.captions(batch_rows)
        true = F.normalize(torch.as_tensor(source.image_embeds(batch_rows), dtype=torch.float32), dim=-1)
        prior = self._prior(model, config)
        seeds = [10_000 + int(i) for i in rows]
        rng = random.Random(config.data_seed)
        metrics = {"n": len(rows)}
        for label, texts in (("", captions), ("shuffled_", [shuffle_words(c, rng) for c in captions])):
            pred = F.normalize(self._predict(prior, texts, seeds), dim=-1)
            rank = own_rank(pred @ true.T).float()
            metrics.update(
                {
                    f"{label}cos": round((pred * true).sum(-1).mean().item(), 4),
                    f"{label}recall1": round((rank == 1).float().mean().item(), 4),
                    f"{label}rank": round(rank.mean().item(), 2),
                }
            )
        model.train(was_training)
        return metrics

    # ------------------------------------------------------------------ outputs
    def record(self) -> dict:
        from evalkit.data.embeddings import file_sha256

        manifest = Path(self.config.data) / "embeddings.json"
        names = SPACES[self.space]
        load = names["diffusion" if self.config.prior == "diffusion" else "eclipse"]
        return {
            "training_data": f"{len(self.rows['train']):,} image-text pairs ({self.config.data})",
            "data": {
                "embeddings": str(Path(self.config.data).resolve()),
                "manifest_sha256": file_sha256(manifest),
                "train_pairs": int(len(self.rows["train"])),
                "val_pairs": int(len(self.rows["dev"])),
                "val_data": str(Path(self.config.val_data).resolve()) if self.config.val_data else None,
                "image_encoder": self.folder.encoder,
                "counts": self.folder.counts,
            },
            "text_encoder": {
                "path": str(Path(self.config.text_encoder).resolve()),
                "embedding_dim": self.encoder.embedding_dim,
            },
            "embedding_space": self.space,
            "load_with": f"evalkit run --prior {load} --prior-path {load}=DIR --decoder {names['decoder']}",
        }

    def save_final(self, session, model, record: dict) -> Path:
        """``final/`` in the public layout of the prior's kind (see the module doc)."""
        from diffusers import DDIMScheduler

        from evalkit.priors.diffusion import train_scheduler
        from evalkit.serialization import atomic_write_json

        final = session.out_dir / "final"
        if self.config.prior != "diffusion":
            return session.finish(model, record)
        model.save_pretrained(final / "prior")
        # sampled as evalkit's diffusion prior is: DDIM over the linear schedule it was trained on
        DDIMScheduler.from_config(train_scheduler().config).save_pretrained(final / "scheduler")
        atomic_write_json(final / "training_record.json", record)
        return final
