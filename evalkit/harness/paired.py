"""Paired comparisons of priors on identical (prompt, seed) items, for any per-item rows.

Both row kinds use it: ``evalkit eval-prior`` rows (embedding-level metrics, possibly several
training seeds per item) and ``evalkit run`` sample rows (one score per scorer and image). A
comparison b − a takes the items both priors have, averages each item over its rows (training
seeds), and bootstraps over prompts (:func:`evalkit.stats.paired_bootstrap`).

A run's comparisons are computed once, by :func:`paired_results`, and kept in ``results.json``
(key ``paired``) as JSON rows, so that the numbers a report shows can be read, diffed and gated like
every other result instead of living only inside a formatter.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

CALIBRATION = ("oracle", "text", "none", "dummy")


def group_items(rows: Iterable[dict], group: Sequence[str] = ("category",)) -> dict[tuple, dict]:
    """``{(prior, *group values, all|seen|unseen): {(item_id, seed): [rows]}}``."""
    out: dict[tuple, dict] = {}
    for row in rows:
        splits = ("all", "seen" if row["seen"] else "unseen") if row.get("seen") is not None else ("all",)
        head = (row["prior"], *(row[g] for g in group))
        for split in splits:
            out.setdefault((*head, split), {}).setdefault((row["item_id"], row["seed"]), []).append(row)
    return out


def default_pairs(prior_names: Sequence[str]) -> list[tuple[str, str]]:
    """``eclipse`` against every other non-calibration prior (as b − a, a the other prior); without
    eclipse, the first non-calibration prior against each later one."""
    trained = [p for p in prior_names if p not in CALIBRATION]
    if "eclipse" in trained:
        return [(other, "eclipse") for other in trained if other != "eclipse"]
    return [(trained[0], other) for other in trained[1:]]


def paired_differences(
    rows: Iterable[dict],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    group: Sequence[str] = ("category",),
    n_boot: int = 2000,
    score_range: float = 0.0,
) -> list[dict]:
    """One dict per (pair, group, split, metric): b − a with its 95 % CI, p, z, n (paired items) and
    n_prompts. ``score_range``: 1 for per-image scores in [0, 1] (floors the error,
    :func:`evalkit.stats.paired_floor`)."""
    from evalkit.stats import paired_bootstrap

    per_item = group_items(rows, group)
    out = []
    for a, b in pairs:
        for key, items_a in sorted(per_item.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
            if key[0] != a or (b, *key[1:]) not in per_item:
                continue
            items_b = per_item[(b, *key[1:])]
            keys = sorted(set(items_a) & set(items_b))
            if not keys:
                continue
            for metric in metrics:
                va = [float(np.mean([r[metric] for r in items_a[k]])) for k in keys]
                vb = [float(np.mean([r[metric] for r in items_b[k]])) for k in keys]
                cmp = paired_bootstrap(va, vb, clusters=[k[0] for k in keys], n_boot=n_boot, score_range=score_range)
                out.append(
                    {
                        "a": a,
                        "b": b,
                        **dict(zip(group, key[1:-1])),
                        "seen": key[-1],
                        "metric": metric,
                        "difference": cmp.difference,
                        "stderr": cmp.stderr,
                        "ci_low": cmp.ci_low,
                        "ci_high": cmp.ci_high,
                        "p_value": cmp.p_value,
                        "z": cmp.z,
                        "n": cmp.n,
                        "n_prompts": cmp.n_clusters,
                    }
                )
    return out


def comparison_rows(comparisons: list[dict], group: Sequence[str] = ("category",)) -> tuple[list[str], list[list]]:
    """(headers, rows) of a comparison table."""
    rows = [
        [
            f"{c['b']} − {c['a']}",
            *(c[g] for g in group),
            c["seen"],
            c["metric"],
            c.get("n_prompts", "–"),
            c["n"],
            f"{c['difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            format_z(c["z"]),
            format_p(c["p_value"]),
        ]
        for c in comparisons
    ]
    return ["difference", *group, "split", "metric", "prompts", "images", "value [95% CI]", "z", "p"], rows


def format_z(z: float) -> str:
    return f"{z:+.1f}" if math.isfinite(z) else ("+inf" if z > 0 else "-inf")


def format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_note(note: str = "", floored: bool = True) -> str:
    floor = (
        " (floored at half a pseudo-image differing by the scorer's resolution: 1 for scores that flip)"
        if floored
        else ""
    )
    return (
        "Same prompts and seeds" + (f"; {note}" if note else "") + "; one procedure for every number: the "
        f"standard error of the mean difference from a bootstrap over prompts{floor}, z = difference / error, "
        "95 % CI = difference ± 1.96 errors, two-sided normal p."
    )


def comparison_table(comparisons: list[dict], group: Sequence[str] = ("category",), note: str = "") -> list[str]:
    """Markdown lines: a heading and one row per comparison."""
    from tabulate import tabulate

    if not comparisons:
        return []
    headers, rows = comparison_rows(comparisons, group)
    return [
        "## Paired comparisons",
        "",
        comparison_note(note, floored=False),
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
        "",
    ]


def prior_order(priors: dict, rows: list[dict]) -> list[str]:
    """Ceiling first, trained priors by size, floor last: the order of every table, and the order that
    decides :func:`default_pairs` when no eclipse is present."""
    names = list(priors) or sorted({r["prior"] for r in rows})
    trained = sorted(
        (n for n in names if n not in CALIBRATION), key=lambda n: (priors.get(n, {}).get("total_parameters", 0), n)
    )
    return [n for n in ("oracle", "text") if n in names] + trained + [n for n in ("none", "dummy") if n in names]


def run_pairs(priors: dict, rows: list[dict]) -> list[tuple[str, str]]:
    """The comparisons a run's report shows unless asked for others (``evalkit report --compare``)."""
    present = {r["prior"] for r in rows}
    return default_pairs([p for p in prior_order(priors, rows) if p in present])


def paired_results(
    samples: Iterable[dict],
    pairs: Sequence[tuple[str, str]] | None = None,
    rows: Sequence[dict] = (),
    priors: dict | None = None,
) -> list[dict]:
    """JSON rows of b − a on a run's per-image scores, one per pair × scorer × suite × split.

    ``samples``: ``samples.jsonl`` rows (a scorer's not-applicable rows are left out, as on load);
    ``rows``: the result rows, whose ``score_resolution`` floors each scorer's error (a test of scores that
    flip must not claim more certainty than one flipped image allows); ``pairs`` None: :func:`run_pairs`
    of ``priors`` and ``rows``. Each row: ``a``, ``b``, ``suite``, ``category``, ``seen``, ``scorer``,
    ``metric``, ``diff``, ``stderr``, ``ci_low``, ``ci_high``, ``p``, ``z``, ``n`` (paired images) and
    ``n_prompts``; ordered by scorer, then pair, then suite and split.
    """
    samples = [s for s in samples if not (s.get("details") or {}).get("not_applicable")]
    pairs = run_pairs(priors or {}, list(rows)) if pairs is None else list(pairs)
    resolution = {r["metric"]: float(r.get("score_resolution", 1.0)) for r in rows}
    categories: dict[str, set] = {}
    for sample in samples:
        categories.setdefault(sample["suite"], set()).add(sample["category"])
    out = []
    for scorer in sorted({s["scorer"] for s in samples}):
        mine = [s for s in samples if s["scorer"] == scorer]
        for c in paired_differences(mine, pairs, ["score"], ("suite",), score_range=resolution.get(scorer, 1.0)):
            category = ",".join(sorted(categories[c["suite"]]))
            out.append(
                {
                    "a": c["a"],
                    "b": c["b"],
                    "suite": c["suite"],
                    "category": category,
                    "seen": c["seen"],
                    "scorer": scorer,
                    "metric": scorer,
                    "diff": c["difference"],
                    "stderr": c["stderr"],
                    "ci_low": c["ci_low"],
                    "ci_high": c["ci_high"],
                    "p": c["p_value"],
                    "z": c["z"],
                    "n": c["n"],
                    "n_prompts": c["n_prompts"],
                }
            )
    return out


def paired_table(paired: list[dict]) -> tuple[list[str], list[list]]:
    """(headers, rows) of a run report's table of :func:`paired_results` rows."""
    rows = [
        [
            f"{c['b']} − {c['a']}",
            c["suite"],
            c["seen"],
            c["metric"],
            c.get("n_prompts", "–"),
            c["n"],
            f"{c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            format_z(c["z"]),
            format_p(c["p"]),
        ]
        for c in paired
    ]
    return ["difference", "suite", "split", "metric", "prompts", "images", "value [95% CI]", "z", "p"], rows
