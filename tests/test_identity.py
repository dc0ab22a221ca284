"""Identity from all the evidence: a pod is never `world`, and the proof catches it when one is."""

from __future__ import annotations

import json

import pytest

from collectors import hubble_identity
from collectors.inventory import Inventory, Namespace, Node, Owner, Pod
from collectors.records import POD, WORLD, Endpoint
from recommender import api
from recommender.errors import ReplayError
from recommender.findings import FindingKind
from tests.conftest import fixture_lines, write_lines

PRODUCTPAGE = {
    "ID": 881,
    "identity": 3418,
    "namespace": "bookinfo",
    "labels": ["k8s:app=productpage", "k8s:io.kubernetes.pod.namespace=bookinfo", "k8s:version=v1"],
    "pod_name": "productpage-v1-6b746f74dc-9rcxx",
}
DETAILS_AS_WORLD = {
    "identity": 2,
    "namespace": "bookinfo",
    "labels": ["reserved:world"],
    "pod_name": "details-v1-79f774bdb9-m4j4k",
}


def _flow(second: int, source: dict, destination: dict, src_ip: str, dst_ip: str, ports: tuple, reply: bool) -> dict:
    return {
        "flow": {
            "time": f"2021-11-10T10:40:{second:02d}Z",
            "verdict": "FORWARDED",
            "IP": {"source": src_ip, "destination": dst_ip, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": ports[0], "destination_port": ports[1]}},
            "source": source,
            "destination": destination,
            "Type": "L7",
            "event_type": {"type": 129},
            "is_reply": reply,
        }
    }


def world_labelled_capture(tmp_path) -> str:
    """productpage calls details, which is only ever seen as `reserved:world` with its pod name."""
    lines = []
    for second in range(3):
        port = 50000 + second
        lines.append(_flow(second, PRODUCTPAGE, DETAILS_AS_WORLD, "10.244.0.177", "10.244.1.193", (port, 9080), False))
        lines.append(_flow(second, DETAILS_AS_WORLD, PRODUCTPAGE, "10.244.1.193", "10.244.0.177", (9080, port), True))
    return str(write_lines(tmp_path / "capture.json", lines))


def _reserved_first(endpoint) -> Endpoint:
    """`classify` as it was: reserved labels trusted before the record's pod name."""
    if any(label.startswith("reserved:") for label in endpoint.labels):
        return Endpoint(WORLD, cluster=endpoint.cluster_name)
    return _CLASSIFY(endpoint)


_CLASSIFY = hubble_identity.classify


def _ip_blocks(result) -> list[str]:
    return [
        peer["ipBlock"]["cidr"]
        for plan in result.proposal.policies
        for direction, key in (("ingress", "from"), ("egress", "to"))
        for rule in plan.manifest["spec"].get(direction, [])
        for peer in rule[key]
        if "ipBlock" in peer
    ]


def test_a_pod_seen_only_as_world_from_its_clients_gets_its_ingress_rule(tmp_path):
    observed = api.load_observations([world_labelled_capture(tmp_path)])
    unlabelled = api.recommend(observed)  # a pod without labels: no stable selector, so no rule by default
    no_selector = [item.subject for item in unlabelled.findings() if item.kind == FindingKind.NO_STABLE_SELECTOR]
    assert no_selector == ["bookinfo/details-v1"] and _ip_blocks(unlabelled) == []
    result = api.recommend(observed, api.SynthesisOptions(allow_empty_selector=True))
    details = next(plan for plan in result.proposal.policies if plan.name == "allow-details-v1")
    assert details.manifest["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "productpage"}}}],
            "ports": [{"protocol": "TCP", "port": 9080}],
        }
    ]
    assert _ip_blocks(result) == []
    assert result.check.recall == 1.0


def test_with_reserved_labels_trusted_first_the_proof_fails_naming_rule_and_pod(tmp_path, monkeypatch):
    monkeypatch.setattr(hubble_identity, "classify", _reserved_first)
    observed = api.load_observations([world_labelled_capture(tmp_path)])
    assert set(observed.observations["server_entity"]) == {WORLD}  # the old reading
    with pytest.raises(ReplayError) as raised:
        api.recommend(observed)
    message = str(raised.value)
    assert "bookinfo/allow-productpage-v1 egress[0] ipBlock 10.244.1.193/32" in message
    assert "pod bookinfo/details-v1-79f774bdb9-m4j4k" in message


def _world_with_pod_name(line: str) -> bool:
    flow = json.loads(line)["flow"]
    return any(
        "reserved:world" in flow[side].get("labels", []) and flow[side].get("pod_name")
        for side in ("source", "destination")
    )


def test_bookinfo_records_labelled_world_with_a_pod_name_are_their_pods(tmp_path):
    lines = [line for line in fixture_lines("basic-sample-400-tcp-flows.json") if _world_with_pod_name(line)]
    assert len(lines) == 28
    observed = api.load_observations([str(write_lines(tmp_path / "world.json", lines))])
    frame = observed.observations
    assert not (frame[["client_entity", "server_entity"]] == WORLD).any().any()
    servers = set(frame.loc[frame["server_entity"] == POD, "server_workload"])
    assert servers == {"details-v1", "reviews-v1", "reviews-v3"}
    assert set(observed.pod_ips) == {"10.244.1.18", "10.244.1.109", "10.244.1.193", "10.244.0.177"}


def test_bookinfo_is_allowed_through_selectors_on_both_sides(bookinfo_files):
    result = api.recommend(api.load_observations(bookinfo_files))
    assert _ip_blocks(result) == []
    edges = result.proposal.edges
    managed = edges[
        edges["server_namespace"].isin(["bookinfo", "jaeger"]) | edges["client_namespace"].isin(["bookinfo", "jaeger"])
    ]
    assert len(managed) == 10
    assert set(managed["client_entity"]) == set(managed["server_entity"]) == {POD}
    # the labels come from each pod's best record, never from a reserved-only one
    assert set(result.observed.pods.loc[result.observed.pods["workload"] == "details-v1", "labels"]) == {
        "app=details,sidecar.opentelemetry.io/injected=bookinfo.otelcol-bookinfo,version=v1"
    }
    assert result.check.recall == 1.0


NODES = (
    Node("node-a", ("172.18.0.2",), pod_cidrs=("10.244.0.0/24",)),
    Node("node-b", ("172.18.0.3",), pod_cidrs=("10.244.1.0/24",)),
)


def _pod(name: str, app: str, ip: str, node: str) -> Pod:
    return Pod("bookinfo", name, Owner("Deployment", app), ips=(ip,), labels={"app": app}, node=node, phase="Running")


def _inventory(*pods: Pod) -> Inventory:
    return Inventory(pods=pods, nodes=NODES, namespaces=(Namespace("bookinfo"),))


WORLD_AT = {"identity": 2, "labels": ["reserved:world"]}


def test_with_an_inventory_an_address_of_a_pod_is_that_pod_and_one_in_a_pod_cidr_without_a_pod_is_unresolved(
    tmp_path,
):
    lines = [
        _flow(0, PRODUCTPAGE, WORLD_AT, "10.244.0.177", "10.244.1.193", (50000, 9080), False),
        _flow(1, PRODUCTPAGE, WORLD_AT, "10.244.0.177", "10.244.1.77", (50001, 9080), False),
        _flow(2, PRODUCTPAGE, WORLD_AT, "10.244.0.177", "203.0.113.9", (50002, 443), False),
    ]
    inventory = _inventory(
        _pod("productpage-v1-6b746f74dc-9rcxx", "productpage", "10.244.0.177", "node-a"),
        _pod("details-v1-79f774bdb9-m4j4k", "details", "10.244.1.193", "node-b"),
    )
    result = api.recommend(api.load_observations([str(write_lines(tmp_path / "c.json", lines))]), inventory=inventory)
    egress = next(plan for plan in result.proposal.policies if plan.name == "allow-productpage").manifest["spec"][
        "egress"
    ]
    assert [rule["to"] for rule in egress] == [
        [{"ipBlock": {"cidr": "203.0.113.9/32"}}],
        [{"podSelector": {"matchLabels": {"app": "details"}}}],
    ]
    unresolved = result.proposal.findings.not_expressed
    assert list(unresolved["server"]) == ["unknown:10.244.1.77"]
    assert list(unresolved["reason"]) == ["server identity unknown"]


def test_a_conntrack_connection_from_a_pod_cidr_gateway_is_host_ingress(tmp_path):
    entry = (
        "tcp      6 431999 ESTABLISHED src=10.244.1.1 dst=10.244.1.193 sport=40000 dport=9080 "
        "src=10.244.1.193 dst=10.244.1.1 sport=9080 dport=40000 mark=0 use=1"
    )
    dump = tmp_path / "node-b.conntrack"
    dump.write_text(entry + "\n")
    inventory = _inventory(_pod("details-v1-79f774bdb9-m4j4k", "details", "10.244.1.193", "node-b"))
    observed = api.load_observations([str(dump)], inventory=inventory)
    result = api.recommend(observed, inventory=inventory)
    assert list(result.proposal.findings.host_ingress["client"]) == ["host:10.244.1.1"]
    assert all("ingress" not in plan.manifest["spec"] for plan in result.proposal.policies if plan.workload)


def test_saved_observations_keep_the_pod_address_evidence(tmp_path):
    observed = api.load_observations([world_labelled_capture(tmp_path)])
    api.save(observed, str(tmp_path / "saved.parquet"))
    loaded = api.load_observations([str(tmp_path / "saved.parquet")])
    assert (
        loaded.pod_ips
        == observed.pod_ips
        == {
            "10.244.0.177": (("bookinfo", "productpage-v1-6b746f74dc-9rcxx"),),
            "10.244.1.193": (("bookinfo", "details-v1-79f774bdb9-m4j4k"),),
        }
    )


def test_with_an_inventory_a_pod_seen_only_as_world_gets_its_ingress_rule_by_its_labels(tmp_path):
    inventory = _inventory(
        _pod("productpage-v1-6b746f74dc-9rcxx", "productpage", "10.244.0.177", "node-a"),
        _pod("details-v1-79f774bdb9-m4j4k", "details", "10.244.1.193", "node-b"),
    )
    result = api.recommend(api.load_observations([world_labelled_capture(tmp_path)]), inventory=inventory)
    details = next(plan for plan in result.proposal.policies if plan.name == "allow-details")
    assert details.manifest["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "productpage"}}}],
            "ports": [{"protocol": "TCP", "port": 9080}],
        }
    ]
    assert details.manifest["spec"]["podSelector"] == {"matchLabels": {"app": "details"}}
    assert _ip_blocks(result) == [] and result.check.recall == 1.0
    assert not [item for item in result.findings() if item.kind == FindingKind.NO_STABLE_SELECTOR]
