"""CiliumNetworkPolicy, CCNP and ClusterNetworkPolicy parsing: the inputs the truth tables use fit
the upstream CRD schemas, malformed manifests fail with the field's path, and L7 rules leave
L3/L4 verdicts alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.semantics import (
    CILIUM,
    POLICY_KINDS,
    ContainerPort,
    Evaluator,
    InvalidPolicyError,
    Namespace,
    Pod,
    parse_policy_set,
)
from tests.crd_schema import validate
from tests.test_semantics_validation import with_changes

CASES_DIR = Path(__file__).parent / "semantics_cases"
CRD_KINDS = POLICY_KINDS[1:]


def case_manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text())["cases"]:
            for manifest in case["policies"]:
                if manifest.get("kind") in CRD_KINDS:
                    found.append((f"{path.stem}:{case['name']}:{manifest['metadata']['name']}", manifest))
    return found


MANIFESTS = case_manifests()


@pytest.mark.parametrize("manifest", [m for _, m in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_every_cilium_and_cluster_policy_of_the_truth_tables_fits_its_upstream_crd(manifest: dict) -> None:
    validate(manifest)


def test_the_truth_tables_use_every_kind_the_parser_reads() -> None:
    assert {m["kind"] for _, m in MANIFESTS} == set(CRD_KINDS)


CNP: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
            }
        ],
        "egress": [{"toEntities": ["kube-apiserver"]}, {"toCIDRSet": [{"cidr": "203.0.113.0/24"}]}],
    },
}
CNP_FIELDS = {
    "an_unknown_entity": ("spec.egress.0.toEntities", ["wrld"], "spec.egress[0].toEntities", "unknown entity"),
    "a_port_over_65535": (
        "spec.ingress.0.toPorts.0.ports.0.port",
        "70000",
        "spec.ingress[0].toPorts[0].ports[0].port",
        "not a port number",
    ),
    "an_unknown_protocol": (
        "spec.ingress.0.toPorts.0.ports.0.protocol",
        "ICMP",
        "spec.ingress[0].toPorts[0].ports[0].protocol",
        "unsupported value 'ICMP' (expected ANY, IGMP, SCTP, TCP, UDP, VRRP)",
    ),
    "an_invalid_cidr": ("spec.egress.1.toCIDRSet.0.cidr", "10.0.0.0/33", "spec.egress[1].toCIDRSet[0].cidr", "CIDR"),
    "a_misspelled_peer_field": (
        "spec.ingress.0.fromEndpoint",
        [{}],
        "spec.ingress[0].fromEndpoint",
        "unknown field",
    ),
    "an_unknown_operator": (
        "spec.endpointSelector.matchExpressions",
        [{"key": "app", "operator": "Is", "values": ["x"]}],
        "spec.endpointSelector.matchExpressions[0].operator",
        "unsupported value 'Is'",
    ),
}
CLUSTER: dict[str, Any] = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "baseline"},
    "spec": {
        "tier": "Baseline",
        "priority": 10,
        "subject": {"namespaces": {}},
        "egress": [{"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}],
    },
}
CLUSTER_FIELDS = {
    "an_unknown_tier": (
        "spec.tier",
        "Developer",
        "spec.tier",
        "unsupported value 'Developer' (expected Admin, Baseline)",
    ),
    "a_priority_over_1000": ("spec.priority", 1001, "spec.priority", "expected an integer <= 1000, got int 1001"),
    "an_unknown_action": (
        "spec.egress.0.action",
        "Allow",
        "spec.egress[0].action",
        "unsupported value 'Allow' (expected Accept, Deny, Pass)",
    ),
    "a_subject_with_both_kinds": (
        "spec.subject",
        {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}},
        "spec.subject",
        "exactly one",
    ),
    "networks_in_an_ingress_rule": (
        "spec.ingress",
        [{"action": "Deny", "from": [{"networks": ["10.0.0.0/8"]}]}],
        "spec.ingress[0].from[0].networks",
        "unknown field",
    ),
}


BAD = [(name, CNP, *change) for name, change in CNP_FIELDS.items()]
BAD += [(name, CLUSTER, *change) for name, change in CLUSTER_FIELDS.items()]
SCHEMA_BLIND = {"a_port_over_65535", "an_invalid_cidr"}
"""Cases JSON Schema misses: the CRD's port pattern is unanchored on one side, and `format:
cidr` is not a JSON Schema format; Cilium's own validation (and the parser) reject them."""


@pytest.mark.parametrize(("name", "base", "path", "value", "field", "reason"), BAD, ids=[b[0] for b in BAD])
def test_a_manifest_the_crd_rejects_is_rejected_naming_the_field(
    name: str, base: dict, path: str, value: Any, field: str, reason: str
) -> None:
    manifest = with_changes(path, value, base)
    if name not in SCHEMA_BLIND:
        with pytest.raises(jsonschema.ValidationError):
            validate(manifest)
    with pytest.raises(InvalidPolicyError) as error:
        parse_policy_set([manifest])
    assert error.value.field == field
    assert reason in error.value.reason
    assert str(error.value).startswith(f"{base['kind']} ")


def test_the_valid_bases_fit_their_crds_and_parse() -> None:
    for manifest in (CNP, CLUSTER):
        validate(manifest)
    policy_set = parse_policy_set([CNP, CLUSTER])
    assert [p.id for p in policy_set] == ["CiliumNetworkPolicy shop/web", "ClusterNetworkPolicy baseline"]


def test_cilium_policies_are_refused_under_a_profile_that_does_not_enforce_them() -> None:
    with pytest.raises(InvalidPolicyError, match="only Cilium enforces it"):
        Evaluator([CNP])


def test_a_service_account_selector_is_refused_rather_than_matching_nothing() -> None:
    manifest = with_changes("spec.endpointSelector", {"matchLabels": {"io.cilium.k8s.policy.serviceaccount": "x"}}, CNP)
    with pytest.raises(InvalidPolicyError, match="not supported"):
        parse_policy_set([manifest])


PODS = [Pod("shop", name, {"app": name}) for name in ("web", "client", "other")]
http_rules = st.lists(
    st.fixed_dictionaries({"method": st.sampled_from(["GET", "POST"]), "path": st.sampled_from(["/", "/api/.*"])}),
    min_size=1,
    max_size=2,
)


@settings(max_examples=40, deadline=None)
@given(
    peer=st.sampled_from(["client", "other"]),
    ports=st.lists(st.sampled_from(["80", "8080", "443"]), min_size=1, max_size=2, unique=True),
    http=http_rules,
)
def test_l7_http_rules_do_not_change_what_l3_l4_allows(peer: str, ports: list[str], http: list[dict]) -> None:
    def policy(rules: dict | None) -> dict:
        port_rule: dict[str, Any] = {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
        if rules:
            port_rule["rules"] = rules
        return {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": peer}}], "toPorts": [port_rule]}],
            },
        }

    plain = Evaluator([policy(None)], [Namespace("shop")], PODS, profile=CILIUM)
    with_l7 = Evaluator([policy({"http": http})], [Namespace("shop")], PODS, profile=CILIUM)
    validate(policy({"http": http}))
    for client in PODS:
        assert with_l7.allowed_connections(client, PODS[0]) == plain.allowed_connections(client, PODS[0])


def test_a_named_port_is_matched_case_insensitively_and_checked_as_an_iana_service_name() -> None:
    named = with_changes("spec.ingress.0.toPorts.0.ports.0.port", "HTTP", CNP)  # Cilium lowercases names
    client = Pod("shop", "client-0", {"app": "client"})
    web = Pod("shop", "web-0", {"app": "web"}, (ContainerPort(8080, "http", "TCP"),))
    evaluator = Evaluator([named], [Namespace("shop")], [client, web], profile=CILIUM)
    assert evaluator.evaluate(client, web, "TCP", 8080).allowed
    for name in ("a--b", "-ab", "a-very-long-port-name-over-15"):
        with pytest.raises(InvalidPolicyError, match="not a valid port name"):
            parse_policy_set([with_changes("spec.ingress.0.toPorts.0.ports.0.port", name, CNP)])


def test_the_subjects_of_a_cnp_are_only_the_pods_its_namespace_labels_select_too() -> None:
    team = "k8s:io.cilium.k8s.namespace.labels.team"
    web = Pod("shop", "web-0", {"app": "web"})
    for namespace_team, selected in (("blue", 1), ("red", 0)):
        blue_only = with_changes("spec.endpointSelector.matchLabels", {"app": "web", team: "blue"}, CNP)
        evaluator = Evaluator([blue_only], [Namespace("shop", {"team": namespace_team})], [web], profile=CILIUM)
        assert [len(evaluator.subjects_of(target)) for target in evaluator.targets] == [selected, selected]
