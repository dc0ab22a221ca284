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
from typing import Any

from recommender.semantics.connections import MAX_PORT, MIN_PORT, Protocol
from recommender.semantics.errors import FieldError, InvalidPolicyError
from recommender.semantics.manifest import fields_of, list_of, string_of
from recommender.semantics.selectors import LabelSelector, parse_label_selector

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


def parse_policies(
    manifests: Iterable[Mapping[str, Any]], *, default_namespace: str = "default"
) -> tuple[NetworkPolicy, ...]:
    return tuple(parse_policy(m, default_namespace=default_namespace) for m in manifests)


def parse_policy(manifest: Mapping[str, Any], *, default_namespace: str = "default") -> NetworkPolicy:
    """Validate one NetworkPolicy manifest; `status` is ignored.

    Raises `InvalidPolicyError` naming the policy (`namespace/name`) and the field.
    """
    metadata = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = metadata.get("namespace") or default_namespace
    name = metadata.get("name")
    try:
        top = fields_of(manifest, "", ("apiVersion", "kind", "metadata", "spec", "status"))
        if top.get("kind", "NetworkPolicy") != "NetworkPolicy":
            raise FieldError("kind", f"expected NetworkPolicy, got {top['kind']!r}")
        api_version = top.get("apiVersion", "networking.k8s.io/v1")
        if api_version != "networking.k8s.io/v1":
            raise FieldError("apiVersion", f"expected networking.k8s.io/v1, got {api_version!r}")
        name = string_of(name, "metadata.name")
        return _parse_spec(top.get("spec", {}), namespace, name)
    except FieldError as error:
        field = error.field.lstrip(".") or "(manifest)"
        raise InvalidPolicyError(f"{namespace}/{name or '?'}", field, error.reason) from None


def _parse_spec(raw: object, namespace: str, name: str) -> NetworkPolicy:
    spec = fields_of(raw, "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    ingress = _parse_rules(spec.get("ingress", []), "spec.ingress", "from")
    egress = _parse_rules(spec.get("egress", []), "spec.egress", "to")
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=parse_label_selector(spec.get("podSelector", {}), "spec.podSelector"),
        policy_types=_parse_policy_types(spec.get("policyTypes", []), has_egress_rules=bool(egress)),
        ingress=ingress,
        egress=egress,
    )


def _parse_policy_types(raw: object, *, has_egress_rules: bool) -> frozenset[Direction]:
    names = list_of(raw, "spec.policyTypes")
    if not names:
        return frozenset({Direction.INGRESS, Direction.EGRESS} if has_egress_rules else {Direction.INGRESS})
    if len(names) > 2:
        raise FieldError("spec.policyTypes", "may not specify more than two policyTypes")
    types = set()
    for i, value in enumerate(names):
        try:
            types.add(Direction(value))
        except ValueError:
            raise FieldError(
                f"spec.policyTypes[{i}]", f"unsupported value {value!r} (expected Ingress, Egress)"
            ) from None
    return frozenset(types)


def _parse_rules(raw: object, field_path: str, peers_key: str) -> tuple[PolicyRule, ...]:
    rules = []
    for i, item in enumerate(list_of(raw, field_path)):
        rule_path = f"{field_path}[{i}]"
        rule = fields_of(item, rule_path, (peers_key, "ports"))
        peers = list_of(rule.get(peers_key, []), f"{rule_path}.{peers_key}")
        ports = list_of(rule.get("ports", []), f"{rule_path}.ports")
        rules.append(
            PolicyRule(
                peers=tuple(_parse_peer(p, f"{rule_path}.{peers_key}[{j}]") for j, p in enumerate(peers)),
                ports=tuple(_parse_port(p, f"{rule_path}.ports[{j}]") for j, p in enumerate(ports)),
            )
        )
    return tuple(rules)


def _parse_peer(raw: object, field_path: str) -> PolicyPeer:
    peer = fields_of(raw, field_path, ("podSelector", "namespaceSelector", "ipBlock"))
    if not peer:
        raise FieldError(field_path, "must specify a peer (podSelector, namespaceSelector or ipBlock)")
    if "ipBlock" in peer and len(peer) > 1:
        raise FieldError(field_path, "may not specify both ipBlock and another peer")
    if "ipBlock" in peer:
        return PolicyPeer(ip_block=parse_ip_block(peer["ipBlock"], f"{field_path}.ipBlock"))
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    return PolicyPeer(
        pod_selector=None if pods is None else parse_label_selector(pods, f"{field_path}.podSelector"),
        namespace_selector=None
        if namespaces is None
        else parse_label_selector(namespaces, f"{field_path}.namespaceSelector"),
    )


def _strict_subnet(hole: IPNetwork, cidr: IPNetwork) -> bool:
    """Whether `hole` lies inside `cidr` (of the same address family) and is smaller."""
    if isinstance(hole, ipaddress.IPv4Network):
        inside = isinstance(cidr, ipaddress.IPv4Network) and hole.subnet_of(cidr)
    else:
        inside = isinstance(cidr, ipaddress.IPv6Network) and hole.subnet_of(cidr)
    return inside and hole.prefixlen > cidr.prefixlen


def parse_cidr(raw: object, field_path: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(string_of(raw, field_path), strict=False)
    except ValueError:
        raise FieldError(field_path, f"invalid CIDR {raw!r}") from None


def parse_ip_block(raw: object, field_path: str) -> IPBlock:
    """Host bits are accepted (`10.0.0.1/24` means `10.0.0.0/24`), as the API server does."""
    block = fields_of(raw, field_path, ("cidr", "except"))
    if "cidr" not in block:
        raise FieldError(f"{field_path}.cidr", "is required")
    cidr = parse_cidr(block["cidr"], f"{field_path}.cidr")
    excepts = []
    for i, item in enumerate(list_of(block.get("except", []), f"{field_path}.except")):
        hole = parse_cidr(item, f"{field_path}.except[{i}]")
        if not _strict_subnet(hole, cidr):
            raise FieldError(f"{field_path}.except[{i}]", f"{item} must be a strict subset of cidr {cidr}")
        excepts.append(hole)
    return IPBlock(cidr, tuple(excepts))


def _parse_port(raw: object, field_path: str) -> PolicyPort:
    spec = fields_of(raw, field_path, ("protocol", "port", "endPort"))
    protocol_name = spec.get("protocol", "TCP")
    if not isinstance(protocol_name, str) or protocol_name not in Protocol.__members__:
        raise FieldError(
            f"{field_path}.protocol",
            f"unsupported protocol {protocol_name!r} (expected TCP, UDP, SCTP)",
        )
    port, end_port = spec.get("port"), spec.get("endPort")
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
    return PolicyPort(Protocol(protocol_name), port, end_port)


def check_port_number(value: object, field_path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_PORT <= value <= MAX_PORT:
        raise FieldError(field_path, f"{value!r} is not a port number ({MIN_PORT}-{MAX_PORT})")


def check_port_name(name: str, field_path: str) -> None:
    """An IANA service name: 1-15 of [a-z0-9-], a letter among them, no `--`, no edge `-`."""
    if len(name) > 15 or not _PORT_NAME.match(name) or "--" in name or not re.search("[a-z]", name):
        hint = " (a number must not be quoted)" if name.isdigit() else ""
        raise FieldError(field_path, f"{name!r} is not a valid port name{hint}")
