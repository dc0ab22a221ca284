"""Live collection from Hubble Relay: `observer.Observer/GetFlows` over gRPC into aggregated observations.

Connects like the `hubble` CLI (same option names and defaults, `collectors.relay_options`), streams a
bounded window (`--last N`, `--since/--until`) or follows for a duration, and ingests every flow as
Hubble files are ingested (`collectors.relay_stream`). SIGINT/SIGTERM end the window cleanly.

One stream is collected in this process. Several streams split the relay's flows by node
(`FlowFilter.node_name`, the nodes from `GetNodes`, balanced by their flow rates): each runs in a
process of its own (gRPC for Python receives one stream on one core at most), ingests into a
`PartialIngest`, and this process merges them with `finish_partials`, as the file readers do. The
processes talk through a queue of typed messages (`StreamProgress`, `StreamFinished`,
`StreamFailed`, and log records). The default is one stream per CPU this process may use (its
cgroup quota counted, `collectors.cpus`), at most one per node.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, assert_never

import grpc

from collectors.cpus import available_cpus
from collectors.errors import CollectorError
from collectors.hubble import PartialIngest, finish_partials
from collectors.hubble_api.observer import observer_pb2, observer_pb2_grpc
from collectors.records import ObservationSet
from collectors.relay_options import (
    DEFAULT_SERVER,
    TLS_HINT,
    RelayConnectionError,
    RelayOptions,
    open_channel,
    parse_duration,
    parse_time,
)
from collectors.relay_stream import ALL_NODES, PROGRESS_EVERY, NodeShare, RelayStream, StreamSummary, relay_ingest

__all__ = [
    "DEFAULT_SERVER",
    "RelayConnectionError",
    "RelayOptions",
    "RelayProgress",
    "RelaySummary",
    "collect_from_relay",
    "observe_relay",
    "parse_duration",
    "parse_time",
    "plan_streams",
]

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_EXIT_TIMEOUT = 10.0
"""Seconds a worker may take to end its stream and hand over its results once told to stop."""


class RelayProgress(NamedTuple):
    """A live progress report: `flows_per_second` is the rate since the previous report; `edges` are
    the distinct edges of each stream, summed (an edge seen by two streams counts twice until merged)."""

    elapsed: float
    flows: int
    flows_per_second: float
    edges: int
    lost_events: int


@dataclass
class RelaySummary:
    """How a collection went, stream by stream. `stopped_by`: "end of stream", "duration", "limit"
    or "signal" (several, comma-separated, when the streams ended differently)."""

    server: str
    server_version: str = ""
    unavailable_nodes: list[str] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    stopped_by: str = ""
    elapsed: float = 0.0

    @property
    def flows(self) -> int:
        return sum(stream.flows for stream in self.streams)

    @property
    def overlap_skipped(self) -> int:
        return sum(stream.overlap_skipped for stream in self.streams)

    @property
    def reconnects(self) -> int:
        return sum(stream.reconnects for stream in self.streams)


def collect_from_relay(
    options: RelayOptions, progress: Callable[[RelayProgress], None] | None = None
) -> ObservationSet:
    """Collect flows from Hubble Relay into aggregated observations (the one-call API); see `observe_relay`."""
    return observe_relay(options, progress)[0]


def observe_relay(
    options: RelayOptions, progress: Callable[[RelayProgress], None] | None = None
) -> tuple[ObservationSet, RelaySummary]:
    """Collect the window `options` describe: its observations, and how each stream went.

    Returns when the window ends: the streams end (a bounded window), `duration` passes, or
    SIGINT/SIGTERM arrives. Raises `RelayConnectionError` when the relay cannot be reached, or when
    a broken stream cannot be resumed (then with the observations so far in `partial`).
    """
    started = time.monotonic()
    deadline = started + options.duration if options.duration is not None else None
    summary = RelaySummary(options.server)
    report = _Reporter(progress, started)
    with open_channel(options) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        _check_server(stub, options, summary)
        count = _stream_count(options)
        shares = plan_streams(_nodes(stub, options), count) if count > 1 else [ALL_NODES]
        if len(shares) == 1:
            collected = _collect_here(options, channel, deadline, report)
    if len(shares) > 1:
        collected = _collect_in_processes(options, shares, deadline, report)
    parts, summary.streams, signalled = collected
    summary.elapsed = time.monotonic() - started
    summary.stopped_by = "signal" if signalled else ", ".join(sorted({s.stopped_by for s in summary.streams}))
    report(summary.streams, force=True)
    return _merged(parts, options), summary


def _merged(parts: list[PartialIngest], options: RelayOptions) -> ObservationSet:
    """The observations of the streams' partial ingests, in stream order, with the relay as their source."""
    observations = finish_partials(parts)
    observations.stats.sources = [f"hubble-relay:{options.server}"]
    return observations


# -- before the streams: the server and its nodes --------------------------------------------


def _check_server(stub: Any, options: RelayOptions, summary: RelaySummary) -> None:
    """Fail fast with a useful message when the relay does not answer; note its version."""
    try:
        status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=options.connect_timeout)
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.UNIMPLEMENTED:
            return  # an observer without ServerStatus still serves GetFlows
        raise _unreachable(options, error) from None
    summary.server_version = status.version
    summary.unavailable_nodes = list(status.unavailable_nodes)
    log.info(
        "Hubble Relay %s (%s), %s nodes connected",
        options.server,
        status.version or "version unknown",
        status.num_connected_nodes.value if status.HasField("num_connected_nodes") else "?",
    )
    if status.num_unavailable_nodes.value:
        log.warning(
            "Hubble Relay cannot reach %d nodes (%s): their flows are missing",
            status.num_unavailable_nodes.value,
            ", ".join(status.unavailable_nodes) or "names unknown",
        )


def _unreachable(options: RelayOptions, error: grpc.RpcError) -> RelayConnectionError:
    """The error for a relay that does not answer, with what to try."""
    details = error.details() or error.code().name
    hint = f"; if the TLS handshake failed, {TLS_HINT}" if options.uses_tls else "; if the relay serves TLS, add --tls"
    return RelayConnectionError(
        f"cannot reach Hubble Relay at {options.server}: {details}. Is it running and reachable? "
        f"`cilium hubble port-forward` serves it on {DEFAULT_SERVER}; otherwise pass --server HOST:PORT{hint}."
    )


def _stream_count(options: RelayOptions) -> int:
    """The streams asked for: `streams`, or one per available CPU; one for `--last N` (a window of
    the latest N flows across all nodes)."""
    if options.last:
        if options.streams not in (None, 1):
            log.info("--last N is one window across every node: collected in one stream")
        return 1
    return options.streams if options.streams is not None else available_cpus()


def _nodes(stub: Any, options: RelayOptions) -> list[Any]:
    """The relay's nodes (GetNodes), or none when it cannot tell (a plain Hubble server, an old relay)."""
    try:
        return list(stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=options.connect_timeout).nodes)
    except grpc.RpcError as error:
        log.info("Hubble Relay at %s does not list its nodes (%s): one stream", options.server, error.code().name)
        return []


def plan_streams(nodes: Sequence[Any], streams: int) -> list[NodeShare]:
    """Split the relay's `nodes` (GetNodes `Node` messages) into at most `streams` shares of about
    equal flow rates (a node's `seen_flows` over its uptime), busiest first to the least loaded.
    The last share is every node but the others', so that nodes joining later are observed too."""
    rates = {
        node.name: node.seen_flows / node.uptime_ns if node.uptime_ns else node.seen_flows
        for node in nodes
        if node.name
    }
    count = min(streams, len(rates))
    if count <= 1:
        return [ALL_NODES]
    loads: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(count)]
    for name in sorted(rates, key=lambda name: (-rates[name], name)):
        index = min(range(count), key=lambda i: (loads[i][0], len(loads[i][1]), i))
        loads[index] = (loads[index][0] + rates[name], [*loads[index][1], name])
    named = [tuple(sorted(names)) for _load, names in loads]
    others = tuple(sorted(name for names in named[:-1] for name in names))
    return [*(NodeShare(nodes=names) for names in named[:-1]), NodeShare(others=others)]


# -- one stream, here ---------------------------------------------------------------------------


def _collect_here(
    options: RelayOptions, channel: grpc.Channel, deadline: float | None, report: _Reporter
) -> tuple[list[PartialIngest], list[StreamSummary], bool]:
    ingest = relay_ingest()
    stream = RelayStream(options, ingest, progress=lambda summary: report([summary]))
    signalled = threading.Event()

    def stop() -> None:
        signalled.set()
        stream.stop()

    try:
        with _stopping_on_signals(stop):
            summary = stream.run(channel, deadline)
    except RelayConnectionError as error:
        if ingest.stats.flows:
            error.partial = _merged([ingest.partial()], options)
        raise
    return [ingest.partial()], [summary], signalled.is_set()


@contextlib.contextmanager
def _stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to `stop`, run on a helper thread (gRPC calls are not made from a
    signal handler). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: Any) -> None:
        threading.Thread(target=stop, name="relay-stop", daemon=True).start()

    previous = {number: signal.signal(number, handler) for number in _STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# -- several streams, one process each -----------------------------------------------------------


@dataclass(frozen=True)
class StreamProgress:
    """A worker's progress: its summary so far."""

    stream: int
    summary: StreamSummary


@dataclass(frozen=True)
class StreamFinished:
    """A worker's stream ended (the window ended, the duration passed, or it was stopped)."""

    stream: int
    summary: StreamSummary
    partial: PartialIngest


@dataclass(frozen=True)
class StreamFailed:
    """A worker's stream failed: `lost_connection` when it broke for good (then `partial` holds what it
    had collected), otherwise the relay refused it or a credential file could not be read."""

    stream: int
    message: str
    lost_connection: bool
    summary: StreamSummary
    partial: PartialIngest | None


WorkerMessage = StreamProgress | StreamFinished | StreamFailed | logging.LogRecord


def _collect_in_processes(
    options: RelayOptions, shares: list[NodeShare], deadline: float | None, report: _Reporter
) -> tuple[list[PartialIngest], list[StreamSummary], bool]:
    """Run one worker process per share: their partial ingests and summaries in share order, and whether
    a signal stopped them. A failed stream stops the others and raises, with what they all collected."""
    context = multiprocessing.get_context("spawn")  # never fork a process that has used gRPC
    messages: Any = context.Queue()
    wall_deadline = time.time() + (deadline - time.monotonic()) if deadline is not None else None
    log.info("collecting %d streams in parallel: %s", len(shares), "; ".join(map(str, shares)))
    workers = []
    for index, share in enumerate(shares):
        control, stopper = context.Pipe(duplex=False)
        arguments = (index, options, share, wall_deadline, messages, control, log.getEffectiveLevel())
        process = context.Process(target=_stream_worker, args=arguments, name=f"relay-stream-{index}", daemon=True)
        workers.append(_Worker(process, control, stopper))
    ended: dict[int, StreamFinished | StreamFailed] = {}
    latest = {index: StreamSummary(share) for index, share in enumerate(shares)}
    signalled = threading.Event()
    stopped_at: list[float] = []  # when the workers were told to stop

    def stop() -> None:
        if not stopped_at:
            stopped_at.append(time.monotonic())
            _stop(workers)

    def stop_on_signal() -> None:
        signalled.set()
        stop()

    def fail(index: int, message: str) -> None:
        ended[index] = StreamFailed(index, f"the stream of {shares[index]} {message}", False, latest[index], None)
        stop()

    with _stopping_on_signals(stop_on_signal), _running(workers):
        while len(ended) < len(workers):
            try:
                message: WorkerMessage = messages.get(timeout=PROGRESS_EVERY)
            except queue.Empty:
                for index, worker in enumerate(workers):
                    if index not in ended and worker.process.exitcode not in (None, 0):
                        fail(index, f"ended unexpectedly (exit code {worker.process.exitcode})")
                    elif index not in ended and stopped_at and time.monotonic() - stopped_at[0] > _EXIT_TIMEOUT:
                        fail(index, f"did not end within {_EXIT_TIMEOUT:.0f} s of being told to")
                continue
            match message:
                case logging.LogRecord():
                    logging.getLogger(message.name).handle(message)
                case StreamProgress(stream=index, summary=summary):
                    latest[index] = summary
                    report(list(latest.values()))
                case StreamFinished(stream=index) | StreamFailed(stream=index):
                    ended[index] = message
                    latest[index] = message.summary
                    if isinstance(message, StreamFailed):
                        stop()  # the window is lost: end the other streams, keep what they have
                case _:
                    assert_never(message)
    results = [ended[index] for index in range(len(workers))]
    parts = [result.partial for result in results if result.partial is not None]
    failures = [result for result in results if isinstance(result, StreamFailed)]
    if failures:
        lost = [failure for failure in failures if failure.lost_connection]
        if lost and len(lost) == len(failures):
            raise RelayConnectionError(lost[0].message, _merged(parts, options) if parts else None)
        raise CollectorError(next(failure for failure in failures if not failure.lost_connection).message)
    return parts, [result.summary for result in results], signalled.is_set()


@dataclass(frozen=True)
class _Worker:
    """A worker process and its control pipe: the worker stops once the pipe's sending end, which
    only this process holds, is closed (or this process is gone)."""

    process: Any
    control: Any
    stopper: Any


def _stop(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stopper.close()


@contextlib.contextmanager
def _running(workers: list[_Worker]) -> Iterator[None]:
    """Start the worker processes; on the way out, stop and wait for them (killed if they do not end)."""
    with _stop_signals_blocked():  # the workers inherit the mask: no KeyboardInterrupt while they start
        for worker in workers:
            worker.process.start()
            worker.control.close()  # the worker's end: its own copy is what it reads
    try:
        yield
    finally:
        _stop(workers)
        for worker in workers:
            worker.process.join(_EXIT_TIMEOUT)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back on this thread (where the platform can): one that comes meanwhile
    is handled on the way out."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _stream_worker(
    index: int,
    options: RelayOptions,
    share: NodeShare,
    wall_deadline: float | None,
    messages: Any,
    control: Any,
    log_level: int,
) -> None:
    """A worker process: collect one share's stream and put its result on `messages`.

    Signals are the parent's to handle: it stops the worker by closing the other end of `control`
    (which also happens when the parent is gone: then the worker ends without its results).
    """
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by the parent while it started us
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(messages)]
    root.setLevel(log_level)
    deadline = time.monotonic() + (wall_deadline - time.time()) if wall_deadline is not None else None
    ingest = relay_ingest()
    stream = RelayStream(options, ingest, share, lambda summary: messages.put(StreamProgress(index, summary)))

    def stop_when_told() -> None:
        with contextlib.suppress(EOFError, OSError):
            control.recv()  # nothing is ever sent: this returns once the parent's end is closed
        stream.stop()

    threading.Thread(target=stop_when_told, name="relay-stop", daemon=True).start()
    try:
        with open_channel(options) as channel:
            summary = stream.run(channel, deadline)
        outcome: WorkerMessage = StreamFinished(index, summary, ingest.partial())
    except RelayConnectionError as error:
        outcome = StreamFailed(index, str(error), True, stream.summary, ingest.partial())
    except CollectorError as error:
        outcome = StreamFailed(index, str(error), False, stream.summary, None)
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        messages.cancel_join_thread()  # orphaned: nobody will read the results, do not wait to send them
        return
    messages.put(outcome)


class _Reporter:
    """Turns stream summaries into `RelayProgress` reports for the caller's callback."""

    def __init__(self, progress: Callable[[RelayProgress], None] | None, started: float) -> None:
        self._progress = progress
        self._started = self._at = started
        self._flows = 0

    def __call__(self, streams: Sequence[StreamSummary], force: bool = False) -> None:
        now = time.monotonic()
        if self._progress is None or (not force and now - self._at < PROGRESS_EVERY):
            return
        flows = sum(stream.flows for stream in streams)
        rate = (flows - self._flows) / (now - self._at) if now > self._at else 0.0
        self._at, self._flows = now, flows
        edges = sum(stream.edges for stream in streams)
        lost = sum(stream.events_lost for stream in streams)
        self._progress(RelayProgress(now - self._started, flows, rate, edges, lost))
