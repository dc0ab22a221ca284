"""The normalized observation model every collector produces.

An observation row is one distinct (client endpoint, server endpoint, protocol, server port, verdict)
with a count and first/last seen times. Endpoints are workload-level identities, not pods: a pod
endpoint is (cluster, namespace, workload, kind, labels); every other endpoint is an entity with an IP.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pandas as pd

from collectors.errors import BadRecords

POD = "pod"
HOST = "host"
REMOTE_NODE = "remote-node"
KUBE_APISERVER = "kube-apiserver"
WORLD = "world"
HEALTH = "health"
INGRESS = "ingress"
UNKNOWN = "unknown"
READ_BY_ADDRESS = (WORLD, UNKNOWN, REMOTE_NODE)
"""Entities whose endpoint is only an address: evidence naming the pod at that address may settle them."""
ENTITIES = (POD, HOST, REMOTE_NODE, KUBE_APISERVER, WORLD, HEALTH, INGRESS, UNKNOWN)

SEEN_VERDICTS = ("FORWARDED", "REDIRECTED", "AUDIT")
"""Verdicts of traffic that really flowed (AUDIT: would have been dropped, but was not)."""
DROPPED = "DROPPED"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a connection, at workload granularity."""

    entity: str
    namespace: str = ""
    workload: str = ""
    kind: str = ""
    labels: str = ""  # canonical "k=v,k2=v2", sorted by key
    ip: str = ""  # non-pod endpoints only
    cluster: str = ""

    @property
    def key(self) -> str:
        """A stable, human-readable id: `namespace/workload` for pods, `entity:ip` otherwise."""
        if self.entity == POD:
            return f"{self.namespace}/{self.workload or '{' + self.labels + '}'}"
        return f"{self.entity}:{self.ip}" if self.ip else self.entity


ENDPOINT_FIELDS = ("entity", "namespace", "workload", "kind", "labels", "ip", "cluster")
CLIENT_COLUMNS = tuple(f"client_{name}" for name in ENDPOINT_FIELDS)
SERVER_COLUMNS = tuple(f"server_{name}" for name in ENDPOINT_FIELDS)
KEY_COLUMNS = (*CLIENT_COLUMNS, *SERVER_COLUMNS, "protocol", "port", "verdict")
VALUE_COLUMNS = (
    "count",
    "first_seen",
    "last_seen",
    "client_pod",
    "server_pod",
    "allowed_by",
    "drop_reasons",
    "services",
)
OBSERVATION_COLUMNS = (*KEY_COLUMNS, *VALUE_COLUMNS)
SET_COLUMNS = ("allowed_by", "drop_reasons", "services")
"""Columns holding comma-joined sorted sets."""
POD_COLUMNS = ("cluster", "namespace", "pod", "workload", "kind", "labels")


def labels_to_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def labels_from_text(text: str) -> dict[str, str]:
    if not text:
        return {}
    return dict(item.split("=", 1) for item in text.split(","))


def endpoint_from_row(row: Any, side: str) -> Endpoint:
    """The Endpoint of one side ("client" or "server") of an observation row."""
    return Endpoint(*(getattr(row, f"{side}_{name}") for name in ENDPOINT_FIELDS))


class ReadStats(msgspec.Struct, kw_only=True):
    """Everything a read saw, so that nothing is lost silently."""

    sources: list[str] = msgspec.field(default_factory=list)
    lines: int = 0
    flows: int = 0
    duplicates: int = 0
    lost_event_records: int = 0
    events_lost: int = 0
    ignored: Counter[str] = msgspec.field(default_factory=Counter)
    skipped: Counter[str] = msgspec.field(default_factory=Counter)
    orientation: Counter[str] = msgspec.field(default_factory=Counter)
    unoriented: int = 0
    l7_events: int = 0
    """Events that were L7 records (Cilium's proxy: HTTP, DNS, Kafka), among the flows counted."""
    bad: BadRecords = msgspec.field(default_factory=BadRecords)
    resolution: Counter[str] = msgspec.field(default_factory=Counter)
    """How addresses were named (sources that resolve IPs with an inventory), in connections:
    per end and kind, Services, SNAT, ambiguous and unresolved IPs, unanswered connections."""

    def merge(self, other: ReadStats) -> None:
        self.sources.extend(other.sources)
        self.lines += other.lines
        self.flows += other.flows
        self.duplicates += other.duplicates
        self.lost_event_records += other.lost_event_records
        self.events_lost += other.events_lost
        self.ignored.update(other.ignored)
        self.skipped.update(other.skipped)
        self.orientation.update(other.orientation)
        self.unoriented += other.unoriented
        self.l7_events += other.l7_events
        self.bad.merge(other.bad)
        self.resolution.update(other.resolution)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (counters sorted by key), as stored with saved observations; `stats_from_dict` reads it."""
        data: dict[str, Any] = msgspec.to_builtins(self, order="sorted")
        return data


def stats_from_dict(data: dict[str, Any]) -> ReadStats:
    """The `ReadStats` of `ReadStats.to_dict`'s data."""
    if "bad_records" in data:  # stored before ReadStats was a struct (2026-12): malformed records' figures flat
        data = {**data, "bad": {"count": data["bad_records"], "examples": data["bad_record_examples"]}}
    return msgspec.convert(data, ReadStats, dec_hook=_counter)


def _counter(kind: type, value: Any) -> Any:
    if getattr(kind, "__origin__", kind) is Counter:
        return Counter(value)
    raise NotImplementedError(kind)


@dataclass
class ObservationSet:
    """The result of reading sources: aggregated observations plus what is needed to interpret them.

    - `observations`: one row per (client, server, protocol, port, verdict), columns
      `OBSERVATION_COLUMNS`; first/last seen are UTC timestamps.
    - `pods`: every pod seen (`POD_COLUMNS`), used to compute exact selectors.
    - `unoriented`: traffic whose client could not be told from its server (same columns, with
      `client_*` meaning the packet's source); reported, never turned into rules.
    - `dns_names`: IP → sorted DNS names seen for it (`destination_names`, DNS answers).
    - `pod_ips`: IP → the (namespace, pod name) every record naming a pod came with: evidence of
      which addresses are pods, kept apart from how the observations read them (verification's).
    """

    observations: pd.DataFrame
    pods: pd.DataFrame
    unoriented: pd.DataFrame
    dns_names: dict[str, tuple[str, ...]]
    stats: ReadStats
    pod_ips: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
