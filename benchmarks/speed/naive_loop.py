"""P1 + P2: evalkit's batched run ÷ the naive per-prompt loop a user would write, with the same components;
and the ECLIPSE prior's share of a run's time (with the diffusion prior beside it).

Naive loop: for each prompt, encode it, run the prior for its 10 seeds, decode those 10 images, score them.
evalkit: `runner.evaluate` (prompts encoded once, batches of `RunConfig().batch_size` images across prompts and
seeds, no cache).
Both use the shipped CLIP, prior, synth decoder (10 DDIM steps, guidance 2.0) and binding scorer, and the
images must agree (uint8, at most a one-level difference in a few pixels from float batch effects):

    python -m evalkit.bootstrap python benchmarks/speed/naive_loop.py [--prompts 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--images-per-prompt", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from evalkit.contracts import Batch, Protocol
    from evalkit.harness.run_config import RunConfig
    from evalkit.decoders.synth import SynthDecoder
    from evalkit.priors import load_prior
    from evalkit.report.grid import to_uint8
    from evalkit.harness.runner import evaluate
    from evalkit.scorers.binding import BindingScorer
    from evalkit.suites import load_suite

    decoder, scorer = SynthDecoder.from_pretrained(), BindingScorer()
    prior = load_prior("eclipse")
    clip = prior.text_encoder()
    suite = load_suite("synth-color")
    items = suite.items("val")[: args.prompts]
    protocol = Protocol(
        "synth",
        decoder.default_num_inference_steps,
        decoder.default_guidance_scale,
        32,
        images_per_prompt=args.images_per_prompt,
    )
    seeds = protocol.seeds()

    with torch.inference_mode():
        start = time.perf_counter()
        naive, prior_s, decoder_s = [], 0.0, 0.0
        for item in items:
            batch = Batch([item] * len(seeds), seeds, scenes=[suite.ground_truth(item, s) for s in seeds])
            batch.text[clip.embedding_space] = clip.encode_text([item.prompt] * len(seeds))
            t0 = time.perf_counter()
            embeds = prior.predict(batch)
            t1 = time.perf_counter()
            images = decoder.decode(embeds, batch, protocol)
            t2 = time.perf_counter()
            scorer.score(images, batch)
            naive.append(to_uint8(images))
            prior_s, decoder_s = prior_s + t1 - t0, decoder_s + t2 - t1
        naive_s = time.perf_counter() - start

    start = time.perf_counter()
    rows, timings = evaluate(
        {"eclipse": prior},
        decoder,
        suite,
        {"binding": scorer},
        protocol,
        None,
        items=items,
        batch_size=RunConfig().batch_size,
        text_encoders={clip.embedding_space: clip},
        progress=False,
    )
    ours_s = time.perf_counter() - start

    # the same images: re-decode evalkit's batches to compare pixels
    with torch.inference_mode():
        pairs = [(i, s) for i in items for s in seeds]
        ours = []
        step = RunConfig().batch_size
        for k in range(0, len(pairs), step):
            chunk = pairs[k : k + step]
            batch = Batch([p[0] for p in chunk], [p[1] for p in chunk])
            batch.text[clip.embedding_space] = clip.encode_text(batch.prompts)
            ours.append(to_uint8(decoder.decode(prior.predict(batch), batch, protocol)))
    diff = np.abs(np.concatenate(ours).astype(int) - np.concatenate(naive).astype(int))

    diffusion = load_prior("diffusion")
    with torch.inference_mode():
        batch = Batch([p[0] for p in pairs[:64]], [p[1] for p in pairs[:64]])
        batch.text[clip.embedding_space] = clip.encode_text(batch.prompts)
        t0 = time.perf_counter()
        prior.predict(batch)
        t1 = time.perf_counter()
        diffusion.predict(batch)
        t2 = time.perf_counter()
        decoder.decode(prior.predict(batch), batch, protocol)
        t3 = time.perf_counter()

    n = len(pairs)
    print(f"{n} images ({len(items)} prompts × {len(seeds)} seeds), {torch.get_num_threads()} thread(s)")
    print(
        f"  P1 naive loop: {naive_s:.1f} s ({n / naive_s:.1f} img/s)   evalkit: {ours_s:.1f} s ({n / ours_s:.1f} img/s)"
        f"   ratio: {naive_s / ours_s:.2f}x"
    )
    print(f"     same images: max |difference| {diff.max()} levels, {np.mean(diff > 0) * 100:.3f} % of values differ")
    print(
        f"  P2 eclipse prior / decoder, 64 images: {(t1 - t0) * 1000:.1f} ms / {(t3 - t2) * 1000:.0f} ms = "
        f"{100 * (t1 - t0) / (t3 - t2):.2f} %   (diffusion prior: {(t2 - t1) * 1000:.0f} ms = "
        f"{100 * (t2 - t1) / (t3 - t2):.1f} %)"
    )


if __name__ == "__main__":
    main()
