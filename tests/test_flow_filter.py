"""hubble observe's filters on files and on the relay: one definition (collectors/flow_filter.py)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from collectors.flow_filter import OUTSIDE_WINDOW, FlowFilter
from recommender import api
from recommender.cli import main
from tests.conftest import REPO
from tests.hubble_server import FakeRelay, parse_lines, serve

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
EXISTING = str(REPO / "examples" / "existing-policies")


@pytest.fixture(scope="module")
def everything():
    return api.load_observations([EXAMPLE]).observations


def connections(*args: str) -> list[tuple[str, str, str, int, int]]:
    outcome = CliRunner().invoke(main, ["verify", "--policies", EXISTING, "-o", "json", *args])
    assert outcome.exit_code in (0, 5), outcome.output
    rows = json.loads(outcome.stdout)["connections"]
    return sorted((row["client"], row["server"], row["protocol"], row["port"], row["count"]) for row in rows)


def keys(frame) -> set[tuple[str, str]]:
    return {
        (f"{row.client_namespace}/{row.client_workload}", f"{row.server_namespace}/{row.server_workload}")
        for row in frame.itertuples()
    }


def test_namespace_keeps_the_connections_from_or_to_it(everything):
    kept = api.load_observations([EXAMPLE], flow_filter=FlowFilter(namespaces=("payments",))).observations
    expected = everything[(everything.client_namespace == "payments") | (everything.server_namespace == "payments")]
    assert len(kept) == len(expected) > 0 and keys(kept) == keys(expected)


def test_pod_filters_are_the_client_and_the_server_by_name_prefix(everything):
    frontend = FlowFilter(from_pods=("shop/front",))
    kept = api.load_observations([EXAMPLE], flow_filter=frontend).observations
    assert set(kept.client_workload) == {"frontend"} and len(kept) == (everything.client_workload == "frontend").sum()
    assert api.load_observations([EXAMPLE], flow_filter=FlowFilter(from_pods=("front",))).observations.empty
    to_catalog = FlowFilter(to_pods=("shop/catalog",), ports=(8080,), protocols=("tcp",))
    kept = api.load_observations([EXAMPLE], flow_filter=to_catalog).observations
    assert set(kept.server_workload) == {"catalog"} and set(kept.port) == {8080}  # catalog-db is on 5432


def test_protocol_and_verdict_select_rows(everything):
    udp = api.load_observations([EXAMPLE], flow_filter=FlowFilter(protocols=("UDP",))).observations
    assert len(udp) == (everything.protocol == "UDP").sum() > 0
    with pytest.raises(Exception, match="--protocol http"):
        FlowFilter(protocols=("http",))
    with pytest.raises(Exception, match="--verdict nope"):
        FlowFilter(verdicts=("nope",))


def test_since_until_keep_exactly_the_flows_seen_in_the_window():
    times = [
        datetime.fromisoformat(json.loads(line)["flow"]["time"].replace("Z", "+00:00"))
        for line in gzip.decompress(Path(EXAMPLE).read_bytes()).decode().splitlines()
    ]
    since, middle, until = (
        datetime(2026, 11, 2, 9, 5, tzinfo=UTC),
        datetime(2026, 11, 2, 9, 5, 30, 1, tzinfo=UTC),
        datetime(2026, 11, 2, 9, 6, tzinfo=UTC),
    )
    window = api.load_observations([EXAMPLE], flow_filter=FlowFilter(since=since, until=until))
    outside = sum(1 for moment in times if not since <= moment <= until)
    assert 0 < outside < len(times) and window.stats.skipped[OUTSIDE_WINDOW] == outside
    halves = [
        api.load_observations([EXAMPLE], flow_filter=FlowFilter(since=since, until=middle)),
        api.load_observations([EXAMPLE], flow_filter=FlowFilter(since=middle, until=until)),
    ]
    total = lambda observed: int(observed.observations["count"].sum())  # noqa: E731
    assert total(window) == sum(total(half) for half in halves)
    assert window.observations["first_seen"].min() >= since and window.observations["last_seen"].max() <= until


def test_the_time_window_is_refused_for_saved_observations(tmp_path):
    saved = tmp_path / "saved.parquet"
    assert CliRunner().invoke(main, ["collect", EXAMPLE, "-o", str(saved)]).exit_code == 0
    outcome = CliRunner().invoke(main, ["recommend", str(saved), "--since", "2026-11-02T09:05:00Z"])
    assert outcome.exit_code == 1 and "aggregated" in outcome.stderr
    assert CliRunner().invoke(main, ["recommend", str(saved), "-n", "payments", "-q"]).exit_code == 0


def test_files_and_the_relay_give_the_same_filtered_connections():
    lines = gzip.decompress(Path(EXAMPLE).read_bytes()).decode().splitlines()
    server, address = serve(FakeRelay(parse_lines(lines)))
    try:
        for filters in (
            ("--from-pod", "shop/front"),
            ("--to-pod", "shop/catalog", "--port", "8080"),
            ("--protocol", "udp"),
        ):
            from_files = connections(EXAMPLE, *filters)
            assert from_files and from_files == connections("--server", address, *filters)
    finally:
        server.stop(grace=None)
