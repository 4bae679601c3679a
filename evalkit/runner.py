"""``evaluate``: priors → shared decoder → scorers over a suite, with per-image and aggregate rows.

This is the object-level API (tests call it directly); ``run(config)`` below resolves names and
writes the run folder. Every prompt is text-encoded once per embedding space and shared by all
priors and seeds; each image's randomness comes from its own seed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from evalkit.contracts import Batch, Protocol, ResultRow, RunConfig, check_embedding_contract
from evalkit.errors import EvalkitError
from evalkit.stats import bootstrap


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


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
                    self.store[(space, prompt)] = (enc.text_embeds[k], None if enc.text_hidden is None else enc.text_hidden[k],
                                                   None if enc.attention_mask is None else enc.attention_mask[k])
            rows = [self.store[(space, p)] for p in batch.prompts]
            stack = lambda i: None if rows[0][i] is None else torch.stack([r[i] for r in rows])
            batch.text[space] = TextEncoding(space, stack(0), stack(1), stack(2))


@torch.inference_mode()
def evaluate(priors: dict, decoder, suite, scorers: dict, protocol: Protocol, run_dir: Path | None = None,
             split: str = "val", limit: int | None = None, batch_size: int = 64, text_encoders: dict | None = None,
             progress: bool = True, items: list | None = None) -> tuple[list[dict], dict]:
    """Generate and score ``suite`` for every prior; returns (per-image rows, timings per stage).

    ``items``: score these items of the suite instead of the first ``limit`` of ``split``.
    """
    for prior in priors.values():
        check_embedding_contract(prior, decoder)
    items = list(items) if items is not None else suite.items(split)[:limit]
    pairs = [(item, seed) for item in items for seed in protocol.seeds()]
    texts = TextCache(text_encoders or {})
    timings = {"text": 0.0, "prior": 0.0, "decoder": 0.0, "scorer": 0.0}
    rows: list[dict] = []
    for prior_name, prior in priors.items():
        image_dir = None
        if run_dir is not None:
            image_dir = Path(run_dir) / "images" / prior_name / suite.name
            image_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(pairs), desc=f"{prior_name} · {suite.name}", unit="img", disable=not progress)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = Batch([p[0] for p in chunk], [p[1] for p in chunk],
                          scenes=[suite.ground_truth(i, s) for i, s in chunk])
            t0 = time.perf_counter()
            texts.fill(batch, prior.text_encoders)
            t1 = time.perf_counter()
            embeds = prior.predict(batch)
            if embeds.shape != (len(batch), decoder.embedding_dim) or not torch.isfinite(embeds).all():
                raise EvalkitError(f"prior {prior_name!r} returned {tuple(embeds.shape)} embeddings"
                                   f"{'' if torch.isfinite(embeds).all() else ' with NaN/inf values'}; expected "
                                   f"({len(batch)}, {decoder.embedding_dim}) finite values")
            t2 = time.perf_counter()
            images = decoder.decode(embeds, batch, protocol)
            t3 = time.perf_counter()
            scored = {name: scorer.update(images, batch) for name, scorer in scorers.items()}
            t4 = time.perf_counter()
            for k, (item, seed) in enumerate(chunk):
                path = ""
                if image_dir is not None:
                    path = str(Path("images") / prior_name / suite.name / f"{item.item_id}_{seed}.png")
                    _save_png(images[k], Path(run_dir) / path)
                for scorer_name, scorer_rows in scored.items():
                    row = dict(scorer_rows[k])
                    rows.append({"prior": prior_name, "suite": suite.name, "scorer": scorer_name, "item_id": item.item_id,
                                 "prompt": item.prompt, "seed": seed, "category": item.category, "seen": item.seen,
                                 "image_path": path, "score": float(row.pop("score")),
                                 "questions": row.pop("questions", []),
                                 **{k2: v for k2, v in row.items() if k2 not in ("item_id", "prompt", "category", "seen", "seed")}})
            for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[key] += dt
            bar.update(len(chunk))
            bar.set_postfix(img_per_s=f"{bar.n / max(bar.format_dict['elapsed'], 1e-9):.1f}")
        bar.close()
    return rows, timings


def aggregate(rows: list[dict], suite_versions: dict, protocol: Protocol, num_parameters: dict, n_boot: int = 2000,
              split: str = "val") -> list[ResultRow]:
    """Result rows per (prior, suite, scorer, category, seen ∈ all/seen/unseen), bootstrap CI over prompts."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        label = "seen" if row["seen"] else ("unseen" if row["seen"] is False else None)
        for seen in ("all", label):
            if seen:
                groups.setdefault((row["prior"], row["suite"], row["scorer"], row["category"], seen), []).append(row)
    out = []
    for (prior, suite, scorer, category, seen), members in sorted(groups.items(), key=lambda kv: kv[0]):
        est = bootstrap([m["score"] for m in members], [m["item_id"] for m in members], n_boot=n_boot)
        out.append(ResultRow(prior=prior, decoder=protocol.decoder, suite=suite, suite_version=suite_versions[suite],
                             category=category, split=split, seen=seen, metric=scorer, value=est.value,
                             stderr=est.stderr, ci_low=est.ci_low, ci_high=est.ci_high, n=est.n,
                             protocol_hash=protocol.hash(), num_parameters=num_parameters.get(prior, 0)))
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
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def text_encoders(priors: dict, decoder) -> dict:
    """One text encoder per embedding space the priors read (shared by all priors of the run)."""
    encoders = {}
    clip = getattr(decoder, "clip", None) or next((getattr(p, "clip", None) for p in priors.values() if getattr(p, "clip", None)), None)
    if clip is not None:
        encoders[clip.embedding_space] = clip
    for prior in priors.values():
        for space in prior.text_encoders:
            if space not in encoders and hasattr(prior, "text_encoder"):
                encoders[space] = prior.text_encoder()
    return encoders


def resolve(config: RunConfig):
    """Names → objects, with every name and the embedding contract checked before any work."""
    from evalkit.priors import load_prior
    from evalkit.registry import DECODERS, PRIORS, SCORERS, SUITES
    from evalkit.suites import load_suite

    PRIORS.check(config.priors)
    DECODERS.check([config.decoder])
    SUITES.check(config.suites)
    SCORERS.check(config.scorers)
    decoder_cls = DECODERS.get(config.decoder)
    decoder = decoder_cls.from_pretrained() if hasattr(decoder_cls, "from_pretrained") else decoder_cls()
    options = {"num_inference_steps": config.prior_num_inference_steps, "guidance_scale": config.prior_guidance_scale}
    priors = {name: load_prior(name, **options) for name in config.priors}
    for prior in priors.values():
        check_embedding_contract(prior, decoder)
    scorers = {name: SCORERS.get(name)() for name in config.scorers}
    suites = [load_suite(name) for name in config.suites]
    return priors, decoder, scorers, suites


def run(config: RunConfig, progress: bool = True) -> Path:
    """Run the protocol of ``config`` and write ``<out>/<run-id>/`` (results.json, samples.jsonl, images, report.md)."""
    import datetime as _dt

    from evalkit.runs import new_run_dir
    from evalkit.serialization import atomic_write_json

    if config.images_per_prompt < 1 or config.batch_size < 1 or (config.limit is not None and config.limit < 1):
        raise EvalkitError("--images-per-prompt, --batch-size and --limit must be positive")
    priors, decoder, scorers, suites = resolve(config)
    protocol = Protocol(
        decoder=config.decoder,
        num_inference_steps=config.num_inference_steps or decoder.default_num_inference_steps,
        guidance_scale=config.guidance_scale if config.guidance_scale is not None else decoder.default_guidance_scale,
        resolution=decoder.resolution, images_per_prompt=config.images_per_prompt, seed=config.seed,
        scorer=",".join(config.scorers), scorer_version=",".join(scorers[s].version for s in config.scorers),
    )
    run_dir = new_run_dir(config.out, "-".join(config.priors) + "_" + "-".join(config.suites))
    encoders = text_encoders(priors, decoder)
    started = time.time()
    rows, timings = [], {}
    for suite in suites:
        suite_rows, suite_timings = evaluate(priors, decoder, suite, scorers, protocol, run_dir, config.split,
                                             config.limit, config.batch_size, encoders, progress)
        rows += suite_rows
        for key, value in suite_timings.items():
            timings[key] = timings.get(key, 0.0) + value
    versions = {s.name: s.version(config.split) for s in suites}
    num_parameters = {name: p.num_parameters() for name, p in priors.items()}
    results = aggregate(rows, versions, protocol, num_parameters, split=config.split)
    with open(run_dir / "samples.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    atomic_write_json(run_dir / "results.json", {
        "schema": "evalkit.results/1", "config": asdict(config), "protocol": asdict(protocol),
        "protocol_hash": protocol.hash(), "suite_versions": versions, "rows": [asdict(r) for r in results],
        "timings_s": {k: round(v, 3) for k, v in timings.items()}, "wall_time_s": round(time.time() - started, 2),
        "package_versions": _package_versions(), "git_hash": _git_hash(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    (run_dir / "report.md").write_text(render_run_report(results, rows, protocol))
    return run_dir


def render_run_report(results: list[ResultRow], rows: list[dict], protocol: Protocol) -> str:
    from tabulate import tabulate

    lines = ["# evalkit run", "", f"Protocol `{protocol.hash()}`: decoder {protocol.decoder}, "
             f"{protocol.num_inference_steps} steps, guidance {protocol.guidance_scale}, "
             f"{protocol.images_per_prompt} images per prompt from seed {protocol.seed}, scorer {protocol.scorer}.", ""]
    table = [[r.prior, r.suite, r.category, r.seen, r.metric, f"{r.value:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]", r.n]
             for r in results]
    lines += [tabulate(table, headers=["prior", "suite", "category", "split", "scorer", "score", "95% CI", "n"],
                       tablefmt="github"), ""]
    worst = sorted(rows, key=lambda r: r["score"])[:8]
    if worst and worst[0]["image_path"]:
        lines += ["## Lowest-scored images", ""]
        for r in worst:
            qs = ", ".join(f"{q['question']} {q['p']:.2f}" for q in r["questions"])
            lines += [f"- ![]({r['image_path']}) `{r['prior']}` seed {r['seed']}: *{r['prompt']}* → {r['score']:.2f} ({qs})"]
    return "\n".join(lines) + "\n"
