"""``RunConfig``: everything ``evalkit run`` needs, one field per CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunConfig:
    """Everything ``evalkit run`` needs; each field is one CLI flag."""

    priors: list[str] = field(default_factory=lambda: ["oracle"])  # prior names
    decoder: str = "synth"  # decoder name
    decoder_path: str | None = None  # decoder weights folder (default: its shipped weights or environment variable)
    suites: list[str] = field(default_factory=lambda: ["synth-color"])  # suite names
    scorers: list[str] = field(default_factory=list)  # scorer names (empty: the suites' default scorers)
    split: str = "val"  # train | dev | val
    images_per_prompt: int = 10  # seeds seed, seed+1, ...
    seed: int = 42  # image i of a prompt uses seed + i (T2I-CompBench)
    num_inference_steps: int | None = None  # decoder steps (default: the decoder's)
    guidance_scale: float | None = None  # decoder CFG scale (default: the decoder's)
    prior_num_inference_steps: int | None = None  # diffusion priors: sampling steps (default: the prior's)
    prior_guidance_scale: float | None = None  # diffusion priors: CFG scale (default: the prior's)
    batch_size: int = 16  # images per decoder call (16 measured fastest for the synth decoder on 2 CPU cores)
    limit: int | None = None  # first N prompts of each suite (None: all)
    out: str = "evalkit-runs"  # parent folder of run folders
    prior_paths: dict = field(default_factory=dict)  # prior name -> weights folder (instead of the shipped one)
    scorer_paths: dict = field(default_factory=dict)  # scorer name -> weights folder (e.g. a local BLIP-VQA)
    allow_pickle: bool = False  # accept pickle checkpoints in those folders (weights_only=True)
    tag: str = ""  # a label stored in every result row (e.g. a branch or experiment name)
    cache: bool = True  # reuse and store embeddings, images and scores in the work cache
    cache_dir: str | None = None  # default: <evalkit cache>/work
    random_init: str | None = None  # "real" | "tiny": random weights at that architecture, no files (speed runs)
    dtype: str | None = None  # one dtype for every stage, or "decoder=bfloat16,prior=float32" (None: the plugins' own)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | meta (auto: CUDA when present; per process its LOCAL_RANK GPU)
    resolution: int | None = None  # the decoder's output side (decoders with several; None: its default)
    offload: bool = False  # real decoders: model CPU offload (each component on the GPU only while it runs)
    attention: str | None = None  # real decoders: "sdpa" | "eager" attention processors (None: as loaded)
    vae_chunk_size: int | None = None  # real decoders: at most this many latents per VAE / MoVQ decode
    plugins: list[str] = field(default_factory=list)  # "[NAME=]module:Class" registered for this run
    prompts_dir: str | None = None  # local copy of third-party prompt files (T2I-CompBench suites)
    prompt_files: list[str] = field(default_factory=list)  # your own prompt lists, one suite each
    category: str | None = None  # the binding category of the prompt_files' prompts
    negative: str | None = None  # decoders with a guidance negative: "empty-prompt" | "zero-image" (None: the prior's)
