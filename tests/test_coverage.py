"""Observation coverage: the window, flows per namespace, and the warnings a default-deny needs heard."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from recommender import api
from recommender.cli import main
from recommender.coverage import CoverageWarningKind, observation_coverage
from tests.builders import observation_set, observations
from tests.conftest import REPO, fixture_path

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")


def kinds(coverage) -> list[CoverageWarningKind]:
    return [warning.kind for warning in coverage.warnings]


def test_an_l7_only_capture_warns_that_it_cannot_support_a_default_deny():
    capture = str(fixture_path("hubble", "basic-sample-5-http-flows.json"))
    result = api.recommend(api.load_observations([capture]))
    assert CoverageWarningKind.L7_ONLY in kinds(result.coverage)
    outcome = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["recommend", capture, "-o", "yaml"])
    assert "warning: all 5 events are L7 records and none is an L3/L4 event" in outcome.stderr


def test_a_capture_with_l3_l4_events_gives_no_l7_warning(bookinfo_files):
    result = api.recommend(api.load_observations(bookinfo_files))
    assert result.observed.stats.l7_events > 0
    assert CoverageWarningKind.L7_ONLY not in kinds(result.coverage)


def test_the_window_and_the_flows_per_namespace():
    result = api.recommend(api.load_observations([EXAMPLE]))
    coverage, observations = result.coverage, result.observed.observations
    first, last = observations["first_seen"].min(), observations["last_seen"].max()
    minutes, seconds = divmod(int((last - first).total_seconds()), 60)
    window = f"{first:%Y-%m-%dT%H:%M:%SZ} to {last:%Y-%m-%dT%H:%M:%SZ} ({minutes}m {seconds}s)"
    assert coverage.describe_window() == window == "2026-11-02T09:00:00Z to 2026-11-02T09:14:36Z (14m 36s)"
    flows = dict(coverage.flows_by_namespace)
    assert set(flows) == {"kube-system", "monitoring", "payments", "shop"}
    assert flows["shop"] <= result.observed.stats.flows
    assert ("observation window", coverage.describe_window()) in result.summary()


def _frame(*rows, span: pd.Timedelta):
    frame = observations(*rows)
    return frame.assign(last_seen=frame["first_seen"] + span)


def test_a_short_window_and_a_namespace_with_one_workload_are_warned_about():
    rows = (("shop/web", "shop/api", "TCP", 8080), ("data/loader", "world:203.0.113.5", "TCP", 443))
    short = observation_coverage(observation_set(_frame(*rows, span=pd.Timedelta(minutes=5))), ["data", "shop"])
    assert kinds(short) == [CoverageWarningKind.SHORT_WINDOW, CoverageWarningKind.SINGLE_WORKLOAD]
    assert short.warnings[1].namespace == "data"
    long = observation_coverage(observation_set(_frame(*rows, span=pd.Timedelta(hours=2))), ["shop"])
    assert long.warnings == ()
    assert long.describe_window().endswith("(2h)")
    assert dict(long.flows_by_namespace) == {"data": 1, "shop": 1}
