"""``evalkit demo``: the main job on the embedded default, at the stage the stack has reached.

It always renders each synthetic suite's first val items next to their attribute-swapped
counterparts, and, when the world's CLIP weights are present, runs the embedding-level
evaluation of the calibration priors (oracle, text, none) with the headroom check.
Everything lands in a new run folder with a ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.runs import new_run_dir

SUITES = ("synth-color", "synth-shape", "synth-texture")


def run_demo(out: str | Path, per_category: int = 8, num_seeds: int = 2, calibration: bool = True,
             progress: bool = True) -> Path:
    from evalkit.embedded.clip import SHIPPED_DIR
    from evalkit.suites import load_suite
    from evalkit.world.grid import save_grid

    run_dir = new_run_dir(out, "demo")
    lines = ["# evalkit demo", "", f"Run folder: `{run_dir}`", "", "## The synthetic suites (val)", ""]
    for name in SUITES:
        suite = load_suite(name)
        items = suite.items("val")
        shown = [i for i in items if i.seen][: per_category - per_category // 4] + [i for i in items if not i.seen][: per_category // 4]
        scenes = [suite.ground_truth(i, 42) for i in shown] + [suite.swapped_ground_truth(i, 42) for i in shown]
        titles = [f"{'seen' if i.seen else 'unseen'}: {i.prompt}" for i in shown] + [f"swapped: {i.swapped_prompt}" for i in shown]
        save_grid(run_dir / f"{name}.png", scenes, titles, columns=len(shown))
        seen = sum(1 for i in items if i.seen)
        lines += [f"### {name} — version `{suite.version('val')}`, {len(items)} prompts ({seen} seen, {len(items) - seen} unseen)",
                  "", f"Top row: renders of val prompts (seed 42); bottom row: the attribute-swapped prompt, same seed.", "",
                  f"![{name}]({name}.png)", "", "| item | prompt | noun phrases | swapped |", "|---|---|---|---|"]
        lines += [f"| {i.item_id} | {i.prompt} | {' · '.join(i.noun_phrases)} | {i.swapped_prompt} |" for i in shown]
        lines.append("")
    if not calibration:
        pass
    elif (SHIPPED_DIR / "config.json").is_file():
        from evalkit.eval_prior import eval_priors, headroom, render_report

        rows, summary = eval_priors(["oracle", "text", "none"], list(SUITES), "val", tuple(range(42, 42 + num_seeds)),
                                    progress=progress)
        report = render_report(summary, headroom(rows)).replace("# Embedding-level evaluation", "")
        lines += [f"## Calibration priors at the embedding level ({num_seeds} seeds per prompt)", report]
    else:
        lines += ["## Calibration priors", "", f"Skipped: the world's CLIP weights are not at {SHIPPED_DIR} "
                  "(train them with `evalkit train-world clip`)."]
    from evalkit.decoders.synth import SHIPPED_DIR as DECODER_DIR

    if calibration and (DECODER_DIR / "config.json").is_file():
        lines += decode_section(run_dir, per_category, progress)
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return run_dir


def decode_section(run_dir: Path, per_category: int, progress: bool) -> list[str]:
    """Images from the calibration priors through the synth decoder, scored by the analytic scorer."""
    import numpy as np
    from PIL import Image
    from tabulate import tabulate

    from evalkit.contracts import Protocol, RunConfig
    from evalkit.report.grid import save_image_grid
    from evalkit.runner import evaluate, resolve

    config = RunConfig(priors=["oracle", "text", "none"], decoder="synth", suites=list(SUITES), scorers=["analytic"])
    priors, decoder, scorers, suites = resolve(config)
    protocol = Protocol("synth", decoder.default_num_inference_steps, decoder.default_guidance_scale,
                        decoder.resolution, images_per_prompt=1)
    clip = priors["text"].clip
    lines = [f"## Decoded images (synth decoder, {protocol.num_inference_steps} DDIM steps, guidance "
             f"{protocol.guidance_scale}; analytic scorer: share of noun phrases realised)", ""]
    table = []
    for suite in suites:
        items = suite.items("val")[:per_category]
        rows, _ = evaluate(priors, decoder, suite, scorers, protocol, run_dir, items=items,
                           text_encoders={clip.embedding_space: clip}, progress=progress)
        images = np.stack([np.asarray(Image.open(run_dir / r["image_path"])) for r in rows])
        titles = [f"{r['prior']}: {r['prompt']} → {r['score']:.1f}" for r in rows]
        save_image_grid(run_dir / f"decoded-{suite.name}.png", images, titles, columns=len(items))
        for prior in priors:
            scores = [r["score"] for r in rows if r["prior"] == prior]
            table.append([suite.name, prior, len(scores), f"{sum(scores) / len(scores):.3f}"])
        lines += [f"![{suite.name}](decoded-{suite.name}.png)", ""]
    lines += [tabulate(table, headers=["suite", "prior", "images", "analytic score"], tablefmt="github"), "",
              "Rows: oracle (the item's own render embedding), text (the caption's CLIP text embedding), "
              "none (the mean image embedding). Few images: a picture, not a measurement.", ""]
    return lines
