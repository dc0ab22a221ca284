"""Malformed policies are rejected with InvalidPolicyError naming the policy and the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from recommender.semantics import Direction, InvalidPolicyError, Protocol, parse_policy

VALID: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8080}],
            }
        ],
    },
}


def with_changes(path: str, value: Any, base: dict[str, Any] = VALID) -> dict[str, Any]:
    """A copy of `base` with the value at a dotted path (list indexes as numbers) replaced."""
    manifest = copy.deepcopy(base)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = manifest
    for key in parents:
        node = node[key]
    node[last] = value
    return manifest


INGRESS_PORT = "spec.ingress.0.ports.0"
INGRESS_PEER = "spec.ingress.0.from.0"
SELECTOR = "spec.podSelector"

BAD_POLICIES = {
    "an_invalid_cidr": (
        with_changes(f"{INGRESS_PEER}.ipBlock.cidr", "10.0.0.0/33"),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "invalid CIDR '10.0.0.0/33'",
    ),
    "an_except_outside_the_cidr": (
        with_changes(f"{INGRESS_PEER}.ipBlock.except", ["192.168.0.0/16"]),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "must be a strict subset of cidr 10.0.0.0/8",
    ),
    "an_except_equal_to_the_cidr": (
        with_changes(f"{INGRESS_PEER}.ipBlock.except", ["10.0.0.0/8"]),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    "an_ipv6_except_in_an_ipv4_cidr": (
        with_changes(f"{INGRESS_PEER}.ipBlock.except", ["2001:db8::/32"]),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ),
    "an_ip_block_without_cidr": (
        with_changes(f"{INGRESS_PEER}.ipBlock", {"except": ["10.1.0.0/16"]}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "is required",
    ),
    "an_ip_block_with_a_pod_selector": (
        with_changes(INGRESS_PEER, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0]",
        "may not specify both ipBlock and another peer",
    ),
    "an_empty_peer": (
        with_changes(INGRESS_PEER, {}),
        "spec.ingress[0].from[0]",
        "must specify a peer",
    ),
    "an_end_port_below_the_port": (
        with_changes(f"{INGRESS_PORT}.endPort", 7999),
        "spec.ingress[0].ports[0].endPort",
        "7999 must be >= port 8000",
    ),
    "an_end_port_with_a_named_port": (
        with_changes(f"{INGRESS_PORT}.port", "http"),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when port is a named port",
    ),
    "an_end_port_without_a_port": (
        with_changes(INGRESS_PORT, {"endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
        "may not be specified when port is not specified",
    ),
    "a_port_above_65535": (
        with_changes(f"{INGRESS_PORT}.port", 70000),
        "spec.ingress[0].ports[0].port",
        "70000 is not a port number (1-65535)",
    ),
    "a_quoted_port_number": (
        with_changes(INGRESS_PORT, {"port": "8080"}),
        "spec.ingress[0].ports[0].port",
        "'8080' is not a valid port name (a number must not be quoted)",
    ),
    "a_port_name_longer_than_15_characters": (
        with_changes(INGRESS_PORT, {"port": "a-very-long-port-name"}),
        "spec.ingress[0].ports[0].port",
        "not a valid port name",
    ),
    "an_unknown_protocol": (
        with_changes(f"{INGRESS_PORT}.protocol", "ICMP"),
        "spec.ingress[0].ports[0].protocol",
        "unsupported value 'ICMP' (expected SCTP, TCP, UDP)",
    ),
    "a_lowercase_protocol": (
        with_changes(f"{INGRESS_PORT}.protocol", "tcp"),
        "spec.ingress[0].ports[0].protocol",
        "unsupported value 'tcp'",
    ),
    "an_unknown_operator": (
        with_changes(
            SELECTOR,
            {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["web"]}]},
        ),
        "spec.podSelector.matchExpressions[0].operator",
        "unsupported value 'Equals' (expected In, NotIn, Exists, DoesNotExist)",
    ),
    "in_without_values": (
        with_changes(SELECTOR, {"matchExpressions": [{"key": "app", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be non-empty for operator In",
    ),
    "exists_with_values": (
        with_changes(SELECTOR, {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be empty for operator Exists",
    ),
    "an_unquoted_numeric_label_value": (
        with_changes(SELECTOR, {"matchLabels": {"version": 1.0}}),
        "spec.podSelector.matchLabels.version",
        "expected a string, got float 1.0 (quote it in YAML)",
    ),
    "a_misspelled_field": (
        with_changes("spec.podselector", {}),
        "spec.podselector",
        "unknown field (expected podSelector, policyTypes, ingress, egress)",
    ),
    "an_unknown_policy_type": (
        with_changes("spec.policyTypes", ["Ingress", "Outgress"]),
        "spec.policyTypes[1]",
        "unsupported value 'Outgress' (expected Ingress, Egress)",
    ),
    "three_policy_types": (
        with_changes("spec.policyTypes", ["Ingress", "Egress", "Ingress"]),
        "spec.policyTypes",
        "may not specify more than two policyTypes",
    ),
    "ingress_that_is_not_a_list": (
        with_changes("spec.ingress", {"from": []}),
        "spec.ingress",
        "expected a list, got dict {'from': []}",
    ),
    "another_kind": (with_changes("kind", "Pod"), "kind", "unsupported value 'Pod' (expected NetworkPolicy)"),
    "another_api_version": (
        with_changes("apiVersion", "extensions/v1beta1"),
        "apiVersion",
        "expected networking.k8s.io/v1",
    ),
    "no_name": (
        with_changes("metadata", {"namespace": "shop"}),
        "metadata.name",
        "is required",
    ),
}


@pytest.mark.parametrize("manifest, field, reason", BAD_POLICIES.values(), ids=list(BAD_POLICIES))
def test_a_malformed_policy_is_rejected_naming_the_field(manifest: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidPolicyError) as caught:
        parse_policy(manifest)

    assert caught.value.field == field
    assert reason in caught.value.reason
    policy_name = "shop/?" if "name" not in manifest["metadata"] else "shop/web"
    assert str(caught.value) == f"NetworkPolicy {policy_name}: {field}: {caught.value.reason}"


def test_the_valid_policy_parses_with_defaults_applied() -> None:
    policy = parse_policy(VALID)

    assert policy.id == "shop/web"
    assert policy.policy_types == {Direction.INGRESS}
    port = policy.ingress[0].ports[0]
    assert (port.protocol, port.port, port.end_port) == (Protocol.TCP, 8000, 8080)
    assert str(policy.ingress[0].peers[0].ip_block) == "10.0.0.0/8 except 10.1.0.0/16"


def test_the_protocol_defaults_to_tcp_and_status_is_ignored() -> None:
    manifest = with_changes(INGRESS_PORT, {"port": 53})
    manifest["status"] = {"conditions": []}

    assert parse_policy(manifest).ingress[0].ports[0].protocol is Protocol.TCP


def test_policy_types_default_to_ingress_and_egress_when_egress_has_rules() -> None:
    manifest = with_changes("spec.egress", [{}])
    assert parse_policy(manifest).policy_types == {Direction.INGRESS, Direction.EGRESS}
    manifest["spec"]["policyTypes"] = []
    assert parse_policy(manifest).policy_types == {Direction.INGRESS, Direction.EGRESS}


def test_a_missing_namespace_takes_the_default_namespace() -> None:
    manifest = with_changes("metadata", {"name": "web"})
    assert parse_policy(manifest, default_namespace="team-a").id == "team-a/web"
    assert parse_policy(manifest).id == "default/web"
