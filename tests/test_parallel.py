"""Parallel ingest: several processes over files and byte ranges give exactly the single-process result."""

from __future__ import annotations

from pathlib import Path

import pandas.testing as pdt
import pytest

import collectors.hubble as hubble
from benchmarks.generate import shop_topology, write_capture
from collectors.errors import BadInputError, OnError
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
