"""Findings: every item behind a count of the summary that is not a rule, one row each with its evidence.

A `Finding` is data (a kind, what it is about, why, the flows behind it, examples); the summary counts
them and `findings_markdown` / `findings_json` render them (`findings.md` and `findings.json` beside
the policies). New kinds of findings add a `FindingKind` and the code that lists them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from collectors.records import DROPPED, ObservationSet
from recommender.coverage import Coverage
from recommender.graph import build_edges, endpoint_keys
from recommender.synthesis import NoStableSelector, Proposal
from recommender.verification import Check


class FindingKind(StrEnum):
    """What a finding is; the value names it in `findings.json`, the title in `findings.md`."""

    DROPPED = "dropped"
    NOT_EXPRESSED = "not-expressed"
    UNEXPRESSIBLE = "unexpressible-on-cni"
    UNRESOLVED = "unresolved-endpoint"
    AMBIGUOUS_SELECTOR = "ambiguous-selector"
    NO_STABLE_SELECTOR = "no-stable-selector"
    EXCESS = "excess"
    HOST_INGRESS = "host-ingress"
    UNORIENTED = "unoriented"
    SKIPPED = "skipped-flows"
    MALFORMED = "malformed-line"
    DNS_ALLOWANCE = "dns-allowance"
    UNOBSERVED_WORKLOAD = "unobserved-workload"
    COVERAGE = "coverage-warning"

    @property
    def heading(self) -> str:
        """The title of this kind's section (not `title`: that is `str.title`)."""
        return _TITLES[self]


_TITLES = {
    FindingKind.DROPPED: "Dropped flows (by connection)",
    FindingKind.NOT_EXPRESSED: "Edges not expressed (no rule)",
    FindingKind.UNEXPRESSIBLE: "Edges the target cannot express on the CNI (no rule: the proposal is incomplete)",
    FindingKind.UNRESOLVED: "Unresolved endpoints (no rule, never an ipBlock)",
    FindingKind.AMBIGUOUS_SELECTOR: "Ambiguous selectors (extra reach)",
    FindingKind.NO_STABLE_SELECTOR: "Workloads without a stable selector (no rule, unless --allow-empty-selector)",
    FindingKind.EXCESS: "Excess (allowed, never observed)",
    FindingKind.HOST_INGRESS: "Host ingress (the pod's own node, kubelet probes: no rule)",
    FindingKind.UNORIENTED: "Unoriented flows (client not told from server: not used)",
    FindingKind.SKIPPED: "Flows skipped (not connection traffic)",
    FindingKind.MALFORMED: "Malformed lines skipped",
    FindingKind.DNS_ALLOWANCE: "DNS allowance (allowed so that every pod resolves, never observed)",
    FindingKind.UNOBSERVED_WORKLOAD: "Unobserved workloads (no allow rule)",
    FindingKind.COVERAGE: "Coverage warnings (the input cannot support a default-deny)",
}


@dataclass(frozen=True)
class Finding:
    """One item of a summary count: `subject` is what it is about (a connection, an endpoint, a
    selector, a reason), `detail` why it is there, `flows` the flows behind it (0 when not counted in
    flows), and `evidence` examples (connections, workloads, locations)."""

    kind: FindingKind
    subject: str
    detail: str = ""
    flows: int = 0
    first_seen: str = ""
    last_seen: str = ""
    evidence: tuple[str, ...] = ()


def collect_findings(
    observed: ObservationSet, proposal: Proposal, check: Check, coverage: Coverage | None = None
) -> list[Finding]:
    """Every finding of a recommendation, by kind in `FindingKind` order, then by subject."""
    findings = proposal.findings
    unresolved = findings.not_expressed["reason"].str.contains("unknown|unresolved")
    found = [
        *_dropped(observed.observations),
        *_edges(FindingKind.NOT_EXPRESSED, findings.not_expressed, "reason"),
        *(
            Finding(FindingKind.UNEXPRESSIBLE, _connection(edge), f"{edge.reason}. Fix: {edge.fix}", edge.count)
            for edge in findings.unexpressible
        ),
        *_unresolved(findings.not_expressed[unresolved]),
        *(
            Finding(
                FindingKind.AMBIGUOUS_SELECTOR,
                f"{selector.namespace}/{selector.workload}",
                f"podSelector {_labels(selector.match_labels)} also selects {', '.join(selector.also_selects)}",
                evidence=selector.also_selects,
            )
            for selector in findings.ambiguous_selectors
        ),
        *(_no_stable_selector(item) for item in findings.no_stable_selector),
        *(
            Finding(FindingKind.EXCESS, str(ports), "allowed by the proposal, never observed")
            for ports in check.excess.ranges()
        ),
        *_edges(FindingKind.HOST_INGRESS, findings.host_ingress, detail="from the pod's own node: always allowed"),
        *_unoriented(observed.unoriented),
        *(
            Finding(FindingKind.SKIPPED, reason, flows=count)
            for reason, count in sorted(observed.stats.skipped.items())
        ),
        *(Finding(FindingKind.MALFORMED, example) for example in observed.stats.bad.examples),
        *(
            Finding(FindingKind.DNS_ALLOWANCE, str(ports), "allowed by allow-dns, never observed")
            for ports in (check.dns.unobserved.ranges() if check.dns is not None else ())
        ),
        *(
            Finding(FindingKind.UNOBSERVED_WORKLOAD, item.key, item.outcome, evidence=item.pods)
            for item in proposal.unobserved.workloads
        ),
        *(
            Finding(FindingKind.COVERAGE, warning.namespace or str(warning.kind), warning.message)
            for warning in (coverage.warnings if coverage is not None else ())
        ),
    ]
    order = list(FindingKind)
    return sorted(found, key=lambda item: (order.index(item.kind), item.subject))


def count(findings: Iterable[Finding], kind: FindingKind, *, flows: bool = False) -> int:
    """How many findings of `kind` there are, or (`flows`) how many flows are behind them."""
    return sum(item.flows if flows else 1 for item in findings if item.kind == kind)


def _when(moment: object) -> str:
    return "" if moment is None or pd.isna(moment) else pd.Timestamp(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _connection(row: Any) -> str:
    """The connection of an edges row (`DataFrame.itertuples`)."""
    return f"{row.client} -> {row.server} {row.protocol}/{row.port}"


def _edges(kind: FindingKind, edges: pd.DataFrame, detail_column: str = "", detail: str = "") -> list[Finding]:
    return [
        Finding(
            kind,
            _connection(row),
            getattr(row, detail_column) if detail_column else detail,
            int(row.count),
            _when(row.first_seen),
            _when(row.last_seen),
            tuple(pod for pod in (row.client_pod, row.server_pod) if pod),
        )
        for row in edges.itertuples(index=False)
    ]


def _dropped(observations: pd.DataFrame) -> list[Finding]:
    """One finding per dropped connection, with the drop reasons seen for it."""
    dropped = observations[observations["verdict"] == DROPPED]
    if dropped.empty:
        return []
    keyed = dropped.assign(client=endpoint_keys(dropped, "client"), server=endpoint_keys(dropped, "server"))
    reasons: dict[tuple, set[str]] = {}
    for row in keyed.itertuples(index=False):
        key = (row.client, row.server, row.protocol, int(row.port))
        reasons.setdefault(key, set()).update(item for item in row.drop_reasons.split(",") if item)
    return [
        Finding(
            FindingKind.DROPPED,
            _connection(row),
            "drop reasons: "
            + (", ".join(sorted(reasons[(row.client, row.server, row.protocol, int(row.port))])) or "none given"),
            int(row.count),
            _when(row.first_seen),
            _when(row.last_seen),
            tuple(pod for pod in (row.client_pod, row.server_pod) if pod),
        )
        for row in build_edges(dropped).itertuples(index=False)
    ]


def _unresolved(edges: pd.DataFrame) -> list[Finding]:
    """One finding per unresolved endpoint, listing its connections."""
    connections: dict[str, list] = {}
    for row in edges.itertuples(index=False):
        for side in ("client", "server"):
            if row.reason.startswith(f"{side} "):
                connections.setdefault(getattr(row, side), []).append(row)
    return [
        Finding(
            FindingKind.UNRESOLVED,
            endpoint,
            rows[0].reason.split(" ", 1)[1],
            sum(int(row.count) for row in rows),
            _when(min(row.first_seen for row in rows)),
            _when(max(row.last_seen for row in rows)),
            tuple(f"{_connection(row)} ({int(row.count)} flows)" for row in rows),
        )
        for endpoint, rows in sorted(connections.items())
    ]


def _no_stable_selector(item: NoStableSelector) -> Finding:
    """A workload only `podSelector: {}` would select: what it carries, what became of its connections,
    and (with an inventory) the label that would make it selectable."""
    detail = [
        f"labels {_labels(item.labels)}, none stable",
        "allowed with podSelector {} (its whole namespace, counted as excess)"
        if item.emitted
        else "no rule for its connections (--allow-empty-selector: podSelector {})",
    ]
    if item.suggestion:
        detail.append(
            f"the label {_labels(item.suggestion)} on its pod template would select it "
            f"and no other pod of {item.namespace}"
        )
    return Finding(FindingKind.NO_STABLE_SELECTOR, item.key, "; ".join(detail), item.flows, evidence=item.connections)


def _unoriented(unoriented: pd.DataFrame) -> list[Finding]:
    if unoriented.empty:
        return []
    keyed = unoriented.assign(client=endpoint_keys(unoriented, "client"), server=endpoint_keys(unoriented, "server"))
    return [
        Finding(
            FindingKind.UNORIENTED,
            f"{row.client} <-> {row.server} {row.protocol}/{row.port}",
            "the packet's source and destination as seen; which is the client is unknown",
            int(row.count),
            _when(row.first_seen),
            _when(row.last_seen),
        )
        for row in keyed.sort_values(["client", "server", "protocol", "port"]).itertuples(index=False)
    ]


def _labels(match_labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{key}={value}" for key, value in match_labels) + "}"


# -- rendering -----------------------------------------------------------------------------------


def findings_json(findings: Sequence[Finding]) -> str:
    """The findings as one JSON document: counts by kind and one object per finding."""
    document = {
        "counts": {kind.value: count(findings, kind) for kind in FindingKind},
        "findings": [{**asdict(item), "kind": item.kind.value, "evidence": list(item.evidence)} for item in findings],
    }
    return json.dumps(document, indent=2) + "\n"


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The findings as Markdown: one section per kind present, one table row per finding."""
    lines = ["# Findings", ""]
    if not findings:
        lines.append("Nothing to report: every observed connection made a rule.")
    for kind in FindingKind:
        items = [item for item in findings if item.kind == kind]
        if not items:
            continue
        lines += [
            f"## {kind.heading}: {len(items)}",
            "",
            "| subject | detail | flows | first seen | last seen | evidence |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for item in items:
            cells = (item.subject, item.detail, str(item.flows or ""), item.first_seen, item.last_seen)
            lines.append("| " + " | ".join(_cell(text) for text in (*cells, "; ".join(item.evidence))) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def finding_text(item: Finding, *, shown: int = 10) -> str:
    """One finding for the terminal: its kind, subject and detail, then up to `shown` lines of evidence."""
    lines = [f"{item.kind.value.replace('-', ' ')}: {item.subject}: {item.detail}"]
    lines += [f"  {example}" for example in item.evidence[:shown]]
    if len(item.evidence) > shown:
        lines.append(f"  … and {len(item.evidence) - shown} more")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
