"""Project hygiene that CI must enforce: lint, formatting, types, and the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", readme)


def test_ci_runs_exactly_the_readme_test_command():
    main_job, tests = _readme_commands()[:2]
    assert "netpol-recommender recommend examples/" in main_job
    assert "pytest" in tests
    assert tests in (REPO / ".ci" / "run").read_text().splitlines()


def test_ruff_lint_and_format_are_clean():
    """Run from this interpreter (ruff is a test dependency): the lint never skips."""
    ruff = [sys.executable, "-m", "ruff"]
    lint = subprocess.run([*ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = subprocess.run([*ruff, "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert formatting.returncode == 0, formatting.stdout


def test_mypy_finds_no_type_errors():
    """Run from this interpreter (mypy is a test dependency): the check never skips. What it checks and which
    untyped libraries it takes as they are is `[tool.mypy]` in pyproject.toml."""
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "recommender", "collectors"], cwd=REPO, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
