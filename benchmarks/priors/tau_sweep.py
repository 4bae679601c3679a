"""Choose ECLIPSE's contrastive temperature τ on the dev split (the paper does not state it).

Trains one eclipse prior per τ (same data, seed and steps; λ = 0.2) and a projection prior (λ = 0) as the
reference, then measures the embedding-level binding margin and accuracy on the dev prompts of the three
synthetic suites (never val). Writes ``results/priors/tau-sweep/{summary.json,README.md}``.

    python -m evalkit.bootstrap python benchmarks/priors/tau_sweep.py --runs /path/to/runs --taus 0.03,0.1,0.3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit.paths import REPO_ROOT
from sweep_table import sweep_table  # this folder (run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="folder for the training runs (reused when finished)")
    parser.add_argument("--taus", default="0.03,0.1,0.3")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=4, help="renders per dev prompt")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "priors" / "tau-sweep"))
    args = parser.parse_args()

    from evalkit.embedding_metrics import summarize
    from evalkit.eval_prior import eval_priors
    from evalkit.serialization import atomic_write_json
    from evalkit.train.priors import PriorTrainConfig, train_prior

    runs = Path(args.runs)
    variants = [("projection", PriorTrainConfig(prior="projection", steps=args.steps))]
    variants += [
        (f"eclipse tau={tau}", PriorTrainConfig(prior="eclipse", tau=float(tau), steps=args.steps))
        for tau in args.taus.split(",")
    ]
    rows = []
    for label, config in variants:
        run = runs / label.replace(" ", "-").replace("=", "")
        if not (run / "final").is_dir():
            train_prior(run, config, resume=run.exists())
        kind = config.prior
        new, _ = eval_priors(
            [kind],
            ["synth-color", "synth-shape", "synth-texture"],
            split="dev",
            seeds=tuple(range(42, 42 + args.seeds)),
            paths={kind: run / "final"},
            progress=False,
        )
        rows += [dict(r, prior=label) for r in new]
    summary = summarize(rows, metrics=("margin", "binding", "cos_true"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "summary.json",
        {"config": {"taus": args.taus, "steps": args.steps, "seeds": args.seeds, "split": "dev"}, "summary": summary},
    )
    text = [
        "# τ sweep for the eclipse prior (dev split)",
        "",
        f"λ = 0.2, {args.steps} steps, training seed 0, {args.seeds} renders per dev prompt; ± is the bootstrap "
        "standard error over prompts. Command: `python -m evalkit.bootstrap python benchmarks/priors/tau_sweep.py "
        f"--runs RUNS --taus {args.taus} --steps {args.steps}`.",
        "",
        sweep_table(summary, [label for label, _ in variants], "prior"),
        "",
    ]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
