"""Live collection from Hubble Relay: `observer.Observer/GetFlows` over gRPC into `HubbleIngest`.

Connects like the `hubble` CLI (same option names and defaults), streams a bounded window
(`--last N`, `--since/--until`) or follows for a duration, and feeds every flow through
`HubbleIngest.add_flow`, the code path of Hubble files. When the stream breaks (relay restart,
network blip), it reconnects with exponential backoff and resumes from the last flow's time,
skipping the overlap; SIGINT/SIGTERM (or `RelayCollector.stop`) end the window cleanly.

The gRPC calls are made by a `RelayReceiver` (collectors.relay_receiver), in a process of its own
when two CPUs are available, which hands the responses over in blocks; this module decides
everything else and converts (collectors.relay_convert) and counts the flows.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from collectors.errors import CollectorError
from collectors.hubble import HubbleIngest
from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_api.observer import observer_pb2
from collectors.hubble_api.relay import relay_pb2
from collectors.records import ObservationSet
from collectors.relay_convert import FlowConverter, GetFlowsResponseBatch, to_datetime
from collectors.relay_receiver import ChannelSettings, ReceiverError, RelayReceiver, TransportError

log = logging.getLogger(__name__)

DEFAULT_SERVER = "localhost:4245"
"""Where `cilium hubble port-forward` (and `hubble -P`) expose Hubble Relay."""
ALL_FLOWS = (1 << 64) - 1
"""`GetFlowsRequest.number` for every flow in the ring buffers (the `hubble` CLI's `--all`)."""

_GET_FLOWS = "/observer.Observer/GetFlows"
_SERVER_STATUS = "/observer.Observer/ServerStatus"
_RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
     grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}
)  # fmt: skip
"""Codes of a broken stream (connection reset, relay restart, RST_STREAM) worth resuming."""
_PROGRESS_EVERY = 0.5  # seconds between progress reports
_TLS_HINT = (
    "check --tls-ca-cert-files (the CA that signed the relay's certificate), --tls-server-name "
    "(a name in that certificate) and, for mTLS, --tls-client-cert-file/--tls-client-key-file"
)


@dataclass(frozen=True)
class RelayOptions:
    """What to collect from where; names follow the `hubble observe` flags.

    Window: `last` N flows, or `since`/`until` (aware datetimes; see `parse_time`), or neither
    (every flow in the relay's buffers); `follow` keeps streaming new flows, for `duration`
    seconds or until stopped. `namespaces` keeps flows from or to those namespaces, `verdicts`
    those with these verdicts (both sent to the relay as FlowFilters). Any `tls_*` option turns
    TLS on. `max_reconnects` bounds the consecutive attempts to resume a broken stream, with
    delays doubling from `reconnect_backoff` up to `max_reconnect_backoff` seconds. `processes`:
    2 runs the gRPC receiver in a process of its own (two cores at work), 1 on a thread of this
    one; by default 2 when this process may use two CPUs or more.
    """

    server: str = DEFAULT_SERVER
    tls: bool = False
    tls_ca_cert_files: tuple[str, ...] = ()
    tls_client_cert_file: str = ""
    tls_client_key_file: str = ""
    tls_server_name: str = ""
    tls_allow_insecure: bool = False
    since: datetime | None = None
    until: datetime | None = None
    last: int = 0
    follow: bool = False
    duration: float | None = None
    namespaces: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    max_reconnects: int = 8
    reconnect_backoff: float = 0.5
    max_reconnect_backoff: float = 8.0
    processes: int | None = None

    def __post_init__(self) -> None:
        if self.last and (self.since or self.until):
            raise CollectorError("--last cannot be combined with --since/--until (Hubble Relay does not allow it)")
        if self.last < 0:
            raise CollectorError(f"--last must be positive, not {self.last}")
        if self.duration is not None and not self.follow:
            raise CollectorError("--duration needs --follow (it bounds how long to follow)")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise CollectorError(f"--{name} must carry a time zone (e.g. 2026-11-02T09:00:00Z)")
        unknown = [v for v in self.verdicts if v.upper() not in flow_pb2.Verdict.DESCRIPTOR.values_by_name]
        if unknown:
            raise CollectorError(f"unknown verdict {', '.join(unknown)}: use {', '.join(flow_pb2.Verdict.keys()[1:])}")
        if self.tls_allow_insecure:
            raise CollectorError(
                "--tls-allow-insecure is not available: Python's gRPC library cannot skip certificate "
                f"verification; {_TLS_HINT} (Cilium keeps the CA in the hubble-relay-client-certs secret)"
            )
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise CollectorError("mTLS needs both --tls-client-cert-file and --tls-client-key-file")
        if self.processes not in (None, 1, 2):
            raise CollectorError(f"processes must be 1 or 2, not {self.processes}")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_cert_files or self.tls_client_cert_file or self.tls_server_name)

    @property
    def channel_settings(self) -> ChannelSettings:
        """What the receiver needs to connect: the relay's address and the TLS options."""
        return ChannelSettings(
            self.server, self.uses_tls, self.tls_ca_cert_files, self.tls_client_cert_file,
            self.tls_client_key_file, self.tls_server_name,
        )  # fmt: skip

    @property
    def receiver_process(self) -> bool:
        """Whether the gRPC receiver runs in a process of its own (see `processes`)."""
        if self.processes is not None:
            return self.processes == 2
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return os.name == "posix" and usable >= 2


class RelayProgress(NamedTuple):
    """A live progress report: `flows_per_second` is the rate since the previous report."""

    elapsed: float
    flows: int
    flows_per_second: float
    edges: int
    lost_events: int


@dataclass
class RelaySummary:
    """How a collection went. `stopped_by`: "end of stream", "duration", "limit" or "signal"."""

    server: str
    server_version: str = ""
    flows: int = 0
    overlap_skipped: int = 0
    reconnects: int = 0
    stopped_by: str = ""
    elapsed: float = 0.0
    unavailable_nodes: list[str] = field(default_factory=list)


class RelayConnectionError(CollectorError):
    """Hubble Relay cannot be reached, or the stream broke and could not be resumed.

    `partial` holds the observations collected before the stream was lost, if any.
    """

    def __init__(self, message: str, partial: ObservationSet | None = None) -> None:
        super().__init__(message)
        self.partial = partial


# -- parsing the window options -----------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """A duration such as `30s`, `10m`, `1h30m`, `1.5h` or `2d` (Go syntax, plus days)."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise CollectorError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m or 2d")
    return timedelta(seconds=sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """`--since`/`--until`: a duration ago (`1h`, `30m`) or an RFC 3339 time (`2026-11-02T09:00:00Z`)."""
    if _DURATION.match(text.strip()):
        return (now or datetime.now(UTC)) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CollectorError(
            f"invalid time {text!r}: use a duration ago such as 1h or 30m, or an RFC 3339 time "
            "such as 2026-11-02T09:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise CollectorError(f"time {text!r} has no time zone: add Z (UTC) or an offset such as +02:00")
    return moment.astimezone(UTC)


# -- the connection -----------------------------------------------------------------------


def _unreachable(options: RelayOptions, error: TransportError) -> RelayConnectionError:
    """The error for a relay that does not answer, with what to try."""
    details = error.details or error.code.name
    hint = f"; if the TLS handshake failed, {_TLS_HINT}" if options.uses_tls else "; if the relay serves TLS, add --tls"
    return RelayConnectionError(
        f"cannot reach Hubble Relay at {options.server}: {details}. Is it running and reachable? "
        f"`cilium hubble port-forward` serves it on {DEFAULT_SERVER}; otherwise pass --server HOST:PORT{hint}."
    )


def _flows_request(options: RelayOptions, since: datetime | None, until: datetime | None) -> Any:
    """The GetFlowsRequest of the window (from `since`, when resuming)."""
    request = observer_pb2.GetFlowsRequest(follow=options.follow)
    if since or until:
        for name, moment in (("since", since), ("until", until)):
            if moment is not None:
                stamp = Timestamp()
                stamp.FromDatetime(moment)
                getattr(request, name).CopyFrom(stamp)
    elif options.last:
        request.number = options.last
    elif not options.follow:
        request.number = ALL_FLOWS
    verdicts = [flow_pb2.Verdict.Value(v.upper()) for v in options.verdicts]
    pods = [f"{namespace}/" for namespace in options.namespaces]
    if pods:  # like `hubble observe --namespace`: from OR to the namespaces
        request.whitelist.add(source_pod=pods, verdict=verdicts)
        request.whitelist.add(destination_pod=pods, verdict=verdicts)
    elif verdicts:
        request.whitelist.add(verdict=verdicts)
    return request


@contextmanager
def _stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `stop` (run on a helper thread: telling the receiver from inside
    a signal handler could interrupt the main thread's own exchange with it). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        threading.Thread(target=stop, name="relay-stop", daemon=True).start()

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# -- the collector ------------------------------------------------------------------------


class RelayCollector:
    """Streams flows from Hubble Relay into a `HubbleIngest`; `run` once, `stop` from anywhere."""

    def __init__(
        self,
        options: RelayOptions,
        ingest: HubbleIngest,
        progress: Callable[[RelayProgress], None] | None = None,
    ) -> None:
        self.options = options
        self.ingest = ingest
        self.summary = RelaySummary(options.server)
        self._progress = progress
        self._converter = FlowConverter()
        self._stopped = threading.Event()
        self._receiver: RelayReceiver | None = None
        self._mark: datetime | None = None  # the latest flow time seen
        self._at_mark: list[Any] = []  # the flows seen at exactly that time
        self._resume_mark: datetime | None = None  # set while skipping the overlap of a resumed stream
        self._resume_keys: set[Any] = set()
        self._limit = 0  # the `--last N` flows, enforced here once a resumed stream may exceed them
        self._report_started = self._report_at = 0.0
        self._report_flows = 0

    def stop(self) -> None:
        """End the collection: the current stream is cancelled and `run` returns its results."""
        self._stopped.set()
        receiver = self._receiver  # None before `run` sets it; `run` looks at `_stopped` after that
        if receiver is not None:
            receiver.stop()

    def run(self) -> RelaySummary:
        """Collect the window; raises `RelayConnectionError` if the relay cannot be (re)reached."""
        options = self.options
        started = time.monotonic()
        deadline = started + options.duration if options.duration is not None else None
        until = options.until
        if options.last and not options.follow:
            until = datetime.now(UTC)  # a resumed `--last N` must not run past the original window
        self.ingest.stats.sources.append(f"hubble-relay:{options.server}")
        self._report_started = self._report_at = started
        with RelayReceiver(options.channel_settings, own_process=options.receiver_process) as receiver:
            self._receiver = receiver
            try:
                with _stopping_on_signals(self.stop):
                    self._collect(receiver, deadline, until)
            except ReceiverError as error:
                raise CollectorError(str(error)) from None
            finally:
                self._receiver = None
        if self._stopped.is_set() and not self.summary.stopped_by:
            self.summary.stopped_by = "signal"
        self.summary.elapsed = time.monotonic() - started
        self._report(force=True)
        return self.summary

    def _collect(self, receiver: RelayReceiver, deadline: float | None, until: datetime | None) -> None:
        """Stream the window, resuming broken streams, until it ends, stops or cannot be resumed."""
        self._check_server(receiver)
        attempts = 0
        request = _flows_request(self.options, self.options.since, self.options.until)
        while not self._stopped.is_set():
            received = self.summary.flows
            try:
                self._stream(receiver, request, deadline)
                if not self._stopped.is_set():
                    self.summary.stopped_by = "limit" if self._limit_reached() else "end of stream"
                break
            except TransportError as error:
                if self._stopped.is_set():
                    break
                if error.code is grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    self.summary.stopped_by = "duration"
                    break
                if self._limit_reached():
                    self.summary.stopped_by = "limit"
                    break
                attempts = 1 if self.summary.flows > received else attempts + 1
                self._give_up_or_wait(error, attempts, deadline)
            request = self._resume_request(until)
            self.summary.reconnects += 1

    def _check_server(self, receiver: RelayReceiver) -> None:
        """Fail fast with a useful message when the relay does not answer; note its version."""
        request = observer_pb2.ServerStatusRequest().SerializeToString()
        try:
            reply = receiver.call(_SERVER_STATUS, request, self.options.connect_timeout)
        except TransportError as error:
            if error.code is grpc.StatusCode.UNIMPLEMENTED:
                return  # an observer without ServerStatus still serves GetFlows
            raise _unreachable(self.options, error) from None
        status = observer_pb2.ServerStatusResponse.FromString(reply)
        self.summary.server_version = status.version
        self.summary.unavailable_nodes = list(status.unavailable_nodes)
        log.info(
            "Hubble Relay %s (%s), %s nodes connected",
            self.options.server,
            status.version or "version unknown",
            status.num_connected_nodes.value if status.HasField("num_connected_nodes") else "?",
        )
        if status.num_unavailable_nodes.value:
            log.warning(
                "Hubble Relay cannot reach %d nodes (%s): their flows are missing",
                status.num_unavailable_nodes.value,
                ", ".join(status.unavailable_nodes) or "names unknown",
            )

    def _stream(self, receiver: RelayReceiver, request: Any, deadline: float | None) -> None:
        """Consume one GetFlows call until it ends (returns) or breaks (raises `TransportError`)."""
        timeout = max(deadline - time.monotonic(), 0.001) if deadline is not None else None
        with closing(receiver.stream(_GET_FLOWS, request.SerializeToString(), timeout)) as blocks:
            for block in blocks:
                if self._consume(GetFlowsResponseBatch.FromString(block).responses):
                    return

    def _consume(self, responses: Any) -> bool:
        """Count a block of responses; True once the `--last N` limit is reached. The hot loop: the
        flow count, the latest flow time and the flows at that time live in locals meanwhile."""
        add_flow, convert, limit = self.ingest.add_flow, self._converter.convert, self._limit
        self.ingest.stats.lines += len(responses)
        flows, mark, at_mark = self.summary.flows, self._mark, self._at_mark
        try:
            for response in responses:
                if response.WhichOneof("response_types") != "flow":
                    self._note_event(response)
                    continue
                view = response.flow
                flow = convert(view)
                seen = flow.time
                if seen is None:
                    add_flow(flow, to_datetime(response.time) if response.HasField("time") else None)
                else:
                    if self._resume_mark is not None and self._in_overlap(view, seen):
                        continue
                    if mark is None or seen > mark:
                        mark, at_mark = seen, [view]
                    elif seen == mark:
                        at_mark.append(view)
                    add_flow(flow)
                flows += 1
                if limit and flows >= limit:
                    return True
            return False
        finally:
            self.summary.flows, self._mark, self._at_mark = flows, mark, at_mark
            self._report()

    def _note_event(self, response: Any) -> None:
        """A response other than a flow: lost events are counted, node status changes logged."""
        kind = response.WhichOneof("response_types")
        if kind == "lost_events":
            self.ingest.add_lost_events(response.lost_events.num_events_lost)
            log.warning(
                "Hubble lost %d events (%s): the observation has gaps",
                response.lost_events.num_events_lost,
                flow_pb2.LostEventSource.Name(response.lost_events.source),
            )
        elif kind == "node_status":
            self.ingest.stats.ignored["node_status"] += 1
            self._note_node_status(response.node_status)

    def _in_overlap(self, view: Any, seen: datetime) -> bool:
        """Whether a flow of a resumed stream was already counted before the break."""
        resume_mark = self._resume_mark
        if seen > resume_mark:
            self._resume_mark = None  # past the overlap
            return False
        if seen < resume_mark or _flow_key(view) in self._resume_keys:
            self.summary.overlap_skipped += 1
            return True
        return False

    def _resume_request(self, until: datetime | None) -> Any:
        """A request for the rest of the window, from the last flow's time on."""
        self._limit = self.options.last
        if self._mark is None:
            return _flows_request(self.options, self.options.since, self.options.until)
        self._resume_mark = self._mark
        self._resume_keys = {_flow_key(view) for view in self._at_mark}
        return _flows_request(self.options, self._mark - timedelta(microseconds=1), until)

    def _limit_reached(self) -> bool:
        return bool(self._limit) and self.summary.flows >= self._limit

    def _give_up_or_wait(self, error: TransportError, attempts: int, deadline: float | None) -> None:
        options = self.options
        code = error.code
        if code not in _RESUMABLE:
            raise CollectorError(f"Hubble Relay at {options.server} refused the request: {code.name}: {error.details}")
        if attempts > options.max_reconnects:
            raise RelayConnectionError(
                f"lost the stream from Hubble Relay at {options.server} and could not resume it after "
                f"{options.max_reconnects} attempts (last error {code.name}: {error.details}); "
                f"`cilium hubble port-forward` may need restarting"
            )
        delay = min(options.reconnect_backoff * 2 ** (attempts - 1), options.max_reconnect_backoff)
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0))
        log.warning(
            "stream from Hubble Relay at %s broke (%s: %s); resuming in %.1fs (attempt %d of %d)",
            options.server,
            code.name,
            error.details,
            delay,
            attempts,
            options.max_reconnects,
        )
        self._report(force=True)
        self._stopped.wait(delay)

    def _note_node_status(self, event: Any) -> None:
        state = relay_pb2.NodeState.Name(event.state_change)
        if event.state_change != relay_pb2.NODE_CONNECTED:
            log.warning(
                "Hubble Relay: %s %s%s: their flows may be missing",
                state,
                ", ".join(event.node_names),
                f" ({event.message})" if event.message else "",
            )

    def _report(self, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._report_at < _PROGRESS_EVERY:
            return
        flows = self.summary.flows
        rate = (flows - self._report_flows) / (now - self._report_at) if now > self._report_at else 0.0
        self._report_at, self._report_flows = now, flows
        stats = self.ingest.stats
        self._progress(
            RelayProgress(
                now - self._report_started, flows, rate, len(self.ingest.aggregator.records), stats.events_lost
            )
        )


def _flow_key(view: Any) -> Any:
    """What identifies a flow event: its uuid, or its whole content when it has none."""
    return view.uuid or view.SerializeToString()


def collect_from_relay(
    options: RelayOptions,
    ingest: HubbleIngest | None = None,
    progress: Callable[[RelayProgress], None] | None = None,
) -> ObservationSet:
    """Collect flows from Hubble Relay into aggregated observations (the one-call API).

    Returns when the window ends: the stream ends (a bounded window), `duration` passes, or
    SIGINT/SIGTERM arrives. Raises `RelayConnectionError` when the relay cannot be reached, or when
    a broken stream cannot be resumed (then with the observations so far in `partial`).
    """
    ingest = ingest if ingest is not None else HubbleIngest()
    try:
        RelayCollector(options, ingest, progress).run()
    except RelayConnectionError as error:
        if ingest.stats.flows:
            error.partial = ingest.finish()
        raise
    return ingest.finish()
