import re
import tomllib

from evalkit import bootstrap
from tests.conftest import REPO


def test_env_key_follows_the_lock(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.14.1\n")
    monkeypatch.setattr(bootstrap, "LOCK", lock)
    monkeypatch.delenv("EVALKIT_VENV", raising=False)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    first = bootstrap.venv_dir()
    assert first == bootstrap.venv_dir() and first.parent == tmp_path / "cache"
    lock.write_text("torch==2.14.0\n")
    assert bootstrap.venv_dir() != first  # a changed pin builds a new environment


def test_pyproject_pins_agree_with_lock():
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), re.M))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in declared:
        name, version = requirement.split("==")
        assert pins.get(name.lower().replace("_", "-")) == version, f"{requirement} is not what requirements.lock pins"
