"""P6: batched scoring ÷ scoring each image's questions one by one (target ≥ 5×), for the embedded binding
scorer (the B-VQA-style default) and the analytic scorer, on the same world renders.

For the binding scorer it also prints the ceiling of that ratio on this machine: the one-question-at-a-time
time per image ÷ the least time any batched implementation could take — the CNN's FLOPs per image (counted by
``torch.utils.flop_counter``) at the float32 matmul peak measured in the same run:

    python -m evalkit.bootstrap python benchmarks/speed/batched_scoring.py [--images 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from evalkit.contracts import Batch
    from evalkit.scorers.analytic import AnalyticScorer
    from evalkit.scorers.binding import BindingScorer
    from evalkit.world import render, sample_pairs
    from evalkit.world.models.tensors import images_to_tensor

    captions, scenes = sample_pairs("all", args.images, seed=3, split="val")
    images = images_to_tensor(render(scenes))
    batch = Batch.from_prompts(captions, seeds=[42] * len(captions))
    print(f"{args.images} val renders, {torch.get_num_threads()} thread(s)")
    for scorer in (BindingScorer(), AnalyticScorer()):
        start = time.perf_counter()
        batched = scorer.score(images, batch)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        single = []
        for k, item in enumerate(batch.items):  # one call per image and per question
            questions = []
            for phrase in item.prompt.split(" and "):
                one = Batch([type(item)(phrase, item.category, item.split, item.item_id, (phrase,))], [42])
                questions += scorer.score(images[k : k + 1], one)[0]["questions"]
            single.append(questions)
        single_s = time.perf_counter() - start
        same = all(
            abs(a["p"] - b["p"]) < 1e-4 for row, qs in zip(batched, single) for a, b in zip(row["questions"], qs)
        )
        print(
            f"  {scorer.name:>8}: batched {args.images / batched_s:8.0f} img/s, one question at a time "
            f"{args.images / single_s:6.0f} img/s, ratio {single_s / batched_s:5.1f}x, same answers: {same}"
        )
        if isinstance(scorer, BindingScorer):
            from torch.utils.flop_counter import FlopCounterMode

            from peak import matmul_peak  # benchmarks/speed/peak.py (this script's folder is on sys.path)

            with FlopCounterMode(display=False) as counter:
                scorer.score(images, batch)
            flops = counter.get_total_flops() / args.images
            peak = matmul_peak()
            print(
                f"  {'':>8}  {flops / 1e6:.1f} MFLOP per image; batched {flops * args.images / batched_s / 1e9:.0f} "
                f"GFLOP/s of a {peak / 1e9:.0f} GFLOP/s matmul peak; ceiling of the ratio here "
                f"{(single_s / args.images) / (flops / peak):.1f}x"
            )


if __name__ == "__main__":
    main()
