"""A Hubble Relay stand-in for tests: a real gRPC server on loopback implementing `observer.Observer`
(GetFlows, GetNodes, ServerStatus) with the project's proto.

It serves a buffer of `GetFlowsResponse` messages (for example the real fixtures, parsed from
Hubble's JSON with protobuf's `json_format`) in time order, as a relay's ring buffers would, from
the nodes the flows name (GetNodes lists them, with their flow counts as `seen_flows`), and honours
enough of GetFlowsRequest for the tests: `number` (last or first N), `since`/`until`, `follow`
(then it streams `live` responses and idles until cancelled), and whitelist and blacklist
FlowFilters on `source_pod`/`destination_pod` (`namespace/` or `namespace/pod-prefix`), `verdict`
and `node_name` (Hubble's patterns: `cluster/node`, or `node` in any cluster, `*` a wildcard).
As Hubble does, lost events bypass the filters and the time range: every stream gets them. It can
break each stream (each distinct node filter) after K flows (`drop_after`), and serve TLS or mTLS
(`make_certificates`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.wrappers_pb2 import UInt32Value

from collectors.hubble_api.observer import observer_pb2, observer_pb2_grpc
from collectors.hubble_api.relay import relay_pb2

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hubble"


def parse_lines(lines: Iterable[str]) -> list[Any]:
    """Hubble jsonpb lines as GetFlowsResponse messages; unknown fields are an error, which proves
    the proto's field names match Hubble's JSON."""
    return [
        json_format.Parse(line, observer_pb2.GetFlowsResponse(), ignore_unknown_fields=False)
        for line in lines
        if line.strip()
    ]


def _time_ns(response: Any) -> int:
    stamp = response.flow.time if response.HasField("flow") else response.time
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def _pod_matches(patterns: Sequence[str], endpoint: Any) -> bool:
    for pattern in patterns:
        namespace, _, prefix = pattern.partition("/")
        if (not namespace or endpoint.namespace == namespace) and endpoint.pod_name.startswith(prefix):
            return True
    return False


def _node_matches(patterns: Sequence[str], node_name: str) -> bool:
    """Hubble's node name patterns (pkg/hubble/filters): `cluster/node` or `node` (any cluster), each
    part with `*` wildcards; a node name without a cluster is in the cluster "default"."""
    if not node_name:
        return False
    qualified = node_name if "/" in node_name else f"default/{node_name}"
    for pattern in patterns:
        cluster, _, node = pattern.rpartition("/")
        if fnmatch.fnmatchcase(qualified, f"{cluster or '*'}/{node or '*'}"):
            return True
    return False


def _filter_matches(flow_filter: Any, flow: Any) -> bool:
    if flow_filter.source_pod and not _pod_matches(flow_filter.source_pod, flow.source):
        return False
    if flow_filter.destination_pod and not _pod_matches(flow_filter.destination_pod, flow.destination):
        return False
    if flow_filter.node_name and not _node_matches(flow_filter.node_name, flow.node_name):
        return False
    return not flow_filter.verdict or flow.verdict in flow_filter.verdict


def node_of(response: Any) -> str:
    return response.flow.node_name if response.HasField("flow") else response.node_name


@dataclass
class FakeRelay(observer_pb2_grpc.ObserverServicer):
    """The servicer. `drop_after` flows into a stream, the stream breaks with UNAVAILABLE (as when
    a relay restarts), `drops` times for each distinct node filter. `requests` records what clients
    asked for; `wait_idle` waits for follow streams to have sent everything they have. `nodes` overrides
    the node list; `list_nodes=False` answers GetNodes with UNIMPLEMENTED, as a plain Hubble server."""

    responses: list[Any]
    live: list[Any] = field(default_factory=list)
    live_interval: float = 0.01
    drop_after: int = 0
    drops: int = 1
    nodes: list[str] | None = None
    list_nodes: bool = True
    requests: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.responses = sorted(self.responses, key=_time_ns)
        self._lock = threading.Lock()
        self._drops_left: dict[tuple, int] = {}
        self._idle = threading.Condition()
        self._followed = 0
        if self.nodes is None:
            self.nodes = sorted({node_of(r) for r in [*self.responses, *self.live] if r.HasField("flow")} - {""})

    def ServerStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return observer_pb2.ServerStatusResponse(
            num_flows=len(self.responses), max_flows=len(self.responses), seen_flows=len(self.responses),
            version="netpol-recommender-test", num_connected_nodes=UInt32Value(value=len(self.nodes or ())),
            num_unavailable_nodes=UInt32Value(value=0),
        )  # fmt: skip

    def GetNodes(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.list_nodes:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method GetNodes")
        seen = {name: 0 for name in self.nodes or ()}
        for response in self.responses:
            if response.HasField("flow") and node_of(response) in seen:
                seen[node_of(response)] += 1
        return observer_pb2.GetNodesResponse(
            nodes=[
                observer_pb2.Node(name=name, state=relay_pb2.NODE_CONNECTED, seen_flows=count, uptime_ns=10**12)
                for name, count in seen.items()
            ]
        )

    def GetFlows(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.requests.append(request)
        sent = 0
        for response in self._select(self.responses, request):
            if response.HasField("flow"):
                self._maybe_drop(request, sent, context)
                sent += 1
            yield response
        if request.follow:
            for response in self._select(self.live, request, window=False):
                if not context.is_active():
                    return
                time.sleep(self.live_interval)
                yield response
            with self._idle:
                self._followed += 1
                self._idle.notify_all()
            while context.is_active():
                time.sleep(0.02)

    def wait_idle(self, streams: int = 1, timeout: float = 10) -> bool:
        """Wait until `streams` follow streams have sent everything they have."""
        with self._idle:
            return self._idle.wait_for(lambda: self._followed >= streams, timeout)

    def _maybe_drop(self, request: Any, sent: int, context: grpc.ServicerContext) -> None:
        key = tuple(
            tuple(node for f in filters for node in f.node_name) for filters in (request.whitelist, request.blacklist)
        )
        with self._lock:
            left = self._drops_left.setdefault(key, self.drops)
            if self.drop_after and left and sent == self.drop_after:
                self._drops_left[key] = left - 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "relay restarting")

    @staticmethod
    def _select(responses: list[Any], request: Any, *, window: bool = True) -> list[Any]:
        since = _stamp_ns(request.since) if request.HasField("since") else None
        until = _stamp_ns(request.until) if request.HasField("until") else None
        selected = []
        for response in responses:
            if response.HasField("flow"):
                if since is not None and _time_ns(response) < since:
                    continue
                if until is not None and _time_ns(response) > until:
                    continue
                if request.whitelist and not any(_filter_matches(f, response.flow) for f in request.whitelist):
                    continue
                if any(_filter_matches(f, response.flow) for f in request.blacklist):
                    continue
            selected.append(response)
        if window and request.number and not request.HasField("since"):
            selected = selected[: request.number] if request.first else selected[-request.number :]
        return selected


def _stamp_ns(stamp: Any) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA, a relay server certificate for `server_name` and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_name: str = "relay.hubble-relay.cilium.io"


def make_certificates(directory: Path, server_name: str = "relay.hubble-relay.cilium.io") -> Certificates:
    """A CA and the certificates it signs, written to `directory` (needs `cryptography`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def issue(name: str, issuer: tuple[Any, Any] | None, usage: Any = None, san: str = "") -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_cert, issuer_key = issuer or (None, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()), key

    ca = issue("netpol-recommender test CA", None)
    server = issue(server_name, ca, ExtendedKeyUsageOID.SERVER_AUTH, server_name)
    client = issue("netpol-recommender", ca, ExtendedKeyUsageOID.CLIENT_AUTH)

    def write(name: str, cert: Any, key: Any = None) -> tuple[Path, Path | None]:
        cert_path = directory / f"{name}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is None:
            return cert_path, None
        key_path = directory / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    ca_path, _ = write("ca", ca[0])
    server_cert, server_key = write("server", *server)
    client_cert, client_key = write("client", *client)
    return Certificates(ca_path, server_cert, server_key, client_cert, client_key, server_name)  # type: ignore[arg-type]


def serve(
    relay: FakeRelay, certificates: Certificates | None = None, *, mtls: bool = False, port: int = 0
) -> tuple[grpc.Server, str]:
    """Start `relay` on 127.0.0.1 (`port` 0: an ephemeral one); returns the server and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    observer_pb2_grpc.add_ObserverServicer_to_server(relay, server)
    address = f"127.0.0.1:{port}"
    if certificates is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())],
            root_certificates=certificates.ca.read_bytes() if mtls else None,
            require_client_auth=mtls,
        )
        bound = server.add_secure_port(address, credentials)
    server.start()
    return server, f"127.0.0.1:{bound}"
