"""Observation coverage: how much of the cluster's traffic the input can have seen.

A default-deny is only as good as the observation it is built on. The coverage gives the window
(first and last flow) and the flows per namespace, and warns when the input cannot support a
default-deny: only L7 records (Cilium's proxy sees only the traffic an L7 policy sends through it,
not the L3/L4 events of every connection), a window shorter than an hour (hourly and daily jobs
were not seen), or a managed namespace with a single observed workload (what its other workloads
say to each other was not seen).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from collectors.records import POD, ObservationSet

MIN_WINDOW = pd.Timedelta(hours=1)


class CoverageWarningKind(StrEnum):
    L7_ONLY = "l7-only"
    SHORT_WINDOW = "short-window"
    SINGLE_WORKLOAD = "single-workload"


@dataclass(frozen=True)
class CoverageWarning:
    kind: CoverageWarningKind
    message: str
    namespace: str = ""


@dataclass(frozen=True)
class Coverage:
    """The window of the observations, the flows per namespace, and what they cannot support."""

    first_seen: pd.Timestamp | None
    last_seen: pd.Timestamp | None
    flows_by_namespace: tuple[tuple[str, int], ...]
    """(namespace, flows with a pod of it at either end), by namespace."""
    warnings: tuple[CoverageWarning, ...] = ()

    @property
    def window(self) -> pd.Timedelta | None:
        return None if self.first_seen is None or self.last_seen is None else self.last_seen - self.first_seen

    def describe_window(self) -> str:
        first, last = self.first_seen, self.last_seen
        if first is None or last is None:
            return "unknown (no flow times)"
        start, end = (moment.strftime("%Y-%m-%dT%H:%M:%SZ") for moment in (first, last))
        return f"{start} to {end} ({_duration(last - first)})"

    def describe_flows(self) -> str:
        return ", ".join(f"{namespace} {flows:,}" for namespace, flows in self.flows_by_namespace) or "none"


def _duration(span: pd.Timedelta) -> str:
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if value]
    return " ".join(parts[:2]) or "0s"


def observation_coverage(observed: ObservationSet, managed: Iterable[str]) -> Coverage:
    """The coverage of `observed` for a proposal managing the `managed` namespaces."""
    frame = observed.observations
    firsts, lasts = frame["first_seen"].dropna(), frame["last_seen"].dropna()
    first = firsts.min() if len(firsts) else None
    last = lasts.max() if len(lasts) else None
    flows: dict[str, int] = {}
    workloads: dict[str, set[str]] = {}
    for namespace, group in _pod_sides(frame):
        flows[namespace] = int(group["count"].sum())
    for side in ("client", "server"):
        pods = frame[(frame[f"{side}_entity"] == POD) & (frame[f"{side}_workload"] != "")]
        for namespace, workload in zip(pods[f"{side}_namespace"], pods[f"{side}_workload"], strict=True):
            workloads.setdefault(namespace, set()).add(workload)
    window = None if first is None or last is None else last - first
    warnings = tuple(_warnings(observed, window, managed, workloads))
    return Coverage(first, last, tuple(sorted(flows.items())), warnings)


def _pod_sides(frame: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    """Per namespace, the observation rows with a pod of it at either end (a row counts once)."""
    client = frame["client_namespace"].where(frame["client_entity"] == POD, "")
    server = frame["server_namespace"].where(frame["server_entity"] == POD, "")
    for namespace in sorted((set(client) | set(server)) - {""}):
        yield namespace, frame[(client == namespace) | (server == namespace)]


def _warnings(
    observed: ObservationSet, window: pd.Timedelta | None, managed: Iterable[str], workloads: dict[str, set[str]]
) -> Iterable[CoverageWarning]:
    stats = observed.stats
    events = sum(stats.orientation.values())
    if stats.l7_events and stats.l7_events >= events:
        yield CoverageWarning(
            CoverageWarningKind.L7_ONLY,
            f"all {stats.l7_events:,} events are L7 records and none is an L3/L4 event: Cilium's proxy sees only "
            "the traffic of pods with L7 policies, so other connections were not observed; capture trace and "
            "policy-verdict events (`hubble observe` without `--type l7`) before applying a default-deny",
        )
    if window is not None and len(observed.observations) and window < MIN_WINDOW:
        yield CoverageWarning(
            CoverageWarningKind.SHORT_WINDOW,
            f"the observation window is {_duration(window)}, shorter than an hour: periodic traffic (jobs, "
            "batch, backups) was likely not seen; observe longer before applying a default-deny",
        )
    for namespace in sorted(managed):
        if len(workloads.get(namespace, ())) == 1:
            (only,) = workloads[namespace]
            yield CoverageWarning(
                CoverageWarningKind.SINGLE_WORKLOAD,
                f"namespace {namespace}: only one workload ({only}) was observed, so the traffic of its other "
                "workloads is unknown; check the namespace (an inventory lists its unobserved workloads)",
                namespace,
            )
