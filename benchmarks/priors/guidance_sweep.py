"""Give the diffusion prior a fair chance: sweep its guidance scale (and best-of-n reranking) on the dev split.

Evaluates the shipped ``diffusion`` prior (every requested training seed) at several classifier-free
guidance scales, and with DALL-E 2's best-of-n reranking by text similarity, on the dev prompts of the
three synthetic suites (never val). Writes ``results/priors/diffusion-guidance/{summary.json,README.md}``.

    python -m evalkit.bootstrap python benchmarks/priors/guidance_sweep.py --scales 1,2,4,8 --rerank 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit.paths import REPO_ROOT
from sweep_table import sweep_table  # this folder (run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="diffusion")
    parser.add_argument("--scales", default="1,2,4,8")
    parser.add_argument("--rerank", type=int, default=4, help="best-of-n at the default guidance (1: skip)")
    parser.add_argument("--training-seeds", default="0,1,2")
    parser.add_argument("--seeds", type=int, default=4, help="renders per dev prompt")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "priors" / "diffusion-guidance"))
    args = parser.parse_args()

    from evalkit.embedding_metrics import summarize
    from evalkit.eval_prior import eval_priors
    from evalkit.serialization import atomic_write_json

    suites = ["synth-color", "synth-shape", "synth-texture"]
    training_seeds = tuple(int(s) for s in args.training_seeds.split(","))
    settings = [(f"guidance {float(g):g}", {"guidance_scale": float(g)}) for g in args.scales.split(",")]
    if args.rerank > 1:
        settings.append((f"guidance 4, best of {args.rerank}", {"guidance_scale": 4.0, "rerank": args.rerank}))
    rows = []
    for label, options in settings:
        new, _ = eval_priors(
            [args.prior],
            suites,
            split="dev",
            seeds=tuple(range(42, 42 + args.seeds)),
            training_seeds=training_seeds,
            options=options,
            progress=False,
        )
        rows += [dict(r, prior=label) for r in new]
        print(f"done: {label}", flush=True)
    summary = summarize(rows, metrics=("margin", "binding", "cos_true"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", {"config": vars(args), "summary": summary})
    text = [
        f"# Guidance sweep for the `{args.prior}` prior (dev split)",
        "",
        f"25 DDIM steps; training seeds {args.training_seeds} pooled; {args.seeds} renders per dev prompt; ± is the "
        "bootstrap standard error over prompts. Command: `python -m evalkit.bootstrap python "
        f"benchmarks/priors/guidance_sweep.py --scales {args.scales} --rerank {args.rerank}`.",
        "",
        sweep_table(summary, [label for label, _ in settings], "setting"),
        "",
    ]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
