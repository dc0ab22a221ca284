"""Sustained flows/s and peak memory of the Hubble Relay client over a 1,000,000-flow stream.

Run: python -m benchmarks.bench_relay [--flows N] [--distinct K] [--repeat R] [--processes 1|2]

A server process streams N generated flows (`benchmarks.generate`, the shop topology): K distinct
jsonpb lines parsed once into `GetFlowsResponse` messages (as tests/hubble_server.py does), then
cycled with a fresh uuid and an increasing time per flow, so that de-duplication keeps them all.
The client is the real one (`RelayCollector`: gRPC receiver, conversion, `HubbleIngest`), in a
fresh process per run, with its receiver in a process of its own (`--processes 2`, the default on
two CPUs or more) or on a thread. Each run reports flows/s, the CPU time per flow and the peak RSS
of the collector's process and of the receiver's, and the load average (other work on the machine
shares its cores).

The server is not the project's grpcio test server: on a 2-core VM grpcio's server sends about
5,000 streamed messages/s, which would measure the server. This one speaks just enough HTTP/2 to
stream pre-framed gRPC messages in large writes, as a Go relay does. It reads no request headers:
its first call (the client's ServerStatus) gets UNIMPLEMENTED, every later one the flows.
Reported next to the client: the floor, the rate at which the same client merely receives the raw
messages (gRPC transport only), measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from queue import Empty
from typing import Any, NamedTuple

import grpc
from google.protobuf import json_format

from benchmarks.generate import flow_lines, shop_topology
from collectors.hubble import HubbleIngest
from collectors.hubble_api.observer import observer_pb2
from collectors.relay import RelayCollector, RelayOptions
from collectors.relay_receiver import ChannelSettings, open_channel

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
# HPACK, literal fields without Huffman coding: ":status: 200" (static index 8) and
# "content-type: application/grpc" (name at static index 31), then the trailers.
RESPONSE_HEADERS = b"\x88\x0f\x10\x10application/grpc"
OK_TRAILERS = b"\x00\x0bgrpc-status\x010"
UNIMPLEMENTED = RESPONSE_HEADERS + b"\x00\x0bgrpc-status\x0212"
CHUNK = 2000  # messages per write
POOL = 200_000
"""Distinct (uuid, time) messages the server frames up front and cycles: more than the ingest's uuid
memory (at most 2 x 65,536 events), so no flow is dropped as a duplicate, and the server's CPU goes
to writing, not encoding."""


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _messages(flows: int, distinct: int) -> Iterator[bytes]:
    """`flows` length-prefixed gRPC messages: K distinct flows, each cycle with new uuids and times.

    A second `flow` field appended to a serialized response is merged into the first by protobuf
    decoders, so appending (uuid, time) replaces those two fields at the cost of a tiny encode.
    """
    base = [
        json_format.Parse(line, observer_pb2.GetFlowsResponse()).SerializeToString()
        for line in flow_lines(shop_topology(), distinct)
    ]
    start = int(datetime(2026, 11, 2, 9).timestamp() * 1_000_000)  # µs
    patch = observer_pb2.GetFlowsResponse()
    for index in range(flows):
        micros = start + index * 20
        patch.flow.uuid = str(uuid.UUID(int=index))
        patch.flow.time.seconds, patch.flow.time.nanos = divmod(micros, 1_000_000)
        patch.flow.time.nanos = patch.flow.time.nanos * 1000 + 1  # never 0: 0 would not be encoded
        message = base[index % distinct] + patch.SerializeToString()
        yield b"\x00" + struct.pack(">I", len(message)) + message


class _Connection:
    """One client connection: a reader thread tracks flow control; the caller streams responses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.cond = threading.Condition()
        self.connection_window = 65535
        self.initial_window = 65535
        self.stream_windows: dict[int, int] = {}
        self.max_frame = 16384
        self.new_streams: list[int] = []
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
                payload = self._recv_exactly(length)
                self._handle(kind, flags, stream, payload)
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
                self.new_streams.append(stream)
            elif kind in (RST_STREAM, GOAWAY):
                self.closed = True
            self.cond.notify_all()

    def next_stream(self) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.new_streams or self.closed)
            if self.closed:
                raise ConnectionError
            return self.new_streams.pop(0)

    def send_data(self, stream: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self.cond:
                self.cond.wait_for(lambda: self.closed or min(self.connection_window, self.stream_windows[stream]) > 0)
                if self.closed:
                    raise ConnectionError
                size = min(len(view), self.max_frame, self.connection_window, self.stream_windows[stream])
                self.connection_window -= size
                self.stream_windows[stream] -= size
            self.send(_frame(DATA, 0, stream, bytes(view[:size])))
            view = view[size:]


def _serve_connection(sock: socket.socket, flows: int, chunks: list[bytes]) -> None:
    connection = _Connection(sock)
    try:
        status_stream = connection.next_stream()
        connection.send(_frame(HEADERS, END_HEADERS | END_STREAM, status_stream, UNIMPLEMENTED))
        stream = connection.next_stream()
        connection.send(_frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS))
        for index in range(-(-flows // CHUNK)):
            connection.send_data(stream, chunks[index % len(chunks)])
        connection.send(_frame(HEADERS, END_HEADERS | END_STREAM, stream, OK_TRAILERS))
        while not connection.closed:
            time.sleep(0.05)
    except (ConnectionError, OSError):
        pass
    finally:
        sock.close()


def serve(ports: Any, flows: int, distinct: int) -> None:
    """The server process: pre-frame the messages, then accept connections on an ephemeral port."""
    pool = list(_messages(min(flows, POOL), distinct))
    chunks = [b"".join(pool[start : start + CHUNK]) for start in range(0, len(pool), CHUNK)]
    listener = socket.create_server(("127.0.0.1", 0))
    ports.put(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(sock, flows, chunks), daemon=True).start()


def _rss_mib(field: str, pid: int | str = "self") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MiB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
    except OSError:
        return 0.0
    return int(line.split()[1]) / 1024


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ReceiverPeak(threading.Thread):
    """Samples the peak RSS of the receiver (a child process running relay_receiver.py) until `stop`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        me = str(os.getpid())
        while not self._stopped.wait(0.25):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                with (
                    contextlib.suppress(OSError),
                    open(f"/proc/{pid}/stat") as stat,
                    open(f"/proc/{pid}/cmdline") as cmd,
                ):
                    if stat.read().rpartition(")")[2].split()[1] == me and "relay_receiver" in cmd.read():
                        self.peak_mib = max(self.peak_mib, _rss_mib("VmHWM", pid))

    def stop(self) -> float:
        self._stopped.set()
        self.join()
        return self.peak_mib


class Run(NamedTuple):
    flows: int
    elapsed: float
    edges: int
    cpu: float  # seconds, the collector's process
    receiver_cpu: float  # seconds, the receiver's process (0 when it is a thread)
    baseline_mib: float
    peak_mib: float
    receiver_peak_mib: float


def _measure(address: str, receive_only: bool, processes: int | None, results: Any) -> None:
    """One client run in a fresh process, so that its peak RSS is its own; reports to `results`."""
    baseline = _rss_mib("VmRSS")
    receiver_peak = _ReceiverPeak()
    started, cpu_started = time.perf_counter(), time.process_time()
    if receive_only:  # the floor: the same gRPC channel and call, each message received as bytes and dropped
        channel = open_channel(ChannelSettings(address))
        with contextlib.suppress(grpc.RpcError):  # as the client does: this server answers UNIMPLEMENTED
            channel.unary_unary("/observer.Observer/ServerStatus")(b"", timeout=5)
        call = channel.unary_stream(
            "/observer.Observer/GetFlows", request_serializer=observer_pb2.GetFlowsRequest.SerializeToString
        )
        flows, edges = sum(1 for _ in call(observer_pb2.GetFlowsRequest(), timeout=600)), 0
    else:
        ingest = HubbleIngest()
        summary = RelayCollector(RelayOptions(server=address, processes=processes), ingest).run()
        assert summary.flows == ingest.stats.flows, (summary.flows, ingest.stats.flows)
        flows, edges = summary.flows, len(ingest.aggregator.records)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    receiver = resource.getrusage(resource.RUSAGE_CHILDREN)  # the receiver, waited for when the run ended
    receiver_cpu = receiver.ru_utime + receiver.ru_stime
    results.put(Run(flows, elapsed, edges, cpu, receiver_cpu, baseline, _rss_mib("VmHWM"), receiver_peak.stop()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=4000, help="distinct generated flows, cycled")
    parser.add_argument("--repeat", type=int, default=3, help="client runs; each is reported")
    parser.add_argument("--processes", type=int, choices=(1, 2), help="the client's (default: 2 on 2+ CPUs)")
    args = parser.parse_args()
    if args.flows % CHUNK:
        parser.error(f"--flows must be a multiple of {CHUNK}")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    server = context.Process(target=serve, args=(queue, args.flows, args.distinct), daemon=True)
    server.start()
    address = f"127.0.0.1:{queue.get(timeout=300)}"

    def measure(receive_only: bool) -> tuple[Run, float]:
        """A client run, and the server's CPU seconds during it."""
        server_cpu = _cpu_seconds(server.pid)
        client = context.Process(target=_measure, args=(address, receive_only, args.processes, queue))
        client.start()
        while True:
            with contextlib.suppress(Empty):
                result = queue.get(timeout=2)
                break
            if not client.is_alive():
                raise SystemExit(f"the client failed (exit code {client.exitcode})")
        client.join()
        assert result.flows == args.flows, f"received {result.flows:,} of {args.flows:,} flows"
        return result, _cpu_seconds(server.pid) - server_cpu

    try:
        print(f"{args.flows:,} flows ({args.distinct:,} distinct), client and server on one machine")
        floor, _ = measure(receive_only=True)
        floor_rate = floor.flows / floor.elapsed
        print(
            f"floor (gRPC receive only, one process): {floor_rate:,.0f} flows/s, "
            f"{floor.cpu / floor.flows * 1e6:.1f} µs CPU/flow; load average {os.getloadavg()[0]:.1f}"
        )
        for number in range(1, args.repeat + 1):
            run, server_cpu = measure(receive_only=False)
            rate = run.flows / run.elapsed
            micros = 1e6 / run.flows
            receiver = (
                f", receiver {run.receiver_cpu * micros:.1f} µs (peak RSS {run.receiver_peak_mib:,.0f} MiB)"
                if run.receiver_cpu
                else ""
            )
            print(
                f"run {number}: {rate:,.0f} flows/s ({run.elapsed:.1f} s, {rate / floor_rate:.0%} of the floor), "
                f"{run.edges:,} edges, load average {os.getloadavg()[0]:.1f}; CPU per flow: collector "
                f"{run.cpu * micros:.1f} µs (peak RSS {run.peak_mib:,.0f} MiB, {run.baseline_mib:,.0f} after "
                f"imports){receiver}, server {server_cpu * micros:.1f} µs"
            )
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
