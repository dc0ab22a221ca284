"""Policies compiled into targets, peer matchers and port matchers.

A `Target` is the set of policies that select the same pods (namespace + podSelector) for
one direction, with their rules in order. Each rule is a `RuleMatcher`: a tuple of peer
matchers (any may match) and a tuple of port matchers (their union is allowed). Both are
small closed sets of frozen variants; the rest of the package dispatches over them with
`match` and `assert_never`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from recommender.semantics.connections import ConnectionSet, Protocol
from recommender.semantics.endpoints import ExternalPeer, PodClass
from recommender.semantics.policies import Direction, IPBlock, NetworkPolicy, PolicyPeer, PolicyPort
from recommender.semantics.profiles import Entity
from recommender.semantics.selectors import NAME_LABEL, Labels, LabelSelector


class Action(StrEnum):
    """What a matching rule does: NetworkPolicy and Cilium allow rules ALLOW (ClusterNetworkPolicy
    calls it Accept); Cilium deny rules and ClusterNetworkPolicy Deny DENY; Pass hands the
    connection to the next tier."""

    ALLOW = "Allow"
    DENY = "Deny"
    PASS = "Pass"


class Tier(StrEnum):
    """Precedence groups, evaluated in this order (ClusterNetworkPolicy `tier`)."""

    ADMIN = "Admin"
    NETWORK_POLICY = "NetworkPolicy"
    BASELINE = "Baseline"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)


@dataclass(frozen=True, order=True, slots=True)
class RuleRef:
    """Which rule: the policy (`namespace/name`), the direction and the rule's index."""

    policy: str
    direction: Direction
    index: int
    deny: bool = False
    """A rule of Cilium's `ingressDeny`/`egressDeny`."""

    def __str__(self) -> str:
        return f"{self.policy} {self.direction.lower()}{'Deny' if self.deny else ''}[{self.index}]"


@dataclass(frozen=True, slots=True)
class AllPeers:
    """An absent or empty `from`/`to`: every pod and every IP."""

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        return True

    def __str__(self) -> str:
        return "all peers"


@dataclass(frozen=True, slots=True)
class PodPeers:
    """Pods matching `pods` in namespaces matching `namespaces`; never a non-pod.

    A podSelector alone is compiled with a namespace selector on the policy's own
    `kubernetes.io/metadata.name`, a namespaceSelector alone with the empty pod selector.
    """

    namespaces: LabelSelector
    pods: LabelSelector

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        match endpoint:
            case PodClass():
                return self.namespaces.matches(endpoint.namespace_labels) and self.pods.matches(endpoint.labels)
            case ExternalPeer():
                return False
            case _:
                assert_never(endpoint)

    def __str__(self) -> str:
        return f"pods [{self.pods}] in namespaces [{self.namespaces}]"


@dataclass(frozen=True, slots=True)
class IPPeers:
    """An ipBlock or Cilium CIDR. It matches pods only through `PodClass.ip_blocks`, and
    non-pods the profile lets CIDRs select (`ExternalPeer.cidr_selectable`; see `Evaluator`).

    `any_ip` (ClusterNetworkPolicy `networks`) matches every IP in the block, whatever the profile.
    """

    block: IPBlock
    any_ip: bool = False

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        match endpoint:
            case PodClass():
                return self.block in endpoint.ip_blocks
            case ExternalPeer():
                selectable = self.any_ip or endpoint.cidr_selectable
                return selectable and endpoint.ip is not None and self.block.contains(endpoint.ip)
            case _:
                assert_never(endpoint)

    def __str__(self) -> str:
        return f"{'network' if self.any_ip else 'ipBlock'} {self.block}"


CLUSTER_ENTITIES = frozenset({Entity.HOST, Entity.REMOTE_NODE, Entity.KUBE_APISERVER, Entity.INGRESS, Entity.HEALTH})


@dataclass(frozen=True, slots=True)
class EntityPeers:
    """Cilium `fromEntities`/`toEntities`. `cluster` is every pod and node-side entity, `all`
    everything; `init`, `unmanaged` and `none` match no endpoint we model."""

    entities: frozenset[str]

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        if "all" in self.entities:
            return True
        match endpoint:
            case PodClass():
                return "cluster" in self.entities
            case ExternalPeer():
                in_cluster = "cluster" in self.entities and endpoint.entity in CLUSTER_ENTITIES
                world = endpoint.entity is Entity.WORLD and bool({"world", "world-ipv4", "world-ipv6"} & self.entities)
                return in_cluster or world or endpoint.entity in self.entities
            case _:
                assert_never(endpoint)

    def __str__(self) -> str:
        return f"entities {','.join(sorted(self.entities))}"


@dataclass(frozen=True, slots=True)
class FQDNPeers:
    """Cilium `toFQDNs`: world endpoints with a DNS name matching a `matchName` or `matchPattern`.

    Cilium learns the IPs from its DNS proxy, so the evaluator lets this match only when the
    subject's egress sends its lookups through the proxy (a rule with `rules.dns`).
    """

    names: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()
    _regexes: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regexes", tuple(re.compile(_fqdn_regex(p)) for p in self.patterns))

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        match endpoint:
            case PodClass():
                return False
            case ExternalPeer():
                return endpoint.entity is Entity.WORLD and any(
                    name in self.names or any(regex.fullmatch(name) for regex in self._regexes)
                    for name in endpoint.dns_names
                )
            case _:
                assert_never(endpoint)

    def __str__(self) -> str:
        return "fqdns " + ",".join(sorted(self.names) + sorted(self.patterns))


def _fqdn_regex(pattern: str) -> str:
    """Cilium's matchPattern (case-insensitive, trailing dot implied): `*` is any run of DNS
    characters within a label, a lone `*` any name, a leading `**.` one or more labels."""
    pattern = pattern.lower().rstrip(".")
    if pattern == "*":
        return r".+"
    char = "[-a-z0-9_]"
    prefix = ""
    if pattern.startswith("**."):
        prefix, pattern = rf"(?:{char}+\.)+", pattern[3:]
    return prefix + "".join(f"{char}*" if c == "*" else re.escape(c) for c in pattern) + r"\."


PeerMatcher = AllPeers | PodPeers | IPPeers | EntityPeers | FQDNPeers


@dataclass(frozen=True, slots=True)
class AllPorts:
    """An absent or empty `ports`: every port of every protocol, ICMP included."""

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        return ConnectionSet.all()

    def __str__(self) -> str:
        return "all ports"


@dataclass(frozen=True, slots=True)
class PortRange:
    """Ports `first`-`last` of `protocol`; `first` None means every port of it."""

    protocol: Protocol
    first: int | None = None
    last: int | None = None

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        return ConnectionSet.ports(self.protocol, self.first, self.last)

    def __str__(self) -> str:
        if self.first is None:
            return f"{self.protocol}/*"
        suffix = "" if self.last in (None, self.first) else f"-{self.last}"
        return f"{self.protocol}/{self.first}{suffix}"


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A named port, resolved on the destination pod (the server): never on a non-pod."""

    protocol: Protocol
    name: str

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        match destination:
            case PodClass():
                number = destination.named_port(self.name, self.protocol)
                return ConnectionSet.none() if number is None else ConnectionSet.ports(self.protocol, number)
            case ExternalPeer():
                return ConnectionSet.none()
            case _:
                assert_never(destination)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.name}"


@dataclass(frozen=True, slots=True)
class OtherProtocols:
    """Cilium `icmps` (and ports of VRRP/IGMP): ICMP and the other protocols without ports.

    The connection algebra has one flag for all of them, so an ICMP type is widened to it.
    """

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        return ConnectionSet.other_protocols()

    def __str__(self) -> str:
        return "other protocols"


PortMatcher = AllPorts | PortRange | NamedPort | OtherProtocols


@dataclass(frozen=True, slots=True)
class RuleMatcher:
    ref: RuleRef
    peers: tuple[PeerMatcher, ...]
    ports: tuple[PortMatcher, ...]
    action: Action = Action.ALLOW
    dns_proxy: bool = False
    """A Cilium rule with `rules.dns`: the subject's lookups go through the DNS proxy."""

    def matches_peer(self, endpoint: PodClass | ExternalPeer) -> bool:
        return any(peer.matches(endpoint) for peer in self.peers)

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        """What the rule allows towards `destination` (the server), once its peer matched."""
        return ConnectionSet.union_all(port.allowed(destination) for port in self.ports)


@dataclass(frozen=True, slots=True)
class Target:
    """The policies selecting `subject` pods in `namespace` for `direction`, and their rules.

    A cluster-scoped policy has no `namespace`: it selects pods of the namespaces matching
    `namespaces`. Only a target that `isolates` puts its pods in default-deny (Cilium's
    `enableDefaultDeny: false` does not); `tier` and `priority` order ClusterNetworkPolicies.
    """

    namespace: str | None
    direction: Direction
    subject: LabelSelector
    policies: tuple[str, ...]
    rules: tuple[RuleMatcher, ...]
    namespaces: LabelSelector = field(default_factory=LabelSelector)
    tier: Tier = Tier.NETWORK_POLICY
    priority: int = 0
    isolates: bool = True

    def selects(self, pods: PodClass) -> bool:
        return (
            (self.namespace is None or pods.namespace == self.namespace)
            and self.namespaces.matches(pods.namespace_labels)
            and self.subject.matches(pods.labels)
        )

    def sort_key(self) -> tuple[str, str, str, str]:
        return self.namespace or "", self.direction, str(self.subject), ",".join(self.policies)


def compile_policies(policies: Iterable[NetworkPolicy]) -> tuple[Target, ...]:
    """One target per (namespace, direction, podSelector), sorted; provenance kept per rule."""
    groups: dict[tuple[str, Direction, LabelSelector], list[NetworkPolicy]] = defaultdict(list)
    for policy in sorted(policies, key=lambda p: p.id):
        for direction in policy.policy_types:
            groups[policy.namespace, direction, policy.pod_selector].append(policy)
    targets = [
        Target(
            namespace=namespace,
            direction=direction,
            subject=subject,
            policies=tuple(p.id for p in members),
            rules=tuple(
                RuleMatcher(
                    RuleRef(p.id, direction, index),
                    _compile_peers(rule.peers, p.namespace),
                    _compile_ports(rule.ports),
                )
                for p in members
                for index, rule in enumerate(p.rules(direction))
            ),
        )
        for (namespace, direction, subject), members in groups.items()
    ]
    return tuple(sorted(targets, key=Target.sort_key))


def _compile_peers(peers: tuple[PolicyPeer, ...], namespace: str) -> tuple[PeerMatcher, ...]:
    if not peers:
        return (AllPeers(),)
    own_namespace = LabelSelector(Labels({NAME_LABEL: namespace}))
    return tuple(
        IPPeers(peer.ip_block)
        if peer.ip_block is not None
        else PodPeers(
            namespaces=own_namespace if peer.namespace_selector is None else peer.namespace_selector,
            pods=LabelSelector() if peer.pod_selector is None else peer.pod_selector,
        )
        for peer in peers
    )


def _compile_ports(ports: tuple[PolicyPort, ...]) -> tuple[PortMatcher, ...]:
    if not ports:
        return (AllPorts(),)
    return tuple(
        NamedPort(port.protocol, port.port)
        if isinstance(port.port, str)
        else PortRange(port.protocol, port.port, port.end_port)
        for port in ports
    )
