"""The capture generator: deterministic, and its traffic comes back exactly as the proposal's edges."""

from __future__ import annotations

import gzip

from benchmarks.generate import flow_lines, scale_topology, shop_topology, write_capture
from recommender import api
from tests.conftest import REPO


def expected_edges(topology) -> set[tuple[str, str, str, int]]:
    return {
        (c.client, c.server, c.protocol, c.port) for c in topology.connections if c.client != "host" and not c.dropped
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


def test_generated_cluster_traffic_is_recommended_exactly(tmp_path):
    topology = scale_topology(60, edges_per_workload=3, namespaces=4)
    path = tmp_path / "cluster.json.gz"
    write_capture(str(path), topology, 60000)
    result = api.recommend(api.load_observations([str(path)]), api.SynthesisOptions(exclude_namespaces=()))
    assert proposal_edges(result) == expected_edges(topology)
    assert sum(1 for plan in result.proposal.policies if plan.workload) == 61
