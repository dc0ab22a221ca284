"""collectors.conntrack on real dumps (shared fixtures), inline samples and generated entries."""

from __future__ import annotations

import gzip
import io
import ipaddress
import itertools
import re
import tempfile
import zlib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors import conntrack
from collectors.conntrack import (
    Connection,
    ConnectionScanner,
    ConntrackEntry,
    ConntrackFormat,
    ConntrackStats,
    ConntrackTuple,
    detect_format,
    identity_of,
    is_conntrack,
    parse_conntrack,
    parse_conntrack_lines,
)
from collectors.errors import BadInputError, BadRecords, CollectorError, OnError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "conntrack"

# Every file under fixtures/conntrack/: entries and detected format, or the line that shows it
# is not a conntrack dump at all.
DUMPS: dict[str, tuple[int, ConntrackFormat | None]] = {
    "netns/conntrack-L.txt": (9, ConntrackFormat.LIST),
    "netns/conntrack-L-dnat.txt": (4, ConntrackFormat.LIST),
    "netns/conntrack-L-established.txt": (1, ConntrackFormat.LIST),
    "netns/conntrack-L-extended.txt": (9, ConntrackFormat.PROC),
    "netns/conntrack-L-extended-id.txt": (9, ConntrackFormat.PROC),
    "netns/conntrack-L-ktimestamp.txt": (9, ConntrackFormat.LIST),
    "netns/conntrack-L-xml.txt": (9, ConntrackFormat.XML),
    "netns/conntrack-events.txt": (41, ConntrackFormat.EVENTS),
    "netns/proc-nf_conntrack.txt": (9, ConntrackFormat.PROC),
    "netns/pod-a-conntrack-L.txt": (0, None),
    "public/k8s-issue-126130_conntrack_udp-clusterip-unreplied-dnat.txt": (3, ConntrackFormat.LIST),
    "public/k8s-issue-129617_conntrack-L-p-udp-dport-53_counters-delta-time.txt": (
        3,
        ConntrackFormat.LIST,
    ),
    "public/k8s-issue-38802_conntrack-L_with-snat.txt": (7, ConntrackFormat.LIST),
    "public/k8s-issue-91216_conntrack-L_tcp-clusterip-dns-dnat.txt": (5, ConntrackFormat.LIST),
    "public/mozilla-mig_proc-net-nf_conntrack.txt": (2, ConntrackFormat.PROC),
    "public/tsuru-prometheus-conntrack_conntrack-L-o-xml.xml": (18, ConntrackFormat.XML),
    "public/weaveworks-scope_conntrack-E-p-tcp-o-id.txt": (4, ConntrackFormat.EVENTS),
    "public/weaveworks-scope_conntrack-L-p-tcp-o-id.txt": (3, ConntrackFormat.LIST),
}
NOT_DUMPS = {
    "netns/conntrack-L-count.txt": 1,  # `conntrack -C`: a bare number
    "netns/rules.txt": 3,  # after two '#' comment lines, which read as noise
    "netns/service-backends.txt": 1,
    "netns/topology.txt": 2,
    "netns/traffic.log": 2,
}
# The netns dumps taken at one moment, one line per connection, in the same order.
SNAPSHOTS = [
    "netns/conntrack-L.txt",
    "netns/conntrack-L-extended.txt",
    "netns/conntrack-L-extended-id.txt",
    "netns/conntrack-L-ktimestamp.txt",
    "netns/conntrack-L-xml.txt",
    "netns/proc-nf_conntrack.txt",
]
CAPTURE_START = 1795764287.0  # Fri Nov 27 07:24:47 2026 UTC, the netns capture


def fixture(relative: str) -> Path:
    path = FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"shared fixture {path} is absent")
    return path


def read(relative: str, stats: ConntrackStats | None = None) -> list[ConntrackEntry]:
    """Every entry of a fixture; any malformed line fails the test."""
    path = str(fixture(relative))
    return list(parse_conntrack([path], bad_records=BadRecords(), stats=stats))


def parse_one(line: str) -> ConntrackEntry:
    (entry,) = parse_conntrack_lines([line])
    return entry


def ports(entry_tuple: ConntrackTuple) -> tuple[str, int | None, str, int | None]:
    return (entry_tuple.src, entry_tuple.sport, entry_tuple.dst, entry_tuple.dport)


# --- every fixture file --------------------------------------------------------------------


def test_every_fixture_file_is_covered_by_these_tests():
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures {FIXTURES} are absent")
    on_disk = {str(path.relative_to(FIXTURES)) for path in FIXTURES.rglob("*") if path.is_file()}
    assert on_disk == set(DUMPS) | set(NOT_DUMPS)


@pytest.mark.parametrize(("relative", "expected"), DUMPS.items(), ids=list(DUMPS))
def test_each_dump_parses_completely_with_its_detected_format(relative, expected):
    count, found_format = expected
    stats = ConntrackStats()
    entries = read(relative, stats)
    path = str(fixture(relative))
    assert len(entries) == count == stats.entries
    assert stats.formats.get(path) == found_format
    assert stats.ignored == 0
    assert all(entry.path == path for entry in entries)


@pytest.mark.parametrize(("relative", "line"), NOT_DUMPS.items(), ids=list(NOT_DUMPS))
def test_a_file_that_is_not_a_conntrack_dump_is_refused_naming_its_first_real_line(relative, line):
    path = str(fixture(relative))
    with pytest.raises(CollectorError, match=rf"^{re.escape(path)}:{line}: not a conntrack dump"):
        list(parse_conntrack([path], bad_records=BadRecords(on_error=OnError.SKIP)))


# --- netns: real kernel output with a known topology ---------------------------------------


def test_conntrack_L_line_with_dnat_counters_and_flags():
    entry = read("netns/conntrack-L.txt")[3]
    assert entry.line == 4
    assert (entry.l3, entry.protocol, entry.protonum) == ("ipv4", "tcp", 6)
    assert (entry.timeout, entry.state) == (431997, "ESTABLISHED")
    assert entry.original == ConntrackTuple("10.244.1.10", "10.96.0.10", 56064, 80)
    assert entry.reply == ConntrackTuple("10.244.2.20", "10.244.1.10", 8080, 56064)
    assert (entry.original_packets, entry.original_bytes) == (2, 112)
    assert (entry.reply_packets, entry.reply_bytes) == (1, 60)
    assert (entry.assured, entry.unreplied, entry.offload) == (True, False, False)
    assert (entry.mark, entry.delta_time, entry.use) == (0, 3, 1)
    assert (entry.zone, entry.id, entry.event, entry.timestamp) == (None, None, None, None)
    assert (entry.client, entry.server, entry.server_port) == ("10.244.1.10", "10.244.2.20", 8080)
    assert entry.dnat and not entry.snat


def test_icmp_tuple_id_is_not_taken_for_the_conntrack_id():
    plain = read("netns/conntrack-L.txt")[6]
    with_id = read("netns/conntrack-L-extended-id.txt")[6]
    for entry in (plain, with_id):
        assert entry.protocol == "icmp" and entry.state is None and entry.timeout == 28
        assert entry.original == ConntrackTuple("10.244.1.10", "10.244.2.20", icmp_type=8, icmp_code=0, icmp_id=14686)
        assert entry.reply == ConntrackTuple("10.244.2.20", "10.244.1.10", icmp_type=0, icmp_code=0, icmp_id=14686)
        assert not entry.dnat and not entry.snat
    assert plain.id is None
    assert with_id.id == 2623170463


def test_proc_lines_have_the_layer3_prefix_and_zone_0():
    entry = read("netns/proc-nf_conntrack.txt")[4]
    assert (entry.l3, entry.protocol, entry.timeout, entry.state) == ("ipv4", "udp", 27, None)
    assert entry.original == ConntrackTuple("10.244.1.10", "10.96.0.53", 41685, 53)
    assert entry.reply == ConntrackTuple("10.244.3.30", "10.244.1.10", 5353, 41685)
    assert (entry.mark, entry.zone, entry.delta_time, entry.use) == (0, 0, 2, 2)
    assert not entry.assured and not entry.unreplied


def test_ktimestamp_start_is_read_as_utc_and_becomes_the_timestamp():
    entries = read("netns/conntrack-L-ktimestamp.txt")
    assert [entry.start for entry in entries] == [CAPTURE_START] * 5 + [
        CAPTURE_START + 1,
        CAPTURE_START + 2,
        CAPTURE_START,
        CAPTURE_START,
    ]
    assert all(entry.stop is None and entry.timestamp == entry.start for entry in entries)
    assert entries[5].use == 1  # `use=` follows the bracketed date


def test_xml_flow_with_counters_id_and_deltatime():
    entry = read("netns/conntrack-L-xml.txt")[0]
    expected = ConntrackEntry(
        l3="ipv4",
        protocol="tcp",
        protonum=6,
        original=ConntrackTuple("10.244.1.10", "10.244.2.20", 39944, 8080),
        reply=ConntrackTuple("10.244.2.20", "10.244.1.10", 8080, 39944),
        state="TIME_WAIT",
        timeout=117,
        unreplied=False,
        assured=True,
        offload=False,
        original_packets=6,
        original_bytes=400,
        reply_packets=6,
        reply_bytes=1893,
        zone=None,
        zone_orig=None,
        zone_reply=None,
        mark=0,
        secmark=None,
        secctx=None,
        labels=(),
        helper=None,
        use=1,
        id=3195151317,
        event=None,
        timestamp=None,
        start=None,
        stop=None,
        delta_time=3,
        path=str(fixture("netns/conntrack-L-xml.txt")),
        line=3,
    )
    assert entry == expected


def test_xml_icmp_flow_has_no_type_code_or_id():
    entry = read("netns/conntrack-L-xml.txt")[6]
    assert (entry.protocol, entry.protonum, entry.line) == ("icmp", 1, 9)
    assert entry.original == ConntrackTuple("10.244.1.10", "10.244.2.20")
    assert (entry.original_packets, entry.reply_bytes, entry.id) == (1, 84, 2623170463)


def test_event_stream_types_timestamps_and_flags():
    entries = read("netns/conntrack-events.txt")
    events = [entry.event for entry in entries]
    assert (events.count("new"), events.count("update"), events.count("destroy")) == (12, 26, 3)
    assert sum(entry.unreplied for entry in entries) == 15
    assert all(entry.l3 == "ipv4" and entry.timestamp is not None for entry in entries)
    assert [entry.timestamp for entry in entries] == sorted(entry.timestamp for entry in entries)

    new, destroy = entries[0], entries[1]
    assert (new.event, new.timestamp, new.state, new.timeout) == (
        "new",
        1795764287.158895,
        "SYN_SENT",
        120,
    )
    assert new.unreplied and new.original_packets is None and new.mark is None
    assert (destroy.event, destroy.state, destroy.unreplied, destroy.delta_time) == (
        "destroy",
        "CLOSE",
        True,
        0,
    )
    assert (destroy.original_packets, destroy.original_bytes) == (1, 60)
    assert (destroy.reply_packets, destroy.reply_bytes) == (1, 40)
    established = entries[6]
    assert (established.event, established.state, established.timeout) == (
        "update",
        "ESTABLISHED",
        432000,
    )
    assert established.assured and not established.unreplied


def service_backends() -> list[tuple[str, str, int, tuple[str, int], tuple[str, int]]]:
    """service-backends.txt: (protocol, client, client port, service, backend)."""
    pattern = re.compile(r"(\w+) client=(.+):(\d+) service=(.+):(\d+) -> backend=(.+):(\d+)")
    rows = []
    for line in fixture("netns/service-backends.txt").read_text().splitlines():
        match = pattern.fullmatch(line)
        assert match, line
        protocol, client, sport, service, port, backend, target = match.groups()
        rows.append((protocol, client, int(sport), (service, int(port)), (backend, int(target))))
    return rows


@pytest.mark.parametrize(
    "relative",
    [*SNAPSHOTS, "netns/conntrack-events.txt", "netns/conntrack-L-dnat.txt"],
)
def test_every_service_connection_shows_dnat_to_its_backend(relative):
    entries = read(relative)
    for protocol, client, client_port, service, backend in service_backends():
        matching = [
            entry
            for entry in entries
            if (entry.protocol, entry.client, entry.original.sport) == (protocol, client, client_port)
        ]
        assert matching, f"{relative} lacks {protocol} {client}:{client_port}"
        for entry in matching:
            assert (entry.original.dst, entry.original.dport) == service
            assert (entry.server, entry.server_port) == backend
            assert entry.dnat and not entry.snat


def test_the_long_lived_service_connection_in_conntrack_L_established():
    (entry,) = read("netns/conntrack-L-established.txt")
    assert ports(entry.original) == ("10.244.1.10", 56064, "10.96.0.10", 80)
    assert (entry.server, entry.server_port, entry.state) == ("10.244.2.20", 8080, "ESTABLISHED")


def test_only_service_connections_are_dnat_in_the_netns_dumps():
    for relative in SNAPSHOTS:
        dnat = {entry.original.dst for entry in read(relative) if entry.dnat}
        assert dnat == {"10.96.0.10", "10.96.0.53"}, relative


def snapshot_view(entry: ConntrackEntry) -> tuple:
    """What every snapshot format prints alike (XML has no ICMP type/code/id)."""
    return (
        entry.l3,
        entry.protocol,
        ports(entry.original),
        ports(entry.reply),
        entry.state,
        entry.timeout,
        entry.assured,
        entry.unreplied,
        entry.original_packets,
        entry.original_bytes,
        entry.reply_packets,
        entry.reply_bytes,
        entry.mark,
    )


def test_the_snapshot_formats_agree_on_every_connection():
    views = {relative: [snapshot_view(entry) for entry in read(relative)] for relative in SNAPSHOTS}
    first = views[SNAPSHOTS[0]]
    assert len(first) == 9
    for relative, view in views.items():
        assert view == first, relative


def test_the_conntrack_ids_agree_between_text_and_xml():
    text_ids = [entry.id for entry in read("netns/conntrack-L-extended-id.txt")]
    xml_ids = [entry.id for entry in read("netns/conntrack-L-xml.txt")]
    assert text_ids == xml_ids
    assert len(set(text_ids)) == 9 and None not in text_ids


def test_every_listed_connection_appears_in_the_event_stream():
    seen = {(entry.protocol, entry.original, entry.reply) for entry in read("netns/conntrack-events.txt")}
    for entry in read("netns/conntrack-L.txt"):
        assert (entry.protocol, entry.original, entry.reply) in seen, entry.line


def test_a_refused_connection_appears_only_in_the_event_stream_unreplied():
    refused = [entry for entry in read("netns/conntrack-events.txt") if entry.original.dport == 9999]
    assert [(entry.event, entry.unreplied) for entry in refused] == [
        ("new", True),
        ("destroy", True),
    ]
    assert all(entry.original.dport != 9999 for entry in read("netns/conntrack-L.txt"))


# --- public samples ------------------------------------------------------------------------


def test_k8s_91216_clusterip_dns_is_dnat_to_coredns_pods():
    entries = read("public/k8s-issue-91216_conntrack-L_tcp-clusterip-dns-dnat.txt")
    to_dns = [entry for entry in entries if entry.original.dst == "10.0.0.10"]
    assert [entry.line for entry in to_dns] == [1, 2, 4, 5]
    assert all(entry.dnat and entry.original.dport == 53 == entry.server_port for entry in to_dns)
    assert {entry.server for entry in to_dns} == {"10.64.1.6", "10.64.2.4"}
    assert all(entry.state == "TIME_WAIT" and entry.assured for entry in entries)
    loopback = entries[2]
    assert not loopback.dnat and not loopback.snat and loopback.server == "127.0.0.1"


def test_k8s_126130_unreplied_udp_already_shows_the_chosen_backend():
    entries = read("public/k8s-issue-126130_conntrack_udp-clusterip-unreplied-dnat.txt")
    assert [entry.timeout for entry in entries] == [30, 23, 26]
    for entry in entries:
        assert entry.protocol == "udp" and entry.state is None
        assert entry.unreplied and not entry.assured
        assert (entry.original.dst, entry.original.dport) == ("10.12.201.0", 8125)
        assert (entry.server, entry.server_port) == ("10.11.4.22", 8125)
        assert entry.dnat and not entry.snat
    assert ports(entries[0].reply) == ("10.11.4.22", 8125, "10.11.4.5", 48931)


def test_k8s_129617_counters_and_delta_time():
    entries = read("public/k8s-issue-129617_conntrack-L-p-udp-dport-53_counters-delta-time.txt")
    counters = [(e.original_packets, e.original_bytes, e.reply_packets, e.reply_bytes) for e in entries]
    assert counters == [(1, 80, 1, 176), (1, 91, 1, 152), (1, 83, 1, 131)]
    assert [entry.delta_time for entry in entries] == [27, 27, 17]
    assert [entry.timeout for entry in entries] == [3, 3, 13]


def test_k8s_38802_last_line_is_masqueraded_to_the_node():
    entries = read("public/k8s-issue-38802_conntrack-L_with-snat.txt")
    last = entries[-1]
    assert ports(last.original) == ("10.10.28.7", 59492, "10.28.65.157", 2379)
    assert ports(last.reply) == ("10.28.65.157", 2379, "10.28.65.112", 59492)
    assert last.snat and not last.dnat
    assert [entry.line for entry in entries if entry.snat] == [7]
    assert not any(entry.dnat for entry in entries)


def test_tsuru_xml_flow_6_is_docker_dnat():
    entries = read("public/tsuru-prometheus-conntrack_conntrack-L-o-xml.xml")
    (dnat,) = [entry for entry in entries if entry.dnat]
    assert dnat.line == 8  # the sixth flow, after the XML declaration and <conntrack>
    assert ports(dnat.original) == ("192.168.50.4", 53922, "192.168.50.4", 5000)
    assert (dnat.server, dnat.server_port, dnat.id) == ("172.17.0.1", 5000, 907490432)
    assert all(entry.state == "ESTABLISHED" and entry.assured for entry in entries)
    assert [entry.line for entry in entries if entry.use == 2] == [19]


def test_mozilla_proc_secctx_with_colons_and_zone_0():
    first, second = read("public/mozilla-mig_proc-net-nf_conntrack.txt")
    for entry in (first, second):
        assert entry.secctx == "system_u:object_r:unlabeled_t:s0"
        assert (entry.l3, entry.mark, entry.zone, entry.use, entry.assured) == (
            "ipv4",
            0,
            0,
            2,
            True,
        )
    assert (first.protocol, first.timeout, first.state) == ("tcp", 431957, "ESTABLISHED")
    assert ports(first.original) == ("172.21.0.3", 51479, "172.21.0.1", 445)
    assert (second.protocol, second.timeout, second.state) == ("udp", 16, None)


def test_weaveworks_o_id_listing():
    entries = read("public/weaveworks-scope_conntrack-L-p-tcp-o-id.txt")
    assert [entry.id for entry in entries] == [2993966208, 4001098880, 943643840]
    assert [entry.secctx for entry in entries] == [None, *["system_u:object_r:unlabeled_t:s0"] * 2]
    last = entries[2]
    counters = (last.original_packets, last.original_bytes, last.reply_packets, last.reply_bytes)
    assert counters == (11, 1337, 8, 716)
    assert (last.use, last.mark) == (1, 0)


def test_weaveworks_events_with_and_without_timeout():
    entries = read("public/weaveworks-scope_conntrack-E-p-tcp-o-id.txt")
    assert [entry.event for entry in entries] == ["destroy", "new", "update", "update"]
    assert [entry.timeout for entry in entries] == [None, 120, 60, 432000]
    assert [entry.state for entry in entries] == [None, "SYN_SENT", "SYN_RECV", "ESTABLISHED"]
    assert [entry.unreplied for entry in entries] == [False, True, False, False]
    assert [entry.assured for entry in entries] == [True, False, False, True]
    assert {entry.id for entry in entries} == {347275904}
    assert all(entry.timestamp is None for entry in entries)


# --- inline samples: formats without a fixture ---------------------------------------------

V6_PROC = (
    "ipv6     10 tcp      6 299 ESTABLISHED "
    "src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=fd00:0010:0244:0000:0000:0000:0000:000a "
    "sport=40000 dport=443 "
    "src=fd00:0010:0244:0000:0000:0000:0000:000a dst=2001:0db8:0000:0000:0000:0000:0000:0001 "
    "sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2"
)
V6_LIST = (
    "tcp      6 299 ESTABLISHED src=2001:db8::1 dst=fd00:10:244::a sport=40000 dport=443 "
    "src=fd00:10:244::a dst=2001:db8::1 sport=443 dport=40000 [ASSURED] mark=0 use=1"
)


def test_ipv6_proc_addresses_are_normalized_like_conntrack_L():
    proc, listing = parse_one(V6_PROC), parse_one(V6_LIST)
    assert proc.original == listing.original == ConntrackTuple("2001:db8::1", "fd00:10:244::a", 40000, 443)
    assert proc.reply == listing.reply
    assert proc.l3 == listing.l3 == "ipv6"
    assert not proc.dnat and not proc.snat


def test_icmpv6_echo():
    entry = parse_one(
        "icmpv6   58 29 src=fd00::1 dst=fd00::2 type=128 code=0 id=42 "
        "src=fd00::2 dst=fd00::1 type=129 code=0 id=42 mark=0 use=1"
    )
    assert (entry.l3, entry.protocol, entry.protonum, entry.timeout) == ("ipv6", "icmpv6", 58, 29)
    assert entry.original == ConntrackTuple("fd00::1", "fd00::2", None, None, 128, 0, 42)
    assert entry.reply == ConntrackTuple("fd00::2", "fd00::1", None, None, 129, 0, 42)


def test_sctp_state_and_dnat():
    entry = parse_one(
        "sctp     132 431999 ESTABLISHED src=10.244.1.10 dst=10.96.0.20 sport=5000 dport=3868 "
        "src=10.244.2.20 dst=10.244.1.10 sport=3868 dport=5000 [ASSURED] mark=0 use=1"
    )
    assert (entry.protocol, entry.protonum, entry.state, entry.timeout) == (
        "sctp",
        132,
        "ESTABLISHED",
        431999,
    )
    assert entry.dnat and (entry.server, entry.server_port) == ("10.244.2.20", 3868)


def test_gre_keys_unknown_protocols_and_helpers():
    gre = parse_one(
        "gre      47 179 src=10.0.0.1 dst=10.0.0.2 srckey=0x1a dstkey=0x0 "
        "src=10.0.0.2 dst=10.0.0.1 srckey=0x0 dstkey=0x1a mark=0 helper=pptp use=1"
    )
    assert gre.original == ConntrackTuple("10.0.0.1", "10.0.0.2", 26, 0)
    assert gre.helper == "pptp"
    igmp = parse_one("unknown  2 599 src=10.0.0.1 dst=224.0.0.1 src=224.0.0.1 dst=10.0.0.1 use=1")
    assert (igmp.protocol, igmp.protonum, igmp.timeout) == ("unknown", 2, 599)
    assert igmp.original == ConntrackTuple("10.0.0.1", "224.0.0.1")


def test_port_only_nat_counts_as_nat():
    redirected = parse_one(
        "tcp      6 100 ESTABLISHED src=10.0.0.1 dst=10.0.0.5 sport=40000 dport=80 "
        "src=10.0.0.5 dst=10.0.0.1 sport=8080 dport=40000 [ASSURED] use=1"
    )
    assert redirected.dnat and not redirected.snat
    remapped = parse_one(
        "udp      17 20 src=10.0.0.1 dst=10.0.0.5 sport=40000 dport=53 "
        "src=10.0.0.5 dst=10.0.0.1 sport=53 dport=1024 use=1"
    )
    assert remapped.snat and not remapped.dnat


def test_offloaded_proc_entry_has_no_timeout():
    entry = parse_one(
        "ipv4     2 tcp      6 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 "
        "src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [HW_OFFLOAD] mark=7 zone=0 use=3"
    )
    assert (entry.timeout, entry.state, entry.offload, entry.assured) == (
        None,
        "ESTABLISHED",
        True,
        False,
    )
    assert entry.mark == 7


def test_directional_zones_secmark_labels_and_ktimestamp_stop():
    entry = parse_one(
        "tcp      6 10 CLOSE src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 zone-orig=5 "
        "packets=3 bytes=180 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 zone-reply=6 "
        "packets=2 bytes=120 [ASSURED] mark=1 secmark=9 zone=4 delta-time=13 "
        "[start=Sun Nov  1 07:24:47 2026] [stop=Sun Nov  1 07:25:00 2026] use=1 id=77 "
        "labels=blue,green"
    )
    assert (entry.zone_orig, entry.zone_reply, entry.zone) == (5, 6, 4)
    assert (entry.original_packets, entry.reply_bytes) == (3, 120)
    assert (entry.mark, entry.secmark, entry.delta_time, entry.id) == (1, 9, 13, 77)
    assert entry.labels == ("blue", "green")
    november_1 = CAPTURE_START - 26 * 86400
    assert (entry.start, entry.stop, entry.timestamp) == (
        november_1,
        november_1 + 13,
        november_1 + 13,
    )


def test_xml_event_with_all_optional_elements():
    line = (
        '<flow type="destroy"><meta direction="original"><layer3 protonum="10" protoname="ipv6">'
        "<src>2001:db8::1</src><dst>2001:db8::2</dst></layer3>"
        '<layer4 protonum="47" protoname="gre"><srckey>0x1a</srckey><dstkey>0x0</dstkey></layer4>'
        "<zone>5</zone><counters><packets>3</packets><bytes>180</bytes></counters></meta>"
        '<meta direction="reply"><layer3 protonum="10" protoname="ipv6"><src>2001:db8::2</src>'
        '<dst>2001:db8::1</dst></layer3><layer4 protonum="47" protoname="gre"><srckey>0x0</srckey>'
        "<dstkey>0x1a</dstkey></layer4></meta>"
        '<meta direction="independent"><timeout>0</timeout><mark>1</mark><labels><label>blue'
        "</label></labels><secmark>9</secmark><secctx>system_u:object_r:x_t:s0</secctx>"
        "<zone>4</zone><use>1</use><id>77</id><unreplied/><timestamp><start>1795764287000000000"
        "</start><stop>1795764300500000000</stop></timestamp><deltatime>13</deltatime></meta>"
        "<when><hour>7</hour><min>25</min><sec>01</sec><wday>6</wday><day>27</day><month>11</month>"
        "<year>2026</year></when><helper>pptp</helper></flow>"
    )
    entry = parse_one(line)
    assert (entry.l3, entry.protocol, entry.protonum, entry.event) == ("ipv6", "gre", 47, "destroy")
    assert entry.original == ConntrackTuple("2001:db8::1", "2001:db8::2", 26, 0)
    assert (entry.zone_orig, entry.zone_reply, entry.zone) == (5, None, 4)
    assert (entry.original_packets, entry.reply_packets) == (3, None)
    assert (entry.unreplied, entry.assured, entry.labels) == (True, False, ("blue",))
    assert (entry.secmark, entry.secctx, entry.id, entry.helper) == (
        9,
        "system_u:object_r:x_t:s0",
        77,
        "pptp",
    )
    assert (entry.start, entry.stop, entry.delta_time) == (CAPTURE_START, CAPTURE_START + 13.5, 13)
    assert entry.timestamp == CAPTURE_START + 14  # <when>, not the ktimestamp


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('<?xml version="1.0" encoding="utf-8"?>', ConntrackFormat.XML),
        ("<flow><meta", ConntrackFormat.XML),
        ("ipv4     2 tcp      6 117 TIME_WAIT src=10.0.0.1", ConntrackFormat.PROC),
        ("udp      17 27 src=10.0.0.1", ConntrackFormat.LIST),
        (" [UPDATE] tcp      6 60 SYN_RECV src=10.0.0.1", ConntrackFormat.EVENTS),
        ("[1795764287.158895]\t    [NEW] ipv4     2 tcp      6 120", ConntrackFormat.EVENTS),
        ("9", None),
        ("tcp client=10.244.1.10:56064 service=10.96.0.10:80", None),
    ],
)
def test_detect_format(line, expected):
    assert detect_format(line) is expected


# --- generated entries: render as the kernel and the tool print, parse back ----------------

PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite")


def render(entry: ConntrackEntry, *, proc: bool) -> str:
    """The entry as /proc/net/nf_conntrack (proc=True) or `conntrack -L`/`-E` would print it."""

    def address(text: str) -> str:
        return ipaddress.ip_address(text).exploded if proc else text

    def one_tuple(part: ConntrackTuple) -> list[str]:
        words = [f"src={address(part.src)}", f"dst={address(part.dst)}"]
        if entry.protocol in PORT_PROTOCOLS:
            words += [f"sport={part.sport}", f"dport={part.dport}"]
        elif entry.protocol == "gre":
            words += [f"srckey={part.sport:#x}", f"dstkey={part.dport:#x}"]
        elif entry.protocol != "unknown":
            words += [f"type={part.icmp_type}", f"code={part.icmp_code}", f"id={part.icmp_id}"]
        return words

    words: list[str] = []
    if entry.timestamp is not None:
        words.append(f"[{entry.timestamp:.6f}]\t")
    if entry.event is not None:
        words.append(f"[{entry.event.upper()}]".rjust(9))
    if proc:
        words.append(f"{entry.l3:<8} {2 if entry.l3 == 'ipv4' else 10}")
    words.append(f"{entry.protocol:<8} {entry.protonum}")
    words += [str(value) for value in (entry.timeout, entry.state) if value is not None]
    words += one_tuple(entry.original)
    if entry.original_packets is not None:
        words += [f"packets={entry.original_packets}", f"bytes={entry.original_bytes}"]
    words += ["[UNREPLIED]"] if entry.unreplied else []
    words += one_tuple(entry.reply)
    if entry.reply_packets is not None:
        words += [f"packets={entry.reply_packets}", f"bytes={entry.reply_bytes}"]
    words += ["[OFFLOAD]"] if entry.offload else ["[ASSURED]"] if entry.assured else []
    for key, value in (
        ("mark", entry.mark),
        ("secctx", entry.secctx),
        ("zone", entry.zone),
        ("delta-time", entry.delta_time),
        ("use", entry.use),
        ("id", entry.id),
    ):
        if value is not None:
            words.append(f"{key}={value}")
    return " ".join(words).replace("\t ", "\t")


@st.composite
def entries(draw: st.DrawFn, *, proc: bool) -> ConntrackEntry:
    l3 = draw(st.sampled_from(["ipv4", "ipv6"]))
    addresses = st.ip_addresses(v=4 if l3 == "ipv4" else 6).map(str)
    protocol = draw(st.sampled_from([*PORT_PROTOCOLS, "gre", "icmp", "unknown"]))
    if protocol == "icmp" and l3 == "ipv6":
        protocol = "icmpv6"
    numbers = st.integers(0, 0xFFFF)
    counts = st.integers(0, 2**40)

    def one_tuple() -> ConntrackTuple:
        src, dst = draw(addresses), draw(addresses)
        if protocol in (*PORT_PROTOCOLS, "gre"):
            return ConntrackTuple(src, dst, draw(numbers), draw(numbers))
        if protocol in ("icmp", "icmpv6"):
            return ConntrackTuple(
                src,
                dst,
                icmp_type=draw(st.integers(0, 255)),
                icmp_code=draw(st.integers(0, 255)),
                icmp_id=draw(numbers),
            )
        return ConntrackTuple(src, dst)

    original, reply = one_tuple(), one_tuple()
    counted = draw(st.booleans())
    offload = draw(st.booleans())
    event = None if proc else draw(st.none() | st.sampled_from(["new", "update", "destroy"]))
    stamped = event is not None and draw(st.booleans())
    return ConntrackEntry(
        l3=l3,
        protocol=protocol,
        protonum=conntrack.PROTOCOL_NUMBERS.get(protocol, 2),
        original=original,
        reply=reply,
        state=draw(st.sampled_from(["ESTABLISHED", "SYN_SENT2"])) if protocol == "tcp" else None,
        timeout=draw(st.none() | st.integers(0, 432000)),
        unreplied=draw(st.booleans()),
        assured=not offload and draw(st.booleans()),
        offload=offload,
        original_packets=draw(counts) if counted else None,
        original_bytes=draw(counts) if counted else None,
        reply_packets=draw(counts) if counted else None,
        reply_bytes=draw(counts) if counted else None,
        zone=draw(st.none() | st.integers(0, 0xFFFF)),
        zone_orig=None,
        zone_reply=None,
        mark=draw(st.none() | st.integers(0, 2**32 - 1)),
        secmark=None,
        secctx=draw(st.none() | st.just("system_u:object_r:unlabeled_t:s0")),
        labels=(),
        helper=None,
        use=draw(st.none() | st.integers(1, 9)),
        id=None if proc else draw(st.none() | st.integers(0, 2**32 - 1)),
        event=event,
        timestamp=draw(st.integers(0, 2**41)) / 1e6 if stamped else None,
        start=None,
        stop=None,
        delta_time=draw(st.none() | st.integers(0, 10**6)),
        path="<lines>",
        line=1,
    )


@given(entries(proc=True))
def test_any_proc_line_parses_back_to_its_entry(entry):
    assert parse_one(render(entry, proc=True)) == entry


@given(entries(proc=False))
def test_any_conntrack_tool_line_parses_back_to_its_entry(entry):
    assert parse_one(render(entry, proc=False)) == entry


# --- noise, bad input, sources ---------------------------------------------------------------

LINE = (
    "tcp      6 117 TIME_WAIT src=10.244.1.10 dst=10.244.2.20 sport=39944 dport=8080 packets=6 "
    "bytes=400 src=10.244.2.20 dst=10.244.1.10 sport=8080 dport=39944 packets=6 bytes=1893 "
    "[ASSURED] mark=0 delta-time=3 use=1"
)
SUMMARY = "conntrack v1.4.7 (conntrack-tools): 9 flow entries have been shown."


def test_prompts_and_the_summary_line_are_counted_as_ignored_and_blank_lines_skipped():
    stats = ConntrackStats()
    lines = ["root@node:~# conntrack -L", "", SUMMARY, LINE, "   ", LINE, SUMMARY, "$ exit"]
    found = list(parse_conntrack_lines(lines, stats=stats))
    assert [entry.line for entry in found] == [4, 6]
    assert (stats.entries, stats.ignored) == (2, 4)
    assert stats.formats == {"<lines>": ConntrackFormat.LIST}


def test_xml_document_lines_are_neither_entries_nor_noise():
    if not FIXTURES.is_dir():
        pytest.skip("shared fixtures are absent")
    stats = ConntrackStats()
    read("netns/conntrack-L-xml.txt", stats)
    assert (stats.entries, stats.ignored) == (9, 0)


def test_a_summary_only_file_has_no_entries_and_no_format():
    stats = ConntrackStats()
    assert list(parse_conntrack_lines([SUMMARY.replace("9", "0")], stats=stats)) == []
    assert (stats.ignored, stats.formats) == (1, {})


def truncations() -> list[str]:
    """Every cut of LINE before its reply tuple is complete, on and inside token boundaries."""
    tokens = LINE.split()
    reply_end = tokens.index("dport=39944") + 1
    cuts = [" ".join(tokens[:count]) for count in range(1, reply_end)]
    cuts += [" ".join(tokens[: reply_end + 1])]  # packets= without bytes=
    cuts += [LINE[: LINE.index("dport=39944") + 3]]  # inside a key
    return cuts


@pytest.mark.parametrize("cut", truncations())
def test_a_truncated_line_is_an_error_naming_file_and_line(cut):
    with pytest.raises(BadInputError) as raised:
        list(parse_conntrack_lines([LINE, cut, LINE], "dump.txt"))
    assert (raised.value.path, raised.value.line) == ("dump.txt", 2)
    assert str(raised.value).startswith("dump.txt:2: ")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (LINE.replace("src=10.244.1.10", "src=10.244.1.300", 1), "not an IP address"),
        (LINE.replace("sport=39944", "sport=70000", 1), "port out of range"),
        (LINE.replace("sport=39944 dport=8080", "dport=8080 sport=39944", 1), "expected sport="),
        (LINE.replace("tcp      6", "tcp      17"), "tcp with protocol number 17"),
        (LINE.replace("tcp", "foo"), "unknown protocol"),
        (LINE.replace("TIME_WAIT", "time_wait"), "expected a state"),
        (LINE + " stray", "unexpected token"),
        (f"ipv6     10 {LINE}", "ipv6 entry with address 10.244.1.10"),
        (f"ipv4     10 {LINE}", "ipv4 with layer-3 number 10"),
        ("[NOPE] " + LINE, "unknown event"),
        (LINE.replace("[ASSURED]", "[SEEN]"), "unexpected token"),
        (LINE.replace("[ASSURED]", "[UNREPLIED]"), "unexpected token"),
    ],
)
def test_malformed_lines_say_why(bad, reason):
    with pytest.raises(BadInputError, match=re.escape(reason)):
        list(parse_conntrack_lines([LINE, bad]))


def test_malformed_xml_flows_say_why():
    if not FIXTURES.is_dir():
        pytest.skip("shared fixtures are absent")
    header, opening, flow = fixture("netns/conntrack-L-xml.txt").read_text().splitlines()[:3]
    without_reply = re.sub(r'<meta direction="reply">.*?</meta>', "", flow)
    for bad, reason in [
        (flow[:-20], "not a one-line XML"),
        (without_reply, "original and a reply"),
    ]:
        with pytest.raises(BadInputError, match=reason) as raised:
            list(parse_conntrack_lines([header, opening, flow, bad]))
        assert raised.value.line == 4


def test_skip_mode_counts_bad_lines_and_keeps_the_rest(tmp_path):
    dump = tmp_path / "d.txt"
    dump.write_bytes(f"{LINE}\n{LINE[:60]}\n{LINE}\n".encode() + b"tcp 6 \xff\n")
    bad_records = BadRecords(on_error=OnError.SKIP)
    found = list(parse_conntrack([str(dump)], bad_records=bad_records))
    assert [entry.line for entry in found] == [1, 3]
    assert bad_records.count == 2
    assert [example.split(": ")[0] for example in bad_records.examples] == [
        f"{dump}:2",
        f"{dump}:4",
    ]


def test_gzip_glob_and_several_files(tmp_path):
    (tmp_path / "a.txt").write_text(f"{LINE}\n{SUMMARY}\n")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(f"{V6_LIST}\n{LINE}\n".encode()))
    (tmp_path / "empty.txt").write_text("")
    stats = ConntrackStats()
    found = list(parse_conntrack([str(tmp_path / "*")], bad_records=BadRecords(), stats=stats))
    assert [(Path(entry.path).name, entry.line) for entry in found] == [
        ("a.txt", 1),
        ("b.txt.gz", 1),
        ("b.txt.gz", 2),
    ]
    assert found[1].l3 == "ipv6"
    assert (stats.entries, stats.ignored, len(stats.formats)) == (3, 1, 2)


def test_gzip_fixture_reads_like_the_plain_file(tmp_path):
    plain = fixture("netns/conntrack-events.txt")
    packed = tmp_path / "events.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    from_gzip = parse_conntrack([str(packed)], bad_records=BadRecords())
    assert [msgspec.structs.replace(entry, path=str(plain)) for entry in from_gzip] == read(
        "netns/conntrack-events.txt"
    )


def test_progress_over_a_gzip_dump_counts_its_compressed_bytes(tmp_path):
    plain = fixture("netns/conntrack-events.txt")
    packed = tmp_path / "events.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes() * 50))
    progress: list[int] = []
    assert list(ConnectionScanner(bad_records=BadRecords()).scan(str(packed), progress.append))
    assert sum(progress) == packed.stat().st_size


def test_stdin(monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(f"{LINE}\n".encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    (entry,) = parse_conntrack(["-"], bad_records=BadRecords())
    assert (entry.path, entry.line, entry.original.sport) == ("<stdin>", 1, 39944)


def test_parsing_streams_without_reading_ahead():
    endless = itertools.chain([LINE], itertools.repeat(LINE))
    assert len(list(itertools.islice(parse_conntrack_lines(endless), 3))) == 3


def test_memos_stop_growing_at_their_limit(monkeypatch):
    monkeypatch.setattr(conntrack, "_MEMO_LIMIT", len(conntrack._SPORT))
    before = len(conntrack._SPORT)
    lines = [LINE.replace("sport=39944", f"sport={port}", 1) for port in range(1000, 1100)]
    assert [entry.original.sport for entry in parse_conntrack_lines(lines)] == list(range(1000, 1100))
    assert len(conntrack._SPORT) == before


# --- the scanner: the fast path for observations -------------------------------------------


def scan(path: str, **options) -> list[tuple]:
    return list(ConnectionScanner(bad_records=BadRecords(), **options).scan(path))


def parsed(path: str) -> list[tuple]:
    """What the scanner must yield for a dump, from the full parser's entries."""
    return [
        (identity_of(entry), Connection.of(entry), entry.timestamp)
        for entry in parse_conntrack([path], bad_records=BadRecords())
    ]


@pytest.mark.parametrize("relative", [name for name, (_, found) in DUMPS.items() if found], ids=str)
def test_the_scanner_reads_every_fixture_as_the_full_parser_does(relative):
    path = str(fixture(relative))
    stats = ConntrackStats()
    scanner = ConnectionScanner(bad_records=BadRecords(), stats=stats)
    assert list(scanner.scan(path)) == parsed(path)
    assert stats.entries == DUMPS[relative][0]
    assert stats.lines == len(Path(path).read_bytes().splitlines())
    tokenized = stats.formats[path] in (ConntrackFormat.PROC, ConntrackFormat.LIST) and "ktimestamp" not in relative
    assert bool(scanner._memo) == (tokenized and stats.entries > 1)  # the first line shows the format


def test_connections_are_oriented_with_nat_and_ports_of_their_protocol():
    service, icmp = parse_one(LINE.replace("dst=10.244.2.20", "dst=10.96.0.10", 1)), read("netns/conntrack-L.txt")[6]
    assert Connection.of(service) == Connection(
        "tcp", "10.244.1.10", "10.96.0.10", 8080, "10.244.2.20", 8080, "10.244.1.10", False
    )
    assert Connection.of(service).dnat and not Connection.of(service).snat
    assert Connection.of(icmp) == Connection(
        "icmp", "10.244.1.10", "10.244.2.20", 0, "10.244.2.20", 0, "10.244.1.10", False
    )
    (masqueraded,) = [e for e in read("public/k8s-issue-38802_conntrack-L_with-snat.txt") if e.snat]
    assert Connection.of(masqueraded).snat and Connection.of(masqueraded).seen_as == "10.28.65.112"


def test_the_identity_is_the_reply_tuple_alike_in_every_format():
    identities = {relative: [identity_of(entry) for entry in read(relative)] for relative in SNAPSHOTS}
    assert all(found == identities[SNAPSHOTS[0]] for relative, found in identities.items() if "xml" not in relative)
    assert identities[SNAPSHOTS[0]][3] == (
        b"tcp",
        b"src=10.244.2.20",
        b"dst=10.244.1.10",
        b"sport=8080",
        b"dport=56064",
    )
    assert identity_of(parse_one(V6_PROC)) == identity_of(parse_one(V6_LIST))


@given(st.booleans().flatmap(lambda proc: st.tuples(st.just(proc), entries(proc=proc))))
def test_the_scanner_reads_any_proc_or_conntrack_tool_line_as_the_full_parser_does(case):
    proc, entry = case
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "dump.txt"
        path.write_text(2 * f"{render(entry, proc=proc)}\n")  # the first line shows the format
        assert scan(str(path)) == parsed(str(path))


def test_a_line_the_tokenizer_cannot_read_goes_to_the_full_parser(tmp_path):
    zoned = LINE.replace("dport=8080 ", "dport=8080 zone-orig=5 ", 1)
    icmp = read("netns/conntrack-L.txt")[6]
    dump = tmp_path / "d.txt"
    dump.write_text("\n".join([LINE, zoned, render(icmp, proc=False), LINE.replace("39944", "39945")]) + "\n")
    assert scan(str(dump)) == parsed(str(dump))
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{LINE}\n{LINE.replace('src=10.244.2.20', 'src=10.244.2.300')}\n")
    with pytest.raises(BadInputError, match=r"bad\.txt:2: not an IP address"):
        scan(str(bad))
    bad_records = BadRecords(on_error=OnError.SKIP)
    assert len(list(ConnectionScanner(bad_records=bad_records).scan(str(bad)))) == 1
    assert bad_records.count == 1


def test_the_scanner_memo_is_emptied_when_full_and_interns_what_it_is_given(tmp_path):
    lines = [LINE.replace("sport=8080", f"sport={port}") for port in range(8000, 8010)]
    dump = tmp_path / "d.txt"
    dump.write_text("\n".join(lines * 2) + "\n")
    made: list[Connection] = []

    def intern(connection: Connection) -> tuple[str, int]:
        made.append(connection)
        return ("interned", connection.server_port)

    scanner = ConnectionScanner(bad_records=BadRecords(), intern=intern, memo_limit=4)
    found = [interned for _, interned, _ in scanner.scan(str(dump))]
    assert found == [("interned", port) for port in range(8000, 8010)] * 2
    assert len(made) > 11 and len(scanner._memo) <= 4  # it forgot connections it had seen
    again = ConnectionScanner(bad_records=BadRecords(), intern=intern)
    made.clear()
    list(again.scan(str(dump)))
    assert len(made) == 11  # once per connection, and for the first line, which the full parser reads


def test_is_conntrack_sniffs_the_first_real_line(tmp_path):
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures {FIXTURES} are absent")
    for relative, (_, found) in DUMPS.items():
        assert is_conntrack(str(FIXTURES / relative)) == (found is not None), relative
    for relative in NOT_DUMPS:
        assert not is_conntrack(str(FIXTURES / relative)), relative
    hubble = FIXTURES.parent / "hubble" / "basic-sample-10-flows.json"
    assert hubble.is_file() and not is_conntrack(str(hubble))
    packed = tmp_path / "nf_conntrack.gz"
    packed.write_bytes(gzip.compress(f"{SUMMARY}\n\n{LINE}\n".encode()))
    assert is_conntrack(str(packed))
    assert not is_conntrack("-")


def test_a_cut_gzip_dump_gives_the_entries_of_every_complete_line_before_the_cut(tmp_path):
    plain = fixture("public/weaveworks-scope_conntrack-L-p-tcp-o-id.txt").read_bytes() * 20
    packed = gzip.compress(plain)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(packed[: len(packed) * 3 // 4])
    readable = zlib.decompressobj(31).decompress(packed[: len(packed) * 3 // 4])
    before = tmp_path / "before.txt"  # the complete lines before the cut, as a plain dump
    before.write_bytes(readable[: readable.rindex(b"\n") + 1])
    stats, bad_records = ConntrackStats(), BadRecords(on_error=OnError.SKIP)
    entries = list(ConnectionScanner(bad_records=bad_records, stats=stats).scan(str(cut)))
    assert entries and entries == scan(str(before))
    assert stats.lines == before.read_bytes().count(b"\n") and bad_records.count == 1
