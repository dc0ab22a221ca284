"""Scale benchmark: every figure of the README's Performance section, measured in one run.

    python -m benchmarks.bench_scale    # 10 to 25 minutes on 2 cores; 8 GB of temporary disk

On one generated shop capture (`--sizes` flows; smaller sizes are its first lines), wall-clock seconds,
each read in a fresh process (`--measure`), so that no state of an earlier read (its heap, the threads
of a closed Dask cluster) weighs on the next, and its VmHWM is its own:
- parallel, on `--flows` flows: one process, `--jobs 2`, and the Dask engine on a local cluster of 2
  worker processes (its start-up reported apart); the floors: reading the same bytes line by line,
  without decoding, and decoding them (typed, nothing else) in 1 and in 2 processes, which says how much
  a second process can give on this machine; the best of `--rounds` rounds that take turns, and what
  differs from the result of one process;
- growth: ingest time and peak RSS at each size, with the number of distinct edges;
- synthesis + verification on generated clusters of `--clusters` workloads:edges (`bench_verify.run`,
  CPU seconds).
The captures are written to a temporary folder (`--tmp`) and deleted afterwards. The load averages at
start and end tell whether other work shared the cores.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
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

import pandas as pd

from benchmarks.bench_ingest import decode_lines
from benchmarks.generate import shop_topology, write_capture
from collectors.hubble import Chunk, lines_starting_in, plan_chunks, read_hubble_files
from collectors.records import ObservationSet
from collectors.sources import READ_BUFFER

T = TypeVar("T")

BYTES_PER_FLOW = 1400  # about, in the shop capture: to check the disk before writing


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def decode_range(chunk: Chunk) -> int:
    """Decode the lines of a chunk into typed structs (`bench_ingest`'s floor), nothing else done."""
    with open(chunk.path, "rb", buffering=READ_BUFFER) as handle:
        return decode_lines(lines_starting_in(handle, chunk.start, chunk.end))


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
    with open(path, "rb", buffering=READ_BUFFER) as lines:
        for _line in lines:
            pass


def read_dask(path: str) -> tuple[ObservationSet, float, float]:
    """Read on a local cluster of 2 worker processes started for it: the result, the cluster's
    start-up time and the read's."""
    from distributed import LocalCluster  # not in the other ways' processes: their peak RSS is the ingest's

    from collectors.dask_engine import read_with_dask

    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        startup = time.perf_counter() - started
        elapsed, observed = timed(functools.partial(read_with_dask, [path], scheduler=cluster.scheduler_address))
    return observed, startup, elapsed


WAYS: dict[str, Callable[[str], object]] = {
    "floor_read_lines": read_floor,
    "decode_1_process": lambda path: decode_in_processes(path, 1),
    "decode_2_processes": lambda path: decode_in_processes(path, 2),
    "one_process": lambda path: read_hubble_files([path], jobs=1),
    "jobs_2": lambda path: read_hubble_files([path], jobs=2),
}
"""The ways to read a capture, timed in a fresh process each (besides the Dask engine's)."""


def measure(way: str, path: str) -> dict:
    """One way to read `path`, in this process: wall-clock seconds, peak RSS (VmHWM), and for ingests
    the distinct edges and a digest of the result (observations, pods, read statistics)."""
    if way == "dask_2_workers":
        result, startup, elapsed = read_dask(path)
        figures = {"startup_s": startup}
    else:
        elapsed, result = timed(functools.partial(WAYS[way], path))
        figures = {}
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    figures.update(seconds=elapsed, peak_rss_mb=round(peak_kb / 1024))
    if isinstance(result, ObservationSet):
        figures.update(edges=len(result.observations), digest=digest(result))
    return figures


def in_fresh_process(way: str, path: str) -> dict:
    """`measure` in a new interpreter: no state of earlier reads (heap, threads of a closed cluster)
    weighs on this one, and its VmHWM is its own (ru_maxrss would carry over this parent's)."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--measure", way, path]
    output = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.splitlines()[-1])


def digest(observed: ObservationSet) -> dict[str, object]:
    """What must not depend on the way of reading: observations (counts, first and last seen included)
    and pods, as hashes of a canonical text (sets sorted), and the read statistics."""

    def canonical(frame: pd.DataFrame) -> str:
        cells = frame.map(lambda value: sorted(value) if isinstance(value, set | frozenset) else value)
        return hashlib.sha256(cells.to_csv(index=False).encode()).hexdigest()

    return {
        "observations": canonical(observed.observations),
        "pods": canonical(observed.pods),
        **{f"stats.{key}": value for key, value in observed.stats.to_dict().items() if key != "sources"},
    }


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


def print_figures(figures: dict, load_start: tuple[float, float, float]) -> dict:
    """Print a run's figures as JSON, with the CPUs and the load averages at its start and at its end."""
    figures["cpus"] = os.cpu_count()
    figures["load_average_start"] = [round(load, 2) for load in load_start]
    figures["load_average_end"] = [round(load, 2) for load in os.getloadavg()]
    print(json.dumps(figures, indent=2))
    return figures


@contextmanager
def generated_capture(flows: int, copied: int, where: str | None) -> Iterator[tuple[str, str]]:
    """(a temporary folder in `where`, the shop capture of `flows` flows in it), once the disk is found
    to have room for it and for `copied` more flows (`first_lines` copies); deleted afterwards."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        needed = (flows + copied) * BYTES_PER_FLOW
        free = shutil.disk_usage(tmp).free
        if free < needed:
            sys.exit(f"{tmp}: {free / 1e9:.1f} GB free, {needed / 1e9:.1f} GB needed: use --tmp or smaller --sizes")
        capture = os.path.join(tmp, "capture.json")
        write_capture(capture, shop_topology(), flows)
        yield tmp, capture


def parallel(path: str, flows: int, rounds: int) -> dict:
    """The best wall-clock time of each way to read `path`, each in a fresh process, over `rounds`
    rounds that take turns (a burst of other work on the machine does not favour one way); and what,
    if anything, differs from the result of one process."""
    ways = [*WAYS, "dask_2_workers"]
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    for _round in range(rounds):
        for way in ways:
            runs[way].append(in_fresh_process(way, path))
    best = {way: min(run["seconds"] for run in measured) for way, measured in runs.items()}
    one = best["one_process"]
    reference = runs["one_process"][0]["digest"]
    return {
        "flows": flows,
        "file_mb": round(os.path.getsize(path) / 2**20),
        **{f"{way}_s": round(seconds, 2) for way, seconds in best.items()},
        "dask_cluster_startup_s": round(min(run["startup_s"] for run in runs["dask_2_workers"]), 2),
        "speedup_jobs_2": round(one / best["jobs_2"], 2),
        "machine_speedup_decode_2_processes": round(best["decode_1_process"] / best["decode_2_processes"], 2),
        "speedup_dask_2_workers": round(one / best["dask_2_workers"], 2),
        "one_process_vs_floor": round(one / best["floor_read_lines"], 1),
        **{
            f"{way}_differs_in": sorted(key for key, value in runs[way][0]["digest"].items() if reference[key] != value)
            for way in ("jobs_2", "dask_2_workers")
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=2_000_000, help="the input of the parallel figures")
    parser.add_argument("--sizes", default="100000,1000000,4000000", help="flows, for the growth figures")
    parser.add_argument(
        "--clusters", default="1000:4000,5000:20000,20000:80000", help="workloads:edges, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=3, help="of the parallel figures (the best counts)")
    parser.add_argument("--tmp", help="where to write the captures (default: the system's temporary folder)")
    parser.add_argument("--measure", nargs=2, metavar=("WAY", "PATH"), help=argparse.SUPPRESS)  # in_fresh_process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return {}
    sizes = sorted(int(size) for size in args.sizes.split(","))
    largest = max(args.flows, *sizes)
    load_start = os.getloadavg()
    with generated_capture(largest, args.flows, args.tmp) as (_tmp, capture):
        with first_lines(capture, args.flows, largest) as path:
            figures: dict[str, object] = {"parallel": parallel(path, args.flows, args.rounds)}
        growth = []
        for flows in sizes:
            with first_lines(capture, flows, largest) as path:
                run = in_fresh_process("one_process", path)
                growth.append(
                    {"flows": flows, "ingest_s": round(run["seconds"], 2), "peak_rss_mb": run["peak_rss_mb"],
                     "edges": run["edges"]}
                )  # fmt: skip
        figures["growth"] = growth
    from benchmarks import bench_verify  # not in the measuring processes: their peak RSS is the ingest's

    clusters = [size.split(":") for size in args.clusters.split(",")]
    figures["synthesis_and_verification"] = [bench_verify.run(int(w), int(e)) for w, e in clusters]
    return print_figures(figures, load_start)


if __name__ == "__main__":
    main()
