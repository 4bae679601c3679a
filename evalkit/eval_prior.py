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

#: headroom holds when the oracle's margin exceeds text's and none's by this many standard errors
HEADROOM_Z = 5.0


def make_prior(name: str, clip):
    from evalkit.priors import load_prior

    # the oracle's own render would be trivially perfect at the embedding level: use an independent one
    return load_prior(name, clip=clip, independent=True) if name == "oracle" else load_prior(name, clip=clip)


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


def headroom(summary: list[dict], metric: str = "margin") -> list[dict]:
    """Oracle vs text vs none per category and seen/unseen: the gap in standard errors."""
    index = {(r["prior"], r["category"], r["seen"]): r for r in summary if r["metric"] == metric and not r["control"]}
    out = []
    for (prior, category, seen), oracle in sorted(index.items()):
        if prior != "oracle":
            continue
        row = {"category": category, "seen": seen, "oracle": oracle["value"]}
        ok = True
        for other in ("text", "none"):
            if (other, category, seen) not in index:
                continue
            r = index[(other, category, seen)]
            gap = oracle["value"] - r["value"]
            z = gap / max((oracle["stderr"] ** 2 + r["stderr"] ** 2) ** 0.5, 1e-12)
            row[other], row[f"gap_{other}_z"] = r["value"], z
            ok &= z >= HEADROOM_Z
        row["headroom"] = ok
        out.append(row)
    return out


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
        lines += ["## Headroom (binding margin: oracle vs text vs none)", "",
                  f"Headroom holds when the oracle's margin exceeds both by ≥ {HEADROOM_Z:g} standard errors.", ""]
        table = [[r["category"], r["seen"], f"{r['oracle']:.4f}", f"{r.get('text', float('nan')):.4f}",
                  f"{r.get('gap_text_z', float('nan')):.1f}", f"{r.get('none', float('nan')):.4f}",
                  f"{r.get('gap_none_z', float('nan')):.1f}", "yes" if r["headroom"] else "NO"] for r in room]
        lines += [tabulate(table, headers=["category", "split", "oracle", "text", "z(oracle−text)", "none",
                                           "z(oracle−none)", "headroom"], tablefmt="github"), ""]
    return "\n".join(lines)


def write_outputs(run_dir: Path, rows: list[dict], summary: list[dict], config: dict) -> None:
    room = headroom(summary)
    with open(run_dir / "rows.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    atomic_write_json(run_dir / "summary.json", {"config": config, "summary": summary, "headroom": room})
    (run_dir / "report.md").write_text(render_report(summary, room))
