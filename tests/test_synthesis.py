"""Synthesis rules, one test per rule of DESIGN.md "Synthesis: the minimal exact set"."""

from __future__ import annotations

import pandas as pd

from collectors.records import POD_COLUMNS, ObservationSet, ReadStats
from recommender import api
from recommender.dns_allowance import DnsMode
from recommender.synthesis import SynthesisOptions, synthesize
from tests.builders import observations


def policies(*rows, **options):
    proposal = synthesize(observations(*rows), options=SynthesisOptions(**options))
    return {(plan.namespace, plan.name): plan.manifest for plan in proposal.policies}, proposal


def test_every_managed_namespace_gets_a_default_deny_for_both_directions():
    found, _ = policies(("shop/web", "data/db", "TCP", 5432))
    for namespace in ("shop", "data"):
        spec = found[(namespace, "default-deny")]["spec"]
        assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_one_policy_per_workload_with_its_ingress_and_egress():
    found, _ = policies(("shop/web", "shop/api", "TCP", 8080), ("shop/api", "shop/db", "TCP", 5432))
    api = found[("shop", "allow-api")]["spec"]
    assert api["podSelector"] == {"matchLabels": {"app": "api"}}
    assert api["policyTypes"] == ["Ingress", "Egress"]
    assert api["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    assert api["egress"] == [
        {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"protocol": "TCP", "port": 5432}]}
    ]
    assert found[("shop", "allow-web")]["spec"]["policyTypes"] == ["Egress"]
    assert found[("shop", "allow-db")]["spec"]["policyTypes"] == ["Ingress"]


def test_peers_with_identical_port_sets_share_one_rule_and_others_do_not():
    found, _ = policies(
        ("shop/a", "shop/api", "TCP", 8080),
        ("shop/b", "shop/api", "TCP", 8080),
        ("shop/c", "shop/api", "TCP", 8080),
        ("shop/c", "shop/api", "TCP", 9090),
    )
    ingress = found[("shop", "allow-api")]["spec"]["ingress"]
    assert ingress == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "a"}}}, {"podSelector": {"matchLabels": {"app": "b"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        },
        {
            "from": [{"podSelector": {"matchLabels": {"app": "c"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 9090}],
        },
    ]


def test_other_namespaces_are_selected_by_their_name_label_together_with_the_pods():
    found, _ = policies(("shop/web", "payments/pay", "TCP", 8443))
    egress = found[("shop", "allow-web")]["spec"]["egress"][0]["to"]
    assert egress == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "payments"}},
            "podSelector": {"matchLabels": {"app": "pay"}},
        }
    ]


def test_world_peers_are_exact_ip_blocks_with_adjacent_blocks_collapsed_exactly():
    found, _ = policies(
        ("shop/web", "world:203.0.113.10", "TCP", 443),
        ("shop/web", "world:203.0.113.11", "TCP", 443),
        ("shop/web", "world:203.0.113.13", "TCP", 443),
        ("shop/web", "world:2001:db8::1", "TCP", 443),
    )
    peers = found[("shop", "allow-web")]["spec"]["egress"][0]["to"]
    assert peers == [
        {"ipBlock": {"cidr": "203.0.113.10/31"}},
        {"ipBlock": {"cidr": "203.0.113.13/32"}},
        {"ipBlock": {"cidr": "2001:db8::1/128"}},
    ]


def test_node_and_api_server_destinations_are_ip_blocks_of_the_observed_ips():
    found, _ = policies(
        ("shop/op", "kube-apiserver:172.18.0.2", "TCP", 6443), ("shop/op", "host:172.18.0.3", "TCP", 10250)
    )
    egress = found[("shop", "allow-op")]["spec"]["egress"]
    assert [rule["to"] for rule in egress] == [
        [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
        [{"ipBlock": {"cidr": "172.18.0.3/32"}}],
    ]


def test_ingress_from_the_local_node_is_reported_not_ruled():
    found, proposal = policies(
        ("host:172.18.0.2", "shop/web", "TCP", 8080), ("remote-node:172.18.0.3", "shop/web", "TCP", 9000)
    )
    ingress = found[("shop", "allow-web")]["spec"]["ingress"]
    assert ingress == [{"from": [{"ipBlock": {"cidr": "172.18.0.3/32"}}], "ports": [{"protocol": "TCP", "port": 9000}]}]
    assert list(proposal.findings.host_ingress["client"]) == ["host:172.18.0.2"]


def test_with_dns_observed_dns_is_allowed_only_as_observed():
    found, _ = policies(
        ("shop/web", "kube-system/coredns:k8s-app=kube-dns", "UDP", 53),
        ("shop/api", "shop/db", "TCP", 5432),
        dns=DnsMode.OBSERVED,
    )
    assert found[("shop", "allow-web")]["spec"]["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}],
        }
    ]
    assert "egress" not in found[("shop", "allow-db")]["spec"]
    assert all("53" not in str(rule) for rule in found[("shop", "allow-api")]["spec"]["egress"])


def test_excluded_namespaces_get_no_policies_but_stay_peers():
    found, proposal = policies(("shop/web", "kube-system/coredns", "UDP", 53))
    assert {namespace for namespace, _ in found} == {"shop"}
    assert proposal.managed_namespaces == ["shop"]
    found, proposal = policies(("shop/web", "kube-system/coredns", "UDP", 53), exclude_namespaces=("shop",))
    assert {namespace for namespace, _ in found} == {"kube-system"}
    assert found[("kube-system", "allow-coredns")]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]


def test_dropped_traffic_is_reported_and_allowed_only_when_asked_and_only_for_policy_drops():
    rows = (
        ("shop/web", "shop/api", "TCP", 8080),
        ("shop/web", "shop/admin", "TCP", 9000, "DROPPED", 3, "POLICY_DENIED"),
        ("shop/web", "shop/cache", "TCP", 6379, "DROPPED", 2, "CT_MISSING_TCP_ACK_FLAG"),
    )
    found, proposal = policies(*rows)
    assert ("shop", "allow-admin") not in found
    assert set(proposal.findings.dropped["server"]) == {"shop/admin", "shop/cache"}
    found, _ = policies(*rows, include_dropped=True)
    assert ("shop", "allow-admin") in found and ("shop", "allow-cache") not in found


def test_include_dropped_never_allows_invalid_packets_or_drops_without_a_known_reason():
    rows = (
        ("shop/web", "shop/api", "TCP", 8080, "DROPPED", 4, "INVALID_SOURCE_IP"),
        ("shop/web", "shop/cache", "TCP", 6379, "DROPPED", 2, "DROP_REASON_UNKNOWN"),
        ("shop/web", "shop/admin", "TCP", 9000, "DROPPED", 3, "POLICY_DENIED"),
    )
    found, _ = policies(*rows, include_dropped=True)
    assert {name for _, name in found} == {"default-deny", "allow-web", "allow-admin"}
    observed = ObservationSet(
        observations(*rows), pd.DataFrame(columns=list(POD_COLUMNS)), observations(), {}, ReadStats()
    )
    summary = dict(api.recommend(observed, SynthesisOptions(include_dropped=True)).summary())
    assert summary["dropped flows"] == "9 (3 policy drops allowed, the rest reported only)"


def test_icmp_and_health_traffic_are_not_expressed_and_say_why():
    found, proposal = policies(
        ("shop/web", "shop/api", "ICMPv4", 0), ("remote-node:10.0.0.1", "health:10.0.0.2", "TCP", 4240)
    )
    reasons = set(proposal.findings.not_expressed["reason"])
    assert reasons == {
        "protocol not expressible in NetworkPolicy (only TCP, UDP and SCTP)",
        "server is the Cilium health endpoint",
    }
    assert set(found) == {("shop", "default-deny")}


def test_ambiguous_selectors_are_reported():
    _, proposal = policies(("shop/a:tier=x", "shop/b:tier=x", "TCP", 80))
    assert [(s.workload, s.also_selects) for s in proposal.findings.ambiguous_selectors] == [
        ("a", ("b",)),
        ("b", ("a",)),
    ]


def test_sctp_and_udp_are_explicit_protocols():
    found, _ = policies(("shop/a", "shop/b", "SCTP", 3868), ("shop/a", "shop/b", "UDP", 5000))
    assert found[("shop", "allow-b")]["spec"]["ingress"][0]["ports"] == [
        {"protocol": "SCTP", "port": 3868},
        {"protocol": "UDP", "port": 5000},
    ]


def test_every_rule_has_evidence():
    _, proposal = policies(
        ("shop/web", "shop/api", "TCP", 8080, "FORWARDED", 7), ("shop/api", "world:203.0.113.9", "TCP", 443)
    )
    api = next(plan for plan in proposal.policies if plan.name == "allow-api")
    ingress, egress = api.evidence_for("ingress"), api.evidence_for("egress")
    assert (ingress[0].count, ingress[0].example_client, ingress[0].example_server) == (7, "web-0", "api-0")
    assert egress[0].peers == ("world:203.0.113.9",) and egress[0].ports == ("TCP/443",)
