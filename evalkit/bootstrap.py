"""Set up evalkit's environment (once) and run a command inside it. Standard library only.

    python3 -m evalkit.bootstrap evalkit demo     # README command 1
    python3 -m evalkit.bootstrap pytest           # README command 2

The virtual environment lives outside the checkout, in
``$EVALKIT_CACHE_DIR`` (default ``~/.cache/evalkit``) as ``venv-<key>``, where the key hashes
``requirements.lock`` and the Python version: repeated runs reuse it, a changed pin builds a new
one. A marker file is written when the install
completes, so an interrupted install is redone rather than half-used. ``EVALKIT_VENV`` overrides the location.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from evalkit.paths import REPO_ROOT as REPO, cache_root

LOCK = REPO / "requirements.lock"


def log(message: str) -> None:
    print(f"[evalkit.bootstrap] {message}", file=sys.stderr, flush=True)


def env_key() -> str:
    digest = hashlib.sha256(LOCK.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:12]


def venv_dir() -> Path:
    override = os.environ.get("EVALKIT_VENV")
    return Path(override) if override else cache_root() / f"venv-{env_key()}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def run(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def build_venv(venv: Path) -> None:
    """Create the environment from requirements.lock; ``.complete`` is written last.

    An interrupted build leaves no ``.complete`` marker, so the next run starts it afresh.
    """
    import fcntl

    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two bootstraps at once: the second waits, then reuses
        if (venv / ".complete").exists():
            return
        shutil.rmtree(venv, ignore_errors=True)
        start = time.time()
        log(f"creating {venv} from {LOCK.name} (one time: a few minutes, about 6 GB)")
        run([sys.executable, "-m", "venv", str(venv)])
        run(
            [
                str(venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(LOCK),
                "setuptools>=64",
            ]
        )
        (venv / ".complete").write_text(f"built in {time.time() - start:.0f}s from {LOCK}\n")
        log(f"environment ready in {time.time() - start:.0f}s")


def ensure_project_installed(venv: Path) -> None:
    """Editable-install this checkout into the environment unless it already points here."""
    probe = subprocess.run(
        [str(venv_python(venv)), "-c", "import evalkit, os; print(os.path.dirname(os.path.dirname(evalkit.__file__)))"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    if probe.returncode == 0 and Path(probe.stdout.strip()) == REPO and (venv / "bin" / "evalkit").exists():
        return
    log(f"installing evalkit from {REPO} (editable)")
    run(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(REPO),
        ]
    )


def ensure_environment() -> Path:
    venv = venv_dir()
    if not (venv / ".complete").exists():
        build_venv(venv)
    ensure_project_installed(venv)
    return venv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    venv = ensure_environment()
    if not argv:
        print(venv)
        return 0
    bin_dir = venv / "bin"
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if argv[0] in ("pytest", "python"):
        cmd = [str(venv_python(venv))] + (["-m", "pytest"] if argv[0] == "pytest" else []) + argv[1:]
    else:
        exe = bin_dir / argv[0]
        cmd = [str(exe) if exe.exists() else argv[0]] + argv[1:]
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
