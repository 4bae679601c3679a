"""Retrain every shipped prior of the synthetic world (the recipes of docs/priors.md), in parallel lanes.

    python -m evalkit.bootstrap python benchmarks/priors/train_shipped.py --runs runs/priors [--lanes 2]
    python -m evalkit.bootstrap python benchmarks/priors/train_shipped.py --runs runs/priors --only eclipse:0

Each run is ``evalkit train-baseline ... --out RUNS/<name>-s<seed> --threads 1 --ship --overwrite``, so it
trains on the shipped world CLIP and replaces ``priors/<name>/seed-<k>/``. Runs go to ``--lanes`` worker
processes (one torch thread each: on a 2-core machine two lanes use both cores); the longest run starts
first. A run whose folder already holds ``final/`` is shipped again without training; one with a
checkpoint is resumed (``--resume``), so an interrupted retraining continues where it stopped. Each
run's output goes to ``RUNS/<name>-s<seed>.log``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: (shipped name, train-baseline flags, training seeds, minutes on one thread of the machine the table was made on)
RECIPES: tuple[tuple[str, tuple[str, ...], tuple[int, ...], float], ...] = (
    ("diffusion-xl", ("--prior", "diffusion", "--size", "xl"), (0,), 44.0),
    ("eclipse-large", ("--prior", "eclipse", "--size", "large"), (0,), 22.0),
    ("eclipse-hn", ("--prior", "eclipse", "--hard-negatives"), (0, 1, 2), 3.0),
    ("diffusion", ("--prior", "diffusion"), (0, 1, 2), 3.3),
    ("eclipse", ("--prior", "eclipse"), (0, 1, 2), 3.2),
    ("projection", ("--prior", "projection"), (0, 1, 2), 2.9),
)


def jobs(only: list[str] | None) -> list[tuple[str, tuple[str, ...], int, float]]:
    out = [(name, flags, seed, minutes) for name, flags, seeds, minutes in RECIPES for seed in seeds]
    if only:
        wanted = set(only)
        known = {f"{name}:{seed}" for name, _, seed, _ in out}
        unknown = sorted(wanted - known)
        if unknown:
            raise SystemExit(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        out = [job for job in out if f"{job[0]}:{job[2]}" in wanted]
    # seed 0 of every prior first (what a paper-preset run needs), longest first within each seed
    return sorted(out, key=lambda job: (job[2], -job[3]))


def command(runs: Path, name: str, flags: tuple[str, ...], seed: int) -> list[str]:
    out = runs / f"{name}-s{seed}"
    cmd = [sys.executable, "-m", "evalkit", "train-baseline", *flags, "--seed", str(seed), "--out", str(out)]
    cmd += ["--threads", "1", "--ship", "--overwrite"]
    if out.exists() and any(out.iterdir()):
        cmd.append("--resume")
    return cmd


def run_job(runs: Path, job) -> tuple[str, int]:
    name, flags, seed, _ = job
    if (runs / f"{name}-s{seed}" / "final").is_dir():
        from evalkit.train.priors import ship_prior

        print(f"{name} seed {seed}: trained before; shipped to {ship_prior(runs / f'{name}-s{seed}', overwrite=True)}")
        return f"{name}:{seed}", 0
    cmd = command(runs, name, flags, seed)
    log = runs / f"{name}-s{seed}.log"
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
    print(f"{name} seed {seed}: {'done' if code == 0 else f'FAILED (exit {code}, see {log})'}", flush=True)
    return f"{name}:{seed}", code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, type=Path, help="folder for the run folders and their logs")
    parser.add_argument("--lanes", type=int, default=2, help="runs side by side (one torch thread each)")
    parser.add_argument("--only", help="comma-separated name:seed, e.g. eclipse:0,projection:1")
    args = parser.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    todo = jobs(args.only.split(",") if args.only else None)
    with ThreadPoolExecutor(max_workers=max(1, args.lanes)) as pool:
        results = list(pool.map(lambda job: run_job(args.runs, job), todo))
    failed = [name for name, code in results if code != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
