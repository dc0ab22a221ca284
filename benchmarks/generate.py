"""A deterministic generator of realistic Hubble captures (`hubble observe -o jsonpb` lines).

A `Topology` lists workloads (with pods on nodes) and the connections between them; `flow_lines`
turns it into the events a Cilium cluster with policy enforcement would export for that traffic:
policy-verdict events, trace events at both observation points (some without `is_reply`, as
TO_OVERLAY events are), replies, L7 DNS requests and answers, world egress with DNS names, kubelet
probes from the host and policy drops. The same seed gives the same bytes. `inventory_snapshot` is
the cluster behind that traffic, and `conntrack_dump` what the nodes' conntrack tables show for it.

    python -m benchmarks.generate --flows 1000000 -o capture.json          # the shop topology
    python -m benchmarks.generate --workloads 5000 --flows 2000000 -o big.json.gz
    python -m benchmarks.generate -o capture.json --inventory cluster.json  # and its cluster inventory
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

import pandas as pd

from collectors.aggregate import combine_observations
from collectors.records import OBSERVATION_COLUMNS, POD, POD_COLUMNS, ObservationSet, ReadStats

CLUSTER = "default"
START = datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    kind: str = "Deployment"
    labels: tuple[tuple[str, str], ...] = ()
    replicas: int = 2
    identity: int = 0


@dataclass(frozen=True)
class Connection:
    """Observed traffic the generator produces: `client` calls `server` on (protocol, port).

    `server` is a workload key `namespace/name`, or `world:IP` (with `dns_name`), or a Cilium entity:
    `host` (the pod's own node: kubelet probes as client, the kubelet API as server), `remote-node`
    (another node: NodePort traffic SNATed to its IP as client, node-exporter as server),
    `kube-apiserver` (server) or `ingress` (Cilium Ingress, client). `dropped` connections are refused
    by a policy.
    """

    client: str
    server: str
    protocol: str
    port: int
    weight: int = 1
    dns_name: str = ""
    dropped: bool = False


@dataclass
class Topology:
    workloads: list[Workload]
    connections: list[Connection]
    nodes: list[str] = field(default_factory=lambda: ["node-a", "node-b", "node-c"])

    def workload(self, key: str) -> Workload:
        return next(w for w in self.workloads if f"{w.namespace}/{w.name}" == key)


def shop_topology() -> Topology:
    """The example shop: frontend → checkout → payments, catalog with its database, kube-dns for all,
    checkout calling a public payment API, kubelet probes, and one policy drop; the frontend reached
    through a NodePort from other nodes and through Cilium Ingress; Prometheus calling the API server,
    the kubelets and node-exporter on the other nodes."""

    def app(namespace: str, name: str, kind: str = "Deployment", replicas: int = 2, **extra: str) -> Workload:
        labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", **extra}
        return Workload(namespace, name, kind, tuple(sorted(labels.items())), replicas)

    workloads = [
        app("shop", "frontend", replicas=3),
        app("shop", "checkout"),
        app("shop", "catalog"),
        app("shop", "catalog-db", kind="StatefulSet", replicas=1),
        app("payments", "payments"),
        app("monitoring", "prometheus", replicas=1),
        Workload("kube-system", "coredns", labels=(("k8s-app", "kube-dns"),), replicas=2),
    ]
    dns = [
        Connection(f"{w.namespace}/{w.name}", "kube-system/coredns", "UDP", 53, 3)
        for w in workloads
        if w.name != "coredns"
    ]
    connections = [
        Connection("shop/frontend", "shop/checkout", "TCP", 8080, 10),
        Connection("shop/frontend", "shop/catalog", "TCP", 8080, 20),
        Connection("shop/checkout", "payments/payments", "TCP", 8443, 5),
        Connection("shop/catalog", "shop/catalog-db", "TCP", 5432, 15),
        Connection(
            "shop/checkout",
            "world:203.0.113.10",
            "TCP",
            443,
            2,
            dns_name="api.payments.example.com",
        ),
        Connection("host", "shop/frontend", "TCP", 8080, 2),
        Connection("host", "shop/checkout", "TCP", 8080, 1),
        Connection("shop/frontend", "payments/payments", "TCP", 8443, 1, dropped=True),
        Connection("remote-node", "shop/frontend", "TCP", 8080, 2),
        Connection("ingress", "shop/frontend", "TCP", 8080, 3),
        Connection("monitoring/prometheus", "kube-apiserver", "TCP", 6443, 1),
        Connection("monitoring/prometheus", "host", "TCP", 10250, 1),
        Connection("monitoring/prometheus", "remote-node", "TCP", 9100, 1),
        *dns,
    ]
    return Topology(_with_identities(workloads), connections)


def scale_topology(
    workloads: int, edges_per_workload: int = 3, namespaces: int = 0, seed: int = 7, *, edges: int | None = None
) -> Topology:
    """`workloads` workloads over `namespaces` namespaces (default: one per 20 workloads), each calling
    `edges_per_workload` others on a fixed port, plus kube-dns. With `edges`, the calls are spread so
    that there are exactly `edges` connections, kube-dns included."""
    rng = random.Random(seed)
    namespaces = namespaces or max(1, workloads // 20)
    items = [
        Workload(
            f"ns-{i % namespaces:04d}",
            f"svc-{i:05d}",
            labels=(("app", f"svc-{i:05d}"), ("tier", "backend")),
            replicas=1 + i % 3,
        )
        for i in range(workloads)
    ]
    items.append(Workload("kube-system", "coredns", labels=(("k8s-app", "kube-dns"),), replicas=2))
    connections = []
    for i, client in enumerate(items[:-1]):
        calls = edges_per_workload
        if edges is not None:  # spread edges - workloads calls evenly, skipping the client itself
            calls = (edges - workloads) * (i + 1) // workloads - (edges - workloads) * i // workloads
        for server in rng.sample([s for s in range(workloads) if s != i], min(calls, workloads - 1)):
            other = items[server]
            connections.append(
                Connection(
                    f"{client.namespace}/{client.name}",
                    f"{other.namespace}/{other.name}",
                    "TCP",
                    8000 + server % 50,
                )
            )
        connections.append(Connection(f"{client.namespace}/{client.name}", "kube-system/coredns", "UDP", 53))
    return Topology(_with_identities(items), connections)


def _with_identities(workloads: list[Workload]) -> list[Workload]:
    return [Workload(w.namespace, w.name, w.kind, w.labels, w.replicas, 10000 + i) for i, w in enumerate(workloads)]


# -- rendering ---------------------------------------------------------------------------------

_SAFE = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class _Pod:
    name: str
    ip: str
    node: str
    endpoint_id: int
    json: str  # the Endpoint object, pre-serialised
    workload: Workload
    template_hash: str  # of the Deployment's ReplicaSet


def _pods(topology: Topology, rng: random.Random) -> dict[str, list[_Pod]]:
    pods: dict[str, list[_Pod]] = {}
    counter = 0
    for workload in topology.workloads:
        key = f"{workload.namespace}/{workload.name}"
        template_hash = "".join(rng.choice(_SAFE) for _ in range(10))
        for replica in range(workload.replicas):
            counter += 1
            if workload.kind == "StatefulSet":
                name = f"{workload.name}-{replica}"
            else:
                name = f"{workload.name}-{template_hash}-" + "".join(rng.choice(_SAFE) for _ in range(5))
            labels = [f"k8s:{k}={v}" for k, v in workload.labels] + [
                f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={workload.namespace}",
                f"k8s:io.cilium.k8s.policy.cluster={CLUSTER}",
                f"k8s:io.cilium.k8s.policy.serviceaccount={workload.name}",
                f"k8s:io.kubernetes.pod.namespace={workload.namespace}",
            ]
            endpoint = {
                "ID": 100 + counter,
                "identity": workload.identity,
                "cluster_name": CLUSTER,
                "namespace": workload.namespace,
                "labels": sorted(labels),
                "pod_name": name,
                "workloads": [{"name": workload.name, "kind": workload.kind}],
            }
            ip = f"10.{244 + counter // 65536}.{counter // 256 % 256}.{counter % 256}"
            node = topology.nodes[counter % len(topology.nodes)]
            pods.setdefault(key, []).append(
                _Pod(name, ip, node, 100 + counter, _dumps(endpoint), workload, template_hash)
            )
    return pods


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


_HOST = _dumps({"ID": 1, "identity": 1, "labels": ["reserved:host"]})
_WORLD = _dumps({"identity": 2, "labels": ["reserved:world"]})
_ENTITIES = {
    "host": _HOST,
    "remote-node": _dumps({"identity": 6, "labels": ["reserved:remote-node"]}),
    "kube-apiserver": _dumps({"identity": 7, "labels": ["reserved:kube-apiserver", "reserved:remote-node"]}),
    "ingress": _dumps({"identity": 8, "labels": ["reserved:ingress"]}),
}
"""Cilium's reserved identities as Hubble prints them (the API server runs on a control-plane node)."""
_CLIENT_ENTITIES = ("host", "remote-node", "ingress")
"""Entities that call pods: only the server's node sees that traffic (no client-side events)."""
_NODE_IPS = {"node-a": "172.18.0.2", "node-b": "172.18.0.3", "node-c": "172.18.0.4"}
_APISERVER_IP = "172.18.0.5"
_INGRESS_IPS = {"node-a": "10.244.0.200", "node-b": "10.244.1.200", "node-c": "10.244.2.200"}
"""Cilium Ingress's per-node source addresses (taken from each node's pod CIDR)."""


def _node_ip(node: str) -> str:
    return _NODE_IPS.get(node, "172.18.0.9")


def flow_lines(topology: Topology, flows: int, seed: int = 1) -> Iterator[str]:
    """Exactly `flows` jsonpb lines (the last connection may be cut short)."""
    rng = random.Random(seed)
    pods = _pods(topology, rng)
    weights = [c.weight for c in topology.connections]
    clock = START
    emitted = 0
    while True:
        connection = rng.choices(topology.connections, weights)[0]
        for line in _connection_events(connection, pods, rng, clock, topology):
            yield line
            emitted += 1
            if emitted >= flows:
                return
        clock += timedelta(milliseconds=rng.randint(5, 1500))


def _side(key: str, pods: dict[str, list[_Pod]], rng: random.Random, topology: Topology) -> tuple[str, str, str, str]:
    """(endpoint JSON, IP, pod name, node) for one side of a connection; an entity's node and IP
    are settled against the other side in `_connection_events`."""
    if key in _ENTITIES:
        return _ENTITIES[key], "", "", ""
    if key.startswith("world:"):
        return _WORLD, key.removeprefix("world:"), "", ""
    pod = rng.choice(pods[key])
    return pod.json, pod.ip, pod.name, pod.node


def _connection_events(c: Connection, pods, rng: random.Random, clock: datetime, topology: Topology) -> list[str]:
    client, client_ip, _, client_node = _side(c.client, pods, rng, topology)
    server, server_ip, _, server_node = _side(c.server, pods, rng, topology)
    if c.client in _CLIENT_ENTITIES:
        client_node = server_node
        client_ip = _entity_ip(c.client, server_node, rng, topology)
    if c.server in _ENTITIES:
        server_node = client_node
        server_ip = _entity_ip(c.server, client_node, rng, topology)
    client_node = client_node or server_node
    server_node = server_node or client_node
    node_side = c.server in _ENTITIES or c.server.startswith("world:")
    """The server has no endpoint: only the client's node sees the traffic."""
    sport = rng.randint(32768, 60999)
    names = f',"destination_names":["{c.dns_name}"]' if c.dns_name else ""
    events: list[str] = []
    tick = [clock]

    def emit(
        src,
        src_ip,
        sp,
        dst,
        dst_ip,
        dp,
        node,
        *,
        flags="",
        extra="",
        verdict="FORWARDED",
        kind='{"type":4}',
        reply: bool | None = False,
        flow_type="L3_L4",
    ) -> None:
        tick[0] += timedelta(microseconds=rng.randint(1, 400))
        stamp = tick[0].strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{rng.randint(0, 999):03d}Z"
        if c.protocol == "TCP":
            l4 = f'{{"TCP":{{"source_port":{sp},"destination_port":{dp},"flags":{{{flags}}}}}}}'
        else:
            l4 = f'{{"{c.protocol}":{{"source_port":{sp},"destination_port":{dp}}}}}'
        is_reply = "" if reply is None else f',"is_reply":{"true" if reply else "false"}'
        events.append(
            f'{{"flow":{{"time":"{stamp}","uuid":"{uuidlib.UUID(int=rng.getrandbits(128), version=4)}",'
            f'"verdict":"{verdict}","IP":{{"source":"{src_ip}","destination":"{dst_ip}","ipVersion":"IPv4"}},'
            f'"l4":{l4},"source":{src},"destination":{dst},"Type":"{flow_type}","node_name":"{node}",'
            f'"event_type":{kind}{is_reply}{extra}}},"node_name":"{node}","time":"{stamp}"}}'
        )

    fwd = (client, client_ip, sport, server, server_ip, c.port)
    back = (server, server_ip, c.port, client, client_ip, sport)
    syn, synack, ack = '"SYN":true', '"SYN":true,"ACK":true', '"ACK":true,"PSH":true'
    if c.dropped:
        emit(
            *fwd,
            client_node,
            flags=syn,
            verdict="DROPPED",
            kind='{"type":5}',
            extra=',"traffic_direction":"EGRESS","drop_reason_desc":"POLICY_DENIED"',
        )
        return events
    if c.client not in _CLIENT_ENTITIES:
        emit(
            *fwd,
            client_node,
            flags=syn,
            kind='{"type":5}',
            extra=f',"traffic_direction":"EGRESS"{names}',
        )
    elif c.client != "host":  # the server's ingress policy decides (the host's own traffic is allowed anyway)
        emit(*fwd, server_node, flags=syn, kind='{"type":5}', extra=',"traffic_direction":"INGRESS"')
    if c.protocol == "UDP" and c.port == 53:
        query, answer = _dns_question(c.client, topology, rng)
        emit(
            *fwd,
            client_node,
            kind='{"type":129}',
            flow_type="L7",
            extra=f',"traffic_direction":"EGRESS","l7":{{"type":"REQUEST","dns":{{"query":"{query}"}}}}',
        )
        emit(
            *back,
            client_node,
            kind='{"type":129}',
            flow_type="L7",
            reply=True,
            extra=f',"traffic_direction":"EGRESS","l7":{{"type":"RESPONSE","dns":{{"query":"{query}",'
            f'"ips":["{answer}"]}}}}',
        )
    if client_node != server_node:
        emit(
            *fwd,
            client_node,
            flags=syn,
            kind='{"type":4,"sub_type":4}',
            reply=None,
            extra=',"trace_observation_point":"TO_OVERLAY"',
        )
    if not node_side:
        emit(
            *fwd,
            server_node,
            flags=syn,
            extra=',"traffic_direction":"INGRESS","trace_observation_point":"TO_ENDPOINT"',
        )
    if server_node != client_node and not node_side:
        emit(
            *back,
            server_node,
            flags=synack,
            kind='{"type":4,"sub_type":4}',
            reply=None,
            extra=',"trace_observation_point":"TO_OVERLAY"',
        )
    if c.client not in _CLIENT_ENTITIES:
        emit(
            *back,
            client_node,
            flags=synack,
            reply=True,
            extra=',"traffic_direction":"EGRESS","trace_observation_point":"TO_ENDPOINT"',
        )
    if c.protocol == "TCP":
        emit(
            *fwd,
            server_node or client_node,
            flags=ack,
            reply=None if server_node != client_node else False,
            kind='{"type":4,"sub_type":4}' if server_node != client_node else '{"type":4}',
            extra=',"trace_observation_point":"TO_OVERLAY"' if server_node != client_node else "",
        )
    return events


def _entity_ip(entity: str, node: str, rng: random.Random, topology: Topology) -> str:
    """The address `entity` has as seen from a pod on `node`."""
    if entity == "host":
        return _node_ip(node)
    if entity == "remote-node":
        return _node_ip(rng.choice([other for other in topology.nodes if other != node] or topology.nodes))
    if entity == "ingress":
        return _INGRESS_IPS.get(node, "10.244.9.200")
    return _APISERVER_IP


def _dns_question(client: str, topology: Topology, rng: random.Random) -> tuple[str, str]:
    """A DNS name the client looks up before calling one of its servers, and the answer."""
    servers = [
        c
        for c in topology.connections
        if c.client == client and c.port != 53 and ("/" in c.server or c.dns_name or c.server == "kube-apiserver")
    ] or [Connection(client, "kube-system/kube-dns", "UDP", 53)]
    server = rng.choice(servers)
    if server.dns_name:
        return server.dns_name + ".", server.server.removeprefix("world:")
    if server.server == "kube-apiserver":
        return "kubernetes.default.svc.cluster.local.", "10.96.0.1"
    namespace, name = server.server.split("/")
    index = sum(map(ord, server.server)) % 250 + 1
    return f"{name}.{namespace}.svc.cluster.local.", f"10.96.{index // 256}.{index % 256}"


# -- inventory ---------------------------------------------------------------------------------

KUBE_DNS_IP = "10.96.0.10"
_CREATED = (START - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def inventory_snapshot(topology: Topology, seed: int = 1) -> dict:
    """The cluster behind `flow_lines(topology, n, seed)`, as `kubectl get pods,services,endpointslices,
    namespaces,nodes -A -o json` would print it.

    Pods are exactly the ones the flows use (names, IPs, nodes, labels), owned as controllers own them
    (a Deployment's pods by its ReplicaSet `<name>-<pod-template-hash>`, others by their workload).
    Every workload that is called gets a ClusterIP Service and an EndpointSlice whose ports (and
    target ports) are the ones it is called on; the one labelled `k8s-app=kube-dns` is `kube-dns` at
    10.96.0.10. Nodes have no podCIDR: pod IPs are not allocated per node (as with Cilium's
    cluster-pool IPAM).
    """
    rng = random.Random(seed)
    pods = _pods(topology, rng)
    called = _called_ports(topology)
    items = [_pod_object(pod, called.get(key, [])) for key, members in pods.items() for pod in members]
    slices = []
    for index, workload in enumerate(topology.workloads):
        key = f"{workload.namespace}/{workload.name}"
        if key in called:
            service = _service_object(workload, index, called[key])
            items.append(service)
            slices.append(_endpoint_slice_object(service, pods[key], called[key], rng))
    items += slices
    items += [
        _object("v1", "Namespace", name, labels={"kubernetes.io/metadata.name": name})
        for name in sorted({w.namespace for w in topology.workloads})
    ]
    items += [_node_object(node) for node in topology.nodes]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def _called_ports(topology: Topology) -> dict[str, list[tuple[str, int]]]:
    """Workload key → the (protocol, port) pairs it is called on, sorted."""
    ports: dict[str, set[tuple[str, int]]] = {}
    for c in topology.connections:
        if c.server not in _ENTITIES and not c.server.startswith("world:"):
            ports.setdefault(c.server, set()).add((c.protocol, c.port))
    return {key: sorted(pairs) for key, pairs in ports.items()}


def _port_name(protocol: str, port: int) -> str:
    return f"{protocol.lower()}-{port}"


def _object(api_version: str, kind: str, name: str, namespace: str = "", **metadata: object) -> dict:
    identity = {"name": name, **({"namespace": namespace} if namespace else {})}
    uid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{kind}/{namespace}/{name}"))
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {**identity, "uid": uid, "creationTimestamp": _CREATED, **metadata},
    }


def _pod_object(pod: _Pod, ports: list[tuple[str, int]]) -> dict:
    workload = pod.workload
    labels = dict(workload.labels)
    if workload.kind == "Deployment":
        owner_kind, owner_name = "ReplicaSet", f"{workload.name}-{pod.template_hash}"
        labels["pod-template-hash"] = pod.template_hash
    else:
        owner_kind, owner_name = workload.kind, workload.name
    if workload.kind == "StatefulSet":
        labels["controller-revision-hash"] = f"{workload.name}-{pod.template_hash}"
        labels["statefulset.kubernetes.io/pod-name"] = pod.name
    owner = _object("apps/v1", owner_kind, owner_name, workload.namespace)
    reference = {"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": owner["metadata"]["uid"]}
    container_ports = [
        {"name": _port_name(protocol, port), "containerPort": port, "protocol": protocol} for protocol, port in ports
    ]
    return {
        **_object(
            "v1",
            "Pod",
            pod.name,
            workload.namespace,
            labels=labels,
            ownerReferences=[{**reference, "controller": True, "blockOwnerDeletion": True}],
        ),
        "spec": {
            "nodeName": pod.node,
            "containers": [
                {"name": workload.name, "image": f"registry.example/{workload.name}:1.0", "ports": container_ports}
            ],
        },
        "status": {"phase": "Running", "hostIP": _node_ip(pod.node), "podIP": pod.ip, "podIPs": [{"ip": pod.ip}]},
    }


def _service_name_and_ip(workload: Workload, index: int) -> tuple[str, str]:
    """The Service of the `index`-th workload of the topology: its name and ClusterIP."""
    if dict(workload.labels).get("k8s-app") == "kube-dns":
        return "kube-dns", KUBE_DNS_IP
    return workload.name, f"10.96.{1 + index // 250}.{1 + index % 250}"


def _service_object(workload: Workload, index: int, ports: list[tuple[str, int]]) -> dict:
    selector = dict(workload.labels)
    name, ip = _service_name_and_ip(workload, index)
    service_ports = [
        {"name": _port_name(protocol, port), "port": port, "targetPort": port, "protocol": protocol}
        for protocol, port in ports
    ]
    spec = {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": service_ports, "selector": selector}
    return {**_object("v1", "Service", name, workload.namespace), "spec": spec}


def _endpoint_slice_object(service: dict, pods: list[_Pod], ports: list[tuple[str, int]], rng: random.Random) -> dict:
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    suffix = "".join(rng.choice(_SAFE) for _ in range(5))
    endpoints = [
        {
            "addresses": [pod.ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": pod.node,
            "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
        }
        for pod in pods
    ]
    ports = [{"name": _port_name(protocol, port), "port": port, "protocol": protocol} for protocol, port in ports]
    labels = {
        "kubernetes.io/service-name": name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    return {
        **_object("discovery.k8s.io/v1", "EndpointSlice", f"{name}-{suffix}", namespace, labels=labels),
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def _node_object(node: str) -> dict:
    return {
        **_object("v1", "Node", node, labels={"kubernetes.io/hostname": node, "kubernetes.io/os": "linux"}),
        "status": {
            "addresses": [{"type": "InternalIP", "address": _node_ip(node)}, {"type": "Hostname", "address": node}]
        },
    }


# -- conntrack ---------------------------------------------------------------------------------

CONNTRACK_FORMATS = ("proc", "list")
_PORTS_FROM, _PORTS = 32768, 28232  # Linux's default ephemeral range, 32768-60999
_TCP_STATES = ("ESTABLISHED", "ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "FIN_WAIT")


def conntrack_dump(
    topology: Topology, seed: int = 1, node: str | None = None, fmt: str = "proc", connections: int = 1000
) -> Iterator[str]:
    """The conntrack tables of the nodes (or of `node` alone) after `connections` connections of the
    topology's traffic: `/proc/net/nf_conntrack` lines (`fmt="proc"`) or `conntrack -L` lines ("list").

    The cluster is `inventory_snapshot(topology, seed)`'s: the same pods, IPs, nodes and Services.
    Each of the topology's connections is made once, in order, then they are drawn by weight as in
    `flow_lines`. A pod calls a workload through its Service four times in five (DNAT from the
    ClusterIP to the chosen backend and its target port), else at the pod IP; the world call is
    masqueraded to the client's node IP (SNAT); kubelet probes come from the server's node IP. A
    connection between pods on two nodes is in both tables, with the DNAT in the client's. Policy
    drops are absent: a dropped packet makes no conntrack entry, and so is traffic of Cilium's other
    entities (node-exporter, the API server, NodePort and Ingress clients). The same seed gives the
    same lines.
    """
    if fmt not in CONNTRACK_FORMATS:
        raise ValueError(f"fmt must be one of {CONNTRACK_FORMATS}, not {fmt!r}")
    rng = random.Random(seed)
    pods = _pods(topology, rng)
    cluster_ips = {
        f"{w.namespace}/{w.name}": _service_name_and_ip(w, index)[1] for index, w in enumerate(topology.workloads)
    }
    made = [c for c in without_entities(topology).connections if not c.dropped]
    weights = [c.weight for c in made]
    used_ports: dict[str, int] = {}
    for index in range(connections):
        connection = made[index] if index < len(made) else rng.choices(made, weights)[0]
        for where, line in _conntrack_entries(connection, pods, cluster_ips, used_ports, rng):
            if node is None or where == node:
                yield f"{line} use=1" if fmt == "list" else f"ipv4     2 {line} zone=0 use=2"


def without_entities(topology: Topology) -> Topology:
    """The topology without the traffic of Cilium's entities other than kubelet probes (what a
    conntrack dump of the nodes and its inventory describe alike)."""
    kept = [c for c in topology.connections if c.server not in _ENTITIES and c.client not in ("remote-node", "ingress")]
    return Topology(topology.workloads, kept, topology.nodes)


def _conntrack_entries(
    c: Connection,
    pods: dict[str, list[_Pod]],
    cluster_ips: dict[str, str],
    used_ports: dict[str, int],
    rng: random.Random,
) -> list[tuple[str, str]]:
    """(node, line) of every table that holds one connection; the lines lack what ends a `conntrack
    -L` line (`use=1`) or a /proc one (`zone=0 use=2`), and /proc's layer-3 prefix."""
    backend = None if c.server.startswith("world:") else rng.choice(pods[c.server])
    if c.client == "host":
        client_node = backend.node  # type: ignore[union-attr]  # kubelet probes a pod of its node
        client_ip = _node_ip(client_node)
    else:
        client = rng.choice(pods[c.client])
        client_node, client_ip = client.node, client.ip
    if backend is None:
        server_ip = dialled = c.server.removeprefix("world:")
        seen_as, server_node = _node_ip(client_node), client_node
    else:
        server_ip, seen_as, server_node = backend.ip, client_ip, backend.node
        dialled = cluster_ips[c.server] if c.client != "host" and rng.random() < 0.8 else server_ip
    number = used_ports.get(seen_as, 0)
    used_ports[seen_as] = number + 1
    sport = _PORTS_FROM + number * 7919 % _PORTS  # a permutation: unique per address for _PORTS connections
    tables = [(client_node, client_ip, dialled)]
    if server_node != client_node:
        tables.append((server_node, seen_as, server_ip))
    return [(where, _conntrack_line(c, src, dst, sport, server_ip, seen_as, rng)) for where, src, dst in tables]


def _conntrack_line(
    c: Connection, src: str, dst: str, sport: int, server: str, seen_as: str, rng: random.Random
) -> str:
    counted = rng.random() < 0.5
    sent = f" packets={rng.randint(1, 40)} bytes={rng.randint(60, 60000)}" if counted else ""
    received = f" packets={rng.randint(1, 40)} bytes={rng.randint(60, 900000)}" if counted else ""
    if c.protocol == "TCP":
        head, assured = f"tcp      6 {rng.randint(1, 432000)} {rng.choice(_TCP_STATES)}", " [ASSURED]"
    else:
        head, assured = f"udp      17 {rng.randint(1, 180)}", "" if c.port == 53 else " [ASSURED]"
    return (
        f"{head} src={src} dst={dst} sport={sport} dport={c.port}{sent} "
        f"src={server} dst={seen_as} sport={c.port} dport={sport}{received}{assured} mark=0"
    )


def write_conntrack_dumps(
    directory: str, topology: Topology, connections: int, seed: int = 1, fmt: str = "proc"
) -> list[str]:
    """Write each node's `conntrack_dump` to `<directory>/<node>.conntrack`; returns the paths."""
    paths = []
    for node in topology.nodes:
        path = f"{directory}/{node}.conntrack"
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(f"{line}\n" for line in conntrack_dump(topology, seed, node, fmt, connections))
        paths.append(path)
    return paths


def _open_text(path: str) -> TextIO:
    """Open `path` for writing text, gzip-compressed when it ends in `.gz`."""
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "wt", encoding="utf-8")  # type: ignore[operator]


def write_capture(path: str, topology: Topology, flows: int, seed: int = 1) -> None:
    """Write `flows` lines to `path` (gzip-compressed when it ends in `.gz`)."""
    with _open_text(path) as out:
        for line in flow_lines(topology, flows, seed):
            out.write(line)
            out.write("\n")


def write_inventory(path: str, topology: Topology, seed: int = 1) -> None:
    """Write `inventory_snapshot` as JSON to `path` (gzip-compressed when it ends in `.gz`)."""
    with _open_text(path) as out:
        json.dump(inventory_snapshot(topology, seed), out, indent=4, sort_keys=True)
        out.write("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=0, help="scale topology size (default: the shop)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", help="the capture (Hubble jsonpb lines)")
    parser.add_argument("--inventory", metavar="PATH", help="also write the cluster inventory (kubectl get -o json)")
    args = parser.parse_args(argv)
    if not args.output and not args.inventory:
        parser.error("give -o/--output, --inventory, or both")
    topology = scale_topology(args.workloads) if args.workloads else shop_topology()
    if args.output:
        write_capture(args.output, topology, args.flows, args.seed)
    if args.inventory:
        write_inventory(args.inventory, topology, args.seed)


if __name__ == "__main__":
    main()


def observation_set(topology: Topology) -> ObservationSet:
    """The topology's traffic as already-aggregated observations (one row per connection), with its
    pods: what ingest would produce, without generating and reading flows (for large benchmarks)."""
    workloads = {f"{w.namespace}/{w.name}": w for w in topology.workloads}

    def side(key: str) -> dict[str, str]:
        if key in workloads:
            w = workloads[key]
            labels = ",".join(f"{k}={v}" for k, v in sorted(w.labels))
            return {
                "entity": POD,
                "namespace": w.namespace,
                "workload": w.name,
                "kind": w.kind,
                "labels": labels,
                "ip": "",
                "cluster": CLUSTER,
            }
        entity, _, ip = key.partition(":")
        ip = ip or _entity_ip(entity, topology.nodes[0], random.Random(0), topology)
        return {"entity": entity, "namespace": "", "workload": "", "kind": "", "labels": "", "ip": ip, "cluster": ""}

    rows = []
    for connection in topology.connections:
        client, server = (
            side(connection.client) if connection.client != "host" else side("host:172.18.0.2"),
            side(connection.server),
        )
        rows.append(
            {
                **{f"client_{k}": v for k, v in client.items()},
                **{f"server_{k}": v for k, v in server.items()},
                "protocol": connection.protocol,
                "port": connection.port,
                "verdict": "DROPPED" if connection.dropped else "FORWARDED",
                "count": connection.weight,
                "first_seen": START,
                "last_seen": START,
                "client_pod": "",
                "server_pod": "",
                "allowed_by": "",
                "drop_reasons": "POLICY_DENIED" if connection.dropped else "",
                "services": "",
            }
        )
    pods = pd.DataFrame(
        [
            (
                CLUSTER,
                w.namespace,
                f"{w.name}-{replica}",
                w.name,
                w.kind,
                ",".join(f"{k}={v}" for k, v in sorted(w.labels)),
            )
            for w in topology.workloads
            for replica in range(w.replicas)
        ],
        columns=list(POD_COLUMNS),
    )
    frame = combine_observations(pd.DataFrame(rows, columns=list(OBSERVATION_COLUMNS)))
    return ObservationSet(frame, pods, frame.iloc[0:0], {}, ReadStats())
