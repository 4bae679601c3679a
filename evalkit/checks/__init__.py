"""Measurements of the models themselves, above the model packages: ``evalkit check-world``
(:mod:`evalkit.checks.world`) and the world CLIP's quality metrics (:mod:`evalkit.checks.clip_eval`).

Nothing in :mod:`evalkit.world.models` (the models and their weights) imports from here; these checks import the
models, the calibration priors, the scorers and the runner. Importing this package itself stays cheap (the
CLI reads :func:`default_check_dir` for its option defaults).
"""

from __future__ import annotations

from pathlib import Path

#: where ``evalkit check-world`` writes by default: a new folder under the current directory (the committed
#: measurements in ``results/embedded-stack/`` are refreshed only when asked: ``--out results/embedded-stack``)
DEFAULT_PARENT = "evalkit-checks"


def default_check_dir() -> str:
    """``evalkit-checks/<UTC timestamp>`` under the current directory (a suffix when that name is taken)."""
    import datetime as _dt

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    candidate, k = Path(DEFAULT_PARENT) / stamp, 1
    while candidate.exists():
        k += 1
        candidate = Path(DEFAULT_PARENT) / f"{stamp}-{k}"
    return str(candidate)
