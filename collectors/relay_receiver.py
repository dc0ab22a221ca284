"""The gRPC side of the Hubble Relay client: makes the calls and hands their responses over in blocks.

Python's gRPC costs about as much per streamed message as converting and counting the flow it
carries, so the receiver can run in a process of its own: one core receives, the other (the
collector's) converts and counts. Or on a thread of the collector's process (one core, tests,
debugging): both talk to the collector through the same socket pair with the same messages, so
one code path serves both.

The receiver knows no Hubble: the collector sends it calls (method, serialized request, timeout)
and decides everything else (windows, resuming, de-duplication, when to stop). It sends back each
response message untouched, in blocks that are the wire encoding of `repeated bytes responses = 1`,
so that one protobuf parse reads a whole block (`relay_convert.GetFlowsResponseBatch`).

Its process starts as `python -P .../relay_receiver.py FD`: it imports only the standard library
and grpc (the `collectors` package would bring pandas), and it runs in a session of its own, so
that Ctrl-C reaches the collector only, which ends calls cleanly. It reads the credential files
itself; errors cross the socket as text (codes, details, file paths), never credentials.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from functools import lru_cache
from itertools import chain
from typing import Any, NamedTuple

import grpc
import grpc.experimental

_BLOCK = 1024
"""Responses per block: the collector parses a block in one call."""
_IN_FLIGHT = 4
"""Blocks (and other messages) waiting to be sent: the receiver goes on receiving while the collector
is busy with the block before, instead of waiting for it to take the next one."""
_FLUSH_EVERY = 0.05
"""Seconds a response may wait for its block to fill (a quiet stream's flows still show up)."""
_EXIT_TIMEOUT = 5.0
_WINDOW = 4 << 20
"""Bytes the relay may send ahead of what the receiver has taken: 4 MiB a round trip is 80 MB/s
(about 90,000 flows/s) even at a 50 ms round trip."""


class ChannelSettings(NamedTuple):
    """Where the relay is and how to authenticate (the `tls_*` options of `RelayOptions`)."""

    server: str
    tls: bool = False
    ca_cert_files: tuple[str, ...] = ()
    client_cert_file: str = ""
    client_key_file: str = ""
    server_name: str = ""


class TransportError(Exception):
    """A call ended with a gRPC error status (what `grpc.RpcError` tells, across processes)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class ReceiverError(Exception):
    """The receiver cannot make calls at all (an unreadable certificate file, or it died)."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ReceiverError(f"cannot read the {what} {path}: {error.strerror}") from None


def open_channel(settings: ChannelSettings) -> grpc.Channel:
    """A channel to the relay. Streams are read on the calling thread (gRPC's single-threaded
    unary-stream mode), which more than doubles the messages per second Python can take. The
    HTTP/2 window is fixed at `_WINDOW` bytes: with gRPC's default probing, it grows on a fast link
    until ~100 MB wait in the receiver whenever the collector falls behind."""
    options: list[tuple[str, Any]] = [
        (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", _WINDOW),
    ]
    if not settings.tls:
        return grpc.insecure_channel(settings.server, options=options)
    if settings.server_name:
        options += [
            ("grpc.ssl_target_name_override", settings.server_name),
            ("grpc.default_authority", settings.server_name),
        ]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=b"".join(_read(path, "CA certificate file") for path in settings.ca_cert_files) or None,
        private_key=_read(settings.client_key_file, "client key file") if settings.client_key_file else None,
        certificate_chain=_read(settings.client_cert_file, "client certificate file")
        if settings.client_cert_file
        else None,
    )
    return grpc.secure_channel(settings.server, credentials, options=options)


class _Link:
    """Messages over a stream socket, each a kind byte and a length: blocks as they are (read
    in one `recv`, not in the small chunks of `multiprocessing.Connection`), others pickled."""

    _HEADER = struct.Struct("!cI")
    _BLOCK, _PICKLED = b"B", b"P"

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._send_lock = threading.Lock()  # one sender at a time, so messages keep their order

    def send(self, message: Any) -> None:
        """A message; a block, `("block", bytes)`, goes as it is, anything else pickled."""
        if type(message) is tuple and message[0] == "block":
            self._send(self._BLOCK, message[1])
        else:
            self._send(self._PICKLED, pickle.dumps(message))

    def receive(self) -> Any:
        """The next message; EOFError when the other side is gone."""
        kind, size = self._HEADER.unpack(self._exactly(self._HEADER.size))
        payload = self._exactly(size)
        return ("block", payload) if kind == self._BLOCK else pickle.loads(payload)

    def close(self) -> None:
        self.socket.close()

    def _send(self, kind: bytes, payload: bytes) -> None:
        with self._send_lock:
            self.socket.sendall(self._HEADER.pack(kind, len(payload)))
            self.socket.sendall(payload)

    def _exactly(self, size: int) -> bytes:
        data = self.socket.recv(size, socket.MSG_WAITALL)
        if len(data) == size:
            return data
        parts = [data]  # cut short by a signal, or the end
        while size > (received := sum(map(len, parts))):
            if not (part := self.socket.recv(size - received, socket.MSG_WAITALL)):
                raise EOFError
            parts.append(part)
        return b"".join(parts)


# -- the collector's side -----------------------------------------------------------------


class RelayReceiver:
    """The collector's handle on a receiver, in its own process or on a thread; a context manager.

    `call` and `stream` are used from one thread; `stop` may come from any (a signal handler's helper).
    """

    def __init__(self, settings: ChannelSettings, *, own_process: bool) -> None:
        ours, theirs = socket.socketpair()
        self._link = _Link(ours)
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        if own_process:
            self._process = subprocess.Popen(
                [sys.executable, "-P", os.path.abspath(__file__), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            theirs.close()
        else:
            self._thread = threading.Thread(target=_serve, args=(_Link(theirs),), name="relay-receiver", daemon=True)
            self._thread.start()
        self._link.send(tuple(settings))

    def __enter__(self) -> RelayReceiver:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.close()

    def call(self, method: str, request: bytes, timeout: float | None) -> bytes:
        """A unary call's response; raises `TransportError` when it fails."""
        self._link.send(("call", method, request, timeout))
        return self._outcome(self._receive())

    def stream(self, method: str, request: bytes, timeout: float | None) -> Iterator[bytes]:
        """The blocks of a server-streaming call, then `TransportError` if it did not end well.

        Closing the iterator early (the collector has all it wants) ends the call and drops what
        the receiver still sends of it.
        """
        self._link.send(("stream", method, request, timeout))
        try:
            while (message := self._receive())[0] == "block":
                yield message[1]
        except GeneratorExit:
            self.stop()
            while self._receive()[0] == "block":
                pass
            raise
        self._outcome(message)

    def stop(self) -> None:
        """End the current stream, and refuse later ones; their blocks still arrive, then the end."""
        with suppress(OSError):
            self._link.send(("stop",))

    def close(self) -> None:
        """Tell the receiver to finish, and wait for it (the process is killed if it does not)."""
        with suppress(OSError):
            self._link.send(None)
        if self._process is not None:
            try:
                self._process.wait(_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        elif self._thread is not None:
            self._thread.join(_EXIT_TIMEOUT)
        self._link.close()

    def _receive(self) -> tuple[Any, ...]:
        try:
            return self._link.receive()
        except (EOFError, OSError):
            status = None
            if self._process is not None:
                with suppress(subprocess.TimeoutExpired):
                    status = self._process.wait(_EXIT_TIMEOUT)
            raise ReceiverError(f"the Hubble Relay receiver ended unexpectedly (exit status {status})") from None

    @staticmethod
    def _outcome(message: tuple[Any, ...]) -> Any:
        """The payload of a "reply"; a "status" raises `TransportError`, a "failure" `ReceiverError`."""
        kind, *rest = message
        if kind == "reply":
            return rest[0]
        if kind == "status":
            raise TransportError(grpc.StatusCode[rest[0]], rest[1])
        raise ReceiverError(rest[0])


# -- the receiver's side ------------------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def _prefix(size: int) -> bytes:
    """The tag (field 1, length-delimited) and length varint before a response in a block."""
    varint = bytearray()
    while size > 0x7F:
        varint.append(size & 0x7F | 0x80)
        size >>= 7
    varint.append(size)
    return b"\x0a" + varint


def encode_block(responses: list[bytes]) -> bytes:
    """Responses as the wire encoding of `repeated bytes responses = 1` (all in C, no Python loop)."""
    return b"".join(chain.from_iterable(zip(map(_prefix, map(len, responses)), responses, strict=True)))


class _Receiver:
    """Makes the calls on one channel and sends their outcomes; runs the commands of `_serve`.

    Three threads: the caller's receives, one flushes what a quiet stream leaves pending, one sends.
    """

    def __init__(self, settings: ChannelSettings, link: _Link) -> None:
        self._settings = settings
        self._link = link
        self._channel: grpc.Channel | None = None
        self._call: Any = None
        self._stopped = False
        self._lock = threading.Lock()  # guards _call and _stopped
        self._pending: deque[bytes] = deque()
        self._flush_lock = threading.Lock()  # one flush at a time, so blocks keep their order
        self._outbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue(_IN_FLIGHT)
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_now_and_then, name="relay-receiver-flush", daemon=True)
        self._sender = threading.Thread(target=self._send_all, name="relay-receiver-send", daemon=True)
        self._flusher.start()
        self._sender.start()

    def run(self, kind: str, method: str, request: bytes, timeout: float | None) -> None:
        """One command: a unary "call" or a "stream"; after a broken stream, the next call connects afresh."""
        try:
            if self._channel is None:
                self._channel = open_channel(self._settings)
            if kind == "call":
                self._outbox.put(("reply", self._channel.unary_unary(method)(request, timeout=timeout)))
            else:
                self._stream(self._channel.unary_stream(method), request, timeout)
        except grpc.RpcError as error:
            self._flush()
            self._outbox.put(("status", error.code().name, error.details() or ""))
            if kind == "stream":
                self._close_channel()
        except ReceiverError as error:
            self._outbox.put(("failure", str(error)))
        except Exception as error:  # a bug: say so, rather than leave the collector waiting
            self._outbox.put(("failure", f"the Hubble Relay receiver failed: {error!r}"))
            raise

    def _stream(self, method: Any, request: bytes, timeout: float | None) -> None:
        with self._lock:
            if self._stopped:
                self._outbox.put(("status", grpc.StatusCode.CANCELLED.name, "stopped"))
                return
            self._call = method(request, timeout=timeout)
        pending, flush = self._pending, self._flush
        try:
            for response in self._call:
                pending.append(response)
                if len(pending) >= _BLOCK:
                    flush()
        finally:
            with self._lock:
                self._call = None
        flush()
        self._outbox.put(("reply", None))

    def stop(self) -> None:
        """Cancel the current stream, and refuse later ones."""
        with self._lock:
            self._stopped = True
            if self._call is not None:
                self._call.cancel()

    def close(self) -> None:
        """Stop, and return once all that was queued has been sent (or the collector is gone)."""
        self.stop()
        self._close_channel()
        self._closed.set()
        self._flusher.join()
        self._outbox.put(None)  # after the flusher's last block
        self._sender.join()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _flush(self) -> None:
        """Queue what is pending as one block (from the receiving thread, or the flushing one)."""
        with self._flush_lock:
            pending = self._pending
            if pending:
                self._outbox.put(("block", encode_block([pending.popleft() for _ in range(len(pending))])))

    def _flush_now_and_then(self) -> None:
        while not self._closed.wait(_FLUSH_EVERY):
            self._flush()

    def _send_all(self) -> None:
        """Send the queued messages in order until `close`; once the collector is gone, drop them."""
        gone = False
        while (message := self._outbox.get()) is not None:
            if not gone:
                try:
                    self._link.send(message)
                except OSError:
                    gone = True


def _serve(link: _Link) -> None:
    """The receiver: runs the collector's commands until told to finish or the collector is gone.

    A thread listens for commands, so that "stop" is heard while a stream is being received.
    """
    receiver = _Receiver(ChannelSettings(*link.receive()), link)
    commands: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def listen() -> None:
        while True:
            try:
                command = link.receive()
            except (EOFError, OSError):
                command = None
            if command is None or command[0] == "stop":
                receiver.stop()
            if command is None or command[0] != "stop":
                commands.put(command)
            if command is None:
                return

    threading.Thread(target=listen, name="relay-receiver-commands", daemon=True).start()
    try:
        while (command := commands.get()) is not None:
            receiver.run(*command)
    finally:
        receiver.close()
        link.close()


if __name__ == "__main__":
    _serve(_Link(socket.socket(fileno=int(sys.argv[1]))))
