"""ECLIPSE inference (one forward pass) ÷ the diffusion prior's sampling (25 DDIM steps, CFG 4.0) at the same size.

Random-init models of the same architecture size (the time token is the only difference), the same
text encodings, measured side by side in one process; ``--size paper`` uses the paper's 33 M-parameter
configuration (768-d, 77 tokens):

    python -m evalkit.bootstrap python benchmarks/speed/prior_inference.py [--size small|paper] [--n 100]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--n", type=int, default=100, help="prompts per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from evalkit.contracts import TextEncoding
    from evalkit.priors.diffusion import DiffusionPrior
    from evalkit.priors.eclipse import EclipsePrior

    dim, tokens = (768, 77) if args.size == "paper" else (128, 20)
    torch.manual_seed(0)
    encoding = TextEncoding(
        "synth-clip",
        torch.randn(args.n, dim),
        torch.randn(args.n, tokens, dim),
        torch.ones(args.n, tokens, dtype=torch.bool),
    )
    empty = TextEncoding(
        "synth-clip", torch.randn(1, dim), torch.randn(1, tokens, dim), torch.ones(1, tokens, dtype=torch.bool)
    )
    priors = {
        "eclipse": EclipsePrior(model=EclipsePrior.build_model(EclipsePrior.size_config(args.size, dim, tokens))),
        "diffusion (25 steps, CFG 4)": DiffusionPrior(
            model=DiffusionPrior.build_model(DiffusionPrior.size_config(args.size, dim, tokens)), empty_encoding=empty
        ),
    }
    seeds = list(range(args.n))
    times = {}
    with torch.inference_mode():
        for name, prior in priors.items():
            prior.sample(encoding, seeds)  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeats):
                prior.sample(encoding, seeds)
            times[name] = (time.perf_counter() - start) / args.repeats
    print(
        f"prior inference, size {args.size} ({dim}-d, {tokens} tokens), {args.n} prompts, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for name, prior in priors.items():
        print(f"  {name:>28}: {times[name] * 1000:9.1f} ms per call ({prior.num_parameters():,} parameters)")
    d, e = times["diffusion (25 steps, CFG 4)"], times["eclipse"]
    print(f"  ratio diffusion / eclipse: {d / e:.0f}x")


if __name__ == "__main__":
    main()
