"""Real-data training throughput: `evalkit embed` images/s, and `train-baseline --data` samples/s with the text
encoded on the fly vs cached (`--cache-text`), at tiny size and at real size (random weights), measured side by
side in one run, then a projected wall time for CC3M and a 5 M LAION subset on 1 and 8 devices.

Every number comes from evalkit's own code path: `evalkit.embed.embed_dataset` on a webdataset of world renders
(JPEGs), and `evalkit.train.priors.train_prior` on the resulting embedding folder (the wall time of a run of 2k steps
minus that of k steps, so set-up and warm-up cancel). Real size: the Karlo space (CLIP ViT-L/14 image and text
towers, the paper-size ECLIPSE prior, 33.1 M) by default; `--space kandinsky22` for ViT-bigG/14 (needs ~16 GB of
memory).

    python -m evalkit.bootstrap python benchmarks/speed/real_data_training.py                 # CPU, tiny + real
    python -m evalkit.bootstrap python benchmarks/speed/real_data_training.py --device cuda   # GPU mode
    python -m evalkit.bootstrap python benchmarks/speed/real_data_training.py --sizes tiny     # seconds

`--device cuda` without CUDA prints `skipped: no CUDA device` and exits 0. The projection multiplies measured
per-sample costs: it assumes linear scaling over devices and the paper's 60,000 steps × 1,024 pairs, and is
labelled a projection, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

#: (vision config, text config) of the public towers, random weights
VIT_L14_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)
VIT_BIGG14_VISION = dict(
    hidden_size=1664,
    intermediate_size=8192,
    num_hidden_layers=48,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=1280,
    hidden_act="gelu",
)
#: datasets of the projection: pairs embedded once; training draws 60,000 × 1,024 samples whatever the size
DATASETS = {"CC3M": 3_300_000, "LAION 5M subset": 5_000_000}
PAPER_SAMPLES = 60_000 * 1024


def write_real_pipeline(root: Path, space: str) -> Path:
    """A prior-pipeline folder (image_encoder/, image_processor/, text_encoder/, tokenizer/) at the public sizes."""
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from evalkit.text_encoders import (
        BIGG_TEXT_ENCODER_CONFIG,
        REAL_TEXT_ENCODER_CONFIG,
        clip_tokenizer,
        save_clip_tokenizer,
    )

    vision, text = (
        (VIT_L14_VISION, REAL_TEXT_ENCODER_CONFIG)
        if space == "karlo"
        else (VIT_BIGG14_VISION, BIGG_TEXT_ENCODER_CONFIG)
    )
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**vision)).save_pretrained(root / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        root / "image_processor"
    )
    CLIPTextModelWithProjection(CLIPTextConfig(**text)).save_pretrained(root / "text_encoder")
    save_clip_tokenizer(clip_tokenizer(None, 77), root / "tokenizer")
    return root


def embed_rate(spec: str, encoders: Path, out: Path, n: int, device: str, batch_size: int) -> float:
    from evalkit.embed import embed_dataset

    start = time.perf_counter()
    embed_dataset(spec, encoders, out, batch_size=batch_size, device=device, progress=False)
    return n / (time.perf_counter() - start)


def train_rate(
    emb: Path, encoders: Path, out: Path, size: str, space: str, batch_size: int, steps: int, cache_text: bool
) -> float:
    """Samples/s of `train_prior`'s steps: the wall time of a ``2 × steps`` run minus that of a ``steps`` run (the
    set-up, the first steps' warm-up and the final save cancel), for ``steps × batch_size`` samples."""
    from evalkit.train.priors import PriorTrainConfig, train_prior

    times = []
    for n in (steps, 2 * steps):
        config = PriorTrainConfig(
            prior="eclipse",
            data=str(emb),
            text_encoder=str(encoders),
            space=space,
            size=size,
            steps=n,
            batch_size=batch_size,
            warmup_steps=1,
            eval_every=10**9,
            checkpoint_every=10**9,
            val_fraction=0.05,
            val_pairs=8,
            cache_text=cache_text,
        )
        start = time.perf_counter()
        train_prior(out / f"steps-{n}", config, progress=False)
        times.append(time.perf_counter() - start)
    return steps * batch_size / max(times[1] - times[0], 1e-6)


def measure(size: str, space: str, device: str, root: Path, args) -> dict:
    from evalkit.data.tiny import write_tiny_prior_pipeline, write_world_dataset

    n = args.images[size]
    encoders = (
        write_tiny_prior_pipeline(root / "encoders", embedding_dim=16)
        if size == "tiny"
        else write_real_pipeline(root / "encoders", space)
    )
    data = write_world_dataset(root / "data", n=n, shards=2, image_px=64 if size == "tiny" else 256, formats=("wds",))
    images_per_s = embed_rate(data["shards"], encoders, root / "emb", n, device, args.embed_batch)
    prior_size = "tiny" if size == "tiny" else "paper"
    space_arg = "kandinsky22" if size == "tiny" else space
    steps = args.steps or (20 if size == "tiny" else 3)
    rates = {
        mode: train_rate(
            root / "emb",
            encoders,
            root / f"train-{mode}",
            prior_size,
            space_arg,
            args.batch_size,
            steps,
            cache_text=(mode == "cached"),
        )
        for mode in ("on the fly", "cached")
    }
    return {
        "size": size,
        "space": space_arg,
        "images": n,
        "embed_images_per_s": images_per_s,
        "train_samples_per_s": rates,
    }


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"


def projection(row: dict, device_name: str) -> list[str]:
    lines = [
        f"\nProjected wall time (a projection from the per-sample costs measured above on {device_name}, "
        "assuming linear scaling over devices; training = 60,000 steps × 1,024 pairs, text on the fly):\n",
        "| dataset | pairs | embed, 1 device | embed, 8 devices | train, 1 device | train, 8 devices |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    embed_s = 1 / row["embed_images_per_s"]
    train_s = 1 / row["train_samples_per_s"]["on the fly"]
    for name, pairs in DATASETS.items():
        lines.append(
            f"| {name} | {pairs:,} | {hours(pairs * embed_s)} | {hours(pairs * embed_s / 8)} | "
            f"{hours(PAPER_SAMPLES * train_s)} | {hours(PAPER_SAMPLES * train_s / 8)} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--sizes", default="tiny,real", help="tiny,real")
    parser.add_argument("--space", default="karlo", choices=["karlo", "kandinsky22"], help="the real-size space")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per timed run (default 20 tiny, 3 real; each mode runs this many and twice as many)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default 32 on CPU, 1024 on GPU)")
    parser.add_argument("--embed-batch", type=int, default=None, help="embed batch (default 16 on CPU, 256 on GPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("skipped: no CUDA device (GPU mode needs one; run without --device cuda for the CPU numbers)")
        return 0
    args.batch_size = args.batch_size or (1024 if gpu else 32)
    args.embed_batch = args.embed_batch or (256 if gpu else 16)
    args.images = {"tiny": max(64, 2 * args.batch_size), "real": (4096 if gpu else 48) + 2 * args.batch_size}
    device_name = (
        torch.cuda.get_device_name()
        if gpu
        else f"{platform.processor() or platform.machine()} CPU ({torch.get_num_threads()} threads)"
    )
    rows = []
    for size in args.sizes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"evalkit-bench-{size}-") as tmp:
            rows.append(measure(size, args.space, args.device, Path(tmp), args))
    print(f"device: {device_name}; torch {torch.__version__}; python {sys.version.split()[0]}\n")
    print(
        "| size | space | embed images/s | train samples/s, text on the fly | train samples/s, cached text "
        "| cached ÷ on the fly |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        fly, cached = row["train_samples_per_s"]["on the fly"], row["train_samples_per_s"]["cached"]
        print(
            f"| {row['size']} | {row['space']} | {row['embed_images_per_s']:.1f} | {fly:.1f} | {cached:.1f} | "
            f"{cached / fly:.2f}× |"
        )
    real = [r for r in rows if r["size"] == "real"]
    if real:
        print("\n".join(projection(real[0], device_name)))
    if args.json:
        args.json.write_text(json.dumps({"device": device_name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
