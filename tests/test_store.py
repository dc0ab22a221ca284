"""The observation store: windows, the running picture, retention, crash safety, locking, format versions."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pandas as pd
import pandas.testing as pdt
import pyarrow.parquet as pq
import pytest

from benchmarks.generate import START, Topology, observation_set, shop_topology
from collectors.aggregate import concat_observations, normalize_dtypes
from collectors.errors import CollectorError
from collectors.parquet import METADATA_KEY
from collectors.records import ObservationSet, ReadStats
from recommender import store as store_module
from recommender.store import FORMAT, INDEX, ObservationStore, StoreError, locked_store
from tests.conftest import REPO

RECOMMENDATION = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: shop
spec:
  podSelector: {}
"""


def observed_at(moment: datetime, minutes: int = 10, topology: Topology | None = None) -> ObservationSet:
    """A topology's traffic (the shop's by default) as one window of `minutes` starting at `moment`, with
    as many flows read as its observations count."""
    observed = observation_set(topology or shop_topology())
    frame = observed.observations.assign(first_seen=moment, last_seen=moment + timedelta(minutes=minutes))
    stats = ReadStats(flows=int(frame["count"].sum()))
    return dataclasses.replace(observed, observations=normalize_dtypes(frame), stats=stats)


def add(directory: str, observed: ObservationSet, retain: timedelta | None = None) -> ObservationStore:
    with locked_store(directory) as store:
        store.append(store.next_window(observed), observed, RECOMMENDATION, retain)
    return ObservationStore(directory)


def test_a_window_round_trips_with_its_id_span_and_recommendation(tmp_path):
    directory = str(tmp_path / "store")
    assert ObservationStore(directory).windows == []
    observed = observed_at(START)
    store = add(directory, observed)
    (window,) = store.windows
    assert (window.id, window.start, window.end) == ("000001", START, START + timedelta(minutes=10))
    pdt.assert_frame_equal(store.observations(window).observations, observed.observations)
    assert store.recommendation(window) == RECOMMENDATION
    index = json.loads((tmp_path / "store" / INDEX).read_text())
    assert index["format"] == FORMAT
    assert index["windows"][0]["observations"] == "windows/000001.parquet"


def test_windows_merge_into_the_running_picture(tmp_path):
    directory = str(tmp_path / "store")
    first, second = observed_at(START), observed_at(START + timedelta(hours=1))
    add(directory, first)
    store = add(directory, second)
    assert [w.id for w in store.windows] == ["000001", "000002"]
    picture = store.picture(store.windows).observations
    pdt.assert_frame_equal(picture, concat_observations([first.observations, second.observations]))
    assert picture["count"].sum() == 2 * first.observations["count"].sum()
    assert picture["first_seen"].min() == START
    assert picture["last_seen"].max() == START + timedelta(hours=1, minutes=10)


def test_a_window_without_flows_ends_where_the_last_one_ended(tmp_path):
    directory = str(tmp_path / "store")
    store = add(directory, observed_at(START))
    empty = observed_at(START)
    empty = dataclasses.replace(empty, observations=empty.observations.iloc[0:0])
    window = store.next_window(empty)
    assert (window.id, window.start, window.end) == ("000002", store.windows[0].end, store.windows[0].end)


def test_retention_keeps_windows_that_ended_within_it_before_the_newest(tmp_path):
    directory = str(tmp_path / "store")
    for day in (0, 10, 20):
        add(directory, observed_at(START + timedelta(days=day)), timedelta(days=30))
    store = add(directory, observed_at(START + timedelta(days=35)), timedelta(days=30))
    assert [w.id for w in store.windows] == ["000002", "000003", "000004"]
    assert sorted(os.listdir(tmp_path / "store" / "windows")) == [
        f"{number:06d}.{suffix}" for number in (2, 3, 4) for suffix in ("parquet", "recommendation.yaml")
    ]


def test_a_run_that_dies_before_the_index_is_renamed_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    directory = str(tmp_path / "store")
    before = add(directory, observed_at(START)).windows
    write = store_module.write_atomically

    def dies_at_the_index(path: str, text: str) -> None:
        if path.endswith(INDEX):
            raise KeyboardInterrupt  # the process is stopped after the window's files were written
        write(path, text)

    monkeypatch.setattr(store_module, "write_atomically", dies_at_the_index)
    later = observed_at(START + timedelta(hours=1))
    with pytest.raises(KeyboardInterrupt), locked_store(directory) as store:
        store.append(store.next_window(later), later, RECOMMENDATION)
    monkeypatch.undo()
    store = ObservationStore(directory)
    assert store.windows == before
    assert len(store.observations(before[0]).observations) == len(observed_at(START).observations)
    assert "000002.parquet" in os.listdir(tmp_path / "store" / "windows")  # left behind, not listed
    store = add(directory, observed_at(START + timedelta(hours=2)))
    assert [w.id for w in store.windows] == ["000001", "000002"]
    assert sorted(os.listdir(tmp_path / "store" / "windows")) == [
        "000001.parquet",
        "000001.recommendation.yaml",
        "000002.parquet",
        "000002.recommendation.yaml",
    ]


HOLDER = """
import sys
from recommender.store import locked_store
with locked_store(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_run_waits_a_bounded_time_and_names_the_holder_and_a_killed_holder_frees_the_lock(tmp_path):
    directory = str(tmp_path / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, directory],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        message = rf"in use by another run \(pid {holder.pid} on .*\); waited 0.5s"
        with pytest.raises(StoreError, match=message), locked_store(directory, timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    with locked_store(directory, timeout=5) as store:
        assert store.windows == []


def write_index(tmp_path, document: dict) -> str:
    directory = tmp_path / "store"
    directory.mkdir(exist_ok=True)
    (directory / INDEX).write_text(json.dumps(document))
    return str(directory)


def test_a_store_written_by_a_newer_version_is_refused_clearly(tmp_path):
    directory = write_index(tmp_path, {"format": FORMAT + 1, "written_by": "netpol-recommender 9.0", "windows": []})
    with pytest.raises(StoreError, match=rf"has format {FORMAT + 1}, written by netpol-recommender 9.0.*Upgrade"):
        ObservationStore(directory)


def test_a_store_written_by_an_older_format_is_refused_clearly(tmp_path):
    directory = write_index(tmp_path, {"format": 0, "windows": []})
    with pytest.raises(StoreError, match=r"has format 0.*Read it with the version that wrote it"):
        ObservationStore(directory)


def test_fields_a_later_version_added_are_ignored(tmp_path):
    directory = str(tmp_path / "store")
    add(directory, observed_at(START))
    index = json.loads((tmp_path / "store" / INDEX).read_text())
    index["labels"] = {"cluster": "prod"}
    index["windows"][0]["bytes"] = 1234
    write_index(tmp_path, index)
    assert [w.id for w in ObservationStore(directory).windows] == ["000001"]


def test_an_index_without_a_format_version_is_not_a_store(tmp_path):
    directory = write_index(tmp_path, {"windows": []})
    with pytest.raises(StoreError, match="not the index of a netpol-recommender observation store"):
        ObservationStore(directory)


def test_a_window_file_of_another_observations_format_is_refused_clearly(tmp_path):
    directory = str(tmp_path / "store")
    (window,) = add(directory, observed_at(START)).windows
    path = tmp_path / "store" / window.observations_file
    table = pq.read_table(path)
    extra = json.loads(table.schema.metadata[METADATA_KEY])
    extra["format"] = 99
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(extra)}), path)
    with pytest.raises(CollectorError, match="observations format 99 is not supported"):
        ObservationStore(directory).observations(window)


def test_a_directory_holding_other_files_is_not_taken_for_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    message = r"is not an observation store .* not empty \(notes.txt\)"
    with pytest.raises(StoreError, match=message), locked_store(str(tmp_path)):
        pass
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_window_times_are_utc_in_the_index(tmp_path):
    directory = str(tmp_path / "store")
    add(directory, observed_at(START))
    entry = json.loads((tmp_path / "store" / INDEX).read_text())["windows"][0]
    assert entry["start"] == "2026-11-02T09:00:00Z" and entry["end"] == "2026-11-02T09:10:00Z"
    assert pd.Timestamp(entry["end"]) == START + timedelta(minutes=10)
