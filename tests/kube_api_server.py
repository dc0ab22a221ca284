"""A stand-in Kubernetes API server on loopback that serves recorded list responses from a folder.

`<root>/api/v1/pods.json` is served at `/api/v1/pods`, and so on. Lists are paginated the way the
real server does it: `limit` cuts a page, `metadata.continue` carries an opaque token for the next
one, `remainingItemCount` says how many are left. Every request is recorded. With a `token`, a
request without that bearer token gets 401; `fail()` makes a path answer an error
Status. With `tls=True` it serves HTTPS with a self-signed certificate for 127.0.0.1 (`ca_file`).

    with KubeApiServer(DATA / "api") as server:
        kubeconfig = write_kubeconfig(tmp_path / "config", server.url, token="t0ken")
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    bearer_token: str
    """From `Authorization: Bearer <token>` (the scheme is case-insensitive); empty without one."""


class KubeApiServer:
    def __init__(self, root: Path, *, token: str | None = None, tls: bool = False) -> None:
        self.root = root
        self.token = token
        self.requests: list[Request] = []
        self.failures: dict[str, tuple[int, str, str]] = {}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._certificates = tempfile.TemporaryDirectory() if tls else None
        self.ca_file = ""
        if self._certificates:
            self.ca_file = _self_signed_certificate(Path(self._certificates.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_file, Path(self._certificates.name) / "key.pem")
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self.port = self._http.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> KubeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._certificates:
            self._certificates.cleanup()

    def fail(self, path: str, code: int, reason: str, message: str) -> None:
        """Answer requests for `path` with an error Status from now on."""
        self.failures[path] = (code, reason, message)

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def answer(self, path: str, query: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        scheme, _, credential = authorization.partition(" ")
        bearer_token = credential if scheme.lower() == "bearer" else ""
        self.requests.append(Request(path, query, bearer_token))
        if self.token is not None and bearer_token != self.token:
            return _status(401, "Unauthorized", "Unauthorized")
        if path in self.failures:
            return _status(*self.failures[path])
        file = self.root / f"{path.strip('/')}.json"
        if not file.is_file():
            return _status(404, "NotFound", "the server could not find the requested resource")
        return 200, _page(json.loads(file.read_text()), query)


def _page(document: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
    """One page of a recorded list, as `limit` and `continue` select it."""
    items = document["items"]
    version = document["metadata"]["resourceVersion"]
    start = json.loads(base64.urlsafe_b64decode(query["continue"]))["start"] if "continue" in query else 0
    end = start + int(query["limit"]) if "limit" in query else len(items)
    metadata: dict[str, Any] = {"resourceVersion": version}
    if end < len(items):
        token = {"v": "meta.k8s.io/v1", "rv": int(version), "start": end}
        metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        metadata["remainingItemCount"] = len(items) - end
    return {**document, "metadata": metadata, "items": items[start:end]}


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(server: KubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            code, body = server.answer(url.path, query, self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the requests are in `server.requests`."""

    return Handler


def _self_signed_certificate(folder: Path) -> str:
    """Write `cert.pem` (for IP 127.0.0.1) and `key.pem` into `folder`; returns the certificate's path."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file = folder / "cert.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(cert_file)


def write_kubeconfig(path: Path, server: str, *, token: str, context: str = "test", ca_file: str = "") -> Path:
    """A kubeconfig with one cluster, one bearer-token user and one context (the current one)."""
    cluster = {"server": server, **({"certificate-authority": ca_file} if ca_file else {})}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loopback", "cluster": cluster}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "loopback", "user": "reader"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def record_api_lists(root: Path, snapshot: dict[str, Any]) -> None:
    """Write a kubectl-style snapshot's objects as the API server's list responses under `root`,
    one file per resource path, as `KubeApiServer` serves them."""
    paths = {
        "Pod": ("api/v1/pods", "PodList"),
        "Namespace": ("api/v1/namespaces", "NamespaceList"),
        "Service": ("api/v1/services", "ServiceList"),
        "Node": ("api/v1/nodes", "NodeList"),
        "EndpointSlice": ("apis/discovery.k8s.io/v1/endpointslices", "EndpointSliceList"),
        "NetworkPolicy": ("apis/networking.k8s.io/v1/networkpolicies", "NetworkPolicyList"),
    }
    for kind, (path, list_kind) in paths.items():
        items = [
            {k: v for k, v in item.items() if k not in ("apiVersion", "kind")}
            for item in snapshot["items"]
            if item["kind"] == kind
        ]
        group_version = path.split("/", 1)[1].rsplit("/", 1)[0]  # "v1", "discovery.k8s.io/v1", …
        document = {
            "kind": list_kind,
            "apiVersion": group_version,
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }
        target = root / f"{path}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document))
