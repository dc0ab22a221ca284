"""Conformance truth tables for recommender.semantics (data in tests/semantics_cases/).

Each case is a tiny cluster, some policies, a default verdict and the exceptions to it
(see tests/semantics_cases/README.md). The whole matrix of (client, server, probe) cells is
compared, so a case also checks everything it does not mention. A case runs under the
`kubernetes` profile (the spec), and under every other profile it lists in `profiles`, each
column with its own exceptions and the source it follows.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recommender.semantics import ContainerPort, Endpoint, Evaluator, ExternalPeer, Namespace, Pod, profile_named

CASES_DIR = Path(__file__).parent / "semantics_cases"
GRID_KEYS = ("namespaces", "pods", "externals", "probes")

Cell = tuple[str, str, str]  # client name, server name, probe


@dataclass(frozen=True)
class Case:
    id: str
    grid: dict[str, Any]
    spec: dict[str, Any]
    profile: str = "kubernetes"
    """`name` or `name/option`: the column of the case this test checks."""

    @property
    def column(self) -> dict[str, Any]:
        return self.spec.get("profiles", {}).get(self.profile, {})

    def expectations(self) -> list[str]:
        return [*self.spec.get("expect", []), *self.column.get("expect", [])]


@dataclass(frozen=True)
class Expectation:
    allowed: bool
    client: str
    server: str
    probes: frozenset[str] | None

    @classmethod
    def parse(cls, text: str) -> Expectation:
        verdict, client, arrow, server, *probes = text.split()
        assert verdict in ("allow", "deny") and arrow == "->", f"bad expectation {text!r}"
        return cls(verdict == "allow", client, server, frozenset(probes[0].split(",")) if probes else None)

    def matches(self, cell: Cell) -> bool:
        client, server, probe = cell
        return (
            fnmatch.fnmatchcase(client, self.client)
            and fnmatch.fnmatchcase(server, self.server)
            and (self.probes is None or probe in self.probes)
        )


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        for spec in document["cases"]:
            grid = {key: spec.get(key, document["grid"].get(key, {})) for key in GRID_KEYS}
            case_id = f"{path.stem}:{spec['name']}"
            base = spec.get("profile", "kubernetes")
            cases.append(Case(case_id, grid, spec, base))
            cases += [Case(f"{case_id}[{p}]", grid, spec, p) for p in spec.get("profiles", {}) if p != base]
    return cases


CASES = load_cases()


def build_endpoints(grid: dict[str, Any]) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}
    for ref, pod in grid["pods"].items():
        namespace, name = ref.split("/")
        endpoints[ref] = Pod(
            namespace,
            name,
            labels=pod.get("labels", {}),
            ports=tuple(ContainerPort(**port) for port in pod.get("ports", [])),
            ip=pod.get("ip"),
            host_network=pod.get("hostNetwork", False),
        )
    for name, external in grid["externals"].items():
        if isinstance(external, str):
            endpoints[name] = ExternalPeer(external)
        else:
            endpoints[name] = ExternalPeer(
                external.get("ip"), external.get("entity", "world"), tuple(external.get("dns", ()))
            )
    return endpoints


def cells_of(endpoints: dict[str, Endpoint], probes: list[str]) -> list[Cell]:
    """Every ordered pair of distinct endpoints, except two external IPs, on every probe."""
    return [
        (client, server, probe)
        for client in endpoints
        for server in endpoints
        if client != server
        and not (isinstance(endpoints[client], ExternalPeer) and isinstance(endpoints[server], ExternalPeer))
        for probe in probes
    ]


def parse_probe(probe: str) -> tuple[str, int | None]:
    protocol, _, port = probe.partition("/")
    return protocol, int(port) if port else None


def render_matrix(verdicts: dict[Cell, bool], names: list[str], probe: str) -> str:
    """One probe as a table: rows are clients, columns servers by index; `.` allowed, `X` denied."""
    lines = [f"{probe:>16} " + " ".join(f"{i:>2}" for i in range(len(names)))]
    for i, client in enumerate(names):
        row = [verdicts.get((client, server, probe)) for server in names]
        marks = " ".join({True: " .", False: " X", None: "  "}[v] for v in row)
        lines.append(f"{i:>2} {client:>13} {marks}")
    return "\n".join(lines)


def mismatch_report(case: Case, expected: dict[Cell, bool], actual: dict[Cell, bool], decisions: dict) -> str:
    names = list(build_endpoints(case.grid))
    wrong = [cell for cell in expected if expected[cell] != actual[cell]]
    source = case.column.get("source", case.spec.get("ref", ""))
    report = [f"{case.id}: {len(wrong)} cell(s) differ under {case.profile} ({source})"]
    for probe in sorted({cell[2] for cell in wrong}):
        report += [
            "expected:",
            render_matrix(expected, names, probe),
            "actual:",
            render_matrix(actual, names, probe),
        ]
    report += [str(decisions[cell]) for cell in wrong]
    return "\n".join(report)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_truth_table(case: Case) -> None:
    endpoints = build_endpoints(case.grid)
    namespaces = [Namespace(name, labels) for name, labels in case.grid["namespaces"].items()]
    pods = [e for e in endpoints.values() if isinstance(e, Pod)]
    name, *options = case.profile.split("/")
    evaluator = Evaluator(case.spec["policies"], namespaces, pods, profile=profile_named(name, options))

    cells = cells_of(endpoints, case.grid["probes"])
    expectations = [Expectation.parse(text) for text in case.expectations()]
    unused = [e for e in expectations if not any(e.matches(cell) for cell in cells)]
    assert not unused, f"expectations matching no cell (typo?): {unused}"

    expected: dict[Cell, bool] = {}
    actual: dict[Cell, bool] = {}
    decisions = {}
    for cell in cells:
        client, server, probe = cell
        expected[cell] = case.column.get("default", case.spec["default"]) == "allow"
        for expectation in expectations:
            if expectation.matches(cell):
                expected[cell] = expectation.allowed
        protocol, port = parse_probe(probe)
        decision = decisions[cell] = evaluator.evaluate(endpoints[client], endpoints[server], protocol, port)
        actual[cell] = decision.allowed
        connections = evaluator.allowed_connections(endpoints[client], endpoints[server])
        assert connections.contains(protocol, port) == decision.allowed, f"{decision} vs {connections}"

    assert actual == expected, mismatch_report(case, expected, actual, decisions)

    for flow, sides in case.column.get("rules", case.spec.get("rules", {})).items():
        client, _, server, probe = flow.split()
        decision = decisions[client, server, probe]
        assert [str(rule) for rule in decision.egress.allowed_by] == sides["egress"], str(decision)
        assert [str(rule) for rule in decision.ingress.allowed_by] == sides["ingress"], str(decision)


def test_every_profile_column_cites_its_source() -> None:
    columns = [case for case in CASES if case.profile in case.spec.get("profiles", {})]
    assert columns, "no case has profile columns"
    for case in columns:
        assert case.column.get("source"), f"{case.id}: a profile column needs a source"


def test_the_suite_has_at_least_seventy_uniquely_named_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)
