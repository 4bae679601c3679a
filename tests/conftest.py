import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def prompts_dir():
    """The local copy of T2I-CompBench prompt files (``.ci/run`` sets EVALKIT_PROMPTS_DIR)."""
    value = os.environ.get("EVALKIT_PROMPTS_DIR")
    if not value:
        pytest.skip("EVALKIT_PROMPTS_DIR is not set: no local copy of the T2I-CompBench prompt files")
    return Path(value)


def run_cli(*args, env=None, cwd=None):
    """Run ``python -m evalkit ARGS`` in a subprocess; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=full_env, cwd=cwd or REPO
    )


def dummy_run_args(*extra: str) -> list[str]:
    """``evalkit run`` arguments with the dummy prior, decoder and scorer (seconds, no weights), then ``extra``."""
    return ["run", "--prior", "dummy", "--decoder", "dummy", "--scorer", "dummy", *extra]
