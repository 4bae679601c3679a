"""GPU mode: images/s of the real-size random Karlo and Kandinsky 2.2 stacks through ``evalkit run``'s own code path.

Side by side in one process, for each stack (``--stack karlo,kandinsky22``), every variant is **one call of**
``evalkit.harness.runner.run(RunConfig(...), progress=False)``: the same resolution, placement, text encoding, prior,
decoder, scoring and run-folder writing as ``evalkit run``. Each run builds its plugins with ``random_init``
(``--size real``: karlo-v1-alpha's decoder stack — CLIP text tower, text_proj, 64×64 decoder UNet, two
super-resolution UNets to 256×256 — with the ECLIPSE_Karlo_Prior architecture and its CLIP ViT-L/14 text
tower; Kandinsky 2.2's UNet 1.25 B + MoVQ at 512×512 with the ECLIPSE_KandinskyV22_Prior architecture and its
ViT-bigG/14 text tower; ``--size tiny``: their tiny builds). Prompts: the first ``batches × --batch-size`` val
prompts of the synthetic suite ``synth-color``, one image each, scored by the ``dummy`` scorer; no work cache
(``random_init`` runs never use it). Variants, by default ``fp32``, ``bf16``, ``bf16+sdpa``, ``bf16+sdpa+cl``
(``bf16+sdpa+cl+compile`` with ``--compile``), ``fp16+sdpa``, ``fp16+sdpa+offload``; any list with ``--variants``
(the first is the baseline of the ratios and of ``mean |Δ|``). How each part of a variant reaches the run:

- **run flags** (``RunConfig`` fields, i.e. ``evalkit run`` options):
  ``fp32`` / ``bf16`` / ``fp16`` → ``dtype="decoder=float32|bfloat16|float16"`` (the decoder stage only; the prior,
  its text encoder and the scorer keep float32, as ``evalkit run`` runs them by default);
  no ``+sdpa`` → ``attention="eager"`` (the classic ``AttnProcessor`` / ``AttnAddedKVProcessor``, CLIP text tower
  ``eager``: the baseline — diffusers itself builds the SDPA processors, so the baseline asks for eager);
  ``+sdpa`` → ``attention="sdpa"`` (``AttnProcessor2_0`` / ``AttnAddedKVProcessor2_0``);
  ``+offload`` → ``offload=True`` (model CPU offload).
- **inject** (``run(config, inject=fn)``: ``fn(priors, decoder, scorers)`` on the loaded plugins, before placement
  and before any work; there is no run flag for these):
  ``+cl`` → the UNets and the MoVQ in ``torch.channels_last`` (placement's ``.to(device, dtype)`` keeps the memory
  format; the run checks it at the first decoder call and reports ``channels_last kept``);
  ``+compile`` → ``nn.Module.compile`` of the decoder's UNets, in place (``--compile-mode``, ``--compile-backend``);
  the compilation happens in the warm-up batch (its time is in the "warm-up s" column).
  The same inject also puts **timing probes** on every variant, baseline included: ``decoder.decode`` and
  ``prior.predict`` are wrapped to time each call (``torch.cuda.synchronize`` around it) — the calls the runner makes
  anyway, the runner's own stage timings (``results.json`` ``timings_s``) are reported beside them. Nothing else
  of the plugins is changed (the decoders' ``max_batch`` — Karlo 8, Kandinsky 16 images per UNet call, so a larger
  ``--batch-size`` is decoded in chunks of that size — and Karlo's 7 super-resolution steps: as ``evalkit run`` has
  them; it has no flag for either).

Timing: a run decodes ``--warmup`` + ``--repeats`` batches of ``--batch-size`` images (``limit`` = that many
prompts); the first ``--warmup`` decoder calls are the warm-up, s / batch and images/s are over the mean of the
others — the decoder stage at ``--steps`` steps. The prior's share is the mean of its last ``--repeats`` calls
(the timed batches' own) over the decoder's s / batch (target ≤ 1 %; the prior's CLIP text encoding is the run's
``text`` stage, listed per variant with the other stages). Peak GPU memory: ``reset_peak_memory_stats``
before and ``max_memory_allocated`` after each run (the whole run: text encoder, prior, decoder). Between variants
the run's plugins are dropped (checked with weak references: ``plugins_released``), the CUDA allocator cache emptied
and (after ``+compile``) dynamo reset.
``random_init`` seeds every build identically (seed 0), so the weights are the same in every variant: the report
checks it (the runs' ``protocol.decoder_version`` and prior ``version`` fingerprints of the weights as built, before
any cast, must all agree). ``mean |Δ|`` compares each run's PNGs under ``images/`` with the baseline's (same file
names, same image seeds; pixels in [0, 1], 8-bit; random weights, so it only shows that a variant computes the
same function up to rounding).

``--steps`` (default 10) is fewer decoder steps than the decoders' defaults (Karlo 25 + 7 super-resolution steps,
Kandinsky 50) to keep a GPU run short: images/s are at these steps, not the protocol's. Without a CUDA device
``--device cuda`` prints one "skipped" line and exits 0. ``--size tiny --device cpu`` runs the same code path on the
tiny stacks (a code-path check, not a measurement):

    python -m evalkit.bootstrap python benchmarks/speed/gpu.py [--stack karlo,kandinsky22] [--batch-size 8]
        [--steps 10] [--repeats 3] [--compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import weakref
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

STACKS = ("karlo", "kandinsky22")
PRIORS = {"karlo": "eclipse-karlo", "kandinsky22": "eclipse-kandinsky22"}  # the ECLIPSE prior of each decoder
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
FLAGS = ("sdpa", "cl", "compile", "offload")
SUITE = "synth-color"
SUITE_PROMPTS = 300  # its val split


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: str
    sdpa: bool
    channels_last: bool
    compile: bool
    offload: bool = False

    @classmethod
    def parse(cls, name: str) -> "Variant":
        dtype, *flags = name.strip().split("+")
        if dtype not in DTYPES:
            raise ValueError(f"variant {name!r}: starts with one of {', '.join(DTYPES)}")
        unknown = [f for f in flags if f not in FLAGS]
        if unknown or len(set(flags)) != len(flags):
            raise ValueError(f"variant {name!r}: flags are {', '.join(FLAGS)}, each at most once")
        return cls(name.strip(), dtype, "sdpa" in flags, "cl" in flags, "compile" in flags, "offload" in flags)

    def run_flags(self) -> dict:
        """The ``RunConfig`` fields of this variant (``evalkit run`` options)."""
        flags = {"dtype": f"decoder={DTYPES[self.dtype]}", "attention": "sdpa" if self.sdpa else "eager"}
        if self.offload:
            flags["offload"] = True
        return flags

    def injected(self) -> list[str]:
        """What ``inject`` changes besides the timing probes."""
        return [part for part, on in (("channels_last", self.channels_last), ("compile", self.compile)) if on]


def default_variants(compile_: bool) -> list[str]:
    """fp32 baseline, then bf16 with SDPA and channels_last added one at a time (+ compile), fp16 with SDPA, and with
    model CPU offload; the same ladder on every device (the tiny CPU mode checks every code path)."""
    names = ["fp32", "bf16", "bf16+sdpa", "bf16+sdpa+cl"]
    if compile_:
        names.append("bf16+sdpa+cl+compile")
    return names + ["fp16+sdpa", "fp16+sdpa+offload"]


# ---------------------------------------------------------------------- machine


def machine(device: torch.device) -> dict:
    import diffusers
    import transformers

    info = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
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
        head = (
            f"{info['gpu']} ({info['gpu_memory_gib']} GiB, sm {info['capability']}), CUDA {info['cuda']}, "
            f"cuDNN {info['cudnn']}"
        )
    else:
        head = f"{info['cpu']} ({info['cpu_count']} cores), {info['threads']} thread(s), no GPU used"
    return (
        f"{head}; torch {info['torch']}, diffusers {info['diffusers']}, transformers {info['transformers']}; "
        f"fp32 matmul precision {info['float32_matmul_precision']}"
    )


# ---------------------------------------------------------------------- the run of one variant


def unets(decoder) -> list[torch.nn.Module]:
    names = ("decoder", "super_res_first", "super_res_last") if decoder.name == "karlo" else ("unet",)
    return [getattr(decoder, n) for n in names if getattr(decoder, n, None) is not None]


def conv_nets(decoder) -> list[torch.nn.Module]:
    return unets(decoder) + ([decoder.movq] if getattr(decoder, "movq", None) is not None else [])


def attention_summary(decoder) -> str:
    """The attention implementations of the stack, e.g. ``AttnAddedKVProcessor2_0 ×4, CLIP text sdpa``."""
    from diffusers.models.attention_processor import Attention

    counts = Counter(type(m.processor).__name__ for m in decoder.modules() if isinstance(m, Attention))
    parts = [f"{name} ×{n}" for name, n in sorted(counts.items())]
    text = getattr(decoder, "text_encoder", None)
    if text is not None:
        parts.append(f"CLIP text {text.config._attn_implementation}")
    return ", ".join(parts)


def channels_last_kept(decoder) -> bool:
    """Whether every 4-d weight of the UNets and the MoVQ is (still) in channels_last."""
    weights = [p for net in conv_nets(decoder) for p in net.parameters() if p.ndim == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Inject:
    """``run(config, inject=...)``: the variant's non-flag changes, and timing probes on ``decoder.decode`` and
    ``prior.predict``. Holds only what it measured, never the plugins (they are dropped when the run returns)."""

    def __init__(self, variant: Variant, device: torch.device, compile_mode: str, compile_backend: str):
        self.variant, self.device = variant, device
        self.compile_mode, self.compile_backend = compile_mode, compile_backend
        self.decoder_times: list[float] = []
        self.prior_calls: list[tuple[int, float]] = []  # (images, seconds): preflight, negative embedding, batches
        self.seen: dict = {}  # what the first decoder call found (after placement)
        self.refs: list = []  # weak references to the run's plugins: dead once the run's objects are dropped

    def __call__(self, priors: dict, decoder, scorers: dict) -> None:
        if self.variant.channels_last:
            for net in conv_nets(decoder):
                net.to(memory_format=torch.channels_last)
        if self.variant.compile:
            options = {"backend": self.compile_backend}
            if self.compile_backend == "inductor" and self.compile_mode != "default":
                options["mode"] = self.compile_mode
            for net in unets(decoder):
                net.compile(**options)
        self.seen["super_res_steps"] = (
            getattr(decoder, "super_res_num_inference_steps", None) if getattr(decoder, "super_res", False) else None
        )
        self.seen["max_batch"] = getattr(decoder, "max_batch", None)
        self.refs = [weakref.ref(p) for p in (decoder, *priors.values())]
        decode, probe = decoder.decode, self

        @functools.wraps(decode)
        def timed_decode(*args, **kwargs):
            if not probe.decoder_times:  # placed by now: what the run computes with
                probe.seen.update(attention=attention_summary(decoder), channels_last=channels_last_kept(decoder))
            synchronize(probe.device)
            start = time.perf_counter()
            out = decode(*args, **kwargs)
            synchronize(probe.device)
            probe.decoder_times.append(time.perf_counter() - start)
            return out

        decoder.decode = timed_decode
        for prior in priors.values():
            predict = prior.predict

            @functools.wraps(predict)
            def timed_predict(batch, _predict=predict):
                synchronize(probe.device)
                start = time.perf_counter()
                out = _predict(batch)
                synchronize(probe.device)
                probe.prior_calls.append((len(batch), time.perf_counter() - start))
                return out

            prior.predict = timed_predict


def release(device: torch.device, compiled: bool = False) -> None:
    """Drop what a variant left behind: Python garbage, dynamo's compiled graphs, the CUDA allocator cache."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def read_images(run_dir: Path) -> dict[str, "object"]:
    """``{relative path: float32 array in [0, 1]}`` of the run's PNGs under ``images/``."""
    import numpy as np
    from PIL import Image

    root = run_dir / "images"
    return {
        str(p.relative_to(root)): np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
        for p in sorted(root.rglob("*.png"))
    }


def mean_abs_diff(images: dict, baseline: dict) -> float:
    import numpy as np

    if sorted(images) != sorted(baseline):
        raise RuntimeError(f"the run's images ({len(images)}) are not the baseline's ({len(baseline)}): other names")
    return float(np.mean([np.abs(images[k] - baseline[k]).mean() for k in sorted(images)]))


def config_for(stack: str, variant: Variant, args, out: Path):
    from evalkit.harness.run_config import RunConfig

    batches = args.warmup + args.repeats
    return RunConfig(
        priors=[PRIORS[stack]],
        decoder=stack,
        suites=[SUITE],
        scorers=["dummy"],
        images_per_prompt=1,
        seed=args.seed,
        num_inference_steps=args.steps or None,
        batch_size=args.batch_size,
        limit=batches * args.batch_size,
        out=str(out),
        random_init=args.size,
        device=args.device,
        **variant.run_flags(),
    )


def run_command(config) -> str:
    """The ``evalkit run`` command line of a config's flags (what inject adds is not in it)."""
    parts = [
        "evalkit run",
        f"--prior {','.join(config.priors)}",
        f"--decoder {config.decoder}",
        f"--suite {','.join(config.suites)}",
        f"--scorer {','.join(config.scorers)}",
        f"--random-init {config.random_init}",
        f"--device {config.device}",
        f"--dtype {config.dtype}",
        f"--attention {config.attention}",
    ]
    parts += ["--offload"] if config.offload else []
    parts += [
        f"--batch-size {config.batch_size}",
        f"--limit {config.limit}",
        f"--images-per-prompt {config.images_per_prompt}",
        f"--seed {config.seed}",
    ]
    parts += [f"--num-inference-steps {config.num_inference_steps}"] if config.num_inference_steps else []
    return " ".join(parts)


def run_variant(stack: str, variant: Variant, args, device: torch.device, out: Path) -> tuple[dict, Path | None]:
    from evalkit.harness.runner import run

    config = config_for(stack, variant, args, out)
    row = {
        "variant": variant.name,
        "dtype": variant.dtype,
        "sdpa": variant.sdpa,
        "channels_last": variant.channels_last,
        "compile": variant.compile,
        "offload": variant.offload,
        "run_flags": variant.run_flags(),
        "inject": variant.injected(),
        "command": run_command(config),
    }
    probe = Inject(variant, device, args.compile_mode, args.compile_backend)
    run_dir = None
    try:
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        run_dir = run(config, progress=False, inject=probe)
        elapsed = time.perf_counter() - start
        if device.type == "cuda":
            synchronize(device)
            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        results = json.loads((run_dir / "results.json").read_text())
        label = next(iter(results["priors"]))
        timed = probe.decoder_times[args.warmup :]
        if len(probe.decoder_times) != args.warmup + args.repeats or not timed:
            raise RuntimeError(f"{len(probe.decoder_times)} decoder calls, expected {args.warmup + args.repeats}")
        prior_timed = [s for _, s in probe.prior_calls[-args.repeats :]]
        row.update(
            attention=probe.seen.get("attention", ""),
            channels_last_kept=probe.seen.get("channels_last"),
            max_batch=probe.seen.get("max_batch"),
            super_res_steps=probe.seen.get("super_res_steps"),
            decoder_times=probe.decoder_times,
            warmup_seconds=sum(probe.decoder_times[: args.warmup]),
            times=timed,
            seconds_per_batch=statistics.mean(timed),
            images_per_s=args.batch_size / statistics.mean(timed),
            prior_calls=probe.prior_calls,
            prior_seconds_per_batch=statistics.mean(prior_timed),
            timings_s=results["timings_s"],
            wall_time_s=results["wall_time_s"],
            run_seconds=elapsed,
            images=results["images"],
            placements=results["environment"].get("placements", {}),
            environment_device=results["environment"].get("device"),
            gpu=results["environment"].get("gpu"),
            decoder_version=results["protocol"]["decoder_version"],
            prior_version=results["priors"][label]["version"],
            protocol={
                k: results["protocol"][k]
                for k in ("num_inference_steps", "guidance_scale", "resolution", "dtype", "prior_dtype", "random_init")
            },
            decoder_parameters=results["priors"][label]["decoder_parameters"],
            prior_parameters=results["priors"][label]["trainable_parameters"],
            text_encoder_parameters=results["priors"][label]["text_encoder_parameters"],
        )
        row["prior_share"] = row["prior_seconds_per_batch"] / row["seconds_per_batch"]
        row["decoder_stage_vs_probes"] = results["timings_s"]["decoder"] / sum(probe.decoder_times)
        if args.out:
            row["run_dir"] = str(run_dir)
    except Exception as error:  # noqa: BLE001 - one failing variant must not lose the others' numbers
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
        run_dir = None
    finally:
        refs = probe.refs
        del probe
        release(device, compiled=variant.compile)
        row["plugins_released"] = bool(refs) and all(ref() is None for ref in refs)  # nothing kept for the next run
    return row, run_dir


def run_stack(stack: str, variants: list[Variant], args, device: torch.device, out: Path) -> dict:
    rows, baseline_images = [], None
    for variant in variants:
        row, run_dir = run_variant(stack, variant, args, device, out / stack / variant.name.replace("+", "_"))
        if run_dir is not None:
            try:
                images = read_images(run_dir)
                if baseline_images is None:
                    baseline_images = images
                row["mean_abs_diff_vs_baseline"] = mean_abs_diff(images, baseline_images)
            except Exception as error:  # noqa: BLE001
                row["error"] = f"comparing images: {type(error).__name__}: {error}"[:500]
        rows.append(row)
    ok = [r for r in rows if "images_per_s" in r]
    base = ok[0] if ok else None
    for row in ok:
        row["ratio_to_baseline"] = row["images_per_s"] / base["images_per_s"]
        row["same_weights_as_baseline"] = (row["decoder_version"], row["prior_version"]) == (
            base["decoder_version"],
            base["prior_version"],
        )
    first = base or {}
    protocol = first.get("protocol", {})
    return {
        "stack": stack,
        "prior": PRIORS[stack],
        "size": args.size,
        "suite": SUITE,
        "parameters": first.get("decoder_parameters"),
        "prior_parameters": first.get("prior_parameters"),
        "text_encoder_parameters": first.get("text_encoder_parameters"),
        "resolution": protocol.get("resolution"),
        "steps": protocol.get("num_inference_steps"),
        "super_res_steps": first.get("super_res_steps"),
        "guidance_scale": protocol.get("guidance_scale"),
        "max_batch": first.get("max_batch"),
        "batch_size": args.batch_size,
        "batches": args.warmup + args.repeats,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "baseline": (base or rows[0])["variant"],
        "weights_identical": all(r["same_weights_as_baseline"] for r in ok) if ok else None,
        "variants": rows,
    }


# ---------------------------------------------------------------------- report


def table(result: dict, cuda: bool) -> str:
    base = result["baseline"]
    head = [
        "variant",
        "run flags",
        "inject",
        "images/s",
        f"× vs {base}",
        "s / batch",
        "warm-up s",
        "peak GiB",
        "prior share",
        f"mean abs Δ vs {base}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["variants"]:
        flags = " ".join(f"{k}={v}" for k, v in row["run_flags"].items())
        cells = [row["variant"], flags, ", ".join(row["inject"]) or "–"]
        if "error" in row:
            cells += ["failed: " + row["error"].replace("|", "/")] + [""] * (len(head) - len(cells) - 1)
        else:
            peak = f"{row['peak_memory_bytes'] / 2**30:.1f}" if cuda else "n/a (CPU)"
            diff = row.get("mean_abs_diff_vs_baseline")
            cells += [
                f"{row['images_per_s']:.2f}",
                f"**{row['ratio_to_baseline']:.2f}×**",
                f"{row['seconds_per_batch']:.3f}",
                f"{row['warmup_seconds']:.2f}",
                peak,
                f"{100 * row['prior_share']:.2f} %",
                "–" if diff is None else f"{diff:.4f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def count(n: int) -> str:
    """``2_400_000_000`` → "2,400.0 M"; ``31_000`` → "31.0 k"."""
    return f"{n / 1e6:,.1f} M" if n >= 1e6 else f"{n / 1e3:,.1f} k"


def report(results: list[dict], info: dict, args, cuda: bool) -> str:
    out = [
        f"GPU-mode speed benchmark on {describe(info)}",
        f"each variant = one evalkit.harness.runner.run (random_init={args.size}, suite {SUITE}, scorer dummy, "
        "no cache): "
        f"{args.warmup} warm-up + {args.repeats} timed batch(es) of {args.batch_size} images (mean of the timed)",
    ]
    if args.size == "tiny":
        out.append("tiny stacks: a code-path check, not a measurement")
    for result in results:
        stack = result["stack"]
        if result["parameters"] is None:
            out += ["", f"### {stack}: every variant failed", "", table(result, cuda)]
            continue
        steps = f"{result['steps']} decoder steps"
        if result["super_res_steps"] is not None:
            steps += f" + {result['super_res_steps']} super-resolution steps"
        default = "25 + 7" if stack == "karlo" else "50"
        out += [
            "",
            f"### {stack} + {result['prior']} ({result['size']}: decoder {count(result['parameters'])}, "
            f"prior {count(result['prior_parameters'])} + text encoder "
            f"{count(result['text_encoder_parameters'])} parameters; {result['resolution']}×"
            f"{result['resolution']}, guidance {result['guidance_scale']}, max_batch {result['max_batch']})",
            f"{steps} (default {default}: fewer steps to keep the run short: images/s are at these steps)",
            "random weights identical in every variant (decoder_version and prior version fingerprints): "
            + {True: "yes", False: "**NO**", None: "unknown"}[result["weights_identical"]],
            "",
            table(result, cuda),
            "",
        ]
        for row in result["variants"]:
            if "error" in row:
                continue
            t = row["timings_s"]
            extra = (
                f"; channels_last kept after placement: {'yes' if row['channels_last_kept'] else '**no**'}"
                if row["channels_last"]
                else ""
            )
            extra += "" if row.get("plugins_released") else "; **its plugins were still alive after the run**"
            out.append(
                f"- {row['variant']}: {row['attention']}{extra}; run stages (all {result['batches']} batches, "
                f"warm-up included) text {t['text']:.3f} s, prior {t['prior']:.3f} s, decoder "
                f"{t['decoder']:.3f} s, scorer {t['scorer']:.3f} s, io {t['io']:.3f} s, wall "
                f"{row['wall_time_s']:.2f} s"
            )
        base = next((r for r in result["variants"] if "command" in r), None)
        if base:
            out.append(f"- baseline as a command: `{base['command']}`")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (RunConfig.device)")
    parser.add_argument("--stack", default=",".join(STACKS), help="comma-separated: karlo, kandinsky22")
    parser.add_argument("--size", choices=("real", "tiny"), default="real", help="RunConfig.random_init")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="decoder steps (0: the decoder's default)")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated, e.g. fp32,bf16+sdpa,fp16+sdpa+offload (default: the docstring's "
        "ladder); flags: sdpa, cl, compile, offload; the first is the baseline of the ratios",
    )
    parser.add_argument("--compile", action="store_true", help="add bf16+sdpa+cl+compile to the default ladder")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode (inductor backend)")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (eager: dynamo only, the tests' quick code-path check)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed decoder batches at the start of each run")
    parser.add_argument("--repeats", type=int, default=3, help="timed decoder batches of each run")
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="the runs' image seed (RunConfig.seed; the random weights are seeded by random_init itself)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the run folders here (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)

    stacks = [s.strip() for s in args.stack.split(",") if s.strip()]
    unknown = [s for s in stacks if s not in STACKS]
    if unknown or not stacks:
        parser.error(f"--stack: choose from {', '.join(STACKS)} (got {args.stack!r})")
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0 or args.steps < 0:
        parser.error("--batch-size and --repeats must be ≥ 1, --warmup and --steps ≥ 0")
    if (args.warmup + args.repeats) * args.batch_size > SUITE_PROMPTS:
        parser.error(
            f"--batch-size × (--warmup + --repeats) must be ≤ {SUITE_PROMPTS} (the {SUITE} val prompts, one image each)"
        )
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        reason = f"torch.cuda.is_available() is False; torch {torch.__version__}, built for CUDA {torch.version.cuda}"
        print(f"skipped: no CUDA device ({reason})")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        return 0
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        names = args.variants.split(",") if args.variants else default_variants(args.compile)
        variants = [Variant.parse(v) for v in names]
    except ValueError as error:
        parser.error(str(error))
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # not the "cast with to()" warning of every half-precision placement

    info = machine(device)
    with tempfile.TemporaryDirectory(prefix="evalkit-gpu-bench-") as scratch:
        out = args.out or Path(scratch)
        results = [run_stack(stack, variants, args, device, out) for stack in stacks]
    print(report(results, info, args, cuda))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        settings["variants"] = [asdict(v) for v in variants]
        args.json.write_text(json.dumps({"machine": info, "settings": settings, "stacks": results}, indent=2) + "\n")
    failed = [(r["stack"], v["variant"]) for r in results for v in r["variants"] if "error" in v]
    if failed:
        print(f"failed variants: {', '.join(f'{s}/{v}' for s, v in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
