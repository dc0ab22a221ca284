"""The NetworkPolicy renderer: semantics `NetworkPolicy` objects → the manifests written to files.

Synthesis builds the semantics objects (what verification evaluates); this module is the only place
that turns them into manifest dicts. Key order is the one of `kubectl` output (apiVersion, kind,
metadata, spec; podSelector, policyTypes, ingress, egress), so the YAML stays byte-stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recommender.semantics import Direction, LabelSelector, NetworkPolicy
from recommender.semantics.policies import PolicyPeer, PolicyPort, PolicyRule

MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-recommender"}
"""The label on every policy the tool writes."""
_PEERS_KEY = {Direction.INGRESS: "from", Direction.EGRESS: "to"}


def network_policy_manifest(policy: NetworkPolicy, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The manifest of `policy`, labelled as ours, with `annotations` when given."""
    metadata: dict[str, Any] = {"name": policy.name, "namespace": policy.namespace, "labels": dict(MANAGED_BY)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {
        "podSelector": selector_dict(policy.pod_selector),
        "policyTypes": [str(direction) for direction in Direction if direction in policy.policy_types],
    }
    for direction in Direction:
        rules = policy.rules(direction)
        if rules:
            spec[direction.lower()] = [_rule(rule, _PEERS_KEY[direction]) for rule in rules]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def selector_dict(selector: LabelSelector) -> dict[str, Any]:
    """`{}`, or `matchLabels` (sorted) and `matchExpressions` (values sorted), in the given order."""
    found: dict[str, Any] = {}
    if selector.match_labels:
        found["matchLabels"] = dict(selector.match_labels.items())
    if selector.expressions:
        found["matchExpressions"] = [
            {
                "key": item.key,
                "operator": str(item.operator),
                **({"values": sorted(item.values)} if item.values else {}),
            }
            for item in selector.expressions
        ]
    return found


def _rule(rule: PolicyRule, peers_key: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if rule.peers:
        found[peers_key] = [_peer(peer) for peer in rule.peers]
    if rule.ports:
        found["ports"] = [_port(port) for port in rule.ports]
    return found


def _peer(peer: PolicyPeer) -> dict[str, Any]:
    if peer.ip_block is not None:
        block: dict[str, Any] = {"cidr": str(peer.ip_block.cidr)}
        if peer.ip_block.excepts:
            block["except"] = [str(hole) for hole in peer.ip_block.excepts]
        return {"ipBlock": block}
    found = {}
    if peer.namespace_selector is not None:
        found["namespaceSelector"] = selector_dict(peer.namespace_selector)
    if peer.pod_selector is not None:
        found["podSelector"] = selector_dict(peer.pod_selector)
    return found


def _port(port: PolicyPort) -> dict[str, Any]:
    found: dict[str, Any] = {"protocol": str(port.protocol)}
    if port.port is not None:
        found["port"] = port.port
    if port.end_port is not None:
        found["endPort"] = port.end_port
    return found
