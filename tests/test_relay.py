"""Live collection from Hubble Relay, against a real gRPC server on loopback (tests/hubble_server.py)
serving the real fixtures. Every stream is bounded (a window, a duration or a client timeout), so
a failing test fails instead of hanging."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pandas.testing as pdt
import pytest

from collectors.errors import CollectorError
from collectors.hubble import HubbleIngest, read_hubble_files
from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_api.observer import observer_pb2
from collectors.hubble_schema import build_schema
from collectors.relay import (
    RelayCollector,
    RelayConnectionError,
    RelayOptions,
    collect_from_relay,
    parse_duration,
    parse_time,
)
from collectors.relay_convert import FlowConverter, GetFlowsResponseBatch, GetFlowsResponseView
from collectors.relay_receiver import ChannelSettings, ReceiverError, RelayReceiver, encode_block
from tests.hubble_server import FIXTURES, FakeRelay, make_certificates, parse_lines, serve

FIXTURE_FILES = sorted(str(path) for path in FIXTURES.glob("*")) if FIXTURES.is_dir() else []
needs_fixtures = pytest.mark.skipif(not FIXTURE_FILES, reason=f"fixtures not found at {FIXTURES}")
FAST_RECONNECT = {"reconnect_backoff": 0.05, "max_reconnect_backoff": 0.2, "connect_timeout": 3.0}
BOTH_MODES = pytest.mark.parametrize("processes", [1, 2], ids=["receiver-thread", "receiver-process"])
"""The receiver on a thread of the collector's process, or in a process of its own."""


def fixture_lines() -> list[str]:
    return [line for path in FIXTURE_FILES for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture
def start_relay():
    """`start_relay(responses=fixtures, **FakeRelay options)` → (relay, address); stopped after the test."""
    servers = []

    def start(responses: list[Any] | None = None, certificates: Any = None, mtls: bool = False, **kwargs: Any):
        relay = FakeRelay(responses if responses is not None else parse_lines(fixture_lines()), **kwargs)
        server, address = serve(relay, certificates, mtls=mtls)
        servers.append(server)
        return relay, address

    yield start
    for server in servers:
        server.stop(grace=None)


def assert_same_observations(live: Any, files: Any) -> None:
    pdt.assert_frame_equal(live.observations, files.observations)
    pdt.assert_frame_equal(live.pods, files.pods)
    pdt.assert_frame_equal(live.unoriented, files.unoriented)
    assert live.dns_names == files.dns_names
    for name in ("flows", "duplicates", "lost_event_records", "events_lost", "skipped", "orientation"):
        assert getattr(live.stats, name) == getattr(files.stats, name), name


def flow_at(stamp: datetime, source_port: int) -> Any:
    """A minimal forwarded TCP flow between two pods, without uuid."""
    response = observer_pb2.GetFlowsResponse()
    flow = response.flow
    flow.time.FromDatetime(stamp)
    flow.verdict = flow_pb2.FORWARDED
    flow.IP.source, flow.IP.destination = "10.0.0.1", "10.0.0.2"
    flow.l4.TCP.source_port, flow.l4.TCP.destination_port = source_port, 8080
    flow.l4.TCP.flags.SYN = True
    flow.source.namespace, flow.source.pod_name = "shop", "frontend-7d4b9c8f6d-abcde"
    flow.destination.namespace, flow.destination.pod_name = "shop", "checkout-5f6d7c8b9d-fghjk"
    flow.event_type.type = 4
    flow.is_reply.value = False
    return response


# -- the proto and the converter ----------------------------------------------------------


@needs_fixtures
def test_fixture_lines_parse_strictly_into_the_project_proto() -> None:
    assert len(parse_lines(fixture_lines())) == len(fixture_lines())


@needs_fixtures
def test_converted_flows_equal_the_json_decoder_output_for_every_fixture_flow() -> None:
    decode = build_schema(lazy_endpoints=False).line.decode
    converter = FlowConverter()
    for line, message in zip(fixture_lines(), parse_lines(fixture_lines()), strict=True):
        view = GetFlowsResponseView.FromString(message.SerializeToString())
        converted = converter.convert(view.flow)
        assert msgspec.to_builtins(converted) == msgspec.to_builtins(decode(line).flow), line


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(1_700_000_000, 123_456_789), (1_700_000_000, 999_999_600), (1_700_000_000, 0), (100, 5), (2**28 - 1, 16)],
)
def test_timestamps_convert_to_the_microsecond_the_json_decoder_gives(seconds: int, nanos: int) -> None:
    response = flow_at(datetime(2026, 11, 2, tzinfo=UTC), 40000)
    response.flow.time.seconds, response.flow.time.nanos = seconds, nanos
    expected = msgspec.json.decode(f'"{response.flow.time.ToJsonString()}"', type=datetime)  # RFC 3339, as Hubble
    view = GetFlowsResponseView.FromString(response.SerializeToString())
    assert FlowConverter().convert(view.flow).time == expected


def test_a_block_of_the_receiver_parses_back_into_its_responses_in_order() -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    responses = [observer_pb2.GetFlowsResponse(), flow_at(stamp, 40000)]  # 0 bytes, ~100 bytes
    big = flow_at(stamp, 40001)
    big.flow.source.labels.extend(f"k8s:label-{n}=value-{n}" for n in range(1000))  # > 16 KiB: a 3-byte length
    responses.append(big)
    block = encode_block([response.SerializeToString() for response in responses])
    parsed = GetFlowsResponseBatch.FromString(block).responses
    assert [r.SerializeToString() for r in parsed] == [r.SerializeToString() for r in responses]


# -- windows ------------------------------------------------------------------------------


@needs_fixtures
@BOTH_MODES
def test_observations_from_the_relay_equal_those_from_the_same_fixtures_as_files(start_relay, processes) -> None:
    _relay, address = start_relay()
    live = collect_from_relay(RelayOptions(server=address, processes=processes))
    assert_same_observations(live, read_hubble_files(FIXTURE_FILES))
    assert live.stats.sources == [f"hubble-relay:{address}"]


@needs_fixtures
def test_last_n_is_a_bounded_window_of_the_latest_flows(start_relay) -> None:
    relay, address = start_relay()
    summary = RelayCollector(RelayOptions(server=address, last=25), ingest := HubbleIngest()).run()
    assert relay.requests[0].number == 25 and not relay.requests[0].follow
    assert (summary.flows, summary.stopped_by, ingest.stats.flows) == (25, "end of stream", 25)


@needs_fixtures
def test_since_until_is_a_bounded_window(start_relay) -> None:
    _relay, address = start_relay()
    since = datetime(2021, 11, 10, tzinfo=UTC)
    until = datetime(2021, 11, 11, tzinfo=UTC)
    expected = sum(1 for m in parse_lines(fixture_lines()) if since <= m.flow.time.ToDatetime(UTC) <= until)
    summary = RelayCollector(RelayOptions(server=address, since=since, until=until), HubbleIngest()).run()
    assert 0 < summary.flows == expected < len(fixture_lines())


@needs_fixtures
def test_follow_streams_new_flows_until_the_duration_ends(start_relay) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    relay, address = start_relay(live=[flow_at(stamp, port) for port in range(40000, 40020)])
    started = time.monotonic()
    summary = RelayCollector(RelayOptions(server=address, follow=True, duration=1.5), HubbleIngest()).run()
    assert 1.4 < time.monotonic() - started < 5
    assert relay.requests[0].follow and relay.requests[0].number == 0
    assert (summary.stopped_by, summary.flows) == ("duration", len(fixture_lines()) + 20)


# -- robustness ---------------------------------------------------------------------------


@needs_fixtures
@BOTH_MODES
def test_a_stream_broken_midway_is_resumed_without_losing_or_double_counting(start_relay, processes) -> None:
    relay, address = start_relay(drop_after=300, drops=2)
    ingest = HubbleIngest()
    summary = RelayCollector(RelayOptions(server=address, processes=processes, **FAST_RECONNECT), ingest).run()
    assert summary.reconnects == 2 and summary.overlap_skipped > 0
    assert relay.requests[1].HasField("since")
    assert_same_observations(ingest.finish(), read_hubble_files(FIXTURE_FILES))


def test_flows_sharing_the_resume_time_are_told_apart_by_content(start_relay) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    _relay, address = start_relay([flow_at(stamp, port) for port in range(41000, 41010)], drop_after=4)
    summary = RelayCollector(RelayOptions(server=address, **FAST_RECONNECT), ingest := HubbleIngest()).run()
    assert (summary.flows, summary.overlap_skipped, ingest.stats.flows) == (10, 4, 10)


@needs_fixtures
@BOTH_MODES
def test_a_stream_that_cannot_be_resumed_is_an_error_carrying_the_flows_so_far(start_relay, processes) -> None:
    _relay, address = start_relay(drop_after=1, drops=100)  # each resumed stream breaks inside the overlap
    options = RelayOptions(server=address, processes=processes, **{**FAST_RECONNECT, "max_reconnects": 2})
    with pytest.raises(RelayConnectionError, match="could not resume it after 2 attempts") as caught:
        collect_from_relay(options)
    assert caught.value.partial is not None and caught.value.partial.stats.flows == 1


@needs_fixtures
@BOTH_MODES
def test_a_resumed_last_n_window_stops_at_n_flows(start_relay, processes) -> None:
    relay, address = start_relay(drop_after=10)
    options = RelayOptions(server=address, last=25, processes=processes, **FAST_RECONNECT)
    summary = RelayCollector(options, ingest := HubbleIngest()).run()
    assert relay.requests[1].HasField("since")  # the resumed stream offers more than the 15 flows still due
    assert (summary.flows, summary.stopped_by, ingest.stats.flows) == (25, "limit", 25)


@needs_fixtures
def test_lost_events_are_counted(start_relay) -> None:
    lost = observer_pb2.GetFlowsResponse(lost_events=flow_pb2.LostEvent(num_events_lost=7, source=3))
    lost.time.FromDatetime(datetime(2021, 11, 10, 10, 40, tzinfo=UTC))
    _relay, address = start_relay([*parse_lines(fixture_lines()), lost, lost])
    observations = collect_from_relay(RelayOptions(server=address))
    assert (observations.stats.lost_event_records, observations.stats.events_lost) == (2, 14)
    assert observations.stats.flows == len(fixture_lines())


@BOTH_MODES
def test_an_unreachable_relay_gives_a_clear_error_quickly(processes) -> None:
    started = time.monotonic()
    with pytest.raises(RelayConnectionError) as caught:
        collect_from_relay(RelayOptions(server="127.0.0.1:1", connect_timeout=2.0, processes=processes))
    assert time.monotonic() - started < 4
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "cilium hubble port-forward" in message


@BOTH_MODES
def test_the_receivers_errors_are_raised_by_the_collector_with_their_message(tmp_path: Path, processes) -> None:
    missing = tmp_path / "relay-ca.crt"
    options = RelayOptions(server="127.0.0.1:1", tls_ca_cert_files=(str(missing),), processes=processes)
    message = f"cannot read the CA certificate file {missing}: No such file or directory"
    with pytest.raises(CollectorError, match=f"^{re.escape(message)}$"):
        collect_from_relay(options)


def test_a_receiver_process_that_dies_is_an_error_not_a_hang(start_relay) -> None:
    _relay, address = start_relay([], live=[flow_at(datetime(2026, 11, 2, 9, 0, tzinfo=UTC), 40000)])
    request = observer_pb2.GetFlowsRequest(follow=True).SerializeToString()
    with RelayReceiver(ChannelSettings(address), own_process=True) as receiver:
        blocks = receiver.stream("/observer.Observer/GetFlows", request, 10)
        assert len(GetFlowsResponseBatch.FromString(next(blocks)).responses) == 1
        receiver._process.kill()  # type: ignore[union-attr]
        with pytest.raises(ReceiverError, match="ended unexpectedly"):
            next(blocks)


def test_a_quiet_stream_still_hands_over_its_responses_promptly(start_relay) -> None:
    _relay, address = start_relay([flow_at(datetime(2026, 11, 2, 9, 0, tzinfo=UTC), 40000)])
    request = observer_pb2.GetFlowsRequest(follow=True).SerializeToString()
    with RelayReceiver(ChannelSettings(address), own_process=False) as receiver:
        started = time.monotonic()
        blocks = receiver.stream("/observer.Observer/GetFlows", request, 10)
        assert len(GetFlowsResponseBatch.FromString(next(blocks)).responses) == 1
        assert time.monotonic() - started < 2  # the stream goes on (follow), its first block is out
        blocks.close()


@needs_fixtures
@pytest.mark.parametrize(
    ("processes", "signum"),
    [(1, signal.SIGINT), (2, signal.SIGINT), (2, signal.SIGTERM)],
    ids=["receiver-thread-sigint", "receiver-process-sigint", "receiver-process-sigterm"],
)
def test_a_signal_during_follow_ends_the_window_with_its_results(start_relay, processes, signum) -> None:
    relay, address = start_relay(live=[flow_at(datetime(2026, 11, 2, 9, 0, tzinfo=UTC), 40000)])

    def signal_once_all_is_sent() -> None:
        if relay.idle.wait(10):
            time.sleep(0.3)  # the receiver hands over what it holds at least every 0.05 s
            os.kill(os.getpid(), signum)

    threading.Thread(target=signal_once_all_is_sent, daemon=True).start()
    started = time.monotonic()
    options = RelayOptions(server=address, follow=True, duration=20, processes=processes)
    summary = RelayCollector(options, ingest := HubbleIngest()).run()
    assert time.monotonic() - started < 8 and summary.stopped_by == "signal"
    assert ingest.finish().stats.flows == summary.flows == len(fixture_lines()) + 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- TLS ----------------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_tls_and_mtls_with_certificates_made_for_the_test(start_relay, tmp_path: Path, mtls: bool) -> None:
    certificates = make_certificates(tmp_path)
    _relay, address = start_relay(certificates=certificates, mtls=mtls)
    client = {
        "tls_client_cert_file": str(certificates.client_cert),
        "tls_client_key_file": str(certificates.client_key),
    }
    options = RelayOptions(
        server=address, tls=True, tls_ca_cert_files=(str(certificates.ca),),
        tls_server_name=certificates.server_name, connect_timeout=3.0, **(client if mtls else {}),
    )  # fmt: skip
    assert collect_from_relay(options).stats.flows == len(fixture_lines())
    if mtls:  # the same relay refuses a client without a certificate, and the error says what to check
        without_certificate = dataclasses.replace(options, tls_client_cert_file="", tls_client_key_file="")
        with pytest.raises(RelayConnectionError, match="--tls-client-cert-file"):
            collect_from_relay(without_certificate)


# -- options ------------------------------------------------------------------------------


@needs_fixtures
def test_namespace_and_verdict_filters_are_sent_as_whitelist_flow_filters(start_relay) -> None:
    relay, address = start_relay()
    observations = collect_from_relay(
        RelayOptions(server=address, namespaces=("kube-system",), verdicts=("forwarded",))
    )
    whitelist = relay.requests[0].whitelist
    assert [list(f.source_pod) for f in whitelist] == [["kube-system/"], []]
    assert [list(f.destination_pod) for f in whitelist] == [[], ["kube-system/"]]
    assert all(list(f.verdict) == [flow_pb2.FORWARDED] for f in whitelist)
    assert 0 < observations.stats.flows < len(fixture_lines())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("10m", timedelta(minutes=10)), ("1h30m", timedelta(minutes=90)),
     ("1.5h", timedelta(minutes=90)), ("2d", timedelta(days=2)), ("250ms", timedelta(milliseconds=250))],
)  # fmt: skip
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_times_are_durations_ago_or_rfc3339() -> None:
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert parse_time("1h", now) == datetime(2026, 11, 2, 11, 0, tzinfo=UTC)
    assert parse_time("2026-11-02T09:00:00Z") == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert parse_time("2026-11-02T11:00:00+02:00") == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [("1x", "invalid time"), ("yesterday", "invalid time"), ("2026-11-02T09:00:00", "no time zone")],
)
def test_bad_times_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(CollectorError, match=message):
        parse_time(text)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"last": 5, "since": datetime(2026, 1, 1, tzinfo=UTC)}, "--last cannot be combined"),
     ({"duration": 60.0}, "--duration needs --follow"),
     ({"verdicts": ("ALLOWED",)}, "unknown verdict ALLOWED"),
     ({"tls_client_cert_file": "client.crt"}, "needs both"),
     ({"tls_allow_insecure": True}, "--tls-ca-cert-files"),
     ({"processes": 3}, "processes must be 1 or 2")],
)  # fmt: skip
def test_contradictory_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(CollectorError, match=message):
        RelayOptions(**options)


# -- the command line ---------------------------------------------------------------------


@needs_fixtures
def test_policies_made_live_equal_those_made_from_the_same_fixtures_as_files_byte_for_byte(start_relay, tmp_path):
    from click.testing import CliRunner

    from recommender.cli import main

    _relay, address = start_relay()
    runner = CliRunner()
    live = runner.invoke(main, ["recommend", "--server", address, "--timeout", "3", "-o", str(tmp_path / "live"), "-q"])
    assert live.exit_code == 0, live.output
    files = runner.invoke(main, ["recommend", *FIXTURE_FILES, "-o", str(tmp_path / "files"), "-q"])
    assert files.exit_code == 0, files.output
    written = sorted(path.name for path in (tmp_path / "files").iterdir())
    assert written == sorted(path.name for path in (tmp_path / "live").iterdir()) and "kustomization.yaml" in written
    for name in written:
        assert (tmp_path / "live" / name).read_bytes() == (tmp_path / "files" / name).read_bytes(), name


@needs_fixtures
def test_collect_saves_observations_that_recommend_reads_back(start_relay, tmp_path):
    from click.testing import CliRunner

    from recommender.cli import main

    _relay, address = start_relay()
    saved = tmp_path / "window.parquet"
    outcome = CliRunner().invoke(main, ["collect", "--server", address, "--timeout", "3", "-o", str(saved)])
    assert outcome.exit_code == 0, outcome.output
    assert f"wrote {saved}" in outcome.stderr
    from_store = CliRunner().invoke(main, ["recommend", str(saved), "-o", "yaml", "-q"]).stdout
    from_files = CliRunner().invoke(main, ["recommend", *FIXTURE_FILES, "-o", "yaml", "-q"]).stdout
    assert from_store == from_files and "allow-productpage-v1" in from_store


def test_relay_flags_without_server_are_refused_when_reading_files(tmp_path):
    from click.testing import CliRunner

    from recommender.cli import main

    path = tmp_path / "empty.json"
    path.write_text("")
    outcome = CliRunner().invoke(main, ["recommend", str(path), "--follow"])
    assert outcome.exit_code == 2 and "--follow needs --server" in outcome.stderr
    outcome = CliRunner().invoke(main, ["recommend", "--server", "127.0.0.1:1", "--since", "yesterday"])
    assert outcome.exit_code == 2 and "invalid time 'yesterday'" in outcome.stderr
