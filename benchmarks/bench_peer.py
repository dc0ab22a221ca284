"""`recommend` against a peer tool and the decode floors, on the same generated capture, in one run.

    python -m benchmarks.bench_peer [--flows 1000000] [--sizes 100000,1000000,4000000] [--rounds 3]
    python -m benchmarks.bench_peer --profile [--flows 200000]    # where the per-flow time goes

On one generated shop capture (`benchmarks.generate`; the smaller sizes are its first lines), each of
these runs in a fresh process, in `--rounds` rounds that take turns (a burst of other work on the
shared machine does not favour one of them), and the best time counts:
- the peer: `hubble-audit2policy` (pinned to `PEER_VERSION`, installed by this benchmark into its own
  virtual environment under `benchmarks/.venvs/`, never a dependency of the project) on the file,
  offline (`--no-enrich`), writing its policies to a temporary folder: wall clock of the command;
- ours: `netpol-recommender recommend FILE -o DIR -q --target cilium` as run by default (`--jobs` = the CPUs) and
  with `--jobs 1`: wall clock of the whole command (interpreter start, imports, ingest, synthesis,
  verification, writing);
- the floors: a bare msgspec typed decode of every line (`bench_ingest.decode_lines`, endpoints
  included, nothing else done) in one process and in two (`bench_scale`'s ways): seconds of the
  decode loop only, without the interpreter's start (a floor stricter than the commands' wall clock);
- the ingest alone (`read_hubble_files`, one process and `--jobs 2`), in-process seconds, which tell
  how much of `recommend` is ingest.
The same ingest on the capture gzip-compressed, in one process and with `--jobs 2` (decompression in
one process, the ingest in another). Peak RSS (VmHWM) of a whole `recommend --jobs 1` at each of
`--sizes` flows. The load average at the start and at the end says whether other work shared the cores.

`--profile` samples a `recommend --jobs 1` with py-spy (installed into `benchmarks/.venvs/` too) and
prints the functions and lines ranked by their own share of the samples taken inside the ingest.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_scale import first_lines, generated_capture, in_fresh_process, print_figures

PEER = "hubble-audit2policy"
PEER_VERSION = "0.18.5"
PY_SPY_VERSION = "0.4.3"
VENVS = Path(__file__).resolve().parent / ".venvs"
ROOT = Path(__file__).resolve().parent.parent

# The CLI as its console script (`recommender.cli_main:run`) runs it; prints its peak RSS (VmHWM, kB) on exit.
_RECOMMEND = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "    print(f'VmHWM {status}', file=sys.stderr)\n"
    "atexit.register(_peak)\n"
    "from recommender.cli_main import run\n"
    "sys.argv[0] = 'netpol-recommender'\n"
    "run()\n"
)


def tool_in_venv(package: str, version: str, command: str) -> Path:
    """The console script `command` of `package==version`, installed into its own venv if not yet there."""
    venv = VENVS / f"{package}-{version}"
    executable = venv / "bin" / command
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"{package}=={version}"], check=True, stdout=subprocess.DEVNULL
        )
    return executable


def recommend_command(path: str, out: str, *extra: str) -> list[str]:
    """`recommend` as a Cilium user runs it on a Hubble capture: CiliumNetworkPolicies, as the peer writes
    (with NetworkPolicies the capture's node and API-server traffic has no rule on Cilium: exit 6)."""
    return [sys.executable, "-c", _RECOMMEND, "recommend", path, "-o", out, "-q", "--target", "cilium", *extra]


def run_command(command: list[str]) -> tuple[float, str]:
    """Wall-clock seconds of a command, and its standard error."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} {command[-6:]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.stderr


def peak_rss_mb(stderr: str) -> float:
    line = next(line for line in reversed(stderr.splitlines()) if line.startswith("VmHWM "))
    return int(line.split()[1]) / 1024


def compare(path: str, peer: Path, rounds: int, tmp: str) -> dict:
    """The best time of each way over `rounds` rounds that take turns."""
    out = os.path.join(tmp, "out")
    commands = {
        "peer_hubble_audit2policy": [str(peer), path, "-o", out, "--no-enrich"],
        "recommend_default_jobs": recommend_command(path, out),
        "recommend_jobs_1": recommend_command(path, out, "--jobs", "1"),
    }
    in_process = {
        "decode_floor_1_process": "decode_1_process",
        "decode_floor_2_processes": "decode_2_processes",
        "ingest_1_process": "one_process",
        "ingest_jobs_2": "jobs_2",
    }
    best: dict[str, float] = {}
    for _round in range(rounds):
        for name, command in commands.items():
            shutil.rmtree(out, ignore_errors=True)
            seconds, _stderr = run_command(command)
            best[name] = min(best.get(name, seconds), seconds)
        for name, way in in_process.items():
            seconds = in_fresh_process(way, path)["seconds"]
            best[name] = min(best.get(name, seconds), seconds)
    ours, ours_1 = best["recommend_default_jobs"], best["recommend_jobs_1"]
    return {
        **{f"{name}_s": round(seconds, 2) for name, seconds in best.items()},
        "speedup_vs_peer": round(best["peer_hubble_audit2policy"] / ours, 2),
        "speedup_vs_peer_jobs_1": round(best["peer_hubble_audit2policy"] / ours_1, 2),
        "recommend_vs_decode_floor_2_processes": round(best["decode_floor_2_processes"] / ours, 3),
        "recommend_jobs_1_vs_decode_floor_1_process": round(best["decode_floor_1_process"] / ours_1, 3),
        "ingest_jobs_2_vs_decode_floor_2_processes": round(best["decode_floor_2_processes"] / best["ingest_jobs_2"], 3),
        "ingest_1_process_vs_decode_floor_1_process": round(
            best["decode_floor_1_process"] / best["ingest_1_process"], 3
        ),
    }


def gzip_ingest(path: str, rounds: int, tmp: str) -> dict:
    """The ingest of the same capture gzip-compressed (level 1): one process, and `--jobs 2`
    (decompressed in one process, ingested in another), best of `rounds`."""
    compressed = os.path.join(tmp, "capture.json.gz")
    with open(path, "rb") as source, gzip.open(compressed, "wb", compresslevel=1) as out:
        shutil.copyfileobj(source, out, 1 << 20)
    try:
        best = {
            way: min(in_fresh_process(way, compressed)["seconds"] for _ in range(rounds))
            for way in ("one_process", "jobs_2")
        }
        return {
            "gzip_mb": round(os.path.getsize(compressed) / 2**20),
            "gzip_ingest_1_process_s": round(best["one_process"], 2),
            "gzip_ingest_jobs_2_s": round(best["jobs_2"], 2),
            "gzip_speedup_jobs_2": round(best["one_process"] / best["jobs_2"], 2),
        }
    finally:
        os.remove(compressed)


def growth(capture: str, sizes: list[int], largest: int, tmp: str) -> dict:
    """Peak RSS and wall clock of a whole `recommend --jobs 1` at each size."""
    rows = []
    for flows in sizes:
        shutil.rmtree(os.path.join(tmp, "out"), ignore_errors=True)
        with first_lines(capture, flows, largest) as path:
            seconds, stderr = run_command(recommend_command(path, os.path.join(tmp, "out"), "--jobs", "1"))
        rows.append(
            {"flows": flows, "recommend_jobs_1_s": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(stderr), 1)}
        )
    return {"rows": rows, "peak_rss_growth": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)}


def profile(path: str, tmp: str, top: int) -> dict:
    """py-spy samples of `recommend --jobs 1`, ranked by own share inside `read_hubble_files`."""
    py_spy = tool_in_venv("py-spy", PY_SPY_VERSION, "py-spy")
    samples = os.path.join(tmp, "samples.txt")
    command = recommend_command(path, os.path.join(tmp, "out"), "--jobs", "1")
    subprocess.run(
        [str(py_spy), "record", "-r", "250", "-f", "raw", "-o", samples, "--", *command],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    functions: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    total = 0
    with open(samples) as handle:
        for row in handle:
            stack, _, count_text = row.rstrip("\n").rpartition(" ")
            frames, count = stack.split(";"), int(count_text)
            total += count
            names = [frame.split(" (")[0] for frame in frames]
            phase = next((name for name in _PHASES if name in names), "start-up and the rest")
            phases[phase] += count
            if phase == "read_hubble_files":
                functions[names[-1]] += count
                lines[frames[-1]] += count
    in_ingest = phases["read_hubble_files"] or 1
    return {
        "samples": total,
        "phases_percent_of_all": {name: round(100 * count / total, 1) for name, count in phases.most_common()},
        "ingest_functions_own_percent": {n: round(100 * c / in_ingest, 1) for n, c in functions.most_common(top)},
        "ingest_lines_own_percent": {n: round(100 * c / in_ingest, 1) for n, c in lines.most_common(top)},
    }


_PHASES = ("read_hubble_files", "recommend", "write_policies", "render_yaml")
"""Outermost functions of a `recommend` run, by which a sample is counted (the first found wins)."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1_000_000, help="the input of the comparison")
    parser.add_argument("--sizes", default="100000,1000000,4000000", help="flows, for the peak RSS figures")
    parser.add_argument("--rounds", type=int, default=3, help="of the comparison (the best counts)")
    parser.add_argument("--profile", action="store_true", help="only profile recommend --jobs 1 on --flows flows")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile")
    parser.add_argument("--tmp", help="where to write the captures (default: the system's temporary folder)")
    args = parser.parse_args(argv)
    sizes = [] if args.profile else sorted(int(size) for size in args.sizes.split(","))
    largest = max([args.flows, *sizes])
    load_start = os.getloadavg()
    with generated_capture(largest, args.flows, args.tmp) as (tmp, capture):
        with first_lines(capture, args.flows, largest) as path:
            if args.profile:
                figures: dict[str, object] = {"flows": args.flows, "profile": profile(path, tmp, args.top)}
            else:
                peer = tool_in_venv(PEER, PEER_VERSION, PEER)
                figures = {"flows": args.flows, "file_mb": round(os.path.getsize(path) / 2**20)}
                figures["peer"] = f"{PEER}=={PEER_VERSION}"
                figures["comparison"] = compare(path, peer, args.rounds, tmp)
                figures["gzip"] = gzip_ingest(path, args.rounds, tmp)
        if sizes:
            figures["memory"] = growth(capture, sizes, largest, tmp)
    return print_figures(figures, load_start)


if __name__ == "__main__":
    main()
