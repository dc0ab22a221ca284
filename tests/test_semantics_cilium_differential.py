"""CiliumNetworkPolicy semantics against NetworkPolicy semantics, on random clusters and policies.

Every NetworkPolicy has an exact CNP translation (selectors with the namespace label keys, ipBlocks
as toCIDRSet, empty peers as `fromEntities: [all]` or an L4-only rule, an isolating direction
without rules as `[{}]`). Under the cilium profile both must give the same verdict on every
connection; the NetworkPolicy engine is checked against the spec elsewhere, so this checks the
Cilium parser and compiler.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from recommender.semantics import CILIUM, Direction, Evaluator, ExternalPeer, LabelSelector, parse_policy
from recommender.semantics.cilium import NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX
from recommender.semantics.policies import NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from tests.test_semantics_differential import EXTERNALS, PROBES, clusters


def selector(selector: LabelSelector, prefix: str = "") -> dict[str, Any]:
    return {
        "matchLabels": {f"{prefix}{key}": value for key, value in selector.match_labels.items()},
        "matchExpressions": [
            {
                "key": f"{prefix}{r.key}",
                "operator": str(r.operator),
                **({"values": sorted(r.values)} if r.values else {}),
            }
            for r in selector.expressions
        ],
    }


def endpoint_selector(peer: PolicyPeer) -> dict[str, Any]:
    pods = selector(peer.pod_selector or LabelSelector())
    if peer.namespace_selector is not None:  # any namespace the selector matches, not only the policy's
        namespaces = selector(peer.namespace_selector, NAMESPACE_LABELS_PREFIX)
        pods["matchLabels"] |= namespaces["matchLabels"]
        pods["matchExpressions"] += [*namespaces["matchExpressions"], {"key": NAMESPACE_KEY, "operator": "Exists"}]
    return pods


def to_ports(ports: tuple[PolicyPort, ...]) -> list[dict[str, Any]]:
    entries = []
    for port in ports:
        entry: dict[str, Any] = {"port": "0" if port.port is None else str(port.port), "protocol": str(port.protocol)}
        if port.end_port is not None:
            entry["endPort"] = port.end_port
        entries.append(entry)
    return [{"ports": entries}]


def cilium_rule(rule: PolicyRule, direction: Direction) -> dict[str, Any]:
    ends, entities, cidrs = (
        ("fromEndpoints", "fromEntities", "fromCIDRSet")
        if direction is Direction.INGRESS
        else ("toEndpoints", "toEntities", "toCIDRSet")
    )
    translated: dict[str, Any] = {}
    endpoints = [endpoint_selector(peer) for peer in rule.peers if peer.ip_block is None]
    blocks = [
        {
            "cidr": str(p.ip_block.cidr),
            **({"except": [str(e) for e in p.ip_block.excepts]} if p.ip_block.excepts else {}),
        }
        for p in rule.peers
        if p.ip_block is not None
    ]
    if endpoints:
        translated[ends] = endpoints
    if blocks:
        translated[cidrs] = blocks
    if rule.ports:
        translated["toPorts"] = to_ports(rule.ports)
    elif not rule.peers:
        translated[entities] = ["all"]
    return translated


def translate(policy: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {"endpointSelector": selector(policy.pod_selector)}
    for direction, key in ((Direction.INGRESS, "ingress"), (Direction.EGRESS, "egress")):
        if direction in policy.policy_types:
            spec[key] = [cilium_rule(rule, direction) for rule in policy.rules(direction)] or [{}]
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": spec,
    }


@settings(max_examples=150, deadline=None)
@given(clusters())
def test_a_cnp_translation_of_networkpolicies_gives_the_same_verdicts_under_cilium(cluster) -> None:
    raw_policies, namespaces, cluster_pods, _ = cluster
    policies = [parse_policy(p) for p in raw_policies]
    as_networkpolicy = Evaluator(policies, namespaces, cluster_pods, profile=CILIUM)
    as_cilium = Evaluator([translate(p) for p in policies], namespaces, cluster_pods, profile=CILIUM)
    endpoints: list[Any] = [*cluster_pods, *EXTERNALS, ExternalPeer("192.168.0.250", "remote-node")]
    for client in endpoints:
        for server in endpoints:
            if client is server or (isinstance(client, ExternalPeer) and isinstance(server, ExternalPeer)):
                continue
            assert as_cilium.allowed_connections(client, server) == as_networkpolicy.allowed_connections(
                client, server
            ), f"{client} -> {server}: {[translate(p) for p in policies]}"
            for protocol, port in PROBES:
                expected = as_networkpolicy.evaluate(client, server, protocol, port).allowed
                assert as_cilium.evaluate(client, server, protocol, port).allowed == expected
