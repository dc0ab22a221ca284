"""The DNS allowance: every egress-isolated pod may reach the cluster's DNS servers on UDP and TCP 53.

Allowing DNS only as observed breaks a cluster on the day it is applied: resolvers retry over TCP/53
when a UDP answer is truncated, and a workload that made no lookup during the window makes one later.
So every managed namespace gets one shared `allow-dns` policy (the default-deny's pod selector,
egress only) to the cluster's DNS servers: the pods behind the Service `kube-dns` (from the
inventory's EndpointSlices), node-local-dns where it runs (its pods by labels, or its link-local IP
when it uses the host network), and the DNS servers observed. Observed lookups to those servers need
no rule in the workloads' own policies. What the allowance opens beyond what was seen is counted
apart from the excess, and every pod's lookups (UDP and TCP) are replayed against the proposal.

The allowance is data (`DnsAllowance`: its servers and namespaces) for every renderer; the
NetworkPolicy renderer writes it as `allow-dns`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from collectors.inventory import Inventory
from collectors.records import POD
from recommender.errors import ReplayError
from recommender.excess import Excess
from recommender.selectors import Selector, namespace_selector
from recommender.semantics import ConnectionSet, Evaluator, ExternalPeer, Pod, Protocol
from recommender.semantics.policies import IPBlock, PolicyPeer, PolicyPort, PolicyRule

DNS_PORT = 53
DNS_PROTOCOLS = ("UDP", "TCP")
DNS_PORTS = tuple((protocol, DNS_PORT) for protocol in DNS_PROTOCOLS)
DNS_POLICY = "allow-dns"
KUBE_DNS_SERVICE = "kube-dns"
NODE_LOCAL_DNS_LABEL = ("k8s-app", "node-local-dns")
NODE_LOCAL_DNS_IP = "169.254.20.10"
"""The link-local address node-local-dns listens on by default (a hostNetwork DaemonSet)."""
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


class DnsMode(StrEnum):
    """`--dns`: how the proposal lets pods resolve names."""

    ALLOW = "allow"
    """One `allow-dns` per managed namespace: every pod may reach the cluster's DNS servers, UDP and TCP 53."""
    OBSERVED = "observed"
    """DNS only as observed, in the workloads' own policies."""
    OFF = "off"
    """No DNS rules: lookups to the cluster's DNS servers are left to another policy (and reported)."""


@dataclass(frozen=True, order=True)
class DnsServer:
    """A DNS server: the pods of a workload (selected by labels), or an IP (node-local-dns)."""

    namespace: str = ""
    workload: str = ""
    ip: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.workload}" if self.workload else self.ip

    def is_server_of(self, endpoint_key: str) -> bool:
        """Whether an edge's server key (`namespace/workload` or `entity:ip`) is this server."""
        return endpoint_key == self.key if self.workload else endpoint_key.endswith(f":{self.ip}")

    def peer(self, selectors: Mapping[tuple[str, str], Selector]) -> PolicyPeer:
        if not self.workload:
            return PolicyPeer(ip_block=IPBlock(ipaddress.ip_network(self.ip)))
        pods = selectors[(self.namespace, self.workload)].label_selector
        return PolicyPeer(pod_selector=pods, namespace_selector=namespace_selector(self.namespace))


@dataclass(frozen=True)
class DnsAllowance:
    """What the proposal allows for name resolution, for every renderer."""

    mode: DnsMode
    servers: tuple[DnsServer, ...] = ()
    """The servers every egress-isolated pod of `namespaces` may reach on UDP and TCP 53."""
    namespaces: tuple[str, ...] = ()
    """The managed namespaces the allowance is given to (all of them, unless the mode is not `allow`)."""

    @property
    def active(self) -> bool:
        return self.mode is DnsMode.ALLOW and bool(self.servers) and bool(self.namespaces)

    def covers(self, edges: pd.DataFrame) -> pd.Series:
        """Which edges are lookups to the cluster's DNS servers (from pods of any namespace)."""
        lookup = (edges["port"] == DNS_PORT) & edges["protocol"].isin(DNS_PROTOCOLS) & (edges["client_entity"] == POD)
        keys = set(edges.loc[lookup, "server"])
        served = {key for key in keys if any(server.is_server_of(key) for server in self.servers)}
        return lookup & edges["server"].isin(served)

    def rule(self, selectors: Mapping[tuple[str, str], Selector]) -> PolicyRule:
        """The egress rule: to every server, UDP and TCP 53."""
        return PolicyRule(
            peers=tuple(server.peer(selectors) for server in self.servers),
            ports=tuple(PolicyPort(Protocol(protocol), port) for protocol, port in DNS_PORTS),
        )

    def describe(self) -> str:
        """The servers, for the summary and the evidence comment."""
        return ", ".join(server.key for server in self.servers)


def inventory_dns_servers(inventory: Inventory) -> list[DnsServer]:
    """The cluster's DNS servers as the inventory shows them: the pods behind every Service `kube-dns`
    (its EndpointSlices, or its selector when it has none), and node-local-dns: its link-local IP
    when it runs on the host network, else its pods (a Cilium Local Redirect Policy)."""
    servers = []
    for service in inventory.services:
        if service.name != KUBE_DNS_SERVICE:
            continue
        slices = inventory.endpoint_slices_of(service)
        backends = [inventory.pod(*e.pod) for s in slices for e in s.endpoints if e.pod is not None]
        if not slices and service.selector:
            backends = [
                pod
                for pod in inventory.pods_in_namespace(service.namespace)
                if all(pod.labels.get(key) == value for key, value in service.selector.items())
            ]
        servers += [DnsServer(pod.namespace, pod.owner.name) for pod in backends if pod and not pod.host_network]
    key, value = NODE_LOCAL_DNS_LABEL
    for pod in inventory.pods:
        if pod.labels.get(key) == value:
            servers.append(
                DnsServer(ip=NODE_LOCAL_DNS_IP) if pod.host_network else DnsServer(pod.namespace, pod.owner.name)
            )
    return servers


def observed_dns_servers(edges: pd.DataFrame) -> list[DnsServer]:
    """The DNS servers pods were seen asking: pod servers of port 53, and link-local IPs (node-local-dns)."""
    lookups = edges[
        (edges["port"] == DNS_PORT) & edges["protocol"].isin(DNS_PROTOCOLS) & (edges["client_entity"] == POD)
    ]
    servers = []
    for row in lookups.itertuples(index=False):
        if row.server_entity == POD and row.server_workload:
            servers.append(DnsServer(row.server_namespace, row.server_workload))
        elif row.server_ip and ipaddress.ip_address(row.server_ip) in LINK_LOCAL:
            servers.append(DnsServer(ip=row.server_ip))
    return servers


def plan_allowance(
    mode: DnsMode,
    candidates: Iterable[DnsServer],
    managed: Iterable[str],
    selectors: Mapping[tuple[str, str], Selector],
) -> DnsAllowance:
    """The allowance for `mode`: the candidate servers whose own ingress the proposal leaves open
    (pods of unmanaged namespaces with a selector, IPs), given to every managed namespace."""
    managed = tuple(sorted(managed))
    kept = {
        server
        for server in candidates
        if not server.workload or (server.namespace not in managed and (server.namespace, server.workload) in selectors)
    }
    servers = tuple(sorted(kept, key=lambda server: (bool(server.ip), server)))  # pods first, as in every rule
    return DnsAllowance(mode, servers, managed if mode is DnsMode.ALLOW and servers else ())


@dataclass(frozen=True)
class DnsProof:
    """The synthetic lookups replayed against the proposal, and what the allowance opens unobserved."""

    lookups: int
    """Synthetic connections replayed (every pod of the allowance's namespaces × server pod or IP × UDP, TCP)."""
    unobserved: Excess
    """What the allowance allows that was never observed."""


def prove_allowance(
    evaluator: Evaluator, workload_of: Mapping[Pod, str], allowance: DnsAllowance, excess: Excess
) -> tuple[DnsProof, Excess]:
    """Replay a UDP and a TCP lookup from every pod of the allowance's namespaces to every DNS server;
    raise `ReplayError` if one is denied. Returns the proof and the excess without the allowance's part."""
    if not allowance.active:
        return DnsProof(0, Excess()), excess
    clients = sorted((pod for pod in workload_of if pod.namespace in allowance.namespaces), key=str)
    servers: list[Pod | ExternalPeer] = []
    for server in allowance.servers:
        if server.workload:
            servers += sorted((pod for pod, key in workload_of.items() if key == server.key), key=str)
        else:
            servers.append(ExternalPeer(ipaddress.ip_address(server.ip)))
    denied, lookups = [], 0
    for client in clients:
        for target in servers:
            for protocol in DNS_PROTOCOLS:
                decision = evaluator.evaluate(client, target, protocol, DNS_PORT)
                lookups += 1
                if not decision.allowed:
                    denied.append(f"synthetic DNS lookup: {decision}")
    if denied:
        raise ReplayError(denied)
    lookups_to = ConnectionSet.union_all(ConnectionSet.ports(Protocol(name), DNS_PORT) for name in DNS_PROTOCOLS)
    none = ConnectionSet.none()

    def scope(_client: str, server: str) -> ConnectionSet:
        return lookups_to if any(known.is_server_of(server) for known in allowance.servers) else none

    ours = excess.within(scope)
    return DnsProof(lookups, ours), excess - ours
