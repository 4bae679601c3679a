"""P8: the synth decoder's achieved FLOP/s ÷ a matmul peak measured on the same machine in the same run.

FLOPs of one decoding (all DDIM steps, both CFG branches) are counted by `torch.utils.flop_counter`; the peak
is the best of a few float32 `torch.mm` of 2048×2048 matrices:

    python -m evalkit.bootstrap python benchmarks/speed/decoder_flops.py [--batch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from torch.utils.flop_counter import FlopCounterMode

    from peak import matmul_peak  # benchmarks/speed/peak.py (this script's folder is on sys.path)

    from evalkit.contracts import Batch, Protocol
    from evalkit.decoders.synth import SynthDecoder

    decoder = SynthDecoder.from_pretrained()
    protocol = Protocol("synth", decoder.default_num_inference_steps, decoder.default_guidance_scale, 32, 1)
    batch = Batch.from_prompts([""] * args.batch, list(range(args.batch)))
    embeds = torch.randn(args.batch, decoder.embedding_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            decoder.decode(embeds, batch, protocol)
        flops = counter.get_total_flops()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            decoder.decode(embeds, batch, protocol)
            times.append(time.perf_counter() - start)
        peak = matmul_peak()
    achieved = flops / min(times)
    print(f"synth decoder, batch {args.batch}, {protocol.num_inference_steps} steps, guidance {protocol.guidance_scale}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  {flops / args.batch / 1e9:.2f} GFLOP per image; {args.batch / min(times):.1f} images/s")
    print(f"  achieved {achieved / 1e9:.1f} GFLOP/s; matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"ratio {100 * achieved / peak:.1f} %")


if __name__ == "__main__":
    main()
