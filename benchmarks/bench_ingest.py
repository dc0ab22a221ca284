"""Ingest benchmark: read + orient + aggregate generated Hubble flows, against a floor.

    python -m benchmarks.bench_ingest [--flows 1000000]

The floor is a bare typed-decode loop over the same file, in one process: every line decoded with
msgspec into typed structs holding the fields the recommender reads (endpoints included), nothing
else done. The ingest is `read_hubble_files` on that file (decode, de-duplicate, orient, identify,
aggregate), measured twice: in one process, and as the tool runs by default, with one process per
core (`--jobs`, byte ranges of the file). All run in this process's run, best of `--repeat`. Peak RSS
is measured for the one-process ingest in a fresh process per input size (VmHWM), so each figure is
the whole ingest's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

from benchmarks.generate import shop_topology, write_capture
from collectors.hubble import read_hubble_files
from collectors.hubble_schema import build_schema
from collectors.sources import READ_BUFFER


def decode_lines(lines: Iterable[bytes]) -> int:
    """The floor's work: every line decoded into typed structs, endpoints included; the lines counted."""
    decode = build_schema(lazy_endpoints=False).line.decode
    count = 0
    for line in lines:
        decode(line)
        count += 1
    return count


def floor_seconds(path: str) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=READ_BUFFER) as lines:
        decode_lines(lines)
    return time.perf_counter() - start


def ingest_seconds(path: str, jobs: int = 1) -> float:
    start = time.perf_counter()
    read_hubble_files([path], jobs=jobs)
    return time.perf_counter() - start


def peak_rss_mb(path: str) -> float:
    """Peak RSS of a fresh process that ingests `path` (MiB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from this (large) parent.
    code = (
        "import sys; from collectors.hubble import read_hubble_files; read_hubble_files([sys.argv[1]]); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    )
    output = subprocess.run([sys.executable, "-c", code, path], check=True, capture_output=True, text=True)
    return int(output.stdout.strip()) / 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="the smaller size for the RSS comparison")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        big, small = os.path.join(tmp, "big.json"), os.path.join(tmp, "small.json")
        write_capture(big, shop_topology(), args.flows)
        write_capture(small, shop_topology(), args.small)
        floor = min(floor_seconds(big) for _ in range(args.repeat))
        ingest = min(ingest_seconds(big) for _ in range(args.repeat))
        jobs = os.cpu_count() or 1
        parallel = min(ingest_seconds(big, jobs) for _ in range(args.repeat))
        rss_small, rss_big = peak_rss_mb(small), peak_rss_mb(big)
        size = os.path.getsize(big)
    figures = {
        "flows": args.flows,
        "file_mb": round(size / 2**20),
        "floor_s": round(floor, 2),
        "ingest_s": round(ingest, 2),
        "floor_flows_per_s": round(args.flows / floor),
        "ingest_flows_per_s": round(args.flows / ingest),
        "throughput_ratio": round(floor / ingest, 3),
        "jobs": jobs,
        "ingest_default_jobs_s": round(parallel, 2),
        "ingest_default_jobs_flows_per_s": round(args.flows / parallel),
        "throughput_ratio_default_jobs": round(floor / parallel, 3),
        "load_average": os.getloadavg(),
        f"peak_rss_mb_{args.small}": round(rss_small, 1),
        f"peak_rss_mb_{args.flows}": round(rss_big, 1),
        "rss_growth": round(rss_big / rss_small, 3),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
