"""``evalkit check-world``: the quality bars of the embedded stack, measured and written to a folder
(by default a new ``evalkit-checks/<timestamp>/`` under the current directory; the committed copy is
``results/embedded-stack/``, refreshed with ``--out results/embedded-stack``).

1. CLIP: retrieval, caption-side and image-side binding, paired cosine (val, seen / unseen).
2. Headroom: embedding-level binding accuracy and margin of the calibration priors oracle / text / none.
3. Decoder (when its weights exist): images decoded from oracle embeddings (the item's own render)
   scored by the analytic scorer — the share of noun phrases whose attributes appear on one object —
   for a sweep of DDIM step counts, next to the same score on the true renders; plus a picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from evalkit.serialization import atomic_write_json
from evalkit.eval_prior import headroom_table

from evalkit.suites.synth import SYNTH_SUITES as SUITES
from evalkit.world.attributes import CATEGORIES


def check_clip(clip, seeds: int) -> dict:
    from evalkit.checks.clip_eval import evaluate_clip

    return evaluate_clip(clip, seeds=seeds)


def check_headroom(clip, seeds: int, out_dir: Path) -> list[dict]:
    from evalkit.eval_prior import eval_priors, headroom, render_report

    rows, summary = eval_priors(
        ["oracle", "text", "none"], list(SUITES), "val", tuple(range(42, 42 + seeds)), clip=clip
    )
    room = headroom(rows)
    atomic_write_json(
        out_dir / "headroom" / "summary.json",
        {
            "config": {"priors": ["oracle", "text", "none"], "suites": list(SUITES), "seeds": seeds},
            "summary": summary,
            "headroom": room,
        },
    )
    (out_dir / "headroom" / "report.md").write_text(render_report(summary, room))
    return room


def check_decoder(clip, prompts: int, steps_sweep, out_dir: Path, decoder_dir: str | Path | None = None) -> list[dict]:
    from evalkit.contracts import Protocol
    from evalkit.decoders.synth import SynthDecoder
    from evalkit.priors.calibration import OraclePrior
    from evalkit.harness.runner import evaluate
    from evalkit.scorers.analytic import AnalyticScorer
    from evalkit.suites import load_suite
    from evalkit.world import render

    from evalkit.scorers.binding import SHIPPED_DIR as SCORER_DIR, BindingScorer

    decoder = SynthDecoder.from_pretrained(decoder_dir)
    oracle = OraclePrior(clip)
    scorers = {"analytic": AnalyticScorer()}
    if (SCORER_DIR / "config.json").is_file():
        scorers["binding"] = BindingScorer()
    results = []
    for name in SUITES:
        suite = load_suite(name)
        subset = oracle_subset(suite, "val", prompts)

        scorer = AnalyticScorer()
        truth = scorer.score(
            torch.from_numpy(render([suite.ground_truth(i, 42) for i in subset])).permute(0, 3, 1, 2).float() / 255,
            _batch(subset),
        )
        for steps in steps_sweep:
            protocol = Protocol("synth", steps, decoder.default_guidance_scale, 32, images_per_prompt=1)
            rows, timings = evaluate(
                {"oracle": oracle},
                decoder,
                suite,
                scorers,
                protocol,
                None,
                progress=False,
                text_encoders={"synth-clip": clip},
                items=subset,
            )
            for seen in (True, False):
                chosen = [r for r in rows if r["seen"] is seen and r["scorer"] == "analytic"]
                binding = [r for r in rows if r["seen"] is seen and r["scorer"] == "binding"]
                results.append(
                    {
                        "suite": name,
                        "steps": steps,
                        "seen": seen,
                        "n": len(chosen),
                        "decoded_score": sum(r["score"] for r in chosen) / max(len(chosen), 1),
                        "decoded_binding": realised_share(binding) if binding else None,
                        "render_score": sum(t["score"] for t, i in zip(truth, subset) if i.seen is seen)
                        / max(sum(1 for i in subset if i.seen is seen), 1),
                        "decoder_s_per_image": timings["decoder"] / max(len(rows), 1),
                    }
                )
        save_decoded_grid(out_dir / f"decoded-{name}.png", suite, subset[:8], oracle, decoder, clip)
    atomic_write_json(out_dir / "decoder.json", {"prompts_per_suite": prompts, "results": results})
    return results


def realised_share(rows: list[dict]) -> float:
    """Share of noun-phrase questions a VQA-style scorer answers yes (p > 0.5) over its sample rows."""
    return sum(q["p"] > 0.5 for r in rows for q in r["questions"]) / max(sum(len(r["questions"]) for r in rows), 1)


def oracle_subset(suite, split: str, prompts: int) -> list:
    """The first ``prompts`` items of a split, two thirds seen and one third unseen combinations."""
    items = suite.items(split)
    return [i for i in items if i.seen][: prompts - prompts // 3] + [i for i in items if not i.seen][: prompts // 3]


def save_decoded_grid(path: Path, suite, items, oracle, decoder, clip) -> Path:
    """Top row: true renders (seed 42); bottom row: decoded from their CLIP image embeddings."""
    from evalkit.contracts import Batch, Protocol
    from evalkit.report.grid import save_image_grid, to_uint8
    from evalkit.world import render

    batch = Batch(list(items), [42] * len(items))
    protocol = Protocol("synth", decoder.default_num_inference_steps, decoder.default_guidance_scale, 32, 1)
    decoded = decoder.decode(oracle.predict(batch), batch, protocol)

    images = np.concatenate([render([suite.ground_truth(i, 42) for i in items]), to_uint8(decoded)])
    titles = [f"render: {i.prompt}" for i in items] + ["decoded from its embedding"] * len(items)
    return save_image_grid(path, images, titles, columns=len(items))


CLIP_METRICS = (
    "i2t_top1",
    "i2t_top1_true",
    "i2t_top1_words",
    "caption_binding",
    "image_binding",
    "text_image_binding",
    "paired_cos",
)


def clip_table(metrics: dict) -> list[str]:
    from tabulate import tabulate

    table = [
        [cat, seen, *[metrics[f"{cat}/{seen}/{m}"] for m in CLIP_METRICS]]
        for cat in (*CATEGORIES, "mean")
        for seen in ("seen", "unseen")
    ]
    return [tabulate(table, headers=["category", "split", *CLIP_METRICS], tablefmt="github"), ""]


def decoder_table(results: list[dict]) -> list[str]:
    from tabulate import tabulate

    table = [
        [
            r["suite"],
            r["steps"],
            "seen" if r["seen"] else "unseen",
            r["n"],
            f"{r['decoded_score']:.3f}",
            "–" if r.get("decoded_binding") is None else f"{r['decoded_binding']:.3f}",
            f"{r['render_score']:.3f}",
            f"{r['decoder_s_per_image']:.3f}",
        ]
        for r in results
    ]
    return [
        "## Decoder from oracle embeddings (share of noun phrases realised)",
        "",
        "Analytic: the HRS-style scorer (segmentation + attribute reading); binding: the embedded VQA "
        "scorer's answers (p > 0.5); true renders: the analytic scorer on the renders themselves.",
        "",
        tabulate(
            table,
            headers=["suite", "DDIM steps", "split", "n", "analytic", "binding", "true renders", "s/image"],
            tablefmt="github",
        ),
        "",
    ]


def _batch(items):
    from evalkit.contracts import Batch

    return Batch(list(items), [42] * len(items))


PARTS = ("clip", "headroom", "decoder")


#: a few seconds on a CPU, every part exercised (the tests'; its numbers mean little)
QUICK = dict(clip_seeds=1, prior_seeds=1, decoder_prompts=3, steps_sweep=(2,))


def check_world(
    out_dir: str | Path | None = None,
    clip_seeds: int = 10,
    prior_seeds: int = 10,
    decoder_prompts: int = 48,
    steps_sweep=(10, 25, 50),
    parts=PARTS,
    decoder_dir: str | Path | None = None,
    clip_dir: str | Path | None = None,
) -> dict:
    """Measure ``parts`` into ``out_dir`` (None: :func:`evalkit.checks.default_check_dir`, a new folder under
    the current directory); the parts not measured are read back from ``out_dir`` when it holds them.
    ``**QUICK``: the smallest settings (seconds)."""
    from evalkit.checks import default_check_dir
    from evalkit.decoders.synth import SHIPPED_DIR as DECODER_DIR
    from evalkit.world.models.clip import load_world_clip

    out_dir = Path(out_dir if out_dir is not None else default_check_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = load_world_clip(str(clip_dir) if clip_dir else None)
    report: dict = {}
    if "clip" in parts:
        report["clip"] = check_clip(clip, clip_seeds)
        atomic_write_json(out_dir / "clip.json", {"seeds": clip_seeds, "metrics": report["clip"]})
    elif (out_dir / "clip.json").is_file():
        report["clip"] = json.loads((out_dir / "clip.json").read_text())["metrics"]
    if "headroom" in parts:
        report["headroom"] = check_headroom(clip, prior_seeds, out_dir)
    elif (out_dir / "headroom" / "summary.json").is_file():
        report["headroom"] = json.loads((out_dir / "headroom" / "summary.json").read_text())["headroom"]
    if "decoder" in parts and (DECODER_DIR / "config.json").is_file():
        report["decoder"] = check_decoder(clip, decoder_prompts, steps_sweep, out_dir, decoder_dir)
    elif (out_dir / "decoder.json").is_file():
        report["decoder"] = json.loads((out_dir / "decoder.json").read_text())["results"]
    lines = [
        "# Embedded stack: quality bars",
        "",
        "Regenerate with `evalkit check-world`" + (f" (CLIP: `{clip_dir}`)" if clip_dir else "") + ".",
        "",
    ]
    if "clip" in report:
        lines += [f"## CLIP (val, {clip_seeds} renders per prompt)", ""]
        lines += clip_table(report["clip"])
    if "headroom" in report:
        lines += headroom_table(report["headroom"]) + ["Details: headroom/report.md.", ""]
    if "decoder" in report:
        lines += decoder_table(report["decoder"])
    (out_dir / "README.md").write_text("\n".join(lines))
    return report
