"""The regression gate's power: which injected regressions the smoke gate catches, and the smallest drop.

Runs the smoke protocol (``evalkit.harness.presets``) with faults from :mod:`evalkit.harness.faults` against the
committed golden (``results/golden/smoke``) and prints, per fault and category, the ECLIPSE prior's
drop in binding score and the gate's paired z — on the smoke's own numeric path (float32 sampling)
and, with ``--dtype bfloat16``, on another one (images that differ from the golden's everywhere:
the worst case for the gate). Ladders:

- ``bias``: the binding scorer lowered by δ for every image (a pure drop of δ, less where a score is
  already below δ);
- ``blend``: the prior's output moved α of the way to the mean image embedding (no prompt signal);
- ``noise``: the prior's weights plus σ × each tensor's standard deviation of Gaussian noise;
- ``scale``: the prior's output multiplied by a factor (a raw-embedding norm bug; cosine cannot see it);
- ``steps``: the decoder sampling fewer steps than the protocol's 10.

"Caught" means the gate flagged a row of the ECLIPSE prior in that category — the binding, analytic
or embedding-cosine row of any split; the table gives the binding row's drop, its z and the rows flagged.

    python benchmarks/gate_power.py --out results/gate-power
    python benchmarks/gate_power.py --ladders bias --dtype bfloat16 --out results/gate-power/bf16

Writes ``power.json`` and ``README.md`` into ``--out`` (never overwriting: a new folder is refused if it
holds a result) and prints the table. About 10 minutes on 2 cores for all four ladders (the oracle's
images and the intact prior's embeddings come from a private work cache after the first run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from evalkit.world.attributes import CATEGORIES

LADDERS = {
    "bias": [0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15],
    "noise": [0.01, 0.02, 0.05, 0.1, 0.25, 0.5],
    "blend": [0.05, 0.2],
    "scale": [0.9, 0.7],
    "steps": [8, 5, 3],
}


def fault_for(ladder: str, strength):
    from evalkit.harness import faults

    return {
        "bias": lambda: faults.bias_scorer("binding", strength),
        "blend": lambda: faults.blend_prior("eclipse", strength),
        "noise": lambda: faults.noise_prior("eclipse", strength),
        "scale": lambda: faults.scale_prior("eclipse", strength),
        "steps": lambda: faults.fewer_steps(int(strength)),
    }[ladder]()


def measure(ladder: str, strength, work: Path, dtype: str | None) -> dict:
    """One faulty smoke run against the golden: per category, the eclipse binding row's drop, z and status."""
    from evalkit.harness.faults import injector
    from evalkit.harness.presets import gate_against_golden, run_smoke

    overrides = {"dtype": dtype} if dtype else {}
    # a faulty decoder keeps the protocol's settings, so it must not share the work cache
    cached = ladder != "steps"
    start = time.time()
    run_dir = run_smoke(
        work / "runs",
        cache=cached,
        progress=False,
        inject=injector(fault_for(ladder, strength)),
        cache_dir=str(work / "cache") if cached else None,
        **overrides,
    )
    comparison = gate_against_golden(run_dir)
    result = {
        "ladder": ladder,
        "strength": strength,
        "dtype": dtype or "smoke's own",
        "seconds": round(time.time() - start, 1),
        "failed": comparison.failed,
        "categories": {},
    }
    for change in comparison.changes:
        prior, suite, _, category, split, metric = change.key
        if prior == "eclipse" and split == "all" and metric == "binding":
            flagged = sorted(
                f"{c.key[5]}/{c.key[4]}"
                for c in comparison.by_status("regression")
                if c.key[0] == "eclipse" and c.key[3] == category
            )
            result["categories"][category] = {
                "drop": round(change.base - change.new, 4),
                "z": round(change.z, 2),
                "status": change.status,
                "flagged": flagged,
                "caught": bool(flagged),
            }
    result["caught_by"] = sorted(
        {f"{c.key[0]}/{c.key[3]}/{c.key[4]}/{c.key[5]}" for c in comparison.changes if c.status == "regression"}
    )
    return result


def _cell(entry: dict) -> str:
    short = {"binding": "B", "analytic": "A", "embedding-cosine": "E"}
    flags = ", ".join(sorted({short.get(f.split("/")[0], f) for f in entry["flagged"]}))
    return f"{entry['drop']:+.3f} (z {entry['z']:+.1f})" + (f" **caught** [{flags}]" if entry["caught"] else "")


def summary(results: list[dict]) -> list[str]:
    from tabulate import tabulate

    rows = []
    for r in results:
        cells = [_cell(r["categories"][c]) if c in r["categories"] else "–" for c in CATEGORIES]
        rows.append(
            [r["ladder"], r["strength"], r["dtype"], *cells, "FAIL" if r["failed"] else "pass", len(r["caught_by"])]
        )
    lines = [
        "Per category: the drop of ECLIPSE's binding score (golden − faulty run), its paired z, and whether the "
        "gate flagged an ECLIPSE row of that category (B binding, A analytic, E embedding-cosine).",
        "",
        tabulate(
            rows,
            headers=[
                "fault",
                "strength",
                "numeric path",
                *(f"{c}: binding drop (z)" for c in CATEGORIES),
                "gate",
                "rows flagged",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    smallest = []
    for c in CATEGORIES:
        for ladder in sorted({r["ladder"] for r in results}):
            caught = [
                r["categories"][c]["drop"]
                for r in results
                if r["ladder"] == ladder
                and c in r["categories"]
                and r["categories"][c]["caught"]
                and r["categories"][c]["drop"] > 0
            ]
            missed = [
                r["categories"][c]["drop"]
                for r in results
                if r["ladder"] == ladder
                and c in r["categories"]
                and not r["categories"][c]["caught"]
                and r["categories"][c]["drop"] > 0
            ]
            smallest.append(
                [c, ladder, f"{min(caught):.3f}" if caught else "none caught", f"{max(missed):.3f}" if missed else "–"]
            )
    lines += [
        "Per category and fault: the smallest binding drop at which the gate flagged the category, and the "
        "largest it let pass:",
        "",
        tabulate(
            smallest,
            headers=["category", "fault", "smallest drop caught", "largest drop missed"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladders", default="bias,noise,blend,scale,steps")
    parser.add_argument("--dtype", default=None, help="decode on another numeric path than the smoke's (e.g. bfloat16)")
    parser.add_argument("--out", default=None, help="folder for power.json and README.md")
    args = parser.parse_args(argv)
    ladders = [name.strip() for name in args.ladders.split(",") if name.strip()]
    unknown = sorted(set(ladders) - set(LADDERS))
    if unknown:
        parser.error(f"unknown ladder(s) {unknown}; choose from {sorted(LADDERS)}")
    out = Path(args.out) if args.out else None
    if out is not None and (out / "power.json").exists():
        parser.error(f"{out} already holds a result (never overwritten); pick another --out")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for ladder in ladders:
            for strength in LADDERS[ladder]:
                results.append(measure(ladder, strength, Path(tmp), args.dtype))
                print(json.dumps(results[-1]), flush=True)
    text = [
        "# The smoke gate's power",
        "",
        f"`python benchmarks/gate_power.py --ladders {','.join(ladders)}"
        + (f" --dtype {args.dtype}" if args.dtype else "")
        + "`, against `results/golden/smoke`.",
        "",
    ] + summary(results)
    print("\n".join(text))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "power.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "README.md").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
