"""Training curves of prior runs (loss and held-out cosine against step) from their ``log.jsonl``.

python -m evalkit.bootstrap python benchmarks/priors/plot_curves.py RUN_DIR... --out results/priors/training-curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training run folders (each with train_config.json and log.jsonl)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mse, ax_cos) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors: dict[str, str] = {}
    palette = iter(plt.get_cmap("tab10").colors * 3)
    for run in map(Path, args.runs):
        config = json.loads((run / "train_config.json").read_text())
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        name = f"{config['prior']}{'-hn' if config.get('hard_negatives') else ''} {config['size']}"
        label = f"{name} seed {config['seed']}"
        if name not in colors:  # one colour per prior, one line style per seed
            colors[name] = next(palette)
        color = colors[name]
        style = ("-", "--", ":")[config["seed"] % 3]
        steps = [r["step"] for r in rows]
        # a 50-step running mean: single batches are noisy
        mse = [r["mse"] for r in rows]
        smooth = [sum(mse[max(0, i - 49) : i + 1]) / len(mse[max(0, i - 49) : i + 1]) for i in range(len(mse))]
        ax_mse.plot(steps, smooth, label=label, linewidth=1, color=color, linestyle=style)
        evals = [(r["step"], r["eval/dev_cos"]) for r in rows if "eval/dev_cos" in r]
        if evals:
            ax_cos.plot(*zip(*evals), marker="o", color=color, linestyle=style, label=label, linewidth=1)
    ax_mse.set(
        xlabel="step",
        ylabel="training MSE (50-step mean; diffusion: standardised x0)",
        yscale="log",
        title="training loss (regression part)",
    )
    ax_cos.set(xlabel="step", ylabel="cosine to the dev render's embedding", title="held-out (dev) prediction cosine")
    ax_cos.legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
