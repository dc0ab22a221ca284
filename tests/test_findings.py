"""Findings: every count of the summary that is not a rule lists its items, and the lists agree with it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from recommender import api
from recommender.cli import INCOMPLETE, main
from recommender.excess import Excess
from recommender.findings import FindingKind, count, findings_markdown
from tests.conftest import fixture_path, write_lines
from tests.test_hostile_input import BACKUP, CLIENT, SERVER, flow

EXAMPLE = "examples/shop-capture.json.gz"

SUMMARY_COUNTS = {
    "host ingress edges (kubelet probes, no rule)": (FindingKind.HOST_INGRESS, False),
    "edges not expressed": (FindingKind.NOT_EXPRESSED, False),
    "unresolved endpoints": (FindingKind.UNRESOLVED, False),
    "ambiguous selectors": (FindingKind.AMBIGUOUS_SELECTOR, False),
    "workloads without a stable selector": (FindingKind.NO_STABLE_SELECTOR, False),
    "excess (allowed, never observed)": (FindingKind.EXCESS, False),
    "dropped flows": (FindingKind.DROPPED, True),
    "unoriented flows (not used)": (FindingKind.UNORIENTED, True),
    "flows skipped (not connection traffic)": (FindingKind.SKIPPED, True),
    "lines skipped (malformed)": (FindingKind.MALFORMED, False),
    "DNS allowance (allowed, never observed)": (FindingKind.DNS_ALLOWANCE, False),
}
SHOWN_WHEN_NOT_ZERO = {"workloads without a stable selector"}
PORT_RANGES = {
    FindingKind.EXCESS: lambda check: check.excess,
    FindingKind.DNS_ALLOWANCE: lambda check: check.dns.unobserved if check.dns is not None else Excess(),
}
"""The kinds listed one finding per port range, and where their ranges are."""


def _number(text: str) -> int:
    return int(text.split(" ", 1)[0].replace(",", ""))


def _sources(name: str) -> list[str]:
    if name == "example":
        return [EXAMPLE]
    if name == "bookinfo":
        return [str(fixture_path("hubble", f"basic-sample-400-{kind}-flows.json")) for kind in ("tcp", "udp", "icmpv4")]
    return [str(fixture_path("hubble", name))]


@pytest.mark.parametrize(
    "name",
    [
        "example",
        "bookinfo",
        "exporter-fieldmask-events.log",
        "basic-sample-10-flows.json",
        "basic-sample-5-dns-flows.json",
    ],
)
def test_every_summary_count_that_is_not_a_rule_has_its_list(name):
    result = api.recommend(api.load_observations(_sources(name)), api.SynthesisOptions(exclude_namespaces=()))
    _assert_counts_agree(result)


@pytest.mark.parametrize("allow_empty_selector", [False, True])
def test_workloads_without_a_stable_selector_are_counted_and_listed(tmp_path, allow_empty_selector):
    capture = write_lines(tmp_path / "cronjob.json", [flow(BACKUP, SERVER, 5432, 0), flow(CLIENT, SERVER, 5432, 1)])
    options = api.SynthesisOptions(allow_empty_selector=allow_empty_selector)
    result = api.recommend(api.load_observations([str(capture)]), options)
    _assert_counts_agree(result)
    (item,) = [item for item in result.findings() if item.kind == FindingKind.NO_STABLE_SELECTOR]
    assert (item.subject, item.flows, item.evidence) == ("shop/backup", 1, ("shop/backup -> shop/db TCP/5432",))
    assert ("podSelector {}" in item.detail and "excess" in item.detail) == allow_empty_selector
    excess = [item.subject for item in result.findings() if item.kind == FindingKind.EXCESS]
    assert ("shop/(any-other-pod) -> shop/db TCP/5432" in excess) == allow_empty_selector


def _assert_counts_agree(result: api.Recommendation) -> None:
    summary, findings = dict(result.summary()), result.findings()
    for label, (kind, in_flows) in SUMMARY_COUNTS.items():
        zero = label in SHOWN_WHEN_NOT_ZERO or kind is FindingKind.DNS_ALLOWANCE  # no row: none listed
        shown = summary.get(label, "0" if zero else None)
        assert shown is not None, label
        listed = count(findings, kind, flows=in_flows)
        if kind in PORT_RANGES:  # listed as port ranges, counted as (client, server, protocol, port)
            ranges = PORT_RANGES[kind](result.check).ranges()
            assert [item.subject for item in findings if item.kind == kind] == [str(item) for item in ranges]
            listed = sum(item.last - item.first + 1 for item in ranges)
        assert _number(shown) == listed, label


def test_malformed_lines_and_unresolved_endpoints_are_listed_with_their_evidence(tmp_path):
    capture = write_lines(
        tmp_path / "capture.json",
        [
            "not json",
            {
                "flow": {
                    "time": "2026-01-01T00:00:00Z",
                    "verdict": "FORWARDED",
                    "IP": {"source": "10.0.0.1", "destination": "10.0.0.2"},
                    "l4": {"TCP": {"source_port": 40000, "destination_port": 80}},
                    "source": {"namespace": "shop", "labels": ["k8s:app=web"], "pod_name": "web"},
                    "destination": {"labels": []},
                    "is_reply": False,
                }
            },
        ],
    )
    result = api.recommend(api.load_observations([str(capture)], on_error="skip"))
    findings = result.findings()
    (malformed,) = [item for item in findings if item.kind == FindingKind.MALFORMED]
    assert malformed.subject.endswith("capture.json:1: not valid JSON (JSON is malformed: invalid character (byte 4))")
    (unresolved,) = [item for item in findings if item.kind == FindingKind.UNRESOLVED]
    assert (unresolved.subject, unresolved.flows) == ("unknown:10.0.0.2", 1)
    assert unresolved.evidence == ("shop/web -> unknown:10.0.0.2 TCP/80 (1 flows)",)
    assert "| unknown:10.0.0.2 | identity unknown | 1 |" in findings_markdown(findings)


def test_an_output_folder_gets_findings_md_and_json_and_findings_goes_anywhere(tmp_path):
    out, elsewhere = tmp_path / "policies", tmp_path / "findings.json"
    run = CliRunner().invoke(main, ["recommend", EXAMPLE, "-o", str(out), "-q", "--findings", str(elsewhere)])
    assert run.exit_code == INCOMPLETE, run.output  # the example's entity edges on Cilium
    document = json.loads((out / "findings.json").read_text())
    assert document == json.loads(elsewhere.read_text())
    assert document["counts"]["dropped"] == 1 and document["counts"]["host-ingress"] == 5
    assert document["counts"]["unexpressible-on-cni"] == 10
    assert [item["kind"] for item in document["findings"]].count("host-ingress") == 5
    assert (out / "findings.md").read_text().startswith("# Findings\n")
    markdown = tmp_path / "findings.md"
    assert CliRunner().invoke(main, ["recommend", EXAMPLE, "-q", "--findings", str(markdown)]).exit_code == INCOMPLETE
    assert markdown.read_text() == (out / "findings.md").read_text()
