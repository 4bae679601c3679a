"""``evalkit eval-prior``: embedding-level comparison of priors on synthetic suites (no decoding).

Writes ``<out>/<run-id>/`` with ``rows.jsonl`` (one row per prior × control × item × seed),
``summary.json`` (aggregates with bootstrap CIs over prompts) and ``report.md`` (tables rendered
from the summary, and the headroom check when ``oracle`` and ``text`` are both present).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from evalkit.embedding_metrics import embedding_rows, summarize
from evalkit.serialization import atomic_write_json

#: headroom holds when the oracle's binding accuracy exceeds text's and none's by this many paired standard errors
HEADROOM_Z = 5.0
#: the embedding-level oracle averages this many independent renders of the caption (≈ E[embedding | caption])
ORACLE_SAMPLES = 8


def make_prior(name: str, clip, **options):
    from evalkit.priors import load_prior

    if name == "oracle":
        # the item's own render would be trivially perfect at the embedding level: average independent ones
        options = {"independent": True, "samples": ORACLE_SAMPLES, **options}
    return load_prior(name, clip=clip, **options)


def eval_priors(prior_names, suite_names, split: str = "val", seeds=tuple(range(42, 52)), controls=(),
                clip=None, progress: bool = True) -> tuple[list[dict], list[dict]]:
    from evalkit.embedded.clip import load_world_clip
    from evalkit.registry import PRIORS, SUITES
    from evalkit.suites import load_suite

    PRIORS.check(list(prior_names))
    SUITES.check(list(suite_names))
    clip = clip if clip is not None else load_world_clip()
    rows: list[dict] = []
    # the oracle renders its prompt: a word-shuffled prompt is no caption of the world
    jobs = [(s, p, c) for s in suite_names for p in prior_names for c in (None, *controls)
            if not (p == "oracle" and c == "shuffled")]
    priors = {}
    for suite_name, prior_name, control in tqdm(jobs, desc="eval-prior", disable=not progress):
        suite = load_suite(suite_name)
        if prior_name not in priors:
            priors[prior_name] = make_prior(prior_name, clip)
        rows += embedding_rows(priors[prior_name], suite, clip, split, seeds, control=control, prior_name=prior_name)
    return rows, summarize(rows)


def headroom(rows: list[dict], gate: str = "binding", metrics=("binding", "margin")) -> list[dict]:
    """Oracle vs text vs none per category and seen/unseen, paired on identical (prompt, seed) items.

    For each metric: the oracle's value, each reference's value and the paired gap in standard errors
    (bootstrap over prompts). Headroom holds when the ``gate`` metric's gaps are all ≥ ``HEADROOM_Z``.
    """
    from evalkit.stats import paired_bootstrap

    index: dict[tuple, dict] = {}
    for row in rows:
        if row["control"]:
            continue
        splits = ("all", "seen" if row["seen"] else "unseen") if row["seen"] is not None else ("all",)
        for split in splits:
            index.setdefault((row["prior"], row["category"], split), {})[(row["item_id"], row["seed"])] = row
    out = []
    for (prior, category, split), oracle in sorted(index.items()):
        if prior != "oracle":
            continue
        result = {"category": category, "seen": split, "gate": gate, "headroom": True}
        keys = sorted(oracle)
        for metric in metrics:
            result[f"oracle_{metric}"] = sum(oracle[k][metric] for k in keys) / len(keys)
        for other in ("text", "none"):
            reference = index.get((other, category, split))
            if reference is None:
                continue
            if set(reference) != set(oracle):
                raise ValueError(f"headroom needs {other!r} and 'oracle' on the same items ({category}, {split})")
            for metric in metrics:
                cmp = paired_bootstrap([reference[k][metric] for k in keys], [oracle[k][metric] for k in keys],
                                       clusters=[k[0] for k in keys])
                result[f"{other}_{metric}"] = sum(reference[k][metric] for k in keys) / len(keys)
                result[f"z_{other}_{metric}"] = cmp.z
            result["headroom"] &= result[f"z_{other}_{gate}"] >= HEADROOM_Z
        out.append(result)
    return out


def headroom_table(room: list[dict]) -> list[str]:
    """The headroom check as markdown lines (a heading, what z means, one row per category and split)."""
    from tabulate import tabulate

    gate = room[0]["gate"]
    lines = ["## Headroom: oracle vs text vs none", "",
             f"Paired on identical (prompt, seed) items; z = the oracle's lead in bootstrap standard errors "
             f"(over prompts). Headroom holds when the oracle's {gate} leads both text and none by "
             f"z ≥ {HEADROOM_Z:g}. The oracle averages {ORACLE_SAMPLES} independent renders of the caption.", ""]
    metrics = [m for m in ("binding", "margin") if f"oracle_{m}" in room[0]]
    headers, table = ["category", "split"], []
    for metric in metrics:
        headers += [f"oracle {metric}", f"text {metric}", "z(o−t)", f"none {metric}", "z(o−n)"]
    for r in room:
        cells = [r["category"], r["seen"]]
        for metric in metrics:
            cells += [f"{r[f'oracle_{metric}']:.4f}", f"{r.get(f'text_{metric}', float('nan')):.4f}",
                      f"{r.get(f'z_text_{metric}', float('nan')):.1f}", f"{r.get(f'none_{metric}', float('nan')):.4f}",
                      f"{r.get(f'z_none_{metric}', float('nan')):.1f}"]
        table.append(cells + ["yes" if r["headroom"] else "NO"])
    lines += [tabulate(table, headers=headers + ["headroom"], tablefmt="github"), ""]
    return lines


def render_report(summary: list[dict], room: list[dict]) -> str:
    from tabulate import tabulate

    lines = ["# Embedding-level evaluation", ""]
    metrics = sorted({r["metric"] for r in summary})
    keyed = {(r["prior"], r["control"], r["category"], r["seen"], r["metric"]): r for r in summary}
    for category in sorted({r["category"] for r in summary}):
        lines += [f"## {category}", ""]
        table = []
        for (prior, control, cat, seen) in sorted({k[:4] for k in keyed if k[2] == category}):
            cells = []
            for metric in metrics:
                r = keyed[(prior, control, cat, seen, metric)]
                cells.append(f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
            table.append([prior, control or "-", seen, keyed[(prior, control, cat, seen, metrics[0])]["n"], *cells])
        lines += [tabulate(table, headers=["prior", "control", "split", "n", *metrics], tablefmt="github"), ""]
    if room:
        lines += headroom_table(room)
    return "\n".join(lines)


def write_outputs(run_dir: Path, rows: list[dict], summary: list[dict], config: dict) -> None:
    room = headroom(rows)
    with open(run_dir / "rows.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    atomic_write_json(run_dir / "summary.json", {"config": config, "summary": summary, "headroom": room})
    (run_dir / "report.md").write_text(render_report(summary, room))
