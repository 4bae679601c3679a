"""Embedding-level metrics of a prior on a synthetic suite: seconds, no decoding.

For each item (prompt, seed) the prior predicts an image embedding, compared with the CLIP image
embeddings of the item's true render and of its attribute-swapped render (same layout, bound
attributes exchanged):

- ``cos_true``: cosine to the true render's embedding;
- ``margin``: cos to the true render − cos to the swapped render (continuous binding margin);
- ``binding``: 1 when the margin is positive (binding accuracy);
- ``recall1``: the true render is the nearest of all val renders of the category at that seed;
- ``rank``: text→image retrieval rank of the true render among those renders (1 = nearest; lower is better).

Controls that must collapse: ``random`` (another prompt's prediction), ``shuffled`` (the prompt's
words shuffled) and ``swapped`` (the prediction for the swapped prompt, which should have a
negative margin).
"""

from __future__ import annotations

import functools
import random as _random

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.contracts import Batch, PromptItem, Prior
from evalkit.stats import bootstrap
from evalkit.world.models.tensors import render_tensor

METRICS = ("margin", "binding", "cos_true", "recall1", "rank")
CONTROLS = ("random", "shuffled", "swapped")


@torch.inference_mode()
def reference_embeddings(suite, clip, split: str, seeds: tuple[int, ...], batch_size: int = 1000):
    """CLIP image embeddings (L2-normalised) of every item's true and swapped render, item-major."""
    return _reference_embeddings(
        suite.name, suite.version(split), split, tuple(seeds), id(clip), suite, clip, batch_size
    )


@functools.lru_cache(maxsize=8)
def _reference_embeddings(name, version, split, seeds, clip_id, suite, clip, batch_size):
    items = suite.items(split)
    pairs = [(item, seed) for item in items for seed in seeds]
    true, swapped = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        scenes = [suite.ground_truth(i, s) for i, s in chunk]
        swapped_scenes = [suite.swapped_ground_truth(i, s) for i, s in chunk]
        true.append(clip.encode_image(render_tensor(scenes)))
        swapped.append(clip.encode_image(render_tensor(swapped_scenes)))
    return F.normalize(torch.cat(true), dim=-1), F.normalize(torch.cat(swapped), dim=-1)


def control_items(items: list[PromptItem], control: str | None, seed: int = 0) -> list[PromptItem]:
    """The prompts a control feeds the prior in place of each item's own prompt."""
    if control is None:
        return items
    rng = _random.Random(seed)
    if control == "random":
        order = list(range(len(items)))
        rng.shuffle(order)
        # a derangement-ish shuffle: no item keeps its own prompt
        order = [o if o != i else (o + 1) % len(items) for i, o in enumerate(order)]
        return [items[o] for o in order]
    if control == "shuffled":

        def shuffle(prompt: str) -> str:
            words = prompt.split()
            rng.shuffle(words)
            return " ".join(words)

        return [PromptItem(shuffle(i.prompt), i.category, i.split, i.item_id) for i in items]
    if control == "swapped":
        return [PromptItem(i.swapped_prompt, i.category, i.split, i.item_id) for i in items]
    raise ValueError(f"unknown control {control!r}; expected one of {', '.join(CONTROLS)}")


@torch.inference_mode()
def predict_items(
    prior: Prior, items: list[PromptItem], seeds: tuple[int, ...], clip, batch_size: int = 500
) -> torch.Tensor:
    """Predictions for every (item, seed), item-major, L2-normalised."""
    pairs = [(item, seed) for item in items for seed in seeds]
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = Batch([p[0] for p in chunk], [p[1] for p in chunk])
        for space in prior.text_encoders:
            batch.text[space] = clip.encode_text(batch.prompts)
        out.append(prior.predict(batch).float())
    return F.normalize(torch.cat(out), dim=-1)


def own_rank(sims: torch.Tensor) -> torch.Tensor:
    """Retrieval rank of each query's own key (1 = nearest): ``sims[..., i, j]`` = similarity of query i to key j,
    the own key of query i being key i; ties count in the query's favour."""
    own = sims.diagonal(dim1=-2, dim2=-1)
    return 1 + (sims > own[..., None]).sum(-1)


def embedding_rows(
    prior: Prior,
    suite,
    clip,
    split: str = "val",
    seeds=tuple(range(42, 52)),
    control: str | None = None,
    prior_name: str | None = None,
) -> list[dict]:
    """One row per (item, seed): cos_true, cos_swapped, margin, binding, recall1."""
    seeds = tuple(seeds)
    items = suite.items(split)
    true, swapped = reference_embeddings(suite, clip, split, seeds)
    predicted = predict_items(prior, control_items(items, control), seeds, clip)
    cos_true = (predicted * true).sum(-1)
    cos_swapped = (predicted * swapped).sum(-1)
    # recall@1 among the renders of all items at the same seed
    n_items, n_seeds = len(items), len(seeds)
    grid_pred = predicted.view(n_items, n_seeds, -1).transpose(0, 1)
    grid_true = true.view(n_items, n_seeds, -1).transpose(0, 1)
    sims = torch.einsum("sid,sjd->sij", grid_pred, grid_true)  # (seeds, items, items)
    recall = (sims.argmax(-1) == torch.arange(n_items)).transpose(0, 1).reshape(-1).float()
    rank = own_rank(sims).transpose(0, 1).reshape(-1).float()
    name = prior_name or getattr(prior, "name", type(prior).__name__)
    rows = []
    for k, (item, seed) in enumerate((i, s) for i in items for s in seeds):
        margin = float(cos_true[k] - cos_swapped[k])
        rows.append(
            {
                "prior": name,
                "control": control or "",
                "item_id": item.item_id,
                "prompt": item.prompt,
                "seed": seed,
                "category": item.category,
                "seen": item.seen,
                "cos_true": float(cos_true[k]),
                "cos_swapped": float(cos_swapped[k]),
                "margin": margin,
                "binding": float(margin > 0),
                "recall1": float(recall[k]),
                "rank": float(rank[k]),
            }
        )
    return rows


def summarize(rows: list[dict], metrics=METRICS, n_boot: int = 2000) -> list[dict]:
    """Aggregate rows per (prior, control, category, seen ∈ {all, seen, unseen}) with bootstrap CIs over prompts."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        label = "seen" if row["seen"] else ("unseen" if row["seen"] is False else "all")
        for seen in {"all", label}:
            groups.setdefault((row["prior"], row["control"], row["category"], seen), []).append(row)
    out = []
    for (prior, control, category, seen), members in sorted(groups.items(), key=lambda kv: kv[0]):
        clusters = [m["item_id"] for m in members]
        by_seed: dict = {}
        for m in members:
            by_seed.setdefault(m.get("training_seed"), []).append(m)
        for metric in metrics:
            est = bootstrap([m[metric] for m in members], clusters, n_boot=n_boot)
            seed_means = [float(np.mean([m[metric] for m in rows_])) for rows_ in by_seed.values()]
            out.append(
                {
                    "prior": prior,
                    "control": control,
                    "category": category,
                    "seen": seen,
                    "metric": metric,
                    "value": est.value,
                    "stderr": est.stderr,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "n": est.n,
                    "n_prompts": est.n_clusters,
                    "n_training_seeds": len(seed_means),
                    # spread of the per-training-seed means: the seed-to-seed noise of a trained prior
                    "seed_sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None,
                }
            )
    return out
