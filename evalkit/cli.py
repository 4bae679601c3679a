"""The ``evalkit`` command line. Subcommands stay thin: they parse flags and call library functions.

Heavy imports (torch, diffusers) happen inside commands, so ``evalkit --help`` and ``evalkit ls``
stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from evalkit import __version__
from evalkit.checks import default_check_dir
from evalkit.errors import EvalkitError


#: the exit code of a command stopped by Ctrl-C (128 + SIGINT, the shell's convention)
INTERRUPTED_EXIT_CODE = 130


class EvalkitGroup(click.Group):
    """Turns :class:`EvalkitError` into a one-line message and exit code 2 (nothing written), and Ctrl-C
    into one line saying how to resume, with exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EvalkitError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo(
                "interrupted: finished work is kept (a run's in the work cache; training and embedding runs in "
                "their last checkpoint or finished units); run the same command again to resume (add --resume "
                "for train-baseline, train-world and embed)",
                err=True,
            )
            ctx.exit(INTERRUPTED_EXIT_CODE)


@click.group(cls=EvalkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="evalkit")
def cli():
    """evalkit: benchmark text-to-image priors on compositional binding (color, shape, texture)."""


@cli.command("ls")
@click.argument("kind", required=False, type=click.Choice(["priors", "decoders", "scorers", "suites"]))
def ls_command(kind):
    """List registered priors, decoders, scorers and suites (imports no torch)."""
    from evalkit.registry import REGISTRIES

    from evalkit.registry import weights_status

    kinds = [kind] if kind else list(REGISTRIES)
    for name in kinds:
        click.echo(f"{name}:")
        if name in ("priors", "decoders"):
            click.echo(f"  {'NAME':<22} {'SPACE':<17} {'DIM':>5}  {'WEIGHTS':<44} DESCRIPTION")
        for entry in REGISTRIES[name].entries():
            if name in ("priors", "decoders"):
                meta = entry.meta
                defaults = (
                    f"{meta['steps']} steps, CFG {meta['guidance']}, {meta['resolution']}; " if "steps" in meta else ""
                )
                click.echo(
                    f"  {entry.name:<22} {meta.get('space', '?'):<17} {str(meta.get('dim', '?')):>5}  "
                    f"{weights_status(entry):<44} {defaults}{entry.description}"
                )
            else:
                click.echo(f"  {entry.name:<24} {entry.description}")


@cli.group(cls=EvalkitGroup)
def suites():
    """Inspect suites and fetch third-party prompt files."""


@suites.command("show")
@click.argument("name")
@click.option("--split", default="val", show_default=True, help="train | dev | val")
@click.option("--prompts-dir", type=click.Path(file_okay=False), help="local copy of third-party prompt files")
@click.option("--limit", type=int, default=5, show_default=True, help="how many prompts to print")
def suites_show(name, split, prompts_dir, limit):
    """Print a suite's version, item counts and first prompts."""
    from evalkit.suites import load_suite

    suite = load_suite(name, prompts_dir=prompts_dir)
    items = suite.items(split)
    seen = sum(1 for i in items if i.seen is True)
    unseen = sum(1 for i in items if i.seen is False)
    click.echo(f"{name} [{split}] version {suite.version(split)}: {len(items)} prompts ({seen} seen, {unseen} unseen)")
    for item in items[:limit]:
        phrases = " | ".join(item.noun_phrases) if item.noun_phrases else "-"
        click.echo(f"  {item.item_id}: {item.prompt!r}  phrases: {phrases}  swapped: {item.swapped_prompt!r}")


@suites.command("fetch")
@click.argument("name", default="t2i-compbench")
@click.option(
    "--prompts-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="download into DIR (default: $EVALKIT_PROMPTS_DIR, else ~/.cache/evalkit/prompts/t2i-compbench/<commit>)",
)
@click.option("--force", is_flag=True, help="download again even when the files are present and verified")
@click.option("--base-url", default=None, help="a mirror of the pinned examples/dataset folder")
def suites_fetch(name, prompts_dir, force, base_url):
    """Download a benchmark's prompt files at the pinned commit and verify their sha256."""
    from evalkit.prompts_fetch import fetch_suite

    path = fetch_suite(name, dest=prompts_dir, base_url=base_url, force=force)
    click.echo(f"{name}: prompt files verified in {path}")


class TrainerGroup(EvalkitGroup):
    """Also a trainer's refusal to write into a folder holding another run: one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FileExistsError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(2)


@cli.group(cls=TrainerGroup)
def train_world():
    """Train the embedded stack of the synthetic world (clip, decoder, scorer)."""


def world_run_options(resume_help: str):
    """The options every ``train-world`` command shares: the run folder, resuming and stopping, shipping, threads."""
    shared = [
        click.option(
            "--out",
            required=True,
            type=click.Path(file_okay=False),
            help="run folder (refused if it holds another run)",
        ),
        click.option("--resume", is_flag=True, help=resume_help),
        click.option("--quick", is_flag=True, help="a seconds-long configuration with tiny models (tests)"),
        click.option("--stop-at", type=int, help="stop (with a checkpoint) at this step; resume later"),
        click.option("--ship", is_flag=True, help="copy the final weights (fp16) to the shipped folder"),
        click.option("--overwrite", is_flag=True, help="with --ship: replace the weights already shipped"),
        click.option("--threads", type=int, help="torch CPU threads"),
    ]

    def decorate(command):
        for option in reversed(shared):
            command = option(command)
        return command

    return decorate


def _finish_world_run(what: str, final: Path, ship_fn, out, ship: bool, overwrite: bool, stop_at) -> None:
    """Say where the run's weights are and, with ``--ship``, ship them (only a finished run is shipped)."""
    click.echo(f"{what} saved to {final}")
    if ship and final.name == "final":
        click.echo(f"shipped to {ship_fn(out, overwrite=overwrite)}")
    elif ship:
        click.echo(f"not shipped: the run stopped at step {stop_at}; finish it with --resume --ship")


@train_world.command("clip")
@world_run_options(resume_help="continue the run in --out from its last checkpoint")
@click.option("--steps", type=int, help="optimizer steps")
@click.option("--batch-size", type=int, help="pairs per step (each with its swapped twin)")
@click.option("--lr", type=float, help="peak learning rate")
@click.option("--num-pairs", type=int, help="rendered training pairs")
@click.option("--seed", type=int, help="training seed")
@click.option("--eval-every", type=int, help="steps between val evaluations")
@click.option("--checkpoint-every", type=int, help="steps between checkpoints")
@click.option("--aux-weight", type=float, help="weight of the auxiliary combination losses (0: pure contrastive)")
@click.option(
    "--hard-negatives/--no-hard-negatives", default=None, help="add each pair's attribute-swapped twin to the batch"
)
@click.option("--text-aux/--no-text-aux", default=None, help="auxiliary combination head on the text side too")
@click.option(
    "--multi-positive/--no-multi-positive",
    default=None,
    help="captions true of a render are not its negatives (the world knows which captions a scene satisfies)",
)
@click.option(
    "--order-blind/--no-order-blind",
    default=None,
    help="captions with the same words as a render's caption (its swapped twin) are not its negatives",
)
@click.option(
    "--init-from",
    type=click.Path(file_okay=False, exists=True),
    help="start from these CLIP weights (e.g. evalkit/world/weights/clip) with a fresh optimizer",
)
@click.option(
    "--grow-from",
    type=click.Path(file_okay=False, exists=True),
    help="start the current architecture from an older CLIP's weights (new channels and words start fresh)",
)
@click.option(
    "--text-lr-scale",
    type=float,
    help="learning-rate factor of the text transformer (not the token embeddings), e.g. 0.1 with --grow-from",
)
@click.option(
    "--freeze-image-tower/--no-freeze-image-tower",
    default=None,
    help="train the text tower only: image embeddings, and the decoder trained on them, stay valid",
)
def train_world_clip(out, resume, quick, stop_at, ship, overwrite, threads, **overrides):
    """Contrastive training of the world's CLIP, with attribute-swapped hard negatives."""
    from evalkit.world.models.clip import SHIPPED_DIR
    from evalkit.train.world_clip import CLIPTrainConfig, ship_clip, train_clip

    config = _train_config(
        CLIPTrainConfig,
        quick,
        threads,
        overrides,
        ship_to=SHIPPED_DIR if ship else None,
        overwrite=overwrite,
        resume_from=out if resume else None,
    )
    final = train_clip(out, config, resume=resume, stop_at=stop_at)
    _finish_world_run("trained CLIP", final, ship_clip, out, ship, overwrite, stop_at)


@train_world.command("decoder")
@world_run_options(resume_help="continue the run in --out from its last checkpoint (may raise --steps)")
@click.option(
    "--clip-dir", type=click.Path(file_okay=False), help="CLIP weights to condition on (default: the shipped CLIP)"
)
@click.option("--steps", type=int, help="optimizer steps")
@click.option("--batch-size", type=int, help="images per step")
@click.option("--lr", type=float, help="learning rate")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), help="after warm-up")
@click.option("--num-pairs", type=int, help="rendered training pairs")
@click.option("--seed", type=int, help="training seed")
@click.option(
    "--init-from",
    type=click.Path(file_okay=False, exists=True),
    help="start from these decoder weights (e.g. evalkit/world/weights/decoder) with a fresh optimizer",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(["no", "bf16"]),
    help="bf16: forward pass under torch.autocast (faster on CPUs with bf16 units; weights stay float32)",
)
@click.option(
    "--decoder-config",
    "decoder_config",
    help='architecture overrides of a new decoder as JSON, e.g. \'{"block_out_channels": [32, 64, 128]}\'',
)
def train_world_decoder(out, resume, quick, clip_dir, stop_at, ship, overwrite, threads, decoder_config, **overrides):
    """Train the embedding-conditioned pixel diffusion decoder on CLIP embeddings of world renders."""
    import json

    from evalkit.decoders.synth import SHIPPED_DIR
    from evalkit.train.world_decoder import DecoderTrainConfig, ship_decoder, train_decoder

    architecture = {}
    if decoder_config:
        try:
            architecture = json.loads(decoder_config)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="--decoder-config") from None
        if not isinstance(architecture, dict):
            raise click.BadParameter("a JSON object of SynthDecoderConfig fields", param_hint="--decoder-config")
    if architecture:
        overrides["decoder"] = architecture

    config = _train_config(
        DecoderTrainConfig,
        quick,
        threads,
        overrides,
        ship_to=SHIPPED_DIR if ship else None,
        overwrite=overwrite,
        resume_from=out if resume else None,
    )
    final = train_decoder(out, config, resume=resume, clip_dir=clip_dir, stop_at=stop_at)
    _finish_world_run("decoder", final, ship_decoder, out, ship, overwrite, stop_at)


@train_world.command("scorer")
@world_run_options(resume_help="continue the run in --out from its last checkpoint")
@click.option("--steps", type=int, help="optimizer steps")
@click.option("--batch-size", type=int, help="(image, question) pairs per step")
@click.option("--lr", type=float, help="peak learning rate")
@click.option("--num-scenes", type=int, help="rendered training scenes")
@click.option("--seed", type=int, help="training seed")
def train_world_scorer(out, resume, quick, stop_at, ship, overwrite, threads, **overrides):
    """Train the embedded binding scorer ("{noun phrase}?" → P(yes)) on world renders with hard negatives."""
    from evalkit.scorers.binding import SHIPPED_DIR
    from evalkit.train.world_scorer import ScorerTrainConfig, ship_scorer, train_scorer

    config = _train_config(
        ScorerTrainConfig,
        quick,
        threads,
        overrides,
        ship_to=SHIPPED_DIR if ship else None,
        overwrite=overwrite,
        resume_from=out if resume else None,
    )
    final = train_scorer(out, config, resume=resume, stop_at=stop_at)
    _finish_world_run("scorer", final, ship_scorer, out, ship, overwrite, stop_at)


def _train_config(
    config_cls,
    quick: bool,
    threads: int | None,
    overrides: dict,
    ship_to: Path | None = None,
    overwrite: bool = False,
    resume_from: str | None = None,
):
    """The trainer's config from its flags (with ``resume_from``: on top of that run's own settings); also refuses
    ``--ship`` onto shipped weights without ``--overwrite`` before training starts, rather than after an
    hours-long run."""
    import dataclasses

    import torch

    from evalkit.train.common import refuse_existing_weights, run_settings

    if ship_to is not None:
        refuse_existing_weights(ship_to, overwrite)
    if threads:
        torch.set_num_threads(threads)
    config = config_cls.quick() if quick else config_cls()
    if resume_from:
        config = run_settings(resume_from, config)
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


cli.add_command(train_world, "train-world")


@cli.command("embed")
@click.option(
    "--data",
    "data",
    required=True,
    help="webdataset shards (shards/*.tar, shards/{00000..00099}.tar) or a CSV/TSV/parquet/JSONL manifest "
    "(or a folder holding one)",
)
@click.option(
    "--image-encoder",
    "image_encoder",
    required=True,
    type=click.Path(),
    help="local folder: kandinsky-2-2-prior style (image_encoder/ + image_processor/), a "
    "CLIPVisionModelWithProjection folder, or a whole CLIPModel folder (openai/clip-vit-large-patch14)",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="new embedding folder (or the one to --resume)"
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="images per encoder forward pass")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader workers decoding images")
@click.option("--resume", is_flag=True, help="continue a killed run in --out (finished units are kept)")
@click.option(
    "--max-bad-fraction",
    type=float,
    default=0.01,
    show_default=True,
    help="fail (exit 2) when more than this share of records is broken",
)
@click.option(
    "--min-size", type=int, default=0, show_default=True, help="skip images with a side below this (0: keep all)"
)
@click.option(
    "--rows-per-shard", type=int, default=10_000, show_default=True, help="manifest rows per work unit / output file"
)
@click.option(
    "--image-column", help="manifest column of image paths (default: image, image_path, path, filepath, file_name)"
)
@click.option("--caption-column", help="manifest column of captions (default: caption, text, TEXT, prompt)")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    help="encoder compute precision (default: float16 on a GPU, float32 on the CPU); files are float16",
)
@click.option(
    "--allow-pickle", is_flag=True, help="load .bin/.pt encoder weights (pickle can run code: trusted files only)"
)
def embed_command(
    data,
    image_encoder,
    out,
    batch_size,
    num_workers,
    resume,
    max_bad_fraction,
    min_size,
    rows_per_shard,
    image_column,
    caption_column,
    device,
    dtype,
    allow_pickle,
):
    """Embed an image–caption dataset with a CLIP image encoder: the targets for training a prior on real data.

    Writes raw (not L2-normalised) fp16 image_embeds in clip-retrieval's folder layout (img_emb/, metadata/,
    plus per-unit stats/ and an embeddings.json manifest) that `evalkit.data.embeddings.EmbeddingFolder` reads.
    Broken records are skipped and counted. Several processes or GPUs:
    `torchrun --nproc-per-node N -m evalkit embed ...` (the files are the same as with one process).
    """
    from evalkit.distributed import world
    from evalkit.embed import embed_dataset, summary

    try:
        manifest = embed_dataset(
            data,
            image_encoder,
            out,
            batch_size=batch_size,
            num_workers=num_workers,
            resume=resume,
            max_bad_fraction=max_bad_fraction,
            min_size=min_size,
            rows_per_shard=rows_per_shard,
            device=device,
            dtype=dtype,
            image_column=image_column,
            caption_column=caption_column,
            allow_pickle=allow_pickle,
        )
    except KeyboardInterrupt:  # the group's message points at the work cache; here the units live in --out
        click.echo(
            f"interrupted: finished units are kept in {out}; add --resume to the same command to continue", err=True
        )
        click.get_current_context().exit(INTERRUPTED_EXIT_CODE)
    if world()[0] == 0:
        click.echo(summary(manifest))


@cli.command("train-baseline")
@click.option("--prior", "prior", required=True, help="eclipse | projection | diffusion")
@click.option(
    "--size",
    help="tiny | small | large | xl | paper (see evalkit/priors/sizes.py) [default: small on the "
    "synthetic world, paper with --data]",
)
@click.option("--out", type=click.Path(file_okay=False), help="run folder (refused if it holds another run)")
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    help="real image-text pairs: an `evalkit embed` folder (default: the synthetic world)",
)
@click.option(
    "--text-encoder",
    type=click.Path(file_okay=False),
    help="with --data: the frozen text encoder's folder (text_encoder/ + tokenizer/, e.g. kandinsky-2-2-prior)",
)
@click.option(
    "--space",
    help="with --data: the decoder the prior feeds (karlo | kandinsky22) when the embedding width is not 768 / 1280",
)
@click.option("--val-fraction", type=float, help="with --data: pairs held out for evaluation (default 0.01)")
@click.option(
    "--val-data", type=click.Path(file_okay=False), help="with --data: an `evalkit embed` folder to evaluate on"
)
@click.option("--val-pairs", type=int, help="held-out pairs evaluated (default 1,000)")
@click.option("--cache-text", is_flag=True, default=None, help="with --data: encode every caption once (small sets)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option(
    "--quick",
    is_flag=True,
    help="a seconds-long run: a tiny prior for a few steps on the synthetic world "
    "(its weights run with `evalkit run --prior-path`, but are not a trained prior)",
)
@click.option("--steps", type=int, help="optimizer steps [default: 2,000; 60,000 with --data]")
@click.option("--batch-size", type=int, help="pairs per step, over all processes [default: 256; 1,024 with --data]")
@click.option(
    "--lr",
    type=float,
    help="peak learning rate [default: 5e-5 with --data; else 1e-3, 5e-4 for sizes with >= 4 layers]",
)
@click.option("--warmup-steps", type=int, help="linear warm-up steps (default 100)")
@click.option("--restart-period", type=int, help="CosineAnnealingWarmRestarts T_0 (default: one cycle over the run)")
@click.option("--lam", type=float, help="contrastive weight λ (default 0.2 for eclipse)")
@click.option("--tau", type=float, help="contrastive temperature τ (default 0.1)")
@click.option("--hard-negatives", is_flag=True, default=None, help="eclipse: swapped captions as extra negatives")
@click.option("--num-pairs", type=int, help="synthetic world: training pairs (default 50,000)")
@click.option("--seed", type=int, help="training seed (initialisation and batch order)")
@click.option("--grad-accum-steps", type=int, help="micro-batches per optimizer step (default 1)")
@click.option(
    "--mixed-precision",
    type=click.Choice(["no", "fp16", "bf16"]),
    help="accelerate's mixed precision (default no; fp16 needs a GPU)",
)
@click.option(
    "--log-with",
    help="tensorboard | wandb (comma-separated): accelerate's trackers, when installed, beside "
    "log.jsonl (written always)",
)
@click.option("--eval-every", type=int, help="steps between held-out evaluations (default 500)")
@click.option("--checkpoint-every", type=int, help="steps between checkpoints (default 500; Ctrl-C also checkpoints)")
@click.option("--stop-at", type=int, help="stop (with a checkpoint) at this step; resume later")
@click.option(
    "--ship",
    is_flag=True,
    help="synthetic world: copy the final weights (fp16) into the checkout's "
    "priors/<name>/seed-<seed>/ (the shipped priors)",
)
@click.option("--overwrite", is_flag=True, help="with --ship: replace weights already shipped there")
@click.option("--describe", is_flag=True, help="print the architecture's parameter count and size, then exit")
@click.option("--embedding-dim", type=int, help="with --describe: the CLIP embedding dim (paper: 768 or 1280)")
@click.option("--threads", type=int, help="torch CPU threads")
def train_baseline(
    prior, size, out, resume, quick, stop_at, ship, overwrite, describe, embedding_dim, threads, **overrides
):
    """Train a baseline prior (ECLIPSE, projection-only or diffusion) on the synthetic world or, with --data, on
    real image-text pairs embedded by `evalkit embed` (the ECLIPSE paper's settings by default).

    Several processes or GPUs: `torchrun --nproc-per-node N -m evalkit train-baseline ...` (or
    `accelerate launch --multi_gpu --num_processes N -m evalkit train-baseline ...`) trains with DDP on the same
    global batch. Ctrl-C or SIGTERM writes a checkpoint; `--resume` continues it exactly.
    """
    import torch

    from evalkit.distributed import world
    from evalkit.train.priors import describe as describe_prior, ship_prior, train_prior

    if threads:
        torch.set_num_threads(threads)
    if describe:
        size = size or "small"
        dim = embedding_dim or (768 if size == "paper" else 128)
        tokens = 77 if size == "paper" else 20
        info = describe_prior(prior, size, dim, tokens)
        click.echo(
            f"{prior} @ {size}: {info['parameters']:,} parameters ({info['fp32_mb']} MB fp32, "
            f"{info['fp16_mb']} MB fp16), embedding dim {dim}, {tokens} text tokens"
        )
        click.echo(json.dumps(info["config"], indent=2, sort_keys=True))
        return
    if not out:
        raise click.UsageError("--out is required (a new folder for the run)")
    if ship and overrides.get("data"):
        raise click.UsageError(
            "--ship copies a synthetic-world prior into the checkout; a prior trained on --data "
            "is used from its run folder: --prior-path NAME=OUT/final"
        )
    config = _prior_config(prior, size, out, resume, quick, overrides)
    if ship:  # refused now, not after the run
        from evalkit.train.common import refuse_existing_weights
        from evalkit.train.priors import shipped_dir

        refuse_existing_weights(shipped_dir(config), overwrite)
    final = train_prior(out, config, resume=resume, stop_at=stop_at)
    if world()[0] != 0:
        return
    click.echo(f"prior saved to {final}")
    record = Path(final) / "training_record.json"
    if record.is_file() and json.loads(record.read_text()).get("load_with"):
        click.echo("run it: " + json.loads(record.read_text())["load_with"].replace("=DIR", f"={final}"))
    elif stop_at is None:
        click.echo(f"run it: evalkit run --prior {config.prior} --prior-path {config.prior}={final}")
    if ship and stop_at is None:
        click.echo(f"shipped to {ship_prior(out, overwrite=overwrite)}")


def _prior_config(prior: str, size: str | None, out: str, resume: bool, quick: bool, overrides: dict):
    """train-baseline's config from its flags; with ``--resume``, the run's own settings with the explicit flags on
    top (a contradiction is refused when the run starts)."""
    import dataclasses

    from evalkit.train.common import run_settings
    from evalkit.train.priors import PriorTrainConfig

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if size:
        overrides["size"] = size
    config = (
        PriorTrainConfig.quick(prior, tiny=False, **overrides) if quick else PriorTrainConfig(prior=prior, **overrides)
    )
    if resume:
        saved = run_settings(out, config)
        if saved.prior == prior:  # another kind's run: its settings are not this kind's (the check names both)
            config = dataclasses.replace(saved, **overrides)
    return config


def _run_options(command):
    """``evalkit run``'s flags, one per RunConfig field: their defaults and help live in run_config.py only."""
    import dataclasses

    from evalkit.harness.run_config import RunConfig, field_types

    hints = field_types()
    for spec in reversed(dataclasses.fields(RunConfig)):  # click lists the last applied first
        command = click.option(*_flag_names(spec), **_flag_attrs(spec, hints[spec.name]))(command)
    return command


def _flag_names(spec) -> tuple[str, str]:
    name = spec.metadata.get("flag") or "--" + spec.name.replace("_", "-")
    if spec.metadata.get("negatable"):
        name = f"{name}/--no-{name[2:]}"
    return name, spec.name


def _flag_attrs(spec, hint) -> dict:
    """click's settings for a field's flag; the default is for ``--help`` only (:func:`_given` reads just the
    flags typed, and RunConfig supplies the rest)."""
    import dataclasses

    from evalkit.harness.run_config import base_type

    meta, (kind, _) = spec.metadata, base_type(hint)
    default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    attrs = {"help": meta["help"], "show_default": meta.get("show_default", default not in (None, "", False, [], {}))}
    if meta.get("multiple"):
        return {**attrs, "multiple": True, "metavar": meta.get("metavar"), "type": _path_type(meta.get("path"))}
    if kind is bool:
        return {**attrs, "is_flag": True, "default": default}
    click_type = {int: int, float: float}.get(kind, str)
    if meta.get("choices"):
        click_type = click.Choice(list(meta["choices"]))
    elif meta.get("path"):
        click_type = _path_type(meta["path"])
    attrs.update(
        type=click_type,
        metavar=meta.get("metavar"),
        default=",".join(default) if isinstance(default, list) else default,
    )
    if "flag_value" in meta:
        attrs.update(is_flag=False, flag_value=meta["flag_value"])
    return attrs


def _path_type(path: str | None):
    return {None: None, "file": click.Path(dir_okay=False), "dir": click.Path(file_okay=False), "any": click.Path()}[
        path
    ]


def _given(ctx, values: dict) -> dict:
    """The RunConfig fields typed on the command line, parsed: only these override a preset and a config file."""
    import dataclasses

    from click.core import ParameterSource

    from evalkit.harness.run_config import RunConfig

    out = {}
    for spec in dataclasses.fields(RunConfig):
        if ctx.get_parameter_source(spec.name) != ParameterSource.COMMANDLINE:
            continue
        value, parse = values[spec.name], spec.metadata.get("parse")
        if parse == "names":
            value = _names(value)
        elif parse == "pairs":  # NAME is checked against the run's priors when they resolve (a preset's included)
            value = _prior_paths(value, None, spec.metadata["flag"])
        elif spec.metadata.get("multiple"):
            value = list(value)
        out[spec.name] = value
    return out


def _run_config(ctx, preset: str | None, config_file: str | None, values: dict):
    """RunConfig's defaults, then the preset, then the config file, then the flags typed: each overrides the last."""
    from evalkit.harness.presets import PRESETS
    from evalkit.harness.run_config import load_config_file, resolve

    config = resolve(
        [
            dict(PRESETS[preset]) if preset else {},
            load_config_file(config_file) if config_file else {},
            _given(ctx, values),
        ]
    )
    _prior_paths(
        [f"{name}={folder}" for name, folder in config.scorer_paths.items()], config.scorers or None, "--scorer-path"
    )
    return config


@cli.command("run")
@click.option(
    "--preset",
    type=click.Choice(["smoke", "demo", "paper"]),
    help="a named protocol (evalkit/harness/presets.py); flags given explicitly override it",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="a JSON or TOML file of RunConfig fields (docs/runs.md, \"Run config files\"): it overrides the "
    "preset, and flags given explicitly override it",
)
@_run_options
@click.pass_context
def run_command(ctx, preset, config_file, **values):
    """Generate images for suites with one or more priors through a shared decoder, and score them."""
    from evalkit.report.run_report import summary_markdown
    from evalkit.harness.runner import run

    run_dir = run(_run_config(ctx, preset, config_file, values))
    from evalkit.distributed import world

    if world()[0] == 0:  # under accelerate/torchrun, process 0 writes and reports
        click.echo(summary_markdown([run_dir]))
        click.echo(f"wrote {run_dir} (report: {run_dir / 'report.html'})")


@cli.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="a new (or empty) folder for the report (default: a new folder under evalkit-runs/); "
    "existing files are never overwritten",
)
@click.option(
    "--compare",
    "comparisons",
    default="",
    help="paired comparisons A:B (B − A), comma-separated (default: eclipse against each other trained prior)",
)
def report_command(run_dirs, out, comparisons):
    """Re-render tables, plot, grids and the report of one or more finished runs from their saved rows."""
    from evalkit.report.run_report import summary_markdown, write_report

    pairs = None
    if comparisons:
        pairs = []
        for spec in _names(comparisons):
            a, sep, b = spec.partition(":")
            if not sep:
                raise click.BadParameter(f"{spec!r}: expected A:B", param_hint="--compare")
            pairs.append((a, b))
    # --out: a new or empty folder, created atomically once everything read is checked (never overwritten)
    path = write_report(run_dirs, out or None, pairs, fresh=True, parent="evalkit-runs")
    click.echo(summary_markdown(run_dirs))
    click.echo(f"wrote {path} and {path.with_suffix('.html')}")


@cli.command("compare")
@click.argument("base", type=click.Path(exists=True))
@click.argument("new", type=click.Path(exists=True))
@click.option(
    "--z",
    "z",
    default="3",
    show_default=True,
    help="flag a change beyond this many standard errors (a finite positive number)",
)
@click.option(
    "--min-prompts",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="rows with fewer prompts are reported, not gated",
)
def compare_command(base, new, z, min_prompts):
    """Regression report NEW vs BASE (run folders or results.json); exit 1 on a regression or a missing row,
    2 if incomparable (other protocol, suite version or prompt set)."""
    from evalkit.harness.compare import check_z, compare_runs

    text, failed = compare_runs(base, new, check_z(z), min_prompts)
    click.echo(text)
    sys.exit(1 if failed else 0)


@cli.command("eval-prior")
@click.option("--prior", "priors", required=True, help="comma-separated prior names, e.g. oracle,text,none")
@click.option(
    "--suite",
    "suites_",
    default="synth-color,synth-shape,synth-texture,synth-spatial",
    show_default=True,
    help="comma-separated synthetic suites",
)
@click.option("--split", default="val", show_default=True, help="train | dev | val")
@click.option("--num-seeds", default=10, show_default=True, help="renders per prompt (seeds 42, 43, ...)")
@click.option("--controls", default="", help="comma-separated controls: random, shuffled, swapped")
@click.option(
    "--training-seeds",
    default="0",
    show_default=True,
    help="comma-separated training seeds of the shipped trained priors (priors/<name>/seed-<k>)",
)
@click.option(
    "--prior-path",
    "prior_paths",
    multiple=True,
    metavar="NAME=DIR",
    help="load prior NAME from a weights folder instead of its shipped seeds (repeatable)",
)
@click.option("--prior-num-inference-steps", type=int, help="diffusion prior: sampling steps (default 25)")
@click.option("--prior-guidance-scale", type=float, help="diffusion prior: classifier-free guidance (default 4.0)")
@click.option("--rerank", type=int, help="diffusion prior: best-of-n by text similarity (default 1: off)")
@click.option(
    "--compare",
    "comparisons",
    default="",
    help="paired comparisons A:B (B − A), comma-separated (default: eclipse against each other trained prior)",
)
@click.option(
    "--out",
    default="evalkit-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="parent folder; a new run folder is created inside",
)
def eval_prior(
    priors,
    suites_,
    split,
    num_seeds,
    controls,
    training_seeds,
    prior_paths,
    prior_num_inference_steps,
    prior_guidance_scale,
    rerank,
    comparisons,
    out,
):
    """Embedding-level metrics of priors (binding margin, accuracy, cosine, recall): seconds, no decoding."""
    from evalkit.eval_prior import evaluate_priors

    run_dir = evaluate_priors(
        _names(priors),
        _names(suites_),
        split,
        num_seeds,
        _names(controls),
        _names(training_seeds),
        paths=_prior_paths(prior_paths, None),
        pairs=_names(comparisons) or None,
        out=out,
        options={
            "num_inference_steps": prior_num_inference_steps,
            "guidance_scale": prior_guidance_scale,
            "rerank": rerank,
        },
        log=lambda note: click.echo(note, err=True),
    )
    click.echo((run_dir / "report.md").read_text())
    click.echo(f"wrote {run_dir}")


def _prior_paths(specs, names, flag: str = "--prior-path") -> dict:
    """``NAME=DIR`` flags as {name: dir}, NAME one of ``names`` (None: any; the run checks them)."""
    paths = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory or (names is not None and name not in names):
            expected = f" with NAME one of {', '.join(names)}" if names else ""
            raise click.BadParameter(f"{spec!r}: expected NAME=DIR{expected}", param_hint=flag)
        paths[name] = directory
    return paths


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@cli.command("export")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["t2i-compbench"]),
    default="t2i-compbench",
    show_default=True,
    help="folder format to write",
)
@click.option("--scorer", help="which scorer's rows to carry in the manifest (default: the first)")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
def export_command(format_, scorer, run_dir, out):
    """Write a run's images in T2I-CompBench's format (OUT/<prior>/<category>/samples/{prompt}_{index:06d}.png)."""
    from evalkit.harness.export import export_t2i_compbench

    path = export_t2i_compbench(run_dir, out, scorer)
    click.echo(f"exported to {path}: score with their scripts, e.g. BLIP_vqa.py --out_dir {path}/<prior>/<category>")


@cli.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--suite", required=True, help="the suite whose prompts the images were made from (one category)")
@click.option("--prior", default="imported", show_default=True, help="name the images' model gets in the run")
@click.option(
    "--scorer",
    "scorers",
    default="",
    help="evalkit scorers to run, comma-separated (may be empty with a vqa_result.json)",
)
@click.option("--split", default="val", show_default=True, help="train | dev | val")
@click.option(
    "--vqa-result",
    type=click.Path(exists=True, dir_okay=False),
    help="T2I-CompBench B-VQA output (default: FOLDER/annotation_blip/vqa_result.json when present)",
)
@click.option(
    "--out",
    default="evalkit-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="parent folder of the new run folder",
)
@click.option("--prompts-dir", type=click.Path(file_okay=False), help="local copy of third-party prompt files")
@click.option("--tag", default="", help="a label stored in every result row")
def import_command(folder, suite, prior, scorers, split, vqa_result, out, prompts_dir, tag):
    """Score a T2I-CompBench out_dir (FOLDER/samples/{prompt}_{index}.png) into a new run folder."""
    from evalkit.harness.importer import import_t2i_compbench

    path = import_t2i_compbench(
        folder,
        suite,
        out,
        prior=prior,
        scorers=_names(scorers),
        split=split,
        vqa_result=vqa_result,
        tag=tag,
        prompts_dir=prompts_dir,
    )
    click.echo(f"imported into {path} (report: {path / 'report.md'})")


@cli.command("fid")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--reference", "n_reference", default=2000, show_default=True, help="world renders in the reference set")
def fid_command(run_dir, n_reference):
    """FID / KID of each prior's images in a run against world renders (world-CLIP features; Inception is offline)."""
    from tabulate import tabulate

    from evalkit.metrics.fid import run_distances

    rows = run_distances(run_dir, n_reference)
    if not rows:
        raise click.UsageError(f"{run_dir} has no images of synthetic suites to compare with world renders")
    click.echo(tabulate(rows, headers="keys", tablefmt="github"))


@cli.command("smoke")
@click.option(
    "--out",
    default="evalkit-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="parent folder of the smoke run",
)
@click.option("--update-golden", is_flag=True, help="keep this run as the new golden in results/golden/smoke/")
def smoke_command(out, update_golden):
    """Run the smoke protocol on the embedded default (under 2 min) and compare it with the golden; exit 1 on a
    regression or a missing row (docs/runs.md, "The CI gate")."""
    from evalkit.harness.presets import compare_with_golden, run_smoke
    from evalkit.harness.presets import update_golden as keep

    run_dir = run_smoke(out)
    if update_golden:
        click.echo(f"golden updated: {keep(run_dir)}")
        return
    text, failed = compare_with_golden(run_dir)
    click.echo(text)
    click.echo(f"smoke run: {run_dir} (report: {run_dir / 'report.html'})")
    sys.exit(1 if failed else 0)


@cli.command("check-world")
@click.option(
    "--out",
    default=default_check_dir,
    show_default="evalkit-checks/<timestamp>",
    type=click.Path(file_okay=False),
    help="folder for the measurements (json + README.md); default: a new folder under the current directory. "
    "--out results/embedded-stack refreshes the committed copy",
)
@click.option("--clip-seeds", default=10, show_default=True, help="renders per val prompt for the CLIP metrics")
@click.option("--prior-seeds", default=10, show_default=True, help="renders per val prompt for the headroom check")
@click.option(
    "--decoder-prompts", default=48, show_default=True, help="val prompts per suite decoded from oracle embeddings"
)
@click.option("--steps", "steps_sweep", default="10,25,50", show_default=True, help="DDIM step counts to compare")
@click.option(
    "--parts",
    default="clip,headroom,decoder",
    show_default=True,
    help="which measurements to (re)run; the others are read back from --out",
)
@click.option(
    "--decoder-dir",
    type=click.Path(exists=True, file_okay=False),
    help="check these decoder weights instead of the shipped ones (e.g. a training run's final/)",
)
@click.option(
    "--clip-dir",
    type=click.Path(exists=True, file_okay=False),
    help="check these CLIP weights instead of the shipped ones (e.g. a training run's final/)",
)
def check_world_command(out, clip_seeds, prior_seeds, decoder_prompts, steps_sweep, parts, decoder_dir, clip_dir):
    """Measure the embedded stack's quality bars: CLIP binding/retrieval, headroom, decoder fidelity."""
    from evalkit.checks.world import PARTS, check_world

    chosen = _names(parts)
    for part in chosen:
        if part not in PARTS:
            raise click.BadParameter(f"unknown part {part!r}; choose from {', '.join(PARTS)}", param_hint="--parts")
    check_world(
        out,
        clip_seeds,
        prior_seeds,
        decoder_prompts,
        tuple(int(s) for s in _names(steps_sweep)),
        chosen,
        decoder_dir,
        clip_dir,
    )
    click.echo(open(f"{out}/README.md").read())


@cli.command("demo")
@click.option(
    "--out",
    default="evalkit-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="parent folder; the demo writes a new run folder inside it",
)
@click.option("--per-category", default=8, show_default=True, help="renders per category in the grid")
def demo(out, per_category):
    """The main job on the embedded default: the world, the calibration priors, and `evalkit run --preset demo`."""
    from evalkit.demo import run_demo

    run_dir = run_demo(out, per_category=per_category)
    click.echo(f"wrote {run_dir}: open {run_dir / 'report.md'} (the main job's own report.html is linked from it)")


@cli.group("cache", cls=EvalkitGroup)
def cache_group():
    """Inspect, check and trim the work cache of `evalkit run` (see docs/runs.md)."""


def _cache_dir_option(command):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        help="work cache folder (default: <evalkit cache>/work, as for `evalkit run`)",
    )(command)


def _cache_root(cache_dir) -> Path:
    from evalkit.harness.cache import default_root

    return Path(cache_dir) if cache_dir else default_root()


@cache_group.command("info")
@_cache_dir_option
def cache_info(cache_dir):
    """Size and entries of the cache, by kind and by last use."""
    from evalkit.harness.cache_admin import format_size, info

    report = info(_cache_root(cache_dir))
    click.echo(f"work cache {report['root']}: {report['entries']} entries, {format_size(report['bytes'])}")
    for title, part in (("by kind", report["by_kind"]), ("by last use", report["by_age"])):
        click.echo(f"  {title}:")
        for label, counts in part.items():
            click.echo(f"    {label}: {counts['entries']} entries, {format_size(counts['bytes'])}")
    if report["leftovers"]:
        click.echo(f"  {report['leftovers']} left-over temporary file(s) (removed by verify, prune and clear)")


@cache_group.command("verify")
@_cache_dir_option
def cache_verify(cache_dir):
    """Re-hash and decode every entry; drop (and print) the bad ones."""
    from evalkit.harness.cache_admin import verify

    checked, dropped = verify(_cache_root(cache_dir))
    for path, reason in dropped:
        click.echo(f"dropped {path}: {reason}")
    click.echo(f"{checked} entries checked, {len(dropped)} dropped")


@cache_group.command("prune")
@click.option("--older-than", help="remove entries unused for this long: 7d, 12h, 30m, 2w")
@click.option("--max-size", help="then remove the least recently used until the cache fits: 2G, 500M")
@_cache_dir_option
def cache_prune(older_than, max_size, cache_dir):
    """Remove entries by age and/or down to a size, least recently used first."""
    from evalkit.harness.cache_admin import format_size, parse_duration, parse_size, prune

    if older_than is None and max_size is None:
        raise EvalkitError("give --older-than DURATION (e.g. 7d) and/or --max-size SIZE (e.g. 2G)")
    removed, kept = prune(
        _cache_root(cache_dir),
        None if older_than is None else parse_duration(older_than),
        None if max_size is None else parse_size(max_size),
    )
    click.echo(
        f"{len(removed)} entries removed ({format_size(sum(e.size for e in removed))} freed); "
        f"{len(kept)} remain ({format_size(sum(e.size for e in kept))})"
    )


@cache_group.command("clear")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_cache_dir_option
def cache_clear(yes, cache_dir):
    """Remove every entry of the cache."""
    from evalkit.harness.cache_admin import clear, entries, format_size

    root = _cache_root(cache_dir)
    if not yes:
        found = entries(root)
        if not click.confirm(f"remove the {len(found)} entries ({format_size(sum(e.size for e in found))}) of {root}?"):
            click.echo("nothing removed")
            click.get_current_context().exit(1)
    removed = clear(root)
    click.echo(f"{len(removed)} entries removed ({format_size(sum(e.size for e in removed))} freed)")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="evalkit")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
