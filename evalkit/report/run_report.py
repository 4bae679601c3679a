"""Reports of ``evalkit run`` folders: tables, the parameter plot, image grids, worst images.

Everything is rendered from the saved rows (``results.json`` and ``samples.jsonl``); nothing is
computed inside a formatter. One list of blocks (headings, paragraphs, tables, images) is rendered
twice: as markdown (``report.md``) and as a self-contained-styled HTML page (``report.html``) whose
images are relative links into the run folders. ``evalkit report RUN_DIR...`` renders several runs
of one protocol together (e.g. priors run on different days) into a new folder.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import CorruptFileError, EvalkitError
from evalkit.paired import CALIBRATION, comparison_note, comparison_rows, default_pairs, paired_differences
from evalkit.serialization import seal

#: the metric of the parameter table and plot: B-VQA style first, as the paper's table
HEADLINE_METRICS = ("binding", "blip-vqa", "analytic")
#: categories in the paper's column order; others follow alphabetically
CATEGORY_ORDER = ("color", "shape", "texture")
GRID_PROMPTS = 6  # prompts per suite in the side-by-side grids
WORST_PER_PRIOR = 4


@dataclass
class RunData:
    """A finished run folder, loaded."""

    path: Path
    results: dict
    samples: list[dict] = field(default_factory=list)


def load_run(path: str | os.PathLike) -> RunData:
    """Read ``results.json`` and ``samples.jsonl`` of a run folder (clear errors for unfinished or edited runs)."""
    path = Path(path)
    results_path = path / "results.json"
    if path.is_file() and path.name == "results.json":
        path, results_path = path.parent, path
    if not results_path.is_file():
        hint = " (it has run.json: an unfinished run; start its command again to finish it from the cache)" \
            if (path / "run.json").is_file() else ""
        raise EvalkitError(f"{path} is not a finished evalkit run: no results.json{hint}")
    try:
        results = json.loads(results_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{results_path} is not valid JSON ({error}); was it edited by hand?") from None
    for key in ("protocol", "protocol_hash", "rows"):
        if key not in results:
            raise CorruptFileError(f"{results_path} has no {key!r}: not an evalkit results file, or edited by hand")
    if "checksum" in results and seal(results)["checksum"] != results["checksum"]:
        raise CorruptFileError(f"{results_path} does not match its checksum: it was edited after the run wrote it. "
                               "Re-run the command (finished work comes from the cache) instead of editing results.")
    samples = []
    samples_path = path / "samples.jsonl"
    if not samples_path.is_file() and (path / "samples.jsonl.gz").is_file():  # kept compressed in results/
        samples_path = path / "samples.jsonl.gz"
    if samples_path.is_file():
        import gzip

        text = gzip.decompress(samples_path.read_bytes()).decode("utf-8") if samples_path.suffix == ".gz" \
            else samples_path.read_text()
        expected = results.get("samples_sha256")
        if expected and hashlib.sha256(text.encode("utf-8")).hexdigest() != expected:
            raise CorruptFileError(f"{samples_path} does not match the hash recorded in results.json (truncated or edited)")
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    samples.append(json.loads(line))
                except json.JSONDecodeError:
                    raise CorruptFileError(f"{samples_path}, line {number}: not valid JSON") from None
    return RunData(path, results, samples)


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
            out.append(tabulate(block.rows, headers=block.headers, tablefmt="github"))
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
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{HTML_STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, tuple):
            kind, text = block
            tag = kind if kind in ("h1", "h2", "h3") else "p"
            out.append(f"<{tag}>{_inline_html(text)}</{tag}>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            out.append(f"<p><img src='{html.escape(block.path)}' alt='{html.escape(block.alt)}'></p>")
        elif isinstance(block, Gallery):
            rows = "".join(f"<tr><td><img class='thumb' src='{html.escape(p)}'></td><td>{_inline_html(c)}</td></tr>"
                           for p, c in block.entries)
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
    return sorted(set(categories), key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c))


def _merged(runs: Sequence[RunData]) -> tuple[dict, dict, list[dict], list[dict]]:
    """(protocol, priors info, result rows, samples with image paths made absolute) of runs of one protocol."""
    protocols = {run.results["protocol_hash"] for run in runs}
    if len(protocols) > 1:
        lines = [f"  {run.path}: {run.results['protocol_hash']} {run.results['protocol']}" for run in runs]
        raise EvalkitError("these runs used different protocols; a report compares like with like:\n" + "\n".join(lines))
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


def prior_order(priors: dict, rows: list[dict]) -> list[str]:
    names = list(priors) or sorted({r["prior"] for r in rows})
    trained = sorted((n for n in names if n not in CALIBRATION), key=lambda n: (priors.get(n, {}).get("total_parameters", 0), n))
    return [n for n in ("oracle", "text") if n in names] + trained + [n for n in ("none", "dummy") if n in names]


def score_tables(rows: list[dict], order: list[str]) -> list:
    """Per scorer: priors × categories (all prompts, with 95 % CI), then seen / unseen."""
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
                split_cells.append(" / ".join(f"{p['value']:.3f}" if p else "–" for p in parts))
            n = max((index[k]["n"] for k in index if k[0] == prior and k[2] == "all"), default=0)
            main.append([prior, *cells, n])
            split.append([prior, *split_cells])
        arrow = "higher is better" if chosen[0].get("higher_is_better", True) else "lower is better"
        blocks += [("h2", f"Scores: {metric}"),
                   ("p", f"Mean per-image score over all val prompts with a 95 % bootstrap CI over prompts ({arrow}); "
                         "n = images per category."),
                   Table(["prior", *categories, "n"], main),
                   ("p", "Seen / unseen attribute–object combinations:"),
                   Table(["prior", *categories], split)]
    return blocks


def parameter_table(rows: list[dict], priors: dict, order: list[str], metric: str) -> Table:
    """The paper's shape: prior, trainable and total parameters, training data, one column per category."""
    chosen = {(r["prior"], r["category"]): r["value"] for r in rows if r["metric"] == metric and r["seen"] == "all"}
    categories = _order_categories(c for _, c in chosen)
    table = []
    for prior in order:
        info = priors.get(prior, {})
        table.append([prior, f"{info.get('trainable_parameters', 0):,}", f"{info.get('total_parameters', 0):,}",
                      info.get("data") or "–", *(f"{chosen[(prior, c)]:.3f}" if (prior, c) in chosen else "–" for c in categories)])
    return Table(["prior", "trainable params", "total params", "training data", *categories], table)


def plot_parameters(rows: list[dict], priors: dict, metric: str, path: Path) -> Path | None:
    """Score against the prior's trainable parameters (log scale), one panel per category; calibration
    priors as horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r["metric"] == metric and r["seen"] == "all"]
    categories = _order_categories(r["category"] for r in chosen)
    if not any(priors.get(r["prior"], {}).get("trainable_parameters", 0) > 0 for r in chosen):
        return None
    fig, axes = plt.subplots(1, len(categories), figsize=(4.2 * len(categories), 3.4), squeeze=False)
    from matplotlib.ticker import NullFormatter

    for ax, category in zip(axes[0], categories):
        same_size: dict[int, int] = {}
        for r in (r for r in chosen if r["category"] == category):
            params = priors.get(r["prior"], {}).get("trainable_parameters", 0)
            if params > 0:
                k = same_size[params] = same_size.get(params, -1) + 1  # priors of one size: spread apart
                x = params * (1.06 ** k)
                ax.errorbar([x], [r["value"]], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]],
                            fmt="o", capsize=3)
                ax.annotate(r["prior"], (x, r["value"]), textcoords="offset points", xytext=(6, 9 * k - 4), fontsize=8)
            else:
                ax.axhline(r["value"], ls="--", lw=0.8, color="grey")
                ax.annotate(r["prior"], (0.01, r["value"]), xycoords=("axes fraction", "data"), fontsize=7,
                            color="grey", va="bottom")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo / 1.5, hi * 2.5)  # room for the labels
        ax.set_title(category)
        ax.set_xlabel("prior parameters (trainable)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grid_selection(samples: list[dict], prompts_per_suite: int = GRID_PROMPTS) -> dict[str, tuple[int, list[str], dict]]:
    """Per suite: (seed, item ids, {(prior, item): sample}) of the side-by-side grid — the first prompts
    at the first seed, scored by the first scorer."""
    first_scorer = min((s["scorer"] for s in samples), default=None)
    chosen = [s for s in samples if s["scorer"] == first_scorer and s.get("image_path")]
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
        mine = sorted((s for s in samples if s["prior"] == prior and s.get("image_path")),
                      key=lambda s: (s["score"], s["item_id"], s["seed"], s["scorer"]))[:per_prior]
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
                titles.append(f"{head}{prior}: {sample['score']:.2f}")
        if len(images) != len(items) * len(columns) or not images:
            continue  # images missing from disk: no misleading partial grid
        path = save_image_grid(out_dir / f"grid-{suite}.png", np.stack(images), titles, columns=len(columns), scale=4,
                               wrap=22, lines=4)
        blocks += [("h3", f"{suite}: seed {seed}, one column per prior"), Image(path.name, f"grid {suite}")]
    return blocks


def worst_images(samples: list[dict], order: list[str], out_dir: Path) -> list:
    blocks = []
    for prior, rows in worst_selection(samples, order).items():
        entries = []
        for s in rows:
            questions = ", ".join(f"{q['question']} {q['p']:.2f}" for q in s.get("questions", []))
            caption = (f"`{prior}` {s['suite']} seed {s['seed']} ({s['scorer']}): *{s['prompt']}* → {s['score']:.2f}"
                       + (f" ({questions})" if questions else ""))
            entries.append((os.path.relpath(s["image_path"], out_dir), caption))
        blocks += [("h3", prior), Gallery(entries)]
    return blocks


def headline_metric(rows: list[dict]) -> str | None:
    metrics = sorted({r["metric"] for r in rows})
    return next((m for m in HEADLINE_METRICS if m in metrics), metrics[0] if metrics else None)


def unknown_words_summary(found: dict, top: int = 8) -> list[str]:
    """One line per suite and encoder, e.g. ``t2i-compbench-color: 212 of 300 prompts ... (bench ×3, ...)``."""
    lines = []
    for suite, spaces in found.items():
        for space, entry in spaces.items():
            ranked = sorted(entry["words"].items(), key=lambda kv: (-kv[1], kv[0]))  # JSON may reorder keys
            words = ", ".join(f"{w} ×{n}" for w, n in ranked[:top])
            more = len(entry["words"]) - top
            lines.append(f"{suite}: {entry['with_unknown_words']} of {entry['prompts']} prompts have words outside "
                         f"the {space} text encoder's vocabulary, encoded as <unk> ({words}"
                         + (f", and {more} more" if more > 0 else "") + ")")
    return lines


def report_blocks(runs: Sequence[RunData], out_dir: Path, pairs: Sequence[tuple[str, str]] | None = None) -> list:
    protocol, priors, rows, samples = _merged(runs)
    order = prior_order(priors, rows)
    blocks: list = [("h1", "evalkit run report"),
                    ("p", f"Protocol `{runs[0].results['protocol_hash']}`: decoder {protocol['decoder']}, "
                          f"{protocol['num_inference_steps']} steps, guidance {protocol['guidance_scale']}, "
                          f"{protocol['images_per_prompt']} images per prompt from seed {protocol['seed']}, scorer "
                          f"{protocol['scorer']} (version {protocol['scorer_version']}). Runs: "
                          + ", ".join(f"`{run.path.name}`" for run in runs) + ".")]
    for run in runs:
        for line in unknown_words_summary(run.results.get("unknown_words", {})):
            blocks.append(("p", f"**Vocabulary.** {line}."))
    if protocol.get("random_init"):
        blocks.append(("p", f"**Random weights** (`--random-init {protocol['random_init']}`): the priors, text encoders "
                            "and decoder were built at their architectures with random weights; the images are noise "
                            "and the scores mean nothing. For speed and memory measurements only."))
    blocks += score_tables(rows, order)
    metric = headline_metric(rows)
    if metric:
        blocks += [("h2", "Parameters versus composition"),
                   ("p", "Trainable: the prior's own parameters. Total: prior + the text encoder it reads + the decoder. "
                         f"Scores: {metric}, all val prompts."),
                   parameter_table(rows, priors, order, metric)]
        plot = plot_parameters(rows, priors, metric, out_dir / "parameters.png")
        if plot is not None:
            blocks.append(Image(plot.name, "score against prior parameters"))
    names = [p for p in order if p in {r["prior"] for r in rows}]
    comparisons = []
    for scorer in sorted({s["scorer"] for s in samples}):
        mine = [s for s in samples if s["scorer"] == scorer]
        for c in paired_differences(mine, list(pairs) if pairs is not None else default_pairs(names), ["score"], ("suite",)):
            comparisons.append({**c, "metric": scorer})
    if comparisons:
        blocks += [("h2", "Paired comparisons"), ("p", comparison_note("b − a per image score")),
                   Table(*comparison_rows(comparisons, ("suite",)))]
    grids = grid_images(samples, order, out_dir)
    if grids:
        blocks += [("h2", "Same prompt and seed across priors")] + grids
    worst = worst_images(samples, order, out_dir)
    if worst:
        blocks += [("h2", "Lowest-scored images"), ("p", "With each question's probability: why an image scored low.")] + worst
    timings = [[run.path.name, run.results.get("images", ""), run.results.get("wall_time_s", ""),
                ", ".join(f"{k} {v:.1f}" for k, v in run.results.get("timings_s", {}).items()),
                _cache_summary(run.results.get("cache"))] for run in runs]
    blocks += [("h2", "Runs"), Table(["run", "images", "wall s", "stage s", "cache"], timings)]
    return blocks


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
    metric = headline_metric(rows)
    if metric:
        blocks += [("h2", f"Parameters versus composition ({metric})"), parameter_table(rows, priors, order, metric)]
    return to_markdown(blocks)


def write_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 pairs: Sequence[tuple[str, str]] | None = None) -> Path:
    """Render ``report.md`` and ``report.html`` (plus ``parameters.png`` and grids) into ``out_dir``."""
    from evalkit.serialization import atomic_write_text

    runs = [load_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(runs, out_dir, pairs)
    atomic_write_text(out_dir / "report.md", to_markdown(blocks))
    atomic_write_text(out_dir / "report.html", to_html(blocks, "evalkit report"))
    return out_dir / "report.md"
