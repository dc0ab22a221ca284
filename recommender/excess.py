"""Excess privilege: what a policy set allows between known endpoints that nobody was seen using.

Per (client key, server key) pair, the excess is a `ConnectionSet`: the union of what the evaluator
allows between their pod classes or external peers, within the ports the policies name, minus the
observed connections. The work grows with class pairs and port intervals, never with the number of
ports a range holds (`port: 1, endPort: 65535` costs what `port: 80` costs); reports list port ranges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from collectors.records import POD, ObservationSet
from recommender.cluster_model import ClusterModel
from recommender.graph import endpoint_keys
from recommender.semantics import (
    AnyPolicy,
    ConnectionSet,
    Evaluator,
    ExternalPeer,
    PodClass,
    PortSet,
    Protocol,
    parse_policy_set,
)
from recommender.semantics.cilium import compile_cilium
from recommender.semantics.cluster_policies import compile_cluster_policy
from recommender.semantics.matcher import PortRange
from recommender.semantics.policies import Direction

Pair = tuple[str, str]
Reached = PodClass | ExternalPeer
"""What a rule reaches: the known pod classes it selects or matches, and the observed external peers."""
"""(client key, server key): `namespace/workload` for pods, `entity:ip` for external peers."""


@dataclass(frozen=True, slots=True)
class ExcessRange:
    """Ports `first`-`last` of `protocol` that `client` may open to `server`, never observed."""

    client: str
    server: str
    protocol: Protocol
    first: int
    last: int

    @property
    def ports(self) -> str:
        """`53` or `1-9079`."""
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def __str__(self) -> str:
        return f"{self.client} -> {self.server} {self.protocol}/{self.ports}"


@dataclass(frozen=True, slots=True)
class PairExcess:
    """What one client may open to one server beyond what was observed (never empty)."""

    client: str
    server: str
    connections: ConnectionSet


@dataclass(frozen=True, slots=True)
class Excess:
    """Allowed but never observed, per (client, server) pair, sorted by pair; build with `Excess.of`.

    `len()` counts (client, server, protocol, port) connections, as the summary reports them;
    `ranges()` lists them as port intervals, as findings do."""

    pairs: tuple[PairExcess, ...] = ()

    @classmethod
    def of(cls, by_pair: Mapping[Pair, ConnectionSet]) -> Excess:
        """The non-empty sets of `by_pair`, sorted."""
        return cls(tuple(PairExcess(*pair, found) for pair, found in sorted(by_pair.items()) if found))

    def by_pair(self) -> dict[Pair, ConnectionSet]:
        return {(item.client, item.server): item.connections for item in self.pairs}

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def __len__(self) -> int:
        return sum(item.last - item.first + 1 for item in self.ranges())

    def ranges(self) -> tuple[ExcessRange, ...]:
        """Every port interval of every pair, by pair, protocol and port."""
        return tuple(
            ExcessRange(item.client, item.server, protocol, first, last)
            for item in self.pairs
            for protocol, ports in item.connections.by_protocol
            for first, last in ports.intervals
        )

    def connections(self) -> Iterator[tuple[str, str, str, int]]:
        """Every (client, server, protocol, port), one port at a time: as long as the ranges are wide."""
        for item in self.ranges():
            for port in range(item.first, item.last + 1):
                yield item.client, item.server, str(item.protocol), port

    def within(self, scope: Callable[[str, str], ConnectionSet]) -> Excess:
        """The part of each pair's excess inside `scope(client, server)`."""
        return Excess.of({pair: found & scope(*pair) for pair, found in self.by_pair().items()})

    def __sub__(self, other: Excess) -> Excess:
        theirs = other.by_pair()
        return Excess.of(
            {pair: found - theirs.get(pair, ConnectionSet.none()) for pair, found in self.by_pair().items()}
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per port range (client, server, protocol, first, last), for notebooks."""
        records = [(item.client, item.server, str(item.protocol), item.first, item.last) for item in self.ranges()]
        return pd.DataFrame(records, columns=["client", "server", "protocol", "first", "last"])


def named_ports(policies: Iterable[AnyPolicy | Mapping[str, Any]]) -> ConnectionSet:
    """Every (protocol, port) a policy set names in its rules (ranges included), of every kind."""
    policy_set = parse_policy_set(policies)
    found = ConnectionSet.none()
    for policy in policy_set.network_policies:
        for direction in (Direction.INGRESS, Direction.EGRESS):
            for rule in policy.rules(direction):
                for port in rule.ports:
                    if isinstance(port.port, int):
                        found |= ConnectionSet.ports(port.protocol, port.port, port.end_port or port.port)
    others = [
        *map(compile_cilium, policy_set.cilium_policies),
        *map(compile_cluster_policy, policy_set.cluster_policies),
    ]
    for target in (target for targets in others for target in targets):
        for matcher in target.rules:
            for port_matcher in matcher.ports:
                if isinstance(port_matcher, PortRange) and port_matcher.first is not None:
                    first, last = port_matcher.first, port_matcher.last or port_matcher.first
                    found |= ConnectionSet.ports(port_matcher.protocol, first, last)
    return found


def excess(
    evaluator: Evaluator, connections: pd.DataFrame, observed: ObservationSet, model: ClusterModel, ports: ConnectionSet
) -> Excess:
    """What the evaluator's policies allow beyond the observed `connections` (client, server, protocol, port).

    Ports range over `ports` (those the policies name). Only pairs some rule of the policy set
    reaches are considered (pairs of unselected pods are allowed by the absence of policy, not by
    it): for every rule, its subjects and the pods and observed external IPs its peers match.
    """
    external = _external_peers(observed.observations, model)
    allowed: dict[Pair, set[ConnectionSet]] = defaultdict(set)
    for client, server in _reached_pairs(evaluator, external):
        found = evaluator.allowed_connections(client, server) & ports
        if not found:
            continue
        for client_key in _keys(client, evaluator, model, external):
            for server_key in _keys(server, evaluator, model, external):
                allowed[client_key, server_key].add(found)
    seen = _observed(connections)
    none = ConnectionSet.none()
    return Excess.of({pair: ConnectionSet.union_all(sets) - seen.get(pair, none) for pair, sets in allowed.items()})


def _reached_pairs(evaluator: Evaluator, external: Mapping[ExternalPeer, str]) -> set[tuple[Reached, Reached]]:
    """(client, server) for every subject of every rule and every peer the rule matches."""
    pairs: set[tuple[Reached, Reached]] = set()
    for target in evaluator.targets:
        subjects = evaluator.subjects_of(target)
        for rule in target.rules:
            peers: list[Reached] = [
                *evaluator.peers_of(rule),
                *(peer for peer in external if rule.matches_peer(evaluator.external(peer))),
            ]
            for subject in subjects:
                for peer in peers:
                    pairs.add((peer, subject) if target.direction is Direction.INGRESS else (subject, peer))
    return pairs


def _observed(connections: pd.DataFrame) -> dict[Pair, ConnectionSet]:
    """The observed connections as one `ConnectionSet` per (client, server) pair."""
    ports: dict[Pair, dict[Protocol, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    columns = (connections[name] for name in ("client", "server", "protocol", "port"))
    for client, server, protocol, port in zip(*columns, strict=True):
        known = Protocol.lookup(protocol)
        if known is not None:
            ports[client, server][known].append((int(port), int(port)))
    return {
        pair: ConnectionSet(tuple((protocol, PortSet(tuple(found))) for protocol, found in by_protocol.items()))
        for pair, by_protocol in ports.items()
    }


def _external_peers(observations: pd.DataFrame, model: ClusterModel) -> dict[ExternalPeer, str]:
    """Every observed non-pod endpoint with an IP, and its endpoint key."""
    peers: dict[ExternalPeer, str] = {}
    for side in ("client", "server"):
        rows = observations[(observations[f"{side}_entity"] != POD) & (observations[f"{side}_ip"] != "")]
        rows = rows.drop_duplicates([f"{side}_entity", f"{side}_ip"])
        for row, key in zip(rows.itertuples(index=False), endpoint_keys(rows, side), strict=True):
            endpoint = model.endpoint(row, side)
            if isinstance(endpoint, ExternalPeer):  # an address evidence gives a pod is that pod, among the pods
                peers[endpoint] = key
    return peers


def _keys(
    endpoint: Reached, evaluator: Evaluator, model: ClusterModel, external: Mapping[ExternalPeer, str]
) -> set[str]:
    if isinstance(endpoint, PodClass):
        return {model.workload_of[pod] for pod in evaluator.pods_of(endpoint)}
    return {external[endpoint]}
