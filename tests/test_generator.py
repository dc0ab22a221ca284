"""The capture generator: deterministic, and its traffic comes back exactly as the proposal's edges."""

from __future__ import annotations

import gzip

from benchmarks.generate import flow_lines, scale_topology, shop_topology, write_capture
from recommender import api
from tests.conftest import REPO

ENTITIES = ("host", "remote-node", "kube-apiserver", "ingress")


def expected_edges(topology) -> set[tuple[str, str, str, int]]:
    """The connections that get rules on Cilium with NetworkPolicies: no probes, drops or entities."""
    return {
        (c.client, c.server, c.protocol, c.port)
        for c in topology.connections
        if c.client not in ENTITIES and c.server not in ENTITIES and not c.dropped
    }


def entity_edges(topology) -> set[tuple[str, str, str, int]]:
    """The connections to and from entities other than probes: NetworkPolicy cannot express them on Cilium."""
    return {
        (c.client, c.server, c.protocol, c.port)
        for c in topology.connections
        if (c.client in ENTITIES or c.server in ENTITIES) and c.client != "host"
    }


def proposal_edges(result) -> set[tuple[str, str, str, int]]:
    edges = result.proposal.edges
    return set(zip(edges["client"], edges["server"], edges["protocol"], edges["port"].astype(int), strict=True))


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert list(flow_lines(shop_topology(), 500, seed=3)) == list(flow_lines(shop_topology(), 500, seed=3))
    assert list(flow_lines(shop_topology(), 500, seed=3)) != list(flow_lines(shop_topology(), 500, seed=4))


def test_the_shipped_example_is_the_generator_output():
    with gzip.open(REPO / "examples" / "shop-capture.json.gz", "rt") as capture:
        assert capture.read().splitlines() == list(flow_lines(shop_topology(), 6000, seed=1))


def test_generated_shop_traffic_is_recommended_exactly(tmp_path):
    path = tmp_path / "shop.json"
    write_capture(str(path), shop_topology(), 20000)
    result = api.recommend(api.load_observations([str(path)]), api.SynthesisOptions(exclude_namespaces=()))
    assert proposal_edges(result) == expected_edges(shop_topology())
    assert result.observed.stats.unoriented == 0
    assert set(result.proposal.findings.host_ingress["server"]) == {"shop/frontend", "shop/checkout"}
    assert set(result.proposal.findings.dropped["server"]) == {"payments/payments"}
    unexpressible = result.proposal.findings.unexpressible
    assert {
        (e.client.split(":")[0], e.server.split(":")[0], e.protocol, e.port) for e in unexpressible
    } == entity_edges(shop_topology())


def test_generated_cluster_traffic_is_recommended_exactly(tmp_path):
    topology = scale_topology(60, edges_per_workload=3, namespaces=4)
    path = tmp_path / "cluster.json.gz"
    write_capture(str(path), topology, 60000)
    result = api.recommend(api.load_observations([str(path)]), api.SynthesisOptions(exclude_namespaces=()))
    assert proposal_edges(result) == expected_edges(topology)
    assert sum(1 for plan in result.proposal.policies if plan.workload) == 61
