"""collectors.conntrack_observations: conntrack dumps plus the inventory → observations and policies.

On real kernel output (shared fixtures `conntrack/netns/`, with the inventory of that topology in
tests/data/conntrack), on public samples with small inventories, on inline entries for each
resolution rule, and end to end: the generator's node dumps give the policies its Hubble capture gives.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmarks.generate import (
    conntrack_dump,
    flow_lines,
    inventory_snapshot,
    shop_topology,
    without_entities,
    write_capture,
    write_conntrack_dumps,
)
from collectors.conntrack import parse_conntrack_lines
from collectors.conntrack_observations import UNREPLIED, ConntrackIngest, read_conntrack
from collectors.errors import BadInputError, CollectorError, OnError
from collectors.inventory import (
    ContainerPort,
    EndpointSlice,
    Inventory,
    Namespace,
    Node,
    Owner,
    Pod,
    Service,
    ServicePort,
    SliceEndpoint,
    SlicePort,
    inventory_from_objects,
    list_items,
    load_inventory,
)
from collectors.records import HOST, POD, REMOTE_NODE, WORLD, ObservationSet
from recommender import api
from recommender.cli import main
from recommender.graph import endpoint_keys
from tests.test_conntrack_parse import SNAPSHOTS
from tests.test_conntrack_parse import fixture as conntrack_fixture

NETNS_INVENTORY = Path(__file__).parent / "data" / "conntrack" / "netns-inventory.json"
EVERYWHERE = api.SynthesisOptions(exclude_namespaces=())
# The netns workloads: pod-a is default/client, pod-b default/backend, pod-c kube-system/dns.
WORKLOADS = {"10.244.1.10": "default/client", "10.244.2.20": "default/backend", "10.244.3.30": "kube-system/dns"}
SERVICES = {("10.96.0.10", 80): "default/backend", ("10.96.0.53", 53): "kube-system/dns"}


def fixture(relative: str) -> str:
    return str(conntrack_fixture(relative))


def table(observed: ObservationSet) -> list[tuple]:
    """(client, server, protocol, port, verdict, count, services) of every observation row."""
    frame = observed.observations
    keys = frame.assign(client=endpoint_keys(frame, "client"), server=endpoint_keys(frame, "server"))
    columns = ["client", "server", "protocol", "port", "verdict", "count", "services"]
    return [tuple(row) for row in keys[columns].itertuples(index=False)]


def rule_ports(result: api.Recommendation) -> set[tuple[str, int]]:
    return {
        (port["protocol"], port["port"])
        for plan in result.proposal.policies
        for direction in ("ingress", "egress")
        for rule in plan.manifest["spec"].get(direction, [])
        for port in rule["ports"]
    }


def proposal_edges(result: api.Recommendation) -> set[tuple[str, str, str, int]]:
    edges = result.proposal.edges
    return set(zip(edges["client"], edges["server"], edges["protocol"], edges["port"].astype(int), strict=True))


# --- netns: real kernel output of a known topology ---------------------------------------------

NETNS_ROWS = [
    ("default/backend", "kube-system/dns", "UDP", 5353, "FORWARDED", 1, ""),
    ("default/client", "default/backend", "ICMPv4", 0, "FORWARDED", 1, ""),
    ("default/client", "default/backend", "TCP", 8080, "FORWARDED", 5, "default/backend"),
    ("default/client", "kube-system/dns", "UDP", 5353, "FORWARDED", 2, "kube-system/dns"),
]


def netns_inventory() -> Inventory:
    return load_inventory(str(NETNS_INVENTORY))


@pytest.mark.parametrize("relative", SNAPSHOTS)
def test_every_snapshot_format_gives_the_same_observations(relative):
    observed = read_conntrack([fixture(relative)], netns_inventory())
    assert table(observed) == NETNS_ROWS
    assert observed.stats.flows == observed.stats.orientation["original tuple"] == 9
    assert observed.stats.resolution["service backend from DNAT"] == 3
    assert (observed.stats.duplicates, observed.stats.bad.count) == (0, 0)


def service_backends() -> list[tuple[str, str, str, str, int, str, int]]:
    """service-backends.txt: (protocol, client IP, client port, Service IP, port, backend IP, target port)."""
    pattern = re.compile(r"(\w+) client=(.+):(\d+) service=(.+):(\d+) -> backend=(.+):(\d+)")
    found = []
    for line in Path(fixture("netns/service-backends.txt")).read_text().splitlines():
        protocol, client, client_port, service_ip, port, backend, target = pattern.fullmatch(line).groups()
        found.append((protocol, client, client_port, service_ip, int(port), backend, int(target)))
    return found


@pytest.mark.parametrize("relative", [*SNAPSHOTS, "netns/conntrack-events.txt", "netns/conntrack-L-dnat.txt"])
def test_service_connections_resolve_to_the_backends_of_service_backends_txt(relative):
    observed = read_conntrack([fixture(relative)], netns_inventory())
    rows = {row[:5]: row[6] for row in table(observed)}
    for protocol, client, _, service_ip, port, backend, target in service_backends():
        key = (WORKLOADS[client], WORKLOADS[backend], protocol.upper(), target, "FORWARDED")
        assert rows[key] == SERVICES[(service_ip, port)], key
    assert not {row[3] for row in table(observed)} & {80, 53}


@pytest.mark.parametrize("relative", [*SNAPSHOTS, "netns/conntrack-events.txt"])
def test_rules_use_the_target_ports_never_the_service_ports(relative):
    result = api.recommend(read_conntrack([fixture(relative)], netns_inventory()), EVERYWHERE)
    assert rule_ports(result) == {("TCP", 8080), ("UDP", 5353)}
    assert proposal_edges(result) == {
        ("default/client", "default/backend", "TCP", 8080),
        ("default/client", "kube-system/dns", "UDP", 5353),
        ("default/backend", "kube-system/dns", "UDP", 5353),
    }
    assert result.check.recall == 1.0


def test_the_event_stream_counts_connections_once_with_their_times_and_reports_the_unreplied():
    observed = read_conntrack([fixture("netns/conntrack-events.txt")], netns_inventory())
    rows = table(observed)
    assert [row for row in rows if row[4] == "FORWARDED"] == NETNS_ROWS
    assert [row for row in rows if row[4] == UNREPLIED] == [
        ("default/client", "default/backend", "TCP", 8080, UNREPLIED, 2, ""),  # before pod-b listened
        ("default/client", "default/backend", "TCP", 9999, UNREPLIED, 1, ""),  # a closed port
    ]
    assert (observed.stats.flows, observed.stats.duplicates) == (41, 29)
    assert observed.stats.resolution["unreplied"] == 3
    frame = observed.observations.set_index(["protocol", "port", "verdict"])
    udp = frame.loc[("UDP", 5353, "FORWARDED")]
    first = datetime.fromtimestamp(1795764287.767523, UTC)  # pod-a's direct query, answered
    assert min(udp["first_seen"]) == pd.Timestamp(first)
    result = api.recommend(observed, EVERYWHERE)
    assert ("TCP", 9999) not in rule_ports(result)


def test_a_snapshot_and_the_event_stream_of_the_same_node_are_one_generation():
    inventory = netns_inventory()
    both = read_conntrack([fixture("netns/conntrack-L.txt"), fixture("netns/conntrack-events.txt")], inventory)
    alone = read_conntrack([fixture("netns/conntrack-events.txt")], inventory)
    assert table(both) == table(alone)
    assert both.stats.duplicates == alone.stats.duplicates + 9


def test_generations_count_the_same_connections_again(tmp_path):
    inventory = netns_inventory()
    copy = tmp_path / "the-same-dump.txt"
    shutil.copy(fixture("netns/conntrack-L.txt"), copy)
    assert table(read_conntrack([fixture("netns/conntrack-L.txt"), str(copy)], inventory)) == NETNS_ROWS
    ingest = ConntrackIngest(inventory)
    ingest.add_file(fixture("netns/conntrack-L.txt"))
    ingest.end_generation()
    ingest.add_file(str(copy))
    doubled = [(*row[:5], 2 * row[5], row[6]) for row in NETNS_ROWS]
    assert table(ingest.finish()) == doubled


def test_the_pods_table_lists_the_pods_seen_with_their_inventory_labels():
    observed = read_conntrack([fixture("netns/conntrack-L.txt")], netns_inventory())
    assert observed.pods.to_dict(orient="records") == [
        {
            "cluster": "",
            "namespace": "default",
            "pod": "backend-5f6d7c8b9d-k8mzt",
            "workload": "backend",
            "kind": "Deployment",
            "labels": "app=backend,pod-template-hash=5f6d7c8b9d",
        },
        {
            "cluster": "",
            "namespace": "default",
            "pod": "client-7d9c5b8f6d-x2v4q",
            "workload": "client",
            "kind": "Deployment",
            "labels": "app=client,pod-template-hash=7d9c5b8f6d",
        },
        {
            "cluster": "",
            "namespace": "kube-system",
            "pod": "dns-6c7b8d9f5b-r4wq9",
            "workload": "dns",
            "kind": "Deployment",
            "labels": "app=dns,pod-template-hash=6c7b8d9f5b",
        },
    ]
    assert set(observed.observations["client_pod"]) == {"client-7d9c5b8f6d-x2v4q", "backend-5f6d7c8b9d-k8mzt"}


# --- public samples ----------------------------------------------------------------------------


def deployment_pod(namespace: str, app: str, ip: str, node: str = "node-1", *, phase: str = "Running", **extra) -> Pod:
    """A pod of Deployment `app`, named after its IP."""
    name = f"{app}-{ip.replace('.', '-').replace(':', '-')}"
    return Pod(
        namespace, name, Owner("Deployment", app), ips=(ip,), labels={"app": app}, node=node, phase=phase, **extra
    )


def service(namespace: str, name: str, ip: str, port: int, target: int, protocol: str = "TCP", *backends: str):
    """A Service and its EndpointSlice."""
    ports = (ServicePort(port, target, "p", protocol),)
    endpoints = tuple(SliceEndpoint((backend,)) for backend in backends)
    return (
        Service(namespace, name, cluster_ips=(ip,), ports=ports),
        EndpointSlice(namespace, f"{name}-x", name, endpoints=endpoints, ports=(SlicePort(target, "p", protocol),)),
    )


def test_k8s_91216_clusterip_dns_goes_to_the_coredns_pods_and_loopback_is_skipped():
    kube_dns, kube_dns_slice = service("kube-system", "kube-dns", "10.0.0.10", 53, 53, "TCP", "10.64.1.6", "10.64.2.4")
    inventory = Inventory(
        pods=(
            deployment_pod("shop", "web", "10.64.4.48"),
            deployment_pod("kube-system", "coredns", "10.64.1.6"),
            deployment_pod("kube-system", "coredns", "10.64.2.4"),
        ),
        services=(kube_dns,),
        endpoint_slices=(kube_dns_slice,),
    )
    observed = read_conntrack([fixture("public/k8s-issue-91216_conntrack-L_tcp-clusterip-dns-dnat.txt")], inventory)
    assert table(observed) == [("shop/web", "kube-system/coredns", "TCP", 53, "FORWARDED", 4, "kube-system/kube-dns")]
    assert observed.stats.skipped == {"loopback address (inside one host)": 1}
    assert set(observed.observations["server_pod"]) == {"coredns-10-64-1-6"}  # the smallest name of two


def test_k8s_38802_snat_to_the_node_is_recognised_and_node_addresses_named():
    worker, master = (
        Node("worker", ("10.28.65.112",), pod_cidrs=("10.10.28.0/24",)),
        Node("master", ("10.28.65.157",), pod_cidrs=("10.10.12.0/24",)),
    )
    inventory = Inventory(
        pods=(deployment_pod("chat", "ejabberd", "10.10.28.7", "worker"),),
        nodes=(worker, master),
    )
    observed = read_conntrack([fixture("public/k8s-issue-38802_conntrack-L_with-snat.txt")], inventory)
    assert table(observed) == [
        ("chat/ejabberd", "remote-node:10.28.65.157", "TCP", 2379, "FORWARDED", 1, ""),
        ("remote-node:10.28.65.112", "remote-node:10.28.65.157", "TCP", 8080, "FORWARDED", 1, ""),
        ("remote-node:10.28.65.157", "remote-node:10.28.65.112", "TCP", 10250, "FORWARDED", 1, ""),
        ("unknown:10.10.12.0", "chat/ejabberd", "TCP", 5222, "FORWARDED", 4, ""),  # flannel's address
    ]
    resolution = observed.stats.resolution
    assert resolution["snat: server sees 10.28.65.112"] == 1
    assert resolution["unresolved IP: 10.10.12.0"] == 4
    result = api.recommend(observed, EVERYWHERE)
    (policy,) = [plan for plan in result.proposal.policies if plan.workload == "chat/ejabberd"]
    assert policy.manifest["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.28.65.157/32"}}], "ports": [{"protocol": "TCP", "port": 2379}]}
    ]
    assert "ingress" not in policy.manifest["spec"]  # its only client is unknown: reported, not allowed
    assert set(result.proposal.findings.not_expressed["client"]) == {"unknown:10.10.12.0"}


def test_k8s_126130_unreplied_udp_to_a_clusterip_is_reported_with_its_backend_not_allowed():
    statsd, statsd_slice = service("monitoring", "statsd", "10.12.201.0", 8125, 8125, "UDP", "10.11.4.22")
    inventory = Inventory(
        pods=(
            deployment_pod("monitoring", "statsd", "10.11.4.22"),
            *(deployment_pod("shop", "web", ip) for ip in ("10.11.4.5", "10.11.4.30", "10.11.4.38")),
        ),
        services=(statsd,),
        endpoint_slices=(statsd_slice,),
    )
    observed = read_conntrack(
        [fixture("public/k8s-issue-126130_conntrack_udp-clusterip-unreplied-dnat.txt")], inventory
    )
    assert table(observed) == [("shop/web", "monitoring/statsd", "UDP", 8125, UNREPLIED, 3, "monitoring/statsd")]
    result = api.recommend(observed, EVERYWHERE)
    assert rule_ports(result) == set() and proposal_edges(result) == set()


# --- resolution rules, on inline entries -------------------------------------------------------

NODE_A, NODE_B = "172.18.0.2", "172.18.0.3"
NODES = (
    Node("node-a", (NODE_A,), pod_cidrs=("10.244.1.0/24",)),
    Node("node-b", (NODE_B,), pod_cidrs=("10.244.2.0/24",)),
)
T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def entry(
    src: str,
    dst: str,
    dport: int,
    reply_src: str = "",
    reply_sport: int = 0,
    *,
    sport: int = 40000,
    reply_dst: str = "",
    protocol: str = "tcp",
    unreplied: bool = False,
    at: datetime | None = None,
) -> str:
    """One entry as `conntrack -L` prints it, or as `conntrack -E -o timestamp` does when `at` is given."""
    reply_src, reply_sport, reply_dst = reply_src or dst, reply_sport or dport, reply_dst or src
    head = "tcp      6 431999 ESTABLISHED" if protocol == "tcp" else "udp      17 29"
    text = (
        f"{head} src={src} dst={dst} sport={sport} dport={dport}{' [UNREPLIED]' if unreplied else ''} "
        f"src={reply_src} dst={reply_dst} sport={reply_sport} dport={sport} mark=0 use=1"
    )
    return text if at is None else f"[{at.timestamp():.6f}]\t [UPDATE] {text}"


def dump(tmp_path: Path, *lines: str, name: str = "dump.txt") -> str:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def cluster(*pods: Pod, services: tuple = ()) -> Inventory:
    return Inventory(
        pods=pods,
        nodes=NODES,
        namespaces=(Namespace("shop"),),
        services=tuple(item for item in services if isinstance(item, Service)),
        endpoint_slices=tuple(item for item in services if isinstance(item, EndpointSlice)),
    )


def test_a_reused_pod_ip_is_the_pod_that_held_it_at_the_entry_time(tmp_path):
    old = deployment_pod("shop", "batch", "10.244.1.7", "node-a", created=T0, deleted=T0 + timedelta(minutes=10))
    new = deployment_pod("shop", "api", "10.244.1.7", "node-a", created=T0 + timedelta(minutes=20))
    newer_holder_ends_it = deployment_pod("shop", "cache", "10.244.1.8", "node-a", created=T0)
    newest = deployment_pod("shop", "queue", "10.244.1.8", "node-a", created=T0 + timedelta(hours=1))
    client = deployment_pod("shop", "web", "10.244.2.5", "node-b")
    inventory = cluster(old, new, newer_holder_ends_it, newest, client)
    lines = [
        entry("10.244.2.5", "10.244.1.7", 80, sport=1, at=T0 + timedelta(minutes=5)),
        entry("10.244.2.5", "10.244.1.7", 80, sport=2, at=T0 + timedelta(minutes=25)),
        entry("10.244.2.5", "10.244.1.8", 80, sport=3, at=T0 + timedelta(minutes=59)),
        entry("10.244.2.5", "10.244.1.8", 80, sport=4, at=T0 + timedelta(minutes=61)),
        entry("10.244.2.5", "10.244.1.8", 80, sport=5, at=T0 + timedelta(minutes=62)),
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], inventory)
    assert [(row[1], row[5]) for row in table(observed)] == [
        ("shop/api", 1),
        ("shop/batch", 1),
        ("shop/cache", 1),
        ("shop/queue", 2),
    ]
    frame = observed.observations.set_index("server_workload")
    assert frame.loc["queue", "first_seen"] == pd.Timestamp(T0 + timedelta(minutes=61))
    assert frame.loc["queue", "last_seen"] == pd.Timestamp(T0 + timedelta(minutes=62))
    assert not [note for note in observed.stats.resolution if note.startswith("ambiguous")]


def test_without_times_a_reused_ip_prefers_the_running_pod_and_is_reported_as_ambiguous(tmp_path):
    done = deployment_pod("shop", "batch", "10.244.1.7", "node-a", created=T0, phase="Succeeded")
    running = deployment_pod("shop", "api", "10.244.1.7", "node-a", created=T0 + timedelta(minutes=20))
    twins = [deployment_pod("shop", name, "10.244.1.9", "node-a", created=T0) for name in ("left", "right")]
    client = deployment_pod("shop", "web", "10.244.2.5", "node-b")
    lines = [
        entry("10.244.2.5", "10.244.1.7", 80, sport=1),
        entry("10.244.2.5", "10.244.1.7", 80, sport=2),
        entry("10.244.2.5", "10.244.1.9", 80, sport=3),
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(done, running, *twins, client))
    assert [(row[1], row[5]) for row in table(observed)] == [("shop/api", 2), ("shop/right", 1)]
    resolution = observed.stats.resolution
    assert (resolution["ambiguous IP: 10.244.1.7"], resolution["ambiguous IP: 10.244.1.9"]) == (2, 1)


def test_a_host_network_pod_is_its_node_with_its_workload_and_gets_an_ip_block(tmp_path):
    exporter = Pod(
        "monitoring",
        "node-exporter-x7k2p",
        Owner("DaemonSet", "node-exporter"),
        ips=(NODE_A,),
        node="node-a",
        host_network=True,
        ports=(ContainerPort("exporter", 9100),),
        phase="Running",
    )
    remote = deployment_pod("shop", "web", "10.244.2.5", "node-b")
    local = deployment_pod("shop", "api", "10.244.1.5", "node-a")
    lines = [
        entry("10.244.2.5", NODE_A, 9100),
        entry("10.244.1.5", NODE_A, 9100),
        entry("10.244.2.5", NODE_A, 10250),  # a port no hostNetwork pod declares: the node itself
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(exporter, remote, local))
    rows = observed.observations.set_index(["client_workload", "port"])
    remote_row, local_row, kubelet = rows.loc[("web", 9100)], rows.loc[("api", 9100)], rows.loc[("web", 10250)]
    assert (remote_row.server_entity, remote_row.server_ip) == (REMOTE_NODE, NODE_A)
    assert (remote_row.server_namespace, remote_row.server_workload, remote_row.server_kind) == (
        "monitoring",
        "node-exporter",
        "DaemonSet",
    )
    assert remote_row.server_pod == "node-exporter-x7k2p"
    assert (local_row.server_entity, local_row.server_workload) == (HOST, "node-exporter")
    assert (kubelet.server_entity, kubelet.server_workload) == (REMOTE_NODE, "")
    assert observed.stats.resolution["server remote-node (hostNetwork pod)"] == 1
    assert "node-exporter-x7k2p" not in set(observed.pods["pod"])  # no selector can select it
    result = api.recommend(observed, EVERYWHERE)
    (web,) = [plan for plan in result.proposal.policies if plan.workload == "shop/web"]
    (rule,) = web.manifest["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": f"{NODE_A}/32"}}]
    assert {"protocol": "TCP", "port": 9100} in rule["ports"]


def test_node_addresses_are_host_for_their_own_pods_and_remote_node_for_others(tmp_path):
    api_pod = deployment_pod("shop", "api", "10.244.1.5", "node-a")
    lines = [entry(NODE_A, "10.244.1.5", 8080, sport=1), entry(NODE_B, "10.244.1.5", 8080, sport=2)]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(api_pod))
    assert table(observed) == [
        (f"host:{NODE_A}", "shop/api", "TCP", 8080, "FORWARDED", 1, ""),
        (f"remote-node:{NODE_B}", "shop/api", "TCP", 8080, "FORWARDED", 1, ""),
    ]
    result = api.recommend(observed, EVERYWHERE)
    assert list(result.proposal.findings.host_ingress["client"]) == [f"host:{NODE_A}"]  # kubelet: no rule
    (policy,) = [plan for plan in result.proposal.policies if plan.workload == "shop/api"]
    assert policy.manifest["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": f"{NODE_B}/32"}}]


def test_unknown_cluster_addresses_are_reported_and_outside_ones_are_the_world(tmp_path):
    web = deployment_pod("shop", "web", "10.244.1.5", "node-a")
    lines = [
        entry("10.244.1.5", "10.244.2.99", 8080),  # in node-b's pod CIDR, no such pod
        entry("10.244.1.5", "203.0.113.10", 443),
        entry("10.244.1.5", "10.96.7.7", 80),  # beside the known ClusterIP: the service network
    ]
    kube_dns, _ = service("kube-system", "kube-dns", "10.96.0.10", 53, 53, "UDP")
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(web, services=(kube_dns,)))
    assert [(row[1], row[3]) for row in table(observed)] == [
        ("unknown:10.244.2.99", 8080),
        ("unknown:10.96.7.7", 80),
        ("world:203.0.113.10", 443),
    ]
    assert observed.stats.resolution["unresolved IP: 10.244.2.99"] == 1
    assert observed.stats.resolution["server world"] == 1
    explicit = read_conntrack([dump(tmp_path, *lines)], cluster(web), cluster_cidrs=["10.244.0.0/16"])
    assert [row[1] for row in table(explicit)][-2:] == ["world:10.96.7.7", "world:203.0.113.10"]
    result = api.recommend(observed, EVERYWHERE)
    reasons = result.proposal.findings.not_expressed.set_index("server")["reason"]
    assert reasons["unknown:10.244.2.99"] == "server identity unknown"
    (policy,) = [plan for plan in result.proposal.policies if plan.workload == "shop/web"]
    assert policy.manifest["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]


def test_a_clusterip_without_dnat_uses_the_endpoint_slice_only_when_one_backend_fits(tmp_path):
    one, one_slice = service("shop", "api", "10.96.0.20", 80, 8080, "TCP", "10.244.1.5")
    two, two_slice = service("shop", "db", "10.96.0.30", 5432, 5432, "TCP", "10.244.1.6", "10.244.1.7")
    pods = [deployment_pod("shop", app, ip, "node-a") for app, ip in (("web", "10.244.2.5"), ("api", "10.244.1.5"))]
    pods += [deployment_pod("shop", "db", ip, "node-a") for ip in ("10.244.1.6", "10.244.1.7")]
    lines = [
        entry("10.244.2.5", "10.96.0.20", 80, unreplied=True, sport=1),
        entry("10.244.2.5", "10.96.0.30", 5432, unreplied=True, sport=2),
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(*pods, services=(one, one_slice, two, two_slice)))
    assert table(observed) == [
        ("shop/web", "shop/api", "TCP", 8080, UNREPLIED, 1, "shop/api"),
        ("shop/web", "unknown:10.96.0.30", "TCP", 5432, UNREPLIED, 1, "shop/db"),
    ]
    resolution = observed.stats.resolution
    assert resolution["service backend from EndpointSlice"] == 1
    assert resolution["service without a unique backend: shop/db"] == 1


def test_the_api_server_behind_its_service_and_a_node_port_from_outside(tmp_path):
    kubernetes = Service("default", "kubernetes", cluster_ips=("10.96.0.1",), ports=(ServicePort(443, 6443, "https"),))
    kubernetes_slice = EndpointSlice(
        "default", "kubernetes", "kubernetes", endpoints=(SliceEndpoint((NODE_A,)),), ports=(SlicePort(6443, "https"),)
    )
    shop = Service("shop", "web", "NodePort", ("10.96.0.40",), (ServicePort(80, 8080, "http", node_port=30080),))
    web = deployment_pod("shop", "web", "10.244.2.5", "node-b")
    lines = [
        entry("10.244.2.5", "10.96.0.1", 443, NODE_A, 6443, sport=1),
        entry("198.51.100.7", NODE_A, 30080, "10.244.2.5", 8080, reply_dst=NODE_A, sport=2),
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(web, services=(kubernetes, kubernetes_slice, shop)))
    assert table(observed) == [
        ("shop/web", f"kube-apiserver:{NODE_A}", "TCP", 6443, "FORWARDED", 1, "default/kubernetes"),
        ("world:198.51.100.7", "shop/web", "TCP", 8080, "FORWARDED", 1, "shop/web"),
    ]


@pytest.mark.parametrize("server_node_first", [True, False])
def test_a_connection_on_two_nodes_counts_once_as_its_client_node_shows_it(tmp_path, server_node_first):
    """Pod A (node-a) → Service → pod B (node-b), masqueraded to node-a's address on the way."""
    api_service, api_slice = service("shop", "api", "10.96.0.20", 80, 8080, "TCP", "10.244.2.5")
    pods = (
        deployment_pod("shop", "web", "10.244.1.5", "node-a"),
        deployment_pod("shop", "api", "10.244.2.5", "node-b"),
    )
    client_node = entry("10.244.1.5", "10.96.0.20", 80, "10.244.2.5", 8080, reply_dst=NODE_A)
    server_node = entry(NODE_A, "10.244.2.5", 8080)
    tables = [dump(tmp_path, server_node, name="b.txt"), dump(tmp_path, client_node, name="a.txt")]
    if not server_node_first:
        tables.reverse()
    observed = read_conntrack(tables, cluster(*pods, services=(api_service, api_slice)))
    assert table(observed) == [("shop/web", "shop/api", "TCP", 8080, "FORWARDED", 1, "shop/api")]
    assert (observed.stats.flows, observed.stats.duplicates) == (2, 1)
    assert observed.stats.resolution[f"snat: server sees {NODE_A}"] == 1


def test_an_answered_copy_wins_over_an_unanswered_one_in_either_order(tmp_path):
    pods = (deployment_pod("shop", "web", "10.244.1.5"), deployment_pod("shop", "api", "10.244.2.5"))
    unanswered = entry("10.244.1.5", "10.244.2.5", 8080, unreplied=True)
    answered = entry("10.244.1.5", "10.244.2.5", 8080)
    for lines in ((unanswered, answered), (answered, unanswered)):
        observed = read_conntrack([dump(tmp_path, *lines)], cluster(*pods))
        assert table(observed) == [("shop/web", "shop/api", "TCP", 8080, "FORWARDED", 1, "")]


def test_icmp_and_other_protocols(tmp_path):
    pods = (deployment_pod("shop", "web", "fd00::5"), deployment_pod("shop", "api", "fd00::6"))
    lines = [
        "icmpv6   58 29 src=fd00::5 dst=fd00::6 type=128 code=0 id=42 src=fd00::6 dst=fd00::5 type=129 code=0 id=42 "
        "mark=0 use=1",
        "gre      47 179 src=fd00::5 dst=fd00::6 srckey=0x1 dstkey=0x0 src=fd00::6 dst=fd00::5 srckey=0x0 dstkey=0x1 "
        "mark=0 use=1",
    ]
    observed = read_conntrack([dump(tmp_path, *lines)], cluster(*pods))
    assert table(observed) == [("shop/web", "shop/api", "ICMPv6", 0, "FORWARDED", 1, "")]
    assert observed.stats.skipped == {"protocol gre": 1}


# --- inputs ------------------------------------------------------------------------------------

LINE = entry("10.244.1.5", "10.244.2.5", 8080)


def test_a_bad_line_names_its_file_and_line_or_is_skipped_and_counted(tmp_path):
    inventory = cluster(deployment_pod("shop", "web", "10.244.1.5"), deployment_pod("shop", "api", "10.244.2.5"))
    bad = LINE.replace("src=10.244.2.5", "src=10.244.2.500")
    path = dump(tmp_path, LINE, "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.", bad)
    with pytest.raises(BadInputError, match=r"dump\.txt:3: not an IP address"):
        read_conntrack([path], inventory)
    observed = read_conntrack([path], inventory, on_error=OnError.SKIP)
    assert observed.stats.bad.count == 1
    assert observed.stats.ignored == {"prompt or conntrack summary line": 1}
    assert (observed.stats.lines, observed.stats.flows) == (3, 1)
    with pytest.raises(CollectorError, match="not a conntrack dump"):
        read_conntrack([dump(tmp_path, '{"flow": {}}', name="hubble.json")], inventory)


def test_gzip_globs_stdin_and_progress(tmp_path, monkeypatch):
    inventory = cluster(deployment_pod("shop", "web", "10.244.1.5"), deployment_pod("shop", "api", "10.244.2.5"))
    (tmp_path / "node-a.txt.gz").write_bytes(gzip.compress(f"{LINE}\n".encode()))
    dump(tmp_path, entry("10.244.1.5", "10.244.2.5", 8080, sport=2), name="node-b.txt")
    read: list[int] = []
    observed = read_conntrack([str(tmp_path / "node-*")], inventory, progress=read.append)
    assert table(observed)[0][5] == 2
    sizes = [(tmp_path / name).stat().st_size for name in ("node-a.txt.gz", "node-b.txt")]
    assert sum(read) == sum(sizes)  # the files' bytes, as the progress bar's total counts them: gzip compressed
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{LINE}\n".encode())))
    assert table(read_conntrack(["-"], inventory))[0][5] == 1


# --- end to end: the generator's node dumps and its Hubble capture agree ---------------------


def shop_inventory() -> Inventory:
    return inventory_from_objects(list_items(inventory_snapshot(shop_topology()), "generated"), "generated")


def specs(result: api.Recommendation) -> dict[tuple[str, str], dict]:
    return {(plan.namespace, plan.name): plan.manifest["spec"] for plan in result.proposal.policies}


@pytest.mark.parametrize("fmt", ["proc", "list"])
def test_node_dumps_give_the_policies_the_hubble_capture_gives(tmp_path, fmt):
    capture = tmp_path / "capture.json"
    write_capture(str(capture), without_entities(shop_topology()), 20000)
    dumps = write_conntrack_dumps(str(tmp_path), shop_topology(), 2000, fmt=fmt)
    hubble = api.load_observations([str(capture)])
    conntrack = read_conntrack(dumps, shop_inventory())
    for inventory in (None, shop_inventory()):
        from_hubble = api.recommend(hubble, EVERYWHERE, inventory)
        from_conntrack = api.recommend(conntrack, EVERYWHERE, inventory)
        assert specs(from_conntrack) == specs(from_hubble)
        assert proposal_edges(from_conntrack) == proposal_edges(from_hubble)
        assert from_conntrack.check.recall == 1.0 and not from_conntrack.check.excess
    hosts = from_conntrack.proposal.findings.host_ingress
    assert set(hosts["server"]) == {"shop/frontend", "shop/checkout"}
    stats = conntrack.stats
    assert stats.duplicates > 0 and stats.orientation["original tuple"] == 2000
    assert stats.flows == stats.duplicates + 2000
    assert {note for note in stats.resolution if note.startswith("snat")} == {  # the world call, masqueraded
        f"snat: server sees {ip}" for ip in ("172.18.0.3", "172.18.0.4")
    }
    assert not [note for note in stats.resolution if note.startswith(("unresolved", "ambiguous"))]


def test_the_generated_dumps_are_deterministic_real_conntrack_output_without_the_dropped_connection():
    topology = shop_topology()
    lines = list(conntrack_dump(topology, seed=3, fmt="proc", connections=300))
    assert lines == list(conntrack_dump(topology, seed=3, fmt="proc", connections=300))
    per_node = [list(conntrack_dump(topology, 3, node, "proc", 300)) for node in topology.nodes]
    assert sorted(lines) == sorted(line for node in per_node for line in node)
    entries = list(parse_conntrack_lines(lines))
    assert {entry.l3 for entry in entries} == {"ipv4"} and all(entry.zone == 0 for entry in entries)
    listing = list(parse_conntrack_lines(conntrack_dump(topology, seed=3, fmt="list", connections=300)))
    assert [(e.original, e.reply) for e in listing] == [(e.original, e.reply) for e in entries]
    payments = {pod.ips[0] for pod in shop_inventory().pods if pod.namespace == "payments"}
    frontends = {pod.ips[0] for pod in shop_inventory().pods if pod.owner.name == "frontend"}
    assert not [e for e in entries if e.client in frontends and e.server in payments]  # policy-dropped
    assert any(e.dnat for e in entries) and any(not e.dnat and e.server in payments for e in entries)
    with pytest.raises(ValueError, match="fmt"):
        next(conntrack_dump(topology, fmt="xml"))


def test_the_generated_dumps_and_capture_describe_the_same_pods(tmp_path):
    inventory = shop_inventory()
    captured = {
        name for line in flow_lines(shop_topology(), 3000) for name in re.findall(r'"pod_name":"([^"]+)"', line)
    }
    observed = read_conntrack([dump(tmp_path, *conntrack_dump(shop_topology(), connections=3000))], inventory)
    assert set(observed.pods["pod"]) == captured == {pod.name for pod in inventory.pods}
    assert set(observed.observations["server_entity"]) == {POD, WORLD}
    assert set(observed.observations["client_entity"]) == {POD, HOST}


# --- the command line: conntrack dumps are one more kind of FILES ------------------------------


def test_cli_reads_node_dumps_with_the_inventory_as_it_reads_the_hubble_capture(tmp_path):
    capture = tmp_path / "capture.json"
    write_capture(str(capture), without_entities(shop_topology()), 20000)
    write_conntrack_dumps(str(tmp_path), shop_topology(), 2000)
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(inventory_snapshot(shop_topology())))

    def recommend(*files: str) -> str:
        options = ["--inventory", str(snapshot), "--exclude-namespace", "", "-o", "yaml", "-q"]
        outcome = CliRunner().invoke(main, ["recommend", *files, *options])
        assert outcome.exit_code == 0, outcome.output
        return outcome.stdout

    from_hubble = recommend(str(capture))
    assert "kind: NetworkPolicy" in from_hubble
    assert recommend(str(tmp_path / "*.conntrack")) == from_hubble
    saved = tmp_path / "saved.parquet"
    collected = CliRunner().invoke(
        main, ["collect", str(tmp_path / "*.conntrack"), "--inventory", str(snapshot), "-o", str(saved)]
    )
    assert collected.exit_code == 0, collected.output
    assert recommend(str(saved)) == from_hubble


def test_cli_summary_counts_what_resolution_decided_and_a_dump_needs_the_inventory():
    dump = fixture("netns/conntrack-L.txt")
    outcome = CliRunner().invoke(main, ["recommend", dump, "--inventory", str(NETNS_INVENTORY), "-o", "yaml"])
    assert outcome.exit_code == 0, outcome.output
    summary = dict(re.findall(r"│ ([^│]+?) +│ +([\d,%]+) │", outcome.stderr))
    assert summary["connections to Services (backend from DNAT)"] == "3"
    assert summary["unresolved IPs (not in the inventory)"] == summary["ambiguous IPs (several pods)"] == "0"
    assert "port: 8080" in outcome.stdout and "port: 80\n" not in outcome.stdout
    refused = CliRunner().invoke(main, ["recommend", dump])
    assert refused.exit_code == 1
    assert f"{dump}: a conntrack dump only has IP addresses" in refused.stderr and "--inventory" in refused.stderr
