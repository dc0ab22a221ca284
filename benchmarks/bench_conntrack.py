"""Throughput of the conntrack parser on /proc/net/nf_conntrack and `conntrack -L` lines.

Run: python -m benchmarks.bench_conntrack [--lines N] [--repeat R]

Writes N deterministic, realistic lines of each format to a temp dir (pod-to-pod and pod-to-
ClusterIP traffic with DNAT, TCP/UDP/ICMP, counters on half of the entries), then reports the
parser's entries/s next to a floor measured in the same run: reading the same lines and splitting
them into tokens, which any parser must do. Times are this process's CPU time, so other load on a
shared machine skews them less than wall-clock time would.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from collectors.conntrack import parse_conntrack
from collectors.errors import BadRecords
from collectors.sources import numbered_lines

TCP_STATES = ("ESTABLISHED", "ESTABLISHED", "TIME_WAIT", "SYN_SENT", "CLOSE_WAIT", "FIN_WAIT")


def _tuples(rng: random.Random, pods: list[str], services: list[tuple[str, int, int]]) -> str:
    """Original and reply tuples of one connection, with counters and flags as the kernel prints."""
    client = rng.choice(pods)
    sport = rng.randint(32768, 60999)
    roll = rng.random()
    if roll < 0.05:
        server, ident = rng.choice(pods), rng.randint(1, 65535)
        return (
            f"icmp     1 {rng.randint(1, 30)} src={client} dst={server} type=8 code=0 id={ident} "
            f"src={server} dst={client} type=0 code=0 id={ident} mark=0"
        )
    service_ip, service_port, target_port = rng.choice(services)
    backend = rng.choice(pods)
    dnat = roll < 0.45
    dst, dport = (service_ip, service_port) if dnat else (backend, target_port)
    counted = rng.random() < 0.5
    sent = f" packets={rng.randint(1, 50)} bytes={rng.randint(60, 90000)}" if counted else ""
    received = f" packets={rng.randint(1, 50)} bytes={rng.randint(60, 900000)}" if counted else ""
    if roll < 0.75:
        head = f"tcp      6 {rng.randint(1, 432000)} {rng.choice(TCP_STATES)}"
        unreplied, assured = "", " [ASSURED]"
    else:
        head = f"udp      17 {rng.randint(1, 180)}"
        unreplied, assured = ("", " [ASSURED]") if rng.random() < 0.8 else (" [UNREPLIED]", "")
    return (
        f"{head} src={client} dst={dst} sport={sport} dport={dport}{sent}{unreplied} "
        f"src={backend} dst={client} sport={target_port} dport={sport}{received}{assured} mark=0"
    )


def write_dumps(directory: Path, lines: int, seed: int = 7) -> dict[str, Path]:
    """Write `lines` entries in /proc format and in `conntrack -L` format; return the two paths."""
    rng = random.Random(seed)
    pods = [f"10.244.{rng.randint(0, 63)}.{rng.randint(2, 254)}" for _ in range(2000)]
    services = [
        (f"10.96.{rng.randint(0, 255)}.{rng.randint(1, 254)}", port, target)
        for port, target in rng.choices([(80, 8080), (443, 8443), (53, 53), (5432, 5432)], k=200)
    ]
    proc, listing = directory / "nf_conntrack", directory / "conntrack-L.txt"
    with proc.open("w") as proc_out, listing.open("w") as list_out:
        for _ in range(lines):
            tuples = _tuples(rng, pods, services)
            proc_out.write(f"ipv4     2 {tuples} zone=0 use=2\n")
            list_out.write(f"{tuples} use=1\n")
    return {"/proc/net/nf_conntrack": proc, "conntrack -L": listing}


def _best_time(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.process_time()
        count = run()
        best = min(best, time.process_time() - started)
    return best, count


def _floor(path: Path) -> int:
    count = 0
    for _, raw in numbered_lines(str(path)):
        raw.decode().split()
        count += 1
    return count


def _parse(path: Path) -> int:
    return sum(1 for _ in parse_conntrack([str(path)], bad_records=BadRecords()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dumps = write_dumps(Path(tmp), args.lines)
        print(f"{args.lines:,} lines per format, best of {args.repeat} runs")
        print(f"{'format':<24} {'entries/s':>12} {'floor lines/s':>14} {'ratio':>6}")
        for name, path in dumps.items():
            floor_s, _ = _best_time(lambda path=path: _floor(path), args.repeat)
            parse_s, entries = _best_time(lambda path=path: _parse(path), args.repeat)
            assert entries == args.lines, f"{name}: parsed {entries} of {args.lines} lines"
            print(f"{name:<24} {entries / parse_s:>12,.0f} {args.lines / floor_s:>14,.0f} {parse_s / floor_s:>5.2f}x")


if __name__ == "__main__":
    main()
