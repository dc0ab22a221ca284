"""One GetFlows stream from Hubble Relay into a `HubbleIngest`, resumed when it breaks.

A stream covers every node, or a `NodeShare` of them (nodes named in a FlowFilter, or every node
but those of the other streams). Responses are decoded as `received.GetFlowsResponse` (the fields
the recommender reads, endpoints left encoded); every flow goes through `flow_from_message` and
`HubbleIngest.add_flow`, the code path of Hubble files. When the stream breaks (relay restart,
network blip), it is requested again from its last flow's time, with exponential backoff, and the
overlap is skipped: flows at that time already counted (told apart by uuid, or by content) are not
counted again. Lost events are counted once, by the stream whose share owns their node: Hubble
sends them on every stream (they bypass flow filters), and again when a stream is resumed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from collectors.errors import CollectorError, OnError
from collectors.hubble import HubbleIngest
from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_api.observer import observer_pb2
from collectors.hubble_api.received import received_pb2
from collectors.hubble_api.relay import relay_pb2
from collectors.names import InvalidName
from collectors.relay_convert import endpoint_from_wire, flow_from_message, to_datetime
from collectors.relay_options import RelayConnectionError, RelayOptions

log = logging.getLogger(__name__)

ALL_FLOWS = (1 << 64) - 1
"""`GetFlowsRequest.number` for every flow in the ring buffers (the `hubble` CLI's `--all`)."""
RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
     grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}
)  # fmt: skip
"""Codes of a broken stream (connection reset, relay restart, RST_STREAM) worth resuming."""
PROGRESS_EVERY = 0.5  # seconds between progress reports
_LOST_EVENTS_REMEMBERED = 1 << 12


@dataclass(frozen=True)
class NodeShare:
    """The nodes one stream covers: those in `nodes` or, when empty, every node but `others` (the
    other streams' nodes, so that a node that joins later is still observed). `NodeShare()`: all."""

    nodes: tuple[str, ...] = ()
    others: tuple[str, ...] = ()

    def owns(self, node_name: str) -> bool:
        """Whether an event of this node (a lost event's `node_name`) is this stream's to count."""
        return node_name in self.nodes if self.nodes else node_name not in self.others

    def __str__(self) -> str:
        if self.nodes:
            return ", ".join(self.nodes)
        return f"every node but {', '.join(self.others)}" if self.others else "every node"


ALL_NODES = NodeShare()


@dataclass
class StreamSummary:
    """How one stream went. `stopped_by`: "end of stream", "duration", "limit" or "stopped"."""

    share: NodeShare = ALL_NODES
    flows: int = 0
    overlap_skipped: int = 0
    reconnects: int = 0
    lost_event_records: int = 0
    events_lost: int = 0
    edges: int = 0
    stopped_by: str = ""
    elapsed: float = 0.0


def relay_ingest() -> HubbleIngest:
    """A `HubbleIngest` for flows from `flow_from_message`: it decodes their endpoints' protobuf bytes.

    A flow naming an endpoint as Kubernetes would not (`collectors.names`) is skipped and counted: a
    live window cannot be read again, so one bad flow does not end it."""
    ingest = HubbleIngest()
    ingest.stats.bad.on_error = OnError.SKIP
    ingest.resolver.decode = endpoint_from_wire
    return ingest


def get_flows(channel: grpc.Channel) -> Any:
    """`observer.Observer/GetFlows` on `channel`, as the generated stub calls it, but with the responses
    decoded as `received.GetFlowsResponse`: the fields the recommender reads, endpoints as bytes."""
    return channel.unary_stream(
        "/observer.Observer/GetFlows",
        request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
        response_deserializer=received_pb2.GetFlowsResponse.FromString,
    )


def flows_request(
    options: RelayOptions, since: datetime | None, until: datetime | None, share: NodeShare = ALL_NODES
) -> Any:
    """The GetFlowsRequest of the window (from `since`, when resuming) for the nodes of `share`."""
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
    nodes = list(share.nodes)
    if pods:  # like `hubble observe --namespace`: from OR to the namespaces (filters are ORed, their fields ANDed)
        request.whitelist.add(source_pod=pods, verdict=verdicts, node_name=nodes)
        request.whitelist.add(destination_pod=pods, verdict=verdicts, node_name=nodes)
    elif verdicts or nodes:
        request.whitelist.add(verdict=verdicts, node_name=nodes)
    if share.others:
        request.blacklist.add(node_name=list(share.others))
    return request


class RelayStream:
    """Streams the flows of one `NodeShare` into `ingest`; `run` once, `stop` from any thread.

    `progress`, if given, is called about every `PROGRESS_EVERY` seconds with the summary so far.
    """

    def __init__(
        self,
        options: RelayOptions,
        ingest: HubbleIngest,
        share: NodeShare = ALL_NODES,
        progress: Callable[[StreamSummary], None] | None = None,
    ) -> None:
        self.options = options
        self.ingest = ingest
        self.summary = StreamSummary(share)
        self._progress = progress
        self._stopped = threading.Event()
        self._call: Any = None
        self._lock = threading.Lock()  # guards _call and the stopped check before a call starts
        self._mark: datetime | None = None  # the latest flow time seen
        self._at_mark: list[Any] = []  # the flows seen at exactly that time
        self._resume_mark: datetime | None = None  # set while skipping the overlap of a resumed stream
        self._resume_keys: set[Any] = set()
        self._lost_seen: set[tuple] = set()
        self._limit = 0  # the `--last N` flows, enforced here once a resumed stream may exceed them
        self._report_at = 0.0 if progress is not None else float("inf")

    def stop(self) -> None:
        """End the stream: the current call is cancelled and `run` returns its results."""
        with self._lock:
            self._stopped.set()
            if self._call is not None:
                self._call.cancel()

    def run(self, channel: grpc.Channel, deadline: float | None = None) -> StreamSummary:
        """Collect the window until it ends, `deadline` (a `time.monotonic()` value) passes or `stop`;
        raises `RelayConnectionError` if a broken stream cannot be resumed."""
        started = time.monotonic()
        options, summary = self.options, self.summary
        call = get_flows(channel)
        until = options.until
        if options.last and not options.follow:
            until = datetime.now(UTC)  # a resumed `--last N` must not run past the original window
        request = flows_request(options, options.since, options.until, summary.share)
        attempts = 0
        while not self._stopped.is_set():
            received = summary.flows
            try:
                timeout = max(deadline - time.monotonic(), 0.001) if deadline is not None else None
                with self._lock:
                    if self._stopped.is_set():
                        break
                    self._call = call(request, timeout=timeout)
                if self._consume(self._call):
                    summary.stopped_by = "limit"
                    break
                summary.stopped_by = "limit" if self._limit_reached() else "end of stream"
                break
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    break
                if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    summary.stopped_by = "duration"
                    break
                if self._limit_reached():
                    summary.stopped_by = "limit"
                    break
                attempts = 1 if summary.flows > received else attempts + 1
                self._give_up_or_wait(error, attempts, deadline)
            finally:
                with self._lock:
                    self._call = None
            request = self._resume_request(until)
            summary.reconnects += 1
        if self._stopped.is_set() and not summary.stopped_by:
            summary.stopped_by = "stopped"
        summary.elapsed = time.monotonic() - started
        summary.edges = len(self.ingest.aggregator.records)
        self._report(force=True)
        return summary

    def _consume(self, responses: Iterable[Any]) -> bool:
        """Ingest the responses of one call; True once the `--last N` limit is reached. The hot loop:
        the flow count, the latest flow time and the flows at that time live in locals meanwhile."""
        add_flow, limit, stats = self.ingest.add_flow, self._limit, self.ingest.stats
        summary, monotonic = self.summary, time.monotonic
        flows, mark, at_mark = summary.flows, self._mark, self._at_mark
        try:
            for response in responses:
                stats.lines += 1
                if not response.HasField("flow"):
                    self._note_event(response)
                    continue
                message = response.flow
                flow = flow_from_message(message)
                seen = flow.time
                try:
                    if seen is None:
                        add_flow(flow, to_datetime(response.time) if response.HasField("time") else None)
                    else:
                        if self._resume_mark is not None and self._in_overlap(message, seen):
                            continue
                        if mark is None or seen > mark:
                            mark, at_mark = seen, [message]
                        elif seen == mark:
                            at_mark.append(message)
                        add_flow(flow)
                except InvalidName as exc:  # an endpoint Kubernetes would not name so (see `relay_ingest`)
                    stats.bad.report(f"Hubble Relay {self.options.server}, response", stats.lines, str(exc))
                flows += 1
                if limit and flows >= limit:
                    return True
                if monotonic() >= self._report_at:
                    summary.flows = flows
                    self._report()
            return False
        finally:
            summary.flows, self._mark, self._at_mark = flows, mark, at_mark

    def _note_event(self, response: Any) -> None:
        """A response other than a flow: lost events of this stream's nodes are counted (once, even
        when a resumed stream sends them again), node status changes logged."""
        kind = response.WhichOneof("response_types")
        if kind == "lost_events":
            lost = response.lost_events
            key = (response.node_name, response.time.seconds, response.time.nanos, lost.source, lost.num_events_lost)
            if not self.summary.share.owns(response.node_name) or key in self._lost_seen:
                return
            if len(self._lost_seen) >= _LOST_EVENTS_REMEMBERED:
                self._lost_seen.clear()
            self._lost_seen.add(key)
            self.ingest.add_lost_events(lost.num_events_lost)
            summary = self.summary
            summary.lost_event_records += 1
            summary.events_lost += lost.num_events_lost
            log.warning(
                "Hubble lost %d events on %s (%s): the observation has gaps",
                lost.num_events_lost,
                response.node_name or "an unnamed node",
                flow_pb2.LostEventSource.Name(lost.source),
            )
        elif kind == "node_status":
            self.ingest.stats.ignored["node_status"] += 1
            event = response.node_status
            if event.state_change != relay_pb2.NODE_CONNECTED:
                log.warning(
                    "Hubble Relay: %s %s%s: their flows may be missing",
                    relay_pb2.NodeState.Name(event.state_change),
                    ", ".join(event.node_names),
                    f" ({event.message})" if event.message else "",
                )

    def _in_overlap(self, message: Any, seen: datetime) -> bool:
        """Whether a flow of a resumed stream was already counted before the break."""
        resume_mark = self._resume_mark
        assert resume_mark is not None
        if seen > resume_mark:
            self._resume_mark = None  # past the overlap
            return False
        if seen < resume_mark or _flow_key(message) in self._resume_keys:
            self.summary.overlap_skipped += 1
            return True
        return False

    def _resume_request(self, until: datetime | None) -> Any:
        """A request for the rest of the window, from the last flow's time on."""
        self._limit = self.options.last
        if self._mark is None:
            return flows_request(self.options, self.options.since, self.options.until, self.summary.share)
        self._resume_mark = self._mark
        self._resume_keys = {_flow_key(message) for message in self._at_mark}
        return flows_request(self.options, self._mark - timedelta(microseconds=1), until, self.summary.share)

    def _limit_reached(self) -> bool:
        return bool(self._limit) and self.summary.flows >= self._limit

    def _give_up_or_wait(self, error: grpc.RpcError, attempts: int, deadline: float | None) -> None:
        options, code, details = self.options, error.code(), error.details() or ""
        if code not in RESUMABLE:
            raise CollectorError(f"Hubble Relay at {options.server} refused the request: {code.name}: {details}")
        where = "" if self.summary.share == ALL_NODES else f" (nodes: {self.summary.share})"
        if attempts > options.max_reconnects:
            raise RelayConnectionError(
                f"lost the stream from Hubble Relay at {options.server}{where} and could not resume it after "
                f"{options.max_reconnects} attempts (last error {code.name}: {details}); "
                f"`cilium hubble port-forward` may need restarting"
            )
        delay = min(options.reconnect_backoff * 2 ** (attempts - 1), options.max_reconnect_backoff)
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0))
        log.warning(
            "stream from Hubble Relay at %s%s broke (%s: %s); resuming in %.1fs (attempt %d of %d)",
            options.server,
            where,
            code.name,
            details,
            delay,
            attempts,
            options.max_reconnects,
        )
        self._report(force=True)
        self._stopped.wait(delay)

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress is None or (not force and now < self._report_at):
            return
        self._report_at = now + PROGRESS_EVERY
        self.summary.edges = len(self.ingest.aggregator.records)
        self._progress(self.summary)


def _flow_key(message: Any) -> Any:
    """What identifies a flow event: its uuid, or its whole content when it has none."""
    return message.uuid or message.SerializeToString()
