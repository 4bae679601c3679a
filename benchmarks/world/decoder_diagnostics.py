"""Where does the synth decoder lose noun phrases? Three measurements on the embedded stack.

1. ``probe``: can the named phrases be read from the CLIP image embedding at all? Probes (linear, and a
   one-hidden-layer MLP) trained on frozen embeddings of train renders to predict which
   (colour | texture | size class, shape) combinations a scene holds; read on one render per prompt of
   ``--split``: the share of named phrases whose combinations all come out present (the decoder's
   ceiling if it realised everything the embedding carries).
2. ``heldout``: the decoder's diffusion loss on renders of its own training pool against a fresh pool
   (same noise and timesteps): a gap would mean memorisation.
3. ``sampler``: the share of phrases realised from oracle embeddings (binding scorer, p > 0.5) over a
   grid of DDIM steps × guidance scales — whether sampling settings, not the weights, lose phrases.

Writes ``summary.json`` and ``README.md`` to ``--out``.

    python -m evalkit.bootstrap python benchmarks/world/decoder_diagnostics.py
    python -m evalkit.bootstrap python benchmarks/world/decoder_diagnostics.py --parts sampler --decoder-dir RUN/final
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from evalkit.paths import REPO_ROOT

from evalkit.checks.world import SUITES
from evalkit.world.models.tensors import embed_images


def embed(clip, scenes) -> torch.Tensor:
    """CLIP image embeddings of rendered scenes."""
    from evalkit.world import render

    return embed_images(clip, render(scenes), 1000)


def probe(clip, split: str, train_scenes: int, epochs: int, hidden: int) -> dict:
    from evalkit.suites import load_suite
    from evalkit.train.world_clip import combo_index, scene_targets
    from evalkit.world import parse_caption, sample_pairs

    index = combo_index()
    _, scenes = sample_pairs("all", train_scenes, seed=7, split="train")
    x, y = embed(clip, scenes), torch.from_numpy(scene_targets(scenes, index))
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / std
    out = {}
    for label, width in (("linear", 0), (f"mlp-{hidden}", hidden)):
        torch.manual_seed(0)
        head = (
            torch.nn.Linear(x.shape[1], y.shape[1])
            if not width
            else torch.nn.Sequential(
                torch.nn.Linear(x.shape[1], width), torch.nn.GELU(), torch.nn.Linear(width, y.shape[1])
            )
        )
        optimizer = torch.optim.Adam(head.parameters(), 1e-2 if not width else 2e-3)
        for _ in range(epochs):
            for chunk in torch.randperm(len(x)).split(512):
                loss = F.binary_cross_entropy_with_logits(head(x[chunk]), y[chunk])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        for name in SUITES:
            suite = load_suite(name)
            items = suite.items(split)
            with torch.inference_mode():
                present = (
                    torch.sigmoid(head((embed(clip, [suite.ground_truth(i, 42) for i in items]) - mean) / std)) > 0.5
                )
            hits = [
                all(
                    present[k, index[(value, phrase.shape)]]
                    for value in (phrase.color, phrase.texture, phrase.size)
                    if value is not None
                )
                for k, item in enumerate(items)
                for phrase in parse_caption(item.prompt).objects
            ]
            out[f"{label}/{name}"] = round(sum(hits) / len(hits), 4)
    return out


def heldout(decoder, clip, renders: int) -> dict:
    from evalkit.train.world_decoder import DecoderTrainConfig, diffusion_loss, training_renders
    from evalkit.world.models.tensors import images_to_tensor

    record_pool = DecoderTrainConfig()  # the shipped decoder's pool: num_pairs, seed
    scheduler = decoder.training_scheduler()
    out = {}
    for label, seed in (("training pool", record_pool.seed), ("fresh pool", 999)):
        images = training_renders(record_pool.num_pairs, seed)[:renders]
        x, e = images_to_tensor(images), embed_images(clip, images, 512)
        losses = []
        with torch.inference_mode():
            for rep in range(2):
                generator = torch.Generator().manual_seed(rep)
                for i in range(0, renders, 256):
                    losses.append(
                        diffusion_loss(decoder, scheduler, x[i : i + 256], e[i : i + 256], generator, 0.0, 5.0).item()
                    )
        out[label] = round(sum(losses) / len(losses), 6)
    return out


def sampler(decoder, clip, split: str, prompts: int, grid) -> list[dict]:
    from evalkit.contracts import Protocol
    from evalkit.checks.world import oracle_subset, realised_share
    from evalkit.priors.calibration import OraclePrior
    from evalkit.harness.runner import evaluate
    from evalkit.scorers.binding import BindingScorer
    from evalkit.suites import load_suite

    oracle, scorers = OraclePrior(clip), {"binding": BindingScorer()}
    rows = []
    for steps, guidance in grid:
        row, start = {"steps": steps, "guidance": guidance}, time.perf_counter()
        for name in SUITES:
            suite = load_suite(name)
            scored, _ = evaluate(
                {"oracle": oracle},
                decoder,
                suite,
                scorers,
                Protocol("synth", steps, guidance, 32, 1),
                None,
                progress=False,
                text_encoders={"synth-clip": clip},
                items=oracle_subset(suite, split, prompts),
            )
            row[name] = round(realised_share(scored), 4)
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(row, flush=True)
        rows.append(row)
    return rows


def readme(summary: dict) -> str:
    from tabulate import tabulate

    lines = [
        "# Synth decoder diagnostics",
        "",
        f"`{summary['command']}`",
        "",
        f"Decoder: {summary['decoder']}. Prompts: the {summary['split']} split"
        + (
            f", {summary['prompts']} per suite (two thirds seen combinations) in the sampler grid"
            if "sampler" in summary
            else ""
        )
        + ("; the probes read every prompt of the split" if "probe" in summary else "")
        + "; one render per prompt (seed 42).",
        "",
    ]
    if "probe" in summary:
        p = summary["probe"]
        labels = sorted({k.split("/")[0] for k in p})
        lines += [
            "## Named phrases readable from the CLIP image embedding (probe)",
            "",
            tabulate(
                [[label, *[p[f"{label}/{s}"] for s in SUITES]] for label in labels],
                headers=["probe", *SUITES],
                tablefmt="github",
            ),
            "",
        ]
    if "heldout" in summary:
        lines += [
            "## Diffusion loss: training pool vs fresh pool",
            "",
            tabulate([list(summary["heldout"].values())], headers=list(summary["heldout"]), tablefmt="github"),
            "",
        ]
    if "sampler" in summary:
        lines += [
            "## Phrases realised from oracle embeddings (binding scorer) by sampling setting",
            "",
            tabulate(
                [[r["steps"], r["guidance"], *[r[s] for s in SUITES]] for r in summary["sampler"]],
                headers=["DDIM steps", "guidance", *SUITES],
                tablefmt="github",
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="probe,heldout,sampler")
    parser.add_argument("--decoder-dir", help="decoder weights (default: the shipped ones)")
    parser.add_argument("--split", default="dev", help="prompts read by the probe and decoded by the sampler grid")
    parser.add_argument("--prompts", type=int, default=150, help="prompts per suite in the sampler grid")
    parser.add_argument("--grid", default="10x1,10x2,10x3,10x5,6x2,20x2,25x3", help="STEPSxGUIDANCE,...")
    parser.add_argument("--train-scenes", type=int, default=30000, help="renders the probes are trained on")
    parser.add_argument("--heldout-renders", type=int, default=2048)
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "embedded-stack" / "decoder-diagnostics"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from evalkit.decoders.synth import SynthDecoder
    from evalkit.world.models.clip import load_world_clip
    from evalkit.serialization import atomic_write_json

    parts = set(args.parts.split(","))
    clip, decoder = load_world_clip(), SynthDecoder.from_pretrained(args.decoder_dir)
    summary = {
        "command": "python benchmarks/world/decoder_diagnostics.py " + " ".join(sys.argv[1:]),
        "decoder": args.decoder_dir or "shipped",
        "split": args.split,
        "prompts": args.prompts,
    }
    if "probe" in parts:
        summary["probe"] = probe(clip, args.split, args.train_scenes, epochs=30, hidden=512)
        print(summary["probe"], flush=True)
    if "heldout" in parts:
        summary["heldout"] = heldout(decoder, clip, args.heldout_renders)
        print(summary["heldout"], flush=True)
    if "sampler" in parts:
        grid = [(int(s), float(g)) for s, g in (cell.split("x") for cell in args.grid.split(","))]
        summary["sampler"] = sampler(decoder, clip, args.split, args.prompts, grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    (out / "README.md").write_text(readme(summary))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
