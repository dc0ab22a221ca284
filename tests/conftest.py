"""Shared test helpers: the real fixtures from ../shared/fixtures (skipped cleanly when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
HUBBLE = FIXTURES / "hubble"


def fixture_path(*parts: str) -> Path:
    """A file of the shared fixtures; skips the test when the fixtures folder is absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixtures not available ({path})")
    return path


def fixture_lines(name: str) -> list[str]:
    return fixture_path("hubble", name).read_text().splitlines()


def fixture_flow(name: str, index: int) -> dict:
    """The decoded JSON object of line `index` (0-based) of a Hubble fixture."""
    return json.loads(fixture_lines(name)[index])


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((json.dumps(line) if isinstance(line, dict) else line) + "\n" for line in lines))
    return path


@pytest.fixture
def bookinfo_files() -> list[str]:
    return [
        str(fixture_path("hubble", "basic-sample-400-tcp-flows.json")),
        str(fixture_path("hubble", "basic-sample-400-udp-flows.json")),
    ]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="Rewrite the golden files under tests/golden/ with today's output."
    )
