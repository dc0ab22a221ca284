"""Each orientation rule of DESIGN.md, on real Hubble fixture lines (some with a field removed to
exercise the next rule in line)."""

from __future__ import annotations

import copy

import pytest

from collectors.hubble import read_hubble_files
from collectors.orientation import FORWARD, REPLY, UNDECIDED, port_heuristic
from tests.conftest import fixture_flow, write_lines

TCP = "basic-sample-400-tcp-flows.json"
OLD = "basic-sample-10-flows.json"  # older Cilium: legacy `reply`, no `is_reply`
DNS = "basic-sample-5-dns-flows.json"
ICMP = "basic-sample-400-icmpv4-flows.json"


def read(tmp_path, *flows: dict):
    result = read_hubble_files([str(write_lines(tmp_path / "flows.json", list(flows)))])
    return result


def edges_of(result) -> set[tuple[str, str, str, int]]:
    rows = result.observations
    out = set()
    for row in rows.itertuples():
        client = row.client_workload or f"{row.client_entity}:{row.client_ip}"
        server = row.server_workload or f"{row.server_entity}:{row.server_ip}"
        out.add((client, server, row.protocol, int(row.port)))
    return out


def without(flow: dict, *keys: str) -> dict:
    flow = copy.deepcopy(flow)
    for key in keys:
        flow["flow"].pop(key, None)
    return flow


def test_is_reply_true_swaps_the_reply_back_to_client_to_server(tmp_path):
    synack = fixture_flow(TCP, 24)  # productpage:9080 -> ratings:59736, is_reply: true
    result = read(tmp_path, synack)
    assert edges_of(result) == {("ratings-v1", "productpage-v1", "TCP", 9080)}
    assert result.stats.orientation == {"is_reply": 1}


def test_is_reply_false_keeps_the_packet_direction(tmp_path):
    result = read(tmp_path, fixture_flow(TCP, 23))  # ratings:59736 -> productpage:9080 TO_PROXY
    assert edges_of(result) == {("ratings-v1", "productpage-v1", "TCP", 9080)}


def test_legacy_reply_flag_swaps_when_is_reply_is_absent(tmp_path):
    reply = fixture_flow(OLD, 6)  # world:443 -> event-exporter:36804 with "reply": true only
    assert "is_reply" not in reply["flow"] and reply["flow"]["reply"] is True
    result = read(tmp_path, reply)
    ((client, server, protocol, port),) = edges_of(result)
    assert client.startswith("event-exporter") and server.startswith("world:")
    assert (protocol, port) == ("TCP", 443)
    assert result.stats.orientation == {"reply": 1}


def test_tcp_syn_without_ack_is_the_client(tmp_path):
    syn = fixture_flow(OLD, 8)  # host:50908 -> kube-dns:10054, SYN, no is_reply/reply
    result = read(tmp_path, syn)
    ((client, server, _protocol, port),) = edges_of(result)
    assert client.startswith("host:") and server.startswith("kube-dns") and port == 10054
    assert result.stats.orientation == {"tcp-flags": 1}


def test_tcp_syn_ack_is_the_server(tmp_path):
    synack = without(fixture_flow(TCP, 24), "is_reply", "reply")
    result = read(tmp_path, synack)
    assert edges_of(result) == {("ratings-v1", "productpage-v1", "TCP", 9080)}
    assert result.stats.orientation == {"tcp-flags": 1}


def test_policy_verdict_events_are_the_first_packet(tmp_path):
    verdict = fixture_flow(TCP, 22)  # policy-verdict (type 5) ratings -> productpage:9080
    flow = without(verdict, "is_reply")
    flow["flow"]["l4"]["TCP"].pop("flags")
    result = read(tmp_path, flow)
    assert edges_of(result) == {("ratings-v1", "productpage-v1", "TCP", 9080)}
    assert result.stats.orientation == {"policy-verdict": 1}


def test_l7_response_is_oriented_by_its_record_type(tmp_path):
    response = without(fixture_flow(DNS, 1), "is_reply", "reply")  # kube-dns:53 -> node-local-dns
    assert response["flow"]["l7"]["type"] == "RESPONSE"
    result = read(tmp_path, response)
    assert edges_of(result) == {("node-local-dns", "kube-dns", "TCP", 53)}
    assert result.stats.orientation == {"l7-type": 1}


def test_l7_events_count_as_observations_of_their_l4_connection(tmp_path):
    result = read(tmp_path, *(fixture_flow(DNS, i) for i in range(5)))
    assert edges_of(result) == {("node-local-dns", "kube-dns", "TCP", 53)}
    assert int(result.observations["count"].sum()) == 5


def test_icmp_echo_types_orient_without_is_reply(tmp_path):
    request = fixture_flow(ICMP, 2)  # remote-node -> health, echo request, no is_reply
    reply = fixture_flow(ICMP, 4)  # health -> remote-node, echo reply (type 0 omitted)
    result = read(tmp_path, request, reply)  # two different probes (other node, other health IP)
    edges = edges_of(result)
    assert len(edges) == 2
    for client, server, protocol, _port in edges:
        assert client.startswith("remote-node:") and server.startswith("health:") and protocol == "ICMPv4"
    assert result.stats.orientation == {"icmp-type": 2}


def test_undecided_event_is_correlated_with_its_decided_reply(tmp_path):
    reply = fixture_flow(OLD, 3)  # reviews:15090 -> prometheus:58698, "reply": true
    undecided = fixture_flow(OLD, 2)  # prometheus:58698 -> reviews:15090, nothing to decide from
    result = read(tmp_path, undecided, reply)  # the undecided one comes first: it waits
    assert edges_of(result) == {("prometheus", "reviews-v1", "TCP", 15090)}
    assert result.stats.orientation == {"reply": 1, "correlated": 1}


def test_undecided_reply_uses_a_port_already_seen_as_a_server_port(tmp_path):
    request = fixture_flow(OLD, 2)
    request["flow"]["l4"]["TCP"]["flags"] = {"SYN": True}  # decided: prometheus -> reviews:15090
    other = copy.deepcopy(fixture_flow(OLD, 3))  # reviews:15090 -> prometheus, another connection
    other["flow"].pop("reply")
    other["flow"]["l4"]["TCP"]["destination_port"] = 40000
    other["flow"]["IP"]["destination"] = "10.0.1.99"
    result = read(tmp_path, request, other)
    assert edges_of(result) == {("prometheus", "reviews-v1", "TCP", 15090)}
    assert result.stats.orientation == {"tcp-flags": 1, "known-server-port": 1}


def test_port_heuristic_is_the_last_resort(tmp_path):
    lone = fixture_flow(TCP, 21)  # remote-node:40484 -> health:4240, ACK only, no is_reply
    result = read(tmp_path, lone)
    ((client, server, _protocol, port),) = edges_of(result)
    assert client.startswith("remote-node:") and server.startswith("health:") and port == 4240
    assert result.stats.orientation == {"port-heuristic": 1}


def test_two_ephemeral_ports_stay_unoriented_and_make_no_observation(tmp_path):
    lone = fixture_flow(TCP, 21)
    lone["flow"]["l4"]["TCP"]["destination_port"] = 45000
    result = read(tmp_path, lone)
    assert result.observations.empty
    assert len(result.unoriented) == 1 and result.stats.unoriented == 1


@pytest.mark.parametrize(
    ("sport", "dport", "expected"),
    [(40000, 80, FORWARD), (80, 40000, REPLY), (1024, 53, FORWARD), (40000, 40001, UNDECIDED), (53, 53, UNDECIDED)],
)
def test_port_heuristic_table(sport, dport, expected):
    assert port_heuristic(sport, dport)[0] == expected


def test_one_connection_seen_at_both_ends_is_one_edge(tmp_path):
    egress = fixture_flow(TCP, 22)  # policy verdict at the client's node (EGRESS)
    ingress = fixture_flow(TCP, 23)  # trace towards the server
    reply = fixture_flow(TCP, 24)  # the SYN-ACK coming back
    result = read(tmp_path, egress, ingress, reply)
    assert edges_of(result) == {("ratings-v1", "productpage-v1", "TCP", 9080)}
    from recommender.graph import build_edges

    edges = build_edges(result.observations)
    assert len(edges) == 1 and int(edges["count"].iloc[0]) == 3
    assert edges["verdicts"].iloc[0] == "FORWARDED,REDIRECTED"


def test_no_rule_port_in_the_bookinfo_capture_is_a_client_ephemeral_port(bookinfo_files):
    result = read_hubble_files(bookinfo_files)
    assert set(result.observations["port"]) <= {53, 4240, 4244, 9080, 14250, 14269}
    assert result.stats.unoriented == 0
