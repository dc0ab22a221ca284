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
from typing import Annotated, Any, Final, Literal

from msgspec import Meta

from collectors.decoding import FieldError, Strict, decode, exactly_one
from recommender.semantics.connections import Protocol
from recommender.semantics.manifest import Metadata, policy_error, raw_name
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
from recommender.semantics.selectors import LabelSelector, SelectorSpec, label_selector

KIND = "ClusterNetworkPolicy"
API_VERSION: Final = "policy.networking.k8s.io/v1alpha2"
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


class _PodsSpec(Strict, frozen=True):
    namespace_selector: SelectorSpec
    pod_selector: SelectorSpec


class _PeerSpec(Strict, frozen=True):
    """A subject or an ingress peer: exactly one field."""

    namespaces: SelectorSpec | None = None
    pods: _PodsSpec | None = None


class _EgressPeerSpec(_PeerSpec, frozen=True):
    networks: Annotated[tuple[str, ...], Meta(min_length=1)] | None = None


class _PortRangeSpec(Strict, frozen=True):
    start: int
    end: int


class _DestinationPortSpec(Strict, frozen=True):
    number: int | None = None
    range: _PortRangeSpec | None = None


class _PortMatchSpec(Strict, frozen=True):
    destination_port: _DestinationPortSpec | None = None


class _ProtocolSpec(Strict, frozen=True):
    tcp: _PortMatchSpec | None = None
    udp: _PortMatchSpec | None = None
    sctp: _PortMatchSpec | None = None
    destination_named_port: Annotated[str, Meta(min_length=1)] | None = None


class _RuleSpec(Strict, frozen=True):
    action: Literal["Accept", "Deny", "Pass"]
    name: str = ""
    protocols: tuple[_ProtocolSpec, ...] = ()


class _IngressSpec(_RuleSpec, kw_only=True, frozen=True):
    from_: Annotated[tuple[_PeerSpec, ...], Meta(min_length=1)]


class _EgressSpec(_RuleSpec, kw_only=True, frozen=True):
    to: Annotated[tuple[_EgressPeerSpec, ...], Meta(min_length=1)]


class _Spec(Strict, frozen=True):
    tier: Literal["Admin", "Baseline"]
    priority: Annotated[int, Meta(ge=0, le=MAX_PRIORITY)]
    subject: _PeerSpec
    ingress: Annotated[tuple[_IngressSpec, ...], Meta(max_length=MAX_RULES)] = ()
    egress: Annotated[tuple[_EgressSpec, ...], Meta(max_length=MAX_RULES)] = ()


class _Manifest(Strict, frozen=True):
    metadata: Metadata
    kind: Literal["ClusterNetworkPolicy"]
    spec: _Spec
    api_version: Literal["policy.networking.k8s.io/v1alpha2"] = API_VERSION
    status: object = None


def parse_cluster_policy(manifest: Mapping[str, Any]) -> ClusterNetworkPolicy:
    """Validate one ClusterNetworkPolicy; raises `InvalidPolicyError` naming it and the field."""
    try:
        document = decode(manifest, _Manifest)
        spec = document.spec
        (subject,) = _peer(spec.subject, "spec.subject")
        assert isinstance(subject, PodPeers)  # a subject is namespaces or pods, never networks
        return ClusterNetworkPolicy(
            name=document.metadata.name,
            tier=Tier(spec.tier),
            priority=spec.priority,
            subject=subject,
            ingress=tuple(_rule(r, r.from_, f"spec.ingress[{i}]", "from") for i, r in enumerate(spec.ingress)),
            egress=tuple(_rule(r, r.to, f"spec.egress[{i}]", "to") for i, r in enumerate(spec.egress)),
        )
    except FieldError as error:
        raise policy_error(error, KIND, raw_name(manifest) or "?") from None


def _rule(rule: _RuleSpec, peers: tuple[_PeerSpec, ...], path: str, peers_key: str) -> ClusterRule:
    matchers = [m for j, peer in enumerate(peers) for m in _peer(peer, f"{path}.{peers_key}[{j}]")]
    ports = [m for j, p in enumerate(rule.protocols) for m in _protocol(p, f"{path}.protocols[{j}]")]
    return ClusterRule(_ACTIONS[rule.action], tuple(matchers), tuple(ports) or (AllPorts(),))


def _peer(peer: _PeerSpec, path: str) -> list[PeerMatcher]:
    exactly_one(peer, path)
    if peer.namespaces is not None:
        return [PodPeers(label_selector(peer.namespaces, f"{path}.namespaces"), LabelSelector())]
    if peer.pods is not None:
        pods = peer.pods
        return [
            PodPeers(
                label_selector(pods.namespace_selector, f"{path}.pods.namespaceSelector"),
                label_selector(pods.pod_selector, f"{path}.pods.podSelector"),
            )
        ]
    assert isinstance(peer, _EgressPeerSpec) and peer.networks is not None  # the one field left
    return [
        IPPeers(IPBlock(parse_cidr(cidr, f"{path}.networks[{i}]")), any_ip=True) for i, cidr in enumerate(peer.networks)
    ]


def _protocol(spec: _ProtocolSpec, path: str) -> list[PortMatcher]:
    key = exactly_one(spec, path)
    if spec.destination_named_port is not None:
        return [NamedPort(protocol, spec.destination_named_port) for protocol in Protocol]
    protocol = Protocol(key.upper())
    port = getattr(spec, key).destination_port
    if port is None:
        return [PortRange(protocol)]
    port_path = f"{path}.{key}.destinationPort"
    exactly_one(port, port_path)
    if port.number is not None:
        check_port_number(port.number, f"{port_path}.number")
        return [PortRange(protocol, port.number)]
    assert port.range is not None  # the one field left
    start, end = port.range.start, port.range.end
    check_port_number(start, f"{port_path}.range.start")
    check_port_number(end, f"{port_path}.range.end")
    if start >= end:
        raise FieldError(f"{port_path}.range", f"start {start} must be less than end {end}")
    return [PortRange(protocol, start, end)]


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
