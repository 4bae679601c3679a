"""``evalkit demo``: the main job on the embedded default, at the stage the stack has reached.

It always renders each synthetic suite's first val items next to their attribute-swapped
counterparts, and, when the world's CLIP weights are present, runs the embedding-level
evaluation of the calibration priors (oracle, text, none) with the headroom check, then the main
job — ``evalkit run --preset demo`` (every shipped prior through the synth decoder, scored) — with its
HTML report. Everything lands in a new run folder with a ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.harness.runs import new_run_dir

from evalkit.suites.synth import SYNTH_SUITES as SUITES


def run_demo(
    out: str | Path, per_category: int = 8, num_seeds: int = 2, calibration: bool = True, progress: bool = True
) -> Path:
    from evalkit.world.models.clip import SHIPPED_DIR
    from evalkit.suites import load_suite
    from evalkit.report.grid import save_grid

    run_dir = new_run_dir(out, "demo")
    lines = ["# evalkit demo", "", f"Run folder: `{run_dir}`", "", "## The synthetic suites (val)", ""]
    for name in SUITES:
        suite = load_suite(name)
        items = suite.items("val")
        shown = [i for i in items if i.seen][: per_category - per_category // 4] + [i for i in items if not i.seen][
            : per_category // 4
        ]
        scenes = [suite.ground_truth(i, 42) for i in shown] + [suite.swapped_ground_truth(i, 42) for i in shown]
        titles = [f"{'seen' if i.seen else 'unseen'}: {i.prompt}" for i in shown] + [
            f"swapped: {i.swapped_prompt}" for i in shown
        ]
        save_grid(run_dir / f"{name}.png", scenes, titles, columns=len(shown))
        seen = sum(1 for i in items if i.seen)
        lines += [
            f"### {name} — version `{suite.version('val')}`, {len(items)} prompts "
            f"({seen} seen, {len(items) - seen} unseen)",
            "",
            "Top row: renders of val prompts (seed 42); bottom row: the attribute-swapped prompt, same seed.",
            "",
            f"![{name}]({name}.png)",
            "",
            "| item | prompt | noun phrases | swapped |",
            "|---|---|---|---|",
        ]
        lines += [f"| {i.item_id} | {i.prompt} | {' · '.join(i.noun_phrases)} | {i.swapped_prompt} |" for i in shown]
        lines.append("")
    if not calibration:
        pass
    elif (SHIPPED_DIR / "config.json").is_file():
        from evalkit.eval_prior import eval_priors, headroom, render_report

        rows, summary = eval_priors(
            ["oracle", "text", "none"], list(SUITES), "val", tuple(range(42, 42 + num_seeds)), progress=progress
        )
        report = render_report(summary, headroom(rows)).replace("# Embedding-level evaluation", "")
        lines += [f"## Calibration priors at the embedding level ({num_seeds} seeds per prompt)", report]
    else:
        lines += [
            "## Calibration priors",
            "",
            f"Skipped: the world's CLIP weights are not at {SHIPPED_DIR} (train them with `evalkit train-world clip`).",
        ]
    from evalkit.decoders.synth import SHIPPED_DIR as DECODER_DIR

    if calibration and (DECODER_DIR / "config.json").is_file():
        lines += main_job_section(run_dir, progress)
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    return run_dir


def main_job_section(run_dir: Path, progress: bool) -> list[str]:
    """``evalkit run --preset demo`` into ``run_dir/run/``: every prior through the synth decoder, scored."""
    from evalkit.harness.presets import PRESETS
    from evalkit.report.run_report import summary_markdown
    from evalkit.harness.runner import RunConfig, run

    config = RunConfig(**{**PRESETS["demo"], "out": str(run_dir / "run")})
    job = run(config, progress=progress)
    relative = job.relative_to(run_dir)
    return [
        "## The main job: `evalkit run --preset demo`",
        "",
        f"{len(config.priors)} priors × {len(config.suites)} suites × {config.limit} val prompts × "
        f"{config.images_per_prompt} seeds through the synth decoder, scored by {' and '.join(config.scorers)}. "
        f"Full report with image grids, paired comparisons and the worst images: [{relative}/report.html]"
        f"({relative}/report.html) ([markdown]({relative}/report.md)).",
        "",
        summary_markdown([job]).replace("## ", "### "),
        "",
    ]
