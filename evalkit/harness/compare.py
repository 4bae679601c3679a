"""``evalkit compare BASE NEW``: a regression report between two runs, like with like only.

**Like with like.** Rows are matched on (prior, suite, suite version, category, seen/unseen split,
metric). The runs must share the protocol hash (decoder and its weights, steps, guidance, resolution,
seeds, scorer and version) and, per suite, the prompt set (``--limit 8`` is not ``--limit 4``):
anything else is refused (:class:`ProtocolMismatchError`, exit 2), because a difference would then
measure the protocol, not the prior. Where the runs ran — device, CPU model and kernel-choosing
instruction sets, threads, library versions, the decoder's compute dtype — is *not* part of the
protocol: a difference there is printed as a note, and the statistics below are what makes the
result hold across machines.

**The test of a row.** The difference new − base in the direction of "better"
(``higher_is_better``), divided by its standard error:

- *paired* when both runs hold the per-image scores of the row's (prompt, seed) items
  (``samples.jsonl``; always so for the golden): the mean of the per-image differences, its error
  from a bootstrap over prompts (:func:`evalkit.stats.paired_bootstrap`), floored at half a
  pseudo-image differing by the scorer's resolution r (``Scorer.score_resolution``: 1, the whole score
  range, for scores that flip; 0.01 for the continuous embedding-cosine), r·√½ / n. Identical images give z = 0;
  a one-image flip gives |z| ≈ 1 whatever n; a real drop shared by many images stands out sharply.
- *unpaired* otherwise: √(se_base² + se_new²), each row's error the larger of its stored bootstrap
  error and the binomial error of its mean with half a pseudo-image (:func:`evalkit.stats.binomial_floor`),
  so a saturated row (every image 1) is never infinitely certain.

Below −z it is a regression, above +z an improvement. A row with fewer than ``min_prompts`` prompts
(e.g. the unseen split of a small run) is reported with its z but not gated: a bootstrap over a
handful of prompts knows nothing of its own error. Rows of base missing from new fail the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from evalkit.errors import EvalkitError
from evalkit.harness.runs import load_run
from evalkit.stats import binomial_floor, paired_bootstrap

DEFAULT_Z = 3.0
#: rows with fewer prompts than this are reported, not gated
MIN_PROMPTS = 8
KEY_FIELDS = ("prior", "suite", "suite_version", "category", "seen", "metric")


class ProtocolMismatchError(EvalkitError):
    """Two runs that cannot be compared (different protocols, suite versions or prompt sets)."""


@dataclass
class Change:
    key: tuple
    base: float
    new: float
    stderr: float
    z: float
    status: str  # "regression" | "improvement" | "same" | "ungated"
    n_prompts: int = 0
    n_images: int = 0
    paired: bool = False

    @property
    def difference(self) -> float:
        return self.new - self.base


@dataclass
class Comparison:
    """What :func:`compare_results` found; ``failed`` is what the exit code says."""

    changes: list[Change]
    only_base: list[tuple]
    only_new: list[tuple]
    notes: list[str] = field(default_factory=list)
    z: float = DEFAULT_Z
    min_prompts: int = MIN_PROMPTS

    def by_status(self, status: str) -> list[Change]:
        return [c for c in self.changes if c.status == status]

    @property
    def failed(self) -> bool:
        return bool(self.by_status("regression") or self.only_base)


def check_z(z) -> float:
    """``--z`` as a finite positive number, or a clear error."""
    try:
        value = float(z)
    except (TypeError, ValueError):
        raise EvalkitError(f"--z must be a finite positive number (got {z!r})") from None
    if not (value > 0 and math.isfinite(value)):
        raise EvalkitError(f"--z must be a finite positive number (got {z!r})")
    return value


def row_stderr(row: dict) -> float:
    """An aggregate row's standard error: its stored bootstrap error, floored (module docstring)."""
    stored = float(row.get("stderr") or 0.0)
    stored = stored if math.isfinite(stored) else 0.0
    return max(stored, binomial_floor(row["value"], int(row.get("n", 0))))


def row_prompts(row: dict, protocol: dict) -> int:
    """Prompts behind a row: recorded by runs since ``n_prompts`` exists, else images / images per prompt."""
    if row.get("n_prompts"):
        return int(row["n_prompts"])
    return int(row.get("n", 0)) // max(int(protocol.get("images_per_prompt") or 1), 1)


#: protocol fields recorded but not part of its hash (the numeric path: a note, not a mismatch)
NUMERIC_PATH_FIELDS = ("dtype",)


def _protocol_difference(a: dict, b: dict) -> list[str]:
    return [
        f"{k}: {a.get(k)!r} → {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and k not in NUMERIC_PATH_FIELDS
    ]


def _prompt_sets(results: dict, samples: list[dict] | None) -> dict | None:
    """{suite: (prompts, hash of item ids)}, from results.json or else the samples; None when unknown."""
    recorded = results.get("prompt_subsets")
    if recorded:
        return {suite: (entry["prompts"], entry["items_sha256"]) for suite, entry in recorded.items()}
    if samples:
        from evalkit.harness.runs import prompt_subsets

        return {suite: (e["prompts"], e["items_sha256"]) for suite, e in prompt_subsets(samples).items()}
    return None


def check_prompt_sets(base: dict, new: dict, base_samples=None, new_samples=None) -> list[str]:
    """Raise unless each shared suite was run on the same prompts; notes when that cannot be checked."""
    a, b = _prompt_sets(base, base_samples), _prompt_sets(new, new_samples)
    if a is None or b is None:
        return [
            "prompt sets not recorded by "
            + " and ".join(n for n, s in (("base", a), ("new", b)) if s is None)
            + ": assumed equal"
        ]
    problems = []
    for suite in sorted(set(a) & set(b)):
        if a[suite] != b[suite]:
            limits = [(r.get("config") or {}).get("limit") for r in (base, new)]
            limit = f" (--limit {limits[0]} vs {limits[1]})" if limits[0] != limits[1] else ""
            problems.append(
                f"{suite}: base scored {a[suite][0]} prompts, new {b[suite][0]}"
                + (" (other prompts)" if a[suite][0] == b[suite][0] else "")
                + limit
            )
    if problems:
        raise ProtocolMismatchError(
            "the runs scored other prompt sets (" + "; ".join(problems) + "); compare runs "
            "of the same prompts, or regenerate the base with the new prompt set"
        )
    return []


def _per_image(samples: list[dict] | None) -> dict:
    """{(prior, suite, metric, category, seen): {(item_id, seed): score}} for all / seen / unseen."""
    out: dict = {}
    for s in samples or []:
        splits = ("all",) + (("seen" if s["seen"] else "unseen",) if s.get("seen") is not None else ())
        for split in splits:
            out.setdefault((s["prior"], s["suite"], s["scorer"], s["category"], split), {})[
                (s["item_id"], s["seed"])
            ] = float(s["score"])
    return out


def _environment_notes(base: dict, new: dict) -> list[str]:
    from evalkit.environment import differences

    notes = differences(base.get("environment"), new.get("environment"))
    da, db = base["protocol"].get("dtype"), new["protocol"].get("dtype")
    if da != db and not any(n.startswith("decoder_dtype") for n in notes):
        notes.append(f"decoder_dtype: {da} → {db}")
    return notes


def _no_shared_rows_reason(a: dict, b: dict) -> str:
    """Why two runs' rows (indexed by key) have nothing in common."""
    va, vb = ({(k[1], k[2]) for k in rows} for rows in (a, b))
    if va & vb:
        pa, pb = sorted({k[0] for k in a}), sorted({k[0] for k in b})
        return (
            f"the runs share suite versions {sorted(va & vb)} but no prior: base has {pa}, new has {pb} "
            "(rows are matched by prior name)"
        )
    return (
        f"suites and versions: base {sorted(va)}, new {sorted(vb)}; a changed suite version means a changed prompt list"
    )


def _compare_row(
    key: tuple, ra: dict, rb: dict, images_a: dict, images_b: dict, base: dict, new: dict, z: float, min_prompts: int
) -> Change:
    """The test of one row shared by base (``ra``) and new (``rb``): paired when both kept its images' scores."""
    sign = 1.0 if rb.get("higher_is_better", True) else -1.0
    sample_key = (key[0], key[1], key[5], key[3], key[4])
    pa, pb = images_a.get(sample_key), images_b.get(sample_key)
    paired = bool(pa) and pa.keys() == (pb or {}).keys()
    if paired:
        items = sorted(pa)
        cmp = paired_bootstrap(
            [sign * pa[k] for k in items],
            [sign * pb[k] for k in items],
            clusters=[k[0] for k in items],
            score_range=max(float(ra.get("score_resolution", 1.0)), float(rb.get("score_resolution", 1.0))),
        )
        stderr, score, n_prompts, n_images = cmp.stderr, cmp.z, cmp.n_clusters, cmp.n
    else:
        diff = sign * (rb["value"] - ra["value"])
        stderr = math.sqrt(row_stderr(ra) ** 2 + row_stderr(rb) ** 2)
        score = diff / stderr
        n_prompts = min(row_prompts(ra, base["protocol"]), row_prompts(rb, new["protocol"]))
        n_images = min(int(ra.get("n", 0)), int(rb.get("n", 0)))
    if n_prompts < min_prompts:
        status = "ungated"
    else:
        status = "regression" if score < -z else ("improvement" if score > z else "same")
    return Change(key, ra["value"], rb["value"], stderr, score, status, n_prompts, n_images, paired)


def compare_results(
    base: dict,
    new: dict,
    z: float = DEFAULT_Z,
    base_samples: list[dict] | None = None,
    new_samples: list[dict] | None = None,
    min_prompts: int = MIN_PROMPTS,
) -> Comparison:
    """Compare two ``results.json`` payloads (and, when given, their samples); raises on a mismatch."""
    z = check_z(z)
    if base["protocol_hash"] != new["protocol_hash"]:
        diff = _protocol_difference(base["protocol"], new["protocol"])
        raise ProtocolMismatchError(
            "the runs used different protocols ("
            + ("; ".join(diff) or "hash differs")
            + "); compare runs of one protocol, or regenerate the base with the new one"
        )
    index = lambda rows: {tuple(r[k] for k in KEY_FIELDS): r for r in rows}
    a, b = index(base["rows"]), index(new["rows"])
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ProtocolMismatchError(f"no rows in common ({_no_shared_rows_reason(a, b)})")
    notes = check_prompt_sets(base, new, base_samples, new_samples) + _environment_notes(base, new)
    images_a, images_b = _per_image(base_samples), _per_image(new_samples)
    changes = []
    for key in shared:
        changes.append(_compare_row(key, a[key], b[key], images_a, images_b, base, new, z, min_prompts))
    only_new = sorted(set(b) - set(a))
    if only_new:
        notes.append(f"{len(only_new)} row(s) only in new (not compared)")
    return Comparison(changes, sorted(set(a) - set(b)), only_new, notes, z, min_prompts)


STATUS_LABEL = {"regression": "REGRESSION", "improvement": "improved", "same": "", "ungated": "not gated"}


def headline(comparison: Comparison) -> str:
    """One line whose first word agrees with the exit code: **FAIL** (exit 1) or **pass** (exit 0)."""
    c = comparison
    counts = [f"{len(c.by_status('regression'))} regression(s)"]
    if c.only_base:
        counts.append(f"{len(c.only_base)} row(s) of base missing from new")
    counts += [f"{len(c.by_status('improvement'))} improvement(s)", f"{len(c.by_status('same'))} within noise"]
    ungated = len(c.by_status("ungated"))
    if ungated:
        counts.append(f"{ungated} not gated (fewer than {c.min_prompts} prompts)")
    return ("**FAIL**: " if c.failed else "**pass**: ") + ", ".join(counts)


TABLE_HEADERS = [
    "prior",
    "suite",
    "category",
    "split",
    "metric",
    "prompts",
    "images",
    "base",
    "new",
    "Δ",
    "test",
    "stderr",
    "z",
    "",
]


def _table_row(ch: Change) -> list:
    """One row of :func:`render`'s table."""
    from evalkit.harness.paired import format_z

    return [
        *ch.key[:2],
        ch.key[3],
        ch.key[4],
        ch.key[5],
        ch.n_prompts,
        ch.n_images,
        f"{ch.base:.4f}",
        f"{ch.new:.4f}",
        f"{ch.difference:+.4f}",
        "paired" if ch.paired else "unpaired",
        f"{ch.stderr:.4f}",
        format_z(ch.z),
        STATUS_LABEL[ch.status],
    ]


def render(comparison: Comparison, base_name: str, new_name: str) -> str:
    from tabulate import tabulate

    c = comparison
    lines = [
        "# evalkit compare",
        "",
        f"Base `{base_name}` → new `{new_name}`: {headline(c)}.",
        "",
        f"A gated row (at least {c.min_prompts} prompts) changes when its difference passes {c.z:g} standard "
        "errors: paired per-image differences where both runs kept their images' scores (bootstrap over "
        "prompts, floored at r·√½/n for a scorer of resolution r), else the rows' floored errors combined.",
        "",
    ]
    if c.notes:
        lines += ["Notes (not failures):", ""] + [f"- {note}" for note in c.notes] + [""]
    order = {"regression": 0, "improvement": 1, "same": 2, "ungated": 3}
    table = [_table_row(ch) for ch in sorted(c.changes, key=lambda ch: (order[ch.status], ch.key))]
    lines += [tabulate(table, headers=TABLE_HEADERS, tablefmt="github", disable_numparse=True), ""]
    for label, keys in (("of base missing from new (a failure)", c.only_base), ("only in new", c.only_new)):
        if keys:
            lines += [f"Rows {label}: " + ", ".join(f"{k[0]}/{k[1]}/{k[3]}/{k[4]}/{k[5]}" for k in keys), ""]
    return "\n".join(lines)


def compare_runs(base_dir, new_dir, z: float = DEFAULT_Z, min_prompts: int = MIN_PROMPTS) -> tuple[str, bool]:
    """(markdown report, True when a regression or a missing row was found)."""
    z = check_z(z)
    base, new = load_run(base_dir), load_run(new_dir)
    comparison = compare_results(base.results, new.results, z, base.samples, new.samples, min_prompts)
    return render(comparison, str(base.path), str(new.path)), comparison.failed
