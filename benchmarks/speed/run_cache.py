"""A warm re-run of ``evalkit run`` ÷ the cold run (target ≤ 5 %), and the smoke protocol's wall time.

Both runs use the same command (the same ``RunConfig``) in one process with a fresh work cache: the
cold run computes every embedding, image and score, the warm run finds them all in the cache. Times
are for the whole ``run()`` call (loading the models, writing the run folder and its report):

    python -m evalkit.bootstrap python benchmarks/speed/run_cache.py [--limit 20] [--images-per-prompt 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", default="oracle,eclipse,none")
    parser.add_argument("--suites", default="synth-color,synth-shape,synth-texture")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from evalkit.harness.runner import RunConfig, run
    from evalkit.harness.presets import run_smoke

    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(
            priors=args.priors.split(","),
            suites=args.suites.split(","),
            limit=args.limit,
            images_per_prompt=args.images_per_prompt,
            out=str(Path(tmp) / "runs"),
            cache_dir=str(Path(tmp) / "cache"),
        )
        times = {}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            run(config, progress=False)
            times[label] = time.perf_counter() - start
        start = time.perf_counter()
        run_smoke(Path(tmp) / "smoke", progress=False)
        smoke = time.perf_counter() - start
    images = len(config.priors) * len(config.suites) * args.limit * args.images_per_prompt
    print(
        f"evalkit run, {images} images ({args.priors} × {args.suites} × {args.limit} prompts × "
        f"{args.images_per_prompt} seeds), {torch.get_num_threads()} thread(s)"
    )
    print(
        f"  cold: {times['cold']:.1f} s   warm: {times['warm']:.2f} s   "
        f"warm / cold: {100 * times['warm'] / times['cold']:.1f} %"
    )
    from evalkit.harness.presets import SMOKE

    smoke_images = len(SMOKE["priors"]) * len(SMOKE["suites"]) * SMOKE["limit"] * SMOKE["images_per_prompt"]
    print(f"  smoke protocol (uncached, {smoke_images} images): {smoke:.1f} s")


if __name__ == "__main__":
    main()
