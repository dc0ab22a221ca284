"""Live collection from Hubble Relay, against a real gRPC server on loopback (tests/hubble_server.py)
serving the real fixtures from the four nodes they name, in one stream or in parallel streams split
by node. Every stream is bounded (a window, a duration or a client timeout), so a failing test fails
instead of hanging."""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec
import pandas.testing as pdt
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet
from grpc_tools import protoc
from hypothesis import given
from hypothesis import strategies as st

from collectors.errors import CollectorError
from collectors.hubble import read_hubble_files
from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_api.observer import observer_pb2
from collectors.hubble_api.received import received_pb2
from collectors.hubble_api.regenerate import API_DIR, PROTOS
from collectors.hubble_schema import PROTO_NAMES
from collectors.relay import (
    RelayConnectionError,
    RelayOptions,
    collect_from_relay,
    observe_relay,
    parse_duration,
    parse_time,
    plan_streams,
)
from collectors.relay_convert import endpoint_from_wire, flow_from_message
from collectors.relay_stream import ALL_NODES, NodeShare
from tests.hubble_server import FIXTURES, FakeRelay, make_certificates, parse_lines, serve

FIXTURE_FILES = sorted(str(path) for path in FIXTURES.glob("*")) if FIXTURES.is_dir() else []
needs_fixtures = pytest.mark.skipif(not FIXTURE_FILES, reason=f"fixtures not found at {FIXTURES}")
FAST_RECONNECT = {"reconnect_backoff": 0.05, "max_reconnect_backoff": 0.2, "connect_timeout": 3.0}
STREAMS = pytest.mark.parametrize("streams", [1, 2], ids=["one-stream", "two-streams"])
"""One stream in this process, or two split by node, each in a process of its own."""


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


def flow_at(stamp: datetime, source_port: int, node: str = "node-a") -> Any:
    """A minimal forwarded TCP flow between two pods, without uuid, observed on `node`."""
    response = observer_pb2.GetFlowsResponse(node_name=node)
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
    flow.node_name = node
    return response


def lost_events(node: str, number: int, minute: int) -> Any:
    response = observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(num_events_lost=number, source=flow_pb2.HUBBLE_RING_BUFFER), node_name=node
    )
    response.time.FromDatetime(datetime(2021, 11, 10, 10, minute, tzinfo=UTC))
    return response


# -- the proto and the converter ----------------------------------------------------------


def as_received(response: Any) -> Any:
    """A GetFlowsResponse as the client decodes it off the wire: a `received.GetFlowsResponse`."""
    return received_pb2.GetFlowsResponse.FromString(response.SerializeToString())


@needs_fixtures
def test_fixture_lines_parse_strictly_into_the_project_proto() -> None:
    assert len(parse_lines(fixture_lines())) == len(fixture_lines())


def test_the_committed_protobuf_modules_are_generated_from_the_protos_as_they_are(tmp_path: Path) -> None:
    descriptors = tmp_path / "protos.pb"
    well_known = str(files("grpc_tools") / "_proto")
    arguments = [f"-I{API_DIR}", f"-I{well_known}", f"--descriptor_set_out={descriptors}", *PROTOS]
    assert protoc.main(["grpc_tools.protoc", *arguments]) == 0
    compiled = {proto.name: proto for proto in FileDescriptorSet.FromString(descriptors.read_bytes()).file}
    for proto in compiled.values():  # protoc fills in the JSON names, which generated modules leave out
        for message in proto.message_type:
            for field in message.field:
                field.ClearField("json_name")
    for name in PROTOS:
        module = importlib.import_module(f"collectors.hubble_api.{name.removesuffix('.proto').replace('/', '.')}_pb2")
        assert FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb) == compiled[name], name


def test_the_received_view_has_upstreams_field_numbers_and_every_field_the_ingest_reads() -> None:
    pairs = [
        (received_pb2.GetFlowsResponse, observer_pb2.GetFlowsResponse),
        (received_pb2.Flow, flow_pb2.Flow),
    ]
    for view, upstream in pairs:
        for field in view.DESCRIPTOR.fields:
            original = upstream.DESCRIPTOR.fields_by_name[field.name]
            assert (field.number, field.is_repeated) == (original.number, original.is_repeated), field.full_name
            if field.name in ("source", "destination"):  # an encoded Endpoint: length-delimited as bytes
                assert (field.type, original.message_type.name) == (field.TYPE_BYTES, "Endpoint")
            elif field.name != "flow":
                assert field.type == original.type, field.full_name
                assert getattr(field.message_type, "full_name", None) == getattr(
                    original.message_type, "full_name", None
                ), field.full_name
    assert set(received_pb2.Flow.DESCRIPTOR.fields_by_name) == set(PROTO_NAMES.structs["Flow"].__struct_fields__)


@needs_fixtures
def test_converted_flows_equal_the_json_decoder_output_for_every_fixture_flow() -> None:
    lazy = PROTO_NAMES  # what the ingest decodes files with: endpoints left as raw JSON
    for line, message in zip(fixture_lines(), parse_lines(fixture_lines()), strict=True):
        converted = flow_from_message(as_received(message).flow)
        decoded = lazy.line.decode(line).flow
        ends = ("source", "destination")
        assert [endpoint_from_wire(getattr(converted, end)) for end in ends] == [
            lazy.endpoint.decode(getattr(decoded, end)) for end in ends
        ], line
        assert msgspec.to_builtins(msgspec.structs.replace(converted, source=b"", destination=b"")) == (
            msgspec.to_builtins(msgspec.structs.replace(decoded, source=b"", destination=b""))
        ), line


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(1_700_000_000, 123_456_789), (1_700_000_000, 999_999_600), (1_700_000_000, 0), (100, 5), (2**28 - 1, 16)],
)
def test_timestamps_convert_to_the_microsecond_the_json_decoder_gives(seconds: int, nanos: int) -> None:
    response = flow_at(datetime(2026, 11, 2, tzinfo=UTC), 40000)
    response.flow.time.seconds, response.flow.time.nanos = seconds, nanos
    expected = msgspec.json.decode(f'"{response.flow.time.ToJsonString()}"', type=datetime)  # RFC 3339, as Hubble
    assert flow_from_message(as_received(response).flow).time == expected


def test_absent_and_empty_messages_convert_as_the_json_decoder_reads_them() -> None:
    response = flow_at(datetime(2026, 11, 2, tzinfo=UTC), 40000)
    response.flow.ClearField("event_type")
    response.flow.ClearField("is_reply")
    response.flow.l4.TCP.ClearField("flags")
    response.flow.l7.SetInParent()  # present, empty: `"l7":{}` in JSON
    converted = flow_from_message(as_received(response).flow)
    assert (converted.event_type, converted.is_reply, converted.l4.TCP.flags) == (None, None, None)
    assert converted.l7 is not None and converted.l7.type == 0 and converted.l7.dns is None


# -- splitting the stream by node ---------------------------------------------------------


def node(name: str, seen_flows: int, uptime_ns: int = 10**12) -> Any:
    return observer_pb2.Node(name=name, seen_flows=seen_flows, uptime_ns=uptime_ns)


def test_streams_are_balanced_by_the_nodes_flow_rates_and_the_last_takes_every_other_node() -> None:
    nodes = [node("a", 900), node("b", 500), node("c", 400), node("d", 100)]
    assert plan_streams(nodes, 2) == [NodeShare(nodes=("a", "d")), NodeShare(others=("a", "d"))]
    assert plan_streams(nodes, 1) == [ALL_NODES] == plan_streams([], 4)
    rates = [node("busy", 100, uptime_ns=10**9), node("old", 1000, uptime_ns=10**12), node("new", 1)]
    assert plan_streams(rates, 3)[0] == NodeShare(nodes=("busy",))  # 100 flows/s beats 1 flow/s
    assert len(plan_streams(nodes, 9)) == 4  # at most one stream per node


@given(
    names=st.lists(st.text("abcdefgh-/", min_size=1, max_size=6), min_size=1, max_size=12, unique=True),
    seen=st.lists(st.integers(0, 10**6), min_size=12, max_size=12),
    streams=st.integers(1, 16),
)
def test_every_node_and_every_node_to_come_is_owned_by_exactly_one_stream(names, seen, streams) -> None:
    shares = plan_streams([node(name, count) for name, count in zip(names, seen, strict=False)], streams)
    assert len(shares) == min(streams, len(names))
    for name in [*names, "a-node-that-joins-later", ""]:
        assert sum(share.owns(name) for share in shares) == 1, name


@needs_fixtures
def test_each_stream_asks_for_its_nodes_and_the_last_for_every_other_node(start_relay) -> None:
    relay, address = start_relay()
    observe_relay(RelayOptions(server=address, streams=3, namespaces=("kube-system",)))
    assert len(relay.requests) == 3 and all(len(r.whitelist) == 2 for r in relay.requests)  # from OR to the namespace
    named = [request for request in relay.requests if not request.blacklist]
    [rest] = [request for request in relay.requests if request.blacklist]
    own = [list(request.whitelist[0].node_name) for request in named]
    assert len(own) == 2 and all(
        own[i] and list(f.node_name) == own[i] for i, r in enumerate(named) for f in r.whitelist
    )
    assert not any(f.node_name for f in rest.whitelist)
    assert sorted(own[0] + own[1]) == list(rest.blacklist[0].node_name)
    assert len(relay.nodes or ()) == 4 > len(own[0] + own[1])


# -- windows ------------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_observations_from_the_relay_equal_those_from_the_same_fixtures_as_files(start_relay, streams) -> None:
    _relay, address = start_relay()
    live, summary = observe_relay(RelayOptions(server=address, streams=streams))
    assert_same_observations(live, read_hubble_files(FIXTURE_FILES))
    assert live.stats.sources == [f"hubble-relay:{address}"]
    assert len(summary.streams) == streams and all(stream.flows for stream in summary.streams)
    assert summary.flows == len(fixture_lines()) and summary.stopped_by == "end of stream"


@needs_fixtures
def test_a_relay_that_cannot_list_its_nodes_is_read_in_one_stream(start_relay) -> None:
    _relay, address = start_relay(list_nodes=False)
    live, summary = observe_relay(RelayOptions(server=address, streams=2))
    assert [stream.share for stream in summary.streams] == [ALL_NODES]
    assert_same_observations(live, read_hubble_files(FIXTURE_FILES))


@needs_fixtures
def test_last_n_is_a_bounded_window_of_the_latest_flows_in_one_stream(start_relay) -> None:
    relay, address = start_relay()
    observed, summary = observe_relay(RelayOptions(server=address, last=25, streams=2))
    assert [(request.number, request.follow) for request in relay.requests] == [(25, False)]
    assert (summary.flows, summary.stopped_by, observed.stats.flows) == (25, "end of stream", 25)


@needs_fixtures
@STREAMS
def test_since_until_is_a_bounded_window(start_relay, streams) -> None:
    _relay, address = start_relay()
    since = datetime(2021, 11, 10, tzinfo=UTC)
    until = datetime(2021, 11, 11, tzinfo=UTC)
    expected = sum(1 for m in parse_lines(fixture_lines()) if since <= m.flow.time.ToDatetime(UTC) <= until)
    _observed, summary = observe_relay(RelayOptions(server=address, since=since, until=until, streams=streams))
    assert 0 < summary.flows == expected < len(fixture_lines())


@needs_fixtures
@STREAMS
def test_follow_streams_new_flows_until_the_duration_ends(start_relay, streams) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    live = [flow_at(stamp, port, node=f"node-{port % 2}") for port in range(40000, 40020)]
    relay, address = start_relay([], live=live)
    started = time.monotonic()
    # The duration counts from the start of the run, worker start-up included: long enough that
    # stream processes started on a loaded machine still connect within it.
    _observed, summary = observe_relay(RelayOptions(server=address, follow=True, duration=8, streams=streams))
    assert 7.9 < time.monotonic() - started < 20
    assert all(request.follow and request.number == 0 for request in relay.requests)
    assert (summary.stopped_by, summary.flows, len(summary.streams)) == ("duration", 20, streams)


# -- robustness ---------------------------------------------------------------------------


@needs_fixtures
@STREAMS
def test_a_stream_broken_midway_is_resumed_without_losing_or_double_counting(start_relay, streams) -> None:
    relay, address = start_relay(drop_after=5, drops=2)  # every stream breaks twice
    options = RelayOptions(server=address, streams=streams, **FAST_RECONNECT)
    observed, summary = observe_relay(options)
    assert [stream.reconnects for stream in summary.streams] == [2] * streams
    assert all(stream.overlap_skipped > 0 for stream in summary.streams)
    assert sum(request.HasField("since") for request in relay.requests) == 2 * streams
    assert_same_observations(observed, read_hubble_files(FIXTURE_FILES))


def test_flows_sharing_the_resume_time_are_told_apart_by_content(start_relay) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    _relay, address = start_relay([flow_at(stamp, port) for port in range(41000, 41010)], drop_after=4)
    observed, summary = observe_relay(RelayOptions(server=address, **FAST_RECONNECT))
    assert (summary.flows, summary.overlap_skipped, observed.stats.flows) == (10, 4, 10)


@needs_fixtures
@STREAMS
def test_a_stream_that_cannot_be_resumed_is_an_error_carrying_the_flows_so_far(start_relay, streams) -> None:
    _relay, address = start_relay(drop_after=1, drops=100)  # each resumed stream breaks inside the overlap
    options = RelayOptions(server=address, streams=streams, **{**FAST_RECONNECT, "max_reconnects": 2})
    with pytest.raises(RelayConnectionError, match="could not resume it after 2 attempts") as caught:
        collect_from_relay(options)
    assert caught.value.partial is not None and 1 <= caught.value.partial.stats.flows <= streams  # one a stream


@needs_fixtures
def test_a_resumed_last_n_window_stops_at_n_flows(start_relay) -> None:
    relay, address = start_relay(drop_after=10)
    observed, summary = observe_relay(RelayOptions(server=address, last=25, **FAST_RECONNECT))
    assert relay.requests[1].HasField("since")  # the resumed stream offers more than the 15 flows still due
    assert (summary.flows, summary.stopped_by, observed.stats.flows) == (25, "limit", 25)


@needs_fixtures
@STREAMS
def test_lost_events_are_counted_once_by_the_stream_of_their_node(start_relay, streams) -> None:
    """Hubble sends lost events on every stream and again on a resumed one: each is counted once."""
    busiest, other = "kind-control-plane", "kind-kind/kind-worker"  # each in a stream of its own, with two
    lost = [lost_events(busiest, 7, 40), lost_events(busiest, 7, 41), lost_events(other, 5, 42)]
    _relay, address = start_relay([*parse_lines(fixture_lines()), *lost], drop_after=200)
    observed, summary = observe_relay(RelayOptions(server=address, streams=streams, **FAST_RECONNECT))
    assert (observed.stats.lost_event_records, observed.stats.events_lost) == (3, 19)
    assert observed.stats.flows == len(fixture_lines()) and summary.reconnects >= 1
    counted = [(stream.lost_event_records, stream.events_lost) for stream in summary.streams]
    assert counted == ([(3, 19)] if streams == 1 else [(2, 14), (1, 5)])
    assert [stream.share.owns(busiest) for stream in summary.streams] == [True, False][:streams]


def test_an_unreachable_relay_gives_a_clear_error_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(RelayConnectionError) as caught:
        collect_from_relay(RelayOptions(server="127.0.0.1:1", connect_timeout=2.0))
    assert time.monotonic() - started < 4
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "cilium hubble port-forward" in message


def test_an_unreadable_certificate_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "relay-ca.crt"
    options = RelayOptions(server="127.0.0.1:1", tls_ca_cert_files=(str(missing),))
    message = f"cannot read the CA certificate file {missing}: No such file or directory"
    with pytest.raises(CollectorError, match=f"^{re.escape(message)}$"):
        collect_from_relay(options)


def test_a_stream_process_that_dies_is_an_error_not_a_hang(start_relay) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    relay, address = start_relay([], live=[flow_at(stamp, 40000, "node-a"), flow_at(stamp, 40001, "node-b")])

    def kill_a_stream_once_both_have_sent() -> None:
        if relay.wait_idle(streams=2, timeout=20):
            os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    threading.Thread(target=kill_a_stream_once_both_have_sent, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(CollectorError, match=r"ended unexpectedly \(exit code -9\)"):
        collect_from_relay(RelayOptions(server=address, follow=True, duration=30, streams=2))
    assert time.monotonic() - started < 20


@needs_fixtures
@pytest.mark.parametrize(
    ("streams", "signum"),
    [(1, signal.SIGINT), (1, signal.SIGTERM), (2, signal.SIGINT)],
    ids=["one-stream-sigint", "one-stream-sigterm", "two-streams-sigint"],
)
def test_a_signal_during_follow_ends_the_window_with_its_results(start_relay, streams, signum) -> None:
    stamp = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    live = [flow_at(stamp, 40000, "node-a"), flow_at(stamp + timedelta(seconds=1), 40001, "node-b")]
    relay, address = start_relay(live=live)

    def signal_once_all_is_sent() -> None:
        if relay.wait_idle(streams=streams, timeout=20):
            time.sleep(0.5)  # let the last flows reach the ingest
            os.kill(os.getpid(), signum)

    threading.Thread(target=signal_once_all_is_sent, daemon=True).start()
    started = time.monotonic()
    options = RelayOptions(server=address, follow=True, duration=30, streams=streams)
    observed, summary = observe_relay(options)
    assert time.monotonic() - started < 20 and summary.stopped_by == "signal"
    assert observed.stats.flows == summary.flows == len(fixture_lines()) + 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- TLS ----------------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize(("mtls", "streams"), [(False, 1), (True, 2)], ids=["tls", "mtls-two-streams"])
def test_tls_and_mtls_with_certificates_made_for_the_test(start_relay, tmp_path: Path, mtls: bool, streams) -> None:
    certificates = make_certificates(tmp_path)
    _relay, address = start_relay(certificates=certificates, mtls=mtls)
    client = {
        "tls_client_cert_file": str(certificates.client_cert),
        "tls_client_key_file": str(certificates.client_key),
    }
    options = RelayOptions(
        server=address, tls=True, tls_ca_cert_files=(str(certificates.ca),), streams=streams,
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
        RelayOptions(server=address, namespaces=("kube-system",), verdicts=("forwarded",), streams=1)
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
     ({"streams": 0}, "--streams must be at least 1")],
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
    live = runner.invoke(
        main, ["recommend", "--server", address, "--streams", "2", "--timeout", "3", "-o", str(tmp_path / "live"), "-q"]
    )
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
    outcome = CliRunner().invoke(main, ["recommend", str(path), "--streams", "2"])
    assert outcome.exit_code == 2 and "--streams needs --server" in outcome.stderr
    outcome = CliRunner().invoke(main, ["recommend", "--server", "127.0.0.1:1", "--since", "yesterday"])
    assert outcome.exit_code == 2 and "invalid time 'yesterday'" in outcome.stderr
