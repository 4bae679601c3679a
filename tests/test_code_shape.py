"""The shape of the library that a newcomer relies on (docs/architecture.md): short functions, and plugins that do
not reach up into the harness, the checks, the trainers or the command line."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evalkit"
MAX_FUNCTION_LINES = 60
#: plugin packages, and what they must not import (they are imported *by* these)
PLUGIN_PACKAGES = ("priors", "decoders", "scorers", "suites", "world")
UPPER_LAYERS = (
    "evalkit.cli",
    "evalkit.checks",
    "evalkit.train",
    "evalkit.harness",
    "evalkit.report",
    "evalkit.eval_prior",
)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_library_function_is_longer_than_60_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", PLUGIN_PACKAGES)
def test_plugins_do_not_import_the_layers_above_them(package):
    wrong = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for name in _imports(path)
        if any(name == up or name.startswith(up + ".") for up in UPPER_LAYERS)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_world_imports_no_plugin_and_its_core_no_torch():
    """``evalkit.world`` is the bottom layer: plugins build on it, never the other way; outside ``world/models/``
    it runs on numpy alone (the renderer is used by processes that never load a network)."""
    wrong = []
    for path in sorted((PACKAGE / "world").rglob("*.py")):
        for name in _imports(path):
            plugin = any(name.startswith(f"evalkit.{p}") for p in ("priors", "decoders", "scorers", "suites"))
            torch = name.split(".")[0] == "torch" and "models" not in path.relative_to(PACKAGE).parts
            if plugin or torch:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not wrong, "\n".join(wrong)
