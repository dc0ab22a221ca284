"""NetworkPolicy (networking.k8s.io/v1) manifests parsed and validated into frozen dataclasses.

Validation follows the API server's (`pkg/apis/networking/validation`), so a policy that
parses here would be accepted by a cluster, and one that a cluster rejects fails here with
`InvalidPolicyError` naming the policy and the field. Defaults are applied while parsing:
protocol TCP, policyTypes `[Ingress]` plus `Egress` when `egress` has rules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import msgspec

from collectors.decoding import FieldError, Strict, decode
from recommender.semantics.connections import MAX_PORT, MIN_PORT, Protocol
from recommender.semantics.manifest import Metadata, policy_error, raw_name
from recommender.semantics.selectors import LabelSelector, SelectorSpec, label_selector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


@dataclass(frozen=True, slots=True)
class IPBlock:
    """A CIDR minus `excepts` (each strictly inside it)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip in self.cidr and not any(ip in hole for hole in self.excepts)

    def __str__(self) -> str:
        if not self.excepts:
            return str(self.cidr)
        return f"{self.cidr} except {','.join(map(str, self.excepts))}"


@dataclass(frozen=True, slots=True)
class PolicyPeer:
    """One `from`/`to` entry: pod and/or namespace selector, or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """One `ports` entry. `port` None means every port of `protocol`; a str is a named port."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """An ingress or egress rule; an empty tuple means every peer, or every port and protocol."""

    peers: tuple[PolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[Direction]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: Direction) -> tuple[PolicyRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


class _PortSpec(Strict, frozen=True):
    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


class _IPBlockSpec(Strict, frozen=True):
    cidr: str
    except_: tuple[str, ...] = ()


class _PeerSpec(Strict, frozen=True):
    pod_selector: SelectorSpec | None = None
    namespace_selector: SelectorSpec | None = None
    ip_block: _IPBlockSpec | None = None


class _IngressSpec(Strict, frozen=True):
    from_: tuple[_PeerSpec, ...] = ()
    ports: tuple[_PortSpec, ...] = ()


class _EgressSpec(Strict, frozen=True):
    to: tuple[_PeerSpec, ...] = ()
    ports: tuple[_PortSpec, ...] = ()


class _Spec(Strict, frozen=True):
    pod_selector: SelectorSpec = msgspec.field(default_factory=SelectorSpec)
    policy_types: tuple[Direction, ...] = ()
    ingress: tuple[_IngressSpec, ...] = ()
    egress: tuple[_EgressSpec, ...] = ()


class _Manifest(Strict, frozen=True):
    metadata: Metadata
    api_version: Literal["networking.k8s.io/v1"] = "networking.k8s.io/v1"
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: _Spec = msgspec.field(default_factory=_Spec)
    status: object = None


def parse_policies(
    manifests: Iterable[Mapping[str, Any]], *, default_namespace: str = "default"
) -> tuple[NetworkPolicy, ...]:
    return tuple(parse_policy(m, default_namespace=default_namespace) for m in manifests)


def parse_policy(manifest: Mapping[str, Any], *, default_namespace: str = "default") -> NetworkPolicy:
    """Validate one NetworkPolicy manifest; `status` is ignored.

    Raises `InvalidPolicyError` naming the policy (`namespace/name`) and the field.
    """
    namespace = raw_name(manifest, "namespace") or default_namespace
    try:
        document = decode(manifest, _Manifest)
        spec = document.spec
        ingress = tuple(_rule(r.from_, r.ports, f"spec.ingress[{i}]", "from") for i, r in enumerate(spec.ingress))
        egress = tuple(_rule(r.to, r.ports, f"spec.egress[{i}]", "to") for i, r in enumerate(spec.egress))
        return NetworkPolicy(
            namespace=namespace,
            name=document.metadata.name,
            pod_selector=label_selector(spec.pod_selector, "spec.podSelector"),
            policy_types=_policy_types(spec.policy_types, has_egress_rules=bool(egress)),
            ingress=ingress,
            egress=egress,
        )
    except FieldError as error:
        raise policy_error(error, "NetworkPolicy", f"{namespace}/{raw_name(manifest) or '?'}") from None


def _policy_types(types: tuple[Direction, ...], *, has_egress_rules: bool) -> frozenset[Direction]:
    if not types:
        return frozenset({Direction.INGRESS, Direction.EGRESS} if has_egress_rules else {Direction.INGRESS})
    if len(types) > 2:
        raise FieldError("spec.policyTypes", "may not specify more than two policyTypes")
    return frozenset(types)


def _rule(peers: tuple[_PeerSpec, ...], ports: tuple[_PortSpec, ...], path: str, peers_key: str) -> PolicyRule:
    return PolicyRule(
        peers=tuple(_peer(peer, f"{path}.{peers_key}[{j}]") for j, peer in enumerate(peers)),
        ports=tuple(_port(port, f"{path}.ports[{j}]") for j, port in enumerate(ports)),
    )


def _peer(peer: _PeerSpec, field_path: str) -> PolicyPeer:
    if peer.ip_block is not None:
        if peer.pod_selector is not None or peer.namespace_selector is not None:
            raise FieldError(field_path, "may not specify both ipBlock and another peer")
        return PolicyPeer(ip_block=ip_block(peer.ip_block.cidr, peer.ip_block.except_, f"{field_path}.ipBlock"))
    if peer.pod_selector is None and peer.namespace_selector is None:
        raise FieldError(field_path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
    pods, namespaces = peer.pod_selector, peer.namespace_selector
    return PolicyPeer(
        pod_selector=None if pods is None else label_selector(pods, f"{field_path}.podSelector"),
        namespace_selector=None
        if namespaces is None
        else label_selector(namespaces, f"{field_path}.namespaceSelector"),
    )


def parse_cidr(cidr: str, field_path: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise FieldError(field_path, f"invalid CIDR {cidr!r}") from None


def _strict_subnet(hole: IPNetwork, cidr: IPNetwork) -> bool:
    """Whether `hole` lies inside `cidr` (of the same address family) and is smaller."""
    if isinstance(hole, ipaddress.IPv4Network):
        inside = isinstance(cidr, ipaddress.IPv4Network) and hole.subnet_of(cidr)
    else:
        inside = isinstance(cidr, ipaddress.IPv6Network) and hole.subnet_of(cidr)
    return inside and hole.prefixlen > cidr.prefixlen


def ip_block(cidr_text: str, excepts: tuple[str, ...], field_path: str) -> IPBlock:
    """Host bits are accepted (`10.0.0.1/24` means `10.0.0.0/24`), as the API server does."""
    cidr = parse_cidr(cidr_text, f"{field_path}.cidr")
    holes = []
    for i, item in enumerate(excepts):
        hole = parse_cidr(item, f"{field_path}.except[{i}]")
        if not _strict_subnet(hole, cidr):
            raise FieldError(f"{field_path}.except[{i}]", f"{item} must be a strict subset of cidr {cidr}")
        holes.append(hole)
    return IPBlock(cidr, tuple(holes))


def _port(spec: _PortSpec, field_path: str) -> PolicyPort:
    port, end_port = spec.port, spec.end_port
    if isinstance(port, str):
        check_port_name(port, f"{field_path}.port")
        if end_port is not None:
            raise FieldError(f"{field_path}.endPort", "may not be specified when port is a named port")
    elif port is not None:
        check_port_number(port, f"{field_path}.port")
        if end_port is not None:
            check_port_number(end_port, f"{field_path}.endPort")
            if end_port < port:
                raise FieldError(f"{field_path}.endPort", f"{end_port} must be >= port {port}")
    elif end_port is not None:
        raise FieldError(f"{field_path}.endPort", "may not be specified when port is not specified")
    return PolicyPort(spec.protocol, port, end_port)


def check_port_number(value: int, field_path: str) -> None:
    if not MIN_PORT <= value <= MAX_PORT:
        raise FieldError(field_path, f"{value!r} is not a port number ({MIN_PORT}-{MAX_PORT})")


def check_port_name(name: str, field_path: str) -> None:
    """An IANA service name: 1-15 of [a-z0-9-], a letter among them, no `--`, no edge `-`."""
    if len(name) > 15 or not _PORT_NAME.match(name) or "--" in name or not re.search("[a-z]", name):
        hint = " (a number must not be quoted)" if name.isdigit() else ""
        raise FieldError(field_path, f"{name!r} is not a valid port name{hint}")
