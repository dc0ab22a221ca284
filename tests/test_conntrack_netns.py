"""The real thing: network namespaces on this machine, a kube-proxy-style DNAT, real connections.

A "node" namespace routes between three "pod" namespaces over veth pairs (the addresses of the
shared `conntrack/netns` fixtures, so tests/data/conntrack/netns-inventory.json describes it) and
DNATs two ClusterIPs as kube-proxy does: 10.96.0.10:80/TCP → pod-b:8080 and 10.96.0.53:53/UDP →
pod-c:5353. Python sockets run in the pod namespaces make TCP and UDP connections, through the
Services and directly, plus one UDP datagram to a closed port. The node's conntrack table
(`conntrack -L` and /proc/net/nf_conntrack) must then give policies that allow exactly the
answered connections, on the target ports.

Needs Linux, root, `ip` (iproute2), `iptables` or `nft`, and `conntrack` (conntrack-tools):
`apt-get install -y iproute2 iptables conntrack`. Skips with the reason otherwise. Every name
carries this process's id, so parallel runs do not collide; traffic never leaves the namespaces
the test creates, and they (with their veths) are deleted afterwards, also on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.conntrack_observations import UNREPLIED, read_conntrack
from collectors.inventory import load_inventory
from recommender import api
from recommender.verification import replay
from tests.test_conntrack_observations import table

INVENTORY = Path(__file__).parent / "data" / "conntrack" / "netns-inventory.json"
PODS = {"a": "10.244.1.10", "b": "10.244.2.20", "c": "10.244.3.30"}
DNAT = [("tcp", "10.96.0.10", 80, PODS["b"], 8080), ("udp", "10.96.0.53", 53, PODS["c"], 5353)]
TIMEOUT = 15  # seconds, for any one command

SERVER = """
import socket, sys, time
kind, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("0.0.0.0", port))
if kind == "tcp":
    sock.listen(16)
sock.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        if kind == "tcp":
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(2)
                conn.sendall(conn.recv(64))
        else:
            data, peer = sock.recvfrom(64)
            sock.sendto(data, peer)
    except OSError:
        continue
"""

CLIENT = """
import socket, sys
for spec in sys.argv[1:]:
    kind, host, port = spec.split(":")
    address = (host, int(port))
    if kind == "tcp":
        with socket.create_connection(address, timeout=3) as conn:
            conn.sendall(b"hello")
            assert conn.recv(64) == b"hello", spec
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(3 if kind == "udp" else 0.3)
        sock.sendto(b"hello", address)
        try:
            assert sock.recvfrom(64)[0] == b"hello", spec
        except OSError:
            assert kind == "udp-unanswered", spec
"""


def missing_requirement() -> str:
    """Why this machine cannot run the test, or ""."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and netfilter rules need root"
    for tool, package in (("ip", "iproute2"), ("conntrack", "conntrack")):
        if shutil.which(tool) is None:
            return f"the `{tool}` tool is missing (apt-get install -y {package})"
    if shutil.which("iptables") is None and shutil.which("nft") is None:
        return "neither `iptables` nor `nft` is installed (apt-get install -y iptables)"
    return ""


def run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


class Lab:
    """The namespaces, their links, the DNAT rules and the servers; removed on exit."""

    def __init__(self) -> None:
        prefix = f"nprct{os.getpid()}"
        self.node = f"{prefix}-node"
        self.pods = {name: f"{prefix}-pod{name}" for name in PODS}
        self.created: list[str] = []
        self.servers: list[subprocess.Popen] = []

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=TIMEOUT)
        for namespace in reversed(self.created):  # deleting a namespace deletes its veth ends
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=TIMEOUT, check=False)

    def exec(self, namespace: str, *command: str, stdin: str | None = None) -> str:
        return run("ip", "netns", "exec", namespace, *command, stdin=stdin)

    def _add_namespace(self, namespace: str) -> None:
        try:
            run("ip", "netns", "add", namespace)
        except RuntimeError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc}")
        self.created.append(namespace)
        self.exec(namespace, "ip", "link", "set", "lo", "up")
        for setting in ("all", "default"):  # IPv4 only: no IPv6 neighbour discovery in the tables
            self._sysctl(namespace, f"net/ipv6/conf/{setting}/disable_ipv6", "1", optional=True)

    def _sysctl(self, namespace: str, key: str, value: str, *, optional: bool = False) -> None:
        """Set a sysctl of a namespace; an optional one this kernel does not have is left alone."""
        path = f"/proc/sys/{key}"
        self.exec(namespace, "sh", "-c", f"[ -e {path} ] || exit {0 if optional else 1}; echo {value} > {path}")

    def _build(self) -> None:
        self._add_namespace(self.node)
        self._sysctl(self.node, "net/ipv4/ip_forward", "1")
        for name, ip in PODS.items():
            namespace = self.pods[name]
            self._add_namespace(namespace)
            gateway = ip.rsplit(".", 1)[0] + ".1"
            run("ip", "-n", self.node, "link", "add", f"veth-{name}", "type", "veth", "peer", "name", "eth0",
                "netns", namespace)  # fmt: skip
            run("ip", "-n", self.node, "addr", "add", f"{gateway}/24", "dev", f"veth-{name}")
            run("ip", "-n", self.node, "link", "set", f"veth-{name}", "up")
            run("ip", "-n", namespace, "addr", "add", f"{ip}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "route", "add", "default", "via", gateway)
        self._dnat()
        self._serve("b", "tcp", 8080)
        self._serve("c", "udp", 5353)

    def _dnat(self) -> None:
        """kube-proxy's ClusterIP rules, with iptables (as kube-proxy does) or nft."""
        if shutil.which("iptables"):
            for protocol, service, port, backend, target in DNAT:
                self.exec(self.node, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", f"{service}/32",
                          "-p", protocol, "--dport", str(port), "-j", "DNAT", "--to-destination",
                          f"{backend}:{target}")  # fmt: skip
            return
        rules = "".join(
            f"    ip daddr {service} {protocol} dport {port} dnat to {backend}:{target}\n"
            for protocol, service, port, backend, target in DNAT
        )
        chain = f"  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n{rules}  }}\n"
        ruleset = f"table ip nat {{\n{chain}}}\n"
        self.exec(self.node, "nft", "-f", "-", stdin=ruleset)

    def _serve(self, pod: str, kind: str, port: int) -> None:
        command = ["ip", "netns", "exec", self.pods[pod], sys.executable, "-c", SERVER, kind, str(port)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", server.stderr

    def connect(self, pod: str, *specs: str) -> None:
        self.exec(self.pods[pod], sys.executable, "-c", CLIENT, *specs)

    def namespaces(self) -> set[str]:
        return {line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()}


@pytest.fixture
def lab():
    reason = missing_requirement()
    if reason:
        pytest.skip(reason)
    with Lab() as built:
        yield built
    assert not set(built.created) & built.namespaces(), "namespaces left behind"


def test_real_connections_through_a_kube_proxy_dnat_give_exactly_their_policies(lab, tmp_path):
    lab.connect(
        "a",
        "tcp:10.96.0.10:80",  # the Service, DNAT to pod-b:8080
        "tcp:10.96.0.10:80",
        f"tcp:{PODS['b']}:8080",  # pod-b directly
        "udp:10.96.0.53:53",  # the DNS Service, DNAT to pod-c:5353
        f"udp-unanswered:{PODS['c']}:9999",  # nobody listens: [UNREPLIED]
    )
    lab.connect("b", f"udp:{PODS['c']}:5353")
    listing, proc = tmp_path / "conntrack-L.txt", tmp_path / "nf_conntrack.txt"
    listing.write_text(lab.exec(lab.node, "conntrack", "-L"))
    proc.write_text(lab.exec(lab.node, "cat", "/proc/net/nf_conntrack"))
    inventory = load_inventory(str(INVENTORY))

    observed = read_conntrack([str(listing)], inventory)
    assert [row[:6] for row in table(observed)] == [
        ("default/backend", "kube-system/dns", "UDP", 5353, "FORWARDED", 1),
        ("default/client", "default/backend", "TCP", 8080, "FORWARDED", 3),
        ("default/client", "kube-system/dns", "UDP", 5353, "FORWARDED", 1),
        ("default/client", "kube-system/dns", "UDP", 9999, UNREPLIED, 1),
    ]
    assert observed.stats.resolution["service backend from DNAT"] == 3
    assert table(read_conntrack([str(proc)], inventory)) == table(observed)
    assert table(read_conntrack([str(listing), str(proc)], inventory)) == table(observed)

    result = api.recommend(observed, api.SynthesisOptions(exclude_namespaces=()))
    edges = result.proposal.edges
    assert set(zip(edges["client"], edges["server"], edges["protocol"], edges["port"], strict=True)) == {
        ("default/client", "default/backend", "TCP", 8080),
        ("default/client", "kube-system/dns", "UDP", 5353),
        ("default/backend", "kube-system/dns", "UDP", 5353),
    }
    ports = {
        (port["protocol"], port["port"])
        for plan in result.proposal.policies
        for direction in ("ingress", "egress")
        for rule in plan.manifest["spec"].get(direction, [])
        for port in rule["ports"]
    }
    assert ports == {("TCP", 8080), ("UDP", 5353)}  # the target ports, never 80 or 53
    assert result.check.recall == 1.0 and not result.check.excess
    policies = [plan.manifest for plan in result.proposal.policies]
    unanswered = observed.observations[observed.observations["verdict"] == UNREPLIED]
    assert not replay(policies, observed, unanswered).connections["allowed"].any()
