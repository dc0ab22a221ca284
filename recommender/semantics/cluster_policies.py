"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, sig-network network-policy-api).

Cluster-scoped, in a `tier`: `Admin` is evaluated before NetworkPolicy, `Baseline` only where
no NetworkPolicy decided; within a tier, lower `priority` first, then rules in order. Actions
are Accept, Deny and Pass (on to the next tier). Ingress peers are pods or namespaces only;
egress peers add `networks` (CIDRs, matching every IP in them, pod IPs included, as the API
says). A rule without `protocols` matches every protocol; with them, only those ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recommender.semantics.connections import Protocol
from recommender.semantics.errors import FieldError, InvalidPolicyError
from recommender.semantics.manifest import fields_of, list_of, string_of
from recommender.semantics.matcher import (
    Action,
    AllPorts,
    IPPeers,
    NamedPort,
    PeerMatcher,
    PodPeers,
    PortMatcher,
    PortRange,
    RuleMatcher,
    RuleRef,
    Target,
    Tier,
)
from recommender.semantics.policies import Direction, IPBlock, check_port_number, parse_cidr
from recommender.semantics.selectors import LabelSelector, parse_label_selector

KIND = "ClusterNetworkPolicy"
API_VERSION = "policy.networking.k8s.io/v1alpha2"
MAX_PRIORITY = 1000
MAX_RULES = 25
_ACTIONS = {"Accept": Action.ALLOW, "Deny": Action.DENY, "Pass": Action.PASS}


@dataclass(frozen=True, slots=True)
class ClusterRule:
    action: Action
    peers: tuple[PeerMatcher, ...]
    ports: tuple[PortMatcher, ...]


@dataclass(frozen=True, slots=True)
class ClusterNetworkPolicy:
    name: str
    tier: Tier
    priority: int
    subject: PodPeers
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()

    @property
    def id(self) -> str:
        return f"{KIND} {self.name}"


def parse_cluster_policy(manifest: Mapping[str, Any]) -> ClusterNetworkPolicy:
    """Validate one ClusterNetworkPolicy; raises `InvalidPolicyError` naming it and the field."""
    metadata = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    try:
        top = fields_of(manifest, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        if top.get("kind") != KIND:
            raise FieldError("kind", f"expected {KIND}, got {top.get('kind')!r}")
        if top.get("apiVersion", API_VERSION) != API_VERSION:
            raise FieldError("apiVersion", f"expected {API_VERSION}, got {top['apiVersion']!r}")
        name = string_of(name, "metadata.name")
        spec = fields_of(top.get("spec"), "spec", ("tier", "priority", "subject", "ingress", "egress"))
        tier = spec.get("tier")
        if tier not in ("Admin", "Baseline"):
            raise FieldError("spec.tier", f"must be Admin or Baseline, got {tier!r}")
        priority = spec.get("priority")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
            raise FieldError("spec.priority", f"must be a number in 0-{MAX_PRIORITY}, got {priority!r}")
        if "subject" not in spec:
            raise FieldError("spec.subject", "is required")
        (subject,) = _parse_pods_or_namespaces(spec["subject"], "spec.subject", ("namespaces", "pods"))
        assert isinstance(subject, PodPeers)  # the kinds asked for leave out networks
        return ClusterNetworkPolicy(
            name=name,
            tier=Tier(tier),
            priority=priority,
            subject=subject,
            ingress=_parse_rules(spec.get("ingress", []), "spec.ingress", "from", ("namespaces", "pods")),
            egress=_parse_rules(spec.get("egress", []), "spec.egress", "to", ("namespaces", "pods", "networks")),
        )
    except FieldError as error:
        raise InvalidPolicyError(
            str(name or "?"), error.field.lstrip(".") or "(manifest)", error.reason, KIND
        ) from None


def _parse_rules(raw: object, path: str, peers_key: str, peer_kinds: tuple[str, ...]) -> tuple[ClusterRule, ...]:
    items = list_of(raw, path)
    if len(items) > MAX_RULES:
        raise FieldError(path, f"may hold at most {MAX_RULES} rules")
    rules = []
    for i, item in enumerate(items):
        rule_path = f"{path}[{i}]"
        rule = fields_of(item, rule_path, ("name", "action", peers_key, "protocols"))
        action = _ACTIONS.get(rule.get("action", ""))
        if action is None:
            raise FieldError(f"{rule_path}.action", f"must be Accept, Deny or Pass, got {rule.get('action')!r}")
        peers = list_of(rule.get(peers_key, []), f"{rule_path}.{peers_key}")
        if not peers:
            raise FieldError(f"{rule_path}.{peers_key}", "needs at least one peer")
        matchers = [
            m
            for j, peer in enumerate(peers)
            for m in _parse_pods_or_namespaces(peer, f"{rule_path}.{peers_key}[{j}]", peer_kinds)
        ]
        protocols = list_of(rule.get("protocols", []), f"{rule_path}.protocols")
        ports = [m for j, p in enumerate(protocols) for m in _parse_protocol(p, f"{rule_path}.protocols[{j}]")]
        rules.append(ClusterRule(action, tuple(matchers), tuple(ports) or (AllPorts(),)))
    return tuple(rules)


def _parse_pods_or_namespaces(raw: object, path: str, kinds: tuple[str, ...]) -> list[PeerMatcher]:
    peer = fields_of(raw, path, kinds)
    if len(peer) != 1:
        raise FieldError(path, f"needs exactly one of {', '.join(kinds)}")
    ((kind, value),) = peer.items()
    if kind == "namespaces":
        return [PodPeers(parse_label_selector(value, f"{path}.namespaces"), LabelSelector())]
    if kind == "pods":
        pods = fields_of(value, f"{path}.pods", ("namespaceSelector", "podSelector"))
        for key in ("namespaceSelector", "podSelector"):
            if key not in pods:
                raise FieldError(f"{path}.pods.{key}", "is required")
        return [
            PodPeers(
                parse_label_selector(pods["namespaceSelector"], f"{path}.pods.namespaceSelector"),
                parse_label_selector(pods["podSelector"], f"{path}.pods.podSelector"),
            )
        ]
    networks = list_of(value, f"{path}.networks")
    if not networks:
        raise FieldError(f"{path}.networks", "needs at least one CIDR")
    return [IPPeers(IPBlock(parse_cidr(cidr, f"{path}.networks[{i}]")), any_ip=True) for i, cidr in enumerate(networks)]


def _parse_protocol(raw: object, path: str) -> list[PortMatcher]:
    entry = fields_of(raw, path, ("tcp", "udp", "sctp", "destinationNamedPort"))
    if len(entry) != 1:
        raise FieldError(path, "needs exactly one of tcp, udp, sctp and destinationNamedPort")
    ((key, value),) = entry.items()
    if key == "destinationNamedPort":
        name = string_of(value, f"{path}.destinationNamedPort")
        return [NamedPort(protocol, name) for protocol in Protocol]
    protocol = Protocol(key.upper())
    match = fields_of(value, f"{path}.{key}", ("destinationPort",))
    if "destinationPort" not in match:
        return [PortRange(protocol)]
    port_path = f"{path}.{key}.destinationPort"
    port = fields_of(match["destinationPort"], port_path, ("number", "range"))
    if len(port) != 1:
        raise FieldError(port_path, "needs exactly one of number and range")
    if "number" in port:
        return [PortRange(protocol, _port(port["number"], f"{port_path}.number"))]
    bounds = fields_of(port["range"], f"{port_path}.range", ("start", "end"))
    start = _port(bounds.get("start"), f"{port_path}.range.start")
    end = _port(bounds.get("end"), f"{port_path}.range.end")
    if start >= end:
        raise FieldError(f"{port_path}.range", f"start {start} must be less than end {end}")
    return [PortRange(protocol, start, end)]


def _port(raw: object, path: str) -> int:
    check_port_number(raw, path)
    return raw  # type: ignore[return-value]  # checked: an int port number


def compile_cluster_policy(policy: ClusterNetworkPolicy) -> list[Target]:
    """One target per direction with rules; it never isolates (it is not a NetworkPolicy)."""
    targets = []
    for direction, rules in ((Direction.INGRESS, policy.ingress), (Direction.EGRESS, policy.egress)):
        if rules:
            targets.append(
                Target(
                    namespace=None,
                    direction=direction,
                    subject=policy.subject.pods,
                    policies=(policy.id,),
                    rules=tuple(
                        RuleMatcher(RuleRef(policy.id, direction, i), rule.peers, rule.ports, rule.action)
                        for i, rule in enumerate(rules)
                    ),
                    namespaces=policy.subject.namespaces,
                    tier=policy.tier,
                    priority=policy.priority,
                    isolates=False,
                )
            )
    return targets
