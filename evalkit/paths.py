"""Where evalkit finds and keeps things. Standard library only (the bootstrap uses it too)."""

from __future__ import annotations

import os
from pathlib import Path

#: the repository root; shipped weights are found relative to it (the supported install is editable)
REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """evalkit's cache: ``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``."""
    if os.environ.get("EVALKIT_CACHE_DIR"):
        return Path(os.environ["EVALKIT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "evalkit"


#: the shipped weights of the world's models: ``clip/``, ``decoder/``, ``scorer/`` (config.json + model.safetensors)
WORLD_WEIGHTS = REPO_ROOT / "evalkit" / "world" / "weights"
