"""A proposal's policies as data: each `PolicyPlan` (the semantics policy, its manifest, its rules), the
synthesis `Rule`s and `Peer`s the renderers read, and the evidence behind every rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from recommender.manifests import network_policy_manifest
from recommender.selectors import Selector, namespace_selector
from recommender.semantics import AnyPolicy, NetworkPolicy, Protocol
from recommender.semantics.policies import IPBlock, PolicyPeer, PolicyPort, PolicyRule

POLICY_PROTOCOLS = ("TCP", "UDP", "SCTP")


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
    note: str = ""
    """Why a rule exists beyond its observed traffic (the DNS allowance)."""
    warnings: tuple[str, ...] = ()
    """What a reader must know about the rule's selectors: `{}` (every pod of a namespace) or ambiguous."""

    def comment(self) -> str:
        def when(moment: pd.Timestamp | None) -> str:
            return "unknown" if moment is None or pd.isna(moment) else moment.strftime("%Y-%m-%dT%H:%M:%SZ")

        if self.note and not self.count:
            return self.note
        text = f"{self.note}; observed: " if self.note else ""
        text += (
            f"{self.count} flows from {when(self.first_seen)} to {when(self.last_seen)}; "
            f"e.g. {self.example_client} -> {self.example_server} ({', '.join(self.ports)})"
        )
        if self.dns_names:
            text += f"; DNS names: {', '.join(self.dns_names)}"
        return text


@dataclass
class PolicyPlan:
    """One proposed policy: the semantics object verification evaluates, its manifest (for a NetworkPolicy,
    rendered from it by `manifests`), its rules as data, and the evidence for each of its rules."""

    namespace: str  # "" for the cluster-scoped baseline
    name: str
    workload: str  # the workload key, "" for the default deny
    manifest: dict[str, Any]
    policy: AnyPolicy
    evidence: list[RuleEvidence] = field(default_factory=list)
    purpose: str = ""
    """What the policy is for, when it is neither a default-deny nor a workload's (the DNS allowance)."""
    warnings: tuple[str, ...] = ()
    """What a reader must know about the policy's own podSelector (see `selector_warnings`)."""
    rules: list[Rule] = field(default_factory=list)
    """The rules the manifest is made of, in the order of `evidence` (what other renderers read)."""
    annotations: dict[str, str] = field(default_factory=dict)
    """The manifest's annotations."""

    @classmethod
    def of(cls, policy: NetworkPolicy, workload: str = "", **details: Any) -> PolicyPlan:
        """The plan of a NetworkPolicy, its manifest rendered; `details`: the other fields."""
        manifest = network_policy_manifest(policy, details.get("annotations"))
        return cls(policy.namespace, policy.name, workload, manifest, policy, **details)

    def with_policy(self, policy: NetworkPolicy) -> PolicyPlan:
        """The same plan for a changed NetworkPolicy, its manifest rendered again."""
        return replace(self, policy=policy, manifest=network_policy_manifest(policy, self.annotations))

    def evidence_for(self, direction: str) -> list[RuleEvidence]:
        return [item for item in self.evidence if item.direction == direction]


PEER_KINDS = ("pods", "pods", "cidr", "entities", "fqdn")
"""The kind of peer of each `Peer.order`: Cilium allows one kind per rule."""


@dataclass(frozen=True, order=True)
class Peer:
    """A rule peer: a workload by selector, an IP, a Cilium entity or DNS names. Ordered for
    deterministic output."""

    order: int  # 0 same-namespace pods, 1 other-namespace pods, 2 IPs, 3 entities, 4 DNS names
    namespace: str
    workload: str
    ip: str
    entity: str = ""
    names: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return PEER_KINDS[self.order]

    def policy_peer(self, selectors: Mapping[tuple[str, str], Selector]) -> PolicyPeer:
        """The NetworkPolicy peer of a workload: its pods by selector, in its namespace by name if not the policy's."""
        pods = selectors[(self.namespace, self.workload)].label_selector
        if self.order == 0:
            return PolicyPeer(pod_selector=pods)
        return PolicyPeer(pod_selector=pods, namespace_selector=namespace_selector(self.namespace))


@dataclass(frozen=True)
class Rule:
    """One allow rule: every peer × every (protocol, port); an ICMP "port" is 0, the echo request."""

    direction: str
    peers: tuple[Peer, ...]
    ports: tuple[tuple[str, int], ...]
    ips: tuple[str, ...]
    """The observed IPs of the peers that are not pods (what an ipBlock of the rule holds)."""


def exact_cidrs(ips: Iterable[str]) -> list[str]:
    """Exact CIDRs: /32 and /128 per address, adjacent blocks collapsed (an exact union); IPv4 first."""
    addresses = [ipaddress.ip_network(ip) for ip in ips]
    v4 = [a for a in addresses if isinstance(a, ipaddress.IPv4Network)]
    v6 = [a for a in addresses if isinstance(a, ipaddress.IPv6Network)]
    return [str(net) for net in ipaddress.collapse_addresses(v4)] + [
        str(net) for net in ipaddress.collapse_addresses(v6)
    ]


def ip_block_peers(ips: Iterable[str]) -> list[PolicyPeer]:
    return [PolicyPeer(ip_block=IPBlock(ipaddress.ip_network(cidr))) for cidr in exact_cidrs(ips)]


PortNames = Mapping[tuple[str, str, str, int], str]
"""(namespace, workload, protocol, port) → the container port's name, for the evidence."""


def networkpolicy_rule(rule: Rule, selectors: Mapping[tuple[str, str], Selector]) -> PolicyRule:
    """A rule as NetworkPolicy writes it: pods by selector, every other peer by ipBlocks of its IPs."""
    pod_peers = [peer.policy_peer(selectors) for peer in rule.peers if peer.kind == "pods"]
    ports = [PolicyPort(Protocol(p), n) for p, n in rule.ports if p in POLICY_PROTOCOLS]
    return PolicyRule(tuple(pod_peers + ip_block_peers(rule.ips)), tuple(ports))


@dataclass(frozen=True)
class EvidenceNames:
    """What names the evidence can give: DNS names of IPs, container port names of workloads."""

    dns: Mapping[str, tuple[str, ...]]
    ports: PortNames

    def port(self, rows: list, protocol: str, port: int) -> str:
        """`TCP/8080`, or `TCP/8080 (http)` when the servers' containers name that port."""
        found = {
            name
            for row in rows
            if (name := self.ports.get((row.server_namespace, row.server_workload, protocol, port)))
        }
        return f"{protocol}/{port}" + (f" ({', '.join(sorted(found))})" if found else "")


def rule_evidence(
    direction: str,
    index: int,
    rows: list,
    peer_side: str,
    ports: tuple[tuple[str, int], ...],
    names: EvidenceNames,
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
