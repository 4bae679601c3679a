"""Measure how fast the world samples and renders training pairs.

python -m evalkit.world.speed            # 50,000 pairs, all categories
python -m evalkit.world.speed --n 2000
"""

from __future__ import annotations

import argparse
import time

from evalkit.world.attributes import CATEGORIES
from evalkit.world.dataset import sample_pairs
from evalkit.world.renderer import render, warm_sprites
from evalkit.world.splits import world_splits


def measure(n: int = 50_000, seed: int = 0) -> dict[str, float]:
    """Seconds to build the splits (first use), to sample ``n`` scenes and to render them."""
    start = time.perf_counter()
    for category in CATEGORIES:
        world_splits(category)
    warm_sprites()
    splits_s = time.perf_counter() - start
    start = time.perf_counter()
    _, scenes = sample_pairs("all", n, seed)
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    render(scenes)
    render_s = time.perf_counter() - start
    return {
        "n": n,
        "splits_s": splits_s,
        "sample_s": sample_s,
        "render_s": render_s,
        "total_s": sample_s + render_s,
        "images_per_s": n / (sample_s + render_s),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="pairs to sample and render")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    r = measure(args.n, args.seed)
    print(
        f"{r['n']} pairs: sample {r['sample_s']:.1f} s + render {r['render_s']:.1f} s = {r['total_s']:.1f} s "
        f"({r['images_per_s']:,.0f} images/s, one process); splits built once in {r['splits_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
