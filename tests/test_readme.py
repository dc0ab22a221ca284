"""The README's Python API section: its five-line example runs verbatim, every public function is described,
and the picture of the example capture it shows exists and is legible."""

from __future__ import annotations

import inspect
import io
import re

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.text import Text

from recommender import api
from tests.conftest import REPO

SHOP = REPO / "examples" / "shop-capture.json.gz"
IMAGE = "docs/shop-graph.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODES = ("frontend", "checkout", "catalog", "catalog-db", "payments", "coredns")
WORLD_API = "api.payments.example.com"


def section() -> str:
    """The text of the README's "Python API" section, up to the next section."""
    found = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", (REPO / "README.md").read_text(), re.S | re.M)
    assert found, 'README.md has no "## Python API" section'
    return found.group(1)


def example() -> str:
    """The section's first Python block."""
    found = re.search(r"```python\n(.*?)```", section(), re.S)
    assert found, "the Python API section has no ```python block"
    return found.group(1)


def png_pixels(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    return imread(io.BytesIO(data), format="png")


def colours(pixels: np.ndarray) -> int:
    red, green, blue = ((pixels[..., channel] * 255).astype(np.uint32) for channel in range(3))
    return len(np.unique(red << 16 | green << 8 | blue))


def test_the_api_example_is_five_lines_of_code():
    """Five lines of code (the blank line `ruff format` wants after the import is not code)."""
    lines = example().rstrip("\n").split("\n")
    code = [line for line in lines if line.strip()]
    assert len(code) == 5, code
    assert len(lines) <= 6


def test_the_api_example_runs_verbatim(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(REPO)  # the example names the capture relative to the repository root
    namespace: dict[str, object] = {}
    exec(compile(example(), "README.md", "exec"), namespace)
    observed, result = namespace["observed"], namespace["result"]
    assert isinstance(observed, api.ObservationSet) and len(observed.observations) == 27
    assert isinstance(result, api.Recommendation)
    assert result.check.recall == 1.0 and not result.check.excess
    assert sorted(plan.name for plan in result.proposal.policies if plan.namespace == "shop") == [
        "allow-catalog",
        "allow-catalog-db",
        "allow-checkout",
        "allow-dns",
        "allow-frontend",
        "default-deny",
    ]
    printed = capsys.readouterr().out
    assert "shop/frontend" in printed and "shop/catalog" in printed  # the busiest edge, from the table
    assert printed.count("kind: NetworkPolicy") == 11
    assert "cidr: 203.0.113.10/32" in printed and f"DNS names: {WORLD_API}" in printed  # explained


def test_every_public_function_has_its_sentence():
    text = section()
    functions = [name for name in api.__all__ if inspect.isfunction(getattr(api, name))]
    assert len(functions) >= 12
    assert [name for name in functions if f"`api.{name}(" not in text] == []


def test_the_readme_shows_the_example_graph():
    assert f"]({IMAGE})" in section()
    pixels = png_pixels((REPO / IMAGE).read_bytes())
    height, width = pixels.shape[:2]
    assert 1000 <= width <= 6000 and 300 <= height <= 4000
    assert colours(pixels) > 50


def test_the_example_graph_is_legible():
    """Rendered again from the capture: a PNG that is not empty, with every workload and the world API
    labelled, at the size of the committed image (regenerate it with the command in the README when not)."""
    figure = api.picture(api.load_observations([str(SHOP)]))
    labels = [text.get_text() for text in figure.findobj(Text)]
    for node in NODES:
        assert node in labels
    assert any(label.startswith(f"{WORLD_API}\n") for label in labels)
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=150)
    pixels = png_pixels(rendered.getvalue())
    assert colours(pixels) > 50
    assert (pixels[..., :3] < 0.5).any(axis=2).mean() > 0.01  # dark ink: labels and arrows, not a blank page
    committed = png_pixels((REPO / IMAGE).read_bytes())
    assert committed.shape[:2] == pytest.approx(pixels.shape[:2], rel=0.03)
