"""The parameter-versus-binding table of the embedding-level evaluation (from an eval-prior ``summary.json``).

    python -m evalkit.bootstrap python benchmarks/priors/headline.py RUN_DIR/summary.json [--metric binding]
    python -m evalkit.bootstrap python benchmarks/priors/headline.py --shipped     # the shipped priors

Rows: priors with their parameter counts (read from the shipped training records); columns: each
category's value on seen / unseen val items (mean over training seeds, and the seed-to-seed standard
deviation when there are several).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parameters(prior: str) -> str:
    from evalkit.registry import PRIORS

    cls = PRIORS.get(prior)
    shipped = getattr(cls, "shipped_dir", None)
    if shipped is None:
        return "0"
    record = shipped(0) / "training_record.json"
    return f"{json.loads(record.read_text())['num_trainable_parameters']:,}" if record.is_file() else "?"


def table(summary: list[dict], metric: str, priors: list[str]) -> str:
    from tabulate import tabulate

    keyed = {(r["prior"], r["category"], r["seen"]): r for r in summary if r["metric"] == metric and not r["control"]}
    categories = sorted({r["category"] for r in summary})
    rows = []
    for prior in priors:
        first = next((keyed[k] for k in keyed if k[0] == prior), None)
        if first is None:
            continue
        cells = [prior, parameters(prior), first.get("n_training_seeds") or 1]
        for category in categories:
            for split in ("seen", "unseen"):
                r = keyed.get((prior, category, split))
                if r is None:
                    cells.append("-")
                    continue
                spread = f" ±{r['seed_sd']:.3f}" if r.get("seed_sd") else ""
                cells.append(f"{r['value']:.3f}{spread}")
        rows.append(cells)
    headers = ["prior", "parameters", "training seeds"] + [f"{c} {s}" for c in categories for s in ("seen", "unseen")]
    return tabulate(rows, headers=headers, tablefmt="github")


def shipped_table() -> str:
    """Every shipped prior folder with its training record: size, parameters, steps, wall time, dev cosine."""
    from tabulate import tabulate

    from evalkit.priors.trained import SHIPPED_ROOT

    rows = []
    for record_path in sorted(SHIPPED_ROOT.glob("*/seed-*/training_record.json")):
        record = json.loads(record_path.read_text())
        config = record["config"]
        size = sum(p.stat().st_size for p in record_path.parent.glob("*.safetensors"))
        rows.append(
            [
                record_path.parent.parent.name,
                config["seed"],
                config["size"],
                f"{record['num_trainable_parameters']:,}",
                config["steps"],
                config["batch_size"],
                config["lr"],
                config["lam"],
                config["tau"] if config["lam"] else "-",
                f"{record['wall_time_s'] / 60:.1f}",
                record["torch_threads"],
                f"{record['final_metrics']['dev_cos']:.4f}",
                f"{size / 1e6:.2f}",
            ]
        )
    return tabulate(
        rows,
        headers=[
            "prior",
            "seed",
            "size",
            "parameters",
            "steps",
            "batch",
            "lr",
            "λ",
            "τ",
            "train min",
            "threads",
            "dev cos",
            "MB (fp16)",
        ],
        tablefmt="github",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", nargs="?", help="an eval-prior summary.json (omit with --shipped)")
    parser.add_argument("--metric", default="binding")
    parser.add_argument("--shipped", action="store_true", help="print the table of shipped priors instead")
    args = parser.parse_args()
    if args.shipped:
        print(shipped_table())
        return
    data = json.loads(Path(args.summary).read_text())
    print(table(data["summary"], args.metric, data["config"]["priors"]))


if __name__ == "__main__":
    main()
