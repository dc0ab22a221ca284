"""The endpoints of a connection: pods, namespaces, non-pod peers and pod equivalence classes."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from recommender.semantics.connections import MAX_PORT, MIN_PORT, Protocol
from recommender.semantics.policies import IPBlock
from recommender.semantics.profiles import Entity
from recommender.semantics.selectors import NAME_LABEL, Labels

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ContainerPort:
    """A container port; `name` is what a policy's named port refers to."""

    port: int
    name: str | None = None
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        if not MIN_PORT <= self.port <= MAX_PORT:
            raise ValueError(f"container port {self.port} is outside {MIN_PORT}-{MAX_PORT}")
        object.__setattr__(self, "protocol", Protocol(self.protocol))


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod as the inventory sees it. A hostNetwork pod uses its node's IP as `ip`."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=Labels)
    ports: tuple[ContainerPort, ...] = ()
    ip: str | None = None
    host_network: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", Labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace; it always carries `kubernetes.io/metadata.name: <name>`, as upstream."""

    name: str
    labels: Mapping[str, str] = field(default_factory=Labels)

    def __post_init__(self) -> None:
        if self.labels.get(NAME_LABEL, self.name) != self.name:
            raise ValueError(f"namespace {self.name}: label {NAME_LABEL} must equal its name")
        object.__setattr__(self, "labels", Labels({**self.labels, NAME_LABEL: self.name}))


@dataclass(frozen=True, slots=True)
class ExternalPeer:
    """An endpoint that is not a pod: a node, the kube-apiserver, Cilium Ingress, a world IP.

    No pod or namespace selector ever matches it; ipBlocks match it by `ip` where the
    evaluator's profile lets them (it sets `cidr_selectable`), Cilium entities by `entity`,
    Cilium `toFQDNs` by `dns_names`. It is never isolated, so its own side of a connection
    allows everything. `Entity.HOST` is the node of the pod on the other side.
    """

    ip: IPAddress | None
    entity: Entity = Entity.WORLD
    dns_names: tuple[str, ...] = ()
    cidr_selectable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", None if self.ip is None else ipaddress.ip_address(self.ip))
        object.__setattr__(self, "entity", Entity(self.entity))
        object.__setattr__(self, "dns_names", tuple(sorted({_dns_name(name) for name in self.dns_names})))

    def __str__(self) -> str:
        return str(self.entity) if self.ip is None else str(self.ip)


def _dns_name(name: str) -> str:
    """A DNS name as Cilium compares it: lower case, with the trailing dot."""
    name = name.lower()
    return name if name.endswith(".") else f"{name}."


@dataclass(frozen=True, slots=True)
class PodClass:
    """Pods that no NetworkPolicy can tell apart, the unit the evaluator works on.

    Same namespace (and namespace labels), same labels and same *named* container ports:
    unnamed ports never influence a policy. `ip_blocks` lists the ipBlocks containing the
    pods' IPs, and stays empty unless the evaluator lets ipBlocks match pod IPs.
    """

    namespace: str
    namespace_labels: Mapping[str, str]
    labels: Mapping[str, str]
    named_ports: frozenset[ContainerPort] = frozenset()
    ip_blocks: frozenset[IPBlock] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespace_labels", Namespace(self.namespace, self.namespace_labels).labels)
        object.__setattr__(self, "labels", Labels(self.labels))

    def named_port(self, name: str, protocol: Protocol) -> int | None:
        """The number of the container port called `name` with `protocol`, if any."""
        for port in self.named_ports:
            if port.name == name and port.protocol is protocol:
                return port.port
        return None

    def sort_key(self) -> tuple[str, str, str, str]:
        ports = ",".join(sorted(f"{p.name}={p.protocol}/{p.port}" for p in self.named_ports))
        return self.namespace, str(self.labels), ports, ",".join(sorted(map(str, self.ip_blocks)))

    def __str__(self) -> str:
        return f"{self.namespace}[{self.labels}]"


Endpoint = Pod | PodClass | ExternalPeer
"""What a query names: a pod, a class of pods, or a non-pod IP."""
