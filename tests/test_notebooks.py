"""The analyst notebooks run top to bottom on the example data (no cluster, no network) and draw their pictures.

Each notebook is executed with nbclient in a temporary copy of `notebooks/` and `examples/`, by a `python3`
kernel that runs this interpreter; any cell error fails the test. The committed notebooks carry their outputs
(they are read on the code host): `python -m tests.test_notebooks` re-executes them in place.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("discovery.ipynb", "review.ipynb")
KERNEL = "python3"
TIMEOUT = 120  # seconds per cell
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL},
    "language_info": {"name": "python"},
}
"""The notebook metadata as committed: no interpreter version or path of the machine that ran it."""


# ---------------------------------------------------------------------------------------------------- running


def kernel_manager(folder: Path) -> KernelManager:
    """A manager for a `python3` kernel that runs this interpreter (`sys.executable -m ipykernel_launcher`),
    from a kernel spec written into `folder`: whatever kernels the machine has installed, or none."""
    spec = folder / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def kernel_environment() -> dict[str, str]:
    """The kernel's environment: the project importable even when it is not installed."""
    path = os.pathsep.join(item for item in (str(REPO), os.environ.get("PYTHONPATH", "")) if item)
    return {**os.environ, "PYTHONPATH": path, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def execute(notebook: Path, kernels: Path) -> NotebookNode:
    """`notebook` executed top to bottom in its own folder; raises `CellExecutionError` on any cell error."""
    executed = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        executed,
        km=kernel_manager(kernels),
        kernel_name=KERNEL,
        timeout=TIMEOUT,
        record_timing=False,
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute(env=kernel_environment())
    return executed


def clean(notebook: NotebookNode) -> NotebookNode:
    """The notebook as committed: no timing or machine metadata."""
    notebook.metadata = nbformat.from_dict(METADATA)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    return notebook


# ---------------------------------------------------------------------------------------------------- reading


def outputs(cell: NotebookNode) -> Iterator[NotebookNode]:
    yield from cell.get("outputs", [])


def text(cell: NotebookNode) -> str:
    """What a reader sees of a cell's outputs, as text: streams and plain-text representations."""
    parts = []
    for output in outputs(cell):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def tagged(notebook: NotebookNode, tag: str) -> NotebookNode:
    """The one cell carrying `tag` (tags mark the cells whose results the tests check)."""
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def images(notebook: NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(output.data["image/png"])
        for cell in notebook.cells
        for output in outputs(cell)
        if "image/png" in output.get("data", {})
    ]


def problems(notebook: NotebookNode) -> list[str]:
    """Errors and warnings in the outputs: neither belongs in a committed notebook."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in outputs(cell):
            if output.output_type == "error":
                found.append(f"cell {index}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"cell {index}: stderr: {output.text[:200]}")
    return found


# ---------------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NotebookNode]:
    """Both notebooks, executed in a temporary copy of the folders they read (nothing is written in the repo)."""
    workspace = tmp_path_factory.mktemp("workspace")
    shutil.copytree(NOTEBOOKS, workspace / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(REPO / "examples", workspace / "examples")
    kernels = tmp_path_factory.mktemp("kernels")
    return {name: execute(workspace / "notebooks" / name, kernels) for name in NAMES}


@pytest.mark.parametrize(("name", "pictures"), [("discovery.ipynb", 2), ("review.ipynb", 3)])
def test_notebook_runs_top_to_bottom_and_draws(executed: dict[str, NotebookNode], name: str, pictures: int):
    notebook = executed[name]
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert problems(notebook) == []
    found = images(notebook)
    assert len(found) >= pictures
    for image in found:
        assert image.startswith(PNG_SIGNATURE) and len(image) > 10_000


def test_discovery_shows_world_egress_evidence_and_proof(executed: dict[str, NotebookNode]):
    notebook = executed["discovery.ipynb"]
    world = text(tagged(notebook, "world-egress"))
    assert "shop/checkout" in world and "203.0.113.10" in world and "api.payments.example.com" in world
    evidence = text(tagged(notebook, "evidence"))
    assert "egress[0]: 114 flows from 2026-11-02T09:00:54Z" in evidence
    assert "DNS names: api.payments.example.com" in evidence
    proof = text(tagged(notebook, "proof"))
    assert "recall: 100%" in proof and "excess: 0 " in proof
    verified = text(tagged(notebook, "verify"))
    assert "recall 62%, denied 10" in verified  # the entity edges: no rule (a dead ipBlock on Cilium)
    unexpressible = text(tagged(notebook, "unexpressible"))
    assert "kube-apiserver:172.18.0.5" in unexpressible and "--target cilium" in unexpressible
    cilium = text(tagged(notebook, "cilium"))
    assert "kind: CiliumNetworkPolicy" in cilium and "fromEntities:" in cilium and "- remote-node" in cilium
    assert "kustomization.yaml" in verified and "shop.yaml" in verified


def test_review_names_what_would_break_and_what_is_unused(executed: dict[str, NotebookNode]):
    notebook = executed["review.ipynb"]
    would_break = text(tagged(notebook, "would-break")).splitlines()
    broken = [line.split()[1:5] for line in would_break[1:]]
    assert broken == [
        ["shop/catalog", "shop/catalog-db", "TCP", "5432"],
        ["shop/checkout", "payments/payments", "TCP", "8443"],
    ]
    unused = text(tagged(notebook, "unused-rules")).splitlines()
    assert [line.split()[1:5] for line in unused[1:]] == [
        ["payments", "payments", "ingress", "0"],
        ["shop", "catalog", "ingress", "1"],
    ]
    unobserved = text(tagged(notebook, "unobserved"))
    assert "world:203.0.113.10" in unobserved and "shop/frontend" in unobserved
    comparison = text(tagged(notebook, "comparison")).splitlines()
    assert comparison[1].split()[-2:] == ["2", "10"]  # would break: existing 2, recommended 10 (Cilium's entities)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_carries_clean_outputs(name: str):
    """The committed notebook reads well on a code host: executed in order, pictures included, no errors,
    no timing metadata, nothing of the machine that ran it."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert all(cell.outputs for cell in code[1:]), "every cell but the imports shows something"
    assert problems(notebook) == []
    assert images(notebook)
    assert notebook.metadata == METADATA
    assert not [cell for cell in notebook.cells if "execution" in cell.metadata]
    raw = (NOTEBOOKS / name).read_text()
    for machine in (str(REPO), str(Path.home()), sys.executable, "/tmp/"):
        assert len(machine) < 5 or machine not in raw


if __name__ == "__main__":  # re-execute the committed notebooks in place
    import tempfile

    with tempfile.TemporaryDirectory() as kernel_specs:
        for notebook_name in NAMES:
            path = NOTEBOOKS / notebook_name
            result = clean(execute(path, Path(kernel_specs)))
            if problems(result):
                sys.exit(f"{path}: {problems(result)}")
            nbformat.write(result, path)
            print(f"executed {path.relative_to(REPO)}")
