"""How often two scorers of a run agree, question by question (e.g. the embedded binding scorer vs the
analytic one on decoded images, where no ground truth exists).

A question is answered "yes" by a scorer when its probability exceeds 0.5. Prints, per suite, the
share of questions both scorers answer alike, the share each answers "yes", Cohen's kappa and the
correlation of per-image scores:

    python -m evalkit.bootstrap python benchmarks/scorers/agreement.py RUN_DIR [--a binding --b analytic]
"""

from __future__ import annotations

import argparse

import numpy as np


def agreement(samples: list[dict], a: str, b: str) -> list[dict]:
    index = {}
    for s in samples:
        index.setdefault((s["prior"], s["suite"], s["item_id"], s["seed"]), {})[s["scorer"]] = s
    out = {}
    for (prior, suite, *_), by_scorer in index.items():
        if a not in by_scorer or b not in by_scorer:
            continue
        qa = {q["question"]: q["p"] for q in by_scorer[a]["questions"]}
        qb = {q["question"]: q["p"] for q in by_scorer[b]["questions"]}
        bucket = out.setdefault(suite, {"ya": [], "yb": [], "sa": [], "sb": []})
        for question in sorted(set(qa) & set(qb)):
            bucket["ya"].append(qa[question] > 0.5)
            bucket["yb"].append(qb[question] > 0.5)
        bucket["sa"].append(by_scorer[a]["score"])
        bucket["sb"].append(by_scorer[b]["score"])
    rows = []
    for suite, v in sorted(out.items()):
        ya, yb = np.array(v["ya"]), np.array(v["yb"])
        agree = float((ya == yb).mean())
        expected = float(ya.mean() * yb.mean() + (1 - ya.mean()) * (1 - yb.mean()))
        kappa = (agree - expected) / (1 - expected) if expected < 1 else 1.0
        corr = (
            float(np.corrcoef(v["sa"], v["sb"])[0, 1]) if np.std(v["sa"]) > 0 and np.std(v["sb"]) > 0 else float("nan")
        )
        rows.append(
            {
                "suite": suite,
                "questions": int(ya.size),
                "agreement": round(agree, 4),
                f"yes_{a}": round(float(ya.mean()), 4),
                f"yes_{b}": round(float(yb.mean()), 4),
                "kappa": round(kappa, 4),
                "score_correlation": round(corr, 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--a", default="binding")
    parser.add_argument("--b", default="analytic")
    args = parser.parse_args()
    from tabulate import tabulate

    from evalkit.harness.runs import load_run

    rows = agreement(load_run(args.run_dir).samples, args.a, args.b)
    print(tabulate(rows, headers="keys", tablefmt="github"))


if __name__ == "__main__":
    main()
