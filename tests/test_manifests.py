"""The NetworkPolicy renderer: the manifest written means exactly the semantics object verification evaluated."""

from __future__ import annotations

import ipaddress

from recommender import api
from recommender.manifests import MANAGED_BY, network_policy_manifest
from recommender.semantics import Direction, Labels, LabelSelector, NetworkPolicy, Protocol, parse_policy
from recommender.semantics.policies import IPBlock, PolicyPeer, PolicyPort, PolicyRule
from recommender.semantics.selectors import Operator, Requirement

NETWORK, HOLE = ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16")


def test_every_networkpolicy_of_a_recommendation_parses_back_to_the_object_it_was_rendered_from(bookinfo_files):
    result = api.recommend(api.load_observations(bookinfo_files))
    plans = [plan for plan in result.proposal.policies if isinstance(plan.policy, NetworkPolicy)]
    assert len(plans) == len(result.proposal.policies) > 3
    for plan in plans:
        assert parse_policy(plan.manifest) == plan.policy, plan.name


def test_every_field_the_renderer_knows_round_trips():
    web = LabelSelector(Labels({"app": "web", "tier": "front"}))
    policy = NetworkPolicy(
        "shop",
        "allow-db",
        LabelSelector(expressions=(Requirement("app", Operator.NOT_IN, frozenset({"b", "a"})),)),
        frozenset({Direction.EGRESS, Direction.INGRESS}),
        ingress=(
            PolicyRule(
                (PolicyPeer(pod_selector=web), PolicyPeer(namespace_selector=LabelSelector())),
                (PolicyPort(Protocol.TCP, 8000, 8100), PolicyPort(Protocol.UDP, "dns")),
            ),
        ),
        egress=(
            PolicyRule(
                (
                    PolicyPeer(
                        ip_block=IPBlock(ipaddress.ip_network("10.0.0.0/8"), (ipaddress.ip_network("10.1.0.0/16"),))
                    ),
                )
            ),
            PolicyRule(ports=(PolicyPort(Protocol.SCTP),)),
        ),
    )
    manifest = network_policy_manifest(policy, {"note": "x"})
    assert parse_policy(manifest) == policy
    assert manifest["metadata"] == {
        "name": "allow-db",
        "namespace": "shop",
        "labels": MANAGED_BY,
        "annotations": {"note": "x"},
    }
    spec = manifest["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a", "b"]}]}
    assert spec["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8000, "endPort": 8100},
        {"protocol": "UDP", "port": "dns"},
    ]
    assert spec["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
        {"ports": [{"protocol": "SCTP"}]},
    ]
