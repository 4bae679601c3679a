"""``evaluate``: priors → shared decoder → scorers over a suite, with per-image and aggregate rows.

This is the object-level API (tests call it directly); ``run(config)`` below resolves names and
writes the run folder. Every prompt is text-encoded once per embedding space and shared by all
priors and seeds; each image's randomness comes from its own seed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from evalkit import distributed
from evalkit.fingerprints import fingerprint
from evalkit.harness.cache import WorkCache, image_sha256, png_bytes, work_key
from evalkit.contracts import (
    Batch,
    Protocol,
    ResultRow,
    SampleRow,
    check_embedding_contract,
    check_embeddings,
    text_encoder_parameters,
    text_encoder_unknown_words,
)
from evalkit.harness.run_config import RunConfig
from evalkit.environment import describe as describe_environment
from evalkit.errors import EvalkitError, SettingError, WriteError
from evalkit.placement import numeric_path
from evalkit.report.grid import to_uint8
from evalkit.harness.runs import prompt_subsets
from evalkit.serialization import atomic_write_bytes
from evalkit.stats import bootstrap
from evalkit.text_encoders import text_encoders

#: the version of the results.json layout (docs/runs.md)
RESULTS_SCHEMA = "evalkit.results/2"


class TextCache:
    """Text encodings per (embedding space, prompt), computed once per run."""

    def __init__(self, encoders: dict):
        self.encoders = encoders  # space -> object with encode_text(prompts) -> TextEncoding
        self.store: dict[tuple[str, str], tuple] = {}

    def fill(self, batch: Batch, spaces) -> None:
        from evalkit.contracts import TextEncoding

        for space in spaces:
            if space not in self.encoders:
                raise EvalkitError(f"no text encoder for embedding space {space!r}")
            missing = sorted({p for p in batch.prompts if (space, p) not in self.store})
            if missing:
                enc = self.encoders[space].encode_text(missing)
                for k, prompt in enumerate(missing):
                    self.store[(space, prompt)] = (
                        enc.text_embeds[k],
                        None if enc.text_hidden is None else enc.text_hidden[k],
                        None if enc.attention_mask is None else enc.attention_mask[k],
                    )
            rows = [self.store[(space, p)] for p in batch.prompts]
            stack = lambda i: None if rows[0][i] is None else torch.stack([r[i] for r in rows])
            batch.text[space] = TextEncoding(space, stack(0), stack(1), stack(2))


ITEM_FIELDS = ("item_id", "prompt", "category", "seen", "seed")


def _copy_from_cache(source: Path, dest: Path, image: np.ndarray) -> None:
    """A copy, never a link: a run folder shares no file with the cache (editing one leaves the other).
    Written atomically (a full disk is a WriteError naming the file, never a partial PNG); an entry pruned
    meanwhile by another process is written from ``image``, the pixels it held."""
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        data = png_bytes(image)
    atomic_write_bytes(dest, data)


def shard_chunks(n_pairs: int, batch_size: int, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batches of ``n_pairs`` (item, seed) pairs that this process runs: the batches
    ``c`` of ``batch_size`` pairs with ``c % n == rank`` (``shard=(rank, n)``; ``(0, 1)``: every batch)."""
    rank, shards = shard
    return [
        (start, min(start + batch_size, n_pairs))
        for c, start in enumerate(range(0, n_pairs, batch_size))
        if c % shards == rank
    ]


def to_pixels(images) -> torch.Tensor:
    """8-bit ``(N, H, W, 3)`` images → float ``(N, 3, H, W)`` in [0, 1], in one memory layout whatever the
    images' source (decoder, cache or files): float reductions in scorers then give the same bits."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float() / 255.0


def score_rows(scorer, inputs: torch.Tensor, batch: Batch, label: str, reads: str | None = None) -> list[dict]:
    """One row per image (or embedding) of ``batch`` by :meth:`Scorer.score_checked`, without the item
    fields a scorer may echo (the sample row has them)."""
    return [
        {k: v for k, v in row.items() if k not in ITEM_FIELDS}
        for row in scorer.score_checked(inputs, batch, label, reads)
    ]


def sample_row(prior: str, suite: str, scorer: str, item, seed: int, image_path: str, row: dict) -> dict:
    """One line of ``samples.jsonl`` (:class:`SampleRow`) from a scorer's row: its ``score``, its ``questions``
    and every other field as ``details``."""
    details = dict(row)
    return asdict(
        SampleRow(
            prior=prior,
            suite=suite,
            scorer=scorer,
            item_id=item.item_id,
            prompt=item.prompt,
            seed=seed,
            category=item.category,
            seen=item.seen,
            image_path=image_path,
            score=float(details.pop("score")),
            questions=details.pop("questions", []),
            details=details,
        )
    )


@dataclass
class SuiteWork:
    """What the stages share over one suite: plugins, protocol, text encodings, cache and timings."""

    suite: object
    decoder: object
    scorers: dict
    protocol: Protocol
    texts: TextCache
    cache: WorkCache
    run_dir: Path | None
    priors: list  # the priors' names, in the run's order (the ``_order`` of sharded rows)
    sharded: bool
    scorer_ids: dict = field(default_factory=dict)
    reads_embeddings: set = field(default_factory=set)
    why_not: dict = field(default_factory=dict)
    timings: dict = field(default_factory=lambda: {"text": 0.0, "prior": 0.0, "decoder": 0.0, "scorer": 0.0, "io": 0.0})

    def __post_init__(self):
        self.scorer_ids = (
            {
                name: work_key("scorer", scorer=fingerprint(scorer), **numeric)
                if (numeric := numeric_path(getattr(scorer, "_placement", None)))
                else fingerprint(scorer)
                for name, scorer in self.scorers.items()
            }
            if self.cache.enabled
            else {n: "" for n in self.scorers}
        )
        self.reads_embeddings = {name for name, scorer in self.scorers.items() if scorer.reads == "embeddings"}


@dataclass
class PriorWork:
    """One prior's part of a suite: its cache (none when unseeded), key prefixes, negative and image folder."""

    name: str
    prior: object
    store: WorkCache
    prior_id: str
    decoding: dict
    negative: dict  # the decoder's guidance negative (Kandinsky 2.2), passed as an argument; {}: none
    image_dir: Path | None


def prior_work(work: SuiteWork, name: str, prior) -> PriorWork:
    negative = {}
    if work.decoder.takes_negative_image_embeds:
        negative = {"negative_image_embeds": negative_embedding(name, prior, work.texts, work.protocol)}
    decoding = {
        **work.protocol.decoding(),
        "decoder_fingerprint": fingerprint(work.decoder) if work.cache.enabled else "",
        **numeric_path(getattr(work.decoder, "_placement", None), dtype=False),  # dtype: in the protocol
        **(
            {"negative": hashlib.sha256(negative["negative_image_embeds"].numpy().tobytes()).hexdigest()}
            if negative
            else {}
        ),
    }
    store = work.cache if prior.seeded else WorkCache(None)  # unseeded work is never cached
    encoders = work.texts.encoders  # the prior and the text encoders whose encodings it reads (shared by every prior)
    prior_id = (
        work_key(
            "prior",
            prior=fingerprint(prior),
            text=[fingerprint(encoders[space]) for space in prior.text_encoders if space in encoders],
            **numeric_path(getattr(prior, "_placement", None)),
        )
        if store.enabled
        else ""
    )
    image_dir = None
    if work.run_dir is not None:
        image_dir = Path(work.run_dir) / "images" / name / work.suite.name
        image_dir.mkdir(parents=True, exist_ok=True)
    return PriorWork(name, prior, store, prior_id, decoding, negative, image_dir)


def encode_texts(work: SuiteWork, batch: Batch, spaces) -> None:
    """``batch.text`` for ``spaces``: each prompt encoded once per space and run (:class:`TextCache`)."""
    t0 = time.perf_counter()
    work.texts.fill(batch, spaces)
    work.timings["text"] += time.perf_counter() - t0


def embed_stage(work: SuiteWork, pw: PriorWork, batch: Batch, keys: list[str]) -> list[np.ndarray]:
    """The prior's embeddings of ``batch``: from the cache, else predicted for the whole batch, checked
    (:func:`check_embeddings`) and stored."""
    embeds = [pw.store.get_embedding(key) for key in keys]
    if any(e is None for e in embeds):
        encode_texts(work, batch, pw.prior.text_encoders)
        t0 = time.perf_counter()
        predicted = pw.prior.predict(batch).float().cpu()
        work.timings["prior"] += time.perf_counter() - t0
        check_embeddings(pw.name, predicted, batch, work.decoder.embedding_dim)
        embeds = list(predicted.numpy())
        for key, row in zip(keys, embeds):
            pw.store.put_embedding(key, row)
    return embeds


def decode_stage(work: SuiteWork, pw: PriorWork, batch: Batch, embeds, images: list, keys: list[str]) -> list:
    """8-bit images of ``batch``: ``images`` (from the cache) when all are there, else decoded for the whole
    batch and stored."""
    if all(image is not None for image in images):
        return images
    t0 = time.perf_counter()
    images = list(
        to_uint8(work.decoder.decode(torch.from_numpy(np.stack(embeds)), batch, work.protocol, **pw.negative))
    )
    t1 = time.perf_counter()
    for key, image in zip(keys, images):
        pw.store.put_image(key, image)
    work.timings["decoder"] += t1 - t0
    work.timings["io"] += time.perf_counter() - t1
    return images


def score_stage(
    work: SuiteWork,
    pw: PriorWork,
    chunk: list,
    batch: Batch,
    embedding_keys: list[str],
    image_keys: list[str],
    embeds,
    images: list,
) -> dict[str, list[dict]]:
    """Per scorer, one row per image of the batch: from the cache (checked against the image, or the embedding,
    it was computed on), else scored for the whole batch and stored; items it cannot score get a placeholder."""
    shas = [image_sha256(image) for image in images]
    scored: dict[str, list] = {}
    for name, scorer in work.scorers.items():
        on_embeddings = name in work.reads_embeddings
        keys = [
            work_key(
                "score",
                **({"embedding": embedding_keys[j]} if on_embeddings else {"image": image_keys[j]}),
                scorer=work.scorer_ids[name],
                suite=work.suite.name,
                item=item.to_dict(),
                seed=seed,
            )
            for j, (item, seed) in enumerate(chunk)
        ]
        checks = (
            [hashlib.sha256(np.ascontiguousarray(e, dtype=np.float32).tobytes()).hexdigest() for e in embeds]
            if on_embeddings
            else shas
        )
        got = [pw.store.get_score(key, sha) for key, sha in zip(keys, checks)]
        if all(work.why_not[name].get(item.item_id) for item, _ in chunk):  # nothing to score
            got = [{"score": 0.0} for _ in chunk]
        elif any(row is None for row in got):
            t0 = time.perf_counter()
            got = score_rows(
                scorer, torch.from_numpy(np.stack(embeds)) if on_embeddings else to_pixels(images), batch, name
            )
            work.timings["scorer"] += time.perf_counter() - t0
            for key, sha, row in zip(keys, checks, got):
                pw.store.put_score(key, sha, row)
        scored[name] = got
    return scored


def save_image(work: SuiteWork, pw: PriorWork, item, seed: int, key: str, image: np.ndarray) -> str:
    """The image's PNG in the run folder (a copy of the cache's entry when cached); returns its relative path
    ("" without a run folder)."""
    if pw.image_dir is None:
        return ""
    path = str(Path("images") / pw.name / work.suite.name / f"{item.item_id}_{seed}.png")
    if pw.store.enabled:
        _copy_from_cache(pw.store.image_path(key), Path(work.run_dir) / path, image)
    else:  # atomic: a full disk is a WriteError naming the file, never a 0-byte PNG
        atomic_write_bytes(Path(work.run_dir) / path, png_bytes(image))
    return path


def write_samples(
    work: SuiteWork,
    pw: PriorWork,
    chunk: list,
    start: int,
    image_keys: list[str],
    images: list,
    scored: dict[str, list[dict]],
    rows: list[dict],
) -> None:
    """The batch's images into the run folder and its sample rows onto ``rows`` (sharded runs: with ``_order``)."""
    for k, (item, seed) in enumerate(chunk):
        path = save_image(work, pw, item, seed, image_keys[k], images[k])
        for scorer_name, scorer_rows in scored.items():
            reason = work.why_not[scorer_name].get(item.item_id)
            row = {"score": 0.0, "not_applicable": reason} if reason else scorer_rows[k]  # never averaged
            sample = sample_row(pw.name, work.suite.name, scorer_name, item, seed, path, row)
            rows.append(
                {**sample, "_order": (work.priors.index(pw.name), start + k, list(work.scorers).index(scorer_name))}
                if work.sharded
                else sample
            )


def run_batch(work: SuiteWork, pw: PriorWork, chunk: list, start: int, rows: list[dict]) -> bool:
    """One batch of (item, seed) pairs through the stages; returns whether its images all came from the cache.

    Each stage runs on the whole batch when anything in it is missing: batches are then exactly those of an
    uninterrupted run, so a resumed run gives the same bits (float kernels depend on the batch shape)."""
    batch = Batch(
        [p[0] for p in chunk], [p[1] for p in chunk], scenes=[work.suite.ground_truth(i, s) for i, s in chunk]
    )
    embedding_keys = [work_key("embedding", prior=pw.prior_id, prompt=item.prompt, seed=seed) for item, seed in chunk]
    image_keys = [work_key("image", embedding=key, **pw.decoding) for key in embedding_keys]
    t0 = time.perf_counter()
    cached = [pw.store.get_image(key) for key in image_keys]
    work.timings["io"] += time.perf_counter() - t0
    reused = all(image is not None for image in cached)
    embeds = embed_stage(work, pw, batch, embedding_keys) if not reused or work.reads_embeddings else None
    images = decode_stage(work, pw, batch, embeds, cached, image_keys)
    scored = score_stage(work, pw, chunk, batch, embedding_keys, image_keys, embeds, images)
    t0 = time.perf_counter()
    write_samples(work, pw, chunk, start, image_keys, images, scored, rows)
    work.timings["io"] += time.perf_counter() - t0
    return reused


@torch.inference_mode()
def evaluate(
    priors: dict,
    decoder,
    suite,
    scorers: dict,
    protocol: Protocol,
    run_dir: Path | None = None,
    split: str = "val",
    limit: int | None = None,
    batch_size: int = 64,
    text_encoders: dict | None = None,
    progress: bool = True,
    items: list | None = None,
    cache: WorkCache | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[dict], dict]:
    """Generate and score ``suite`` for every prior; returns (per-image rows, timings per stage).

    ``shard=(rank, n)``: only batches ``c`` with ``c % n == rank`` (multi-process runs); rows then carry an
    ``_order`` key that puts the gathered rows of all processes back in single-process order.

    ``items``: score these items of the suite instead of the first ``limit`` of ``split``. ``cache``:
    embeddings, images and scores found there are reused and new ones stored (keys: :mod:`evalkit.harness.cache`);
    images are scored as the 8-bit pictures that are saved, so a cached and a fresh run give the same rows.
    """
    for prior in priors.values():
        check_embedding_contract(prior, decoder)
    items = list(items) if items is not None else suite.items(split)[:limit]
    pairs = [(item, seed) for item in items for seed in protocol.seeds()]
    work = SuiteWork(
        suite,
        decoder,
        scorers,
        protocol,
        TextCache(text_encoders or {}),
        cache if cache is not None else WorkCache(None),
        run_dir,
        list(priors),
        shard[1] != 1,
    )
    work.why_not = not_applicable(scorers, items)
    rows: list[dict] = []
    for prior_name, prior in priors.items():
        pw = prior_work(work, prior_name, prior)
        chunks = shard_chunks(len(pairs), batch_size, shard)
        bar = tqdm(
            total=sum(stop - start for start, stop in chunks),
            desc=f"{prior_name} · {suite.name}",
            unit="img",
            disable=not progress,
        )
        reused = 0  # images of batches found whole in the cache
        for start, stop in chunks:
            reused += (stop - start) * run_batch(work, pw, pairs[start:stop], start, rows)
            bar.update(stop - start)
            bar.set_postfix(img_per_s=f"{bar.n / max(bar.format_dict['elapsed'], 1e-9):.1f}", cached=reused)
        bar.close()
    return rows, work.timings


#: ``--negative``: what a decoder that takes a guidance negative (Kandinsky 2.2) gets from each prior
NEGATIVES = ("empty-prompt", "zero-image")


def negative_mode(prior, protocol: Protocol) -> str:
    """The run's ``--negative``, else the prior pipeline's own (random-weight builds: the empty prompt)."""
    if prior.random_weights and not protocol.negative:
        return "empty-prompt"  # no pipeline folder, so no image encoder; the images are noise anyway
    return protocol.negative or prior.negative


def negative_embedding(name: str, prior, texts: "TextCache", protocol: Protocol) -> torch.Tensor:
    """``(D,)`` float32 on the CPU: the prior's embedding of the empty prompt, or the zero-image embedding of its
    pipeline's image encoder (what the public Kandinsky 2.2 prior pipelines return without a negative prompt)."""
    mode = negative_mode(prior, protocol)
    if mode == "zero-image":
        zero = prior.zero_image_embedding()
        if zero is None:
            raise EvalkitError(
                f"prior {name!r} has no zero-image negative (its pipeline has no image encoder); "
                "run with --negative empty-prompt"
            )
        return zero.float().cpu()
    empty = Batch.from_prompts([""], [protocol.seed])
    texts.fill(empty, prior.text_encoders)
    return prior.predict(empty).float().cpu()[0]


def not_applicable(scorers: dict, items) -> dict[str, dict[str, str]]:
    """Per scorer, ``{item_id: reason}`` of the items its score would mean nothing for."""
    out = {}
    for name, scorer in scorers.items():
        out[name] = {item.item_id: reason for item in items if (reason := scorer.not_applicable(item))}
    return out


def applicable(row: dict) -> bool:
    """Whether a sample row holds a score (not one its scorer marked not applicable)."""
    return not (row.get("details") or {}).get("not_applicable")


def not_applicable_summary(rows: list[dict]) -> dict:
    """``{suite: {scorer: {"prompts", "images", "reasons": {reason: prompts}}}}`` of the rows marked not applicable."""
    from collections import Counter

    out: dict = {}
    for row in rows:
        if applicable(row):
            continue
        entry = out.setdefault(row["suite"], {}).setdefault(
            row["scorer"], {"prompts": set(), "images": 0, "reasons": Counter()}
        )
        if row["item_id"] not in entry["prompts"]:
            entry["reasons"][row["details"]["not_applicable"]] += 1
        entry["prompts"].add(row["item_id"])
        entry["images"] += 1
    for suite in out.values():
        for name, entry in suite.items():
            suite[name] = {
                "prompts": len(entry["prompts"]),
                "images": entry["images"],
                "reasons": dict(entry["reasons"].most_common(10)),
            }
    return out


def refuse_unscorable(suites, scorers: dict, split: str, limit: int | None) -> list[str]:
    """Before anything is generated: a suite whose every prompt no scorer of the run can score is refused.
    Returns a note per (suite, scorer) with prompts it will not score."""
    notes = []
    for suite in suites:
        items = suite.items(split)[:limit]
        why = not_applicable(scorers, items)
        notes += [
            f"{suite.name}: {name} cannot score {len(found)} of {len(items)} prompts (e.g. "
            f"{next(iter(found.values()))}); they are counted, shown in the report and left out of its means"
            for name, found in why.items()
            if found
        ]
        if items and all(all(why[name].get(item.item_id) for name in scorers) for item in items):
            first = next(iter(scorers))
            example = why[first][items[0].item_id]
            raise EvalkitError(
                f"no scorer of this run can score any prompt of {suite.name!r} ({', '.join(scorers)}); "
                f"e.g. {first} on {items[0].prompt!r}: {example}. Choose a scorer for these prompts "
                "(T2I-CompBench suites: --scorer blip-vqa)"
            )
    return notes


def aggregate(
    rows: list[dict],
    suite_versions: dict,
    protocol: Protocol,
    num_parameters: dict,
    n_boot: int = 2000,
    split: str = "val",
    priors_info: dict | None = None,
    tag: str = "",
    higher_is_better: dict | None = None,
    score_resolution: dict | None = None,
) -> list[ResultRow]:
    """Result rows per (prior, suite, scorer, category, seen ∈ all/seen/unseen), bootstrap CI over prompts."""
    priors_info, higher_is_better, score_resolution = priors_info or {}, higher_is_better or {}, score_resolution or {}
    groups: dict[tuple, list[dict]] = {}
    for row in filter(applicable, rows):
        label = "seen" if row["seen"] else ("unseen" if row["seen"] is False else None)
        for seen in ("all", label):
            if seen:
                groups.setdefault((row["prior"], row["suite"], row["scorer"], row["category"], seen), []).append(row)
    out = []
    for (prior, suite, scorer, category, seen), members in sorted(groups.items(), key=lambda kv: kv[0]):
        est = bootstrap([m["score"] for m in members], [m["item_id"] for m in members], n_boot=n_boot)
        info = priors_info.get(prior, {})
        out.append(
            ResultRow(
                prior=prior,
                decoder=protocol.decoder,
                suite=suite,
                suite_version=suite_versions[suite],
                category=category,
                split=split,
                seen=seen,
                metric=scorer,
                value=est.value,
                stderr=est.stderr,
                ci_low=est.ci_low,
                ci_high=est.ci_high,
                n=est.n,
                n_prompts=est.n_clusters,
                protocol_hash=protocol.hash(),
                tag=tag,
                num_parameters=num_parameters.get(prior, 0),
                higher_is_better=higher_is_better.get(scorer, True),
                score_resolution=float(score_resolution.get(scorer, 1.0)),
                total_parameters=info.get("total_parameters", 0),
                prior_version=info.get("version", ""),
            )
        )
    return out


def _package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("evalkit", "torch", "diffusers", "transformers", "open_clip_torch", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git_hash() -> str | None:
    import subprocess

    from evalkit.paths import REPO_ROOT

    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


#: what a prior's label in a run may look like (it names folders of the run: images/<label>/...)
LABEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"


def prior_specs(entries) -> list[tuple[str, str]]:
    """``--prior`` entries → ``(label, registered name)``: ``eclipse`` is ``("eclipse", "eclipse")``;
    ``mine=eclipse`` runs the ``eclipse`` class under the label ``mine`` (a second checkpoint beside the shipped
    one: ``--prior eclipse,mine=eclipse --prior-path mine=DIR``)."""
    import re

    from evalkit.errors import SettingError

    specs = []
    for entry in entries:
        label, sep, target = str(entry).partition("=")
        label, target = label.strip(), (target.strip() if sep else label.strip())
        if not label or not target:
            raise SettingError(f"--prior {entry!r}: expected NAME or LABEL=NAME (e.g. mine=eclipse)")
        if sep and not re.fullmatch(LABEL_PATTERN, label):
            raise SettingError(
                f"--prior {entry!r}: a label is letters, digits, '.', '_', '+', '-' (at most 64, "
                "starting with a letter or digit)"
            )
        specs.append((label, target))
    return specs


def _resolve_priors(config: RunConfig) -> list[tuple[str, str]]:
    """Labels and registered names of the run's priors, the method names resolved in the decoder's space
    (``eclipse`` beside ``karlo`` is ``eclipse-karlo``) and every space checked from the registry's metadata:
    nothing is loaded. ``config.priors`` is rewritten to what runs (recorded in run.json)."""
    from evalkit.registry import PRIORS, resolve_prior

    resolved = []
    for label, target in prior_specs(config.priors):
        PRIORS.check([target])
        name = resolve_prior(target, config.decoder)
        if name != target:
            print(f"note: --prior {target} with decoder {config.decoder!r} is {name!r}", file=sys.stderr)
            label = name if label == target else label
        resolved.append((label, name))
    labels = [label for label, _ in resolved]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise EvalkitError(
            f"prior {twice[0]!r} is named twice; to run a second checkpoint of one class beside it, "
            f"give it a label: --prior {twice[0]},mine={twice[0]} --prior-path mine=DIR"
        )
    unknown = sorted(set(config.prior_paths) - set(labels))
    if unknown:
        raise EvalkitError(
            f"--prior-path names {', '.join(unknown)}, which is not among the run's priors "
            f"({', '.join(labels)}); to load a folder under a name of its own, add it as LABEL=CLASS: "
            f"--prior {','.join(labels)},{unknown[0]}=eclipse --prior-path {unknown[0]}=DIR"
        )
    config.priors = [label if label == name else f"{label}={name}" for label, name in resolved]
    return resolved


def load_suites(config: RunConfig) -> list:
    """The run's suites: the registered ones named by ``--suite`` and one per ``--prompts`` file."""
    from evalkit.registry import SUITES
    from evalkit.suites import load_suite

    SUITES.check(config.suites)
    suites = [load_suite(name, prompts_dir=config.prompts_dir) for name in config.suites]
    if config.prompt_files:
        from evalkit.suites.prompt_file import prompt_file_suite

        if not config.category:
            raise EvalkitError(
                "--prompts needs --category (color, shape, texture, ...): the scorers ask their questions by category"
            )
        suites += [prompt_file_suite(path, config.category) for path in config.prompt_files]
    names = [suite.name for suite in suites]
    if len(set(names)) != len(names):
        raise EvalkitError(f"two suites of the run are called {next(n for n in names if names.count(n) > 1)!r}")
    return suites


def resolve(config: RunConfig):
    """Names → objects, with every name and the embedding contract checked before any work.

    Everything is loaded on the CPU in the precision of its files; :func:`place_plugins` then puts it where
    the run computes."""
    from evalkit.registry import register_plugin

    added = []
    try:
        for spec in config.plugins:
            registry, name, new = register_plugin(spec)
            if new:
                added.append((registry, name))
        return _resolve(config)
    finally:  # registered for this run only: a library caller's registries are left as they were
        for registry, name in added:
            registry.unregister(name)


def _resolve_scorer_names(config: RunConfig, suites) -> None:
    """Fill ``config.scorers`` from the suites' defaults when none were named; check them and ``--scorer-path``."""
    from evalkit.registry import SCORERS

    if not config.scorers:
        defaults = {tuple(s.default_scorers) for s in suites}
        if len(defaults) != 1 or not next(iter(defaults)):
            raise EvalkitError(
                "these suites have different (or no) default scorers "
                f"({', '.join(f'{s.name}: {list(s.default_scorers)}' for s in suites)}); name them with --scorer"
            )
        config.scorers = list(next(iter(defaults)))
    SCORERS.check(config.scorers)
    stray = sorted(set(config.scorer_paths) - set(config.scorers))
    if stray:
        raise EvalkitError(
            f"--scorer-path names {', '.join(stray)}, which is not among the run's scorers "
            f"({', '.join(config.scorers)})"
        )


def _load_scorers(config: RunConfig) -> dict:
    """Build the run's scorers, each with its ``--scorer-path`` weights folder where one was named."""
    from evalkit.registry import SCORERS

    scorers = {}
    for name in config.scorers:
        cls, path, kwargs = SCORERS.get(name), config.scorer_paths.get(name), {}
        if path is not None:
            params = inspect.signature(cls).parameters
            if "path" not in params:
                raise EvalkitError(f"scorer {name!r} loads no weights folder; --scorer-path does not apply to it")
            kwargs = {"path": path, **({"allow_pickle": config.allow_pickle} if "allow_pickle" in params else {})}
        scorers[name] = cls(**kwargs)
    return scorers


def _resolve(config: RunConfig):
    from evalkit.decoders import load_decoder
    from evalkit.priors import load_prior
    from evalkit.registry import DECODERS

    DECODERS.check([config.decoder])
    resolved = _resolve_priors(config)
    suites = load_suites(config)
    _resolve_scorer_names(config, suites)
    names = [name for _, name in resolved]
    if config.random_init is not None:  # every plugin must have a random build before the first (large) one is made
        from evalkit.registry import PRIORS

        DECODERS.random_builder(config.decoder, config.random_init)
        for name in names:
            PRIORS.random_builder(name, config.random_init)
    levers = {
        k: v
        for k, v in (
            ("resolution", config.resolution),
            ("offload", config.offload or None),
            ("attention", config.attention),
            ("vae_chunk_size", config.vae_chunk_size),
        )
        if v is not None
    }
    decoder = load_decoder(
        config.decoder, config.decoder_path, random_init=config.random_init, allow_pickle=config.allow_pickle, **levers
    )
    if config.negative and not decoder.takes_negative_image_embeds:
        raise SettingError(
            f"--negative chooses the guidance negative of decoders that take one from the prior "
            f"(kandinsky22); decoder {config.decoder!r} takes none"
        )
    options = {"num_inference_steps": config.prior_num_inference_steps, "guidance_scale": config.prior_guidance_scale}
    priors = {}
    for label, name in resolved:
        path = config.prior_paths.get(label)
        extra = {"path": path, "allow_pickle": config.allow_pickle} if path else {}
        priors[label] = load_prior(name, **options, **extra, random_init=config.random_init, among=names)
    for prior in priors.values():
        check_embedding_contract(prior, decoder)
    scorers = _load_scorers(config)
    return priors, decoder, scorers, suites


def _text_encoder_dtype(encoder, wanted: str | None) -> str | None:
    """Text encoders are read by the priors: their stage's dtype where the encoder has it, else their own."""
    return wanted if wanted in tuple(getattr(encoder, "supported_dtypes", ("float32",))) else None


def _refuse_shared_conflicts(priors: dict, decoder, scorers: dict, encoders: dict, stages: dict) -> None:
    """A module held by plugins of two stages (the world CLIP: a prior's text encoder and a scorer's image
    encoder) cannot compute in two dtypes: such a --dtype is refused, naming both."""
    from evalkit.errors import SettingError
    from evalkit.placement import modules_of

    owners: dict[int, tuple[str, str, str | None]] = {}
    plugins = [("decoder", "", decoder, stages["decoder"])]
    plugins += [("prior", n, p, stages["prior"]) for n, p in priors.items()]
    plugins += [("scorer", n, s, stages["scorer"]) for n, s in scorers.items()]
    plugins += [
        ("prior", f"text encoder {space}", e, _text_encoder_dtype(e, stages["prior"])) for space, e in encoders.items()
    ]
    for role, name, plugin, dtype in plugins:
        for module in modules_of(plugin):
            first = owners.setdefault(id(module), (role, name, dtype))
            if first[0] != role and first[2] != dtype:
                raise SettingError(
                    f"{first[0]} {first[1] or type(plugin).__name__!r} and {role} {name or role!r} share "
                    f"{type(module).__name__} weights, which cannot compute in {first[2] or 'their own dtype'} "
                    f"and {dtype or 'their own dtype'} at once; give the two stages one --dtype"
                )


def place_plugins(priors: dict, decoder, scorers: dict, encoders: dict, device: str, dtype: str | None) -> dict:
    """Every plugin and text encoder of the run on ``device`` (``--dtype``: one dtype, or per stage); returns
    the placements recorded with the run: ``{"device", "decoder", "priors", "scorers", "text_encoders"}``."""
    from evalkit.placement import parse_dtypes, place

    stages = parse_dtypes(dtype)
    _refuse_shared_conflicts(priors, decoder, scorers, encoders, stages)
    out = {"device": device, "decoder": place(decoder, device, stages["decoder"], "decoder", "")}
    out["priors"] = {n: place(p, device, stages["prior"], "prior", n) for n, p in priors.items()}
    out["scorers"] = {n: place(s, device, stages["scorer"], "scorer", n) for n, s in scorers.items()}
    out["text_encoders"] = {
        space: place(encoder, device, _text_encoder_dtype(encoder, stages["prior"]), "text encoder", space)
        for space, encoder in encoders.items()
    }
    return out


def check_config(config: RunConfig) -> None:
    """Numeric flags, before anything is loaded or written."""
    problems = []
    if config.images_per_prompt < 1:
        problems.append(f"--images-per-prompt must be ≥ 1 (got {config.images_per_prompt})")
    if config.batch_size < 1:
        problems.append(f"--batch-size must be ≥ 1 (got {config.batch_size})")
    if config.limit is not None and config.limit < 1:
        problems.append(f"--limit must be ≥ 1 (got {config.limit})")
    for flag, value in (
        ("--num-inference-steps", config.num_inference_steps),
        ("--prior-num-inference-steps", config.prior_num_inference_steps),
    ):
        if value is not None and value < 1:
            problems.append(f"{flag} must be ≥ 1 (got {value})")
    for flag, value in (
        ("--guidance-scale", config.guidance_scale),
        ("--prior-guidance-scale", config.prior_guidance_scale),
    ):
        if value is not None and not (value >= 0 and value < float("inf")):
            problems.append(f"{flag} must be a finite number ≥ 0 (got {value})")
    if len(set(config.suites)) != len(config.suites):
        problems.append("a suite is named twice")
    if not config.priors or not (config.suites or config.prompt_files):
        problems.append("name at least one prior and one suite (--suite, or your own prompts: --prompts FILE)")
    if config.negative is not None and config.negative not in NEGATIVES:
        problems.append(f"--negative must be one of {', '.join(NEGATIVES)} (got {config.negative!r})")
    if config.resolution is not None and config.resolution < 1:
        problems.append(f"--resolution must be ≥ 1 (got {config.resolution})")
    if config.vae_chunk_size is not None and config.vae_chunk_size < 1:
        problems.append(f"--vae-chunk-size must be ≥ 1 (got {config.vae_chunk_size})")
    if config.random_init is not None:
        from evalkit.registry import RANDOM_INIT_SIZES

        if config.random_init not in RANDOM_INIT_SIZES:
            problems.append(f"--random-init must be real or tiny (got {config.random_init!r})")
        loaded = [
            flag
            for flag, value in (("--decoder-path", config.decoder_path), ("--prior-path", config.prior_paths))
            if value
        ]
        if loaded:
            problems.append(
                f"--random-init builds every prior and the decoder with random weights; it cannot be "
                f"combined with {' or '.join(loaded)} (drop one of them)"
            )
    if problems:
        raise EvalkitError("; ".join(problems))


@torch.inference_mode()
def preflight(priors: dict, decoder, suite, split: str, protocol: Protocol, encoders: dict) -> None:
    """Each prior on the suite's first item, before anything is written: shape and finite values."""
    items = suite.items(split)[:1]
    if not items:
        raise EvalkitError(f"suite {suite.name!r} has no {split} prompts")
    seed = protocol.seeds()[0]
    batch = Batch(items, [seed], scenes=[suite.ground_truth(items[0], seed)])
    TextCache(encoders).fill(batch, sorted({s for p in priors.values() for s in p.text_encoders}))
    for name, prior in priors.items():
        check_embeddings(name, prior.predict(batch).float(), batch, decoder.embedding_dim)


def prior_record(
    cls: str,
    *,
    trainable: int = 0,
    total: int = 0,
    text: int = 0,
    decoder: int = 0,
    data: str = "",
    version: str = "",
    **extra,
) -> dict:
    """One prior's entry of ``results.json``'s ``priors`` (the run's and an import's)."""
    return {
        "class": cls,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "text_encoder_parameters": text,
        "decoder_parameters": decoder,
        "data": data,
        "version": version,
        **extra,
    }


def prior_info(prior, encoders: dict, decoder) -> dict:
    """Parameter counts (trainable: the prior; total: prior + the text encoders it reads + the decoder), data,
    version."""
    text = sum(text_encoder_parameters(encoders.get(space)) for space in prior.text_encoders)
    return prior_record(
        f"{type(prior).__module__}.{type(prior).__qualname__}",
        trainable=prior.num_parameters(trainable_only=True),
        total=prior.num_parameters() + text + decoder.num_parameters(),
        text=text,
        decoder=decoder.num_parameters(),
        data=prior.training_data(),
        version=fingerprint(prior, code=False),
    )


def run_record(config: dict, protocol: Protocol, started: str, **extra) -> dict:
    """``run.json``: written first into a run folder (the run's and an import's)."""
    return {
        "config": config,
        "protocol": asdict(protocol),
        "protocol_hash": protocol.hash(),
        "started": started,
        **extra,
    }


def unknown_words(suites, split: str, limit: int | None, encoders: dict) -> dict:
    """Per suite and closed-vocabulary text encoder (one with ``unknown_words(prompt)``, e.g. the world CLIP):
    how many prompts hold words outside its vocabulary, and which words (with their prompt counts)."""
    from collections import Counter

    found: dict = {}
    for suite in suites:
        prompts = [item.prompt for item in suite.items(split)[:limit]]
        for space, encoder in encoders.items():
            found_words = [text_encoder_unknown_words(encoder, p) for p in prompts]
            if any(words is None for words in found_words):
                continue  # an open vocabulary
            per_prompt = [sorted({w.lower() for w in words}) for words in found_words]
            words = Counter(w for ws in per_prompt for w in ws)
            if words:
                found.setdefault(suite.name, {})[space] = {
                    "prompts": len(prompts),
                    "with_unknown_words": sum(1 for ws in per_prompt if ws),
                    "words": dict(sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))),
                }
    return found


def write_results(
    run_dir: Path,
    rows: list[dict],
    results: list[ResultRow],
    *,
    config: dict,
    protocol: Protocol,
    versions: dict,
    priors_info: dict,
    timings: dict,
    wall_time_s: float,
    cache_stats: dict,
    started: str,
    unknown_words: dict | None = None,
    environment: dict | None = None,
) -> None:
    """``samples.jsonl`` then the sealed ``results.json`` (with the samples' sha256): both or neither."""
    import datetime as _dt

    from evalkit.harness.paired import paired_results
    from evalkit.serialization import atomic_write_json, atomic_write_text, seal

    samples_text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write_text(run_dir / "samples.jsonl", samples_text)
    payload = {
        "schema": RESULTS_SCHEMA,
        "config": config,
        "protocol": asdict(protocol),
        "protocol_hash": protocol.hash(),
        "suite_versions": versions,
        "prompt_subsets": prompt_subsets(rows),
        "priors": priors_info,
        "rows": [asdict(r) for r in results],
        "environment": environment or {},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "wall_time_s": round(wall_time_s, 2),
        "images": len({(r["prior"], r["item_id"], r["seed"]) for r in rows}),
        "cache": cache_stats,
        "package_versions": _package_versions(),
        "git_hash": _git_hash(),
        "started": started,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "samples_sha256": hashlib.sha256(samples_text.encode("utf-8")).hexdigest(),
    }
    if unknown_words:  # prompt words a closed-vocabulary text encoder could not read (see unknown_words())
        payload["unknown_words"] = unknown_words
    skipped = not_applicable_summary(rows)
    if skipped:  # items a scorer marked not applicable: excluded from every row above
        payload["not_applicable"] = skipped
    # the paired comparisons the report shows (prior against prior, per image), stored with the rows they explain
    payload["paired"] = paired_results(rows, None, payload["rows"], priors_info)
    try:
        atomic_write_json(run_dir / "results.json", seal(payload))
    except OSError:
        (run_dir / "samples.jsonl").unlink(missing_ok=True)  # no half-finished set of result files
        raise


def _stage_dtype(placements: dict) -> str:
    """One stage's dtype for the protocol: what its plugins with weights computed in (comma-joined if several)."""
    dtypes = sorted({p["dtype"] for p in placements.values() if p["dtype"] != "none"})
    return ",".join(dtypes) or "float32"


def run_protocol(config: RunConfig, decoder, scorers: dict, placements: dict, decoder_version: str) -> Protocol:
    """The run's :class:`Protocol`: the flags, else the decoder's defaults; the stages' dtypes as placed."""
    return Protocol(
        decoder=config.decoder,
        num_inference_steps=config.num_inference_steps or decoder.default_num_inference_steps,
        guidance_scale=config.guidance_scale if config.guidance_scale is not None else decoder.default_guidance_scale,
        resolution=decoder.resolution,
        images_per_prompt=config.images_per_prompt,
        seed=config.seed,
        dtype=decoder.compute_dtype,
        scorer=",".join(config.scorers),
        scorer_version=",".join(scorers[s].version for s in config.scorers),
        decoder_version=decoder_version,
        random_init=config.random_init or "",
        prior_dtype=_stage_dtype(placements["priors"]),
        scorer_dtype=_stage_dtype(placements["scorers"]),
        negative=config.negative or "",
    )


def _prepare(config: RunConfig, inject=None):
    """Everything of a run before any work: flags checked, plugins resolved, placed; the protocol."""
    from evalkit.placement import resolve_device

    check_config(config)
    device = resolve_device(config.device)  # before anything loads: a GPU that is not here is a clear error
    if device == "meta":
        raise SettingError(
            "--device meta holds no data, so a run cannot compute on it (it is for parameter counts "
            "and placement tests: evalkit.placement.place); use --device cpu or cuda"
        )
    priors, decoder, scorers, suites = resolve(config)
    if inject is not None:
        inject(priors, decoder, scorers)
    decoder_version = fingerprint(
        decoder, code=False, numeric=False
    )  # of the weights as loaded: any dtype, one protocol
    encoders = text_encoders(priors, decoder)
    placements = place_plugins(priors, decoder, scorers, encoders, device, config.dtype)
    distributed.configure(device)
    protocol = run_protocol(config, decoder, scorers, placements, decoder_version)
    return priors, decoder, scorers, suites, encoders, placements, protocol


def _check_work(
    config: RunConfig,
    priors: dict,
    decoder,
    scorers: dict,
    suites: list,
    protocol: Protocol,
    encoders: dict,
    progress: bool,
) -> dict:
    """Refusals and notes before anything is written; returns the prompts' unknown words (:func:`unknown_words`)."""
    unscored = refuse_unscorable(suites, scorers, config.split, config.limit)
    preflight(priors, decoder, suites[0], config.split, protocol, encoders)
    unknown = unknown_words(suites, config.split, config.limit, encoders)
    if progress and distributed.world()[0] == 0:
        from evalkit.report.run_report import unknown_words_summary

        for line in [*unknown_words_summary(unknown), *unscored]:
            print(f"note: {line}", file=sys.stderr)
    return unknown


def _evaluate_suites(
    config: RunConfig,
    priors: dict,
    decoder,
    scorers: dict,
    suites: list,
    protocol: Protocol,
    encoders: dict,
    run_dir: Path,
    cache: WorkCache,
    progress: bool,
) -> tuple[list[dict], dict]:
    """Every suite of the run; with several processes, every process's rows and timings gathered (in
    single-process order) onto each."""
    rank, processes = distributed.world()
    rows, timings = [], {}
    for index, suite in enumerate(suites):
        suite_rows, suite_timings = evaluate(
            priors,
            decoder,
            suite,
            scorers,
            protocol,
            run_dir,
            config.split,
            config.limit,
            config.batch_size,
            encoders,
            progress and rank == 0,
            cache=cache,
            shard=(rank, processes),
        )
        rows += [{**row, "_order": (index, *row["_order"])} for row in suite_rows] if processes > 1 else suite_rows
        for key, value in suite_timings.items():
            timings[key] = timings.get(key, 0.0) + value
    if processes > 1:  # process 0 writes everything, from every process's rows, in single-process order
        rows = sorted(distributed.gather(rows), key=lambda row: row["_order"])
        rows = [{k: v for k, v in row.items() if k != "_order"} for row in rows]
        gathered = distributed.gather([(timings, cache.stats())])
        timings = {k: sum(t[k] for t, _ in gathered) for k in timings}
        for part in ("hits", "misses", "stored"):
            setattr(
                cache, part, {kind: sum(stats[part][kind] for _, stats in gathered) for kind in getattr(cache, part)}
            )
    return rows, timings


def _priors_info(priors: dict, decoder, encoders: dict, protocol: Protocol) -> dict:
    """``results.json`` ``priors``: each prior's record, with the negative it gave a decoder that takes one."""
    info = {name: prior_info(p, encoders, decoder) for name, p in priors.items()}
    if decoder.takes_negative_image_embeds:
        for name, p in priors.items():
            info[name]["negative"] = negative_mode(p, protocol)
    return info


def _write_run(
    run_dir: Path,
    config: RunConfig,
    rows: list[dict],
    timings: dict,
    *,
    priors: dict,
    decoder,
    scorers: dict,
    versions: dict,
    encoders: dict,
    protocol: Protocol,
    placements: dict,
    unknown: dict,
    cache: WorkCache,
    started: str,
    clock: float,
    processes: int,
) -> None:
    """Aggregate rows, ``samples.jsonl`` + sealed ``results.json``, then the report (then the processes finish)."""
    from evalkit.report.run_report import write_report

    info = _priors_info(priors, decoder, encoders, protocol)
    results = aggregate(
        rows,
        versions,
        protocol,
        {n: i["trainable_parameters"] for n, i in info.items()},
        split=config.split,
        priors_info=info,
        tag=config.tag,
        higher_is_better={n: s.higher_is_better for n, s in scorers.items()},
        score_resolution={n: s.score_resolution for n, s in scorers.items()},
    )
    try:
        write_results(
            run_dir,
            rows,
            results,
            config=asdict(config),
            protocol=protocol,
            versions=versions,
            priors_info=info,
            timings=timings,
            wall_time_s=time.time() - clock,
            cache_stats=cache.stats(),
            started=started,
            unknown_words=unknown,
            environment={**describe_environment(decoder, processes), "placements": placements},
        )
        try:
            write_report([run_dir], run_dir)
        except WriteError as error:  # the results are written and sealed: only the report is missing
            raise WriteError(
                f"{error}. The run itself finished: results.json and samples.jsonl in {run_dir} are "
                f"complete and valid; `evalkit report {run_dir}` renders its report again "
                "(into a new folder)"
            ) from error
    finally:
        distributed.finish()


def run(config: RunConfig, progress: bool = True, inject=None) -> Path:
    """Run the protocol of ``config`` and write ``<out>/<run-id>/``.

    ``inject(priors, decoder, scorers)``: called on the resolved plugins before any work, to change them in
    place — the fault injection of the regression gate's tests (:mod:`evalkit.harness.faults`); None in every real run.

    The folder holds ``run.json`` (config and protocol, written first), the images, then — written
    atomically at the end — ``samples.jsonl``, ``results.json``, ``report.md`` and ``report.html``. A
    folder without ``results.json`` is an unfinished run; starting the same command again reuses its
    finished work from the cache.
    """
    import datetime as _dt

    from evalkit.harness.cache import default_root
    from evalkit.harness.runs import new_run_dir
    from evalkit.serialization import atomic_write_json

    priors, decoder, scorers, suites, encoders, placements, protocol = _prepare(config, inject)
    versions = {s.name: s.version(config.split) for s in suites}
    unknown = _check_work(config, priors, decoder, scorers, suites, protocol, encoders, progress)
    # random weights: nothing worth keeping, and a speed run must not time cache hits
    cache = WorkCache((config.cache_dir or default_root()) if config.cache and not config.random_init else None)
    rank, processes = distributed.world()  # > 1 under `accelerate launch` / `torchrun`: batches are shared out
    run_dir, started = None, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if rank == 0:
        run_dir = new_run_dir(config.out, "-".join(priors) + "_" + "-".join(suite.name for suite in suites))
        atomic_write_json(run_dir / "run.json", run_record(asdict(config), protocol, started, processes=processes))
    run_dir = Path(distributed.broadcast(str(run_dir) if run_dir else None))
    clock = time.time()
    rows, timings = _evaluate_suites(
        config, priors, decoder, scorers, suites, protocol, encoders, run_dir, cache, progress
    )
    if rank != 0:
        distributed.finish()  # process 0 writes the folder; the others wait for it
        return run_dir
    _write_run(
        run_dir,
        config,
        rows,
        timings,
        priors=priors,
        decoder=decoder,
        scorers=scorers,
        versions=versions,
        encoders=encoders,
        protocol=protocol,
        placements=placements,
        unknown=unknown,
        cache=cache,
        started=started,
        clock=clock,
        processes=processes,
    )
    return run_dir
