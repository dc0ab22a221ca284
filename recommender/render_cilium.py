"""The proposal as CiliumNetworkPolicies (`cilium.io/v2`), from the same rules as the NetworkPolicies.

Per managed namespace a `default-deny` CNP (every endpoint of the namespace, default deny both ways);
per workload one `allow-<workload>` CNP with its `endpointSelector` and one Cilium rule per synthesis
rule: pods as `fromEndpoints`/`toEndpoints` (other namespaces through `k8s:io.kubernetes.pod.namespace`),
cluster entities as `fromEntities`/`toEntities`, world IPs as `fromCIDR`/`toCIDR` or, where the capture
resolved their DNS names, `toFQDNs` with `matchName`. Port 53 towards pods (the DNS servers) carries
the DNS rule (`rules.dns`) that sends the lookups through Cilium's DNS proxy: `toFQDNs` matches
nothing without it, and it is what lets Hubble see the names. Ports are exact `toPorts`; ICMP is
`icmps` (echo requests, what the capture keeps).

The cluster baseline (`--baseline clusternetworkpolicy`) becomes one CiliumClusterwideNetworkPolicy
of the same name: Cilium has no tiers (the allow rules of every policy add up), so it is a default
deny both ways of every endpoint outside the excluded namespaces, with DNS to the kube-dns pods
through the DNS proxy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from recommender.baseline import KUBE_DNS
from recommender.dns_allowance import DNS_PORT, DNS_PORTS, DnsAllowance
from recommender.manifests import selector_dict
from recommender.plans import POLICY_PROTOCOLS, PolicyPlan, Rule, exact_cidrs
from recommender.selectors import NAMESPACE_NAME_LABEL, Selector
from recommender.semantics import NetworkPolicy
from recommender.semantics.cilium import parse_cilium_policy
from recommender.synthesis import DEFAULT_DENY

API_VERSION = "cilium.io/v2"
KIND = "CiliumNetworkPolicy"
CLUSTERWIDE_KIND = "CiliumClusterwideNetworkPolicy"
NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"
DNS_PROXY_RULES = {"dns": [{"matchPattern": "*"}]}
"""Every lookup through the DNS proxy (the Cilium `toFQDNs` example): it learns the names' IPs."""
ICMP_ECHO_REQUEST = {"ICMPv4": ("IPv4", 8), "ICMPv6": ("IPv6", 128)}

_PEER_KEYS = {
    ("ingress", "pods"): "fromEndpoints",
    ("ingress", "entities"): "fromEntities",
    ("ingress", "cidr"): "fromCIDR",
    ("egress", "pods"): "toEndpoints",
    ("egress", "entities"): "toEntities",
    ("egress", "cidr"): "toCIDR",
    ("egress", "fqdn"): "toFQDNs",
}


def cilium_policies(
    plans: Iterable[PolicyPlan], selectors: Mapping[tuple[str, str], Selector], dns: DnsAllowance
) -> list[PolicyPlan]:
    """The plans (in their order) with CiliumNetworkPolicy manifests: same names, rules and evidence."""
    return [_cilium_plan(plan, selectors, dns) for plan in plans]


def _cilium_plan(plan: PolicyPlan, selectors: Mapping[tuple[str, str], Selector], dns: DnsAllowance) -> PolicyPlan:
    metadata = plan.manifest["metadata"]
    if not plan.namespace:
        return _parsed(replace(plan, manifest=_cluster_baseline(plan.manifest)))
    if not plan.workload:  # the default-deny or the DNS allowance: the same pods as the NetworkPolicy
        assert isinstance(plan.policy, NetworkPolicy), plan.policy
        spec: dict[str, Any] = {"endpointSelector": selector_dict(plan.policy.pod_selector)}
        if plan.name == DEFAULT_DENY:
            spec |= {"enableDefaultDeny": {"egress": True, "ingress": True}, "ingress": [{}], "egress": [{}]}
        else:
            spec["egress"] = _dns_rules(dns, selectors)
    else:
        namespace, workload = plan.workload.split("/", 1)
        spec = {"endpointSelector": selectors[(namespace, workload)].as_dict()}
        for direction in ("ingress", "egress"):
            rules = [rule for rule in plan.rules if rule.direction == direction]
            if rules:
                spec[direction] = [_rule(rule, namespace, selectors) for rule in rules]
    manifest = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    return _parsed(replace(plan, manifest=manifest))


def _parsed(plan: PolicyPlan) -> PolicyPlan:
    """The plan with its Cilium manifest as the semantics object verification evaluates."""
    return replace(plan, policy=parse_cilium_policy(plan.manifest))


def _rule(rule: Rule, namespace: str, selectors: Mapping[tuple[str, str], Selector]) -> dict:
    """One Cilium rule: the peers (all of one kind) and the ports of a synthesis rule."""
    kind = rule.peers[0].kind
    peers: list[Any]
    if kind == "pods":
        peers = [_endpoint_selector(peer.namespace, peer.workload, namespace, selectors) for peer in rule.peers]
    elif kind == "entities":
        peers = sorted({peer.entity for peer in rule.peers})
    elif kind == "fqdn":
        peers = [{"matchName": name} for name in sorted({name for peer in rule.peers for name in peer.names})]
    else:
        peers = exact_cidrs(rule.ips)
    cilium_rule: dict[str, Any] = {_PEER_KEYS[(rule.direction, kind)]: peers}
    ports = [(protocol, port) for protocol, port in rule.ports if protocol in POLICY_PROTOCOLS]
    to_dns = rule.direction == "egress" and kind == "pods"
    dns = [(protocol, port) for protocol, port in ports if port == DNS_PORT] if to_dns else []
    to_ports = []
    if dns:
        to_ports.append({"ports": _ports(dns), "rules": DNS_PROXY_RULES})
    if len(ports) > len(dns):
        to_ports.append({"ports": _ports([item for item in ports if item not in dns])})
    if to_ports:
        cilium_rule["toPorts"] = to_ports
    icmps = [ICMP_ECHO_REQUEST[protocol] for protocol, _port in rule.ports if protocol in ICMP_ECHO_REQUEST]
    if icmps:
        cilium_rule["icmps"] = [{"fields": [{"family": family, "type": code} for family, code in icmps]}]
    return cilium_rule


def _dns_rules(dns: DnsAllowance, selectors: Mapping[tuple[str, str], Selector]) -> list[dict[str, Any]]:
    """The DNS allowance as Cilium rules: to the server pods, and to server IPs (node-local-dns), on
    UDP and TCP 53 through the DNS proxy (so that `toFQDNs` rules of the same pods match)."""
    to_ports = _dns_to_ports()
    pods = [server for server in dns.servers if server.workload]
    ips = [server.ip for server in dns.servers if not server.workload]
    rules: list[dict[str, Any]] = []
    if pods:
        peers = [_endpoint_selector(server.namespace, server.workload, "", selectors) for server in pods]
        rules.append({"toEndpoints": peers, "toPorts": to_ports})
    if ips:
        rules.append({"toCIDR": exact_cidrs(ips), "toPorts": to_ports})
    return rules


def _cluster_baseline(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The CiliumClusterwideNetworkPolicy of the Baseline ClusterNetworkPolicy `policy` (as
    `baseline.cluster_baseline` writes it): its subject's namespaces by name, DNS to the same servers."""
    excluded = policy["spec"]["subject"]["namespaces"].get("matchExpressions", [])
    assert all(item["key"] == NAMESPACE_NAME_LABEL for item in excluded), excluded
    # Pods only: an endpoint without a namespace label (Cilium's own health endpoint) matches any NotIn.
    in_a_namespace = {"key": NAMESPACE_KEY, "operator": "Exists"}
    subject = {"matchExpressions": [in_a_namespace, *({**item, "key": NAMESPACE_KEY} for item in excluded)]}
    kube_dns = KUBE_DNS["podSelector"]["matchLabels"] | {
        NAMESPACE_KEY: KUBE_DNS["namespaceSelector"]["matchLabels"][NAMESPACE_NAME_LABEL]
    }
    spec = {
        "endpointSelector": subject,
        "enableDefaultDeny": {"egress": True, "ingress": True},
        "ingress": [{}],
        "egress": [{"toEndpoints": [{"matchLabels": dict(sorted(kube_dns.items()))}], "toPorts": _dns_to_ports()}],
    }
    return {"apiVersion": API_VERSION, "kind": CLUSTERWIDE_KIND, "metadata": policy["metadata"], "spec": spec}


def _dns_to_ports() -> list[dict[str, Any]]:
    """UDP and TCP 53 through the DNS proxy."""
    return [{"ports": _ports(list(DNS_PORTS)), "rules": DNS_PROXY_RULES}]


def _ports(ports: list[tuple[str, int]]) -> list[dict[str, str]]:
    return [{"port": str(port), "protocol": protocol} for protocol, port in ports]


def _endpoint_selector(
    peer_namespace: str, workload: str, namespace: str, selectors: Mapping[tuple[str, str], Selector]
) -> dict[str, Any]:
    """A Cilium endpoint selector: the workload's labels; another namespace's through its pseudo-label
    (a selector without it selects only the policy's own namespace)."""
    labels = dict(selectors[(peer_namespace, workload)].match_labels)
    if peer_namespace != namespace:
        labels[NAMESPACE_KEY] = peer_namespace
    return {"matchLabels": dict(sorted(labels.items()))} if labels else {}
