"""How long Ctrl-C takes to end `recommend --jobs 2` while its two workers read, next to the floor.

Run: python -m benchmarks.bench_interrupt [--runs N]

The run reads the example capture repeated 12 times (about 100 MB); once its two worker processes
exist, SIGINT goes to its process group (as a terminal's Ctrl-C does) and the time until the parent
has exited is taken. The floor: the same for a Python process that only sleeps (SIGINT to exit, with
the default handler). The target is under a second; the ratio shows what the tool adds.
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "shop-capture.json.gz"


def _interrupt_after(command: list[str], ready: Callable[[int, float], bool]) -> float:
    """Seconds from SIGINT to exit, the signal sent once `ready(pid, seconds since start)`."""
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    start = time.monotonic()
    while not ready(process.pid, time.monotonic() - start) and time.monotonic() < start + 60:
        time.sleep(0.01)
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)
    return time.monotonic() - sent


def _children(pid: int) -> int:
    try:
        return len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as work:
        capture = Path(work) / "large.json"
        capture.write_bytes(gzip.decompress(EXAMPLE.read_bytes()) * 12)
        tool = [sys.executable, "-c", "from recommender.cli_main import run; run()"]
        read = [*tool, "recommend", str(capture), "--jobs", "2", "-q", "-o", "yaml"]
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        floor = [_interrupt_after(sleeper, lambda _pid, elapsed: elapsed > 0.5) for _ in range(runs)]
        tool_times = [_interrupt_after(read, lambda pid, _elapsed: _children(pid) >= 2) for _ in range(runs)]
    median_floor, median_tool = statistics.median(floor), statistics.median(tool_times)
    print(f"SIGINT to exit, median of {runs}: recommend --jobs 2 while reading {median_tool * 1000:.0f} ms,")
    print(f"a sleeping Python process {median_floor * 1000:.0f} ms; ratio {median_tool / median_floor:.1f}")
    print(f"slowest recommend run: {max(tool_times) * 1000:.0f} ms (target: under 1000 ms)")


if __name__ == "__main__":
    main()
