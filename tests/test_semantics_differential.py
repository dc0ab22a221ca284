"""The evaluator against a naive per-pod reading of the spec, on random clusters and policies.

The reference below walks the parsed policies for every (client, server, probe) with no
classes, index, compilation or caching, so it checks that those optimisations keep the
semantics. Selector and ipBlock matching are shared (the truth tables cover them).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.semantics import (
    CALICO,
    KUBERNETES,
    ContainerPort,
    Direction,
    Evaluator,
    ExternalPeer,
    Namespace,
    NetworkPolicy,
    Pod,
    Protocol,
    parse_policy,
)
from recommender.semantics.policies import PolicyPeer, PolicyRule

NAMESPACES = ("x", "y")
PROBES = (("TCP", 80), ("TCP", 8080), ("TCP", 53), ("UDP", 53), ("ICMP", None))
EXTERNALS = (ExternalPeer("203.0.113.7"), ExternalPeer("10.0.0.99"))

label_maps = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
selectors = st.one_of(
    st.just({}),
    label_maps.map(lambda labels: {"matchLabels": labels}),
    st.builds(
        lambda key, operator, values: {
            "matchExpressions": [
                {
                    "key": key,
                    "operator": operator,
                    **({"values": values} if operator in ("In", "NotIn") else {}),
                }
            ]
        },
        st.sampled_from(["app", "tier", "team"]),
        st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
        st.lists(st.sampled_from(["a", "b", "red"]), min_size=1, max_size=2, unique=True),
    ),
)
peers = st.one_of(
    selectors.map(lambda s: {"podSelector": s}),
    selectors.map(lambda s: {"namespaceSelector": s}),
    st.tuples(selectors, selectors).map(lambda s: {"namespaceSelector": s[0], "podSelector": s[1]}),
    st.sampled_from(
        [
            {"ipBlock": {"cidr": "10.0.0.0/24"}},
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
            {"ipBlock": {"cidr": "203.0.113.0/24"}},
        ]
    ),
)
port_lists = st.lists(
    st.sampled_from(
        [
            {"port": 80},
            {"protocol": "UDP"},
            {"port": "http"},
            {"protocol": "UDP", "port": "dns"},
            {"port": 50, "endPort": 90},
            {"protocol": "SCTP", "port": 80},
        ]
    ),
    max_size=2,
)


@st.composite
def rules(draw: st.DrawFn, peers_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule[peers_key] = draw(st.lists(peers, max_size=2))
    if draw(st.booleans()):
        rule["ports"] = draw(port_lists)
    return rule


@st.composite
def manifests(draw: st.DrawFn, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": draw(selectors)}
    types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = draw(st.lists(rules(peers_key), max_size=2))
    return {
        "metadata": {"name": f"p{index}", "namespace": draw(st.sampled_from(NAMESPACES))},
        "spec": spec,
    }


@st.composite
def pods(draw: st.DrawFn, index: int) -> Pod:
    host_network = draw(st.booleans()) and draw(st.booleans())
    named = draw(
        st.lists(
            st.sampled_from(
                [
                    ContainerPort(80, "http"),
                    ContainerPort(8080, "http"),
                    ContainerPort(53, "dns", "UDP"),
                ]
            ),
            max_size=2,
            unique_by=lambda p: (p.name, p.protocol),
        )
    )
    return Pod(
        draw(st.sampled_from(NAMESPACES)),
        f"pod{index}",
        draw(label_maps),
        tuple(named),
        ip=f"192.168.0.{index}" if host_network else f"10.0.0.{index}",
        host_network=host_network,
    )


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Namespace], list[Pod], bool]:
    policies = [draw(manifests(i)) for i in range(draw(st.integers(1, 4)))]
    namespaces = [Namespace(name, draw(st.sampled_from([{}, {"team": "red"}]))) for name in NAMESPACES]
    cluster_pods = [draw(pods(i)) for i in range(draw(st.integers(2, 5)))]
    return policies, namespaces, cluster_pods, draw(st.booleans())


class Reference:
    """The spec read literally: for each side, scan every policy and every rule."""

    def __init__(self, policies: list[NetworkPolicy], namespaces: list[Namespace], ip_matches_pods: bool):
        self.policies = policies
        self.namespace_labels = {ns.name: ns.labels for ns in namespaces}
        self.ip_matches_pods = ip_matches_pods

    def allows(
        self,
        client: Pod | ExternalPeer,
        server: Pod | ExternalPeer,
        protocol: str,
        port: int | None,
    ) -> bool:
        client, server = self._as_endpoint(client), self._as_endpoint(server)
        return self._side(client, client, server, Direction.EGRESS, protocol, port) and self._side(
            server, client, server, Direction.INGRESS, protocol, port
        )

    @staticmethod
    def _as_endpoint(endpoint: Pod | ExternalPeer) -> Pod | ExternalPeer:
        if isinstance(endpoint, Pod) and endpoint.host_network:
            return ExternalPeer(endpoint.ip)
        return endpoint

    def _side(self, subject, client, server, direction: Direction, protocol: str, port: int | None) -> bool:
        if not isinstance(subject, Pod):
            return True
        other = server if direction is Direction.EGRESS else client
        selecting = [
            p
            for p in self.policies
            if p.namespace == subject.namespace
            and p.pod_selector.matches(subject.labels)
            and direction in p.policy_types
        ]
        return not selecting or any(
            self._rule_allows(p, rule, other, server, protocol, port) for p in selecting for rule in p.rules(direction)
        )

    def _rule_allows(self, policy, rule: PolicyRule, other, server, protocol: str, port: int | None) -> bool:
        peer_ok = not rule.peers or any(self._peer_matches(policy, peer, other) for peer in rule.peers)
        return peer_ok and (not rule.ports or any(self._port_matches(p, server, protocol, port) for p in rule.ports))

    def _peer_matches(self, policy: NetworkPolicy, peer: PolicyPeer, endpoint) -> bool:
        if peer.ip_block is not None:
            if isinstance(endpoint, ExternalPeer):
                return peer.ip_block.contains(endpoint.ip)
            return self.ip_matches_pods and peer.ip_block.contains(ExternalPeer(endpoint.ip).ip)
        if not isinstance(endpoint, Pod):
            return False
        if peer.namespace_selector is None:
            namespace_ok = endpoint.namespace == policy.namespace
        else:
            labels = self.namespace_labels.get(endpoint.namespace) or Namespace(endpoint.namespace).labels
            namespace_ok = peer.namespace_selector.matches(labels)
        return namespace_ok and (peer.pod_selector is None or peer.pod_selector.matches(endpoint.labels))

    @staticmethod
    def _port_matches(policy_port, server, protocol: str, port: int | None) -> bool:
        if protocol != policy_port.protocol:
            return False
        if policy_port.port is None:
            return True
        if isinstance(policy_port.port, int):
            return policy_port.port <= port <= (policy_port.end_port or policy_port.port)
        return isinstance(server, Pod) and any(
            cp.name == policy_port.port and cp.protocol == Protocol(protocol) and cp.port == port for cp in server.ports
        )


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_the_evaluator_agrees_with_a_naive_reading_of_the_spec(cluster) -> None:
    raw_policies, namespaces, cluster_pods, ip_matches_pods = cluster
    evaluator = Evaluator(raw_policies, namespaces, cluster_pods, profile=CALICO if ip_matches_pods else KUBERNETES)
    reference = Reference([parse_policy(p) for p in raw_policies], namespaces, ip_matches_pods)

    endpoints = [*cluster_pods, *EXTERNALS]
    for client in endpoints:
        for server in endpoints:
            if client is server:
                continue
            for protocol, port in PROBES:
                expected = reference.allows(client, server, protocol, port)
                decision = evaluator.evaluate(client, server, protocol, port)
                assert decision.allowed == expected, str(decision)
