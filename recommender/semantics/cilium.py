"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2) parsed into matchers.

The subset a real cluster commonly holds: `endpointSelector`, `ingress`/`egress` and
`ingressDeny`/`egressDeny` with `fromEndpoints`/`toEndpoints`, `fromEntities`/`toEntities`,
`fromCIDR`/`toCIDR`/`fromCIDRSet`/`toCIDRSet`, `toFQDNs`, `toPorts` (`ANY`, `endPort`, named
ports; L7 `rules` accepted, they do not change what L3/L4 allows, but `rules.dns` marks the
DNS proxy that `toFQDNs` needs), `icmps`, `enableDefaultDeny` and `specs` lists. Fields that
would change the meaning and that we cannot model (`toServices`, `fromRequires`, CIDR groups,
service-account selectors...) are refused with `InvalidPolicyError` naming the field; a spec
with `nodeSelector` (a host policy) selects nodes, never pods, and compiles to nothing.

Selectors follow Cilium's `getEndpointSelector`: the `k8s:`/`any:` prefix is dropped,
`io.kubernetes.pod.namespace` selects namespaces by name, `io.cilium.k8s.namespace.labels.K`
by label K; a peer selector that names no namespace is limited to the policy's own
namespace (CNP) or to pods of any namespace (CCNP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from collectors.decoding import FieldError, Strict, decode, exactly_one, given_fields
from recommender.semantics.connections import MAX_PORT, Protocol
from recommender.semantics.manifest import Metadata, policy_error, raw_name
from recommender.semantics.matcher import (
    Action,
    AllPeers,
    AllPorts,
    EntityPeers,
    FQDNPeers,
    IPPeers,
    NamedPort,
    OtherProtocols,
    PeerMatcher,
    PodPeers,
    PortMatcher,
    PortRange,
    RuleMatcher,
    RuleRef,
    Target,
)
from recommender.semantics.policies import Direction, IPBlock, check_port_name, ip_block, parse_cidr
from recommender.semantics.selectors import (
    NAME_LABEL,
    Labels,
    LabelSelector,
    Operator,
    Requirement,
    SelectorSpec,
    label_selector,
)

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KINDS = (CNP, CCNP)
API_VERSION: Final = "cilium.io/v2"

ENTITIES = frozenset(
    {"all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged", "remote-node",
     "health", "none", "kube-apiserver"}
)  # fmt: skip
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
_SOURCES = ("k8s:", "any:")

_UNSUPPORTED = (
    "fromRequires", "toRequires", "fromGroups", "toGroups", "fromNodes", "toNodes", "toServices"
)  # fmt: skip
_NOT_IN_DENY = ("authentication", "toFQDNs", "rules", "listener", "originatingTLS", "terminatingTLS", "serverNames")


@dataclass(frozen=True, slots=True)
class CiliumRule:
    peers: tuple[PeerMatcher, ...]
    ports: tuple[PortMatcher, ...]
    dns_proxy: bool = False


@dataclass(frozen=True, slots=True)
class CiliumSpec:
    """One entry of `spec`/`specs`. `subject` is None for a host policy (`nodeSelector`)."""

    subject: PodPeers | None
    allow: Mapping[Direction, tuple[CiliumRule, ...]]
    deny: Mapping[Direction, tuple[CiliumRule, ...]]
    default_deny: frozenset[Direction]


@dataclass(frozen=True, slots=True)
class CiliumPolicy:
    kind: str
    namespace: str | None
    name: str
    specs: tuple[CiliumSpec, ...]

    @property
    def id(self) -> str:
        return f"{self.kind} {self.name if self.namespace is None else f'{self.namespace}/{self.name}'}"


class _PortSpec(Strict, frozen=True):
    port: str | int = "0"
    end_port: Annotated[int, Meta(ge=0, le=MAX_PORT)] = 0
    protocol: Literal["TCP", "UDP", "SCTP", "ANY", "VRRP", "IGMP"] = "ANY"


class _L7Spec(Strict, frozen=True):
    """L7 rules: accepted, they do not change what L3/L4 allows; `dns` marks the DNS proxy."""

    dns: object = None
    http: object = None
    kafka: object = None
    l7proto: object = None
    l7: object = None


class _PortRuleSpec(Strict, frozen=True):
    ports: tuple[_PortSpec, ...] = ()
    rules: _L7Spec | None = None
    listener: object = None
    originating_tls: object = msgspec.field(default=None, name="originatingTLS")
    terminating_tls: object = msgspec.field(default=None, name="terminatingTLS")
    server_names: object = None


class _CIDRRuleSpec(Strict, frozen=True):
    cidr: str | None = None
    except_: tuple[str, ...] = ()
    cidr_group_ref: object = None
    cidr_group_selector: object = None


class _FQDNSpec(Strict, frozen=True):
    match_name: Annotated[str, Meta(min_length=1)] | None = None
    match_pattern: Annotated[str, Meta(min_length=1)] | None = None


class _IcmpSpec(Strict, frozen=True):
    fields: object = None


class _RuleSpec(Strict, frozen=True):
    """What ingress and egress rules share: L4, and the peers this tool refuses (`_UNSUPPORTED`)."""

    icmps: tuple[_IcmpSpec, ...] = ()
    to_ports: tuple[_PortRuleSpec, ...] | None = None
    authentication: object = None
    from_requires: object = None
    to_requires: object = None
    from_groups: object = None
    to_groups: object = None
    from_nodes: object = None
    to_nodes: object = None
    to_services: object = None


class _IngressSpec(_RuleSpec, frozen=True):
    endpoints: tuple[SelectorSpec, ...] = msgspec.field(default=(), name="fromEndpoints")
    entities: tuple[str, ...] = msgspec.field(default=(), name="fromEntities")
    cidrs: tuple[str, ...] = msgspec.field(default=(), name="fromCIDR")
    cidr_sets: tuple[_CIDRRuleSpec, ...] = msgspec.field(default=(), name="fromCIDRSet")


class _EgressSpec(_RuleSpec, frozen=True):
    endpoints: tuple[SelectorSpec, ...] = msgspec.field(default=(), name="toEndpoints")
    entities: tuple[str, ...] = msgspec.field(default=(), name="toEntities")
    cidrs: tuple[str, ...] = msgspec.field(default=(), name="toCIDR")
    cidr_sets: tuple[_CIDRRuleSpec, ...] = msgspec.field(default=(), name="toCIDRSet")
    fqdns: tuple[_FQDNSpec, ...] | None = msgspec.field(default=None, name="toFQDNs")


class _DefaultDenySpec(Strict, frozen=True):
    ingress: bool | None = None
    egress: bool | None = None


class _PolicySpec(Strict, frozen=True):
    description: object = None
    labels: object = None
    log: object = None
    endpoint_selector: SelectorSpec | None = None
    node_selector: SelectorSpec | None = None
    enable_default_deny: _DefaultDenySpec = msgspec.field(default_factory=_DefaultDenySpec)
    ingress: tuple[_IngressSpec, ...] = ()
    egress: tuple[_EgressSpec, ...] = ()
    ingress_deny: tuple[_IngressSpec, ...] = ()
    egress_deny: tuple[_EgressSpec, ...] = ()


class _Manifest(Strict, frozen=True):
    metadata: Metadata
    kind: Literal["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]
    api_version: Literal["cilium.io/v2"] = API_VERSION
    spec: _PolicySpec | None = None
    specs: tuple[_PolicySpec, ...] = ()
    status: object = None


def parse_cilium_policy(manifest: Mapping[str, Any], *, default_namespace: str = "default") -> CiliumPolicy:
    """Validate one CNP or CCNP manifest; raises `InvalidPolicyError` naming the policy and field."""
    kind = manifest.get("kind") if isinstance(manifest, Mapping) else None
    namespace = (raw_name(manifest, "namespace") or default_namespace) if kind == CNP else None
    name = raw_name(manifest) or "?"
    try:
        document = decode(manifest, _Manifest)
        raw_specs = [("spec", document.spec)] if document.spec is not None else []
        raw_specs += [(f"specs[{i}]", spec) for i, spec in enumerate(document.specs)]
        if not raw_specs:
            raise FieldError("spec", "a policy needs spec or specs")
        specs = tuple(_parse_spec(spec, path, namespace) for path, spec in raw_specs)
        return CiliumPolicy(document.kind, namespace, document.metadata.name, specs)
    except FieldError as error:
        label = f"{namespace}/{name}" if namespace else name
        raise policy_error(error, kind if kind in KINDS else CNP, label) from None


def _parse_spec(spec: _PolicySpec, path: str, namespace: str | None) -> CiliumSpec:
    if (spec.endpoint_selector is None) == (spec.node_selector is None):
        raise FieldError(path, "needs exactly one of endpointSelector and nodeSelector")
    subject = None
    if spec.endpoint_selector is not None:
        subject = _subject(spec.endpoint_selector, f"{path}.endpointSelector", namespace)
    elif spec.node_selector is not None:
        label_selector(spec.node_selector, f"{path}.nodeSelector")
    allow = {
        Direction.INGRESS: _parse_rules(spec.ingress, f"{path}.ingress", namespace, deny=False),
        Direction.EGRESS: _parse_rules(spec.egress, f"{path}.egress", namespace, deny=False),
    }
    deny = {
        Direction.INGRESS: _parse_rules(spec.ingress_deny, f"{path}.ingressDeny", namespace, deny=True),
        Direction.EGRESS: _parse_rules(spec.egress_deny, f"{path}.egressDeny", namespace, deny=True),
    }
    switches = {Direction.INGRESS: spec.enable_default_deny.ingress, Direction.EGRESS: spec.enable_default_deny.egress}
    default_deny = frozenset(
        direction
        for direction, enabled in switches.items()
        if (bool(allow[direction] or deny[direction]) if enabled is None else enabled)
    )
    return CiliumSpec(subject, allow, deny, default_deny)


def _parse_rules(
    rules: Sequence[_IngressSpec | _EgressSpec], path: str, namespace: str | None, *, deny: bool
) -> tuple[CiliumRule, ...]:
    parsed = []
    for i, rule in enumerate(rules):
        rule_path = f"{path}[{i}]"
        _refuse(rule, rule_path, _UNSUPPORTED, "is not supported by this tool's evaluator")
        _refuse(rule, rule_path, _NOT_IN_DENY if deny else (), "is not allowed in a deny rule")
        peers = _parse_peers(rule, rule_path, namespace)
        ports, dns_proxy = _parse_to_ports(rule.to_ports or (), f"{rule_path}.toPorts", deny=deny)
        ports += (OtherProtocols(),) if rule.icmps else ()
        if not peers and (rule.to_ports is not None or rule.icmps):
            peers = (AllPeers(),)  # an L4-only rule applies to every peer
        parsed.append(CiliumRule(peers, ports or (AllPorts(),), dns_proxy))
    return tuple(parsed)


def _parse_peers(rule: _IngressSpec | _EgressSpec, path: str, namespace: str | None) -> tuple[PeerMatcher, ...]:
    side = "from" if isinstance(rule, _IngressSpec) else "to"
    peers: list[PeerMatcher] = [
        _endpoint_peer(selector, f"{path}.{side}Endpoints[{i}]", namespace) for i, selector in enumerate(rule.endpoints)
    ]
    unknown = sorted(set(rule.entities) - ENTITIES)
    if unknown:
        raise FieldError(
            f"{path}.{side}Entities", f"unknown entity {unknown[0]!r} (expected {', '.join(sorted(ENTITIES))})"
        )
    peers += [EntityPeers(frozenset(rule.entities))] if rule.entities else []
    peers += [IPPeers(IPBlock(parse_cidr(cidr, f"{path}.{side}CIDR[{i}]"))) for i, cidr in enumerate(rule.cidrs)]
    peers += [IPPeers(_cidr_rule(cidrs, f"{path}.{side}CIDRSet[{i}]")) for i, cidrs in enumerate(rule.cidr_sets)]
    if isinstance(rule, _EgressSpec) and rule.fqdns:
        for i, fqdn in enumerate(rule.fqdns):
            exactly_one(fqdn, f"{path}.toFQDNs[{i}]")
        names = frozenset(f.match_name.lower().rstrip(".") + "." for f in rule.fqdns if f.match_name is not None)
        patterns = tuple(sorted({f.match_pattern for f in rule.fqdns if f.match_pattern is not None}))
        peers.append(FQDNPeers(names, patterns))
    return tuple(peers)


def _cidr_rule(rule: _CIDRRuleSpec, path: str) -> IPBlock:
    groups = ("cidrGroupRef", "cidrGroupSelector")
    _refuse(rule, path, groups, "CiliumCIDRGroup references are not supported by this tool's evaluator")
    if rule.cidr is None:
        raise FieldError(f"{path}.cidr", "is required")
    return ip_block(rule.cidr, rule.except_, path)


def _refuse(spec: msgspec.Struct, path: str, names: tuple[str, ...], reason: str) -> None:
    """Raise `FieldError` for the first field of `spec` that is given and among `names`."""
    for name in given_fields(spec):
        if name in names:
            raise FieldError(f"{path}.{name}", reason)


def _parse_to_ports(
    port_rules: tuple[_PortRuleSpec, ...], path: str, *, deny: bool
) -> tuple[tuple[PortMatcher, ...], bool]:
    """The port matchers of `toPorts`, and whether a rule sends DNS through the proxy."""
    matchers: list[PortMatcher] = []
    dns_proxy = False
    for i, port_rule in enumerate(port_rules):
        rule_path = f"{path}[{i}]"
        _refuse(port_rule, rule_path, _NOT_IN_DENY if deny else (), "is not allowed in a deny rule")
        dns_proxy = dns_proxy or bool(port_rule.rules and port_rule.rules.dns)
        if not port_rule.ports:
            matchers += [PortRange(protocol) for protocol in Protocol]
        for j, port in enumerate(port_rule.ports):
            matchers += _parse_port(port, f"{rule_path}.ports[{j}]")
    return tuple(matchers), dns_proxy


def _parse_port(spec: _PortSpec, path: str) -> list[PortMatcher]:
    if spec.protocol in ("VRRP", "IGMP"):
        return [OtherProtocols()]
    protocols = tuple(Protocol) if spec.protocol == "ANY" else (Protocol(spec.protocol),)
    port, end = str(spec.port), spec.end_port
    if not port.isdigit():  # a name, matched case-insensitively as Cilium does (it lowercases names)
        check_port_name(port.lower(), f"{path}.port")
        return [NamedPort(protocol, port.lower()) for protocol in protocols]
    number = int(port)
    if number > MAX_PORT:
        raise FieldError(f"{path}.port", f"{number} is not a port number (0-{MAX_PORT})")
    if number == 0:
        return [PortRange(protocol) for protocol in protocols]
    return [PortRange(protocol, number, max(end, number)) for protocol in protocols]


def _subject(spec: SelectorSpec, path: str, namespace: str | None) -> PodPeers:
    namespaces, pods, _ = _split_selector(spec, path)
    if namespace is not None:
        namespaces = _and(namespaces, LabelSelector(Labels({NAME_LABEL: namespace})))
    return PodPeers(namespaces, pods)


def _endpoint_peer(spec: SelectorSpec, path: str, namespace: str | None) -> PeerMatcher:
    namespaces, pods, entities = _split_selector(spec, path)
    if entities:
        return EntityPeers(entities)
    names_namespace = bool(namespaces.match_labels or namespaces.expressions)
    if namespace is not None and not names_namespace:
        namespaces = LabelSelector(Labels({NAME_LABEL: namespace}))
    return PodPeers(namespaces, pods)


def _split_selector(spec: SelectorSpec, path: str) -> tuple[LabelSelector, LabelSelector, frozenset[str]]:
    """A Cilium endpoint selector as (namespace selector, pod selector, reserved entities)."""
    selector = label_selector(spec, path)
    namespace_labels: dict[str, str] = {}
    pod_labels: dict[str, str] = {}
    entities: set[str] = set()
    namespace_rules: list[Requirement] = []
    pod_rules: list[Requirement] = []
    for key, value in selector.match_labels.items():
        kind, name = _key(key, f"{path}.matchLabels.{key}")
        if kind == "reserved":
            entities.add(name)
        else:
            (namespace_labels if kind == "namespace" else pod_labels)[name] = value
    for i, requirement in enumerate(selector.expressions):
        kind, name = _key(requirement.key, f"{path}.matchExpressions[{i}].key")
        if kind == "reserved":
            raise FieldError(f"{path}.matchExpressions[{i}].key", "reserved labels are only supported in matchLabels")
        rule = Requirement(name, requirement.operator, requirement.values)
        (namespace_rules if kind == "namespace" else pod_rules).append(rule)
    if entities and (pod_labels or namespace_labels or pod_rules or namespace_rules):
        raise FieldError(path, "a selector of reserved labels may not select other labels")
    unknown = sorted(entities - ENTITIES)
    if unknown:
        raise FieldError(path, f"unknown reserved identity {unknown[0]!r}")
    return (
        LabelSelector(Labels(namespace_labels), tuple(namespace_rules)),
        LabelSelector(Labels(pod_labels), tuple(pod_rules)),
        frozenset(entities),
    )


def _key(key: str, path: str) -> tuple[str, str]:
    """("namespace" | "pod" | "reserved", the label key it means)."""
    if key.startswith("reserved:"):
        return "reserved", key.removeprefix("reserved:")
    for source in _SOURCES:
        key = key.removeprefix(source)
    if ":" in key.split("/")[0]:
        raise FieldError(path, f"label source {key.split(':')[0]!r} is not supported (expected k8s, any or reserved)")
    if key == NAMESPACE_KEY:
        return "namespace", NAME_LABEL
    if key.startswith(NAMESPACE_LABELS_PREFIX):
        return "namespace", key.removeprefix(NAMESPACE_LABELS_PREFIX)
    if key.startswith("io.cilium.k8s."):
        raise FieldError(path, f"the label {key!r} is not supported by this tool's evaluator")
    return "pod", key


def _and(first: LabelSelector, second: LabelSelector) -> LabelSelector:
    """Both selectors at once (`second` as requirements, so contradictions match nothing)."""
    extra = tuple(Requirement(k, Operator.IN, frozenset({v})) for k, v in second.match_labels.items())
    return LabelSelector(first.match_labels, first.expressions + extra + second.expressions)


def compile_cilium(policy: CiliumPolicy) -> list[Target]:
    """One target per (spec, direction) that has rules or enables default-deny."""
    targets = []
    for spec_index, spec in enumerate(policy.specs):
        if spec.subject is None:
            continue  # a host policy: it selects nodes, not pods
        label = policy.id if len(policy.specs) == 1 else f"{policy.id} specs[{spec_index}]"
        for direction in Direction:
            rules = tuple(
                RuleMatcher(RuleRef(label, direction, i, deny), rule.peers, rule.ports, action, rule.dns_proxy)
                for deny, action, section in (
                    (False, Action.ALLOW, spec.allow[direction]),
                    (True, Action.DENY, spec.deny[direction]),
                )
                for i, rule in enumerate(section)
            )
            if rules or direction in spec.default_deny:
                targets.append(
                    Target(
                        namespace=policy.namespace,
                        direction=direction,
                        subject=spec.subject.pods,
                        policies=(label,),
                        rules=rules,
                        namespaces=spec.subject.namespaces,
                        isolates=direction in spec.default_deny,
                    )
                )
    return targets
