"""``evalkit eval-prior``: embedding-level comparison of priors on synthetic suites (no decoding).

Writes ``<out>/<run-id>/`` with ``rows.jsonl`` (one row per prior × control × item × seed),
``summary.json`` (aggregates with bootstrap CIs over prompts) and ``report.md`` (tables rendered
from the summary, and the headroom check when ``oracle`` and ``text`` are both present).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from evalkit.embedding_metrics import embedding_rows, summarize
from evalkit.serialization import atomic_write_json
from evalkit.suites.synth import SYNTH_SUITES

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


def prior_instances(name: str, clip, training_seeds=(0,), path=None, **options):
    """``(training_seed, prior)`` pairs: every requested training seed of a trained prior, else one instance."""
    from evalkit.priors.trained import TrainedPrior
    from evalkit.registry import PRIORS

    if isinstance(PRIORS.get(name), type) and issubclass(PRIORS.get(name), TrainedPrior):
        if path is not None:
            return [(None, make_prior(name, clip, path=path, **options))]
        cls = PRIORS.get(name)
        available = [seed for seed in training_seeds if (cls.shipped_dir(seed) / "config.json").is_file()]
        if not available:  # nothing shipped: the loader's error names the folder and the training command
            available = list(training_seeds[:1])
        elif len(available) < len(training_seeds):
            missing = sorted(set(training_seeds) - set(available))
            warnings.warn(f"prior {name!r}: training seeds {missing} are not shipped; evaluating {available}")
        return [(seed, make_prior(name, clip, training_seed=seed, **options)) for seed in available]
    return [(None, make_prior(name, clip, **options))]


def eval_priors(
    prior_names,
    suite_names,
    split: str = "val",
    seeds=tuple(range(42, 52)),
    controls=(),
    clip=None,
    progress: bool = True,
    training_seeds=(0,),
    paths: dict | None = None,
    options: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rows for every prior × (training seed) × suite × control, and their summary.

    ``paths`` maps a prior name to a weights folder (instead of its shipped seeds); ``options`` are passed
    to every prior's constructor that takes them (e.g. ``guidance_scale`` for the diffusion prior).
    """
    from evalkit.world.models.clip import load_world_clip
    from evalkit.registry import PRIORS, SUITES
    from evalkit.suites import load_suite

    PRIORS.check(list(prior_names))
    SUITES.check(list(suite_names))
    clip = clip if clip is not None else load_world_clip()
    paths, options = paths or {}, options or {}
    instances = {
        name: prior_instances(name, clip, training_seeds, paths.get(name), among=prior_names, **options)
        for name in prior_names
    }
    rows: list[dict] = []
    # the oracle renders its prompt: a word-shuffled prompt is no caption of the world
    jobs = [
        (s, p, t, prior, c)
        for s in suite_names
        for p in prior_names
        for t, prior in instances[p]
        for c in (None, *controls)
        if not (p == "oracle" and c == "shuffled")
    ]
    for suite_name, prior_name, training_seed, prior, control in tqdm(jobs, desc="eval-prior", disable=not progress):
        suite = load_suite(suite_name)
        new = embedding_rows(prior, suite, clip, split, seeds, control=control, prior_name=prior_name)
        for row in new:
            row["training_seed"] = training_seed
        rows += new
    return rows, summarize(rows)


def items_by_split(rows: list[dict]) -> dict[tuple, dict]:
    """Uncontrolled rows as {(prior, category, all|seen|unseen): {(item_id, seed): [rows, one per training seed]}}."""
    from evalkit.harness.paired import group_items

    return group_items((row for row in rows if not row["control"]), ("category",))


def _mean_row(group: list[dict]) -> dict:
    """One item's rows over training seeds, numeric fields averaged."""
    if len(group) == 1:
        return group[0]
    return {k: (float(np.mean([g[k] for g in group])) if isinstance(v, float) else v) for k, v in group[0].items()}


def headroom(rows: list[dict], gate: str = "binding", metrics=("binding", "margin")) -> list[dict]:
    """Oracle vs text vs none per category and seen/unseen, paired on identical (prompt, seed) items.

    For each metric: the oracle's value, each reference's value and the paired gap in standard errors
    (bootstrap over prompts). Headroom holds when the ``gate`` metric's gaps are all ≥ ``HEADROOM_Z``.
    """
    from evalkit.stats import paired_bootstrap

    index = {
        key: {item: _mean_row(group) for item, group in items.items()} for key, items in items_by_split(rows).items()
    }
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
                cmp = paired_bootstrap(
                    [reference[k][metric] for k in keys],
                    [oracle[k][metric] for k in keys],
                    clusters=[k[0] for k in keys],
                )
                result[f"{other}_{metric}"] = sum(reference[k][metric] for k in keys) / len(keys)
                result[f"z_{other}_{metric}"] = cmp.z
            result["headroom"] &= result[f"z_{other}_{gate}"] >= HEADROOM_Z
        out.append(result)
    return out


def default_comparisons(prior_names) -> list[tuple[str, str]]:
    """ECLIPSE against every other trained prior named (b − a with a the other prior)."""
    from evalkit.harness.paired import default_pairs

    return default_pairs(prior_names) if "eclipse" in prior_names else []


def compare(rows: list[dict], pairs, metrics=("binding", "margin")) -> list[dict]:
    """Paired differences b − a on identical (prompt, seed) items (each item averaged over training seeds)."""
    from evalkit.harness.paired import paired_differences

    return paired_differences([row for row in rows if not row["control"]], pairs, metrics, ("category",))


def comparison_table(comparisons: list[dict]) -> list[str]:
    from evalkit.harness.paired import comparison_table as table

    return table(comparisons, ("category",), "each item averaged over the training seeds")


def headroom_table(room: list[dict]) -> list[str]:
    """The headroom check as markdown lines (a heading, what z means, one row per category and split)."""
    from tabulate import tabulate

    gate = room[0]["gate"]
    lines = [
        "## Headroom: oracle vs text vs none",
        "",
        f"Paired on identical (prompt, seed) items; z = the oracle's lead in bootstrap standard errors "
        f"(over prompts). Headroom holds when the oracle's {gate} leads both text and none by "
        f"z ≥ {HEADROOM_Z:g}. The oracle averages {ORACLE_SAMPLES} independent renders of the caption.",
        "",
    ]
    metrics = [m for m in ("binding", "margin") if f"oracle_{m}" in room[0]]
    headers, table = ["category", "split"], []
    for metric in metrics:
        headers += [f"oracle {metric}", f"text {metric}", "z(o−t)", f"none {metric}", "z(o−n)"]
    for r in room:
        cells = [r["category"], r["seen"]]
        for metric in metrics:
            cells += [
                f"{r[f'oracle_{metric}']:.4f}",
                f"{r.get(f'text_{metric}', float('nan')):.4f}",
                f"{r.get(f'z_text_{metric}', float('nan')):.1f}",
                f"{r.get(f'none_{metric}', float('nan')):.4f}",
                f"{r.get(f'z_none_{metric}', float('nan')):.1f}",
            ]
        table.append(cells + ["yes" if r["headroom"] else "NO"])
    lines += [tabulate(table, headers=headers + ["headroom"], tablefmt="github"), ""]
    return lines


def render_report(summary: list[dict], room: list[dict], comparisons: list[dict] | None = None) -> str:
    from tabulate import tabulate

    lines = ["# Embedding-level evaluation", ""]
    metrics = sorted({r["metric"] for r in summary})
    keyed = {(r["prior"], r["control"], r["category"], r["seen"], r["metric"]): r for r in summary}
    for category in sorted({r["category"] for r in summary}):
        lines += [f"## {category}", ""]
        table = []
        for prior, control, cat, seen in sorted({k[:4] for k in keyed if k[2] == category}):
            cells = []
            for metric in metrics:
                r = keyed[(prior, control, cat, seen, metric)]
                cells.append(f"{r['value']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
            first = keyed[(prior, control, cat, seen, metrics[0])]
            seeds = first.get("n_training_seeds") or 1
            table.append([prior, control or "-", seen, first["n"], seeds, *cells])
        lines += [
            tabulate(table, headers=["prior", "control", "split", "n", "training seeds", *metrics], tablefmt="github"),
            "",
        ]
    lines += comparison_table(comparisons or [])
    if room:
        lines += headroom_table(room)
    return "\n".join(lines)


def write_outputs(run_dir: Path, rows: list[dict], summary: list[dict], config: dict, pairs=None) -> None:
    room = headroom(rows)
    comparisons = compare(rows, pairs if pairs is not None else default_comparisons(config.get("priors", [])))
    with open(run_dir / "rows.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    atomic_write_json(
        run_dir / "summary.json", {"config": config, "summary": summary, "headroom": room, "comparisons": comparisons}
    )
    (run_dir / "report.md").write_text(render_report(summary, room, comparisons))


CONTROLS = ("random", "shuffled", "swapped")


def evaluate_priors(
    priors,
    suites=SYNTH_SUITES,
    split: str = "val",
    num_seeds: int = 10,
    controls=(),
    training_seeds=(0,),
    paths: dict | None = None,
    options: dict | None = None,
    pairs=None,
    out="evalkit-runs",
    progress: bool = True,
    log=None,
) -> Path:
    """``evalkit eval-prior`` as a call: evaluate, write a new run folder under ``out`` and return it.

    Every name is checked before any prior loads, so a typo costs a second, not a finished evaluation.
    ``pairs``: ``(a, b)`` or ``"A:B"`` comparisons b − a (None: :func:`default_comparisons`); ``options``:
    prior sampling options (``num_inference_steps``, ``guidance_scale``, ``rerank``); ``log``: where notes
    go (the CLI: stderr).
    """
    from evalkit.harness.runs import new_run_dir

    prior_names, suite_names, controls = list(priors), list(suites), list(controls)
    prior_names, paths = _check_names(prior_names, suite_names, controls, dict(paths or {}), log)
    pairs = check_pairs(pairs, prior_names)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    seeds, train_seeds = tuple(range(42, 42 + num_seeds)), tuple(int(t) for t in training_seeds)
    rows, summary = eval_priors(
        prior_names,
        suite_names,
        split,
        seeds,
        controls,
        training_seeds=train_seeds,
        paths=paths,
        options=options,
        progress=progress,
    )
    run_dir = new_run_dir(out, "eval-prior-" + "-".join(prior_names))
    write_outputs(
        run_dir,
        rows,
        summary,
        {
            "priors": prior_names,
            "suites": suite_names,
            "split": split,
            "seeds": list(seeds),
            "controls": controls,
            "training_seeds": list(train_seeds),
            "paths": paths,
            "options": options,
        },
        pairs=pairs or None,
    )
    return run_dir


def _check_names(prior_names: list[str], suite_names: list[str], controls: list[str], paths: dict, log):
    """Every name checked before anything loads (with the calibration priors added); the priors and paths."""
    from evalkit.errors import SettingError
    from evalkit.registry import PRIORS, SUITES

    PRIORS.check(prior_names)
    prior_names = with_calibration(prior_names, log)
    SUITES.check(suite_names)
    for control in controls:
        if control not in CONTROLS:
            raise SettingError(f"unknown control {control!r}; choose from {', '.join(CONTROLS)} (--controls)")
    for name in paths:
        if name not in prior_names:
            raise SettingError(f"--prior-path {name}=...: NAME must be one of {', '.join(prior_names)}")
    return prior_names, paths


def with_calibration(prior_names: list[str], log=None) -> list[str]:
    """``oracle`` and ``none`` in front of trained priors: a trained prior's numbers mean something only
    between the ceiling and the floor of the same run."""
    from evalkit.priors.trained import TrainedPrior
    from evalkit.registry import PRIORS

    if not any(isinstance(PRIORS.get(p), type) and issubclass(PRIORS.get(p), TrainedPrior) for p in prior_names):
        return prior_names
    calibration = [p for p in ("oracle", "none") if p not in prior_names]
    if calibration and log is not None:
        log(f"adding the calibration rows {', '.join(calibration)}")
    return calibration + prior_names


def check_pairs(pairs, prior_names: list[str]) -> list[tuple[str, str]] | None:
    """``pairs`` as (a, b) tuples, each of priors the run has (a comparison of an absent prior would be empty)."""
    from evalkit.errors import SettingError

    if pairs is None:
        return None
    out = []
    for spec in pairs:
        a, sep, b = spec.partition(":") if isinstance(spec, str) else (spec[0], ":", spec[1])
        if not sep or a not in prior_names or b not in prior_names:
            raise SettingError(f"{spec!r}: expected A:B with both in --prior (--compare)")
        out.append((a, b))
    return out
