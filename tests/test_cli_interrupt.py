"""Ctrl-C: a real process, interrupted while it reads with two worker processes or while it starts,
exits with status 130, prints no traceback and leaves no worker behind (timings: benchmarks/bench_interrupt)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recommender.cli_main import INTERRUPTED
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "shop-capture.json.gz"
ENTRY = "from recommender.cli_main import run; run()"
WAIT = 60.0  # seconds: bounds every wait below, never asserted on

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")


def large_capture(path: Path, copies: int = 12) -> Path:
    """The example capture repeated (about 100 MB): long enough to read that two workers start."""
    lines = gzip.decompress(EXAMPLE.read_bytes())
    with path.open("wb") as out:
        for _ in range(copies):
            out.write(lines)
    return path


def start(*args: str, python_options: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *python_options, "-c", ENTRY, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_for_workers(process: subprocess.Popen, count: int) -> list[int]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.poll() is None:
        workers = children(process.pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.02)
    pytest.fail(f"the run never had {count} worker processes")


def gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True  # ended; its new parent has not reaped it yet
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("to_the_group", [True, False], ids=["ctrl-c-to-the-job", "sigint-to-the-parent"])
def test_ctrl_c_while_two_workers_read_exits_130_without_traceback(tmp_path, to_the_group):
    capture = large_capture(tmp_path / "large.json")
    process = start("recommend", str(capture), "--jobs", "2", "-o", "yaml")
    workers = wait_for_workers(process, 2)
    if to_the_group:
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        process.send_signal(signal.SIGINT)
    error = process.communicate(timeout=WAIT)[1].decode()
    assert process.returncode == INTERRUPTED, error
    assert "Traceback" not in error and "KeyboardInterrupt" not in error
    assert error.strip() == "interrupted"
    assert all(gone(worker) for worker in workers)


def test_ctrl_c_while_the_libraries_load_exits_130_without_traceback():
    process = start("recommend", str(EXAMPLE), python_options=("-X", "importtime"))
    assert process.stderr is not None
    for line in process.stderr:  # -X importtime reports each import as it completes
        if line.rstrip().endswith(b"| click"):
            break  # the handler is set; pandas, numpy and the rest are still to come
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=WAIT)[1].decode()
    assert process.returncode == INTERRUPTED
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
