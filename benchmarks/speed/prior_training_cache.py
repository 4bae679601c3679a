"""P5: prior training from the embedding cache ÷ encoding on the fly (target ≥ 5× samples/s).

Both candidates take the same optimizer steps on the same small ECLIPSE prior; the on-the-fly loop
samples its pairs, renders them and runs the frozen world CLIP on images and captions every step, as a
trainer without a cache would. Measured side by side in one process:

    python -m evalkit.bootstrap python benchmarks/speed/prior_training_cache.py [--steps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from evalkit.train.priors import Data, PriorTrainConfig, build_cache, build_model, clip_for, eclipse_loss
    from evalkit.world import sample_pairs
    from evalkit.world.models.tensors import render_tensor

    config = PriorTrainConfig(prior="eclipse", batch_size=args.batch_size)
    clip = clip_for(config)
    data = Data(build_cache(config, clip))  # built once (not timed: it is shared by every run on the same data)
    model = build_model(config, clip)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch):
        loss, _, _ = eclipse_loss(model, batch, torch.randn(len(batch["image"]), clip.embedding_dim), config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def cached(i):
        idx = torch.randperm(len(data.splits["train"][0]), generator=torch.Generator().manual_seed(i))[
            : args.batch_size
        ]
        step(data.batch("train", idx))

    def on_the_fly(i):
        captions, scenes = sample_pairs("all", args.batch_size, seed=10_000 + i, split="train")
        with torch.no_grad():
            image = clip.encode_image(render_tensor(scenes))
            enc = clip.encode_text(captions)
            swapped = clip.encode_text([s.swapped_caption for s in scenes]).text_embeds
        ids = {c: k for k, c in enumerate(captions)}
        step(
            {
                "image": image,
                "caption": torch.tensor([ids[c] for c in captions]),
                "text": enc.text_embeds,
                "hidden": enc.text_hidden,
                "mask": enc.attention_mask,
                "swapped_text": swapped,
            }
        )

    results = {}
    for name, fn in (("cache", cached), ("on the fly", on_the_fly)):
        fn(0)  # warm-up
        start = time.perf_counter()
        for i in range(1, args.steps + 1):
            fn(i)
        results[name] = args.steps * args.batch_size / (time.perf_counter() - start)
    print(f"prior training, batch {args.batch_size}, {args.steps} steps each, {torch.get_num_threads()} thread(s)")
    for name, rate in results.items():
        print(f"  {name:>10}: {rate:10,.0f} samples/s")
    print(f"  ratio cache / on the fly: {results['cache'] / results['on the fly']:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
