"""Excess as ConnectionSets: allowed minus observed per (client, server) pair, reported as port ranges."""

from __future__ import annotations

from recommender import api
from recommender.excess import Excess, ExcessRange
from recommender.semantics import ConnectionSet, Protocol
from tests.conftest import REPO

EVERY_PORT = str(REPO / "tests" / "data" / "policies" / "bookinfo-every-port.yaml")
TCP = Protocol.TCP


def tcp(first: int, last: int | None = None) -> ConnectionSet:
    return ConnectionSet.ports(TCP, first, last)


def test_an_excess_keeps_only_non_empty_pairs_sorted_and_counts_ports():
    found = Excess.of({("b", "c"): tcp(53), ("a", "b"): tcp(1, 10) | tcp(20), ("a", "c"): ConnectionSet.none()})
    assert [(item.client, item.server) for item in found.pairs] == [("a", "b"), ("b", "c")]
    assert [str(item) for item in found.ranges()] == ["a -> b TCP/1-10", "a -> b TCP/20", "b -> c TCP/53"]
    assert len(found) == 12
    assert list(Excess.of({("a", "b"): tcp(7, 8)}).connections()) == [("a", "b", "TCP", 7), ("a", "b", "TCP", 8)]
    assert not Excess() and len(Excess()) == 0


def test_an_excess_minus_another_and_within_a_scope_work_pair_by_pair():
    found = Excess.of({("a", "b"): tcp(1, 100), ("a", "c"): tcp(53)})
    assert found - Excess.of({("a", "b"): tcp(50, 100), ("x", "y"): tcp(1)}) == Excess.of(
        {("a", "b"): tcp(1, 49), ("a", "c"): tcp(53)}
    )
    within = found.within(lambda client, server: tcp(53) if server == "c" else tcp(100, 200))
    assert within.ranges() == (ExcessRange("a", "b", TCP, 100, 100), ExcessRange("a", "c", TCP, 53, 53))


def test_a_policy_opening_every_port_on_bookinfo_has_its_excess_in_ranges(bookinfo_files):
    observed = api.load_observations(bookinfo_files)
    drift = api.diff(api.load_policies(EVERY_PORT), observed)
    found = drift.unobserved()
    workloads = sorted({key for key in drift.replayed.connections["server"] if key.startswith("bookinfo/")})
    assert len(workloads) == 6
    assert [(item.client, item.server) for item in found.pairs] == [(a, b) for a in workloads for b in workloads]
    seen = drift.replayed.connections
    inside = seen[seen["client"].str.startswith("bookinfo/") & seen["server"].str.startswith("bookinfo/")]
    assert set(inside["port"]) == {9080} and len(inside) == 7
    assert len(found) == 36 * 65535 - len(inside)  # every port of every pair but the ones observed
    pairs = found.by_pair()
    assert pairs["bookinfo/productpage-v1", "bookinfo/details-v1"] == tcp(1, 9079) | tcp(9081, 65535)
    assert pairs["bookinfo/details-v1", "bookinfo/productpage-v1"] == tcp(1, 65535)
    assert str(found.ranges()[6]) == "bookinfo/productpage-v1 -> bookinfo/details-v1 TCP/1-9079"
