"""Scale benchmark: every figure of the README's Performance section, measured in one run.

    python -m benchmarks.bench_scale    # 10 to 25 minutes on 2 cores; 8 GB of temporary disk

On one generated shop capture (`--sizes` flows; smaller sizes are its first lines), wall-clock seconds:
- parallel, on `--flows` flows: one process, `--jobs 2`, and the Dask engine on a local cluster of 2
  worker processes (started before the clock; its start-up is reported apart); the floors: reading
  the same bytes line by line, without decoding, and decoding them (typed, nothing else) in 1 and in 2
  processes, which says how much a second process can give on this machine; the best of `--rounds`
  rounds that take turns, and what differs from the result of one process;
- growth: ingest time and peak RSS at each size, each in a fresh process (its VmHWM: ru_maxrss
  would carry over this large parent's), with the number of distinct edges;
- synthesis + verification on generated clusters of `--clusters` workloads:edges (`bench_verify.run`,
  CPU seconds).
The captures are written to a temporary folder (`--tmp`) and deleted afterwards. The load averages at
start and end tell whether other work shared the cores.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from distributed import LocalCluster

from benchmarks import bench_verify
from benchmarks.generate import shop_topology, write_capture
from collectors.dask_engine import read_with_dask
from collectors.hubble import Chunk, lines_starting_in, plan_chunks, read_hubble_files
from collectors.hubble_schema import build_schema
from collectors.records import ObservationSet

T = TypeVar("T")

BYTES_PER_FLOW = 1400  # about, in the shop capture: to check the disk before writing


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def decode_range(chunk: Chunk) -> int:
    """Decode the lines of a chunk into typed structs (`bench_ingest`'s floor), nothing else done."""
    decode = build_schema(lazy_endpoints=False).line.decode
    lines = 0
    with open(chunk.path, "rb") as handle:
        for line in lines_starting_in(handle, chunk.start, chunk.end):
            decode(line)
            lines += 1
    return lines


def decode_in_processes(path: str, processes: int) -> int:
    """The decode floor over the chunks `--jobs` would read, in that many processes: what this machine
    gives two processes of such work (a VM's two CPUs may give much less than twice one)."""
    chunks = [Chunk(chunk.path, chunk.start, chunk.end or os.path.getsize(path)) for chunk in plan_chunks([path], 2)]
    if processes == 1:
        return sum(map(decode_range, chunks))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return sum(pool.map(decode_range, chunks))


def read_floor(path: str) -> None:
    """Every line of the file, not decoded: what any line-based reader has to do."""
    with open(path, "rb") as lines:
        for _line in lines:
            pass


_INGEST = """
import json, sys, time
from collectors.hubble import Chunk, lines_starting_in, plan_chunks, read_hubble_files
from collectors.hubble_schema import build_schema

start = time.perf_counter()
observed = read_hubble_files([sys.argv[1]])
elapsed = time.perf_counter() - start
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
figures = {"ingest_s": round(elapsed, 2), "peak_rss_mb": round(peak_kb / 1024), "edges": len(observed.observations)}
print(json.dumps(figures))
"""


def ingest_in_fresh_process(path: str) -> dict:
    """Ingest time, peak RSS and distinct edges of one process that only ingests `path`."""
    output = subprocess.run([sys.executable, "-c", _INGEST, path], check=True, capture_output=True, text=True)
    return json.loads(output.stdout)


@contextmanager
def first_lines(capture: str, lines: int, total: int) -> Iterator[str]:
    """A file of the first `lines` of `capture` (of `total` lines), deleted afterwards: the capture the
    generator writes for that many flows."""
    if lines == total:
        yield capture
        return
    path = f"{capture}.{lines}"
    with open(capture, "rb") as source, open(path, "wb") as out:
        out.writelines(itertools.islice(source, lines))
    try:
        yield path
    finally:
        os.remove(path)


def parallel(path: str, flows: int, rounds: int) -> dict:
    """The best wall-clock time of each way to read `path`, over `rounds` rounds that take turns, so that
    a burst of other work on the machine does not favour one way; and what, if anything, differs from
    the result of one process. The local cluster is started for the Dask read of each round only (its
    start-up reported apart): alive, its scheduler thread would compete with the one-process read."""
    local_ways: dict[str, Callable[[], ObservationSet | None]] = {
        "floor_read_lines": lambda: read_floor(path),
        "one_process": lambda: read_hubble_files([path]),
        "jobs_2": lambda: read_hubble_files([path], jobs=2),
        "decode_1_process": lambda: decode_in_processes(path, 1),
        "decode_2_processes": lambda: decode_in_processes(path, 2),
    }
    times: dict[str, list[float]] = {name: [] for name in [*local_ways, "dask_2_workers", "startup"]}
    results = {}
    for _round in range(rounds):
        for name, way in local_ways.items():
            elapsed, results[name] = timed(way)
            times[name].append(elapsed)
        started = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
            times["startup"].append(time.perf_counter() - started)
            on_cluster = functools.partial(read_with_dask, [path], scheduler=cluster.scheduler_address)
            elapsed, results["dask_2_workers"] = timed(on_cluster)
            times["dask_2_workers"].append(elapsed)
    best = {name: min(measured) for name, measured in times.items()}
    startup = best.pop("startup")
    one = best["one_process"]
    return {
        "flows": flows,
        "file_mb": round(os.path.getsize(path) / 2**20),
        **{f"{name}_s": round(value, 2) for name, value in best.items()},
        "dask_cluster_startup_s": round(startup, 2),
        "speedup_jobs_2": round(one / best["jobs_2"], 2),
        "machine_speedup_decode_2_processes": round(best["decode_1_process"] / best["decode_2_processes"], 2),
        "speedup_dask_2_workers": round(one / best["dask_2_workers"], 2),
        "one_process_vs_floor": round(one / best["floor_read_lines"], 1),
        **{
            f"{name}_differs_in": differences(results["one_process"], results[name])
            for name in ("jobs_2", "dask_2_workers")
        },
    }


def differences(one: ObservationSet, other: ObservationSet) -> list[str]:
    """What differs from the result of one process: observations (counts, first and last seen
    included), pods, or which read statistics."""
    found = [name for name in ("observations", "pods") if not getattr(one, name).equals(getattr(other, name))]
    mine, theirs = one.stats.to_dict(), other.stats.to_dict()
    return found + [f"stats.{key}" for key in mine if mine[key] != theirs[key]]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=2_000_000, help="the input of the parallel figures")
    parser.add_argument("--sizes", default="100000,1000000,4000000", help="flows, for the growth figures")
    parser.add_argument(
        "--clusters", default="1000:4000,5000:20000,20000:80000", help="workloads:edges, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=3, help="of the parallel figures (the best counts)")
    parser.add_argument("--tmp", help="where to write the captures (default: the system's temporary folder)")
    args = parser.parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    largest = max(args.flows, *sizes)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        needed = (largest + args.flows) * BYTES_PER_FLOW
        free = shutil.disk_usage(tmp).free
        if free < needed:
            sys.exit(f"{tmp}: {free / 1e9:.1f} GB free, {needed / 1e9:.1f} GB needed: use --tmp or smaller --sizes")
        capture = os.path.join(tmp, "capture.json")
        write_capture(capture, shop_topology(), largest)
        with first_lines(capture, args.flows, largest) as path:
            figures: dict[str, object] = {"parallel": parallel(path, args.flows, args.rounds)}
        growth = []
        for flows in sizes:
            with first_lines(capture, flows, largest) as path:
                growth.append({"flows": flows, **ingest_in_fresh_process(path)})
        figures["growth"] = growth
    clusters = [size.split(":") for size in args.clusters.split(",")]
    figures["synthesis_and_verification"] = [bench_verify.run(int(w), int(e)) for w, e in clusters]
    figures["cpus"] = os.cpu_count()
    figures["load_average_start"] = [round(load, 2) for load in load_start]
    figures["load_average_end"] = [round(load, 2) for load in os.getloadavg()]
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
