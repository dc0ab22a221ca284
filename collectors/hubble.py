"""Hubble flows → oriented, de-duplicated, aggregated observations.

`HubbleIngest` is the one code path for every Hubble source: `read_hubble_files` feeds it decoded
lines of `hubble observe -o jsonpb` / `-o json` output, legacy bare-flow lines and exporter logs;
the Relay client feeds it flows converted from gRPC messages.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import pandas as pd

from collectors.aggregate import Aggregate, ObservationAggregator, empty_observations, new_aggregate
from collectors.errors import CollectorError, OnError
from collectors.flow_filter import OUTSIDE_WINDOW, FlowFilter
from collectors.hubble_identity import EndpointResolver, PodKey, better_record
from collectors.hubble_schema import PROTO_NAMES, HubbleSchema, envelope_time, schema_for
from collectors.identity import fold_proxy_twins, settle_endpoints
from collectors.names import InvalidName, is_host_name
from collectors.orientation import FORWARD, REPLY, UNDECIDED, Correlator, orient_event
from collectors.records import (
    DROPPED,
    POD_COLUMNS,
    SEEN_VERDICTS,
    Endpoint,
    ObservationSet,
    ReadStats,
)
from collectors.sources import (
    READ_BUFFER,
    STDIN,
    TruncatedInput,
    display_name,
    expand_inputs,
    input_progress,
    open_input,
)

VERDICT_NAMES = {
    0: "VERDICT_UNKNOWN", 1: "FORWARDED", 2: "DROPPED", 3: "ERROR", 4: "AUDIT",
    5: "REDIRECTED", 6: "TRACED", 7: "TRANSLATED",
}  # fmt: skip
_KEPT_VERDICTS = frozenset((*SEEN_VERDICTS, DROPPED))
_FAST_EVENTS = frozenset({4, 5, 129})  # trace, policy verdict, L7: the events of a Hubble capture
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

    def __init__(
        self, *, dedup_window: int = 65536, correlation_capacity: int = 1 << 15, window: FlowFilter | None = None
    ) -> None:
        self.stats = ReadStats()
        self.window = window if window is not None and window.windowed else None
        """--since/--until: flows seen outside are skipped and counted."""
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
            self.add_flow(line.flow, None if line.flow.time is not None else envelope_time(line))
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
        if (
            verdict not in _KEPT_VERDICTS
            or ports is None
            or flow.IP is None
            or (event is not None and event.type not in _FAST_EVENTS)
        ):
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
            self.stats.l7_events += flow.l7 is not None
            self._learn_names(flow, ip)
        seen = flow.time or fallback_time
        if self.window is not None and not self.window.in_window(seen):
            self.stats.skipped[OUTSIDE_WINDOW] += 1
            return
        if direction == UNDECIDED:
            direction, rule = self.correlator.correlate((protocol, ip.source, sport, ip.destination, dport))
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

        record = self.aggregator.add(key, seen, client_pod, server_pod)

        if service is not None and service.name:
            record.services.add(f"{service.namespace}/{service.name}")
        if flow.ingress_allowed_by or flow.egress_allowed_by:
            record.allowed_by.update(map(_policy_name, (*flow.egress_allowed_by, *flow.ingress_allowed_by)))
        if verdict == DROPPED:
            reason = flow.drop_reason_desc
            if reason.__class__ is int:
                reason = _DROP_NAMES.get(reason, str(reason) if reason else "")
            record.drop_reasons.add(reason or "DROP_REASON_UNKNOWN")

    def _learn_names(self, flow: Any, ip: Any) -> None:
        """DNS names of IPs: from `destination_names`/`source_names` and from DNS answers."""
        if flow.destination_names:
            self._add_names(ip.destination, flow.destination_names)
        if flow.source_names:
            self._add_names(ip.source, flow.source_names)
        dns = flow.l7.dns if flow.l7 is not None else None
        if dns is not None and dns.query:
            for answer in dns.ips:
                self._add_names(answer, (dns.query,))

    def _add_names(self, address: str, names: Iterable[str]) -> None:
        known = self.dns_names.get(address)
        if known is None:
            known = self.dns_names[address] = set()
        for name in names:
            name = name.rstrip(".") if name else name
            if not name or name in known:
                continue
            if is_host_name(name):
                known.add(name)
            else:
                self.stats.ignored["DNS name that is not a host name"] += 1

    def _hold(self, key: tuple, seen: datetime | None, src_pod: str, dst_pod: str) -> None:
        """Keep an undecided event until the rest of the stream can decide it."""
        pending = self.correlator.pending.get(key)
        if pending is None:
            self.correlator.pending[key] = new_aggregate(seen, src_pod, dst_pod)
        else:
            pending.count += 1
            if seen is not None:
                pending.first = min(pending.first, seen)
                pending.last = max(pending.last, seen)
        if self.correlator.full:
            self._decide_pending()

    def _decide_pending(self) -> None:
        decide_pending(self.correlator, self.aggregator, self.unoriented, self.stats)

    def partial(self) -> PartialIngest:
        """What this ingest holds, undecided events included, to be combined with other partial ingests
        (other files, byte ranges, processes or Dask partitions) by `finish_partials`."""
        return PartialIngest(
            endpoints=list(self.aggregator.endpoints),
            records=self.aggregator.records,
            unoriented=self.unoriented.records,
            pending=self.correlator.pending,
            remembered=self.correlator.remembered(),
            pods=dict(self.resolver.pods),
            pod_ips=self.resolver.pod_ips,
            unlabelled=self.resolver.unlabelled,
            leg_ips=self.resolver.leg_ips,
            dns_names=self.dns_names,
            stats=self.stats,
        )

    def finish(self) -> ObservationSet:
        """Decide what is still pending and return the aggregated observations."""
        return finish_partials([self.partial()])


@dataclass
class PartialIngest:
    """The state of one ingest, picklable: aggregate records keyed by this partial's endpoint ids, the
    undecided events, and the decided 5-tuples that may decide them."""

    endpoints: list[Endpoint]
    records: dict[tuple, Aggregate]
    unoriented: dict[tuple, Aggregate]
    pending: dict[tuple, Aggregate]
    remembered: set[tuple]
    pods: dict[PodKey, Endpoint]
    pod_ips: dict[str, set[PodKey]]
    unlabelled: dict[Endpoint, set[PodKey]]
    leg_ips: dict[str, set[Endpoint]]
    dns_names: dict[str, set[str]]
    stats: ReadStats


def decide_pending(
    correlator: Correlator, aggregator: ObservationAggregator, unoriented: ObservationAggregator, stats: ReadStats
) -> None:
    """Decide the correlator's undecided events with what `aggregator` knows, and count them."""
    server_ports = {(server, protocol, port) for _c, server, protocol, port, _v in aggregator.records}
    for key, record, direction, rule in correlator.resolve(server_ports):
        src, dst, protocol, sport, dport, verdict, _src_ip, _dst_ip = key
        count = record.count
        if direction == FORWARD:
            aggregator.merge((src, dst, protocol, dport, verdict), record)
        elif direction == REPLY:
            record.client_pod, record.server_pod = record.server_pod, record.client_pod
            aggregator.merge((dst, src, protocol, sport, verdict), record)
        else:
            stats.unoriented += count
            unoriented.merge((src, dst, protocol, dport, verdict), record)
        stats.orientation[rule] += count


def finish_partials(parts: Sequence[PartialIngest]) -> ObservationSet:
    """Combine partial ingests, in order, into observations, as one ingest of all their input would.

    Undecided events are decided only here, with every part's knowledge: the decided 5-tuples of all
    parts and the server ports of the combined observations.
    """
    aggregator, unoriented = ObservationAggregator(), ObservationAggregator()
    unoriented.endpoints = aggregator.endpoints
    correlator = Correlator()
    stats = ReadStats()
    pods: dict[PodKey, Endpoint] = {}
    pod_ips: dict[str, set[PodKey]] = {}
    unlabelled: dict[Endpoint, set[PodKey]] = {}
    leg_ips: dict[str, set[Endpoint]] = {}
    dns_names: dict[str, set[str]] = {}
    anything_pending = any(part.pending for part in parts)
    for part in parts:
        ids = [aggregator.endpoint_id(endpoint) for endpoint in part.endpoints]
        for (client, server, *rest), record in part.records.items():
            aggregator.merge((ids[client], ids[server], *rest), record)
        for (client, server, *rest), record in part.unoriented.items():
            unoriented.merge((ids[client], ids[server], *rest), record)
        for (src, dst, *rest), record in part.pending.items():
            key = (ids[src], ids[dst], *rest)
            if key in correlator.pending:
                correlator.pending[key].merge(record)
            else:
                correlator.pending[key] = record.copy()
        if anything_pending:  # the decided 5-tuples are there only to decide undecided events
            correlator.recent |= part.remembered
        for pod, endpoint in part.pods.items():
            pods[pod] = better_record(pods.get(pod), endpoint)
        for ip, named in part.pod_ips.items():
            pod_ips.setdefault(ip, set()).update(named)
        for endpoint, named in part.unlabelled.items():
            unlabelled.setdefault(endpoint, set()).update(named)
        for ip, legs in part.leg_ips.items():
            leg_ips.setdefault(ip, set()).update(legs)
        for ip, names in part.dns_names.items():
            dns_names.setdefault(ip, set()).update(names)
        stats.merge(part.stats)
    decide_pending(correlator, aggregator, unoriented, stats)
    settle_endpoints(aggregator.endpoints, pods, pod_ips, unlabelled)
    fold_proxy_twins(aggregator, leg_ips)
    pod_rows = [
        (cluster, namespace, pod, ep.workload, ep.kind, ep.labels)
        for (cluster, namespace, pod), ep in sorted(pods.items())
    ]
    return ObservationSet(
        observations=aggregator.to_frame() if aggregator.records else empty_observations(),
        pods=pd.DataFrame(pod_rows, columns=list(POD_COLUMNS)),
        unoriented=unoriented.to_frame() if unoriented.records else empty_observations(),
        dns_names={ip: tuple(sorted(found)) for ip, found in sorted(dns_names.items()) if found},
        stats=stats,
        pod_ips={ip: tuple(sorted((ns, pod) for _c, ns, pod in named)) for ip, named in sorted(pod_ips.items())},
    )


def read_hubble_files(
    specs: Sequence[str],
    *,
    on_error: OnError = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
    jobs: int = 1,
    window: FlowFilter | None = None,
) -> ObservationSet:
    """Read Hubble JSON files (globs, `-` for stdin, gzip) into aggregated observations.

    Accepts `hubble observe -o jsonpb` / `-o json` lines, legacy bare-flow lines and Hubble exporter
    logs, with proto or lowerCamelCase field names. A malformed line raises `BadInputError` naming
    the file and line (`on_error=FAIL`), or is skipped and counted (`SKIP`). `progress`, if given,
    is called now and then with the number of bytes read since its last call.

    With `jobs` > 1, files (and large plain files by byte ranges on line boundaries) are read by that
    many processes and their partial results combined: the result is the same as with one process
    (inputs smaller than `MIN_CHUNK_BYTES` are read in this process). A single gzip file is
    decompressed in this process and ingested in another. `window`'s --since/--until keep the flows
    seen in that time.
    """
    paths = expand_inputs(specs)
    chunks = plan_chunks(paths, jobs)
    if jobs > 1 and len(chunks) == 1 and chunks[0].size >= MIN_GZIP_BYTES and _is_gzip(chunks[0].path):
        combined = finish_partials([read_gzip_in_two_processes(chunks[0].path, on_error, progress, window)])
        combined.stats.sources = [display_name(path) for path in paths]
        return combined
    if jobs <= 1 or len(chunks) <= 1 or sum(chunk.size for chunk in chunks) < MIN_CHUNK_BYTES:
        ingest = HubbleIngest(window=window)
        ingest.stats.bad.on_error = on_error
        for path in paths:
            _read_file(path, ingest, progress)
        return ingest.finish()
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = [pool.submit(read_chunk, chunk, on_error, window) for chunk in chunks]
        parts = []
        for chunk, future in zip(chunks, futures, strict=True):
            try:
                parts.append(future.result())
            except BrokenProcessPool:
                raise CollectorError(f"{display_name(chunk.path)}: {_ended_without_result(None)}") from None
            if progress is not None:
                progress(chunk.size)
    combined = finish_partials(parts)
    combined.stats.sources = [display_name(path) for path in paths]
    return combined


def die_with_parent(parent: int) -> None:
    """Make this worker process end when `parent` does (Linux `PR_SET_PDEATHSIG`): a parent that leaves
    on Ctrl-C while its pool is still starting cannot stop a worker it does not know of yet, and that
    worker would wait for work forever."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's own stop is all there is
        return
    if os.getppid() != parent:  # the parent left before the request took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Chunk:
    """A file, or the lines of a plain file that start in [start, end)."""

    path: str
    start: int = 0
    end: int | None = None

    @property
    def size(self) -> int:
        end = self.end if self.end is not None else (os.path.getsize(self.path) if self.path != STDIN else 0)
        return end - self.start


MIN_CHUNK_BYTES = 16 << 20
MIN_GZIP_BYTES = 1 << 20
"""A gzip file from this size (compressed; about 20 MiB of flows) is decompressed and ingested in two processes."""


def plan_chunks(paths: Sequence[str], jobs: int, min_chunk: int | None = None) -> list[Chunk]:
    """Split the inputs for `jobs` processes: whole files, and large plain files in byte ranges."""
    min_chunk = min_chunk or MIN_CHUNK_BYTES
    chunks = []
    for path in paths:
        size = os.path.getsize(path) if path != STDIN else 0
        if jobs <= 1 or path == STDIN or size < 2 * min_chunk or _is_gzip(path):
            chunks.append(Chunk(path))
            continue
        pieces = min(size // min_chunk, 2 * jobs)
        bounds = [size * i // pieces for i in range(pieces + 1)]
        chunks += [Chunk(path, start, end) for start, end in itertools.pairwise(bounds)]
    return chunks


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_chunk(chunk: Chunk, on_error: OnError, window: FlowFilter | None = None) -> PartialIngest:
    """Ingest one chunk (in a worker process) and return its partial state."""
    name = display_name(chunk.path)
    if chunk.end is None:
        with open_input(chunk.path) as stream:
            return read_lines(stream, name, on_error, window=window)
    with open(chunk.path, "rb", buffering=READ_BUFFER) as handle:
        lines = lines_starting_in(handle, chunk.start, chunk.end)
        return read_lines(lines, name, on_error, lambda: lines_starting_before(chunk.path, chunk.start), window=window)


def read_lines(
    lines: Iterable[bytes],
    name: str,
    on_error: OnError,
    lines_before: Callable[[], int] | None = None,
    *,
    window: FlowFilter | None = None,
) -> PartialIngest:
    """Ingest the lines of file `name`, or of a part of it that `lines_before()` lines precede (asked
    only to name a bad line), into a partial state: the unit of work of processes and Dask partitions."""
    ingest = HubbleIngest(window=window)
    ingest.stats.bad.on_error = on_error
    try:
        _read_stream(lines, name, ingest, None, lines_before)
    except TruncatedInput as cut:
        _count_cut(ingest.stats, cut)
    except (OSError, EOFError, zlib.error) as exc:
        raise CollectorError(f"{name}: cannot read: {exc}") from exc
    return ingest.partial()


def read_gzip_in_two_processes(
    path: str,
    on_error: OnError,
    progress: Callable[[int], None] | None = None,
    window: FlowFilter | None = None,
) -> PartialIngest:
    """Ingest a gzip file with decompression (about as costly as the ingest) in this process and the
    ingest in a forked one, fed the decompressed bytes through a pipe: the same lines in the same
    order as one process reads them, so the same result, on two cores."""
    context = multiprocessing.get_context("fork")
    read_end, write_end = os.pipe()
    _widen(write_end)
    results, result_end = context.Pipe(duplex=False)
    arguments = (read_end, write_end, display_name(path), on_error, window, result_end, os.getpid())
    worker = context.Process(target=_ingest_pipe, args=arguments, daemon=True)
    worker.start()
    os.close(read_end)
    result_end.close()  # the worker's: once it ends, nothing more can come
    try:
        with open(write_end, "wb", buffering=0) as pipe:
            cut = _decompress_into(path, pipe, progress)
        try:
            result = results.recv()
        except EOFError:
            worker.join()
            raise CollectorError(f"{display_name(path)}: {_ended_without_result(worker.exitcode)}") from None
        if cut is not None and not isinstance(result, BaseException):
            result.stats.bad.report(cut.path, cut.line, cut.message)  # the lines before it were read
    except BaseException:
        worker.terminate()  # it may be blocked giving a result nobody will read
        raise
    finally:
        worker.join()
    if isinstance(result, BaseException):
        raise result
    return result


def _decompress_into(path: str, pipe: Any, progress: Callable[[int], None] | None) -> TruncatedInput | None:
    """Write the decompressed bytes of `path` into `pipe`, until the end or until its reader stops;
    where the file breaks off, the break (every complete line before it was written)."""
    with open_input(path) as stream:
        compressed = stream.raw  # type: ignore[attr-defined]
        progress = input_progress(stream, progress)
        try:
            while block := compressed.read(_PIPE_BLOCK):  # unbuffered: whatever came before a break is kept
                pipe.write(block)
                if progress is not None:
                    progress(len(block))
        except TruncatedInput as cut:
            return cut
        except BrokenPipeError:
            return None  # the reader stopped (at a bad line, which it reports, or it was killed)
        except (OSError, EOFError, zlib.error) as exc:
            raise CollectorError(f"{display_name(path)}: cannot read: {exc}") from exc
    return None


_PIPE_BLOCK = 1 << 17
"""Decompressed bytes written to the pipe at a time: a fraction of its capacity, so that the reader has lines
while this process decompresses the next ones."""
_F_SETPIPE_SZ = 1031  # Linux fcntl


def _widen(pipe: int) -> None:
    """Give `pipe` the largest capacity an unprivileged process may (Linux: 1 MiB by default, 64 KiB without
    it): with the default, the two processes took turns instead of working at once, slower than one."""
    try:
        import fcntl  # POSIX only

        with open("/proc/sys/fs/pipe-max-size") as limit:
            fcntl.fcntl(pipe, _F_SETPIPE_SZ, int(limit.read()))
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or not allowed: the pipe keeps its capacity


def _ended_without_result(exit_code: int | None) -> str:
    """Why a reading process gave no result: killed by a signal (the kernel's out-of-memory killer sends 9)."""
    if exit_code is None:
        return "a reading process ended before it gave its result (killed? out of memory?)"
    if exit_code < 0:
        return f"the reading process was killed by signal {-exit_code} (out of memory?) before it gave its result"
    return f"the reading process ended (exit code {exit_code}) before it gave its result"


def _ingest_pipe(
    read_end: int, write_end: int, name: str, on_error: OnError, window: FlowFilter | None, results: Any, parent: int
) -> None:
    """The worker of `read_gzip_in_two_processes`: ingest the lines arriving on `read_end`."""
    die_with_parent(parent)
    os.close(write_end)  # the parent's, inherited: the pipe ends when the parent closes it
    try:
        with open(read_end, "rb", buffering=READ_BUFFER) as stream:
            result: PartialIngest | BaseException = read_lines(stream, name, on_error, window=window)
    except BaseException as exc:  # given to the parent, which raises it
        result = exc
    results.send(result)


def lines_starting_in(handle: Any, start: int, end: int) -> Iterator[bytes]:
    """The lines that start in [start, end): a line crossing `start` belongs to the range before."""
    position = start
    if start > 0:
        handle.seek(start - 1)
        if handle.read(1) != b"\n":
            position += len(handle.readline())
    for raw in handle:
        if position >= end:
            return
        position += len(raw)
        yield raw


def lines_starting_before(path: str, offset: int, opener: Callable[[str, str], Any] = open) -> int:
    """How many lines start before byte `offset` (only needed to name the line of a bad record);
    `opener` opens `path` (`fsspec.open` for URLs)."""
    if offset == 0:
        return 0
    count, remaining = 1, offset - 1  # the first line starts at 0; each newline before offset - 1 starts one more
    with opener(path, "rb") as handle:
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def _read_file(path: str, ingest: HubbleIngest, progress: Callable[[int], None] | None) -> None:
    name = display_name(path)
    ingest.stats.sources.append(name)
    with open_input(path) as stream:
        try:
            _read_stream(stream, name, ingest, input_progress(stream, progress))
        except TruncatedInput as cut:
            _count_cut(ingest.stats, cut)
        except (OSError, EOFError, zlib.error) as exc:
            raise CollectorError(f"{name}: cannot read: {exc}") from exc


def _count_cut(stats: ReadStats, cut: TruncatedInput) -> None:
    """A compressed file broke off: the lines before the cut were read; the cut is a bad record
    (an error, or skipped and counted)."""
    stats.lines += cut.line - 1
    stats.bad.report(cut.path, cut.line, cut.message)


_PROGRESS_EVERY = 4096  # lines


def _read_stream(
    stream: Iterable[bytes],
    name: str,
    ingest: HubbleIngest,
    progress: Callable[[int], None] | None,
    lines_before: Callable[[], int] | None = None,
) -> None:
    """Decode every line of one file (or of a range of it, whose `lines_before` say how many lines
    precede it); the field naming convention is detected from the first line."""
    stats = ingest.stats
    schema = None
    add_flow = ingest.add_flow
    unread_bytes = 0
    number = 0

    def report(message: str) -> None:
        stats.bad.report(name, number + (lines_before() if lines_before else 0), message)

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
            flow = line.flow
            if flow is not None:
                add_flow(flow, None if flow.time is not None else envelope_time(line))
            else:
                problem = _read_other(line, raw, schema, ingest)
                if problem:
                    report(problem)
        except msgspec.ValidationError as exc:  # valid JSON, wrong shape (a subclass of DecodeError)
            report(f"unexpected value: {exc}")
        except InvalidName as exc:
            report(str(exc))
        except msgspec.DecodeError as exc:
            if raw.strip():
                report(f"not valid JSON ({exc})")
            else:
                stats.ignored["blank line"] += 1
    stats.lines += number
    if progress is not None and unread_bytes:
        progress(unread_bytes)


def _read_other(line: Any, raw: bytes, schema: HubbleSchema, ingest: HubbleIngest) -> str:
    """A line without a `flow` key: another event, a legacy bare flow, or not Hubble at all (the
    returned message says why)."""
    if line.flow is not None or any(
        getattr(line, kind) is not None for kind in ("lost_events", "node_status", "agent_event", "debug_event")
    ):
        ingest.add_line(line)
    elif any(key in raw for key in _BARE_FLOW_KEYS):
        ingest.add_flow(schema.bare_flow.decode(raw))
    else:
        return (
            "not a Hubble flow or event (no 'flow', 'lost_events', 'node_status', "
            "'agent_event' or 'debug_event' key, and no flow fields)"
        )
    return ""


_BARE_FLOW_KEYS = (b'"verdict"', b'"IP"', b'"l4"', b'"source"')  # the same in both naming conventions
