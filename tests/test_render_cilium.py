"""CiliumNetworkPolicy output and what NetworkPolicy cannot express on Cilium (issue 14).

The CNPs are checked three ways: against the upstream CRD schemas, by expanding their rules into the
connections they allow (each side on its own: the subject's policy must allow exactly the observed
edges of that workload, no more, no fewer), and byte for byte across runs.
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.generate import Connection, Topology, Workload, observation_set
from collectors.records import POD, WORLD, labels_from_text
from recommender import api
from recommender.cli import INCOMPLETE, main
from recommender.render import target_policies
from recommender.render_cilium import NAMESPACE_KEY
from recommender.synthesis import CILIUM_ENTITIES, SynthesisOptions
from tests.conftest import REPO
from tests.crd_schema import schema_errors

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
ENTITY_EDGES = {
    ("ingress", "shop/frontend", "TCP", 8080),
    ("remote-node", "shop/frontend", "TCP", 8080),
    ("monitoring/prometheus", "kube-apiserver", "TCP", 6443),
    ("monitoring/prometheus", "host", "TCP", 10250),
    ("monitoring/prometheus", "remote-node", "TCP", 9100),
}
"""The example's edges to and from Cilium entities (by entity, whatever the IP)."""


def recommend(files: list[str], **options) -> api.Recommendation:
    return api.recommend(api.load_observations(files), SynthesisOptions(**options))


def entity_key(key: str) -> str:
    """`remote-node:172.18.0.3` → `remote-node`: Cilium selects entities, not their IPs."""
    entity = key.partition(":")[0]
    return entity if entity in CILIUM_ENTITIES else key


# -- what a CNP allows, rule by rule (the subset render_cilium writes) ------------------------------


def cnp_connections(result: api.Recommendation) -> set[tuple[str, str, str, str, int]]:
    """(subject workload, direction, peer, protocol, port) for every peer × port of every CNP rule.

    Peers: `namespace/workload` for each observed workload the endpoint selector matches, the entity
    name, `world:IP` for each observed world IP a CIDR or FQDN selects."""
    observed = result.observed
    workloads = workload_labels(observed)
    world_ips = set(observed.observations["server_ip"][observed.observations["server_entity"] == WORLD])
    world_ips |= set(observed.observations["client_ip"][observed.observations["client_entity"] == WORLD])
    found = set()
    for plan in target_policies(result.proposal):
        manifest = plan.manifest
        assert manifest["kind"] == "CiliumNetworkPolicy", manifest
        if not plan.workload:
            continue
        namespace = manifest["metadata"]["namespace"]
        subjects = selected(manifest["spec"]["endpointSelector"], namespace, workloads)
        assert subjects == {plan.workload}, (plan.name, subjects)
        for direction in ("ingress", "egress"):
            for rule in manifest["spec"].get(direction, []):
                peers = rule_peers(rule, namespace, workloads, world_ips, observed.dns_names)
                for port in rule_ports(rule):
                    found |= {(plan.workload, direction, peer, *port) for peer in peers}
    return found


def workload_labels(observed: api.ObservationSet) -> dict[str, list[dict[str, str]]]:
    labels: dict[str, list[dict[str, str]]] = {}
    for row in observed.pods.itertuples(index=False):
        labels.setdefault(f"{row.namespace}/{row.workload}", []).append(labels_from_text(row.labels))
    return labels


def selected(selector: dict, namespace: str, workloads: dict[str, list[dict[str, str]]]) -> set[str]:
    wanted = dict(selector.get("matchLabels", {}))
    assert set(selector) <= {"matchLabels"}
    in_namespace = wanted.pop(NAMESPACE_KEY, namespace)
    return {
        key
        for key, pods in workloads.items()
        if key.split("/")[0] == in_namespace and any(wanted.items() <= pod.items() for pod in pods)
    }


def rule_peers(rule: dict, namespace: str, workloads, world_ips: set[str], dns_names) -> set[str]:
    kinds = [key for key in rule if key not in ("toPorts", "icmps")]
    assert len(kinds) == 1, f"Cilium refuses rules that combine L3 selectors: {kinds}"
    kind, peers = kinds[0], rule[kinds[0]]
    if kind in ("fromEndpoints", "toEndpoints"):
        return {key for peer in peers for key in selected(peer, namespace, workloads)}
    if kind in ("fromEntities", "toEntities"):
        return set(peers)
    if kind in ("fromCIDR", "toCIDR"):
        networks = [ipaddress.ip_network(cidr) for cidr in peers]
        return {f"world:{ip}" for ip in world_ips if any(ipaddress.ip_address(ip) in net for net in networks)}
    assert kind == "toFQDNs", kind
    names = {peer["matchName"] for peer in peers}
    assert all(set(peer) == {"matchName"} for peer in peers)  # matchPattern only with an explicit option
    return {f"world:{ip}" for ip in world_ips if names & set(dns_names.get(ip, ()))}


def rule_ports(rule: dict) -> set[tuple[str, int]]:
    ports = {(port["protocol"], int(port["port"])) for entry in rule.get("toPorts", []) for port in entry["ports"]}
    for icmp in rule.get("icmps", []):
        ports |= {("ICMPv4" if field["family"] == "IPv4" else "ICMPv6", 0) for field in icmp["fields"]}
    assert ports, "a rule without ports would allow every port"
    return ports


def edge_connections(result: api.Recommendation) -> set[tuple[str, str, str, str, int]]:
    """The same tuples from the proposal's edges: what each managed workload's CNP must allow."""
    managed = set(result.proposal.managed_namespaces)
    edges, dns = result.proposal.edges, result.proposal.dns
    lookups = dns.covers(edges) & edges["client_namespace"].isin(dns.namespaces)  # the allow-dns CNP's
    found = set()
    for row, lookup in zip(edges.itertuples(index=False), lookups, strict=True):
        for side, peer, direction in (("client", row.server, "egress"), ("server", row.client, "ingress")):
            if lookup and direction == "egress":
                continue
            if getattr(row, f"{side}_entity") == POD and getattr(row, f"{side}_namespace") in managed:
                found.add((getattr(row, side), direction, entity_key(peer), row.protocol, int(row.port)))
    return found


def assert_lookups_through_the_dns_proxy(result: api.Recommendation, namespace: str) -> None:
    """The namespace's allow-dns CNP: every pod to kube-dns on UDP and TCP 53 with the DNS rule."""
    plans = target_policies(result.proposal)
    allow_dns = next(p for p in plans if p.name == "allow-dns" and p.namespace == namespace).manifest["spec"]
    assert allow_dns["endpointSelector"] == {}
    assert allow_dns["egress"] == [
        {
            "toEndpoints": [{"matchLabels": {"k8s-app": "kube-dns", NAMESPACE_KEY: "kube-system"}}],
            "toPorts": [
                {
                    "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                    "rules": {"dns": [{"matchPattern": "*"}]},
                }
            ],
        }
    ]


def assert_exact_and_valid(result: api.Recommendation) -> None:
    assert cnp_connections(result) == edge_connections(result)
    for plan in target_policies(result.proposal):
        assert schema_errors(plan.manifest) == [], plan.name


# -- the example: entities ---------------------------------------------------------------------


def test_on_cilium_networkpolicy_cannot_express_the_entity_edges_and_writes_no_ipblock_for_them():
    result = recommend([EXAMPLE], target="networkpolicy", cni="cilium")
    unexpressible = result.proposal.findings.unexpressible
    assert {(entity_key(e.client), entity_key(e.server), e.protocol, e.port) for e in unexpressible} == ENTITY_EDGES
    assert all(e.reason and "--target cilium" in e.fix for e in unexpressible)
    entity_ips = {ip for e in unexpressible for ip in (e.client.partition(":")[2], e.server.partition(":")[2]) if ip}
    written = api.render_yaml(result.proposal)
    assert entity_ips and not any(f"cidr: {ip}/" in written for ip in entity_ips)
    assert "172.18.0." not in written  # the node addresses: no ipBlock, not even collapsed ones
    assert "cidr: 203.0.113.10/32" in written  # the world stays an ipBlock
    assert result.check.recall == 1.0


def test_the_run_names_each_unexpressible_edge_with_its_fix_and_exits_incomplete():
    outcome = CliRunner().invoke(main, ["recommend", EXAMPLE, "--cni", "cilium", "-q"])
    assert outcome.exit_code == INCOMPLETE
    assert outcome.stderr.count("not expressible: ") == 10
    assert "monitoring/prometheus -> kube-apiserver:172.18.0.5 TCP/6443" in outcome.stderr
    assert "toEntities: [kube-apiserver]" in outcome.stderr and "fromEntities: [ingress]" in outcome.stderr
    assert "policy-cidr-match-mode=nodes" in outcome.stderr
    assert list(yaml.safe_load_all(outcome.stdout))  # the policies are written all the same


def test_cilium_is_the_default_cni_for_hubble_input_and_is_printed():
    outcome = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["recommend", EXAMPLE])
    assert outcome.exit_code == INCOMPLETE
    assert re.search(r"CNI profile\s*│\s*cilium\s*│", outcome.stderr)


@pytest.mark.parametrize("cni", ["kubernetes", "calico"])
def test_on_the_spec_and_on_calico_the_entities_are_ipblocks(cni):
    result = recommend([EXAMPLE], cni=cni)
    assert result.proposal.findings.unexpressible == []
    written = api.render_yaml(result.proposal)
    assert "cidr: 172.18.0.5/32" in written and "cidr: 10.244.0.200/32" in written


def test_cidr_match_nodes_makes_node_ips_expressible_but_not_cilium_ingress():
    result = recommend([EXAMPLE], cni="cilium", cidr_match_nodes=True)
    assert {e.entity for e in result.proposal.findings.unexpressible} == {"ingress"}
    assert "cidr: 172.18.0.5/32" in api.render_yaml(result.proposal)


def test_target_cilium_allows_every_entity_edge_through_entities():
    result = recommend([EXAMPLE], target="cilium")
    assert result.proposal.findings.unexpressible == []
    allowed = {(workload, direction, peer, protocol, port) for workload, direction, peer, protocol, port in
               cnp_connections(result)}  # fmt: skip
    assert ("monitoring/prometheus", "egress", "kube-apiserver", "TCP", 6443) in allowed
    assert ("monitoring/prometheus", "egress", "host", "TCP", 10250) in allowed
    assert ("monitoring/prometheus", "egress", "remote-node", "TCP", 9100) in allowed
    assert ("shop/frontend", "ingress", "remote-node", "TCP", 8080) in allowed
    assert ("shop/frontend", "ingress", "ingress", "TCP", 8080) in allowed
    assert not any("world" in peer for _w, _d, peer, _p, _n in allowed if not peer.startswith("world:"))
    assert_exact_and_valid(result)
    assert result.check.recall == 1.0


def test_world_peers_with_a_resolved_name_are_fqdns_with_the_dns_proxy_rule():
    result = recommend([EXAMPLE], target="cilium")
    checkout = next(p for p in target_policies(result.proposal) if p.name == "allow-checkout").manifest["spec"]
    assert {"toFQDNs": [{"matchName": "api.payments.example.com"}],
            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]} in checkout["egress"]  # fmt: skip
    # The lookups pass the DNS proxy through the namespace's allow-dns (UDP and TCP 53), which toFQDNs needs.
    assert_lookups_through_the_dns_proxy(result, "shop")
    assert not any("53" in str(rule.get("toPorts")) for rule in checkout["egress"])
    assert "203.0.113.10" not in yaml.safe_dump(checkout)


def test_the_default_deny_is_a_cnp_per_namespace():
    result = recommend([EXAMPLE], target="cilium")
    denies = [p.manifest for p in target_policies(result.proposal) if p.name == "default-deny"]
    assert [d["metadata"]["namespace"] for d in denies] == result.proposal.managed_namespaces
    assert all(
        d["spec"] == {"endpointSelector": {}, "enableDefaultDeny": {"egress": True, "ingress": True},
                      "ingress": [{}], "egress": [{}]}
        for d in denies
    )  # fmt: skip


def test_cilium_output_is_byte_identical_and_explained(tmp_path):
    first = CliRunner().invoke(main, ["recommend", EXAMPLE, "--target", "cilium", "--explain", "-q"])
    second = CliRunner().invoke(main, ["recommend", EXAMPLE, "--target", "cilium", "--explain", "-q"])
    assert first.exit_code == 0 and first.stdout == second.stdout
    assert "kind: CiliumNetworkPolicy" in first.stdout and "# 27 flows" not in first.stdout.split("kind")[0]
    rules = sum(len(d["spec"].get(k, [])) for d in yaml.safe_load_all(first.stdout)
                if d["metadata"]["name"] != "default-deny" for k in ("ingress", "egress"))  # fmt: skip
    assert first.stdout.count("    # ") == rules  # one evidence comment per rule (the default-deny has none)
    folder = tmp_path / "policies"
    written = CliRunner().invoke(main, ["recommend", EXAMPLE, "--target", "cilium", "-o", str(folder), "-q"])
    assert written.exit_code == 0
    assert "kind: CiliumNetworkPolicy" in (folder / "shop.yaml").read_text()


# -- real captures -------------------------------------------------------------------------------


def test_bookinfo_cnps_allow_exactly_the_observed_connections(bookinfo_files):
    result = recommend(bookinfo_files, target="cilium")
    assert_exact_and_valid(result)
    assert_lookups_through_the_dns_proxy(result, "bookinfo")
    assert result.proposal.findings.unexpressible == []  # its one remote-node address is a pod's (identity)


def test_observed_icmp_becomes_icmps():
    """Echo requests (the client side of ICMP); the real ICMP capture only pings the health endpoint."""
    apps = [Workload("alpha", name, labels=(("app", name),), replicas=1) for name in ("pinger", "target")]
    topology = Topology(apps, [Connection("alpha/pinger", "alpha/target", "ICMPv4", 0)])
    result = api.recommend(observation_set(topology), SynthesisOptions(target="cilium", exclude_namespaces=()))
    rules = [rule for plan in target_policies(result.proposal) if plan.workload for d in ("ingress", "egress")
             for rule in plan.manifest["spec"].get(d, [])]  # fmt: skip
    assert rules == [
        {"toEndpoints": [{"matchLabels": {"app": "target"}}], "icmps": [{"fields": [{"family": "IPv4", "type": 8}]}]},
        {"fromEndpoints": [{"matchLabels": {"app": "pinger"}}], "icmps": [{"fields": [{"family": "IPv4", "type": 8}]}]},
    ]
    assert_exact_and_valid(result)
    networkpolicy = api.recommend(observation_set(topology), SynthesisOptions(exclude_namespaces=()))
    assert list(networkpolicy.proposal.findings.not_expressed["reason"]) == [
        "protocol not expressible in NetworkPolicy (only TCP, UDP and SCTP)"
    ]


# -- any topology --------------------------------------------------------------------------------

NAMESPACES = ("alpha", "beta")
PEERS = ("host", "remote-node", "kube-apiserver", "ingress", "world:203.0.113.7", "world:198.51.100.1")


@st.composite
def topologies(draw) -> Topology:
    count = draw(st.integers(2, 5))
    workloads = [
        Workload(draw(st.sampled_from(NAMESPACES)), f"app{i}", labels=(("app", f"app{i}"),), replicas=1)
        for i in range(count)
    ]
    keys = [f"{w.namespace}/{w.name}" for w in workloads]
    ports = st.sampled_from([("TCP", 80), ("TCP", 443), ("UDP", 53), ("TCP", 9100), ("ICMPv4", 0)])
    connections = set()
    for _ in range(draw(st.integers(1, 8))):
        client = draw(st.sampled_from([*keys, "remote-node", "ingress"]))
        server = draw(st.sampled_from(keys if client in ("remote-node", "ingress") else [*keys, *PEERS]))
        if client != server:
            protocol, port = draw(ports)
            connections.add(Connection(client, server, protocol, port))
    return Topology(workloads, sorted(connections, key=lambda c: (c.client, c.server, c.port)) or [
        Connection(keys[0], keys[1], "TCP", 80)
    ])  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_any_topology_gives_exact_cnps_and_no_dead_ipblocks(topology):
    observed = observation_set(topology)
    options = SynthesisOptions(exclude_namespaces=(), cni="cilium")
    cilium = api.recommend(observed, SynthesisOptions(exclude_namespaces=(), cni="cilium", target="cilium"))
    assert cilium.proposal.findings.unexpressible == []
    assert cnp_connections(cilium) == edge_connections(cilium)
    networkpolicy = api.recommend(observed, options)
    entity_rows = {
        (entity_key(c.client), entity_key(c.server), c.protocol, c.port)
        for c in topology.connections
        if (c.client in CILIUM_ENTITIES or c.server in CILIUM_ENTITIES) and c.protocol != "ICMPv4"
    }
    found = networkpolicy.proposal.findings.unexpressible
    assert {(entity_key(e.client), entity_key(e.server), e.protocol, e.port) for e in found} == entity_rows
    assert "172.18.0." not in api.render_yaml(networkpolicy.proposal)


GOLDEN_CNPS = [path for path in sorted((REPO / "tests" / "golden").glob("*/recommend-cilium.json")) if path.read_text()]
"""The golden CNP lists (captures with no managed pod print none)."""


@pytest.mark.parametrize("golden", GOLDEN_CNPS, ids=lambda path: path.parent.name)
def test_every_golden_cnp_validates_against_the_upstream_crd(golden):
    items = json.loads(golden.read_text())["items"]
    kinds = {item["kind"] for item in items}  # the cluster baseline is a CiliumClusterwideNetworkPolicy
    assert "CiliumNetworkPolicy" in kinds and kinds <= {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"}
    assert [error for item in items for error in schema_errors(item)] == []
