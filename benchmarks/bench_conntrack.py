"""Throughput of conntrack reading on /proc/net/nf_conntrack and `conntrack -L` lines.

Run: python -m benchmarks.bench_conntrack [--lines N] [--workloads W] [--repeat R]

Writes N lines of each format from `benchmarks.generate.conntrack_dump` (the three nodes' tables
for a generated cluster of W workloads: pod-to-Service traffic with DNAT, direct pod calls,
DNS, every cross-node connection on both nodes) and the matching inventory, then reports in
entries per second, best of R runs (default 5) of this process's CPU time (other load on a shared machine
skews it less than wall-clock time):

- floor: reading the lines and splitting them into tokens, which any parser must do;
- reading: `ConntrackIngest.add_file`, the per-entry work of the observation path (tokenize,
  de-duplicate, count per distinct IP-level connection);
- read_conntrack: all of it, that is reading plus naming every distinct connection's endpoints
  with the inventory and building the observations DataFrame; the goal is 300,000 entries/s;
- full parser: `parse_conntrack`, which builds a typed `ConntrackEntry` per line (reference).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.generate import conntrack_dump, inventory_snapshot, scale_topology
from collectors.conntrack import parse_conntrack
from collectors.conntrack_observations import ConntrackIngest, read_conntrack
from collectors.errors import BadRecords
from collectors.inventory import Inventory, inventory_from_objects, list_items
from collectors.sources import open_input

GOAL = 300_000


def write_dumps(directory: Path, lines: int, workloads: int) -> tuple[dict[str, Path], Inventory]:
    """`lines` lines in /proc format and in `conntrack -L` format, and the cluster's inventory."""
    topology = scale_topology(workloads)
    snapshot = inventory_snapshot(topology)
    inventory = inventory_from_objects(list_items(snapshot, "generated"), "generated")
    paths = {}
    for name, fmt in (("/proc/net/nf_conntrack", "proc"), ("conntrack -L", "list")):
        path = paths[name] = directory / f"{fmt}.txt"
        with path.open("w") as out:
            dump = conntrack_dump(topology, fmt=fmt, connections=lines)
            out.writelines(f"{line}\n" for line in itertools.islice(dump, lines))
    return paths, inventory


def _best_time(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.process_time()
        count = run()
        best = min(best, time.process_time() - started)
    return best, count


def _floor(path: Path) -> int:
    count = 0
    with open_input(str(path)) as stream:
        for raw in stream:
            raw.split()
            count += 1
    return count


def _reading(path: Path, inventory: Inventory) -> int:
    ingest = ConntrackIngest(inventory)
    ingest.add_file(str(path))
    return ingest.conntrack_stats.entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--workloads", type=int, default=500, help="size of the generated cluster")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measure; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dumps, inventory = write_dumps(Path(tmp), args.lines, args.workloads)
        print(f"{args.lines:,} lines per format, {len(inventory.pods):,} pods, best of {args.repeat} runs (CPU time)")
        print(f"{'format':<24} {'floor':>10} {'reading':>10} {'read_conntrack':>15} {'ratio':>6} {'full parser':>12}")
        for name, path in dumps.items():
            measures = {
                "floor": lambda path=path: _floor(path),
                "reading": lambda path=path: _reading(path, inventory),
                "observations": lambda path=path: read_conntrack([str(path)], inventory).stats.flows,
                "parser": lambda path=path: sum(1 for _ in parse_conntrack([str(path)], bad_records=BadRecords())),
            }
            rates, seconds = {}, {}
            for measure, run in measures.items():
                seconds[measure], entries = _best_time(run, args.repeat)
                assert entries == args.lines, f"{name} {measure}: {entries} of {args.lines} lines"
                rates[measure] = args.lines / seconds[measure]
            ratio = seconds["observations"] / seconds["floor"]
            verdict = "" if rates["observations"] >= GOAL else f"  (below the {GOAL:,}/s goal)"
            print(
                f"{name:<24} {rates['floor']:>10,.0f} {rates['reading']:>10,.0f} {rates['observations']:>15,.0f}"
                f" {ratio:>5.2f}x {rates['parser']:>12,.0f}{verdict}"
            )


if __name__ == "__main__":
    main()
