"""``evalkit compare BASE NEW``: a regression report between two runs, like with like only.

Rows are matched on (prior, suite, suite version, category, seen/unseen split, metric) and the two
runs must share the protocol hash (decoder and its weights, steps, guidance, resolution, seeds,
dtype, scorer and version): anything else is refused, because a difference would then measure the
protocol, not the prior. A change is flagged only beyond the stored uncertainty: the difference, in
the direction of "better" (``higher_is_better``), divided by the combined standard error
√(se_base² + se_new²); below −z it is a regression, above +z an improvement.

A row whose images all scored alike stores a standard error of 0, which would make a one-image flip
(e.g. a float difference between two CPUs) infinitely significant; such a row's error is taken as
the binomial error of its mean with half a pseudo-image, √(p′(1 − p′)/n), p′ = (value·n + ½)/(n + 1)
(scores lie in [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.report.run_report import load_run

DEFAULT_Z = 3.0
KEY_FIELDS = ("prior", "suite", "suite_version", "category", "seen", "metric")


class ProtocolMismatchError(EvalkitError):
    """Two runs that cannot be compared (different protocols or suite versions)."""


@dataclass
class Change:
    key: tuple
    base: float
    new: float
    stderr: float
    z: float
    status: str  # "regression" | "improvement" | "same"


def stderr_floor(row: dict) -> float:
    """The row's stored standard error; when that is 0, the binomial error of its mean (module docstring)."""
    if row["stderr"] > 0:
        return float(row["stderr"])
    n = max(int(row.get("n", 0)), 1)
    p = (min(max(row["value"], 0.0), 1.0) * n + 0.5) / (n + 1)
    return math.sqrt(p * (1 - p) / n)


def _protocol_difference(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def compare_results(base: dict, new: dict, z: float = DEFAULT_Z) -> tuple[list[Change], list[tuple], list[tuple]]:
    """(changes on shared rows, rows only in base, rows only in new); raises on a protocol mismatch."""
    if base["protocol_hash"] != new["protocol_hash"]:
        diff = _protocol_difference(base["protocol"], new["protocol"])
        raise ProtocolMismatchError("the runs used different protocols (" + ("; ".join(diff) or "hash differs")
                                    + "); compare runs of one protocol, or regenerate the base with the new one")
    index = lambda rows: {tuple(r[k] for k in KEY_FIELDS): r for r in rows}
    a, b = index(base["rows"]), index(new["rows"])
    shared = sorted(set(a) & set(b))
    if not shared:
        versions = sorted({(k[1], k[2]) for k in a}), sorted({(k[1], k[2]) for k in b})
        raise ProtocolMismatchError(f"no rows in common (suites and versions: base {versions[0]}, new {versions[1]}); "
                                    "a changed suite version means a changed prompt list")
    changes = []
    for key in shared:
        ra, rb = a[key], b[key]
        sign = 1.0 if rb.get("higher_is_better", True) else -1.0
        diff = sign * (rb["value"] - ra["value"])
        stderr = math.sqrt(stderr_floor(ra) ** 2 + stderr_floor(rb) ** 2)
        if stderr > 0:
            score = diff / stderr
        else:  # no uncertainty stored (e.g. every image scored 1): any change is beyond it
            score = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        status = "regression" if score < -z else ("improvement" if score > z else "same")
        changes.append(Change(key, ra["value"], rb["value"], stderr, score, status))
    return changes, sorted(set(a) - set(b)), sorted(set(b) - set(a))


def render(changes: list[Change], only_base: list[tuple], only_new: list[tuple], z: float, base_name: str,
           new_name: str) -> str:
    from tabulate import tabulate

    regressions = [c for c in changes if c.status == "regression"]
    improvements = [c for c in changes if c.status == "improvement"]
    verdict = (f"**{len(regressions)} regression(s)**" if regressions else "**no regression**") + \
        f", {len(improvements)} improvement(s), {len(changes) - len(regressions) - len(improvements)} within noise"
    lines = ["# evalkit compare", "", f"Base `{base_name}` → new `{new_name}`: {verdict} "
             f"(a change counts beyond {z:g} combined standard errors).", ""]
    table = [[*c.key[:2], c.key[3], c.key[4], c.key[5], f"{c.base:.4f}", f"{c.new:.4f}", f"{c.new - c.base:+.4f}",
              f"{c.z:+.1f}" if math.isfinite(c.z) else ("+inf" if c.z > 0 else "-inf"),
              {"regression": "REGRESSION", "improvement": "improved", "same": ""}[c.status]]
             for c in sorted(changes, key=lambda c: (c.status != "regression", c.key))]
    lines += [tabulate(table, headers=["prior", "suite", "category", "split", "metric", "base", "new", "Δ", "z", ""],
                       tablefmt="github"), ""]
    for label, keys in (("only in base (missing from new)", only_base), ("only in new", only_new)):
        if keys:
            lines += [f"Rows {label}: " + ", ".join(f"{k[0]}/{k[1]}/{k[3]}/{k[4]}/{k[5]}" for k in keys), ""]
    return "\n".join(lines)


def compare_runs(base_dir, new_dir, z: float = DEFAULT_Z) -> tuple[str, bool]:
    """(markdown report, True when a regression or a missing row was found)."""
    base, new = load_run(base_dir), load_run(new_dir)
    changes, only_base, only_new = compare_results(base.results, new.results, z)
    text = render(changes, only_base, only_new, z, str(base.path), str(new.path))
    return text, any(c.status == "regression" for c in changes) or bool(only_base)
