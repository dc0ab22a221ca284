"""Aggregation of observations: a streaming accumulator, and the same merge as a pandas function.

`ObservationAggregator` keeps one small record per distinct (client, server, protocol, port,
verdict), so memory grows with distinct edges, never with the number of flows. `combine_observations`
is the same merge written over a pandas partition: partial results (files, processes, Dask
partitions, stored windows) concatenate and combine into the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec
import pandas as pd

from collectors.records import (
    ENDPOINT_FIELDS,
    KEY_COLUMNS,
    OBSERVATION_COLUMNS,
    SET_COLUMNS,
    Endpoint,
)

NO_TIME_FIRST = datetime.max.replace(tzinfo=UTC)
NO_TIME_LAST = datetime.min.replace(tzinfo=UTC)

RowKey = tuple[int, int, str, int, str]
"""(client endpoint id, server endpoint id, protocol, port, verdict)."""


class Aggregate(msgspec.Struct, gc=False):
    """The totals of one observation row while it is counted, from Hubble events or conntrack entries.

    `first`/`last` are `NO_TIME_FIRST`/`NO_TIME_LAST` until an event with a time is counted; the
    example pods are the smallest names seen. A plain mutable struct, not tracked by the cyclic
    garbage collector (it holds no cycles), so that the hot path updates it in place.
    """

    count: int
    first: datetime
    last: datetime
    client_pod: str = ""
    server_pod: str = ""
    allowed_by: set[str] = msgspec.field(default_factory=set)
    drop_reasons: set[str] = msgspec.field(default_factory=set)
    services: set[str] = msgspec.field(default_factory=set)

    def merge(self, other: Aggregate) -> None:
        """Fold `other` into this record."""
        self.count += other.count
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        if other.client_pod and (not self.client_pod or other.client_pod < self.client_pod):
            self.client_pod = other.client_pod
        if other.server_pod and (not self.server_pod or other.server_pod < self.server_pod):
            self.server_pod = other.server_pod
        self.allowed_by |= other.allowed_by
        self.drop_reasons |= other.drop_reasons
        self.services |= other.services

    def copy(self) -> Aggregate:
        return Aggregate(
            self.count, self.first, self.last, self.client_pod, self.server_pod,
            set(self.allowed_by), set(self.drop_reasons), set(self.services),
        )  # fmt: skip


def new_aggregate(seen: datetime | None, client_pod: str, server_pod: str) -> Aggregate:
    """The record of one event seen at `seen` (None: without a time)."""
    if seen is None:
        return Aggregate(1, NO_TIME_FIRST, NO_TIME_LAST, client_pod, server_pod)
    return Aggregate(1, seen, seen, client_pod, server_pod)


class ObservationAggregator:
    """Interns endpoints and accumulates aggregate records keyed by `RowKey`."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self._endpoint_ids: dict[Endpoint, int] = {}
        self.records: dict[RowKey, Aggregate] = {}

    def endpoint_id(self, endpoint: Endpoint) -> int:
        found = self._endpoint_ids.get(endpoint)
        if found is None:
            found = self._endpoint_ids[endpoint] = len(self.endpoints)
            self.endpoints.append(endpoint)
        return found

    def id_of(self, endpoint: Endpoint) -> int:
        """The id `endpoint` was interned with (it may have been renamed since)."""
        return self._endpoint_ids[endpoint]

    def add(self, key: RowKey, seen: datetime | None, client_pod: str, server_pod: str) -> Aggregate:
        """Count one event; returns its record so the caller can attach policies or reasons."""
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = new_aggregate(seen, client_pod, server_pod)
            return record
        record.count += 1
        if seen is not None:
            if seen < record.first:
                record.first = seen
            if seen > record.last:
                record.last = seen
        if client_pod and client_pod < record.client_pod:
            record.client_pod = client_pod
        if server_pod and server_pod < record.server_pod:
            record.server_pod = server_pod
        return record

    def merge(self, key: RowKey, record: Aggregate) -> None:
        existing = self.records.get(key)
        if existing is None:
            self.records[key] = record.copy()
        else:
            existing.merge(record)

    def to_frame(self) -> pd.DataFrame:
        """The accumulated records as an observations DataFrame, combined and sorted."""
        columns: dict[str, list] = {name: [] for name in OBSERVATION_COLUMNS}
        endpoint_columns = [
            (side, name, columns[f"{side}_{name}"]) for side in ("client", "server") for name in ENDPOINT_FIELDS
        ]
        for (client_id, server_id, protocol, port, verdict), record in self.records.items():
            ends = {"client": self.endpoints[client_id], "server": self.endpoints[server_id]}
            for side, name, column in endpoint_columns:
                column.append(getattr(ends[side], name))
            columns["protocol"].append(protocol)
            columns["port"].append(port)
            columns["verdict"].append(verdict)
            columns["count"].append(record.count)
            columns["first_seen"].append(record.first if record.first != NO_TIME_FIRST else None)
            columns["last_seen"].append(record.last if record.last != NO_TIME_LAST else None)
            columns["client_pod"].append(record.client_pod)
            columns["server_pod"].append(record.server_pod)
            for name in SET_COLUMNS:
                columns[name].append(",".join(sorted(getattr(record, name))))
        frame = normalize_dtypes(pd.DataFrame(columns))
        if frame.duplicated(list(KEY_COLUMNS)).any():  # endpoints renamed after counting (proxy legs) collide
            return combine_observations(frame)
        return frame.sort_values(list(KEY_COLUMNS)).reset_index(drop=True)


def union_of_sets(values: pd.Series) -> str:
    items = {item for value in values if value for item in value.split(",")}
    return ",".join(sorted(items))


def smallest_nonempty(values: pd.Series) -> str:
    present = [value for value in values if value]
    return min(present) if present else ""


def empty_observations() -> pd.DataFrame:
    frame = pd.DataFrame({name: [] for name in OBSERVATION_COLUMNS})
    return normalize_dtypes(frame)


def normalize_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes, so that frames from any source concatenate and compare equal."""
    frame = frame.copy()
    for name in OBSERVATION_COLUMNS:
        if name in ("port", "count"):
            frame[name] = frame[name].astype("int64")
        elif name in ("first_seen", "last_seen"):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[ns, UTC]")
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), "").astype(str)
    return frame[list(OBSERVATION_COLUMNS)]


def combine_observations(frame: pd.DataFrame) -> pd.DataFrame:
    """Merge rows with the same key (a pure function of a partition; order-independent).

    Counts add up, first/last seen take the min/max, example pods the smallest name, and the set
    columns their union. The result is sorted by key, so equal inputs give identical frames.
    """
    frame = normalize_dtypes(frame)
    if frame.empty:
        return frame.reset_index(drop=True)
    grouped = frame.groupby(list(KEY_COLUMNS), sort=True, dropna=False)
    combined = grouped.agg(
        count=("count", "sum"),
        first_seen=("first_seen", "min"),
        last_seen=("last_seen", "max"),
        client_pod=("client_pod", smallest_nonempty),
        server_pod=("server_pod", smallest_nonempty),
        allowed_by=("allowed_by", union_of_sets),
        drop_reasons=("drop_reasons", union_of_sets),
        services=("services", union_of_sets),
    ).reset_index()
    return normalize_dtypes(combined)


def concat_observations(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate partial observation tables and combine them into one."""
    frames = [normalize_dtypes(frame) for frame in frames]
    if not frames:
        return empty_observations()
    return combine_observations(pd.concat(frames, ignore_index=True))
