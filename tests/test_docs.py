"""The examples in docs/ are run as written: a page whose example breaks fails the suite."""

import re
import sys

import pytest

from evalkit.registry import REGISTRIES
from tests.conftest import REPO
from tests.test_contracts import check_decoder, check_prior, check_scorer

CHECKS = {"priors": check_prior, "decoders": check_decoder, "scorers": check_scorer}

PAGES = sorted((REPO / "docs").glob("*.md"))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p.read_text())], ids=lambda p: p.name)
def test_doc_examples_run(page, tmp_path):
    registered = {kind: set(r.names()) for kind, r in REGISTRIES.items()}
    try:
        for block in python_blocks(page.read_text()):
            exec(compile(block, str(page), "exec"), {"__name__": f"docs_{page.stem}"})
        for kind, check in CHECKS.items():  # what a page registers passes the contract tests
            for name in set(REGISTRIES[kind].names()) - registered[kind]:
                check(REGISTRIES[kind].get(name).tiny(), tmp_path / name)
    finally:  # examples register plugins; leave the registries as they were
        for kind, registry in REGISTRIES.items():
            for name in set(registry.names()) - registered[kind]:
                registry.unregister(name)


def test_add_a_prior_ends_with_commands_that_run_its_example(tmp_path, monkeypatch):
    """The page's `evalkit ...` commands, run as written from a folder holding its `# file:` example and the
    checkout's priors/ (relative paths as a user in the checkout types them)."""
    import shlex

    from click.testing import CliRunner

    from evalkit.cli import cli

    text = (REPO / "docs" / "add-a-prior.md").read_text()
    for block in python_blocks(text):
        if block.startswith("# file: "):
            name = block.splitlines()[0].removeprefix("# file: ").strip()
            (tmp_path / name).write_text(block)
    (tmp_path / "priors").symlink_to(REPO / "priors")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.startswith("evalkit ")
    ]
    assert len(commands) >= 2
    for command in commands:
        result = CliRunner().invoke(cli, shlex.split(command)[1:] + ["--no-cache"])
        assert result.exit_code == 0, f"{command}\n{result.output}"
    assert len(list((tmp_path / "evalkit-runs").iterdir())) == len(commands)
    for block in python_blocks(text):  # the example's modules leave with the folder that held them
        if block.startswith("# file: "):
            sys.modules.pop(block.splitlines()[0].removeprefix("# file: ").strip().removesuffix(".py"), None)


def test_every_extension_point_has_a_page():
    names = {p.name for p in PAGES}
    assert {"add-a-prior.md", "add-a-decoder.md", "add-a-scorer.md", "suites.md"} <= names
