"""The table both prior sweeps print: one row per (setting, category), metric ± bootstrap standard error."""

from __future__ import annotations

CATEGORIES = ("color", "shape", "texture")
METRICS = ("margin", "binding", "cos_true")


def sweep_table(summary: list[dict], labels: list[str], first_header: str) -> str:
    from tabulate import tabulate

    keyed = {(r["prior"], r["category"], r["seen"], r["metric"]): r for r in summary}
    table = []
    for label in labels:
        for category in CATEGORIES:
            cells = [label, category]
            for metric in METRICS:
                r = keyed[(label, category, "all", metric)]
                cells.append(f"{r['value']:.4f} ± {r['stderr']:.4f}")
            table.append(cells)
    return tabulate(table, headers=[first_header, "category", *METRICS], tablefmt="github")
