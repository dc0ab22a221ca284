"""Synthesis: observed workload edges → the minimal NetworkPolicy set that allows exactly them.

Per managed namespace a `default-deny` (podSelector {}, Ingress and Egress); per workload with
observed traffic one `allow-<workload>` policy: ingress rules from its observed clients, egress rules
to its observed servers. Peers with identical port sets share one rule (a rule is peers × ports, so
this is exact). Pods are always selected by labels, never by IP; world, node and API server peers by
exact ipBlocks of the observed IPs, adjacent blocks collapsed exactly. Every rule carries its
evidence. What NetworkPolicy cannot or need not express is reported in `Findings`, never dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from collectors.records import (
    DROPPED,
    HEALTH,
    HOST,
    POD,
    SEEN_VERDICTS,
    UNKNOWN,
    labels_from_text,
)
from recommender.graph import build_edges
from recommender.selectors import NAMESPACE_NAME_LABEL, Selector, choose_selectors

DEFAULT_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
POLICY_PROTOCOLS = ("TCP", "UDP", "SCTP")
MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-recommender"}
DEFAULT_DENY = "default-deny"


@dataclass(frozen=True)
class SynthesisOptions:
    exclude_namespaces: tuple[str, ...] = DEFAULT_EXCLUDED_NAMESPACES
    """Namespaces left without policies; their workloads stay usable as peers."""
    include_dropped: bool = False
    """Treat flows a policy DROPPED as wanted traffic (by default they are only reported)."""


POLICY_DROP_REASONS = ("POLICY_DENIED", "POLICY_DENY", "AUTH_REQUIRED")
"""Drop reasons that mean a policy refused the traffic; other drops (bad packets such as
INVALID_SOURCE_IP, and drops without a known reason) are never wanted."""


def wanted_observations(observations: pd.DataFrame, options: SynthesisOptions) -> pd.DataFrame:
    """The observations the proposal must allow: traffic that flowed, plus policy drops if asked."""
    wanted = observations["verdict"].isin(SEEN_VERDICTS)
    if options.include_dropped:
        reasons = observations["drop_reasons"].str.split(",")
        policy_drop = reasons.map(lambda items: any(item in POLICY_DROP_REASONS for item in items))
        wanted |= (observations["verdict"] == DROPPED) & policy_drop
    return observations[wanted]


@dataclass(frozen=True)
class RuleEvidence:
    """Why one rule exists: the observed traffic it allows."""

    direction: str  # "ingress" or "egress"
    index: int
    peers: tuple[str, ...]
    ports: tuple[str, ...]
    count: int
    first_seen: pd.Timestamp | None
    last_seen: pd.Timestamp | None
    example_client: str
    example_server: str
    dns_names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """What a reader must know about the rule's selectors: `{}` (every pod of a namespace) or ambiguous."""

    def comment(self) -> str:
        def when(moment: pd.Timestamp | None) -> str:
            return "unknown" if moment is None or pd.isna(moment) else moment.strftime("%Y-%m-%dT%H:%M:%SZ")

        text = (
            f"{self.count} flows from {when(self.first_seen)} to {when(self.last_seen)}; "
            f"e.g. {self.example_client} -> {self.example_server} ({', '.join(self.ports)})"
        )
        if self.dns_names:
            text += f"; DNS names: {', '.join(self.dns_names)}"
        return text


@dataclass
class PolicyPlan:
    """One proposed NetworkPolicy and the evidence for each of its rules."""

    namespace: str
    name: str
    workload: str  # the workload key, "" for the default-deny
    manifest: dict[str, Any]
    evidence: list[RuleEvidence] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    """What a reader must know about the policy's own podSelector (see `selector_warnings`)."""

    def evidence_for(self, direction: str) -> list[RuleEvidence]:
        return [item for item in self.evidence if item.direction == direction]


@dataclass
class Findings:
    """Observed traffic that made no rule, and why."""

    host_ingress: pd.DataFrame
    """Edges from the pod's own node (kubelet probes): allowed by CNIs anyway, no rule."""
    not_expressed: pd.DataFrame
    """Edges NetworkPolicy cannot express or that are skipped (ICMP, health, unknown), with `reason`."""
    dropped: pd.DataFrame
    """Edges with DROPPED flows (wanted only with `include_dropped`)."""
    ambiguous_selectors: list[Selector]
    """Workloads whose selector also selects other workloads (extra reach)."""


@dataclass
class Proposal:
    policies: list[PolicyPlan]
    selectors: dict[tuple[str, str], Selector]
    findings: Findings
    edges: pd.DataFrame
    """The wanted edges the policies are built from (the traffic replay must find allowed)."""
    managed_namespaces: list[str]


# -- peers -------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Peer:
    """A rule peer: a workload by selector, or an IP. Ordered for deterministic output."""

    order: int  # 0 same-namespace pods, 1 other-namespace pods, 2 IPs
    namespace: str
    workload: str
    ip: str

    def as_dict(self, selectors: Mapping[tuple[str, str], Selector]) -> dict[str, Any]:
        selector = selectors[(self.namespace, self.workload)].as_dict()
        if self.order == 0:
            return {"podSelector": selector}
        return {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: self.namespace}},
            "podSelector": selector,
        }


def _peer(row: Any, side: str, policy_namespace: str) -> _Peer:
    """The peer one side of an edge row names in a rule of a policy of `policy_namespace`."""
    if getattr(row, f"{side}_entity") == POD:
        namespace = getattr(row, f"{side}_namespace")
        return _Peer(0 if namespace == policy_namespace else 1, namespace, getattr(row, f"{side}_workload"), "")
    return _Peer(2, "", "", getattr(row, f"{side}_ip"))


def _ip_blocks(ips: Iterable[str]) -> list[dict[str, Any]]:
    """Exact ipBlocks: /32 and /128 per address, adjacent blocks collapsed (an exact union)."""
    addresses = [ipaddress.ip_network(ip) for ip in ips]
    blocks = []
    for version in (4, 6):
        same = [a for a in addresses if a.version == version]
        blocks += [{"ipBlock": {"cidr": str(net)}} for net in ipaddress.collapse_addresses(same)]
    return blocks


# -- synthesis ---------------------------------------------------------------------------------


PortNames = Mapping[tuple[str, str, str, int], str]
"""(namespace, workload, protocol, port) → the container port's name, for the evidence."""


def synthesize(
    observations: pd.DataFrame,
    pods: pd.DataFrame | None = None,
    dns_names: Mapping[str, tuple[str, ...]] | None = None,
    options: SynthesisOptions | None = None,
    port_names: PortNames | None = None,
) -> Proposal:
    """Propose the NetworkPolicies that allow exactly the wanted observed traffic."""
    options = options or SynthesisOptions()
    names = _Names(dns_names or {}, port_names or {})
    all_edges = build_edges(observations)
    edges = build_edges(wanted_observations(observations, options))
    selectors = choose_selectors(_selector_members(observations, pods))

    expressible = edges["protocol"].isin(POLICY_PROTOCOLS)
    reasons = pd.Series("", index=edges.index, dtype=object)
    reasons[~expressible] = "protocol not expressible in NetworkPolicy (only TCP, UDP and SCTP)"
    for side in ("client", "server"):
        entity = edges[f"{side}_entity"]
        reasons[(reasons == "") & (entity == HEALTH)] = f"{side} is the Cilium health endpoint"
        reasons[(reasons == "") & (entity == UNKNOWN)] = f"{side} identity unknown"
        unresolved = (entity == POD) & (edges[f"{side}_workload"] == "")
        reasons[(reasons == "") & unresolved] = f"{side} pod's workload unresolved (labels only)"
    host_ingress = (reasons == "") & (edges["client_entity"] == HOST) & (edges["server_entity"] == POD)
    ruled = edges[(reasons == "") & ~host_ingress]

    namespaces = _observed_namespaces(observations, pods)
    managed = sorted(ns for ns in namespaces if ns not in options.exclude_namespaces)
    policies = [_default_deny(ns) for ns in managed]
    traffic: dict[tuple[str, str], dict[str, list]] = {}
    for row in ruled.itertuples(index=False):
        for side, direction in (("server", "ingress"), ("client", "egress")):
            namespace = getattr(row, f"{side}_namespace")
            if getattr(row, f"{side}_entity") == POD and namespace in managed:
                workload = (namespace, getattr(row, f"{side}_workload"))
                traffic.setdefault(workload, {"ingress": [], "egress": []})[direction].append(row)
    for (namespace, workload), rows in sorted(traffic.items()):
        policies.append(_workload_policy(namespace, workload, rows, selectors, names))

    used = _peers(ruled)
    findings = Findings(
        host_ingress=edges[host_ingress & edges["server_namespace"].isin(managed)].reset_index(drop=True),
        not_expressed=edges[reasons != ""].assign(reason=reasons[reasons != ""]).reset_index(drop=True),
        dropped=all_edges[all_edges["verdicts"].str.contains(DROPPED)].reset_index(drop=True),
        ambiguous_selectors=[
            s for key, s in sorted(selectors.items()) if not s.exact and (key[0] in managed or key in used)
        ],
    )
    return Proposal(policies, selectors, findings, ruled.reset_index(drop=True), managed)


def _peers(edges: pd.DataFrame) -> set[tuple[str, str]]:
    """(namespace, workload) of every pod end of `edges`: the workloads rules select."""
    found = set()
    for side in ("client", "server"):
        pods = edges[edges[f"{side}_entity"] == POD]
        found |= set(zip(pods[f"{side}_namespace"], pods[f"{side}_workload"], strict=True))
    return found


def _selector_members(observations: pd.DataFrame, pods: pd.DataFrame | None) -> list[tuple[str, str, dict]]:
    """(namespace, workload, labels) of every known pod, plus observed endpoints no pod row covers."""
    members = set()
    if pods is not None:
        members |= set(zip(pods["namespace"], pods["workload"], pods["labels"], strict=True))
    for side in ("client", "server"):
        is_pod = (observations[f"{side}_entity"] == POD) & (observations[f"{side}_workload"] != "")
        rows = observations[is_pod]
        members |= set(
            zip(
                rows[f"{side}_namespace"],
                rows[f"{side}_workload"],
                rows[f"{side}_labels"],
                strict=True,
            )
        )
    return [(ns, workload, labels_from_text(labels)) for ns, workload, labels in sorted(members)]


def _observed_namespaces(observations: pd.DataFrame, pods: pd.DataFrame | None) -> set[str]:
    namespaces = set(pods["namespace"]) if pods is not None else set()
    for side in ("client", "server"):
        namespaces |= set(observations.loc[observations[f"{side}_entity"] == POD, f"{side}_namespace"])
    return namespaces


def _metadata(namespace: str, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)}
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def _default_deny(namespace: str) -> PolicyPlan:
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(namespace, DEFAULT_DENY),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    return PolicyPlan(namespace, DEFAULT_DENY, "", manifest)


def _workload_policy(
    namespace: str,
    workload: str,
    rows: Mapping[str, list],
    selectors: Mapping[tuple[str, str], Selector],
    names: _Names,
) -> PolicyPlan:
    """The allow policy of one workload from its edge rows {"ingress": [...], "egress": [...]}."""
    spec: dict[str, Any] = {"podSelector": selectors[(namespace, workload)].as_dict(), "policyTypes": []}
    evidence: list[RuleEvidence] = []
    for direction, peer_side, peer_key in (("ingress", "client", "from"), ("egress", "server", "to")):
        if rows[direction]:
            rules, rule_evidence = _rules(rows[direction], peer_side, peer_key, direction, namespace, selectors, names)
            spec[direction] = rules
            spec["policyTypes"].append(direction.capitalize())
            evidence += rule_evidence
    some_row = (rows["ingress"] or rows["egress"])[0]
    kind = some_row.server_kind if rows["ingress"] else some_row.client_kind
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(
            namespace, f"allow-{workload}", {"netpol-recommender/workload": f"{kind or 'Workload'}/{workload}"}
        ),
        "spec": spec,
    }
    warnings = selector_warnings(selectors[(namespace, workload)])
    return PolicyPlan(namespace, f"allow-{workload}", f"{namespace}/{workload}", manifest, evidence, warnings)


def selector_warnings(selector: Selector) -> tuple[str, ...]:
    """Why a workload's podSelector selects more than the workload: `{}`, or labels other workloads share."""
    name = f"{selector.namespace}/{selector.workload}"
    also = f" (also {', '.join(selector.also_selects)})" if selector.also_selects else ""
    if not selector.match_labels:
        return (f"the podSelector of {name} is {{}}: it selects every pod of namespace {selector.namespace}{also}",)
    if not selector.exact:
        return (f"the podSelector of {name} is ambiguous: it also selects {', '.join(selector.also_selects)}",)
    return ()


def _rules(
    rows: list,
    peer_side: str,
    peer_key: str,
    direction: str,
    namespace: str,
    selectors: Mapping[tuple[str, str], Selector],
    names: _Names,
) -> tuple[list[dict[str, Any]], list[RuleEvidence]]:
    """One rule per distinct port set; its peers are every peer observed on exactly those ports."""
    rows_of: dict[_Peer, list] = {}
    for row in rows:
        rows_of.setdefault(_peer(row, peer_side, namespace), []).append(row)
    groups: dict[tuple[tuple[str, int], ...], list[_Peer]] = {}
    for peer, peer_rows in rows_of.items():
        ports = tuple(sorted({(row.protocol, int(row.port)) for row in peer_rows}))
        groups.setdefault(ports, []).append(peer)

    rules, evidence = [], []
    for index, (ports, peers) in enumerate(sorted(groups.items(), key=lambda item: (item[0], sorted(item[1])))):
        peers.sort()
        pod_peers = [peer.as_dict(selectors) for peer in peers if peer.order < 2]
        ip_peers = _ip_blocks(peer.ip for peer in peers if peer.order == 2)
        rules.append({peer_key: pod_peers + ip_peers, "ports": [{"protocol": p, "port": n} for p, n in ports]})
        rule_rows = [row for peer in peers for row in rows_of[peer]]
        warnings = tuple(
            warning
            for peer in peers
            if peer.order < 2
            for warning in selector_warnings(selectors[(peer.namespace, peer.workload)])
        )
        evidence.append(replace(_evidence(direction, index, rule_rows, peer_side, ports, names), warnings=warnings))
    return rules, evidence


@dataclass(frozen=True)
class _Names:
    """What names the evidence can give: DNS names of IPs, container port names of workloads."""

    dns: Mapping[str, tuple[str, ...]]
    ports: PortNames

    def port(self, rows: list, protocol: str, port: int) -> str:
        """`TCP/8080`, or `TCP/8080 (http)` when the servers' containers name that port."""
        found = {self.ports.get((row.server_namespace, row.server_workload, protocol, port)) for row in rows} - {None}
        return f"{protocol}/{port}" + (f" ({', '.join(sorted(found))})" if found else "")


def _evidence(
    direction: str,
    index: int,
    rows: list,
    peer_side: str,
    ports: tuple[tuple[str, int], ...],
    names: _Names,
) -> RuleEvidence:
    busiest = min(rows, key=lambda row: (-row.count, row.client, row.server))

    def example(side: str) -> str:
        return getattr(busiest, f"{side}_pod") or getattr(busiest, f"{side}_ip") or getattr(busiest, side)

    firsts = [row.first_seen for row in rows if not pd.isna(row.first_seen)]
    lasts = [row.last_seen for row in rows if not pd.isna(row.last_seen)]
    peer_ips = {getattr(row, f"{peer_side}_ip") for row in rows} - {""}
    return RuleEvidence(
        direction=direction,
        index=index,
        peers=tuple(sorted({getattr(row, peer_side) for row in rows})),
        ports=tuple(names.port(rows, protocol, port) for protocol, port in ports),
        count=sum(int(row.count) for row in rows),
        first_seen=min(firsts) if firsts else None,
        last_seen=max(lasts) if lasts else None,
        example_client=example("client"),
        example_server=example("server"),
        dns_names=tuple(sorted({name for ip in peer_ips for name in names.dns.get(ip, ())})),
    )
