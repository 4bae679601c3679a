"""Reports of ``evalkit run`` folders: tables, the parameter plot, image grids, worst images.

Everything is rendered from the saved rows (``results.json`` and ``samples.jsonl``); nothing is
computed inside a formatter. One list of blocks (headings, paragraphs, tables, images) is rendered
twice: as markdown (``report.md``) and as a self-contained-styled HTML page (``report.html``) whose
images are relative links into the run folders. ``evalkit report RUN_DIR...`` renders several runs
of one protocol together (e.g. priors run on different days) into a new folder.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import CorruptFileError, EvalkitError
from evalkit.harness.paired import CALIBRATION, comparison_note, paired_results, paired_table, prior_order, run_pairs
from evalkit.harness.runs import RunData, check_image, load_run

#: the metric of the parameter table and plot: B-VQA style first, as the paper's table
HEADLINE_METRICS = ("binding", "blip-vqa", "analytic")
#: the paper's metric of a category where it is not the attribute-binding one (T2I-CompBench: the detector's
#: position score for spatial, CLIP for non-spatial, 3-in-1 for complex), before :data:`HEADLINE_METRICS`
CATEGORY_METRICS = {"spatial": ("t2i-spatial",), "non-spatial": ("t2i-clip",), "complex": ("t2i-complex",)}
#: categories in the paper's column order (Tables 1 and 2); others follow alphabetically
CATEGORY_ORDER = ("color", "shape", "texture", "spatial", "non-spatial", "complex")
GRID_PROMPTS = 6  # prompts per suite in the side-by-side grids
WORST_PER_PRIOR = 4


def check_report_images(runs: Sequence[RunData], samples: list[dict], order: list[str]) -> None:
    """Check every image a report of ``runs`` reads or links (see :func:`check_image`), before it writes
    anything; images missing from disk are left out of the report as before (runs kept without images)."""
    roots = sorted((str(run.path) for run in runs), key=len, reverse=True)
    for image in sorted(report_images(samples, order)):
        if not os.path.lexists(image):
            continue
        root = next((r for r in roots if image.startswith(r.rstrip(os.sep) + os.sep)), None)
        if root is None:  # cannot happen for samples of _merged; refuse rather than read
            raise CorruptFileError(f"image {image} lies outside the run folders of the report: refused")
        check_image(root, os.path.relpath(image, root))


# --------------------------------------------------------------------------- blocks


@dataclass
class Table:
    headers: list[str]
    rows: list[list]


@dataclass
class Image:
    path: str  # relative to the report folder
    alt: str


@dataclass
class Gallery:
    """Images with captions (worst-scored images): a table of thumbnails in HTML, a list in markdown."""

    entries: list[tuple[str, str]]  # (image path relative to the report, caption)


def to_markdown(blocks: list) -> str:
    from tabulate import tabulate

    out = []
    for block in blocks:
        if isinstance(block, tuple):  # ("h1"|"h2"|"p", text)
            kind, text = block
            out.append({"h1": "# ", "h2": "## ", "h3": "### "}.get(kind, "") + text)
        elif isinstance(block, Table):
            out.append(tabulate(block.rows, headers=block.headers, tablefmt="github", disable_numparse=True))
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.path})")
        elif isinstance(block, Gallery):
            out.append("\n".join(f"- ![]({p}) {caption}" for p, caption in block.entries))
        out.append("")
    return "\n".join(out)


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{image-rendering:pixelated;max-width:100%}.thumb{width:96px}
code{background:#f3f3f3;padding:1px 3px}"""


def to_html(blocks: list, title: str) -> str:
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{HTML_STYLE}</style></head><body>"
    ]
    for block in blocks:
        if isinstance(block, tuple):
            kind, text = block
            tag = kind if kind in ("h1", "h2", "h3") else "p"
            out.append(f"<{tag}>{_inline_html(text)}</{tag}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            out.append(f"<p><img src='{html.escape(block.path)}' alt='{html.escape(block.alt)}'></p>")
        elif isinstance(block, Gallery):
            rows = "".join(
                f"<tr><td><img class='thumb' src='{html.escape(p)}'></td><td>{_inline_html(c)}</td></tr>"
                for p, c in block.entries
            )
            out.append(f"<table>{rows}</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    """Markdown's `code` and *emphasis* in a line of text, as HTML."""
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", escaped)


# --------------------------------------------------------------------------- content


def _order_categories(categories) -> list[str]:
    return sorted(
        set(categories), key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c)
    )


def _merged(runs: Sequence[RunData]) -> tuple[dict, dict, list[dict], list[dict]]:
    """(protocol, priors info, result rows, samples with image paths made absolute) of runs of one protocol."""
    protocols = {run.results["protocol_hash"] for run in runs}
    if len(protocols) > 1:
        lines = [f"  {run.path}: {run.results['protocol_hash']} {run.results['protocol']}" for run in runs]
        raise EvalkitError(
            "these runs used different protocols; a report compares like with like:\n" + "\n".join(lines)
        )
    priors, rows, samples, seen = {}, [], [], set()
    for run in runs:
        for name, info in run.results.get("priors", {}).items():
            if name in seen:
                raise EvalkitError(f"prior {name!r} appears in more than one of the runs; report them separately")
            priors[name] = info
        seen |= set(run.results.get("priors", {}))
        rows += run.results["rows"]
        for sample in run.samples:
            sample = dict(sample)
            if sample.get("image_path"):
                sample["image_path"] = str(run.path / sample["image_path"])
            samples.append(sample)
    return runs[0].results["protocol"], priors, rows, samples


def _counts(rows: list[dict], prior: str) -> str:
    """``prompts × images per prompt`` (or ``prompts / images``) behind a prior's "all" rows."""
    mine = [r for r in rows if r["prior"] == prior and r["seen"] == "all"]
    images = max((int(r["n"]) for r in mine), default=0)
    prompts = max((int(r.get("n_prompts") or 0) for r in mine), default=0)
    if not prompts:
        return f"{images} images"
    return f"{prompts} × {images // prompts}" if images % prompts == 0 else f"{prompts} / {images}"


def score_tables(rows: list[dict], order: list[str]) -> list:
    """Per scorer: priors × categories (the run's prompts, with 95 % CI), then seen / unseen."""
    blocks = []
    for metric in sorted({r["metric"] for r in rows}):
        chosen = [r for r in rows if r["metric"] == metric]
        categories = _order_categories(r["category"] for r in chosen)
        index = {(r["prior"], r["category"], r["seen"]): r for r in chosen}
        main, split = [], []
        for prior in order:
            if not any(k[0] == prior for k in index):
                continue
            cells, split_cells = [], []
            for category in categories:
                r = index.get((prior, category, "all"))
                cells.append(f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "–")
                parts = [index.get((prior, category, s)) for s in ("seen", "unseen")]
                split_cells.append(" / ".join(f"{p['value']:.3f} ({_prompts(p)})" if p else "–" for p in parts))
            main.append([prior, *cells, _counts(chosen, prior)])
            split.append([prior, *split_cells])
        arrow = "higher is better" if chosen[0].get("higher_is_better", True) else "lower is better"
        blocks += [
            ("h2", f"Scores: {metric}"),
            (
                "p",
                f"Mean per-image score over the val prompts this run scored, with a 95 % bootstrap CI over "
                f"prompts ({arrow}); the last column: prompts × images per prompt, per category.",
            ),
            Table(["prior", *categories, "prompts × images"], main),
        ]
        if any(seen in ("seen", "unseen") for _, _, seen in index):  # suites without the split have no table
            blocks += [
                ("p", "Seen / unseen attribute–object combinations (prompts in brackets):"),
                Table(["prior", *categories], split),
            ]
    return blocks


def _prompts(row: dict) -> str:
    return f"{row['n_prompts']}" if row.get("n_prompts") else f"{row['n']} img"


def verdicts(comparisons: list[dict], rows: list[dict], metrics: dict[str, str]) -> list[str]:
    """One line per suite: which trained prior leads on the suite's metric (``metrics``, :func:`suite_metrics`),
    by how much over the next, and whether that lead is resolved (|z| ≥ 1.96, paired) at this run's number of
    prompts. The metric is named on each line when the suites do not all share one."""
    lines = []
    by_suite: dict[str, list[dict]] = {}
    for r in rows:
        if metrics.get(r["suite"]) == r["metric"] and r["seen"] == "all" and r["prior"] not in CALIBRATION:
            by_suite.setdefault(r["suite"], []).append(r)
    named = len(set(metrics.values())) > 1
    for suite, members in sorted(by_suite.items()):
        metric = metrics[suite]
        label = f"**{suite}** ({metric})" if named else f"**{suite}**"
        ranked = sorted(members, key=lambda r: -r["value"] if r.get("higher_is_better", True) else r["value"])
        lead = ranked[0]
        n = (f"{lead['n_prompts']} prompts, " if lead.get("n_prompts") else "") + f"{lead['n']} images"
        if len(ranked) == 1:
            oracle = next(
                (
                    r
                    for r in rows
                    if r["prior"] == "oracle" and r["suite"] == suite and r["metric"] == metric and r["seen"] == "all"
                ),
                None,
            )
            ref = f"; the oracle {oracle['value']:.3f}" if oracle else ""
            lines.append(f"{label}: {lead['prior']} {lead['value']:.3f}, the only trained prior{ref} ({n}).")
            continue
        second = ranked[1]
        pair = next(
            (
                c
                for c in comparisons
                if c["metric"] == metric
                and c.get("suite") == suite
                and c["seen"] == "all"
                and {c["a"], c["b"]} == {lead["prior"], second["prior"]}
            ),
            None,
        )
        gap = abs(lead["value"] - second["value"])
        if pair is None:
            status = "not compared paired"
        else:
            sign = 1.0 if pair["b"] == lead["prior"] else -1.0
            low, high = sorted((sign * pair["ci_low"], sign * pair["ci_high"]))
            resolved = abs(pair["z"]) >= 1.96
            status = (
                f"{'resolved' if resolved else 'not resolved at this n'} (paired z {abs(pair['z']):.1f}, "
                f"95 % CI of the lead {low:+.3f} to {high:+.3f})"
            )
        lines.append(
            f"{label}: {lead['prior']} leads with {lead['value']:.3f}, {gap:.3f} ahead of "
            f"{second['prior']} ({second['value']:.3f}) — {status}; {n}."
        )
    return lines


def _column_header(category: str, metric: str, main: str | None) -> str:
    return category if metric == main else f"{category} ({metric})"


def parameter_table(rows: list[dict], priors: dict, order: list[str], columns: dict[str, str]) -> Table:
    """The paper's shape: prior, trainable and total parameters, training data, one column per category, each
    scored by its metric (:func:`column_metrics`; named in the header where it is not the headline one)."""
    chosen = {
        (r["prior"], r["category"]): r["value"]
        for r in rows
        if columns.get(r["category"]) == r["metric"] and r["seen"] == "all"
    }
    categories = _order_categories(c for _, c in chosen)
    main = headline_metric(rows)
    counted = [r for r in rows if columns.get(r["category"]) == r["metric"]]
    table = []
    for prior in order:
        info = priors.get(prior, {})
        table.append(
            [
                prior,
                f"{info.get('trainable_parameters', 0):,}",
                f"{info.get('total_parameters', 0):,}",
                info.get("data") or "–",
                *(f"{chosen[(prior, c)]:.3f}" if (prior, c) in chosen else "–" for c in categories),
                _counts(counted, prior),
            ]
        )
    headers = [_column_header(c, columns[c], main) for c in categories]
    return Table(["prior", "trainable params", "total params", "training data", *headers, "prompts × images"], table)


def _parameter_panel(ax, chosen: list[dict], priors: dict, category: str, metric: str) -> None:
    """One category's panel: trained priors as points with CIs, calibration priors as reference lines."""
    from matplotlib.ticker import NullFormatter

    points = []
    for r in chosen:
        params = priors.get(r["prior"], {}).get("trainable_parameters", 0)
        if params > 0:
            points.append((params, r))
            ax.errorbar(
                [params],
                [r["value"]],
                yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                fmt="o",
                capsize=3,
                alpha=0.85,
            )
        else:
            ax.axhline(r["value"], ls="--", lw=0.8, color="grey")
            ax.annotate(
                r["prior"],
                (0.01, r["value"]),
                xycoords=("axes fraction", "data"),
                fontsize=9,
                color="grey",
                va="bottom",
            )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.5, hi * 4)  # room for the labels on the right
    low, high = ax.get_ylim()
    for x, y, name in _spread_labels(points, (high - low) * 0.07):
        params, row = next((p, r) for p, r in points if r["prior"] == name)
        ax.annotate(
            name,
            (params, row["value"]),
            xytext=(x, y),
            textcoords="data",
            fontsize=9,
            va="center",
            arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"),
        )
    ax.set_title(category)
    ax.set_xlabel("prior parameters (trainable)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)


def plot_parameters(rows: list[dict], priors: dict, columns: dict[str, str], path: Path) -> Path | None:
    """Score against the prior's trainable parameters (log scale), one panel per category on its metric
    (:func:`column_metrics`); calibration priors as horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if columns.get(r["category"]) == r["metric"] and r["seen"] == "all"]
    categories = _order_categories(r["category"] for r in chosen)
    if not any(priors.get(r["prior"], {}).get("trainable_parameters", 0) > 0 for r in chosen):
        return None
    fig, axes = plt.subplots(1, len(categories), figsize=(5.6 * len(categories), 4.6), squeeze=False)
    for ax, category in zip(axes[0], categories):
        _parameter_panel(ax, [r for r in chosen if r["category"] == category], priors, category, columns[category])
    fig.tight_layout()
    import io

    from evalkit.serialization import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=150, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())  # a full disk: WriteError, and no half-written PNG
    return path


def _spread_labels(points: list[tuple[int, dict]], gap: float, span: float = 0.5) -> list[tuple[float, float, str]]:
    """(label x, label height, prior) for each point. Points within ``span`` decades of each other share a
    label column right of the rightmost of them; there the labels go in value order, at least ``gap``
    apart, centred on the points' own values, so labels of priors of one or a similar size never overlap."""
    import math

    out, ordered = [], sorted(points, key=lambda pr: pr[0])
    while ordered:
        first = math.log10(ordered[0][0])
        group = [pr for pr in ordered if math.log10(pr[0]) - first < span]
        ordered = ordered[len(group) :]
        x = max(p for p, _ in group) * 1.35
        values = sorted((r["value"], r["prior"]) for _, r in group)
        heights = [values[0][0]]
        for value, _ in values[1:]:
            heights.append(max(value, heights[-1] + gap))
        shift = (sum(v for v, _ in values) - sum(heights)) / len(values)
        out += [(x, height + shift, name) for (value, name), height in zip(values, heights)]
    return out


def grid_selection(
    samples: list[dict], prompts_per_suite: int = GRID_PROMPTS
) -> dict[str, tuple[int, list[str], dict]]:
    """Per suite: (seed, item ids, {(prior, item): sample}) of the side-by-side grid — the first prompts
    at the first seed, scored by the suite's verdict scorer (:func:`suite_metrics`)."""
    scorers = suite_metrics(
        [{"suite": s["suite"], "category": s.get("category", ""), "metric": s["scorer"]} for s in samples]
    )
    chosen = [s for s in samples if scorers.get(s["suite"]) == s["scorer"] and s.get("image_path")]
    out = {}
    for suite in sorted({s["suite"] for s in chosen}):
        in_suite = [s for s in chosen if s["suite"] == suite]
        seed = min(s["seed"] for s in in_suite)
        index = {(s["prior"], s["item_id"]): s for s in in_suite if s["seed"] == seed}
        items = sorted({s["item_id"] for s in in_suite if s["seed"] == seed})[:prompts_per_suite]
        out[suite] = (seed, items, index)
    return out


def worst_selection(samples: list[dict], order: list[str], per_prior: int = WORST_PER_PRIOR) -> dict[str, list[dict]]:
    """Per prior: its lowest-scored images (ties broken by item and seed)."""
    out = {}
    for prior in order:
        mine = sorted(
            (s for s in samples if s["prior"] == prior and s.get("image_path")),
            key=lambda s: (s["score"], s["item_id"], s["seed"], s["scorer"]),
        )[:per_prior]
        if mine:
            out[prior] = mine
    return out


def report_images(samples: list[dict], order: list[str]) -> set[str]:
    """The image paths a report shows (to keep a report's images without the whole run)."""
    paths = {s["image_path"] for rows in worst_selection(samples, order).values() for s in rows}
    for _, items, index in grid_selection(samples).values():
        paths |= {s["image_path"] for (prior, item), s in index.items() if item in items}
    return paths


def grid_images(samples: list[dict], order: list[str], out_dir: Path) -> list[Image]:
    """Per suite: the first prompts at the first seed, one row per prompt, one column per prior."""
    from PIL import Image as PILImage

    from evalkit.report.grid import save_image_grid

    blocks = []
    for suite, (seed, items, index) in grid_selection(samples).items():
        columns = [p for p in order if any((p, i) in index for i in items)]
        images, titles = [], []
        for item in items:
            for prior in columns:
                sample = index.get((prior, item))
                if sample is None or not Path(sample["image_path"]).is_file():
                    continue
                with PILImage.open(sample["image_path"]) as picture:
                    images.append(np.asarray(picture.convert("RGB")))
                head = f"{sample['prompt']}\n" if prior == columns[0] else ""
                titles.append(f"{head}{prior}\n{sample['scorer']} {sample['score']:.2f}")
        if len(images) != len(items) * len(columns) or not images:
            continue  # images missing from disk: no misleading partial grid
        scorer = next(iter(index.values()))["scorer"]
        path = _write_atomically(
            out_dir / f"grid-{suite}.png",
            lambda tmp: save_image_grid(
                tmp, np.stack(images), titles, columns=len(columns), scale=5, wrap=20, lines=6, fontsize=10
            ),
        )
        blocks += [
            ("h3", f"{suite}: seed {seed}, one column per prior; under each image its {scorer} score"),
            Image(path.name, f"grid {suite}"),
        ]
    return blocks


def _write_atomically(path: Path, write) -> Path:
    """``write(temporary path)`` then a rename onto ``path`` (:func:`evalkit.serialization.atomic_write`)."""
    from evalkit.serialization import atomic_write

    return atomic_write(path, write, keep_suffix=True)


def worst_images(samples: list[dict], order: list[str], out_dir: Path) -> list:
    blocks = []
    for prior, rows in worst_selection(samples, order).items():
        entries = []
        for s in rows:
            questions = ", ".join(f"{q['question']} {q['p']:.2f}" for q in s.get("questions", []))
            caption = f"`{prior}` {s['suite']} seed {s['seed']} ({s['scorer']}): *{s['prompt']}* → {s['score']:.2f}" + (
                f" ({questions})" if questions else ""
            )
            entries.append((os.path.relpath(s["image_path"], out_dir), caption))
        blocks += [("h3", prior), Gallery(entries)]
    return blocks


def headline_metric(rows: list[dict]) -> str | None:
    metrics = sorted({r["metric"] for r in rows})
    return next((m for m in HEADLINE_METRICS if m in metrics), metrics[0] if metrics else None)


def column_metrics(rows: list[dict]) -> dict[str, str]:
    """Category → the metric of its column in the parameter table and plot, in column order: the paper's for
    that category (:data:`CATEGORY_METRICS`) when the run scored it, else the first of :data:`HEADLINE_METRICS`
    scored on it, else the run's headline metric if scored on it (a category with none of these has no column)."""
    found: dict[str, set] = {}
    for r in rows:
        found.setdefault(r["category"], set()).add(r["metric"])
    main = headline_metric(rows)
    out = {}
    for category in _order_categories(found):
        preferred = (*CATEGORY_METRICS.get(category, ()), *HEADLINE_METRICS, main)
        metric = next((m for m in preferred if m in found[category]), None)
        if metric is not None:
            out[category] = metric
    return out


def suite_metrics(rows: list[dict]) -> dict[str, str]:
    """Suite → the metric its verdict is given on: the column metric of its first category (:func:`column_metrics`)."""
    columns = column_metrics(rows)
    categories: dict[str, set] = {}
    for r in rows:
        categories.setdefault(r["suite"], set()).add(r["category"])
    out = {}
    for suite, found in sorted(categories.items()):
        first = next((c for c in columns if c in found), None)
        if first is not None:
            out[suite] = columns[first]
    return out


def unknown_words_summary(found: dict, top: int = 8) -> list[str]:
    """One line per suite and encoder, e.g. ``t2i-compbench-color: 212 of 300 prompts ... (bench ×3, ...)``."""
    lines = []
    for suite, spaces in found.items():
        for space, entry in spaces.items():
            ranked = sorted(entry["words"].items(), key=lambda kv: (-kv[1], kv[0]))  # JSON may reorder keys
            words = ", ".join(f"{w} ×{n}" for w, n in ranked[:top])
            more = len(entry["words"]) - top
            lines.append(
                f"{suite}: {entry['with_unknown_words']} of {entry['prompts']} prompts have words outside "
                f"the {space} text encoder's vocabulary, encoded as <unk> ({words}"
                + (f", and {more} more" if more > 0 else "")
                + ")"
            )
    return lines


def not_applicable_lines(found: dict, top: int = 3) -> list[str]:
    """One line per suite and scorer whose items it marked not applicable (left out of every mean)."""
    lines = []
    for suite, scorers in found.items():
        for scorer, entry in scorers.items():
            reasons = "; ".join(f"{reason} ({n})" for reason, n in list(entry["reasons"].items())[:top])
            lines.append(
                f"{suite}: {scorer} cannot score {entry['prompts']} prompt(s) ({entry['images']} image rows), "
                f"left out of its means: {reasons}"
            )
    return lines


def report_blocks(runs: Sequence[RunData], out_dir: Path, pairs: Sequence[tuple[str, str]] | None = None) -> list:
    protocol, priors, rows, samples = _merged(runs)
    order = prior_order(priors, rows)
    blocks = _header_blocks(runs, protocol)
    blocks += score_tables(rows, order)
    blocks += _parameter_blocks(rows, priors, order, out_dir)
    blocks += _comparison_blocks(runs, samples, rows, priors, pairs)
    grids = grid_images(samples, order, out_dir)
    if grids:
        blocks += [("h2", "Same prompt and seed across priors")] + grids
    worst = worst_images(samples, order, out_dir)
    if worst:
        blocks += [
            ("h2", "Lowest-scored images"),
            ("p", "With each question's probability: why an image scored low."),
        ] + worst
    timings = [
        [
            run.path.name,
            run.results.get("images", ""),
            run.results.get("wall_time_s", ""),
            ", ".join(f"{k} {v:.1f}" for k, v in run.results.get("timings_s", {}).items()),
            _cache_summary(run.results.get("cache")),
        ]
        for run in runs
    ]
    blocks += [("h2", "Runs"), Table(["run", "images", "wall s", "stage s", "cache"], timings)]
    return blocks


def _header_blocks(runs: Sequence[RunData], protocol: dict) -> list:
    """The title, the protocol line, vocabulary / not-scored notes and the random-weights warning."""
    blocks: list = [
        ("h1", "evalkit run report"),
        (
            "p",
            f"Protocol `{runs[0].results['protocol_hash']}`: decoder {protocol['decoder']}, "
            f"{protocol['num_inference_steps']} steps, guidance {protocol['guidance_scale']}, "
            f"{protocol['images_per_prompt']} images per prompt from seed {protocol['seed']}, scorer "
            f"{protocol['scorer']} (version {protocol['scorer_version']}); decoded in {protocol.get('dtype')}. "
            "Runs: " + ", ".join(f"`{run.path.name}`" + _where(run.results.get("environment")) for run in runs) + ".",
        ),
    ]
    for run in runs:
        for line in unknown_words_summary(run.results.get("unknown_words", {})):
            blocks.append(("p", f"**Vocabulary.** {line}."))
        for line in not_applicable_lines(run.results.get("not_applicable", {})):
            blocks.append(("p", f"**Not scored.** {line}."))
    if protocol.get("random_init"):
        blocks.append(
            (
                "p",
                f"**Random weights** (`--random-init {protocol['random_init']}`): the priors, text encoders "
                "and decoder were built at their architectures with random weights; the images are noise "
                "and the scores mean nothing. For speed and memory measurements only.",
            )
        )
    return blocks


def _scores_note(rows: list[dict], columns: dict[str, str]) -> str:
    main = headline_metric(rows)
    others = [f"{c}: {m}" for c, m in columns.items() if m != main]
    return f"Scores: {main}" + (f" ({'; '.join(others)})" if others else "") + ", every prompt the run scored."


def _parameter_blocks(rows: list[dict], priors: dict, order: list, out_dir: Path) -> list:
    """The parameter-versus-composition table and plot (none without a headline metric)."""
    blocks: list = []
    columns = column_metrics(rows)
    if columns:
        blocks += [
            ("h2", "Parameters versus composition"),
            (
                "p",
                "Trainable: the prior's own parameters. Total: prior + the text encoder it reads + the decoder. "
                + _scores_note(rows, columns),
            ),
            parameter_table(rows, priors, order, columns),
        ]
        plot = plot_parameters(rows, priors, columns, out_dir / "parameters.png")
        if plot is not None:
            blocks.append(Image(plot.name, "score against prior parameters"))
    return blocks


def _comparison_blocks(runs, samples, rows: list[dict], priors: dict, pairs) -> list:
    """The verdicts and the paired comparisons."""
    blocks: list = []
    metrics = suite_metrics(rows)
    comparisons, leaders = _comparisons(runs, samples, rows, priors, pairs, metrics)
    lines = verdicts(comparisons + leaders, rows, metrics)
    if lines:
        shared = set(metrics.values())
        blocks += [
            ("h2", f"Verdicts ({shared.pop()})" if len(shared) == 1 else "Verdicts"),
            (
                "p",
                "Per suite: the leading trained prior, its lead over the next "
                "one and whether the paired test resolves it (|z| ≥ 1.96) at this number of prompts.",
            ),
        ]
        blocks += [("p", line) for line in lines]
    if comparisons:
        blocks += [
            ("h2", "Paired comparisons"),
            ("p", comparison_note("b − a per image score")),
            Table(*paired_table(comparisons)),
        ]
    return blocks


def _where(environment: dict | None) -> str:
    if not environment:
        return ""
    device = environment.get("gpu") or environment.get("cpu_model") or environment.get("device")
    return f" ({device}, {environment.get('threads')} threads, {environment.get('decoder_dtype')})"


def _comparisons(
    runs: Sequence[RunData], samples: list[dict], rows: list[dict], priors: dict, pairs, metrics: dict[str, str]
) -> tuple[list[dict], list[dict]]:
    """(the paired comparisons asked for or the run's default ones, the verdicts' extra leader-vs-next ones)."""
    chosen_pairs = list(pairs) if pairs is not None else run_pairs(priors, rows)
    comparisons, leaders = _paired(runs, samples, rows, chosen_pairs), []
    for metric in sorted(set(metrics.values())):  # each suite's leader against the next prior, asked for or not
        mine = [r for r in rows if metrics.get(r["suite"]) == metric]
        ranked = _leading_pairs(mine, metric)
        extra = [p for p in ranked if p not in chosen_pairs and p[::-1] not in chosen_pairs]
        leaders += _paired(runs, [s for s in samples if s["scorer"] == metric], rows, extra)
    return comparisons, leaders


def _paired(runs: Sequence[RunData], samples: list[dict], rows: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """:func:`evalkit.harness.paired.paired_results` rows of ``pairs``: those a run stored in ``results.json`` (key
    ``paired``), the others (older runs, pairs asked for later, pairs across runs) computed the same way."""
    stored: dict[tuple, list[dict]] = {}
    for run in runs:
        for row in run.results.get("paired") or []:
            stored.setdefault((row["scorer"], row["a"], row["b"]), []).append(row)
    out = []
    for scorer in sorted({s["scorer"] for s in samples}):
        mine = None
        for a, b in pairs:
            if (scorer, a, b) not in stored:
                mine = mine if mine is not None else [s for s in samples if s["scorer"] == scorer]
                stored[(scorer, a, b)] = paired_results(mine, [(a, b)], rows)
            out += stored[(scorer, a, b)]
    return out


def _leading_pairs(rows: list[dict], metric: str) -> list[tuple[str, str]]:
    """(second, leader) per suite among the trained priors on ``metric``."""
    out = []
    for suite in sorted({r["suite"] for r in rows}):
        members = [
            r
            for r in rows
            if r["suite"] == suite and r["metric"] == metric and r["seen"] == "all" and r["prior"] not in CALIBRATION
        ]
        ranked = sorted(members, key=lambda r: -r["value"] if r.get("higher_is_better", True) else r["value"])
        if len(ranked) > 1 and (ranked[1]["prior"], ranked[0]["prior"]) not in out:
            out.append((ranked[1]["prior"], ranked[0]["prior"]))
    return out


def _cache_summary(cache: dict | None) -> str:
    if not cache or not cache.get("enabled"):
        return "off"
    hits, misses = cache["hits"], cache["misses"]
    return f"images reused {hits.get('image', 0)}, made {misses.get('image', 0)}"


def summary_markdown(run_dirs: Sequence[str | os.PathLike]) -> str:
    """The score tables and the parameter table of runs, as markdown (what the CLI prints)."""
    runs = [load_run(d) for d in run_dirs]
    _, priors, rows, _ = _merged(runs)
    order = prior_order(priors, rows)
    blocks = score_tables(rows, order)
    columns = column_metrics(rows)
    if columns:
        blocks += [
            ("h2", f"Parameters versus composition ({headline_metric(rows)})"),
            parameter_table(rows, priors, order, columns),
        ]
    return to_markdown(blocks)


#: the files a report writes (besides ``grid-<suite>.png``)
REPORT_FILES = ("report.md", "report.html", "parameters.png")


def _report_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.name in REPORT_FILES or (p.name.startswith("grid-") and p.name.endswith(".png"))
    )


def _render(runs: Sequence[RunData], out_dir: Path, pairs) -> Path:
    from evalkit.errors import WriteError
    from evalkit.serialization import atomic_write_text

    try:
        blocks = report_blocks(runs, out_dir, pairs)
        atomic_write_text(out_dir / "report.md", to_markdown(blocks))
        atomic_write_text(out_dir / "report.html", to_html(blocks, "evalkit report"))
    except WriteError:
        raise
    except OSError as error:  # e.g. matplotlib on a full disk
        raise WriteError(f"could not write the report in {out_dir}: {error.strerror or error}") from error
    return out_dir / "report.md"


def write_report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    fresh: bool = False,
    parent: str | os.PathLike = "evalkit-runs",
) -> Path:
    """Render ``report.md`` and ``report.html`` (plus ``parameters.png`` and grids) into ``out_dir``.

    Everything read is checked first — the run folders (:func:`load_run`), that they share one
    protocol, and every image the report uses (:func:`check_report_images`) — so a refused report
    writes nothing. Existing report files are never overwritten.

    ``fresh`` (``evalkit report``): ``out_dir`` (None: a new folder under ``parent``) must not exist or
    be an empty folder; the report is rendered into a temporary folder beside it and renamed into place
    (atomic: of two reports to one folder, one is refused, and a failure leaves no folder behind).
    Otherwise (a run's report in its own folder) the files are written one by one, each atomically, and
    a failure removes those already written.
    """
    from evalkit.errors import WriteError

    runs = [load_run(d) for d in run_dirs]
    _, priors, rows, samples = _merged(runs)  # refuses runs of different protocols
    check_report_images(runs, samples, prior_order(priors, rows))
    if fresh:
        return _write_fresh(runs, out_dir, pairs, parent)
    out_dir = Path(out_dir)
    existing = _report_files(out_dir)
    if existing:
        raise EvalkitError(
            f"{out_dir} already holds {existing[0].name}: existing files are never overwritten; "
            "render the report into a new folder"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the report folder {out_dir}: {error.strerror or error}") from error
    try:
        return _render(runs, out_dir, pairs)
    except BaseException:
        for path in _report_files(out_dir):  # none were there before: every one is this call's
            path.unlink(missing_ok=True)
        raise


def _write_fresh(runs: Sequence[RunData], out_dir, pairs, parent) -> Path:
    import errno
    import secrets
    import shutil

    from evalkit.errors import WriteError
    from evalkit.harness.runs import new_run_dir

    created = None
    if out_dir is None:
        out_dir = created = new_run_dir(parent, "report")  # new and empty
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EvalkitError(
            f"{out_dir} already exists and is not empty: a report goes into a new (or empty) folder "
            "and existing files are never overwritten; pick another --out"
        )
    staging = None
    try:
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                candidate = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.tmp"
                try:
                    candidate.mkdir()
                    staging = candidate
                    break
                except FileExistsError:
                    continue
            else:
                raise EvalkitError(f"could not create a temporary folder beside {out_dir}")
        except OSError as error:
            raise WriteError(f"cannot create the report folder {out_dir}: {error.strerror or error}") from error
        _render(runs, staging, pairs)  # beside out_dir: its relative links into the runs are those of out_dir
        try:
            os.rename(staging, out_dir)  # atomic; replaces nothing but an empty folder
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise EvalkitError(
                    f"{out_dir} was created or filled by another command while this report was "
                    "rendered; existing files are never overwritten, nothing was written"
                ) from None
            raise WriteError(f"could not move the report into {out_dir}: {error.strerror or error}") from error
        staging = None
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            try:
                created.rmdir()
            except OSError:
                pass
        raise
    return out_dir / "report.md"
