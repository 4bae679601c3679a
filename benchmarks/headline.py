"""The headline results: a preset run of every shipped prior, timed, kept in ``results/headline/<name>/``.

Runs ``evalkit run --preset paper`` (or the given prompt/seed counts) on the embedded default, then
keeps what a reader needs without every image: ``results.json``, ``samples.jsonl.gz`` (every per-image
row, compressed), ``report.md`` / ``report.html`` with the grids and the parameter plot, and the
images the report shows (the lowest-scored ones). ``evalkit report results/headline/<name>`` renders
it again. The wall time on this machine is printed and stored in ``timing.json``.

    python -m evalkit.bootstrap python benchmarks/headline.py --name paper            # 4 × 300 prompts × 10 seeds
    python -m evalkit.bootstrap python benchmarks/headline.py --name mid --limit 50 --images-per-prompt 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def keep(run_dir: Path, dest: Path) -> None:
    from evalkit.report.run_report import prior_order, report_images, write_report
    from evalkit.harness.runs import load_run

    run = load_run(run_dir)
    dest.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(run_dir / "results.json", dest / "results.json")
    (dest / "samples.jsonl.gz").write_bytes(gzip.compress((run_dir / "samples.jsonl").read_bytes(), mtime=0))
    for path in report_images(run.samples, prior_order(run.results.get("priors", {}), run.results["rows"])):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / path, dest / path)
    write_report([dest], dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="folder under results/headline/")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--limit", type=int, help="prompts per suite (default: the preset's)")
    parser.add_argument("--images-per-prompt", type=int, help="seeds per prompt (default: the preset's)")
    parser.add_argument("--scorers", default="binding,analytic")
    parser.add_argument("--out", default="evalkit-runs")
    parser.add_argument(
        "--cache-dir", help="work cache to use (a fresh folder measures a cold run; default: the user's cache)"
    )
    args = parser.parse_args()

    import torch

    from evalkit.harness.presets import PRESETS
    from evalkit.harness.runner import RunConfig, run

    dest = REPO / "results" / "headline" / args.name
    if dest.exists():
        raise SystemExit(f"{dest} exists; headline results are never overwritten (remove it or pick another --name)")
    fields = {
        **PRESETS[args.preset],
        "scorers": args.scorers.split(","),
        "out": args.out,
        "tag": f"headline-{args.name}",
    }
    if args.cache_dir:
        fields["cache_dir"] = args.cache_dir
    if args.limit:
        fields["limit"] = args.limit
    if args.images_per_prompt:
        fields["images_per_prompt"] = args.images_per_prompt
    config = RunConfig(**fields)
    start = time.perf_counter()
    run_dir = run(config)
    wall = time.perf_counter() - start
    keep(run_dir, dest)
    results = json.loads((run_dir / "results.json").read_text())
    timing = {
        "wall_time_s": round(wall, 1),
        "images": results["images"],
        "timings_s": results["timings_s"],
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "cache": results["cache"],
        "command": "python benchmarks/headline.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("out", "cache_dir")
        ),
    }
    (dest / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(
        f"{results['images']} images in {wall / 60:.1f} min ({results['images'] / wall:.1f} images/s); kept in {dest}"
    )


if __name__ == "__main__":
    main()
