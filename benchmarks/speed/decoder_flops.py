"""P8: the synth decoder's achieved FLOP/s ÷ a matmul peak measured on the same machine in the same run,
for each sampling dtype, and the bfloat16 ÷ float32 decoding speed.

FLOPs of one decoding (all DDIM steps, both CFG branches) are counted by `torch.utils.flop_counter`; the
peak is the best of a few `torch.mm` of 2048×2048 matrices in the dtype the UNet computes in. The same
weights decode the same embeddings and seeds under both sampling dtypes (`SynthDecoderConfig.sampling_dtype`;
the decoder's own is marked), and the script prints how far the two sets of images are apart:

    python -m evalkit.bootstrap python benchmarks/speed/decoder_flops.py [--batch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--decoder-dir", help="decoder weights (default: the shipped decoder)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from torch.utils.flop_counter import FlopCounterMode

    from peak import matmul_peak  # benchmarks/speed/peak.py (this script's folder is on sys.path)

    from evalkit.contracts import Batch, Protocol
    from evalkit.decoders.synth import SynthDecoder

    own = SynthDecoder.from_pretrained(args.decoder_dir)
    batch = Batch.from_prompts([""] * args.batch, list(range(args.batch)))
    embeds = torch.randn(args.batch, own.embedding_dim, generator=torch.Generator().manual_seed(0))
    rows, images = {}, {}
    for name, dtype in DTYPES.items():
        decoder = SynthDecoder.from_pretrained(args.decoder_dir, sampling_dtype=name)
        protocol = Protocol("synth", decoder.default_num_inference_steps, decoder.default_guidance_scale, 32, 1)
        with torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                images[name] = decoder.decode(embeds, batch, protocol)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                decoder.decode(embeds, batch, protocol)
                times.append(time.perf_counter() - start)
            peak = matmul_peak(dtype=dtype)
        flops = counter.get_total_flops()
        rows[name] = (flops / args.batch / 1e9, args.batch / min(times), flops / min(times) / 1e9, peak / 1e9)
    print(
        f"synth decoder ({decoder.num_parameters():,} parameters), batch {args.batch}, "
        f"{protocol.num_inference_steps} steps, guidance {protocol.guidance_scale}, {torch.get_num_threads()} thread(s)"
    )
    print("| sampling dtype | GFLOP per image | images/s | achieved GFLOP/s | matmul peak GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (gflop, ips, achieved, peak) in rows.items():
        mark = " (the decoder's own)" if name == own.compute_dtype else ""
        print(
            f"| {name}{mark} | {gflop:.2f} | {ips:.1f} | {achieved:.0f} | {peak:.0f} | {100 * achieved / peak:.1f} % |"
        )
    diff = (images["bfloat16"] - images["float32"]).abs() * 255
    print(
        f"bfloat16 ÷ float32 images/s: {rows['bfloat16'][1] / rows['float32'][1]:.2f}×; "
        f"images differ by {diff.mean():.2f} / 255 on average (max {diff.max():.0f})"
    )


if __name__ == "__main__":
    main()
