"""Named run presets (``evalkit run --preset NAME``), the smoke protocol and its golden.

- ``smoke``: the regression gate's protocol — oracle and ECLIPSE on the four synthetic suites, 40 prompts
  × 2 seeds each (640 images, under three minutes on 2 cores), decoded in float32, scored by the binding,
  analytic and embedding-cosine scorers (the last reads the prior's embedding: no decoder noise at all):
  float32 sampling gives the same 8-bit images to within a few levels on any CPU (bfloat16 autocast does not:
  oneDNN picks other kernels per instruction set), so the paired test against the golden keeps its power on every
  machine. Sized so that it catches a drop of 0.05 in every category (docs/runs.md, "The gate's power").
  CI repeats it and compares it with the result kept in ``results/golden/smoke/`` (``evalkit compare``).
  ``evalkit smoke`` runs it and prints the comparison; ``evalkit smoke --update-golden`` replaces the
  golden after a deliberate change (a retrained decoder is another protocol, so the comparison refuses
  until the golden is regenerated). The ``none`` row is left out: its score is 0 by construction, so
  it holds nothing to gate and would cost a third of the time.
- ``demo``: the main job of ``evalkit demo``: the calibration priors and the trained prior ladder on
  the four synthetic suites, 8 prompts × 2 seeds each.
- ``paper``: the full protocol (every val prompt, 10 images per prompt, as T2I-CompBench) over the
  calibration priors and every shipped trained prior.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evalkit.harness.run_config import RunConfig
from evalkit.paths import REPO_ROOT
from evalkit.suites.synth import SYNTH_SUITES

GOLDEN_DIR = REPO_ROOT / "results" / "golden" / "smoke"
SYNTH_SUITES = list(SYNTH_SUITES)
#: B-VQA style (the embedded binding scorer) and HRS style (the analytic scorer), side by side
SCORERS = ["binding", "analytic"]
LADDER = ["oracle", "eclipse", "projection", "diffusion", "eclipse-hn", "eclipse-large", "diffusion-xl", "none"]
PRESETS = {
    # 2 priors × 4 suites × 40 prompts × 2 seeds = 640 images at 10 decoder steps, float32 sampling
    # (+ the embedding-level row: the prior's embedding against the true render's, no decoding)
    "smoke": dict(
        priors=["oracle", "eclipse"],
        suites=SYNTH_SUITES,
        scorers=SCORERS + ["embedding-cosine"],
        limit=40,
        images_per_prompt=2,
        num_inference_steps=10,
        dtype="float32",
    ),
    "demo": dict(priors=LADDER, suites=SYNTH_SUITES, scorers=SCORERS, limit=8, images_per_prompt=2),
    "paper": dict(priors=LADDER, suites=SYNTH_SUITES, scorers=SCORERS, limit=None, images_per_prompt=10),
}
SMOKE = PRESETS["smoke"]


def smoke_config(out: str | Path, cache: bool = False, **overrides) -> RunConfig:
    """The smoke protocol into ``out``; uncached by default so that it measures the code, not the cache."""
    return RunConfig(**{**SMOKE, "out": str(out), "cache": cache, "tag": "smoke", **overrides})


def run_smoke(out: str | Path, cache: bool = False, progress: bool = True, inject=None, **overrides) -> Path:
    """The smoke protocol into a new folder under ``out``; ``overrides``: RunConfig fields (e.g. another
    ``dtype``: the same protocol on another numeric path); ``inject``: a fault (:mod:`evalkit.harness.faults`)."""
    from evalkit.harness.runner import run

    return run(smoke_config(out, cache, **overrides), progress=progress, inject=inject)


def compare_with_golden(run_dir: str | Path, golden: str | Path = GOLDEN_DIR) -> tuple[str, bool]:
    """(markdown regression report, failed) of ``run_dir`` against the golden."""
    from evalkit.harness.compare import compare_runs

    return compare_runs(_golden(golden), run_dir)


def _golden(golden: str | Path = GOLDEN_DIR) -> Path:
    from evalkit.errors import EvalkitError

    if not (Path(golden) / "results.json").is_file():
        raise EvalkitError(f"no golden at {golden}; create it with `evalkit smoke --update-golden`")
    return Path(golden)


def gate_against_golden(run_dir: str | Path, golden: str | Path = GOLDEN_DIR):
    """The :class:`evalkit.harness.compare.Comparison` of ``run_dir`` against the golden (rows, z, statuses)."""
    from evalkit.harness.compare import compare_results
    from evalkit.harness.runs import load_run

    base, new = load_run(_golden(golden)), load_run(run_dir)
    return compare_results(base.results, new.results, base_samples=base.samples, new_samples=new.samples)


def update_golden(run_dir: str | Path, golden: str | Path = GOLDEN_DIR) -> Path:
    """Keep ``run_dir``'s results, samples and report (not its images) as the golden."""
    golden = Path(golden)
    golden.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "samples.jsonl"):
        shutil.copyfile(Path(run_dir) / name, golden / name)
    return golden
