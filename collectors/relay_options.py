"""What to collect from which Hubble Relay, and how to reach it: the options, their parsing and the channel.

The option names follow the `hubble observe` flags; `open_channel` turns the address and TLS options
into a gRPC channel tuned for long server streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.experimental

from collectors.errors import CollectorError
from collectors.hubble_api.flow import flow_pb2
from collectors.records import ObservationSet

DEFAULT_SERVER = "localhost:4245"
"""Where `cilium hubble port-forward` (and `hubble -P`) expose Hubble Relay."""
TLS_HINT = (
    "check --tls-ca-cert-files (the CA that signed the relay's certificate), --tls-server-name "
    "(a name in that certificate) and, for mTLS, --tls-client-cert-file/--tls-client-key-file"
)
_WINDOW = 4 << 20
"""Bytes the relay may send ahead of what a stream has taken: 4 MiB a round trip is 80 MB/s
(about 90,000 flows/s) even at a 50 ms round trip."""


@dataclass(frozen=True)
class RelayOptions:
    """What to collect from where; names follow the `hubble observe` flags.

    Window: `last` N flows, or `since`/`until` (aware datetimes; see `parse_time`), or neither
    (every flow in the relay's buffers); `follow` keeps streaming new flows, for `duration`
    seconds or until stopped. `namespaces` keeps flows from or to those namespaces, `verdicts`
    those with these verdicts (both sent to the relay as FlowFilters). Any `tls_*` option turns
    TLS on. `max_reconnects` bounds the consecutive attempts to resume a broken stream, with
    delays doubling from `reconnect_backoff` up to `max_reconnect_backoff` seconds. `streams`:
    how many GetFlows streams, split by node, run in parallel (one process each); by default one
    per CPU this process may use, at most one per node (and one for `last`).
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
    streams: int | None = None

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
                f"verification; {TLS_HINT} (Cilium keeps the CA in the hubble-relay-client-certs secret)"
            )
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise CollectorError("mTLS needs both --tls-client-cert-file and --tls-client-key-file")
        if self.streams is not None and self.streams < 1:
            raise CollectorError(f"--streams must be at least 1, not {self.streams}")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_cert_files or self.tls_client_cert_file or self.tls_server_name)


class RelayConnectionError(CollectorError):
    """Hubble Relay cannot be reached, or a stream broke and could not be resumed.

    `partial` holds the observations collected before the stream was lost, if any.
    """

    def __init__(self, message: str, partial: ObservationSet | None = None) -> None:
        super().__init__(message)
        self.partial = partial


def open_channel(options: RelayOptions) -> grpc.Channel:
    """A channel to the relay. Streams are read on the calling thread (gRPC's single-threaded
    unary-stream mode, about twice the messages per second of the default). The HTTP/2 window is
    fixed at `_WINDOW` bytes: with gRPC's default probing it grows on a fast link until ~100 MB wait
    in the client whenever the ingest falls behind. Raises `CollectorError` for an unreadable
    credential file."""
    settings: list[tuple[str, Any]] = [
        (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", _WINDOW),
    ]
    if not options.uses_tls:
        return grpc.insecure_channel(options.server, options=settings)
    if options.tls_server_name:
        settings += [
            ("grpc.ssl_target_name_override", options.tls_server_name),
            ("grpc.default_authority", options.tls_server_name),
        ]
    client_key, client_cert = options.tls_client_key_file, options.tls_client_cert_file
    credentials = grpc.ssl_channel_credentials(
        root_certificates=b"".join(_read(path, "CA certificate file") for path in options.tls_ca_cert_files) or None,
        private_key=_read(client_key, "client key file") if client_key else None,
        certificate_chain=_read(client_cert, "client certificate file") if client_cert else None,
    )
    return grpc.secure_channel(options.server, credentials, options=settings)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CollectorError(f"cannot read the {what} {path}: {error.strerror}") from None


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
