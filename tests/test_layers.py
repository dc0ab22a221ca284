"""The layers: the CLI sits on `recommender.api` alone, and nothing below the API imports it."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CLI_MODULES = sorted((REPO / "recommender").glob("cli*.py"))
CLI_LIBRARIES = ("click", "rich")
"""Third-party packages the CLI itself uses; everything else comes through the API."""
API = "recommender.api"


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in `source`, at any depth (functions, `TYPE_CHECKING` blocks);
    `from package import name` yields `package.name`, which is the module when `name` is one."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            else:
                yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cli_may_import(module: str) -> bool:
    """The CLI's own modules, the API (and the names it defines), click, rich and the standard library."""
    top = module.split(".")[0]
    if top == "recommender":
        return _within(module, API) or module.split(".")[1].startswith("cli")
    return top in CLI_LIBRARIES or top in sys.stdlib_module_names


def forbidden_cli_imports(source: str) -> list[str]:
    return [f"line {line}: {module}" for line, module in imported_modules(source) if not cli_may_import(module)]


def test_the_rule_finds_a_forbidden_import_at_any_depth():
    source = (
        "from __future__ import annotations\n"
        "import os, click\n"
        "from recommender import api, tables\n"
        "from rich.table import Table\n"
        "def command():\n"
        "    from collectors.relay import parse_time\n"
        "    import pandas\n"
        "    from recommender.cli_output import say\n"
        "    from recommender.api import recommend\n"
    )
    assert forbidden_cli_imports(source) == [
        "line 3: recommender.tables",
        "line 6: collectors.relay.parse_time",
        "line 7: pandas",
    ]


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda path: path.name)
def test_the_cli_imports_only_the_api(path: Path):
    assert forbidden_cli_imports(path.read_text()) == []


def test_nothing_below_the_cli_imports_the_api():
    """The API composes the engine; a module it composes (the report, the renderers, the collectors) never
    calls back into it."""
    below = [
        path
        for package in ("recommender", "collectors")
        for path in sorted((REPO / package).rglob("*.py"))
        if not path.name.startswith("cli") and path.name != "api.py"
    ]
    importing = [
        f"{path.relative_to(REPO)} line {line}"
        for path in below
        for line, module in imported_modules(path.read_text())
        if _within(module, API)
    ]
    assert below and importing == []
