"""GPU mode: images/s of the real-size random Karlo and Kandinsky 2.2 stacks, fp32 vs bf16/fp16, SDPA, channels_last, compile.

Side by side in one process, for each stack (``--stack karlo,kandinsky22``): the decoder is built with random
weights at ``--size real`` (karlo-v1-alpha: CLIP text tower, text_proj, 64×64 decoder UNet, two super-resolution
UNets to 256×256; Kandinsky 2.2: UNet 1.25 B + MoVQ, 512×512) and decodes one batch of ``--batch-size`` images
(classifier-free guidance at each decoder's default scale) in a ladder of variants — by default ``fp32``,
``bf16``, ``bf16+sdpa``, ``bf16+sdpa+cl`` (``bf16+sdpa+cl+compile`` with ``--compile``), ``fp16+sdpa+cl`` on CUDA;
any list with ``--variants`` (the first is the baseline of the ratios):

- ``fp32``: float32 with the *classic* attention processors (``AttnProcessor``, and ``AttnAddedKVProcessor`` for
  the added-KV attention of the SimpleCrossAttn UNet blocks; CLIP text tower ``eager``) — the baseline. diffusers
  itself builds the models with the SDPA processors, so the baseline sets the classic ones explicitly;
- ``bf16`` / ``fp16``: the whole stack converted to that dtype, classic processors;
- ``+sdpa``: ``AttnProcessor2_0`` / ``AttnAddedKVProcessor2_0`` (``torch.nn.functional.scaled_dot_product_attention``),
  set with ``set_attn_processor`` (per ``Attention`` module for the MoVQ, which lacks that method; CLIP text
  tower ``sdpa``);
- ``+cl``: UNets (and the MoVQ) in ``torch.channels_last`` memory format;
- ``+compile``: ``torch.compile`` of the UNets (in place, ``nn.Module.compile``, ``--compile-mode``); the
  compilation happens in the warm-up (its time is the "warm-up s" column).

Every variant is rebuilt from the same seed (identical weights) and dropped afterwards, so no dtype, processor,
memory format or compiled graph leaks into the next; on CUDA the allocator cache and dynamo's caches are cleared
between variants and the peak memory (``torch.cuda.max_memory_allocated``, reset after the build) is reported.
Each variant decodes ``--warmup`` batches untimed, then ``--repeats`` timed batches (``torch.cuda.synchronize``
around each); images/s are over the mean. ``mean |Δ|`` compares a variant's images with the baseline's (pixels in
[0, 1]; random weights, so it only shows that a variant computes the same function up to rounding).

The ECLIPSE prior at the paper's size (10 layers, width 512, 77 text tokens, output as wide as the decoder's
embedding: 768-d for Karlo, 1280-d for Kandinsky) is timed on the same batch in float32, as evalkit runs it; its
embeddings feed the decoder, and its share of the time is given against every variant (target ≤ 1 %).

``--steps`` (default 10) is fewer decoder steps than the decoders' defaults (Karlo 25 + 7 super-resolution steps,
Kandinsky 50) to keep a GPU run short: images/s are at these steps, not the protocol's. Without a CUDA device
``--device cuda`` prints one "skipped" line and exits 0. ``--size tiny --device cpu`` runs the same code path on the
tiny stacks (a code-path check, not a measurement):

    python -m evalkit.bootstrap python benchmarks/speed/gpu.py [--stack karlo,kandinsky22] [--batch-size 8]
        [--steps 10] [--repeats 3] [--compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

STACKS = ("karlo", "kandinsky22")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLAGS = ("sdpa", "cl", "compile")
PROMPTS = ["a red cube on top of a blue sphere", "a striped cat next to a wooden chair",
           "two green apples and a yellow banana", "a small dog under a large umbrella"]
PRIOR_TOKENS = 77


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: str
    sdpa: bool
    channels_last: bool
    compile: bool

    @classmethod
    def parse(cls, name: str) -> "Variant":
        dtype, *flags = name.strip().split("+")
        if dtype not in DTYPES:
            raise ValueError(f"variant {name!r}: starts with one of {', '.join(DTYPES)}")
        unknown = [f for f in flags if f not in FLAGS]
        if unknown or len(set(flags)) != len(flags):
            raise ValueError(f"variant {name!r}: flags are {', '.join(FLAGS)}, each at most once")
        return cls(name.strip(), dtype, "sdpa" in flags, "cl" in flags, "compile" in flags)


def default_variants(stack: str, device: torch.device, compile_: bool) -> tuple[list[str], str]:
    """``(variant names, note)``: fp32 baseline, then bf16 with SDPA and channels_last added one at a time
    (+ compile), and fp16 on CUDA."""
    names = ["fp32", "bf16", "bf16+sdpa", "bf16+sdpa+cl"]
    if compile_:
        names.append("bf16+sdpa+cl+compile")
    if device.type == "cuda":  # fp16 is a GPU format; CPU kernels for it are slow or missing
        names.append("fp16+sdpa+cl")
    return names, ""


# ---------------------------------------------------------------------- machine


def machine(device: torch.device) -> dict:
    import diffusers
    import transformers

    info = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": str(device),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        cpu = platform.processor() or ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        info.update(cpu=cpu or "unknown CPU", cpu_count=os.cpu_count(), threads=torch.get_num_threads())
    return info


def describe(info: dict) -> str:
    if "gpu" in info:
        head = (f"{info['gpu']} ({info['gpu_memory_gib']} GiB, sm {info['capability']}), CUDA {info['cuda']}, "
                f"cuDNN {info['cudnn']}")
    else:
        head = f"{info['cpu']} ({info['cpu_count']} cores), {info['threads']} thread(s), no GPU used"
    return (f"{head}; torch {info['torch']}, diffusers {info['diffusers']}, transformers {info['transformers']}; "
            f"fp32 matmul precision {info['float32_matmul_precision']}")


# ---------------------------------------------------------------------- stacks and variants


def build(stack: str, size: str, device: torch.device, dtype: torch.dtype, seed: int):
    """The random-init decoder (identical weights for a given seed), on ``device`` in ``dtype``."""
    if stack == "karlo":
        from evalkit.decoders.karlo import KarloDecoder

        return KarloDecoder.random_init(size=size, super_res=True, device=device, dtype=dtype, seed=seed)
    from evalkit.decoders.kandinsky import Kandinsky22Decoder

    decoder = Kandinsky22Decoder.random_init(size=size, device=device, dtype=dtype, seed=seed)
    return decoder.to(device)  # the negative-embedding buffer too


def unets(decoder) -> list[torch.nn.Module]:
    names = ("decoder", "super_res_first", "super_res_last") if decoder.name == "karlo" else ("unet",)
    return [getattr(decoder, n) for n in names if getattr(decoder, n, None) is not None]


def conv_nets(decoder) -> list[torch.nn.Module]:
    return unets(decoder) + ([decoder.movq] if decoder.name == "kandinsky22" else [])


def _processor(current, sdpa: bool):
    from diffusers.models.attention_processor import (AttnAddedKVProcessor, AttnAddedKVProcessor2_0, AttnProcessor,
                                                      AttnProcessor2_0)

    if isinstance(current, (AttnAddedKVProcessor, AttnAddedKVProcessor2_0)):
        return AttnAddedKVProcessor2_0() if sdpa else AttnAddedKVProcessor()
    if isinstance(current, (AttnProcessor, AttnProcessor2_0)):
        return AttnProcessor2_0() if sdpa else AttnProcessor()
    raise TypeError(f"no classic/SDPA pair known for attention processor {type(current).__name__}")


def attention_summary(decoder) -> str:
    """The attention implementations of the stack, e.g. ``AttnAddedKVProcessor2_0 ×4, CLIP text sdpa``."""
    from diffusers.models.attention_processor import Attention

    counts = Counter(type(m.processor).__name__ for m in decoder.modules() if isinstance(m, Attention))
    parts = [f"{name} ×{n}" for name, n in sorted(counts.items())]
    text = getattr(decoder, "text_encoder", None)
    if text is not None:
        parts.append(f"CLIP text {text.config._attn_implementation}")
    return ", ".join(parts)


def set_attention(decoder, sdpa: bool) -> None:
    """Classic processors (``sdpa=False``) or their SDPA counterparts on every attention layer of the stack."""
    from diffusers.models.attention_processor import Attention

    for _, component in decoder.named_children():
        if hasattr(component, "set_attn_processor"):  # diffusers UNets
            component.set_attn_processor({name: _processor(p, sdpa) for name, p in component.attn_processors.items()})
        elif hasattr(component, "set_attn_implementation"):  # transformers' CLIP text tower
            component.set_attn_implementation("sdpa" if sdpa else "eager")
        else:  # the MoVQ (no set_attn_processor): each Attention module
            for module in component.modules():
                if isinstance(module, Attention):
                    module.set_processor(_processor(module.processor, sdpa))


def apply_variant(decoder, variant: Variant, compile_mode: str) -> None:
    set_attention(decoder, variant.sdpa)
    if variant.channels_last:
        for net in conv_nets(decoder):
            net.to(memory_format=torch.channels_last)
    if variant.compile:
        for net in unets(decoder):
            net.compile(mode=compile_mode)


# ---------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device, compiled: bool = False) -> None:
    """Drop what a variant left behind: Python garbage, dynamo's compiled graphs, the CUDA allocator cache."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn, device: torch.device, warmup: int, repeats: int):
    """``(warm-up seconds, [seconds per repeat], last output)``; synchronised on CUDA."""
    synchronize(device)
    start = time.perf_counter()
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return warm, times, out


def time_prior(embedding_dim: int, batch, device: torch.device, warmup: int, repeats: int, seed: int) -> dict:
    """The ECLIPSE paper-size prior on this batch, float32 (as evalkit runs it); returns timings and embeddings."""
    from evalkit.contracts import per_image_randn
    from evalkit.priors.eclipse import EclipsePrior
    from evalkit.priors.sizes import size_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EclipsePrior.build_model(size_config("eclipse", "paper", embedding_dim, PRIOR_TOKENS)).eval()
        n = len(batch)
        text_embeds = torch.randn(n, embedding_dim)  # stand-ins for the CLIP text encodings of the batch
        text_hidden = torch.randn(n, PRIOR_TOKENS, embedding_dim)
    model = model.to(device)
    text_embeds, text_hidden = text_embeds.to(device), text_hidden.to(device)
    mask = torch.ones(n, PRIOR_TOKENS, dtype=torch.bool, device=device)

    def predict():  # EclipsePrior.sample, with its per-seed noise moved to the device
        noise = per_image_randn(batch.seeds, (embedding_dim,)).to(device)
        return model(noise, text_embeds, text_hidden, mask).float()

    with torch.inference_mode():
        _, times, embeds = timed(predict, device, warmup, repeats)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    return {"seconds_per_batch": statistics.mean(times), "times": times, "parameters": parameters,
            "embedding_dim": embedding_dim, "tokens": PRIOR_TOKENS, "dtype": "fp32", "embeds": embeds}


def run_stack(stack: str, variants: list[Variant], args, device: torch.device) -> dict:
    from evalkit.contracts import Batch, Protocol

    probe = build(stack, args.size, torch.device("meta"), torch.float32, args.seed)  # settings only, no memory
    as_built = attention_summary(probe)
    parameters = probe.num_parameters()
    embedding_dim, resolution = probe.embedding_dim, probe.resolution
    steps = args.steps or probe.default_num_inference_steps
    guidance = probe.default_guidance_scale
    super_res_steps = (args.super_res_steps or probe.super_res_num_inference_steps) if stack == "karlo" else None
    del probe

    n = args.batch_size
    batch = Batch.from_prompts([PROMPTS[i % len(PROMPTS)] for i in range(n)], seeds=list(range(n)))
    protocol = Protocol(stack, steps, guidance, resolution, images_per_prompt=1)
    prior = time_prior(embedding_dim, batch, device, args.warmup, args.repeats, args.seed)
    embeds = prior.pop("embeds")
    release(device)

    rows, baseline_images = [], None
    for variant in variants:
        row = {"variant": variant.name, "dtype": variant.dtype, "sdpa": variant.sdpa,
               "channels_last": variant.channels_last, "compile": variant.compile}
        decoder = None
        try:
            decoder = build(stack, args.size, device, DTYPES[variant.dtype], args.seed)
            decoder.max_batch = n  # the whole batch in one UNet call
            if super_res_steps is not None:
                decoder.super_res_num_inference_steps = super_res_steps
            apply_variant(decoder, variant, args.compile_mode)
            row["attention"] = attention_summary(decoder)
            if device.type == "cuda":
                synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            warm, times, images = timed(lambda: decoder.decode(embeds, batch, protocol), device, args.warmup,
                                        args.repeats)
            row.update(warmup_seconds=warm, times=times, seconds_per_batch=statistics.mean(times),
                       images_per_s=n / statistics.mean(times))
            if device.type == "cuda":
                row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
            images = images.detach().float().cpu()
            if baseline_images is None:
                baseline_images = images
            row["mean_abs_diff_vs_baseline"] = float((images - baseline_images).abs().mean())
            row["prior_share"] = prior["seconds_per_batch"] / row["seconds_per_batch"]
        except Exception as error:  # noqa: BLE001 - one failing variant must not lose the others' numbers
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        finally:
            del decoder
            release(device, compiled=variant.compile)
        rows.append(row)
    base = next((r for r in rows if "images_per_s" in r), None)
    for row in rows:
        if base is not None and "images_per_s" in row:
            row["ratio_to_baseline"] = row["images_per_s"] / base["images_per_s"]
    return {"stack": stack, "size": args.size, "parameters": parameters, "resolution": resolution,
            "embedding_dim": embedding_dim, "steps": steps, "super_res_steps": super_res_steps,
            "guidance_scale": guidance, "batch_size": n, "as_built_attention": as_built,
            "baseline": (base or rows[0])["variant"], "prior": prior, "variants": rows}


# ---------------------------------------------------------------------- report


def table(result: dict, cuda: bool) -> str:
    base = result["baseline"]
    head = ["variant", "dtype", "attention", "channels_last", "compile", "warm-up s", "s / batch", "images/s",
            f"ratio to {base}"]
    head += ["peak memory"] if cuda else []
    head += ["prior share", f"mean abs Δ vs {base}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["variants"]:
        cells = [row["variant"], row["dtype"], "SDPA" if row["sdpa"] else "classic",
                 "yes" if row["channels_last"] else "no", "yes" if row["compile"] else "no"]
        if "error" in row:
            cells += ["failed: " + row["error"].replace("|", "/")] + [""] * (len(head) - len(cells) - 1)
        else:
            cells += [f"{row['warmup_seconds']:.2f}", f"{row['seconds_per_batch']:.3f}", f"{row['images_per_s']:.2f}",
                      f"**{row['ratio_to_baseline']:.2f}×**"]
            cells += [f"{row['peak_memory_bytes'] / 2 ** 30:.1f} GiB"] if cuda else []
            cells += [f"{100 * row['prior_share']:.2f} %", f"{row['mean_abs_diff_vs_baseline']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[dict], info: dict, args, cuda: bool) -> str:
    out = [f"GPU-mode speed benchmark on {describe(info)}",
           f"size {args.size}, batch {args.batch_size} images, warm-up {args.warmup}, {args.repeats} timed repeat(s) "
           f"(mean); every variant rebuilt from seed {args.seed} and dropped after"]
    if args.size == "tiny":
        out.append("tiny stacks: a code-path check, not a measurement")
    for result in results:
        stack, prior = result["stack"], result["prior"]
        steps = f"{result['steps']} decoder steps"
        if result["super_res_steps"] is not None:
            steps += f" + {result['super_res_steps']} super-resolution steps"
        default = "25 + 7" if stack == "karlo" else "50"
        out += ["", f"### {stack} ({result['size']}: {result['parameters'] / 1e6:,.1f} M parameters, "
                    f"{result['resolution']}×{result['resolution']}, guidance {result['guidance_scale']})",
                f"{steps} (default {default}: fewer steps to keep the run short: images/s are at these steps)",
                f"attention as built by diffusers: {result['as_built_attention']}"]
        out += [f"note: {result['note']}"] if result["note"] else []
        out += ["", table(result, cuda), ""]
        ok = [r for r in result["variants"] if "prior_share" in r]
        line = (f"ECLIPSE prior (paper size, {prior['parameters'] / 1e6:.1f} M parameters, {prior['embedding_dim']}-d, "
                f"{prior['tokens']} tokens, fp32): {1000 * prior['seconds_per_batch']:.2f} ms per batch of "
                f"{result['batch_size']}")
        if ok:
            fastest = min(ok, key=lambda r: r["seconds_per_batch"])
            line += (f" = {100 * ok[0]['prior_share']:.2f} % of the {ok[0]['variant']} decoder's time, "
                     f"{100 * fastest['prior_share']:.2f} % of the fastest ({fastest['variant']}); target ≤ 1 %")
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--stack", default=",".join(STACKS), help="comma-separated: karlo, kandinsky22")
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="decoder steps (0: the decoder's default)")
    parser.add_argument("--super-res-steps", type=int, default=0, help="Karlo super-resolution steps (0: default 7)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated, e.g. fp32,fp32+sdpa,bf16+sdpa+cl (default: the docstring's ladder); "
                             "the first is the baseline of the ratios")
    parser.add_argument("--compile", action="store_true", help="add bf16+sdpa+cl+compile to the default ladder")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)

    stacks = [s.strip() for s in args.stack.split(",") if s.strip()]
    unknown = [s for s in stacks if s not in STACKS]
    if unknown or not stacks:
        parser.error(f"--stack: choose from {', '.join(STACKS)} (got {args.stack!r})")
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch-size and --repeats must be ≥ 1, --warmup ≥ 0")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        reason = f"torch.cuda.is_available() is False; torch {torch.__version__}, built for CUDA {torch.version.cuda}"
        print(f"skipped: no CUDA device ({reason})")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    plans = {}
    try:
        for stack in stacks:
            if args.variants:
                names, note = args.variants.split(","), ""
            else:
                names, note = default_variants(stack, device, args.compile)
            plans[stack] = ([Variant.parse(v) for v in names], note)
    except ValueError as error:
        parser.error(str(error))
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # not the "cast with to()" warning of every half-precision build

    info = machine(device)
    results = []
    for stack in stacks:
        variants, note = plans[stack]
        results.append({**run_stack(stack, variants, args, device), "note": note})
    print(report(results, info, args, cuda))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"machine": info, "settings": settings, "stacks": results}, indent=2) + "\n")
    failed = [(r["stack"], v["variant"]) for r in results for v in r["variants"] if "error" in v]
    if failed:
        print(f"failed variants: {', '.join(f'{s}/{v}' for s, v in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
