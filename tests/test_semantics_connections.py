"""The connection-set algebra, by example and against brute-force sets of (protocol, port)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.semantics import ConnectionSet, PortSet, Protocol
from recommender.semantics.connections import MAX_PORT

TCP, UDP, SCTP = Protocol.TCP, Protocol.UDP, Protocol.SCTP


def test_port_sets_merge_overlapping_and_adjacent_intervals() -> None:
    ports = PortSet(((90, 100), (80, 85), (86, 89), (200, 200), (95, 120)))
    assert ports.intervals == ((80, 120), (200, 200))
    assert str(ports) == "80-120,200"
    assert 80 in ports and 120 in ports and 200 in ports
    assert 79 not in ports and 121 not in ports and 199 not in ports


def test_a_port_set_rejects_ports_outside_the_valid_range() -> None:
    with pytest.raises(ValueError, match="bad port interval 0-10"):
        PortSet(((0, 10),))
    with pytest.raises(ValueError, match="bad port interval 10-5"):
        PortSet.range(10, 5)


def test_the_complement_of_a_port_set_covers_the_rest_of_1_to_65535() -> None:
    assert PortSet.range(1, 21).complement() == PortSet.range(22, MAX_PORT)
    assert PortSet().complement() == PortSet.full()
    assert PortSet(((1, 9), (11, MAX_PORT))).complement() == PortSet.range(10)


def test_all_includes_icmp_but_a_port_set_does_not() -> None:
    assert ConnectionSet.all().contains("ICMP")
    assert not ConnectionSet.ports(TCP).contains("ICMP")
    assert ConnectionSet.other_protocols().contains("GRE")


def test_a_port_of_one_protocol_is_not_the_same_port_of_another() -> None:
    http = ConnectionSet.ports(TCP, 80)
    assert http.contains("TCP", 80) and http.contains("tcp", 80)
    assert not http.contains("UDP", 80)
    assert not http.contains("TCP", 81)


def test_everything_but_ssh_is_a_value_and_prints_canonically() -> None:
    all_but_ssh = ConnectionSet.all() - ConnectionSet.ports(TCP, 22)

    assert not all_but_ssh.is_all
    assert all_but_ssh.contains("ICMP") and all_but_ssh.contains("TCP", 23)
    assert not all_but_ssh.contains("TCP", 22)
    assert str(all_but_ssh) == "SCTP 1-65535; TCP 1-21,23-65535; UDP 1-65535; other protocols"
    assert all_but_ssh | ConnectionSet.ports(TCP, 22) == ConnectionSet.all()


def test_strings_are_sorted_and_name_the_empty_and_full_sets() -> None:
    mixed = ConnectionSet.ports(UDP, 53) | ConnectionSet.ports(TCP, 443) | ConnectionSet.ports(TCP, 80)
    assert str(mixed) == "TCP 80,443; UDP 53"
    assert str(ConnectionSet.none()) == "none"
    assert str(ConnectionSet.all()) == "all"
    assert str(ConnectionSet.ports(SCTP)) == "SCTP 1-65535"


def test_a_protocol_may_appear_once_in_a_connection_set() -> None:
    with pytest.raises(ValueError, match="a protocol appears twice"):
        ConnectionSet(((TCP, PortSet.range(80)), (TCP, PortSet.range(443))))


def test_subset_and_equality_ignore_how_a_set_was_built() -> None:
    built_in_pieces = ConnectionSet.ports(TCP, 80, 89) | ConnectionSet.ports(TCP, 90, 100)
    assert built_in_pieces == ConnectionSet.ports(TCP, 80, 100)
    assert ConnectionSet.ports(TCP, 85).issubset(built_in_pieces)
    assert not built_in_pieces <= ConnectionSet.ports(TCP, 85)
    assert ConnectionSet.none() <= ConnectionSet.none()
    assert not ConnectionSet.none()


# Brute force: a set is expanded to the (protocol, port) points it contains, over a universe
# that cuts the port line where any generated interval starts or ends. Membership is constant
# between cuts, so comparing on the cuts compares the whole sets.
SMALL = 40
UNIVERSE = [(p, port) for p in Protocol for port in (*range(1, SMALL + 2), MAX_PORT)] + [("other", 0)]

intervals = st.tuples(st.integers(1, SMALL), st.integers(0, 6)).map(lambda t: (t[0], min(SMALL, t[0] + t[1])))
connection_sets = st.builds(
    lambda pieces, full, other: ConnectionSet.union_all(
        [ConnectionSet.ports(p, first, last) for p, (first, last) in pieces]
        + [ConnectionSet.ports(p) for p in full]
        + [ConnectionSet.other_protocols() if other else ConnectionSet.none()]
    ),
    st.lists(st.tuples(st.sampled_from(list(Protocol)), intervals), max_size=6),
    st.sets(st.sampled_from(list(Protocol)), max_size=1),
    st.booleans(),
)


def expand(connections: ConnectionSet) -> set[tuple[str, int]]:
    return {
        (protocol, port)
        for protocol, port in UNIVERSE
        if (connections.non_port_protocols if protocol == "other" else connections.contains(protocol, port))
    }


@settings(deadline=None)
@given(connection_sets, connection_sets)
def test_union_intersection_and_difference_match_brute_force_sets(a: ConnectionSet, b: ConnectionSet) -> None:
    assert expand(a | b) == expand(a) | expand(b)
    assert expand(a & b) == expand(a) & expand(b)
    assert expand(a - b) == expand(a) - expand(b)
    assert (a <= b) == (expand(a) <= expand(b))


@settings(deadline=None)
@given(connection_sets, connection_sets)
def test_equal_contents_mean_equal_values_and_strings(a: ConnectionSet, b: ConnectionSet) -> None:
    assert (a == b) == (expand(a) == expand(b))
    assert (str(a) == str(b)) == (a == b)
    assert a | b == b | a and a & b == b & a


@settings(deadline=None)
@given(connection_sets, connection_sets, connection_sets)
def test_set_algebra_laws_hold(a: ConnectionSet, b: ConnectionSet, c: ConnectionSet) -> None:
    assert (a - b) & b == ConnectionSet.none()
    assert (a - b) | (a & b) == a
    assert a & (b | c) == (a & b) | (a & c)
    assert ConnectionSet.all() - (ConnectionSet.all() - a) == a
    assert (a | ConnectionSet.all()).is_all
