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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recommender.semantics.connections import MAX_PORT, Protocol
from recommender.semantics.errors import FieldError, InvalidPolicyError
from recommender.semantics.manifest import fields_of, list_of, string_of
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
from recommender.semantics.policies import Direction, IPBlock, check_port_name, parse_cidr, parse_ip_block
from recommender.semantics.selectors import (
    NAME_LABEL,
    Labels,
    LabelSelector,
    Operator,
    Requirement,
    parse_label_selector,
)

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KINDS = (CNP, CCNP)
API_VERSION = "cilium.io/v2"

ENTITIES = frozenset(
    {"all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged", "remote-node",
     "health", "none", "kube-apiserver"}
)  # fmt: skip
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
_SOURCES = ("k8s:", "any:")

_PEERS = {
    Direction.INGRESS: ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet"),
    Direction.EGRESS: ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toFQDNs"),
}
_UNSUPPORTED = (
    "fromRequires", "toRequires", "fromGroups", "toGroups", "fromNodes", "toNodes", "toServices"
)  # fmt: skip
_PORT_RULE = ("ports", "rules", "listener", "originatingTLS", "terminatingTLS", "serverNames")
_L7 = ("dns", "http", "kafka", "l7proto", "l7")


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


def parse_cilium_policy(manifest: Mapping[str, Any], *, default_namespace: str = "default") -> CiliumPolicy:
    """Validate one CNP or CCNP manifest; raises `InvalidPolicyError` naming the policy and field."""
    kind = manifest.get("kind") if isinstance(manifest, Mapping) else None
    metadata = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace = (metadata.get("namespace") or default_namespace) if kind == CNP else None
    name = metadata.get("name")
    label = f"{namespace}/{name or '?'}" if namespace else str(name or "?")
    try:
        top = fields_of(manifest, "", ("apiVersion", "kind", "metadata", "spec", "specs", "status"))
        if kind not in KINDS:
            raise FieldError("kind", f"expected {' or '.join(KINDS)}, got {top.get('kind')!r}")
        if top.get("apiVersion", API_VERSION) != API_VERSION:
            raise FieldError("apiVersion", f"expected {API_VERSION}, got {top['apiVersion']!r}")
        name = string_of(name, "metadata.name")
        raw_specs = [("spec", top["spec"])] if "spec" in top else []
        raw_specs += [(f"specs[{i}]", spec) for i, spec in enumerate(list_of(top.get("specs", []), "specs"))]
        if not raw_specs:
            raise FieldError("spec", "a policy needs spec or specs")
        specs = tuple(_parse_spec(raw, path, namespace) for path, raw in raw_specs)
        return CiliumPolicy(kind, namespace, name, specs)
    except FieldError as error:
        raise InvalidPolicyError(label, error.field.lstrip(".") or "(manifest)", error.reason, kind or CNP) from None


def _parse_spec(raw: object, path: str, namespace: str | None) -> CiliumSpec:
    names: tuple[str, ...] = ("description", "labels", "log", "endpointSelector", "nodeSelector", "enableDefaultDeny")
    names += ("ingress", "egress", "ingressDeny", "egressDeny")
    spec = fields_of(raw, path, names)
    if ("endpointSelector" in spec) == ("nodeSelector" in spec):
        raise FieldError(path, "needs exactly one of endpointSelector and nodeSelector")
    subject = None
    if "endpointSelector" in spec:
        subject = _subject(spec["endpointSelector"], f"{path}.endpointSelector", namespace)
    else:
        parse_label_selector(spec["nodeSelector"], f"{path}.nodeSelector")
    allow, deny = {}, {}
    for direction, key in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
        allow[direction] = _parse_rules(spec.get(key, []), f"{path}.{key}", direction, namespace, deny=False)
        deny[direction] = _parse_rules(spec.get(f"{key}Deny", []), f"{path}.{key}Deny", direction, namespace, deny=True)
    switches = fields_of(spec.get("enableDefaultDeny", {}), f"{path}.enableDefaultDeny", ("ingress", "egress"))
    default_deny = set()
    for direction, key in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
        enabled = switches.get(key, bool(allow[direction] or deny[direction]))
        if not isinstance(enabled, bool):
            raise FieldError(f"{path}.enableDefaultDeny.{key}", f"must be true or false, got {enabled!r}")
        if enabled:
            default_deny.add(direction)
    return CiliumSpec(subject, allow, deny, frozenset(default_deny))


def _parse_rules(
    raw: object, path: str, direction: Direction, namespace: str | None, *, deny: bool
) -> tuple[CiliumRule, ...]:
    peer_keys = _PEERS[direction]
    extra = ("icmps", "toPorts", "authentication") if not deny else ("icmps", "toPorts")
    rules = []
    for i, item in enumerate(list_of(raw, path)):
        rule_path = f"{path}[{i}]"
        rule = fields_of(item, rule_path, peer_keys + _UNSUPPORTED + extra)
        for key in _UNSUPPORTED:
            if key in rule:
                raise FieldError(f"{rule_path}.{key}", "is not supported by this tool's evaluator")
        if deny and "toFQDNs" in rule:
            raise FieldError(f"{rule_path}.toFQDNs", "is not allowed in a deny rule")
        peers = tuple(
            peer for key in peer_keys for peer in _parse_peers(key, rule.get(key, []), f"{rule_path}.{key}", namespace)
        )
        ports, dns_proxy = _parse_to_ports(rule.get("toPorts", []), f"{rule_path}.toPorts", deny=deny)
        icmps = list_of(rule.get("icmps", []), f"{rule_path}.icmps")
        for j, icmp in enumerate(icmps):
            fields_of(icmp, f"{rule_path}.icmps[{j}]", ("fields",))
        ports += (OtherProtocols(),) if icmps else ()
        has_l4 = "toPorts" in rule or bool(icmps)
        if not peers and has_l4:
            peers = (AllPeers(),)  # an L4-only rule applies to every peer
        rules.append(CiliumRule(peers, ports or (AllPorts(),), dns_proxy))
    return tuple(rules)


def _parse_peers(key: str, raw: object, path: str, namespace: str | None) -> list[PeerMatcher]:
    items = list_of(raw, path)
    if key.endswith("Endpoints"):
        return [_endpoint_peer(item, f"{path}[{i}]", namespace) for i, item in enumerate(items)]
    if key.endswith("Entities"):
        entities = {string_of(item, f"{path}[{i}]") for i, item in enumerate(items)}
        unknown = sorted(entities - ENTITIES)
        if unknown:
            raise FieldError(path, f"unknown entity {unknown[0]!r} (expected {', '.join(sorted(ENTITIES))})")
        return [EntityPeers(frozenset(entities))] if entities else []
    if key.endswith("CIDR"):
        return [IPPeers(IPBlock(parse_cidr(item, f"{path}[{i}]"))) for i, item in enumerate(items)]
    if key.endswith("CIDRSet"):
        return [IPPeers(_cidr_rule(item, f"{path}[{i}]")) for i, item in enumerate(items)]
    names, patterns = set(), []
    for i, item in enumerate(items):
        entry = fields_of(item, f"{path}[{i}]", ("matchName", "matchPattern"))
        if len(entry) != 1:
            raise FieldError(f"{path}[{i}]", "needs exactly one of matchName and matchPattern")
        if "matchName" in entry:
            names.add(string_of(entry["matchName"], f"{path}[{i}].matchName").lower().rstrip(".") + ".")
        else:
            patterns.append(string_of(entry["matchPattern"], f"{path}[{i}].matchPattern"))
    return [FQDNPeers(frozenset(names), tuple(sorted(set(patterns))))] if items else []


def _cidr_rule(raw: object, path: str) -> IPBlock:
    rule = fields_of(raw, path, ("cidr", "except", "cidrGroupRef", "cidrGroupSelector"))
    for key in ("cidrGroupRef", "cidrGroupSelector"):
        if key in rule:
            raise FieldError(f"{path}.{key}", "CiliumCIDRGroup references are not supported by this tool's evaluator")
    return parse_ip_block(rule, path)


def _parse_to_ports(raw: object, path: str, *, deny: bool) -> tuple[tuple[PortMatcher, ...], bool]:
    """The port matchers of `toPorts`, and whether a rule sends DNS through the proxy."""
    matchers: list[PortMatcher] = []
    dns_proxy = False
    for i, item in enumerate(list_of(raw, path)):
        rule_path = f"{path}[{i}]"
        port_rule = fields_of(item, rule_path, ("ports",) if deny else _PORT_RULE)
        if "rules" in port_rule:
            l7 = fields_of(port_rule["rules"], f"{rule_path}.rules", _L7)
            dns_proxy = dns_proxy or bool(l7.get("dns"))
        ports = list_of(port_rule.get("ports", []), f"{rule_path}.ports")
        if not ports:
            matchers += [PortRange(protocol) for protocol in Protocol]
        for j, port in enumerate(ports):
            matchers += _parse_port(port, f"{rule_path}.ports[{j}]")
    return tuple(matchers), dns_proxy


def _parse_port(raw: object, path: str) -> list[PortMatcher]:
    spec = fields_of(raw, path, ("port", "endPort", "protocol"))
    name = spec.get("protocol") or "ANY"
    if name in ("VRRP", "IGMP"):
        return [OtherProtocols()]
    if name != "ANY" and (not isinstance(name, str) or name not in Protocol.__members__):
        raise FieldError(f"{path}.protocol", f"unsupported protocol {name!r} (expected TCP, UDP, SCTP, ANY)")
    protocols = tuple(Protocol) if name == "ANY" else (Protocol(name),)
    port = str(spec.get("port", "0"))
    end = spec.get("endPort", 0)
    if isinstance(end, bool) or not isinstance(end, int) or not 0 <= end <= MAX_PORT:
        raise FieldError(f"{path}.endPort", f"{end!r} is not a port number (0-{MAX_PORT})")
    if not port.isdigit():  # a name, matched case-insensitively as Cilium does (it lowercases names)
        check_port_name(port.lower(), f"{path}.port")
        return [NamedPort(protocol, port.lower()) for protocol in protocols]
    number = int(port)
    if number > MAX_PORT:
        raise FieldError(f"{path}.port", f"{number} is not a port number (0-{MAX_PORT})")
    if number == 0:
        return [PortRange(protocol) for protocol in protocols]
    return [PortRange(protocol, number, max(end, number)) for protocol in protocols]


def _subject(raw: object, path: str, namespace: str | None) -> PodPeers:
    namespaces, pods, _ = _split_selector(raw, path)
    if namespace is not None:
        namespaces = _and(namespaces, LabelSelector(Labels({NAME_LABEL: namespace})))
    return PodPeers(namespaces, pods)


def _endpoint_peer(raw: object, path: str, namespace: str | None) -> PeerMatcher:
    namespaces, pods, entities = _split_selector(raw, path)
    if entities:
        return EntityPeers(entities)
    names_namespace = bool(namespaces.match_labels or namespaces.expressions)
    if namespace is not None and not names_namespace:
        namespaces = LabelSelector(Labels({NAME_LABEL: namespace}))
    return PodPeers(namespaces, pods)


def _split_selector(raw: object, path: str) -> tuple[LabelSelector, LabelSelector, frozenset[str]]:
    """A Cilium endpoint selector as (namespace selector, pod selector, reserved entities)."""
    selector = parse_label_selector(raw, path)
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
