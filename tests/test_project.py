"""Project hygiene that CI must enforce: lint, formatting, and the README's commands."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", readme)


def test_ci_runs_exactly_the_readme_test_command():
    main_job, tests = _readme_commands()[:2]
    assert "netpol-recommender recommend examples/" in main_job
    assert "pytest" in tests
    assert tests in (REPO / ".ci" / "run").read_text().splitlines()


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_lint_and_format_are_clean():
    lint = subprocess.run(["ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    formatting = subprocess.run(["ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert formatting.returncode == 0, formatting.stdout
