"""Parallel ingest: several processes over files and byte ranges give exactly the single-process result."""

from __future__ import annotations

import gzip
import os
import signal
import time
from pathlib import Path

import pandas.testing as pdt
import pytest

import collectors.hubble as hubble
from benchmarks.generate import shop_topology, write_capture
from collectors.errors import BadInputError, CollectorError, OnError
from collectors.flow_filter import OUTSIDE_WINDOW, FlowFilter
from tests.conftest import fixture_lines


def same(one, many) -> None:
    pdt.assert_frame_equal(one.observations, many.observations)  # counts, first and last seen included
    pdt.assert_frame_equal(one.pods, many.pods)
    pdt.assert_frame_equal(one.unoriented, many.unoriented)
    assert one.dns_names == many.dns_names
    assert one.stats.to_dict() == many.stats.to_dict()


@pytest.fixture
def small_chunks(monkeypatch):
    """Byte ranges of 64 KiB, so that even small files are read in many partitions."""
    monkeypatch.setattr(hubble, "MIN_CHUNK_BYTES", 64 << 10)


def test_byte_ranges_cover_every_line_exactly_once(tmp_path, small_chunks):
    path = tmp_path / "lines.json"
    lines = [f'{{"n": {i}, "pad": "{"x" * (i % 97)}"}}\n'.encode() for i in range(5000)]
    path.write_bytes(b"".join(lines))
    chunks = hubble.plan_chunks([str(path)], jobs=2)
    assert len(chunks) == 4
    seen = []
    for chunk in chunks:
        with open(path, "rb") as handle:
            seen += list(hubble.lines_starting_in(handle, chunk.start, chunk.end))
    assert seen == lines


def test_generated_capture_in_many_partitions_gives_the_single_process_result(tmp_path, small_chunks):
    path = tmp_path / "shop.json"
    write_capture(str(path), shop_topology(), 3000)
    assert len(hubble.plan_chunks([str(path)], jobs=2)) > 3
    same(hubble.read_hubble_files([str(path)]), hubble.read_hubble_files([str(path)], jobs=2))


def test_real_fixtures_split_across_processes_give_the_single_process_result(tmp_path, small_chunks, bookinfo_files):
    # one file split in byte ranges: its undecided events are decided with the other ranges' knowledge
    joined = tmp_path / "bookinfo.json"
    joined.write_text("".join(Path(path).read_text() for path in bookinfo_files) * 40)
    one = hubble.read_hubble_files([str(joined)])
    assert one.stats.orientation["correlated"] > 0 and one.stats.orientation["known-server-port"] > 0
    same(one, hubble.read_hubble_files([str(joined)], jobs=2))


def test_a_bad_line_in_a_later_byte_range_is_named_by_its_line_in_the_file(tmp_path, small_chunks):
    good = fixture_lines("basic-sample-400-tcp-flows.json")
    lines = good * 3
    lines.insert(1000, "not json at all")
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    assert len(hubble.plan_chunks([str(path)], jobs=2)) > 2
    with pytest.raises(BadInputError) as error:
        hubble.read_hubble_files([str(path)], jobs=2)
    assert error.value.line == 1001
    skipped = hubble.read_hubble_files([str(path)], jobs=2, on_error=OnError.SKIP)
    (example,) = skipped.stats.bad.examples
    assert example.startswith(f"{path}:1001: not valid JSON")


@pytest.fixture
def piped_gzip(monkeypatch):
    """Every gzip file read with jobs > 1 goes through `read_gzip_in_two_processes`; its calls are listed."""
    monkeypatch.setattr(hubble, "MIN_GZIP_BYTES", 1)
    calls = []
    real = hubble.read_gzip_in_two_processes

    def spy(path, *arguments):
        calls.append(path)
        return real(path, *arguments)

    monkeypatch.setattr(hubble, "read_gzip_in_two_processes", spy)
    return calls


def gzip_file(path: Path, text: str) -> str:
    path.write_bytes(gzip.compress(text.encode(), 1))
    return str(path)


def test_a_gzip_file_decompressed_and_ingested_in_two_processes_gives_the_single_process_result(tmp_path, piped_gzip):
    plain = tmp_path / "shop.json"
    write_capture(str(plain), shop_topology(), 3000)
    path = gzip_file(tmp_path / "shop.json.gz", plain.read_text())
    progress = []
    one, two = hubble.read_hubble_files([path]), hubble.read_hubble_files([path], jobs=2, progress=progress.append)
    assert piped_gzip == [path]
    same(one, two)
    assert sum(progress) == Path(path).stat().st_size  # compressed bytes, as the progress bar counts them
    middle = (
        one.observations.first_seen.min() + (one.observations.last_seen.max() - one.observations.first_seen.min()) / 2
    )
    window = FlowFilter(since=middle.floor("s").to_pydatetime())
    windowed = hubble.read_hubble_files([path], window=window)
    assert windowed.stats.skipped[OUTSIDE_WINDOW] > 0
    same(windowed, hubble.read_hubble_files([path], jobs=2, window=window))


def test_a_bad_line_in_a_gzip_file_read_in_two_processes_is_named_by_its_line(tmp_path, piped_gzip):
    lines = fixture_lines("basic-sample-400-tcp-flows.json") * 3
    lines.insert(1000, "not json at all")
    path = gzip_file(tmp_path / "bad.json.gz", "\n".join(lines) + "\n")
    with pytest.raises(BadInputError) as error:
        hubble.read_hubble_files([path], jobs=2)
    assert error.value.line == 1001
    skipped = hubble.read_hubble_files([path], jobs=2, on_error=OnError.SKIP)
    (example,) = skipped.stats.bad.examples
    assert example.startswith(f"{path}:1001: not valid JSON") and skipped.stats.bad.count == 1
    assert piped_gzip == [path, path]


def test_a_truncated_gzip_file_read_in_two_processes_fails_naming_the_file(tmp_path, piped_gzip):
    data = gzip.compress("\n".join(fixture_lines("basic-sample-400-tcp-flows.json") * 20).encode(), 1)
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CollectorError, match=f"{path}:[0-9]+: .*cut") as error:
        hubble.read_hubble_files([str(path)], jobs=2)
    one = hubble.read_hubble_files([str(path)], jobs=1, on_error=OnError.SKIP)
    two = hubble.read_hubble_files([str(path)], jobs=2, on_error=OnError.SKIP)
    assert two.stats.bad.examples == one.stats.bad.examples == [str(error.value)]  # the same cut, the same lines
    assert two.stats.lines == one.stats.lines and two.observations.equals(one.observations)
    assert piped_gzip == [str(path)] * 2


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_worker_ends_when_its_parent_does():
    """A parent that leaves on Ctrl-C while its pool starts cannot stop a worker it does not know of yet."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:  # the parent of the worker: it starts one, then leaves without stopping it
        worker = os.fork()
        if worker == 0:
            hubble.die_with_parent(os.getppid())
            time.sleep(30)
            os._exit(0)
        os.write(write_end, str(worker).encode())
        os._exit(0)
    os.waitpid(intermediate, 0)
    worker = int(os.read(read_end, 32))
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _killed(*_arguments) -> None:
    """A worker the kernel kills (as its out-of-memory killer does) before it gives its result."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_gzip_reader_is_an_error_naming_the_file_not_a_wait_forever(tmp_path, piped_gzip, monkeypatch):
    monkeypatch.setattr(hubble, "_ingest_pipe", _killed)
    path = gzip_file(tmp_path / "flows.json.gz", "\n".join(fixture_lines("basic-sample-400-tcp-flows.json")) + "\n")
    with pytest.raises(CollectorError, match=rf"{path}: the reading process was killed by signal 9"):
        hubble.read_hubble_files([path], jobs=2)


def test_a_killed_range_reader_is_an_error_naming_the_file(tmp_path, small_chunks, monkeypatch):
    monkeypatch.setattr(hubble, "read_chunk", _killed)
    path = tmp_path / "flows.json"
    path.write_text("\n".join(fixture_lines("basic-sample-400-tcp-flows.json") * 40) + "\n")
    with pytest.raises(CollectorError, match=rf"{path}: a reading process ended before it gave its result"):
        hubble.read_hubble_files([str(path)], jobs=2)


def test_progress_over_a_gzip_file_read_in_one_process_counts_its_compressed_bytes(tmp_path):
    text = "\n".join(fixture_lines("basic-sample-400-tcp-flows.json") * 20) + "\n"
    path = gzip_file(tmp_path / "flows.json.gz", text)
    progress: list[int] = []
    hubble.read_hubble_files([path], progress=progress.append)
    assert sum(progress) == Path(path).stat().st_size


@pytest.mark.skipif(not Path("/proc/sys/fs/pipe-max-size").exists(), reason="needs Linux pipe sizes")
def test_the_pipe_to_the_gzip_reader_gets_the_largest_capacity_allowed():
    """With the default 64 KiB the two processes took turns (slower than one); 1 MiB lets them overlap."""
    import fcntl

    read_end, write_end = os.pipe()
    try:
        hubble._widen(write_end)
        assert fcntl.fcntl(write_end, 1032) == int(Path("/proc/sys/fs/pipe-max-size").read_text())  # F_GETPIPE_SZ
    finally:
        os.close(read_end)
        os.close(write_end)
