import subprocess
import sys

import pytest

from evalkit.errors import UnknownNameError
from evalkit.registry import PRIORS, SUITES, Registry
from tests.conftest import REPO, run_cli


def test_registry_lazy_and_did_you_mean():
    registry = Registry("widget")
    registry.register("alpha", "json:dumps", "lazy target")
    assert registry.get("alpha").__name__ == "dumps"
    with pytest.raises(UnknownNameError) as info:
        registry.get("alpah")
    assert "Did you mean 'alpha'" in str(info.value)
    with pytest.raises(ValueError):
        registry.register("alpha", "json:loads")


def test_builtin_names_suggest():
    with pytest.raises(UnknownNameError, match="Did you mean 'dummy'"):
        PRIORS.get("dumy")
    with pytest.raises(UnknownNameError, match="synth-color"):
        SUITES.get("synth-colour")


@pytest.mark.parametrize("args", [["--help"], ["ls"], ["ls", "suites"], ["suites", "--help"]])
def test_help_and_ls_do_not_import_torch(args):
    code = (
        "import sys\n"
        "from evalkit.cli import cli\n"
        f"try:\n    cli.main(args={args!r}, prog_name='evalkit', standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_ls_lists_every_kind():
    result = run_cli("ls")
    assert result.returncode == 0, result.stderr
    for heading in ("priors:", "decoders:", "scorers:", "suites:"):
        assert heading in result.stdout
    assert "synth-color" in result.stdout and "t2i-compbench-texture" in result.stdout


def test_unknown_suite_exits_2_with_suggestion(tmp_path):
    result = run_cli("suites", "show", "synth-colr", cwd=tmp_path)
    assert result.returncode == 2
    assert "Did you mean 'synth-color'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
