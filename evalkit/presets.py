"""Named run presets (``evalkit run --preset NAME``), the smoke protocol and its golden.

- ``smoke``: 72 images in well under a minute; CI repeats it and compares it with the result kept in
  ``results/golden/smoke/`` (``evalkit compare``). ``evalkit smoke`` runs it and prints the comparison;
  ``evalkit smoke --update-golden`` replaces the golden after a deliberate change (a retrained decoder
  is another protocol, so the comparison refuses until the golden is regenerated).
- ``demo``: the main job of ``evalkit demo``: the calibration priors and the trained prior ladder on
  the three synthetic suites, 8 prompts × 2 seeds each.
- ``paper``: the full protocol (every val prompt, 10 images per prompt, as T2I-CompBench) over the
  calibration priors and every shipped trained prior.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from evalkit.contracts import RunConfig
from evalkit.paths import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "results" / "golden" / "smoke"
SYNTH_SUITES = ["synth-color", "synth-shape", "synth-texture"]
#: B-VQA style (the embedded binding scorer) and HRS style (the analytic scorer), side by side
SCORERS = ["binding", "analytic"]
LADDER = ["oracle", "eclipse", "projection", "diffusion", "eclipse-hn", "eclipse-large", "diffusion-xl", "none"]
PRESETS = {
    # 3 priors × 3 suites × 4 prompts × 2 seeds = 72 images at 10 decoder steps
    "smoke": dict(priors=["oracle", "eclipse", "none"], suites=SYNTH_SUITES, scorers=SCORERS, limit=4,
                  images_per_prompt=2, num_inference_steps=10),
    "demo": dict(priors=LADDER, suites=SYNTH_SUITES, scorers=SCORERS, limit=8, images_per_prompt=2),
    "paper": dict(priors=LADDER, suites=SYNTH_SUITES, scorers=SCORERS, limit=None, images_per_prompt=10),
}
SMOKE = PRESETS["smoke"]


def smoke_config(out: str | Path, cache: bool = False, **overrides) -> RunConfig:
    """The smoke protocol into ``out``; uncached by default so that it measures the code, not the cache."""
    return RunConfig(**{**SMOKE, "out": str(out), "cache": cache, "tag": "smoke", **overrides})


def run_smoke(out: str | Path, cache: bool = False, progress: bool = True) -> Path:
    from evalkit.runner import run

    return run(smoke_config(out, cache), progress=progress)


def compare_with_golden(run_dir: str | Path, golden: str | Path = GOLDEN_DIR) -> tuple[str, bool]:
    """(markdown regression report, failed) of ``run_dir`` against the golden."""
    from evalkit.compare import compare_runs
    from evalkit.errors import EvalkitError

    if not (Path(golden) / "results.json").is_file():
        raise EvalkitError(f"no golden at {golden}; create it with `evalkit smoke --update-golden`")
    return compare_runs(golden, run_dir)


def update_golden(run_dir: str | Path, golden: str | Path = GOLDEN_DIR) -> Path:
    """Keep ``run_dir``'s results, samples and report (not its images) as the golden."""
    golden = Path(golden)
    golden.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "samples.jsonl"):
        shutil.copyfile(Path(run_dir) / name, golden / name)
    return golden
