"""conntrack dumps and the cluster inventory → oriented, de-duplicated, aggregated observations.

Orientation needs no heuristic (DESIGN.md, "Orientation"): the ORIGINAL tuple's source is the
client; after DNAT (a Service) the server is the REPLY tuple's source and its port the target port,
never the Service port; SNAT is recognised (the server sees `reply.dst`, usually a node IP) and
counted. `[UNREPLIED]` connections get the verdict UNREPLIED: reported, never allowed.

A dump is a snapshot, so a row's `count` is connections. The same connection seen on two nodes
(and in several events of a stream) counts once, keyed on its reply tuple (`conntrack.Identity`);
the most telling copy wins: an answered one over an unanswered one, then the client node's, which
shows the NAT (the Service the client addressed, its real address behind SNAT). Times come from
the entries (event times, ktimestamp, XML) when the format has them, else they are unknown.

Memory: the records of distinct IP-level connections (client, address dialled, server, port, the
address the server sees, answered or not), plus one 64-bit hash per connection of the current
generation (`ConntrackIngest.end_generation`), which recognises the copies. All paths given to
`read_conntrack` are one generation: one snapshot of every node. Two connections share a hash
with a probability of about n²/2⁶⁵ (1e-8 for a million connections).

Endpoints are named with the inventory (`AddressResolver`), per distinct connection, after reading.
"""

from __future__ import annotations

import gc
import ipaddress
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
import pandas as pd

from collectors.aggregate import NO_TIME_FIRST, NO_TIME_LAST, Aggregate, ObservationAggregator, empty_observations
from collectors.conntrack import Connection, ConnectionScanner, ConntrackStats
from collectors.errors import OnError
from collectors.inventory import Inventory, Pod, Service, ServicePort
from collectors.records import (
    HOST,
    KUBE_APISERVER,
    POD,
    POD_COLUMNS,
    REMOTE_NODE,
    UNKNOWN,
    WORLD,
    Endpoint,
    ObservationSet,
    ReadStats,
    labels_to_text,
)
from collectors.sources import display_name, expand_inputs

FORWARDED = "FORWARDED"
UNREPLIED = "UNREPLIED"
"""The verdict of connections that never got an answer: not among `SEEN_VERDICTS`, so never allowed."""

PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "icmp": "ICMPv4", "icmpv6": "ICMPv6"}
"""conntrack protocol names → the observation's (Hubble's); other protocols are skipped and counted."""

# Notes of `ReadStats.resolution` that `resolution_counts` sums up (the IP or address ends the note).
SERVICE_FROM_DNAT = "service backend from DNAT"
SNAT = "snat: server sees "
UNRESOLVED_IP = "unresolved IP: "
AMBIGUOUS_IP = "ambiguous IP: "

API_SERVER_SERVICE = ("default", "kubernetes")
_ENDED_PHASES = ("Succeeded", "Failed")
_INFERRED_PREFIX = {4: 16, 6: 64}


# -- naming endpoints ---------------------------------------------------------------------------


class Side(NamedTuple):
    """One resolved end of a connection: its endpoint, an example pod name, what it was found as."""

    endpoint: Endpoint
    pod: str
    found_as: str


class Resolution(NamedTuple):
    """A connection in the observation's terms; `notes` name what resolution decided, for the stats."""

    client: Side
    server: Side
    protocol: str
    port: int
    service: str
    notes: tuple[str, ...]


class AddressResolver:
    """Names the ends of IP-level connections from the cluster inventory.

    - A pod IP is the pod that held it at the connection's time: pod IPs are reused, so among
      several holders the one alive then wins (a holder's life ends at its deletion or at the next
      holder's creation); without a time, or if that does not single one out, a running pod is
      preferred, the newest, and the IP is reported as ambiguous.
    - A node IP, or the gateway of a node's pod CIDR (its first address: `cni0`, the node's side of
      the pod network, where kubelet probes come from), is `host` when it is the node of the other
      end, `remote-node` otherwise; a server
      port that a hostNetwork pod of that node declares names that pod's workload, on the node
      entity (a podSelector cannot select it: rules need an ipBlock of the node IP).
    - A backend of the `default/kubernetes` Service is `kube-apiserver`.
    - Another address inside the cluster's networks is `unknown` (reported as unresolved); any
      other is `world`. The networks are the nodes' pod CIDRs plus `cluster_cidrs`; without
      `cluster_cidrs`, the /16 (IPv6: /64) of every pod IP and ClusterIP is taken as the cluster's.
    """

    def __init__(self, inventory: Inventory, cluster_cidrs: Sequence[str] | None = None) -> None:
        self.inventory = inventory
        self._networks = _cluster_networks(inventory, cluster_cidrs)
        self._holders: dict[str, tuple[tuple[Pod, float, float], ...]] = {}
        self._nodes: dict[str, str] = {}
        self._in_cluster: dict[str, bool] = {}
        self._sides: dict[tuple, Side] = {}
        self._endpoints: dict[Endpoint, Endpoint] = {}
        """Every endpoint made, by value: equal endpoints are one object."""
        self._api_servers: set[tuple[str, int]] = set()
        api_server = next((s for s in inventory.services if (s.namespace, s.name) == API_SERVER_SERVICE), None)
        if api_server is not None:
            self._api_servers = _backends(inventory, api_server, api_server.ports)
        self._node_ports = {
            (port.protocol, port.node_port): service
            for service in inventory.services
            for port in service.ports
            if port.node_port
        }
        self._host_network_pods = {
            (pod.node, port.protocol, port.port): pod
            for pod in inventory.pods
            if pod.host_network
            for port in pod.ports
        }

    def reused(self, connection: Connection) -> bool:
        """Whether an end's IP was held by several pods, so that the connection's time matters."""
        return len(self._pod_holders(connection.client)) > 1 or len(self._pod_holders(connection.server)) > 1

    def resolve(self, connection: Connection, when: float | None) -> Resolution | str:
        """The connection's observation, or why it is not one (a reason to count as skipped)."""
        protocol = PROTOCOLS.get(connection.protocol)
        if protocol is None:
            return f"protocol {connection.protocol}"
        if _loopback(connection.client) or _loopback(connection.server):
            return "loopback address (inside one host)"
        notes: list[str] = []
        server_ip, port, service = self._server(connection, protocol, notes)
        if connection.snat:
            notes.append(f"{SNAT}{connection.seen_as}")
        client_pod = self.pod(connection.client, when, notes)
        server_pod = self.pod(server_ip, when, notes)
        client_node, server_node = self._node(connection.client, client_pod), self._node(server_ip, server_pod)
        client = self._side(connection.client, client_pod, server_node)
        server = self._side(server_ip, server_pod, client_node, protocol, port)
        notes += [f"client {client.found_as}", f"server {server.found_as}"]
        notes += [f"{UNRESOLVED_IP}{side.endpoint.ip}" for side in (client, server) if side.found_as == UNKNOWN]
        if connection.unreplied:
            notes.append("unreplied")
        name = f"{service.namespace}/{service.name}" if service is not None else ""
        return Resolution(client, server, protocol, port, name, tuple(notes))

    def _server(self, connection: Connection, protocol: str, notes: list[str]) -> tuple[str, int, Service | None]:
        """The server's address and port, and the Service the client addressed if any. After DNAT
        the server is the reply's source; a ClusterIP reached without DNAT (say, an unanswered
        entry) is its only ready backend, if it has exactly one, else it stays unresolved."""
        if connection.dnat:
            service = self._dialled_service(connection.dialled, protocol, connection.dialled_port)
            if service is not None:
                notes.append(SERVICE_FROM_DNAT)
            return connection.server, connection.server_port, service
        service = self.inventory.service_by_cluster_ip(connection.server)
        if service is None:
            return connection.server, connection.server_port, None
        dialled = [port for port in service.ports if (port.protocol, port.port) == (protocol, connection.server_port)]
        backends = _backends(self.inventory, service, dialled)
        if len(backends) != 1:
            notes.append(f"service without a unique backend: {service.namespace}/{service.name}")
            return connection.server, connection.server_port, service
        notes.append("service backend from EndpointSlice")
        ((address, target_port),) = backends
        return address, target_port, service

    def _dialled_service(self, ip: str, protocol: str, port: int) -> Service | None:
        """The Service behind an address a client dialled: a ClusterIP, or a node IP's NodePort."""
        service = self.inventory.service_by_cluster_ip(ip)
        if service is None and self.inventory.node_by_ip(ip) is not None:
            service = self._node_ports.get((protocol, port))
        return service

    def pod(self, ip: str, when: float | None, notes: list[str] | None = None) -> Pod | None:
        """The pod that held `ip` at `when` (see the class docstring); an ambiguity goes to `notes`."""
        holders = self._pod_holders(ip)
        if len(holders) <= 1:
            return holders[0][0] if holders else None
        if when is not None:
            alive = [pod for pod, start, end in holders if start <= when < end]
            if len(alive) == 1:
                return alive[0]
        if notes is not None:
            notes.append(f"{AMBIGUOUS_IP}{ip}")
        running = [pod for pod, _, _ in holders if pod.deleted is None and pod.phase not in _ENDED_PHASES]
        return (running or [pod for pod, _, _ in holders])[-1]

    def address(self, ip: str, when: float | None, other_node: str) -> Side:
        """One address alone, as `resolve` names an end: its pod at `when`, a node as seen from
        `other_node`, `unknown` inside the cluster's networks, else `world`."""
        return self._side(ip, self.pod(ip, when), other_node)

    def _pod_holders(self, ip: str) -> tuple[tuple[Pod, float, float], ...]:
        """The pods (not hostNetwork) that held `ip`, oldest first, with the times they held it."""
        found = self._holders.get(ip)
        if found is None:
            pods = [pod for pod in self.inventory.pods_by_ip(ip) if not pod.host_network]
            starts = [pod.created.timestamp() if pod.created else -math.inf for pod in pods]
            ends = [pod.deleted.timestamp() if pod.deleted else math.inf for pod in pods]
            for index in range(len(pods) - 1):  # the next holder's creation ends a holder's time
                ends[index] = min(ends[index], starts[index + 1])
            found = self._holders[ip] = tuple(zip(pods, starts, ends, strict=True))
        return found

    def _node(self, ip: str, pod: Pod | None) -> str:
        """The name of the node an address is on: its pod's, the node's own, or by pod CIDR."""
        if pod is not None:
            return pod.node
        found = self._nodes.get(ip)
        if found is None:
            node = self.inventory.node_by_ip(ip) or self.inventory.node_by_pod_cidr(ip)
            found = self._nodes[ip] = node.name if node is not None else ""
        return found

    def _side(self, ip: str, pod: Pod | None, other_node: str, protocol: str = "", port: int = -1) -> Side:
        """The endpoint of one end; `protocol`/`port` are the server's (the client's port says nothing)."""
        key = (pod.namespace, pod.name) if pod is not None else (ip, other_node, protocol, port)
        found = self._sides.get(key)
        if found is None:
            side = self._new_side(ip, pod, other_node, protocol, port)
            endpoint = self._endpoints.setdefault(side.endpoint, side.endpoint)
            found = self._sides[key] = side._replace(endpoint=endpoint)
        return found

    def _new_side(self, ip: str, pod: Pod | None, other_node: str, protocol: str, port: int) -> Side:
        if pod is not None:
            labels = labels_to_text(pod.labels)
            return Side(Endpoint(POD, pod.namespace, pod.owner.name, pod.owner.kind, labels), pod.name, POD)
        if (ip, port) in self._api_servers:
            return Side(Endpoint(KUBE_APISERVER, ip=ip), "", KUBE_APISERVER)
        node = self.inventory.node_by_ip(ip) or self.inventory.node_by_pod_gateway(ip)
        if node is not None:
            entity = HOST if node.name == other_node else REMOTE_NODE
            host_pod = self._host_network_pods.get((node.name, protocol, port))
            if host_pod is None:
                return Side(Endpoint(entity, ip=ip), "", entity)
            owner = host_pod.owner
            endpoint = Endpoint(entity, host_pod.namespace, owner.name, owner.kind, ip=ip)
            return Side(endpoint, host_pod.name, f"{entity} (hostNetwork pod)")
        if self._inside(ip):
            return Side(Endpoint(UNKNOWN, ip=ip), "", UNKNOWN)
        return Side(Endpoint(WORLD, ip=ip), "", WORLD)

    def _inside(self, ip: str) -> bool:
        found = self._in_cluster.get(ip)
        if found is None:
            address = ipaddress.ip_address(ip)
            found = self._in_cluster[ip] = any(address in network for network in self._networks)
        return found


def _backends(inventory: Inventory, service: Service, ports: Iterable[ServicePort]) -> set[tuple[str, int]]:
    """(address, target port) of the ready endpoints of a Service behind some of its ports.

    An EndpointSlice port carries the name and protocol of the Service port and the target port."""
    wanted = {(port.name, port.protocol) for port in ports}
    return {
        (address, slice_port.port)
        for endpoint_slice in inventory.endpoint_slices_of(service)
        for slice_port in endpoint_slice.ports
        if (slice_port.name, slice_port.protocol) in wanted and slice_port.port is not None
        for endpoint in endpoint_slice.endpoints
        if endpoint.ready
        for address in endpoint.addresses
    }


def _cluster_networks(
    inventory: Inventory, cluster_cidrs: Sequence[str] | None
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cidrs = [cidr for node in inventory.nodes for cidr in node.pod_cidrs]
    if cluster_cidrs is not None:
        cidrs += cluster_cidrs
    else:
        addresses = [ip for pod in inventory.pods if not pod.host_network for ip in pod.ips]
        addresses += [ip for service in inventory.services for ip in service.cluster_ips]
        for ip in addresses:
            version = ipaddress.ip_address(ip).version
            cidrs.append(f"{ip}/{_INFERRED_PREFIX[version]}")
    return sorted({ipaddress.ip_network(cidr, strict=False) for cidr in cidrs}, key=str)


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


# -- reading ------------------------------------------------------------------------------------


class _Counted(msgspec.Struct, gc=False):
    """One distinct IP-level connection while dumps are read: how often and when it was counted, how
    telling its copy is (`_rank`) and whether its IPs were reused (then it is split by time)."""

    connection: Connection
    rank: int
    reused: bool
    count: int = 0
    first: float = math.inf
    last: float = -math.inf


def _rank(connection: Connection) -> int:
    """How much a copy of a connection tells: answered first, then showing the NAT."""
    return 2 * (not connection.unreplied) + (connection.dnat or connection.snat)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: records hold no cycles, and its full passes over a growing
    table of counted connections cost about a tenth of the reading time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ConntrackIngest:
    """Accumulates conntrack dumps into observations (see the module docstring for the rules).

    ingest = ConntrackIngest(inventory)
    for path in node_dumps:
        ingest.add_file(path)
    observed = ingest.finish()
    """

    def __init__(
        self, inventory: Inventory, *, on_error: OnError = OnError.FAIL, cluster_cidrs: Sequence[str] | None = None
    ) -> None:
        self.stats = ReadStats()
        self.stats.bad.on_error = on_error
        self.conntrack_stats = ConntrackStats()
        self.resolver = AddressResolver(inventory, cluster_cidrs)
        self.scanner = ConnectionScanner(bad_records=self.stats.bad, stats=self.conntrack_stats, intern=self._record)
        self._records: dict[Connection, _Counted] = {}
        self._dated: dict[tuple[Connection, Pod | None, Pod | None], _Counted] = {}
        """Records of connections whose IPs were reused, split by the pods that held them then."""
        self._counted: dict[int, _Counted] = {}
        """Hash of a connection's identity → the record it is counted in (this generation)."""

    def add_file(self, path: str, progress: Callable[[int], None] | None = None) -> None:
        """Read one dump (a file, `-`, gzip or not); `progress` as for `ConnectionScanner.scan`."""
        self.stats.sources.append(display_name(path))
        counted = self._counted
        duplicates = 0
        with _cyclic_gc_paused():
            for identity, record, when in self.scanner.scan(path, progress):
                if when is not None and record.reused:
                    record = self._dated_record(record.connection, when)
                key = hash(identity)
                counted_in = counted.get(key)
                if counted_in is None:
                    counted[key] = record
                    record.count += 1
                else:
                    duplicates += 1
                    if record.rank > counted_in.rank:  # a more telling copy: the connection moves
                        counted_in.count -= 1
                        record.count += 1
                        counted[key] = record
                    else:
                        record = counted_in
                if when is not None:
                    if when < record.first:
                        record.first = when
                    if when > record.last:
                        record.last = when
        self.stats.duplicates += duplicates

    def end_generation(self) -> None:
        """Start another snapshot of the nodes: its connections count again, even those seen before."""
        self._counted.clear()

    def _record(self, connection: Connection) -> _Counted:
        """The record of a connection (the scanner's `intern`, so not called on every line)."""
        record = self._records.get(connection)
        if record is None:
            reused = self.resolver.reused(connection)
            record = self._records[connection] = _Counted(connection, _rank(connection), reused)
        return record

    def _dated_record(self, connection: Connection, when: float) -> _Counted:
        """The record of a connection whose IPs were reused, for the pods that held them at `when`."""
        holders = (self.resolver.pod(connection.client, when), self.resolver.pod(connection.server, when))
        key = (connection, *holders)
        record = self._dated.get(key)
        if record is None:
            record = self._dated[key] = _Counted(connection, _rank(connection), True)
        return record

    def finish(self) -> ObservationSet:
        """Name the endpoints and return the aggregated observations (call it once, at the end)."""
        stats = self.stats
        stats.lines, stats.flows = self.conntrack_stats.lines, self.conntrack_stats.entries
        if self.conntrack_stats.ignored:
            stats.ignored["prompt or conntrack summary line"] += self.conntrack_stats.ignored
        rows: dict[tuple[int, int, str, int, str], tuple[Endpoint, Endpoint, Aggregate]] = {}
        pods: dict[tuple[str, str], Side] = {}
        for record in self._records.values():
            self._add_to_row(rows, pods, record, None)
        for record in self._dated.values():
            self._add_to_row(rows, pods, record, record.first)
        aggregator = ObservationAggregator()
        for (_, _, protocol, port, verdict), (client, server, totals) in rows.items():
            key = (aggregator.endpoint_id(client), aggregator.endpoint_id(server), protocol, port, verdict)
            aggregator.merge(key, totals)
        observations = aggregator.to_frame() if aggregator.records else empty_observations()
        frame = pd.DataFrame(
            [("", namespace, name, side.endpoint.workload, side.endpoint.kind, side.endpoint.labels)
             for (namespace, name), side in sorted(pods.items())],
            columns=list(POD_COLUMNS),
        )  # fmt: skip
        return ObservationSet(observations, frame, observations.iloc[0:0], {}, stats)

    def _add_to_row(self, rows: dict, pods: dict[tuple[str, str], Side], record: _Counted, when: float | None) -> None:
        """Name a connection record's ends and add it to its row. Rows are keyed by the `id` of the
        resolver's endpoints, which are interned: hashing endpoints by value costs more than the rest."""
        count = record.count
        if not count:
            return
        resolution = self.resolver.resolve(record.connection, when)
        if isinstance(resolution, str):
            self.stats.skipped[resolution] += count
            return
        self.stats.orientation["original tuple"] += count
        for note in resolution.notes:
            self.stats.resolution[note] += count
        client, server = resolution.client, resolution.server
        for side in (client, server):
            if side.found_as == POD:
                pods[(side.endpoint.namespace, side.pod)] = side
        verdict = UNREPLIED if record.connection.unreplied else FORWARDED
        key = (id(client.endpoint), id(server.endpoint), resolution.protocol, resolution.port, verdict)
        first = datetime.fromtimestamp(record.first, UTC) if math.isfinite(record.first) else NO_TIME_FIRST
        last = datetime.fromtimestamp(record.last, UTC) if math.isfinite(record.last) else NO_TIME_LAST
        row = rows.get(key)
        if row is None:
            row = rows[key] = (client.endpoint, server.endpoint, Aggregate(0, first, last, client.pod, server.pod))
        totals = row[2]
        totals.count += count
        totals.first, totals.last = min(totals.first, first), max(totals.last, last)
        totals.client_pod = min(totals.client_pod, client.pod)  # the example pods: the smallest names, as everywhere
        totals.server_pod = min(totals.server_pod, server.pod)
        if resolution.service:
            totals.services.add(resolution.service)


def resolution_counts(resolution: Counter[str]) -> dict[str, int]:
    """The totals a summary shows of `ReadStats.resolution`: connections whose Service backend came from
    DNAT, connections with SNAT, and distinct unresolved and ambiguous IPs."""
    return {
        "services_from_dnat": resolution[SERVICE_FROM_DNAT],
        "snat": sum(count for note, count in resolution.items() if note.startswith(SNAT)),
        "unresolved_ips": sum(1 for note in resolution if note.startswith(UNRESOLVED_IP)),
        "ambiguous_ips": sum(1 for note in resolution if note.startswith(AMBIGUOUS_IP)),
    }


def read_conntrack(
    paths: Sequence[str],
    inventory: Inventory,
    *,
    on_error: OnError = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
    cluster_cidrs: Sequence[str] | None = None,
) -> ObservationSet:
    """Read conntrack dumps of the cluster's nodes (files, globs, `-` for stdin, gzip; any format
    `collectors.conntrack` reads) into observations named with `inventory`.

    The dumps are one snapshot: a connection in several of them counts once. A malformed line
    raises `BadInputError` naming the file and line (`on_error=FAIL`) or is skipped and counted
    (`SKIP`). `progress`, if given, is called now and then with the number of bytes read since its
    last call. `cluster_cidrs` are the cluster's pod and service networks (see `AddressResolver`).
    """
    ingest = ConntrackIngest(inventory, on_error=on_error, cluster_cidrs=cluster_cidrs)
    for path in expand_inputs(paths):
        ingest.add_file(path, progress)
    return ingest.finish()
