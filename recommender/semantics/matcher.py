"""Policies compiled into targets, peer matchers and port matchers.

A `Target` is the set of policies that select the same pods (namespace + podSelector) for
one direction, with their rules in order. Each rule is a `RuleMatcher`: a tuple of peer
matchers (any may match) and a tuple of port matchers (their union is allowed). Both are
small closed sets of frozen variants; the rest of the package dispatches over them with
`match` and `assert_never`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never

from recommender.semantics.connections import ConnectionSet, Protocol
from recommender.semantics.endpoints import ExternalPeer, PodClass
from recommender.semantics.policies import Direction, IPBlock, NetworkPolicy, PolicyPeer, PolicyPort
from recommender.semantics.selectors import NAME_LABEL, Labels, LabelSelector


@dataclass(frozen=True, order=True, slots=True)
class RuleRef:
    """Which rule: the policy (`namespace/name`), the direction and the rule's index."""

    policy: str
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction.lower()}[{self.index}]"


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
    """An ipBlock. It matches pods only through `PodClass.ip_blocks` (see `Evaluator`)."""

    block: IPBlock

    def matches(self, endpoint: PodClass | ExternalPeer) -> bool:
        match endpoint:
            case PodClass():
                return self.block in endpoint.ip_blocks
            case ExternalPeer():
                return self.block.contains(endpoint.ip)
            case _:
                assert_never(endpoint)

    def __str__(self) -> str:
        return f"ipBlock {self.block}"


PeerMatcher = AllPeers | PodPeers | IPPeers


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


PortMatcher = AllPorts | PortRange | NamedPort


@dataclass(frozen=True, slots=True)
class RuleMatcher:
    ref: RuleRef
    peers: tuple[PeerMatcher, ...]
    ports: tuple[PortMatcher, ...]

    def matches_peer(self, endpoint: PodClass | ExternalPeer) -> bool:
        return any(peer.matches(endpoint) for peer in self.peers)

    def allowed(self, destination: PodClass | ExternalPeer) -> ConnectionSet:
        """What the rule allows towards `destination` (the server), once its peer matched."""
        return ConnectionSet.union_all(port.allowed(destination) for port in self.ports)


@dataclass(frozen=True, slots=True)
class Target:
    """The policies selecting `subject` pods in `namespace` for `direction`, and their rules."""

    namespace: str
    direction: Direction
    subject: LabelSelector
    policies: tuple[str, ...]
    rules: tuple[RuleMatcher, ...]

    def selects(self, pods: PodClass) -> bool:
        return pods.namespace == self.namespace and self.subject.matches(pods.labels)


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
    return tuple(sorted(targets, key=lambda t: (t.namespace, t.direction, str(t.subject))))


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
