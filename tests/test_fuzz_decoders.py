"""Fuzzing every decoder (issue 17): Hubble lines, conntrack text and XML, inventory JSON, policy YAML.

Real inputs are mutated (values replaced by odd ones, keys dropped, lines cut) or replaced by
garbage. Whatever the input, a decoder either reads it or raises our user-error type, whose message
names the file (and the line, for line-based formats); bad lines skipped with `--on-error skip` never
end the run, and what was read goes through synthesis and replay without a traceback. Bounded:
a few dozen examples each, no deadline per example, tens of seconds in all.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from collectors.conntrack_observations import read_conntrack
from collectors.errors import BadInputError, CollectorError, OnError
from collectors.hubble import read_hubble_files
from collectors.inventory import load_inventory
from recommender import api
from recommender.errors import RecommenderError
from tests.conftest import FIXTURES, REPO

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking these documents takes minutes
)

ODD_TEXT = st.sampled_from(
    ["", "../../escaped", "/etc/passwd", "kustomization", "A,B=C", "x\ny", "-", "10.0.0.1/8", "::", "é", "*", "\0"]
) | st.text(max_size=12)
ODD_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with a few values replaced by odd ones or removed."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 4))):
        paths = [path for path in _paths(document) if path]
        if not paths:
            break
        *parent_path, last = draw(st.sampled_from(paths))
        parent = document
        for step in parent_path:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[last]
        else:
            parent[last] = draw(ODD_VALUES)
    return document


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


HUBBLE_LINES = [json.loads(line) for line in _lines(FIXTURES / "hubble" / "basic-sample-10-flows.json")]
CONNTRACK_TEXT = _lines(FIXTURES / "conntrack" / "netns" / "conntrack-L.txt")[:20]
CONNTRACK_XML = _lines(FIXTURES / "conntrack" / "netns" / "conntrack-L-xml.txt")[:12]
INVENTORY_ITEMS = json.loads((REPO / "tests" / "data" / "inventory" / "kubectl-get.json").read_text())["items"]
NETNS_INVENTORY = REPO / "tests" / "data" / "conntrack" / "netns-inventory.json"
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-api", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "api"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"protocol": "TCP", "port": 80}]}
        ],
        "egress": [
            {
                "to": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [{"protocol": "TCP", "port": 5432, "endPort": 5440}],
            }
        ],
    },
}


def _garbage_line() -> st.SearchStrategy[str]:
    return st.text(max_size=80).map(lambda text: text.replace("\n", " ").replace("\r", " "))


def _check_named(error: Exception, path: Path, *, line: bool) -> None:
    """A user error names the file, and the line where the format has lines."""
    assert str(path) in str(error), error
    if line and isinstance(error, BadInputError):
        assert error.line >= 1 and str(error).startswith(f"{path}:{error.line}:")


@FUZZ
@given(data=st.data())
def test_fuzzed_hubble_lines_are_read_or_refused_by_line_never_with_a_traceback(data):
    if not HUBBLE_LINES:
        pytest.skip("shared fixtures not available")
    lines = [
        json.dumps(data.draw(mutated(line))) if data.draw(st.booleans()) else json.dumps(line) for line in HUBBLE_LINES
    ]
    lines += data.draw(st.lists(_garbage_line(), max_size=2))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capture.json"
        path.write_text("\n".join(lines) + "\n")
        try:
            read_hubble_files([str(path)])
        except CollectorError as error:
            _check_named(error, path, line=True)
        observed = read_hubble_files([str(path)], on_error=OnError.SKIP)
        result = api.recommend(observed, api.SynthesisOptions(exclude_namespaces=()))
        assert result.check.recall == 1.0
        api.render_yaml(result.proposal, explain=True)


@FUZZ
@given(data=st.data(), xml=st.booleans())
def test_fuzzed_conntrack_dumps_are_read_or_refused_by_line(data, xml):
    source = CONNTRACK_XML if xml else CONNTRACK_TEXT
    if not source:
        pytest.skip("shared fixtures not available")
    lines = []
    for line in source:
        if data.draw(st.integers(0, 3)) == 0:
            cut = data.draw(st.integers(0, len(line)))
            line = line[:cut] + data.draw(_garbage_line()) + line[cut + data.draw(st.integers(0, 8)) :]
        lines.append(line)
    inventory = load_inventory(str(NETNS_INVENTORY))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("dump.xml" if xml else "dump.txt")
        path.write_text("\n".join(lines) + "\n")
        try:
            read_conntrack([str(path)], inventory)
        except CollectorError as error:
            _check_named(error, path, line=True)
        try:
            observed = read_conntrack([str(path)], inventory, on_error=OnError.SKIP)
        except CollectorError as error:  # not a conntrack dump at all, whatever is skipped
            _check_named(error, path, line=False)
            return
        api.recommend(observed, api.SynthesisOptions(exclude_namespaces=()), inventory)


@FUZZ
@given(data=st.data())
def test_fuzzed_inventories_are_read_or_refused_naming_file_and_item(data):
    items = [data.draw(mutated(item)) if data.draw(st.integers(0, 4)) == 0 else item for item in INVENTORY_ITEMS]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inventory.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        try:
            load_inventory(str(path))
        except CollectorError as error:
            _check_named(error, path, line=False)


@FUZZ
@given(policy=mutated(POLICY), as_yaml=st.booleans())
def test_fuzzed_policy_files_are_read_or_refused_naming_the_file(policy, as_yaml):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("policy.yaml" if as_yaml else "policy.json")
        path.write_text(yaml.safe_dump(policy) if as_yaml else json.dumps(policy))
        try:
            policies = api.load_policies(str(path))
        except RecommenderError as error:
            _check_named(error, path, line=False)
            return
        assert len(policies) <= 1


@pytest.mark.parametrize(
    ("name", "load", "error_type"),
    [("inventory.yaml", load_inventory, CollectorError), ("policy.yaml", api.load_policies, RecommenderError)],
)
@FUZZ
@given(text=st.text(max_size=200))
def test_garbage_yaml_is_refused_naming_the_file(name, load, error_type, text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(text)
        try:
            load(str(path))
        except error_type as error:
            _check_named(error, path, line=False)
