"""The `hubble observe` filters, for files as for Hubble Relay: one definition, applied to observations.

`-n/--namespace`, `--verdict`, `--from-pod`, `--to-pod`, `--protocol` and `--port` keep the
observation rows (oriented connections) that match; `--since`/`--until` keep the flows seen in the
window while Hubble files are read (`in_window`). Values of one filter are ORed, filters are ANDed,
as in the hubble CLI. The orientation makes the pod filters exact per connection: `--from-pod` is
the client, `--to-pod` the server, and `--port` the server's port (the client's is ephemeral).
Observations are aggregated per workload, so a pod name prefix matches the workloads whose name
starts with it (a Deployment's pods are named after it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import msgspec
import pandas as pd

from collectors.errors import CollectorError
from collectors.records import POD, ObservationSet

PROTOCOLS = {"tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",), "icmp": ("ICMPv4", "ICMPv6")}
PROTOCOLS |= {"icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",)}
OUTSIDE_WINDOW = "outside --since/--until"
"""How the statistics count the flows the time window skipped."""
FILTERED = "filtered out (--namespace, --verdict, --from-pod, --to-pod, --protocol, --port)"
DEFAULT_NAMESPACE = "default"
"""The namespace of a `--from-pod`/`--to-pod` given without one, as in the hubble CLI."""


@dataclass(frozen=True)
class FlowFilter:
    """What to keep; empty tuples and None keep everything."""

    namespaces: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    from_pods: tuple[str, ...] = ()
    to_pods: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p.lower() not in PROTOCOLS]
        if unknown:
            raise CollectorError(
                f"--protocol {unknown[0]}: use {', '.join(PROTOCOLS)} (observations are L4 connections)"
            )
        if self.verdicts:
            from collectors.hubble_api.flow import flow_pb2  # protobuf's import is paid only when asked

            verdicts = flow_pb2.Verdict.keys()[1:]
            unknown = [verdict for verdict in self.verdicts if verdict.upper() not in verdicts]
            if unknown:
                raise CollectorError(f"--verdict {unknown[0]}: use {', '.join(verdicts)}")
        bad_ports = [port for port in self.ports if not 0 < port < 65536]
        if bad_ports:
            raise CollectorError(f"--port {bad_ports[0]} is not a port number (1-65535)")

    @property
    def rows_filtered(self) -> bool:
        """Whether `keep` drops any row (the time window is applied while reading)."""
        return bool(self.namespaces or self.verdicts or self.from_pods or self.to_pods or self.protocols or self.ports)

    @property
    def windowed(self) -> bool:
        return self.since is not None or self.until is not None

    def in_window(self, seen: datetime | None) -> bool:
        """Whether a flow seen at `seen` is inside --since/--until (a flow without a time is not)."""
        if seen is None:
            return not self.windowed
        return (self.since is None or seen >= self.since) and (self.until is None or seen <= self.until)

    def keep(self, observations: pd.DataFrame) -> pd.Series:
        """The rows that match every filter."""
        mask = pd.Series(True, index=observations.index)
        if self.namespaces:
            mask &= _pod_in(observations, "client", self.namespaces) | _pod_in(observations, "server", self.namespaces)
        if self.verdicts:
            mask &= observations["verdict"].isin([verdict.upper() for verdict in self.verdicts])
        if self.from_pods:
            mask &= _pod_prefix(observations, "client", self.from_pods)
        if self.to_pods:
            mask &= _pod_prefix(observations, "server", self.to_pods)
        if self.protocols:
            mask &= observations["protocol"].isin([name for p in self.protocols for name in PROTOCOLS[p.lower()]])
        if self.ports:
            mask &= observations["port"].isin(self.ports)
        return mask

    def apply(self, observed: ObservationSet) -> ObservationSet:
        """The observations that match (the rest is counted in the statistics as filtered)."""
        if not self.rows_filtered:
            return observed
        observations = observed.observations
        kept = self.keep(observations)
        stats = msgspec.structs.replace(observed.stats, skipped=observed.stats.skipped.copy())
        dropped = int(observations.loc[~kept, "count"].sum())
        if dropped:
            stats.skipped[FILTERED] += dropped
        return replace(observed, observations=observations[kept].reset_index(drop=True), stats=stats)


def _pod_in(observations: pd.DataFrame, side: str, namespaces: tuple[str, ...]) -> pd.Series:
    return (observations[f"{side}_entity"] == POD) & observations[f"{side}_namespace"].isin(namespaces)


def _pod_prefix(observations: pd.DataFrame, side: str, pods: tuple[str, ...]) -> pd.Series:
    """`[namespace/]prefix`: a pod of that namespace whose workload name starts with the prefix."""
    mask = pd.Series(False, index=observations.index)
    for pod in pods:
        namespace, _, prefix = pod.rpartition("/")
        mask |= (
            (observations[f"{side}_entity"] == POD)
            & (observations[f"{side}_namespace"] == (namespace or DEFAULT_NAMESPACE))
            & observations[f"{side}_workload"].str.startswith(prefix)
        )
    return mask
