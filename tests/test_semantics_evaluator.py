"""The evaluator's API: the seed scenario, explanations, pod classes and caching."""

from __future__ import annotations

from typing import Any

import pytest

from recommender.semantics import (
    ConnectionSet,
    ContainerPort,
    Entity,
    Evaluator,
    ExternalPeer,
    Isolation,
    Namespace,
    Pod,
    PodClass,
    Protocol,
    explain_targets,
)

NS = "mynamespace"
FRONTEND = Pod(NS, "frontend-7d9f", {"role": "frontend"}, ip="10.0.0.2")
MYAPP = Pod(NS, "myapp-5c4b", {"app": "myapp"}, (ContainerPort(8080, "http"),), ip="10.0.0.3")


def policy(name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def default_deny() -> dict[str, Any]:
    """Recipe: deny all ingress and egress in the namespace."""
    return policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def allow_frontend_to_myapp() -> dict[str, Any]:
    """Recipe: pods `app: myapp` accept ingress from pods `role: frontend`."""
    return policy(
        "allow-frontend",
        {
            "podSelector": {"matchLabels": {"app": "myapp"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}],
        },
    )


def allow_egress_from_frontend_to_myapp(
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"to": [{"podSelector": {"matchLabels": {"app": "myapp"}}}]}
    if ports is not None:
        rule["ports"] = ports
    return policy(
        "frontend-egress",
        {
            "podSelector": {"matchLabels": {"role": "frontend"}},
            "policyTypes": ["Egress"],
            "egress": [rule],
        },
    )


def seed_evaluator(*extra: dict[str, Any]) -> Evaluator:
    return Evaluator([default_deny(), allow_frontend_to_myapp(), *extra], [Namespace(NS)], [FRONTEND, MYAPP])


def test_seed_frontend_to_myapp_is_denied_by_the_frontends_egress_isolation() -> None:
    decision = seed_evaluator().evaluate(FRONTEND, MYAPP, "TCP", 8080)

    assert not decision.allowed
    assert decision.egress.isolation is Isolation.ISOLATED and not decision.egress.allowed
    assert decision.egress.policies == ("mynamespace/default-deny",)
    assert decision.egress.allowed_by == ()
    assert decision.ingress.allowed
    assert [str(rule) for rule in decision.ingress.allowed_by] == ["mynamespace/allow-frontend ingress[0]"]
    assert str(decision.egress) == (
        "egress DENIED: mynamespace/frontend-7d9f is egress-isolated by [mynamespace/default-deny];"
        " no egress rule of [mynamespace/default-deny] matches TCP/8080"
    )
    assert str(decision).startswith("DENIED mynamespace/frontend-7d9f -> mynamespace/myapp-5c4b TCP/8080: ")


def test_seed_adding_an_egress_policy_for_the_frontend_allows_it() -> None:
    evaluator = seed_evaluator(allow_egress_from_frontend_to_myapp())

    decision = evaluator.evaluate(FRONTEND, MYAPP, "TCP", 8080)

    assert decision.allowed
    assert [str(rule) for rule in decision.egress.allowed_by] == ["mynamespace/frontend-egress egress[0]"]
    assert evaluator.allowed_connections(FRONTEND, MYAPP).is_all
    assert not evaluator.evaluate(MYAPP, FRONTEND, "TCP", 8080).allowed


def test_a_denial_names_rules_whose_peer_matched_but_not_the_port() -> None:
    evaluator = seed_evaluator(allow_egress_from_frontend_to_myapp([{"port": "http"}]))

    decision = evaluator.evaluate(FRONTEND, MYAPP, "TCP", 9090)

    assert not decision.allowed
    assert [str(grant) for grant in decision.egress.near_misses] == [
        "mynamespace/frontend-egress egress[0] allows TCP 8080"
    ]
    assert "(peer matched: mynamespace/frontend-egress egress[0] allows TCP 8080)" in str(decision)


def test_allowed_connections_intersect_both_sides_and_attribute_each_part() -> None:
    evaluator = seed_evaluator(
        allow_egress_from_frontend_to_myapp([{"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}])
    )

    pair = evaluator.pair(FRONTEND, MYAPP)

    assert pair.connections == ConnectionSet.ports(Protocol.TCP, 8080) | ConnectionSet.ports(Protocol.UDP, 5000, 5010)
    assert str(pair.connections) == "TCP 8080; UDP 5000-5010"
    assert [str(part) for part in pair.attribution()] == [
        "TCP 8080; UDP 5000-5010: egress mynamespace/frontend-egress egress[0]"
        " | ingress mynamespace/allow-frontend ingress[0]"
    ]


def test_attribution_splits_connections_allowed_by_different_rules() -> None:
    server = Pod("x", "db", {"app": "db"})
    client = Pod("x", "api", {"app": "api"})
    db_policy = policy(
        "db",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {"ports": [{"port": 5432}, {"port": 9187}]},
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                    "ports": [{"port": 5432}],
                },
            ],
        },
        namespace="x",
    )
    evaluator = Evaluator([db_policy], pods=[server, client])

    parts = [str(part) for part in evaluator.pair(client, server).attribution()]

    assert parts == [
        "TCP 5432: egress not isolated | ingress x/db ingress[0], x/db ingress[1]",
        "TCP 9187: egress not isolated | ingress x/db ingress[0]",
    ]


def test_pods_with_the_same_namespace_labels_and_named_ports_share_a_class() -> None:
    replicas = [Pod(NS, f"myapp-{i}", {"app": "myapp"}, (ContainerPort(8080, "http"),)) for i in range(3)]
    unnamed_port = Pod(NS, "myapp-x", {"app": "myapp"}, (ContainerPort(8080, "http"), ContainerPort(9000)))
    other_named_port = Pod(NS, "myapp-y", {"app": "myapp"}, (ContainerPort(8081, "http"),))

    evaluator = Evaluator([], [Namespace(NS)], [*replicas, unnamed_port, other_named_port])

    classes = evaluator.classes()
    assert len(classes) == 2
    assert evaluator.class_of(unnamed_port) == evaluator.class_of(replicas[0])
    assert [pod.name for pod in evaluator.pods_of(evaluator.class_of(replicas[0]))] == [
        "myapp-0",
        "myapp-1",
        "myapp-2",
        "myapp-x",
    ]
    assert str(classes[0]) == "mynamespace[app=myapp]"


def test_pod_classes_can_be_queried_directly_and_match_their_pods() -> None:
    evaluator = seed_evaluator(allow_egress_from_frontend_to_myapp())
    by_pod = evaluator.allowed_connections(FRONTEND, MYAPP)

    by_class = evaluator.allowed_connections(evaluator.class_of(FRONTEND), evaluator.class_of(MYAPP))

    assert by_class == by_pod


def test_a_pod_unknown_to_the_evaluator_is_evaluated_after_selections_were_cached() -> None:
    evaluator = seed_evaluator()
    assert not evaluator.evaluate(MYAPP, FRONTEND, "TCP", 80).allowed  # caches rule selections
    late_frontend = Pod(NS, "frontend-late", {"role": "frontend", "version": "2"})

    decision = evaluator.evaluate(late_frontend, MYAPP, "TCP", 8080)

    assert decision.ingress.allowed  # allow-frontend's peer selector matches the new class
    assert not decision.egress.allowed


def test_a_host_network_pod_is_evaluated_as_its_node_ip() -> None:
    host_pod = Pod(NS, "node-exporter", {"role": "frontend"}, ip="192.168.0.10", host_network=True)
    evaluator = seed_evaluator()

    assert evaluator.class_of(host_pod) == ExternalPeer("192.168.0.10", Entity.REMOTE_NODE)
    assert not evaluator.evaluate(host_pod, MYAPP, "TCP", 8080).allowed  # not a frontend pod
    assert evaluator.evaluate(MYAPP, host_pod, "TCP", 8080).ingress.allowed  # never isolated


def test_a_host_network_pod_without_an_ip_cannot_be_evaluated() -> None:
    with pytest.raises(ValueError, match="hostNetwork pod mynamespace/h has no IP"):
        seed_evaluator().class_of(Pod(NS, "h", host_network=True))


def test_a_port_protocol_query_needs_a_port_but_icmp_does_not() -> None:
    evaluator = seed_evaluator(allow_egress_from_frontend_to_myapp())
    with pytest.raises(ValueError, match="TCP traffic needs a port in 1-65535, got None"):
        evaluator.evaluate(FRONTEND, MYAPP, "TCP")
    with pytest.raises(ValueError, match="UDP traffic needs a port in 1-65535, got 0"):
        evaluator.evaluate(FRONTEND, MYAPP, "UDP", 0)
    assert str(evaluator.evaluate(FRONTEND, MYAPP, "icmp")).startswith("ALLOWED")


def test_kubernetes_client_to_dict_policies_mean_the_same_as_yaml() -> None:
    snake = {
        "api_version": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-frontend", "namespace": NS, "labels": None},
        "spec": {
            "pod_selector": {"match_labels": {"app": "myapp"}, "match_expressions": None},
            "policy_types": ["Ingress"],
            "ingress": [
                {
                    "_from": [
                        {
                            "pod_selector": {
                                "match_labels": {"role": "frontend"},
                                "match_expressions": None,
                            },
                            "namespace_selector": None,
                            "ip_block": None,
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": "http", "end_port": None}],
                }
            ],
            "egress": None,
        },
        "status": None,
    }
    evaluator = Evaluator([snake], [Namespace(NS)], [FRONTEND, MYAPP])

    assert str(evaluator.allowed_connections(FRONTEND, MYAPP)) == "TCP 8080"
    assert str(evaluator.allowed_connections(MYAPP, FRONTEND)) == "all"


def test_a_policy_without_a_namespace_takes_the_default_namespace() -> None:
    manifest = allow_frontend_to_myapp()
    del manifest["metadata"]["namespace"]

    evaluator = Evaluator([manifest], pods=[FRONTEND, MYAPP], default_namespace=NS)

    assert evaluator.targets[0].policies == ("mynamespace/allow-frontend",)
    assert not evaluator.evaluate(Pod("elsewhere", "x"), MYAPP, "TCP", 80).allowed


def test_targets_merge_policies_with_the_same_subject() -> None:
    twin = allow_frontend_to_myapp()
    twin["metadata"]["name"] = "allow-frontend-twin"

    evaluator = Evaluator([allow_frontend_to_myapp(), twin, default_deny()])

    summary = [(t.direction.value, str(t.subject), t.policies, len(t.rules)) for t in evaluator.targets]
    assert summary == [
        ("Egress", "{}", ("mynamespace/default-deny",), 0),
        (
            "Ingress",
            "app=myapp",
            ("mynamespace/allow-frontend", "mynamespace/allow-frontend-twin"),
            2,
        ),
        ("Ingress", "{}", ("mynamespace/default-deny",), 0),
    ]


def test_an_external_peer_is_never_isolated_and_only_ip_blocks_match_it() -> None:
    world = ExternalPeer("203.0.113.7")
    egress_to_world = policy(
        "to-world",
        {
            "podSelector": {"matchLabels": {"app": "myapp"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}],
        },
    )
    evaluator = seed_evaluator(egress_to_world)

    assert str(evaluator.allowed_connections(MYAPP, world)) == "TCP 443"
    assert str(evaluator.allowed_connections(world, FRONTEND)) == "none"
    assert evaluator.allowed_connections(world, ExternalPeer("198.51.100.1")).is_all
    assert "203.0.113.7 is not a pod" in str(evaluator.evaluate(world, MYAPP, "TCP", 8080).egress)


def test_pod_class_labels_always_carry_the_namespace_name_label() -> None:
    pods = PodClass("x", {}, {"app": "a"})
    assert dict(pods.namespace_labels) == {"kubernetes.io/metadata.name": "x"}
    with pytest.raises(ValueError, match="must equal its name"):
        Namespace("x", {"kubernetes.io/metadata.name": "y"})


def test_the_compiled_model_is_explained_one_rule_per_row() -> None:
    world = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}
    egress = allow_egress_from_frontend_to_myapp([{"port": "http"}, {"protocol": "UDP", "port": 53, "endPort": 54}])
    egress["spec"]["egress"].append({"to": [world]})
    evaluator = seed_evaluator(egress)

    rows = [str(row) for row in explain_targets(evaluator.targets)]

    assert rows == [
        "Egress mynamespace[role=frontend] mynamespace/frontend-egress egress[0]:"
        " pods [app=myapp] in namespaces [kubernetes.io/metadata.name=mynamespace] on TCP/http, UDP/53-54",
        "Egress mynamespace[role=frontend] mynamespace/frontend-egress egress[1]:"
        " ipBlock 0.0.0.0/0 except 10.0.0.0/8 on all ports",
        "Egress mynamespace[{}] [mynamespace/default-deny]: no peer on no port",
        "Ingress mynamespace[app=myapp] mynamespace/allow-frontend ingress[0]:"
        " pods [role=frontend] in namespaces [kubernetes.io/metadata.name=mynamespace] on all ports",
        "Ingress mynamespace[{}] [mynamespace/default-deny]: no peer on no port",
    ]
