"""Reading Hubble files: every accepted shape, and every kind of bad input."""

from __future__ import annotations

import copy
import gzip
import io
import json
import sys
from collections import Counter

import pytest

from collectors.errors import BadInputError, CollectorError, OnError
from collectors.hubble import read_hubble_files
from tests.conftest import fixture_flow, fixture_lines, write_lines

TCP = "basic-sample-400-tcp-flows.json"
SYNACK = 24  # productpage -> ratings, is_reply: true


def read(paths, **kwargs):
    return read_hubble_files([str(p) for p in paths], **kwargs)


def test_empty_file_gives_no_observations_and_no_error(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    result = read([empty])
    assert result.observations.empty and result.stats.lines == 0 and result.stats.flows == 0


def test_truncated_line_is_an_error_naming_file_and_line(tmp_path):
    line = fixture_lines(TCP)[SYNACK]
    path = write_lines(tmp_path / "cut.json", [line, line[: len(line) // 2]])
    with pytest.raises(BadInputError) as error:
        read([path])
    assert error.value.path == str(path) and error.value.line == 2
    assert "not valid JSON" in str(error.value) and str(error.value).startswith(f"{path}:2:")


def test_non_json_line_is_an_error_or_skipped_and_counted(tmp_path):
    line = fixture_lines(TCP)[SYNACK]
    path = write_lines(tmp_path / "mixed.json", [line, "Hubble is starting...", line])
    with pytest.raises(BadInputError, match=r"mixed.json:2: not valid JSON"):
        read([path])
    result = read([path], on_error=OnError.SKIP)
    assert result.stats.bad.count == 1 and result.stats.bad.examples[0].startswith(f"{path}:2:")
    assert int(result.observations["count"].sum()) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "unexpected value"),
        ('{"flow": {"l4": "tcp"}}', "unexpected value"),
        ('{"flow": {"time": "yesterday"}}', "unexpected value"),
        ('{"kind": "List", "items": []}', "not a Hubble flow or event"),
    ],
)
def test_wrong_shapes_name_the_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.json", ["", line])
    with pytest.raises(BadInputError, match=rf"bad.json:2: {message}"):
        read([path])


def test_unknown_fields_are_ignored(tmp_path):
    flow = fixture_flow(TCP, SYNACK)
    flow["flow"]["a_field_from_cilium_2030"] = {"nested": [1, 2]}
    flow["future_envelope_field"] = True
    plain = read([write_lines(tmp_path / "a.json", [fixture_flow(TCP, SYNACK)])]).observations
    extended = read([write_lines(tmp_path / "b.json", [flow])]).observations
    assert plain.equals(extended) and len(plain) == 1


def test_flow_without_l4_is_skipped_and_counted(tmp_path):
    flow = fixture_flow(TCP, SYNACK)
    del flow["flow"]["l4"]
    result = read([write_lines(tmp_path / "nol4.json", [flow])])
    assert result.observations.empty and result.stats.skipped == {"no l4 (transport layer)": 1}


def test_exporter_log_skips_and_counts_other_events(tmp_path):
    lines = [
        fixture_flow(TCP, SYNACK),
        {"lost_events": {"source": "HUBBLE_RING_BUFFER", "num_events_lost": "12"}, "node_name": "n1"},
        {"node_status": {"state_change": "NODE_CONNECTED", "node_names": ["n1"]}},
        {"agent_event": {"type": "ENDPOINT_CREATED"}},
        {"debug_event": {"type": "DBG_GENERIC"}},
    ]
    result = read([write_lines(tmp_path / "events.log", lines)])
    assert result.stats.lost_event_records == 1 and result.stats.events_lost == 12
    assert result.stats.ignored == {"node_status": 1, "agent_event": 1, "debug_event": 1}
    assert len(result.observations) == 1


def test_real_exporter_file_with_field_mask(tmp_path):
    from tests.conftest import fixture_path

    result = read([fixture_path("hubble", "exporter-fieldmask-events.log")])
    assert result.stats.flows == 2
    icmp, tcp = result.observations.sort_values("protocol").itertuples()
    assert (tcp.client_workload, tcp.server_workload, tcp.port, tcp.verdict) == ("xwing", "deathstar", 80, "DROPPED")
    assert tcp.drop_reasons == "POLICY_DENIED"
    # the ICMPv6 router solicitation from an empty endpoint, dropped as INVALID_SOURCE_IP
    assert (icmp.protocol, icmp.client_entity, icmp.client_ip) == ("ICMPv6", "unknown", "fe80::64d8:8aff:fe72:fc14")
    assert icmp.drop_reasons == "INVALID_SOURCE_IP"


def test_legacy_bare_flow_lines_are_accepted(tmp_path):
    bare = fixture_flow(TCP, SYNACK)["flow"]
    wrapped = read([write_lines(tmp_path / "w.json", [fixture_flow(TCP, SYNACK)])]).observations
    legacy = read([write_lines(tmp_path / "bare.json", [bare])]).observations
    assert legacy.equals(wrapped)


def test_lower_camel_case_field_names_are_accepted(tmp_path):
    def camel(value):
        if isinstance(value, dict):
            return {_camel(k): camel(v) for k, v in value.items()}
        if isinstance(value, list):
            return [camel(v) for v in value]
        return value

    def _camel(key: str) -> str:
        head, *rest = key.split("_")
        return head + "".join(part[:1].upper() + part[1:] for part in rest)

    flows = [fixture_flow(TCP, i) for i in range(22, 25)]
    proto = read([write_lines(tmp_path / "p.json", flows)]).observations
    camelled = read([write_lines(tmp_path / "c.json", [camel(f) for f in flows])]).observations
    assert camelled.equals(proto) and len(proto) == 2  # FORWARDED and REDIRECTED


def test_ipv6_endpoints_become_exact_128_blocks(tmp_path):
    flow = fixture_flow("basic-sample-10-flows.json", 7)  # event-exporter -> world:443
    flow["flow"]["IP"] = {"source": "fd00:10:244::5", "destination": "2001:db8::1", "ipVersion": "IPv6"}
    flow["flow"]["l4"]["TCP"]["flags"] = {"SYN": True}
    result = read([write_lines(tmp_path / "v6.json", [flow])])
    (row,) = result.observations.itertuples()
    assert row.server_entity == "world" and row.server_ip == "2001:db8::1"
    from recommender.synthesis import SynthesisOptions, synthesize

    proposal = synthesize(result.observations, result.pods, result.dns_names, SynthesisOptions(exclude_namespaces=()))
    egress = next(p for p in proposal.policies if p.workload).manifest["spec"]["egress"]
    assert egress[0]["to"] == [{"ipBlock": {"cidr": "2001:db8::1/128"}}]


def test_gzip_files_glob_and_repeated_paths(tmp_path):
    lines = fixture_lines(TCP)[:50]
    with gzip.open(tmp_path / "a.json.gz", "wt") as out:
        out.write("\n".join(lines[:25]) + "\n")
    (tmp_path / "b.json").write_text("\n".join(lines[25:]) + "\n")
    plain = read([write_lines(tmp_path / "all.txt", lines)]).observations
    globbed = read_hubble_files([str(tmp_path / "*.json*"), str(tmp_path / "b.json")])
    assert globbed.stats.sources == [str(tmp_path / "a.json.gz"), str(tmp_path / "b.json")]
    assert globbed.observations.equals(plain)


def test_stdin(monkeypatch):
    lines = fixture_lines(TCP)[20:30]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(lines) + "\n").encode())))
    result = read_hubble_files(["-"])
    assert result.stats.sources == ["<stdin>"] and result.stats.lines == 10


def test_missing_file_and_empty_glob_are_collector_errors(tmp_path):
    with pytest.raises(CollectorError, match="no such file"):
        read_hubble_files([str(tmp_path / "nope.json")])
    with pytest.raises(CollectorError, match="no file matches"):
        read_hubble_files([str(tmp_path / "*.json")])
    with pytest.raises(CollectorError, match="is a directory"):
        read_hubble_files([str(tmp_path)])


def test_duplicate_events_are_dropped_by_uuid(tmp_path):
    flow = fixture_flow(TCP, SYNACK)
    flow["flow"]["uuid"] = "6b1ea0a4-0d7e-4f3d-9b5a-2f1c2e2f2a10"
    other = copy.deepcopy(flow)
    other["flow"]["uuid"] = "0a4f2c44-5b3e-4b9e-9d8e-1c2b3a4d5e6f"
    result = read([write_lines(tmp_path / "dup.json", [flow, flow, other])])
    assert result.stats.duplicates == 1 and int(result.observations["count"].sum()) == 2


def test_bad_gzip_is_a_collector_error(tmp_path):
    path = tmp_path / "broken.json.gz"
    path.write_bytes(gzip.compress(json.dumps(fixture_flow(TCP, SYNACK)).encode())[:40])
    with pytest.raises(CollectorError, match=r"broken\.json\.gz"):
        read([path])


def test_saved_observations_round_trip_and_merge_with_flow_files(tmp_path, bookinfo_files):
    import pandas.testing

    from collectors import read_observations
    from collectors.parquet import load_observation_file, save_observations

    tcp, udp = bookinfo_files
    saved = tmp_path / "tcp.parquet"
    save_observations(read_hubble_files([tcp]), str(saved))
    loaded = load_observation_file(str(saved))
    assert loaded.stats.flows == 400 and len(loaded.pods) > 0
    together = read_hubble_files([tcp, udp])
    mixed = read_observations([str(saved), udp])
    pandas.testing.assert_frame_equal(mixed.observations, together.observations)
    assert mixed.stats.flows == together.stats.flows == 800


def test_read_statistics_survive_saving_whole_and_as_older_versions_stored_them(tmp_path):
    from collectors.records import stats_from_dict

    lines = [json.dumps(fixture_flow(TCP, SYNACK)), "{not json", json.dumps(fixture_flow(TCP, SYNACK))]
    path = tmp_path / "flows.json"
    path.write_text("\n".join(lines) + "\n")
    stats = read_hubble_files([str(path)], on_error=OnError.SKIP).stats
    assert stats.bad.count == 1 and stats.flows == 2 and stats.orientation
    again = stats_from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again == stats and isinstance(again.orientation, Counter)
    flat = {key: value for key, value in stats.to_dict().items() if key != "bad"}
    older = stats_from_dict({**flat, "bad_records": 1, "bad_record_examples": stats.bad.examples})
    assert older.bad.count == 1 and older.bad.examples == stats.bad.examples


def test_foreign_or_future_parquet_files_are_refused_clearly(tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from collectors.parquet import METADATA_KEY, load_observation_file

    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(foreign)
    with pytest.raises(CollectorError, match="not one written by netpol-recommender"):
        load_observation_file(str(foreign))
    future = tmp_path / "future.parquet"
    table = pa.table({"a": [1]}).replace_schema_metadata({METADATA_KEY: json.dumps({"format": 99})})
    pq.write_table(table, future)
    with pytest.raises(CollectorError, match="format 99 is not supported"):
        load_observation_file(str(future))


def test_a_flow_without_its_own_time_takes_the_envelopes_and_a_bad_envelope_time_is_named(tmp_path):
    own = fixture_flow(TCP, SYNACK)
    own["time"] = "2030-01-01T00:00:00Z"  # the envelope's, ignored: the flow has its own
    borrowed = copy.deepcopy(own)
    del borrowed["flow"]["time"]
    borrowed["time"] = "2021-11-10T10:41:00.5Z"
    seen = read([write_lines(tmp_path / "times.json", [own, borrowed])]).observations
    assert [str(seen.first_seen[0]), str(seen.last_seen[0])] == [
        "2021-11-10 10:40:56.886328+00:00",
        "2021-11-10 10:41:00.500000+00:00",
    ]
    borrowed["time"] = "yesterday"
    with pytest.raises(BadInputError) as error:
        read([write_lines(tmp_path / "bad-time.json", [own, borrowed])])
    assert error.value.line == 2 and "datetime" in error.value.message
