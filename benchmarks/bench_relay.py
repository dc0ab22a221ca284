"""Live throughput, CPU and peak memory of the Hubble Relay client: 1, 2 and 4 streams against a
loopback relay of 4 nodes, next to the gRPC receive floor, in one run.

Run: python -m benchmarks.bench_relay [--flows N] [--distinct K] [--small M]

The relay. Generated flows of the shop topology (`benchmarks.generate`) on 4 nodes: K distinct
jsonpb lines parsed once into `GetFlowsResponse` messages, then given a fresh uuid and an increasing
time each (200,000 messages), pre-framed per node, and cycled (each cycle patches the uuids'
first 8 characters, so that no flow repeats) until N flows. It answers ServerStatus and GetNodes
(the 4 nodes, their flow counts) and GetFlows with the flows of the nodes its FlowFilters select
(`node_name` whitelist or blacklist), as a Relay does. It is not grpcio's server, which takes about
55 µs of CPU per streamed message on this VM (it would measure itself): it speaks just enough HTTP/2
to stream the pre-framed messages in large writes, as a Go relay does, and costs about 1 µs of CPU
per flow. It recognises ServerStatus and GetNodes by the literal `:path` gRPC's C core sends on a
connection's first call of a method; any other call is GetFlows. It shares the machine's cores with
the client, so its CPU is reported.

The client. The real one (`observe_relay`: GetNodes, the streams split by node, conversion,
`HubbleIngest`, the merge), in a fresh process per run, so that its peak RSS is its own.

The floors. The same gRPC channel and GetFlows call, each message received as bytes and dropped:
what gRPC for Python can receive, in one process (one stream), and in two processes at once (the
stream split in two by node, as two client streams ask), the most two streams could reach here.
Beside them, a bare grpcio client as usually written: the generated stub on a default channel,
each response decoded into `observer.GetFlowsResponse` and dropped (one process).

Rates are flows over the streaming time (from the first call to the last flow, slowest stream);
the wall time of a whole collection (with the worker processes' start-up) is shown beside it.
The results of every client run (observations, pods, statistics, and the policies recommended from
them) must be equal: their digests are compared. Peak RSS is measured at N flows and at M.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import resource
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from queue import Empty
from typing import Any, NamedTuple

import grpc
from google.protobuf import json_format

from benchmarks.bench_scale import digest
from benchmarks.generate import flow_lines, shop_topology
from collectors.hubble_api.observer import observer_pb2, observer_pb2_grpc
from collectors.relay import RelayOptions, observe_relay, plan_streams
from collectors.relay_options import open_channel
from collectors.relay_stream import flows_request

NODES = ["node-a", "node-b", "node-c", "node-d"]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
# HPACK, literal fields without Huffman coding: ":status: 200" (static index 8) and
# "content-type: application/grpc" (name at static index 31), then the trailers.
RESPONSE_HEADERS = b"\x88\x0f\x10\x10application/grpc"
OK_TRAILERS = b"\x00\x0bgrpc-status\x010"
CHUNK = 2000  # messages per write
POOL = 200_000
"""Distinct messages framed up front, then cycled with patched uuids: the server's CPU goes to
writing, not encoding."""
UUID_FIELD = b"\x92\x02\x24"  # Flow.uuid (field 34, length-delimited), 36 characters


def _frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    return b"".join((struct.pack(">I", len(payload))[1:], bytes((kind, flags)), struct.pack(">I", stream), payload))


def _grpc_message(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def _pool(size: int, distinct: int) -> dict[str, list[bytes]]:
    """`size` gRPC-framed responses, by node: K distinct flows, each with a new uuid and time.

    A second `flow` field appended to a serialized response is merged into the first by protobuf
    decoders, so appending (uuid, time) replaces those two fields at the cost of a tiny encode. The
    uuids start with 8 zeros, which each later cycle replaces with its number.
    """
    topology = dataclasses.replace(shop_topology(), nodes=NODES)
    base = [json_format.Parse(line, observer_pb2.GetFlowsResponse()) for line in flow_lines(topology, distinct)]
    start = int(datetime(2026, 11, 2, 9).timestamp() * 1_000_000)  # µs
    patch = observer_pb2.GetFlowsResponse()
    by_node: dict[str, list[bytes]] = {name: [] for name in NODES}
    for index in range(size):
        message = base[index % distinct]
        micros = start + index * 20
        patch.flow.uuid = str(uuid.UUID(int=index))
        seconds, micros = divmod(micros, 1_000_000)
        patch.flow.time.seconds, patch.flow.time.nanos = seconds, micros * 1000 + 1  # 0 would not be encoded
        by_node[message.flow.node_name].append(_grpc_message(message.SerializeToString() + patch.SerializeToString()))
    return by_node


class _Connection:
    """One client connection: a reader thread tracks flow control and collects requests; the caller
    answers them one by one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cond = threading.Condition()
        self.connection_window = 65535
        self.initial_window = 65535
        self.stream_windows: dict[int, int] = {}
        self.max_frame = 16384
        self.requests: dict[int, list[bytes]] = {}  # stream → [headers, body]
        self.complete: list[int] = []  # streams whose request has ended
        self.closed = False
        self._write_lock = threading.Lock()  # frames from both threads must not interleave
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, frame: bytes) -> None:
        with self._write_lock:
            self.sock.sendall(frame)

    def _recv_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _read(self) -> None:
        try:
            self._recv_exactly(len(PREFACE))
            self.send(_frame(SETTINGS, 0, 0))
            while True:
                header = self._recv_exactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags, stream = header[3], header[4], int.from_bytes(header[5:], "big") & 0x7FFFFFFF
                self._handle(kind, flags, stream, self._recv_exactly(length))
        except (ConnectionError, OSError):
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _handle(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        with self.cond:
            if kind == SETTINGS and not flags & ACK:
                for offset in range(0, len(payload), 6):
                    key, value = struct.unpack(">HI", payload[offset : offset + 6])
                    if key == 0x4:  # SETTINGS_INITIAL_WINDOW_SIZE
                        for sid in self.stream_windows:
                            self.stream_windows[sid] += value - self.initial_window
                        self.initial_window = value
                    elif key == 0x5:  # SETTINGS_MAX_FRAME_SIZE
                        self.max_frame = value
                self.send(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self.send(_frame(PING, ACK, 0, payload))
            elif kind == WINDOW_UPDATE:
                increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if stream == 0:
                    self.connection_window += increment
                elif stream in self.stream_windows:
                    self.stream_windows[stream] += increment
            elif kind == HEADERS and stream not in self.stream_windows:
                self.stream_windows[stream] = self.initial_window
                self.requests[stream] = [payload, b""]
            elif kind == DATA and stream in self.requests:
                self.requests[stream][1] += payload
            elif kind in (RST_STREAM, GOAWAY):
                self.closed = True
            if kind in (HEADERS, DATA) and flags & END_STREAM and stream in self.requests:
                self.complete.append(stream)
            self.cond.notify_all()

    def next_request(self) -> tuple[int, bytes, bytes]:
        """(stream, HPACK header block, request message) of the next call."""
        with self.cond:
            self.cond.wait_for(lambda: self.complete or self.closed)
            if self.closed:
                raise ConnectionError
            stream = self.complete.pop(0)
            headers, body = self.requests.pop(stream)
            return stream, headers, body[5:]

    def send_data(self, stream: int, data: bytes) -> None:
        """DATA frames of `data`, as much as the flow-control windows allow in each write."""
        view = memoryview(data)
        while view:
            with self.cond:
                self.cond.wait_for(lambda: self.closed or min(self.connection_window, self.stream_windows[stream]) > 0)
                if self.closed:
                    raise ConnectionError
                size = min(len(view), self.connection_window, self.stream_windows[stream])
                self.connection_window -= size
                self.stream_windows[stream] -= size
            frames = [
                _frame(DATA, 0, stream, view[start : min(start + self.max_frame, size)])
                for start in range(0, size, self.max_frame)
            ]
            self.send(b"".join(frames))
            view = view[size:]

    def reply(self, stream: int, message: bytes) -> None:
        self.send(_frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS))
        self.send_data(stream, _grpc_message(message))
        self.send(_frame(HEADERS, END_HEADERS | END_STREAM, stream, OK_TRAILERS))


@dataclasses.dataclass(frozen=True)
class _Relay:
    """What the server serves: each node's pre-framed chunks, `cycles` times."""

    chunks: dict[str, list[bytes]]
    cycles: int

    def nodes(self) -> bytes:
        return observer_pb2.GetNodesResponse(
            nodes=[
                observer_pb2.Node(name=name, seen_flows=len(chunks) * CHUNK * self.cycles, uptime_ns=10**12)
                for name, chunks in self.chunks.items()
            ]
        ).SerializeToString()

    def flows(self, request: Any) -> Iterator[bytes]:
        """The chunks of the nodes the request's filters select, node by node in turn, the whole pool
        `cycles` times (or until `number` flows, rounded up to a chunk)."""
        named = {name for f in request.whitelist for name in f.node_name}
        excluded = {name for f in request.blacklist for name in f.node_name}
        nodes = [name for name in self.chunks if (not named or name in named) and name not in excluded]
        limit = request.number if request.number and request.number < 1 << 63 else None
        sent = 0
        for cycle in range(self.cycles):
            marker = UUID_FIELD + f"{cycle:08x}".encode()
            for index in range(max(len(self.chunks[name]) for name in nodes)):
                for name in nodes:
                    if index < len(self.chunks[name]):
                        chunk = self.chunks[name][index]
                        yield chunk.replace(UUID_FIELD + b"00000000", marker) if cycle else chunk
                        sent += CHUNK
                        if limit is not None and sent >= limit:
                            return


def _serve_connection(sock: socket.socket, relay: _Relay) -> None:
    connection = _Connection(sock)
    try:
        while True:
            stream, headers, body = connection.next_request()
            if b"/observer.Observer/ServerStatus" in headers:
                connection.reply(stream, observer_pb2.ServerStatusResponse(version="bench").SerializeToString())
            elif b"/observer.Observer/GetNodes" in headers:
                connection.reply(stream, relay.nodes())
            else:
                connection.send(_frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS))
                for chunk in relay.flows(observer_pb2.GetFlowsRequest.FromString(body)):
                    connection.send_data(stream, chunk)
                connection.send(_frame(HEADERS, END_HEADERS | END_STREAM, stream, OK_TRAILERS))
    except (ConnectionError, OSError):
        pass
    finally:
        sock.close()


def serve(ports: Any, flows: int, distinct: int) -> None:
    """The server process: frame the pool, then accept connections on an ephemeral port.

    Its threads (a reader and a writer per connection) hand the GIL over every 0.2 ms: with Python's
    default 5 ms, a connection's writer waits for the window updates its reader has to process while
    another connection's writer holds the GIL, and two streams get no more than one.
    """
    sys.setswitchinterval(0.0002)
    pool = _pool(min(flows, POOL), distinct)
    chunks = {
        name: [b"".join(messages[i : i + CHUNK]) for i in range(0, len(messages), CHUNK)]
        for name, messages in pool.items()
    }
    relay = _Relay(chunks, flows // min(flows, POOL))
    listener = socket.create_server(("127.0.0.1", 0))
    ports.put((listener.getsockname()[1], {name: len(messages) * relay.cycles for name, messages in pool.items()}))
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(sock, relay), daemon=True).start()


# -- the client's side -------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


class Run(NamedTuple):
    flows: int
    streaming: float  # seconds, first call to last flow (slowest stream)
    wall: float  # seconds, the whole collection
    cpu: float  # seconds, this process and its children
    peak_mib: float  # this process
    worker_peak_mib: float  # the largest worker process (0 with one stream)
    digest: str


def _client(address: str, streams: int, last: int, results: Any) -> None:
    """One client run, in a fresh process: collect, then digest the observations and the policies."""
    from recommender import api

    started, cpu_started = time.perf_counter(), time.process_time()
    options = RelayOptions(server=address, streams=streams, last=last)
    observed, summary = observe_relay(options)
    wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu_started + children.ru_utime + children.ru_stime
    worker_peak = children.ru_maxrss / 1024 if streams > 1 else 0.0  # KiB on Linux: the largest child
    proposal = api.recommend(observed).proposal
    fingerprint = hashlib.sha256(repr(sorted(digest(observed).items())).encode() + api.render_yaml(proposal).encode())
    streaming = max(stream.elapsed for stream in summary.streams)
    results.put(Run(summary.flows, streaming, wall, cpu, _peak_rss_mib(), worker_peak, fingerprint.hexdigest()))


def _receive_only(address: str, share: Any, results: Any) -> None:
    """The floor, in a fresh process: the client's channel and call, messages received as bytes."""
    channel = open_channel(RelayOptions(server=address))
    request = flows_request(RelayOptions(server=address), None, None, share).SerializeToString()
    call = channel.unary_stream("/observer.Observer/GetFlows")
    started, cpu_started = time.perf_counter(), time.process_time()
    flows = sum(1 for _ in call(request, timeout=600))
    results.put((flows, started, time.perf_counter(), time.process_time() - cpu_started))


def _stub_only(address: str, results: Any) -> None:
    """The bare grpcio client, in a fresh process: the generated stub, messages decoded and dropped."""
    with grpc.insecure_channel(address) as channel:
        call = observer_pb2_grpc.ObserverStub(channel).GetFlows
        request = flows_request(RelayOptions(server=address), None, None)
        started, cpu_started = time.perf_counter(), time.process_time()
        flows = sum(1 for _ in call(request, timeout=600))
        results.put((flows, started, time.perf_counter(), time.process_time() - cpu_started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=4000, help="distinct generated flows, cycled")
    parser.add_argument("--small", type=int, default=200_000, help="the flows of the peak RSS comparison")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if args.flows % min(args.flows, POOL) or args.flows % CHUNK:
        parser.error(f"--flows must be a multiple of {POOL:,} (or of {CHUNK:,}, and at most {POOL:,})")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    server = context.Process(target=serve, args=(queue, args.flows, args.distinct), daemon=True)
    server.start()
    port, per_node = queue.get(timeout=600)
    address = f"127.0.0.1:{port}"

    def in_processes(target: Any, *argument_lists: tuple) -> tuple[list[Any], float]:
        """Run `target` in fresh processes at once; their results, and the server's CPU seconds meanwhile."""
        server_cpu = _server_cpu(server.pid)
        clients = [context.Process(target=target, args=(*arguments, queue)) for arguments in argument_lists]
        for client in clients:
            client.start()
        results = []
        while len(results) < len(clients):
            with contextlib.suppress(Empty):
                results.append(queue.get(timeout=2))
                continue
            if any(client.exitcode not in (None, 0) for client in clients):
                raise SystemExit("a client failed")
        for client in clients:
            client.join()
        return results, _server_cpu(server.pid) - server_cpu

    try:
        print(
            f"{args.flows:,} flows ({args.distinct:,} distinct) from {len(per_node)} nodes "
            f"({', '.join(f'{name} {count:,}' for name, count in per_node.items())}); client and server on one "
            f"machine of {os.cpu_count()} CPUs"
        )
        nodes = [observer_pb2.Node(name=name, seen_flows=count) for name, count in per_node.items()]
        floors: dict[str, float] = {}
        floor_runs = [
            ("receive only, 1 process", _receive_only, [(address, share) for share in plan_streams(nodes, 1)]),
            ("receive only, 2 processes", _receive_only, [(address, share) for share in plan_streams(nodes, 2)]),
            ("bare grpcio client (generated stub, messages decoded)", _stub_only, [(address,)]),
        ]
        for name, target, argument_lists in floor_runs:
            results, server_cpu = in_processes(target, *argument_lists)
            flows = sum(result[0] for result in results)
            seconds = max(result[2] for result in results) - min(result[1] for result in results)
            floors[name] = flows / seconds
            print(
                f"floor, {name}: {floors[name]:,.0f} flows/s, {sum(result[3] for result in results) / flows * 1e6:.1f} "
                f"µs CPU/flow, server {server_cpu / flows * 1e6:.1f} µs/flow; load average {os.getloadavg()[0]:.1f}"
            )
        one, two, stub = floors.values()
        print(f"  (2 processes receive {two / one:.2f}x what one does: the most 2 streams can gain here)")
        runs: dict[int, Run] = {}
        for streams in args.streams:
            [run], server_cpu = in_processes(_client, (address, streams, 0))
            assert run.flows == args.flows, f"received {run.flows:,} of {args.flows:,} flows"
            runs[streams] = run
            rate = run.flows / run.streaming
            workers = f", largest worker {run.worker_peak_mib:,.0f} MiB" if run.worker_peak_mib else ""
            print(
                f"client, {streams} stream{'s' if streams > 1 else ''}: {rate:,.0f} flows/s "
                f"({rate / one:.2f} of the 1-process floor, {rate / stub:.2f} of the bare grpcio client, "
                f"{rate / (runs[1].flows / runs[1].streaming):.2f}x "
                f"1 stream; wall {run.wall:.1f} s with start-up), CPU {run.cpu / run.flows * 1e6:.1f} µs/flow, server "
                f"{server_cpu / run.flows * 1e6:.1f} µs/flow, peak RSS {run.peak_mib:,.0f} MiB{workers}; "
                f"load average {os.getloadavg()[0]:.1f}"
            )
        [small], _ = in_processes(_client, (address, 1, args.small))
        print(
            f"peak RSS, 1 stream: {small.peak_mib:,.0f} MiB at {small.flows:,} flows, {runs[1].peak_mib:,.0f} MiB at "
            f"{runs[1].flows:,} ({runs[1].peak_mib / small.peak_mib:.2f}x)"
        )
        digests = {run.digest for run in runs.values()}
        print(
            "results (observations, pods, statistics, policies): "
            + ("equal for every stream count" if len(digests) == 1 else f"DIFFER: {sorted(digests)}")
        )
    finally:
        server.terminate()


def _server_cpu(pid: int) -> float:
    """User + system CPU time of a running process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
