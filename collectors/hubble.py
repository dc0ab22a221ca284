"""Hubble flows → oriented, de-duplicated, aggregated observations.

`HubbleIngest` is the one code path for every Hubble source: `read_hubble_files` feeds it decoded
lines of `hubble observe -o jsonpb` / `-o json` output, legacy bare-flow lines and exporter logs;
the Relay client feeds it flows converted from gRPC messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import pandas as pd

from collectors.aggregate import (
    ALLOWED_BY,
    CLIENT_POD,
    COUNT,
    DROP_REASONS,
    FIRST,
    LAST,
    SERVER_POD,
    SERVICES,
    ObservationAggregator,
    add_to_set,
    empty_observations,
    new_record,
)
from collectors.errors import CollectorError, OnError
from collectors.hubble_identity import EndpointResolver
from collectors.hubble_schema import PROTO_NAMES, HubbleSchema, schema_for
from collectors.orientation import FORWARD, REPLY, UNDECIDED, Correlator, orient_event
from collectors.records import (
    DROPPED,
    POD,
    POD_COLUMNS,
    SEEN_VERDICTS,
    Endpoint,
    ObservationSet,
    ReadStats,
)
from collectors.sources import display_name, expand_inputs, open_input

VERDICT_NAMES = {
    0: "VERDICT_UNKNOWN", 1: "FORWARDED", 2: "DROPPED", 3: "ERROR", 4: "AUDIT",
    5: "REDIRECTED", 6: "TRACED", 7: "TRANSLATED",
}  # fmt: skip
_KEPT_VERDICTS = frozenset((*SEEN_VERDICTS, DROPPED))
TRACE_EVENT = 4
_IGNORED_EVENT_TYPES = {2: "debug event", 3: "capture event", 7: "socket event", 130: "agent event"}
_SOCK_TYPES = ("SOCK", 3)
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_DROP_NAMES = {133: "POLICY_DENIED", 181: "POLICY_DENY"}


def _skip_reason(flow: Any, verdict: str) -> str:
    """Why a flow event cannot be an observation of a connection, or "" when it can."""
    if verdict not in _KEPT_VERDICTS:
        return f"verdict {verdict or 'VERDICT_UNKNOWN'}"
    if flow.Type in _SOCK_TYPES:
        return "socket event"
    event = flow.event_type
    if event is not None and event.type in _IGNORED_EVENT_TYPES:
        return _IGNORED_EVENT_TYPES[event.type]
    l4 = flow.l4
    if l4 is None:
        return "no l4 (transport layer)"
    ip = flow.IP
    if ip is None or not ip.source or not ip.destination:
        return "no IP addresses"
    if l4.TCP is None and l4.UDP is None and l4.SCTP is None and l4.ICMPv4 is None and l4.ICMPv6 is None:
        return "transport not TCP, UDP, SCTP or ICMP"
    return ""


def _policy_name(policy: Any) -> str:
    kind = policy.kind or "NetworkPolicy"
    return f"{kind}:{policy.namespace}/{policy.name}" if policy.namespace else f"{kind}:{policy.name}"


class HubbleIngest:
    """Accumulates Hubble flows into observations; memory grows with distinct edges only.

    Exact duplicates (same `uuid`) are dropped within a window of at least `dedup_window` events,
    which covers the overlaps of reconnecting streams and of exporter files written side by side.
    DROPPED flows are kept with their verdict; the recommender decides whether they are wanted.
    """

    def __init__(self, *, dedup_window: int = 65536, correlation_capacity: int = 1 << 17) -> None:
        self.stats = ReadStats()
        self.aggregator = ObservationAggregator()
        self.unoriented = ObservationAggregator()
        self.unoriented.endpoints = self.aggregator.endpoints  # one endpoint table for both
        self.resolver = EndpointResolver(self.aggregator, PROTO_NAMES.endpoint.decode)
        self.correlator = Correlator(correlation_capacity)
        self.dns_names: dict[str, set[str]] = {}
        self._recent_uuids: set[str] = set()
        self._older_uuids: set[str] = set()
        self._dedup_window = dedup_window

    def add_line(self, line: Any) -> None:
        """One decoded envelope (GetFlowsResponse or ExportEvent) with a flow or another event."""
        if line.flow is not None:
            self.add_flow(line.flow, line.time)
        elif line.lost_events is not None:
            self.add_lost_events(int(line.lost_events.num_events_lost or 0))
        else:
            for kind in ("node_status", "agent_event", "debug_event"):
                if getattr(line, kind) is not None:
                    self.stats.ignored[kind] += 1

    def add_lost_events(self, number: int) -> None:
        """A `lost_events` record: Hubble's ring buffer overflowed and the observation has gaps."""
        self.stats.lost_event_records += 1
        self.stats.events_lost += number

    def add_flow(self, flow: Any, fallback_time: datetime | None = None) -> None:
        """Orient, identify and count one flow event (`fallback_time`: the envelope's time).

        This is the hot path of every ingest, so the common case (a known endpoint, `is_reply`
        set) is inlined; every decision lives in the helpers it falls back to.
        """
        stats = self.stats
        stats.flows += 1
        uuid = flow.uuid
        if uuid:
            if uuid in self._recent_uuids or uuid in self._older_uuids:
                stats.duplicates += 1
                return
            self._recent_uuids.add(uuid)
            if len(self._recent_uuids) >= self._dedup_window:
                self._older_uuids, self._recent_uuids = self._recent_uuids, set()
        verdict = flow.verdict
        l4 = flow.l4
        ports = None if l4 is None else l4.TCP or l4.UDP or l4.SCTP
        event = flow.event_type
        if verdict not in _KEPT_VERDICTS or ports is None or (event is not None and event.type != TRACE_EVENT):
            self._add_unusual_flow(flow, fallback_time)
            return
        protocol = "TCP" if ports is l4.TCP else "UDP" if ports is l4.UDP else "SCTP"
        is_reply = flow.is_reply
        if is_reply is None:
            direction, rule = orient_event(flow, protocol, 0, verdict == DROPPED)
        else:
            direction, rule = (REPLY if is_reply else FORWARD), "is_reply"
        self._count(
            flow,
            fallback_time,
            verdict,
            protocol,
            ports.source_port,
            ports.destination_port,
            direction,
            rule,
        )

    def _add_unusual_flow(self, flow: Any, fallback_time: datetime | None) -> None:
        """Flows off the fast path: numeric enums, policy-verdict, drop and L7 events, ICMP, skips."""
        verdict = flow.verdict
        if verdict.__class__ is int:
            verdict = VERDICT_NAMES.get(verdict, "VERDICT_UNKNOWN")
        skip = _skip_reason(flow, verdict)
        if skip:
            self.stats.skipped[skip] += 1
            return
        l4 = flow.l4
        ports = l4.TCP or l4.UDP or l4.SCTP
        if ports is not None:
            protocol = "TCP" if ports is l4.TCP else "UDP" if ports is l4.UDP else "SCTP"
            icmp_type, sport, dport = 0, ports.source_port, ports.destination_port
        else:
            protocol = "ICMPv4" if l4.ICMPv4 is not None else "ICMPv6"
            icmp_type, sport, dport = (l4.ICMPv4 or l4.ICMPv6).type, 0, 0
        direction, rule = orient_event(flow, protocol, icmp_type, verdict == DROPPED)
        if direction == UNDECIDED and ports is None:
            self.stats.skipped[f"{protocol} type {icmp_type} (neither request nor reply)"] += 1
            return
        self._count(flow, fallback_time, verdict, protocol, sport, dport, direction, rule)

    def _count(
        self, flow: Any, fallback_time: datetime | None, verdict: str, protocol: str,
        sport: int, dport: int, direction: int, rule: str,
    ) -> None:  # fmt: skip
        """Identify both ends and add the event to its observation (or hold it, if undecided)."""
        ip = flow.IP
        known = self.resolver.known
        source = flow.source
        src = known.get(bytes(source) if source.__class__ is msgspec.Raw else source)
        if src.__class__ is not tuple:
            src = self.resolver.resolve(source, ip.source)
        destination = flow.destination
        dst = known.get(bytes(destination) if destination.__class__ is msgspec.Raw else destination)
        if dst.__class__ is not tuple:
            dst = self.resolver.resolve(destination, ip.destination)
        if flow.destination_names or flow.source_names or flow.l7 is not None:
            self._learn_names(flow, ip)
        seen = flow.time or fallback_time
        if direction == UNDECIDED:
            self._hold(
                (src[0], dst[0], protocol, sport, dport, verdict, ip.source, ip.destination),
                seen,
                src[1],
                dst[1],
            )
            return

        self.stats.orientation[rule] += 1
        recent = self.correlator.recent
        if direction == FORWARD:
            recent.add((protocol, ip.source, sport, ip.destination, dport))
            key = (src[0], dst[0], protocol, dport, verdict)
            client_pod, server_pod, service = src[1], dst[1], flow.destination_service
        else:
            recent.add((protocol, ip.destination, dport, ip.source, sport))
            key = (dst[0], src[0], protocol, sport, verdict)
            client_pod, server_pod, service = dst[1], src[1], flow.source_service
        if len(recent) >= self.correlator.capacity:
            self.correlator.age()

        # ObservationAggregator.add, inlined.
        record = self.aggregator.records.get(key)
        if record is None:
            record = self.aggregator.records[key] = new_record(seen, client_pod, server_pod)
        else:
            record[COUNT] += 1
            if seen is not None:
                if seen < record[FIRST]:
                    record[FIRST] = seen
                if seen > record[LAST]:
                    record[LAST] = seen
            if client_pod and client_pod < record[CLIENT_POD]:
                record[CLIENT_POD] = client_pod
            if server_pod and server_pod < record[SERVER_POD]:
                record[SERVER_POD] = server_pod

        if service is not None and service.name:
            add_to_set(record, SERVICES, f"{service.namespace}/{service.name}")
        if flow.ingress_allowed_by or flow.egress_allowed_by:
            for policy in (*flow.egress_allowed_by, *flow.ingress_allowed_by):
                add_to_set(record, ALLOWED_BY, _policy_name(policy))
        if verdict == DROPPED:
            reason = flow.drop_reason_desc
            if reason.__class__ is int:
                reason = _DROP_NAMES.get(reason, str(reason) if reason else "")
            add_to_set(record, DROP_REASONS, reason or "DROP_REASON_UNKNOWN")

    def _learn_names(self, flow: Any, ip: Any) -> None:
        """DNS names of IPs: from `destination_names`/`source_names` and from DNS answers."""
        pairs = [(ip.destination, name) for name in flow.destination_names]
        pairs += [(ip.source, name) for name in flow.source_names]
        dns = flow.l7.dns if flow.l7 is not None else None
        if dns is not None and dns.query:
            pairs += [(answer, dns.query) for answer in dns.ips]
        for address, name in pairs:
            if name:
                self.dns_names.setdefault(address, set()).add(name.rstrip("."))

    def _hold(self, key: tuple, seen: datetime | None, src_pod: str, dst_pod: str) -> None:
        """Keep an undecided event until the rest of the stream can decide it."""
        pending = self.correlator.pending.get(key)
        if pending is None:
            self.correlator.pending[key] = new_record(seen, src_pod, dst_pod)
        else:
            pending[COUNT] += 1
            if seen is not None:
                pending[FIRST] = min(pending[FIRST], seen)
                pending[LAST] = max(pending[LAST], seen)
        if self.correlator.full:
            self._decide_pending()

    def _decide_pending(self) -> None:
        server_ports = {(server, protocol, port) for _c, server, protocol, port, _v in self.aggregator.records}
        for key, record, direction, rule in self.correlator.resolve(server_ports):
            src, dst, protocol, sport, dport, verdict, _src_ip, _dst_ip = key
            count = record[COUNT]
            if direction == FORWARD:
                self.aggregator.merge((src, dst, protocol, dport, verdict), record)
            elif direction == REPLY:
                record[CLIENT_POD], record[SERVER_POD] = record[SERVER_POD], record[CLIENT_POD]
                self.aggregator.merge((dst, src, protocol, sport, verdict), record)
            else:
                self.stats.unoriented += count
                self.unoriented.merge((src, dst, protocol, dport, verdict), record)
            self.stats.orientation[rule] += count

    def finish(self) -> ObservationSet:
        """Decide what is still pending and return the aggregated observations."""
        self._decide_pending()
        self._resolve_proxy_legs()
        pods = pd.DataFrame(
            [
                (cluster, namespace, pod, ep.workload, ep.kind, ep.labels)
                for (cluster, namespace, pod), ep in sorted(self.resolver.pods.items())
            ],
            columns=list(POD_COLUMNS),
        )
        unoriented = self.unoriented.to_frame() if self.unoriented.records else empty_observations()
        observations = self.aggregator.to_frame() if self.aggregator.records else empty_observations()
        names = {ip: tuple(sorted(found)) for ip, found in sorted(self.dns_names.items()) if found}
        return ObservationSet(observations, pods, unoriented, names, self.stats)

    def _resolve_proxy_legs(self) -> None:
        """Give pod endpoints seen without a pod name (L7 proxy legs) the workload of the pods that
        carry exactly their labels, when that workload is unique."""
        owners: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        for endpoint in self.resolver.pods.values():
            owners.setdefault((endpoint.cluster, endpoint.namespace, endpoint.labels), set()).add(
                (endpoint.workload, endpoint.kind)
            )
        endpoints = self.aggregator.endpoints
        for index, endpoint in enumerate(endpoints):
            if endpoint.entity == POD and not endpoint.workload:
                candidates = owners.get((endpoint.cluster, endpoint.namespace, endpoint.labels), set())
                if len(candidates) == 1:
                    workload, kind = next(iter(candidates))
                    endpoints[index] = Endpoint(
                        POD,
                        endpoint.namespace,
                        workload,
                        kind,
                        endpoint.labels,
                        "",
                        endpoint.cluster,
                    )


def read_hubble_files(
    specs: Sequence[str],
    *,
    on_error: OnError = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
) -> ObservationSet:
    """Read Hubble JSON files (globs, `-` for stdin, gzip) into aggregated observations.

    Accepts `hubble observe -o jsonpb` / `-o json` lines, legacy bare-flow lines and Hubble exporter
    logs, with proto or lowerCamelCase field names. A malformed line raises `BadInputError` naming
    the file and line (`on_error=FAIL`), or is skipped and counted (`SKIP`). `progress`, if given,
    is called now and then with the number of bytes read since its last call.
    """
    ingest = HubbleIngest()
    ingest.stats.bad.on_error = on_error
    for path in expand_inputs(specs):
        name = display_name(path)
        ingest.stats.sources.append(name)
        with open_input(path) as stream:
            try:
                _read_stream(stream, name, ingest, progress)
            except (OSError, EOFError, zlib.error) as exc:
                raise CollectorError(f"{name}: cannot read: {exc}") from exc
    return ingest.finish()


_PROGRESS_EVERY = 4096  # lines


def _read_stream(stream: Any, name: str, ingest: HubbleIngest, progress: Callable[[int], None] | None) -> None:
    """Decode every line of one file; its field naming convention is detected from the first line."""
    stats = ingest.stats
    schema = None
    add_flow = ingest.add_flow
    unread_bytes = 0
    number = 0
    for number, raw in enumerate(stream, start=1):
        if progress is not None:
            unread_bytes += len(raw)
            if number % _PROGRESS_EVERY == 0:
                progress(unread_bytes)
                unread_bytes = 0
        try:
            if schema is None:
                if not raw.strip():
                    stats.ignored["blank line"] += 1
                    continue
                schema = schema_for(raw)
                decode = schema.line.decode
                ingest.resolver.decode = schema.endpoint.decode
            line = decode(raw)
            if line.flow is not None:
                add_flow(line.flow, line.time)
            else:
                _read_other(line, raw, name, number, schema, ingest)
        except msgspec.ValidationError as exc:  # valid JSON, wrong shape (a subclass of DecodeError)
            stats.bad.report(name, number, f"unexpected value: {exc}")
        except msgspec.DecodeError as exc:
            if raw.strip():
                stats.bad.report(name, number, f"not valid JSON ({exc})")
            else:
                stats.ignored["blank line"] += 1
    stats.lines += number
    if progress is not None and unread_bytes:
        progress(unread_bytes)


def _read_other(line: Any, raw: bytes, name: str, number: int, schema: HubbleSchema, ingest: HubbleIngest) -> None:
    """A line without a `flow` key: another event, a legacy bare flow, or not Hubble at all."""
    if line.flow is not None or any(
        getattr(line, kind) is not None for kind in ("lost_events", "node_status", "agent_event", "debug_event")
    ):
        ingest.add_line(line)
    elif any(key in raw for key in _BARE_FLOW_KEYS):
        ingest.add_flow(schema.bare_flow.decode(raw))
    else:
        ingest.stats.bad.report(
            name,
            number,
            "not a Hubble flow or event (no 'flow', 'lost_events', 'node_status', "
            "'agent_event' or 'debug_event' key, and no flow fields)",
        )


_BARE_FLOW_KEYS = (b'"verdict"', b'"IP"', b'"l4"', b'"source"')  # the same in both naming conventions
