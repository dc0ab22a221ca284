"""Streaming parsers for conntrack dumps: /proc/net/nf_conntrack, `conntrack -L` (default and
`-o extended,id,ktimestamp,labels`), `conntrack -E` events (also `-o timestamp`) and `-o xml`.

Every text format is one grammar (flow-formats.md §4.1-4.2, §4.5), read token by token:

    [[sec.usec]\\t] [[NEW]|[UPDATE]|[DESTROY]] [ipv4 2] tcp 6 [timeout] [STATE]
    src= dst= <l4 part> [zone-orig=] [packets= bytes=] [[UNREPLIED]]
    src= dst= <l4 part> [zone-reply=] [packets= bytes=]
    then flags and key=value fields in any order: [ASSURED] mark= secctx= zone= use= id= ...

The first `src=` block is the original tuple and the second the reply tuple, so the ICMP tuple
`id=` is never confused with the conntrack `id=` that `-o id` prints after `use=`. Each line is
read on its own, which also accepts pasted output that mixes formats. XML flows are one line
each (that is how conntrack prints them) and are read line by line too, to keep line numbers.

Two readers share this grammar: `parse_conntrack` gives every field of every entry as a typed
`ConntrackEntry`; `ConnectionScanner` gives only what an observation needs (`Connection`, the
connection's `Identity` and its time), tokenizing the common lines itself several times faster
and handing every other line to the same parser.
"""

from __future__ import annotations

import calendar
import ipaddress
import itertools
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from collectors.errors import BadRecords, CollectorError
from collectors.sources import (
    STDIN,
    TruncatedInput,
    display_name,
    expand_inputs,
    input_progress,
    line_batches,
    numbered_lines,
    open_input,
)

PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "dccp": 33,
    "gre": 47,
    "icmpv6": 58,
    "sctp": 132,
    "udplite": 136,
}
_L3_NUMBERS = {"ipv4": "2", "ipv6": "10"}
_EVENTS = {"[NEW]": "new", "[UPDATE]": "update", "[DESTROY]": "destroy"}


class ConntrackTuple(msgspec.Struct, frozen=True, gc=False):
    """One direction of a connection as conntrack prints it.

    Addresses are `ipaddress`-canonical strings (IPv6 compressed). `sport`/`dport` are the ports of
    tcp, udp, sctp, dccp and udplite, and the GRE keys (the kernel keeps them in the same slot).
    ICMP has `icmp_type`/`icmp_code`/`icmp_id` instead; XML dumps omit all three.
    """

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None


class ConntrackEntry(msgspec.Struct, frozen=True, gc=False):
    """One conntrack entry, or one event of an event stream. Fields the dump does not print are None.

    Times are epoch seconds, `timeout` and `delta_time` seconds. `timestamp` is when the record was
    observed: the event time (`[sec.usec]` prefix, XML `<when>`), else the ktimestamp `stop` or
    `start`. Times printed without a zone (ktimestamp `[start=...]`, XML `<when>`) are the capturing
    host's local time and are read as UTC. `offload` is `[OFFLOAD]` or `[HW_OFFLOAD]`, which the
    kernel prints instead of `[ASSURED]`, so an offloaded entry shows `assured=False`.

    A msgspec Struct rather than a dataclass: with 30 fields it is built ~15x faster, and building
    entries is a large share of parsing time.
    """

    l3: str
    protocol: str
    protonum: int
    original: ConntrackTuple
    reply: ConntrackTuple
    state: str | None
    timeout: int | None
    unreplied: bool
    original_packets: int | None
    original_bytes: int | None
    reply_packets: int | None
    reply_bytes: int | None
    zone_orig: int | None
    zone_reply: int | None
    # What conntrack prints after the reply tuple, in its order.
    assured: bool
    offload: bool
    mark: int | None
    secmark: int | None
    secctx: str | None
    zone: int | None
    delta_time: int | None
    start: float | None
    stop: float | None
    helper: str | None
    use: int | None
    id: int | None
    labels: tuple[str, ...]
    event: str | None  # new, update or destroy in event streams
    timestamp: float | None
    path: str
    line: int

    @property
    def client(self) -> str:
        return self.original.src

    @property
    def server(self) -> str:
        """The real server: after DNAT the backend, not the Service address the client dialled."""
        return self.reply.src

    @property
    def server_port(self) -> int | None:
        return self.reply.sport

    @property
    def dnat(self) -> bool:
        return self.original.dst != self.reply.src or self.original.dport != self.reply.sport

    @property
    def snat(self) -> bool:
        return self.reply.dst != self.original.src or self.reply.dport != self.original.sport


class ConntrackFormat(StrEnum):
    PROC = "proc"  # /proc/net/nf_conntrack or `conntrack -L -o extended`: same "ipv4 2" prefix
    LIST = "list"  # `conntrack -L` default output (also -D, -G)
    EVENTS = "events"  # `conntrack -E`
    XML = "xml"  # `conntrack -L -o xml` or `-E -o xml`


@dataclass
class ConntrackStats:
    """What a read saw besides entries: each file's format and the noise lines it skipped.

    `lines` is counted by `ConnectionScanner` only (`parse_conntrack` streams lines it does not own).
    """

    formats: dict[str, ConntrackFormat] = field(default_factory=dict)
    entries: int = 0
    ignored: int = 0
    lines: int = 0


class _Malformed(ValueError):
    pass


# --- value parsing -------------------------------------------------------------------------


def _uint(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _Malformed(f"not a number: {text!r}")
    return int(text)


def _port(text: str) -> int:
    value = _uint(text)
    if value > 0xFFFF:
        raise _Malformed(f"port out of range: {text}")
    return value


def _gre_key(text: str) -> int:
    if not text.startswith("0x"):
        raise _Malformed(f"not a hex GRE key: {text!r}")
    return int(text, 16)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Malformed(f"not an IP address: {text!r}") from None


def _ctime(text: str) -> float:
    """`Fri Nov 27 07:24:47 2026` (ctime, no zone) read as UTC."""
    try:
        return float(calendar.timegm(time.strptime(text, "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        raise _Malformed(f"not a ctime date: {text!r}") from None


def _labels(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


_Value = TypeVar("_Value")
_Key = TypeVar("_Key")


def _field(key: str, parse: Callable[[str], _Value]) -> Callable[[str], _Value]:
    """Parser of one `key=value` token that checks the key."""
    prefix = key + "="

    def parse_token(token: str) -> _Value:
        if not token.startswith(prefix):
            raise _Malformed(f"expected {prefix}…, found {token!r}")
        return parse(token[len(prefix) :])

    return parse_token


_MEMO_LIMIT = 1 << 16


class _Memo(dict[_Key, _Value], Generic[_Key, _Value]):
    """Parse results by input, computed on a miss: `_SPORT["sport=8080"]` is 8080.

    Dumps repeat the same addresses, ports and trailing fields line after line, and a dict hit
    costs a small fraction of checking and converting the text again. The memo stops growing at
    _MEMO_LIMIT entries, so inputs that never repeat cannot exhaust memory.
    """

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[_Key], _Value]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, key: _Key) -> _Value:
        value = self._parse(key)
        if len(self) < _MEMO_LIMIT:
            self[key] = value
        return value


# --- text lines ----------------------------------------------------------------------------

_SRC = _Memo(_field("src", _address))
_DST = _Memo(_field("dst", _address))
_SPORT = _Memo(_field("sport", _port))
_DPORT = _Memo(_field("dport", _port))
_ICMP_TYPE = _Memo(_field("type", _uint))
_ICMP_CODE = _Memo(_field("code", _uint))
_ICMP_ID = _Memo(_field("id", _uint))
_SRCKEY = _Memo(_field("srckey", _gre_key))
_DSTKEY = _Memo(_field("dstkey", _gre_key))
_PACKETS = _Memo(_field("packets", _uint))
_BYTES = _field("bytes", _uint)  # byte counts rarely repeat, so a memo would only miss


def _ports_tuple(tokens: list[str], i: int) -> ConntrackTuple:
    return ConntrackTuple(_SRC[tokens[i]], _DST[tokens[i + 1]], _SPORT[tokens[i + 2]], _DPORT[tokens[i + 3]])


def _icmp_tuple(tokens: list[str], i: int) -> ConntrackTuple:
    return ConntrackTuple(
        _SRC[tokens[i]],
        _DST[tokens[i + 1]],
        icmp_type=_ICMP_TYPE[tokens[i + 2]],
        icmp_code=_ICMP_CODE[tokens[i + 3]],
        icmp_id=_ICMP_ID[tokens[i + 4]],
    )


def _gre_tuple(tokens: list[str], i: int) -> ConntrackTuple:
    return ConntrackTuple(_SRC[tokens[i]], _DST[tokens[i + 1]], _SRCKEY[tokens[i + 2]], _DSTKEY[tokens[i + 3]])


def _bare_tuple(tokens: list[str], i: int) -> ConntrackTuple:
    return ConntrackTuple(_SRC[tokens[i]], _DST[tokens[i + 1]])


_TupleReader = Callable[[list[str], int], ConntrackTuple]

# How to read each protocol's tuple, and how many tokens it spans.
_TUPLE_READERS: dict[str, tuple[_TupleReader, int]] = {
    "tcp": (_ports_tuple, 4),
    "udp": (_ports_tuple, 4),
    "sctp": (_ports_tuple, 4),
    "dccp": (_ports_tuple, 4),
    "udplite": (_ports_tuple, 4),
    "icmp": (_icmp_tuple, 5),
    "icmpv6": (_icmp_tuple, 5),
    "gre": (_gre_tuple, 4),
    "unknown": (_bare_tuple, 2),
}


def _protocol(name: str) -> tuple[str | None, int | None, _TupleReader, int]:
    """`tcp` -> its number as printed (None for `unknown`), the number, tuple reader and width."""
    if name not in _TUPLE_READERS:
        raise _Malformed(f"unknown protocol {name!r}")
    number = PROTOCOL_NUMBERS.get(name)
    return (None if number is None else str(number), number, *_TUPLE_READERS[name])


_PROTOCOLS = _Memo(_protocol)


def _protonum(name: str, number_text: str) -> int:
    """The protocol number printed after `name`, checked against it."""
    expected_text, number, _, _ = _PROTOCOLS[name]
    if number is None:
        return _uint(number_text)  # `unknown` protocols print their own number
    if number_text != expected_text:
        raise _Malformed(f"{name} with protocol number {number_text}")
    return number


def _l3(printed: str | None, original: ConntrackTuple) -> str:
    """`ipv4` or `ipv6`, from the addresses; checked against the name printed, if any."""
    family = "ipv6" if ":" in original.src else "ipv4"
    if printed is not None and printed != family:
        raise _Malformed(f"{printed} entry with address {original.src}")
    return family


def _event_prefix(tokens: list[str]) -> tuple[float | None, str | None, int]:
    """The `[1795764287.158895]` time and `[NEW]` event starting a line; the next token index."""
    timestamp, i = None, 0
    if tokens[0][1:2].isdigit():
        if tokens[0][-1] != "]":
            raise _Malformed(f"bad event time {tokens[0]!r}")
        timestamp, i = float(tokens[0][1:-1]), 1
    event = _EVENTS.get(tokens[i])
    if event is not None:
        i += 1
    elif i == 0:
        raise _Malformed(f"unknown event {tokens[0]!r}")
    return timestamp, event, i


def _read_direction(
    tokens: list[str], i: int, read_tuple: _TupleReader, width: int, zone_prefix: str
) -> tuple[ConntrackTuple, int | None, int | None, int | None, int]:
    """A tuple and what may follow it: `zone-orig=`/`zone-reply=`, then `packets= bytes=`.

    Returns the tuple, zone, packets, bytes and the index of the next token.
    """
    found = read_tuple(tokens, i)
    i += width
    zone = packets = nbytes = None
    end = len(tokens)
    if i < end and tokens[i][0] == "z" and tokens[i].startswith(zone_prefix):
        zone = _uint(tokens[i][len(zone_prefix) :])
        i += 1
    if i < end and tokens[i][0] == "p":
        packets, nbytes = _PACKETS[tokens[i]], _BYTES(tokens[i + 1])
        i += 2
    return found, zone, packets, nbytes, i


class _Tail(NamedTuple):
    """The flags and fields after the reply tuple: a run of ConntrackEntry's fields, in order."""

    assured: bool = False
    offload: bool = False
    mark: int | None = None
    secmark: int | None = None
    secctx: str | None = None
    zone: int | None = None
    delta_time: int | None = None
    start: float | None = None
    stop: float | None = None
    helper: str | None = None
    use: int | None = None
    id: int | None = None
    labels: tuple[str, ...] = ()


_TAIL_AT = ConntrackEntry.__struct_fields__.index(_Tail._fields[0])
assert ConntrackEntry.__struct_fields__[_TAIL_AT : _TAIL_AT + len(_Tail._fields)] == _Tail._fields

_TAIL_FLAGS = {
    "[ASSURED]": "assured",
    "[OFFLOAD]": "offload",
    "[HW_OFFLOAD]": "offload",
}
_TAIL_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "mark": ("mark", _uint),
    "secmark": ("secmark", _uint),
    "secctx": ("secctx", str),
    "zone": ("zone", _uint),
    "delta-time": ("delta_time", _uint),
    "helper": ("helper", str),
    "use": ("use", _uint),
    "id": ("id", _uint),
    "labels": ("labels", _labels),
}


def _parse_tail(tokens: tuple[str, ...]) -> _Tail:
    """Flags and `key=value` fields in any order, including ktimestamp's `[start=<ctime>]`.

    Unknown keys are ignored, so output of a newer conntrack still parses.
    """
    fields: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in _TAIL_FLAGS:
            fields[_TAIL_FLAGS[token]] = True
        elif token.startswith(("[start=", "[stop=")):  # [start=Fri Nov 27 07:24:47 2026]
            key, _, first_word = token[1:].partition("=")
            date = " ".join((first_word, *tokens[i : i + 4]))
            if not date.endswith("]"):
                raise _Malformed(f"unterminated [{key}=")
            fields[key] = _ctime(date[:-1])
            i += 4
        else:
            key, sep, value = token.partition("=")
            if not sep:
                raise _Malformed(f"unexpected token {token!r}")
            if key in _TAIL_FIELDS:
                name, parse = _TAIL_FIELDS[key]
                fields[name] = parse(value)
    return _Tail(**fields)


_TAILS = _Memo(_parse_tail)


def _parse_text(text: str, path: str, line: int) -> ConntrackEntry:
    """Parse one line of any text format. Raises ValueError or IndexError when it is malformed."""
    tokens = text.split()
    if tokens[0][0] == "[":
        timestamp, event, i = _event_prefix(tokens)
    else:
        timestamp, event, i = None, None, 0
    l3 = None
    if tokens[i] in _L3_NUMBERS:
        l3 = tokens[i]
        if tokens[i + 1] != _L3_NUMBERS[l3]:
            raise _Malformed(f"{l3} with layer-3 number {tokens[i + 1]}")
        i += 2
    protocol = tokens[i]
    number_text, protonum, read_tuple, width = _PROTOCOLS[protocol]
    if protonum is None or tokens[i + 1] != number_text:
        protonum = _protonum(protocol, tokens[i + 1])
    i += 2
    timeout = state = None
    if tokens[i].isdigit():
        timeout = int(tokens[i])
        i += 1
    if tokens[i][0] != "s":  # not src=, so a TCP, SCTP or DCCP state
        state = tokens[i]
        if not state.isupper():
            raise _Malformed(f"expected a state or src=, found {state!r}")
        i += 1

    original, zone_orig, original_packets, original_bytes, i = _read_direction(
        tokens, i, read_tuple, width, "zone-orig="
    )
    unreplied = tokens[i] == "[UNREPLIED]"
    if unreplied:
        i += 1
    reply, zone_reply, reply_packets, reply_bytes, i = _read_direction(tokens, i, read_tuple, width, "zone-reply=")
    tail = _TAILS[tuple(tokens[i:])]

    l3 = _l3(l3, original)
    if timestamp is None:
        timestamp = tail.stop if tail.stop is not None else tail.start
    return ConntrackEntry(
        l3,
        protocol,
        protonum,
        original,
        reply,
        state,
        timeout,
        unreplied,
        original_packets,
        original_bytes,
        reply_packets,
        reply_bytes,
        zone_orig,
        zone_reply,
        *tail,
        event,
        timestamp,
        path,
        line,
    )


# --- XML -----------------------------------------------------------------------------------

_XML_SKELETON = ("<?xml", "<conntrack>", "</conntrack>")
_WHEN_FIELDS = ("year", "month", "day", "hour", "min", "sec")


def _xml_int(parent: ET.Element, path: str) -> int | None:
    text = parent.findtext(path)
    return None if text is None else _uint(text)


class _XmlDirection(NamedTuple):
    """What one `<meta direction="original|reply">` holds."""

    found: ConntrackTuple
    zone: int | None
    packets: int | None
    nbytes: int | None
    l3: str
    protocol: str
    protonum: str


def _xml_direction(meta: ET.Element | None) -> _XmlDirection:
    if meta is None:
        raise _Malformed("a <flow> needs an original and a reply <meta>")
    layer3, layer4 = meta.find("layer3"), meta.find("layer4")
    if layer3 is None or layer4 is None:
        raise _Malformed("a <meta> needs <layer3> and <layer4>")
    src, dst = layer3.findtext("src"), layer3.findtext("dst")
    if src is None or dst is None:
        raise _Malformed("<layer3> needs <src> and <dst>")
    protocol = layer4.get("protoname", "")
    sport: int | None
    dport: int | None
    if protocol == "gre":
        sport = _gre_key(layer4.findtext("srckey", ""))
        dport = _gre_key(layer4.findtext("dstkey", ""))
    else:
        sport, dport = _xml_int(layer4, "sport"), _xml_int(layer4, "dport")
    return _XmlDirection(
        ConntrackTuple(_address(src), _address(dst), sport, dport),
        _xml_int(meta, "zone"),
        _xml_int(meta, "counters/packets"),
        _xml_int(meta, "counters/bytes"),
        layer3.get("protoname", "").lower(),
        protocol,
        layer4.get("protonum", ""),
    )


def _parse_xml(text: str, path: str, line: int) -> ConntrackEntry | None:
    """Parse one `<flow>` line of `-o xml` output; None for the document's own header lines.

    The XML printer shows SCTP and DCCP states from the TCP state table (a libnetfilter_conntrack
    bug), so `state` is only reliable for TCP here.
    """
    stripped = text.strip()
    if stripped.startswith(_XML_SKELETON):
        return None
    try:
        flow = ET.fromstring(stripped)
    except ET.ParseError as exc:
        raise _Malformed(f"not a one-line XML <flow>: {exc}") from None
    if flow.tag != "flow":
        raise _Malformed(f"expected <flow>, found <{flow.tag}>")
    metas = {meta.get("direction"): meta for meta in flow.iter("meta")}
    original = _xml_direction(metas.get("original"))
    reply = _xml_direction(metas.get("reply"))

    info = metas.get("independent", ET.Element("meta"))
    start_ns, stop_ns = _xml_int(info, "timestamp/start"), _xml_int(info, "timestamp/stop")
    start = None if start_ns is None else start_ns / 1e9
    stop = None if stop_ns is None else stop_ns / 1e9
    when = flow.find("when")
    if when is not None:
        moment = tuple(_uint(when.findtext(name, "")) for name in _WHEN_FIELDS)
        timestamp: float | None = float(calendar.timegm(moment))
    else:
        timestamp = stop if stop is not None else start
    return ConntrackEntry(
        l3=_l3(original.l3, original.found),
        protocol=original.protocol,
        protonum=_protonum(original.protocol, original.protonum),
        original=original.found,
        reply=reply.found,
        state=info.findtext("state"),
        timeout=_xml_int(info, "timeout"),
        unreplied=info.find("unreplied") is not None,
        original_packets=original.packets,
        original_bytes=original.nbytes,
        reply_packets=reply.packets,
        reply_bytes=reply.nbytes,
        zone_orig=original.zone,
        zone_reply=reply.zone,
        assured=info.find("assured") is not None,
        offload=False,  # the XML printer has no offload element
        mark=_xml_int(info, "mark"),
        secmark=_xml_int(info, "secmark"),
        secctx=info.findtext("secctx"),
        zone=_xml_int(info, "zone"),
        delta_time=_xml_int(info, "deltatime"),
        start=start,
        stop=stop,
        helper=flow.findtext("helper"),
        use=_xml_int(info, "use"),
        id=_xml_int(info, "id"),
        labels=tuple(label.text or "" for label in info.iterfind("labels/label")),
        event=flow.get("type"),
        timestamp=timestamp,
        path=path,
        line=line,
    )


# --- files ---------------------------------------------------------------------------------

_PROMPT = re.compile(r"\s*(?:[#$]|\[[^\]]*\][#$]|\S+[#$])(?:\s|$)")


def _skipped(text: str, stats: ConntrackStats) -> bool:
    """True for a blank line, and for noise, which it counts: shell prompts and conntrack's own
    stderr messages such as 'conntrack v1.4.7 (conntrack-tools): 9 flow entries have been shown.'"""
    if not text.strip():
        return True
    if (text.startswith("conntrack v") and "(conntrack-tools)" in text) or _PROMPT.match(text):
        stats.ignored += 1
        return True
    return False


def detect_format(line: str) -> ConntrackFormat | None:
    """The format of a dump, judged from its first line that is not blank or noise.

    None when the line is not conntrack output at all (for example `conntrack -C`'s bare count).
    """
    tokens = line.split(maxsplit=6)
    if tokens and tokens[0].startswith(("<?xml", "<conntrack", "<flow")):
        return ConntrackFormat.XML
    if tokens and tokens[0][:1] == "[" and tokens[0][1:2].isdigit():
        tokens = tokens[1:]  # event time
    found = ConntrackFormat.LIST
    if tokens and tokens[0] in _EVENTS:
        found, tokens = ConntrackFormat.EVENTS, tokens[1:]
    if tokens and tokens[0] in _L3_NUMBERS:
        found = ConntrackFormat.PROC if found is ConntrackFormat.LIST else found
        tokens = tokens[2:]
    if len(tokens) >= 2 and tokens[0] in _TUPLE_READERS and tokens[1].isdigit():
        return found
    return None


def parse_conntrack(
    paths: Sequence[str], *, bad_records: BadRecords, stats: ConntrackStats | None = None
) -> Iterator[ConntrackEntry]:
    """Stream the entries of conntrack dumps: files, globs, `-` for stdin, gzip or not.

    The format is detected per file. A malformed line goes to `bad_records` with its file and line;
    blank lines are skipped and noise (prompts, conntrack's summary line) is counted in `stats`.
    Raises `CollectorError` for a file that is not a conntrack dump.
    """
    for path in expand_inputs(paths):
        yield from _parse_numbered(numbered_lines(path), display_name(path), bad_records, stats)


def parse_conntrack_lines(
    lines: Iterable[str],
    path: str = "<lines>",
    *,
    bad_records: BadRecords | None = None,
    stats: ConntrackStats | None = None,
) -> Iterator[ConntrackEntry]:
    """`parse_conntrack` for lines already in memory; fails on the first bad line by default."""
    numbered = ((number, line.rstrip("\r\n").encode()) for number, line in enumerate(lines, 1))
    return _parse_numbered(numbered, path, BadRecords() if bad_records is None else bad_records, stats)


def _parse_numbered(
    numbered: Iterable[tuple[int, bytes]],
    path: str,
    bad_records: BadRecords,
    stats: ConntrackStats | None,
) -> Iterator[ConntrackEntry]:
    parser = _LineParser(path, bad_records, ConntrackStats() if stats is None else stats)
    entries = 0
    try:
        for number, raw in numbered:
            entry = parser.entry(raw, number)
            if entry is not None:
                entries += 1
                yield entry
    finally:
        parser.stats.entries += entries


class _LineParser:
    """Parses the lines of one file with the format its first line that is not blank or noise shows.

    Blank lines are skipped, noise is counted, a malformed line goes to `bad_records`; a file whose
    first real line is not conntrack output raises `CollectorError`.
    """

    def __init__(self, path: str, bad_records: BadRecords, stats: ConntrackStats) -> None:
        self.path = path
        self.bad_records = bad_records
        self.stats = stats
        self.format: ConntrackFormat | None = None
        self.fast = False
        """Whether `ConnectionScanner`'s tokenizer can read the file: /proc or `conntrack -L` lines
        without ktimestamp dates (the tokenizer reads no times)."""
        self._parse: Callable[[str, str, int], ConntrackEntry | None] = _parse_text

    def entry(self, raw: bytes, number: int) -> ConntrackEntry | None:
        """The entry of one line (without its newline); None for a line that has none."""
        if self.format is None and not self._detect(raw, number):
            return None
        try:
            return self._parse(raw.decode(), self.path, number)
        except (ValueError, IndexError) as exc:
            text = raw.decode(errors="replace")
            if _skipped(text, self.stats):
                return None
            reason = "line ends early (truncated?)" if isinstance(exc, IndexError) else exc
            self.bad_records.report(self.path, number, f"{reason}: {text[:100]!r}")
            return None

    def _detect(self, raw: bytes, number: int) -> bool:
        """Learn the format from the first line that is not blank or noise; False for those lines."""
        text = raw.decode(errors="replace")
        if _skipped(text, self.stats):
            return False
        found = detect_format(text)
        if found is None:
            raise CollectorError(f"{self.path}:{number}: not a conntrack dump: {text[:80]!r}")
        self.format = self.stats.formats[self.path] = found
        if found is ConntrackFormat.XML:
            self._parse = _parse_xml
        dated = b"[start=" in raw or b"[stop=" in raw
        self.fast = found in (ConntrackFormat.PROC, ConntrackFormat.LIST) and not dated
        return True


def is_conntrack(path: str, *, max_lines: int = 64) -> bool:
    """Whether a file (gzip or not) is a conntrack dump (see `starts_like_conntrack`). Standard input
    (`-`) is never sniffed: False. Raises `CollectorError` for a file that cannot be read."""
    if path == STDIN:
        return False
    return starts_like_conntrack((raw for _, raw in numbered_lines(path)), max_lines=max_lines)


def starts_like_conntrack(lines: Iterable[bytes], *, max_lines: int = 64) -> bool:
    """Whether the first of `lines` that is not blank or noise, among the first `max_lines`, is a
    conntrack entry."""
    stats = ConntrackStats()
    for raw in itertools.islice(lines, max_lines):
        text = raw.decode(errors="replace")
        if not _skipped(text, stats):
            return detect_format(text) is not None
    return False


# --- connections: the fast path for observations -------------------------------------------


class Connection(NamedTuple):
    """What an entry says about its connection, oriented: the ORIGINAL tuple's source is the client.

    `dialled`/`dialled_port` are what the client addressed (original destination); `server`/
    `server_port` what answered (reply source), which differ after DNAT (a Service: the backend
    pod and its target port); `seen_as` is the client address the server sees (reply destination),
    which differs from `client` after SNAT. Ports are 0 for protocols without ports.
    """

    protocol: str
    client: str
    dialled: str
    dialled_port: int
    server: str
    server_port: int
    seen_as: str
    unreplied: bool

    @property
    def dnat(self) -> bool:
        return self.dialled != self.server or self.dialled_port != self.server_port

    @property
    def snat(self) -> bool:
        """The server sees another client address (a port-only remap does not count)."""
        return self.seen_as != self.client

    @classmethod
    def of(cls, entry: ConntrackEntry) -> Connection:
        original, reply = entry.original, entry.reply
        ports = entry.protocol in _PORT_PROTOCOLS
        return cls(
            entry.protocol,
            original.src,
            original.dst,
            (original.dport or 0) if ports else 0,
            reply.src,
            (reply.sport or 0) if ports else 0,
            reply.dst,
            entry.unreplied,
        )


Identity = tuple[bytes, ...]
"""A connection's reply tuple with its protocol, as `conntrack -L` prints them (ports or ICMP type, code, id):
`(b"tcp", b"src=10.244.2.20", b"dst=10.244.1.10", b"sport=8080", b"dport=56064")`.

It is the same in every node's table the connection crosses and in every event of it: the reply
tuple holds the real server and the client address the server sees, which NAT on either side
leaves alike (flow-formats.md §4.4; with no SNAT it is the key (protocol, orig src, orig sport,
reply src, reply sport) of the reference, since reply dst/dport are then orig src/sport)."""

Observed = tuple[Identity, Any, float | None]
"""One entry as (identity, its connection as `ConnectionScanner`'s `intern` made it, time); the
time is None when the format prints none."""


def identity_of(entry: ConntrackEntry) -> Identity:
    """The `Identity` of an entry of the full parser."""
    reply = entry.reply
    words = [f"src={reply.src}", f"dst={reply.dst}"]
    if reply.icmp_type is not None:
        words += [f"type={reply.icmp_type}", f"code={reply.icmp_code}", f"id={reply.icmp_id}"]
    elif reply.sport is not None:
        words += [f"sport={reply.sport}", f"dport={reply.dport}"]
    return (entry.protocol.encode(), *(word.encode() for word in words))


_PORT_PROTOCOLS = frozenset(name for name, (reader, _) in _TUPLE_READERS.items() if reader is _ports_tuple)
_FAST_PROTOCOLS = frozenset(name.encode() for name in _PORT_PROTOCOLS)
_SRC_START = ord("s")  # of `src=`; a timeout starts with a digit, a state with a capital
_COUNTERS_START = ord("p")  # of `packets=`
_BATCH_BYTES = 1 << 20


def _itself(connection: Connection) -> Connection:
    return connection


class ConnectionScanner:
    """Reads conntrack dumps as `Observed` triples, a few times faster than `parse_conntrack`.

    /proc and `conntrack -L` lines of port protocols (the bulk of any dump) are split once and
    read by position; the raw tokens the connection needs are converted and checked once per
    distinct combination (a memo of at most `memo_limit` entries, emptied when full). Every other
    line (ICMP, IPv6 /proc addresses, directional zones, events, ktimestamp, XML, noise, bad lines)
    goes through the full parser, which reports a bad line with its file and line. The tokenizer
    checks the fields it uses; a garbled field it does not use (`mark=`, the client port) passes.

    `intern` turns a connection into what is yielded in its place (by default the connection):
    it is called once per memo entry and once per line of the full parser, so that a consumer
    that keeps a record per connection gets it without looking it up on every line.
    """

    def __init__(
        self,
        *,
        bad_records: BadRecords,
        stats: ConntrackStats | None = None,
        intern: Callable[[Connection], Any] = _itself,
        memo_limit: int = 1 << 16,
    ) -> None:
        self.bad_records = bad_records
        self.stats = ConntrackStats() if stats is None else stats
        self._intern = intern
        self._memo: dict[int, Any] = {}
        self._memo_limit = memo_limit

    def scan(self, path: str, progress: Callable[[int], None] | None = None) -> Iterator[Observed]:
        """Every entry of one dump (a file, `-` for stdin, gzip or not). `progress`, if given, is
        called now and then with the number of bytes read since its last call."""
        name = display_name(path)
        parser = _LineParser(name, self.bad_records, self.stats)
        stream = open_input(path)
        progress = input_progress(stream, progress)
        number = 0
        try:
            for batch in line_batches(stream, _BATCH_BYTES):
                read = self._fast if parser.fast else self._slow
                yield from read(batch, number, parser)
                number += len(batch)
                if progress is not None:
                    progress(sum(map(len, batch)))
        except TruncatedInput as cut:
            self.bad_records.report(cut.path, cut.line, cut.message)
        except (OSError, EOFError, zlib.error) as exc:
            raise CollectorError(f"{name}: cannot read: {exc}") from exc
        finally:
            self.stats.lines += number
            if path != STDIN:
                stream.close()

    def _slow(self, lines: list[bytes], number: int, parser: _LineParser) -> Iterator[Observed]:
        """Lines through the full parser; switches to `_fast` once the format allows it."""
        for index, raw in enumerate(lines, number + 1):
            entry = parser.entry(raw.rstrip(b"\r\n"), index)
            if entry is not None:
                self.stats.entries += 1
                yield identity_of(entry), self._intern(Connection.of(entry)), entry.timestamp
            if parser.fast:
                yield from self._fast(lines[index - number :], index, parser)
                return

    def _fast(self, lines: list[bytes], number: int, parser: _LineParser) -> Iterator[Observed]:
        """The hot loop. Positions follow the grammar of the module docstring, with the layer-3
        prefix the file's format has and a timeout; the split stops after the reply tuple.
        Anything else (an IndexError, tokens `_learn` refuses) goes to the full parser. The memo
        is keyed by the hash of the raw tokens: comparing tuples of fresh bytes on every hit
        costs more than all the rest, and a collision is as unlikely as one of `Identity` hashes
        (see `collectors.conntrack_observations`)."""
        memo = self._memo
        base = 2 if parser.format is ConntrackFormat.PROC else 0
        splits = base + 15  # enough for the longest head: timeout, state, counters, [UNREPLIED]
        entries = 0
        for raw in lines:
            number += 1
            tokens = raw.split(None, splits)
            try:
                protocol = tokens[base]
                i = base + 3  # after the protocol name, its number and the timeout
                if tokens[i][0] != _SRC_START:  # the state
                    i += 1
                j = i + 4
                if tokens[j][0] == _COUNTERS_START:
                    j += 2
                unreplied = tokens[j] == b"[UNREPLIED]"
                if unreplied:
                    j += 1
                reply_src, reply_dst, reply_sport = tokens[j], tokens[j + 1], tokens[j + 2]
                identity = (protocol, reply_src, reply_dst, reply_sport, tokens[j + 3])
                raw_key = (
                    tokens[0], protocol, tokens[i], tokens[i + 1], tokens[i + 3], reply_src, reply_sport, reply_dst,
                    unreplied,
                )  # fmt: skip
            except IndexError:
                identity = None
            if identity is not None:
                hashed = hash(raw_key)
                interned = memo.get(hashed)
                if interned is None:
                    interned = self._learn(raw_key, hashed)
                if interned is not None:
                    entries += 1
                    yield identity, interned, None
                    continue
            entry = parser.entry(raw.rstrip(b"\r\n"), number)
            if entry is not None:
                entries += 1
                yield identity_of(entry), self._intern(Connection.of(entry)), entry.timestamp
        self.stats.entries += entries

    def _learn(self, raw_key: tuple, hashed: int) -> Any:
        """The interned connection of raw tokens (first token, protocol, src=, dst=, dport=, reply src=,
        sport=, dst=, unreplied), memoized; None when they are not what the fast path expects:
        /proc lines must be IPv4 (IPv6 addresses there are uncompressed, and the identity of a
        connection must read alike in every format)."""
        first, protocol, src, dst, dport, reply_src, reply_sport, reply_dst, unreplied = raw_key
        if protocol not in _FAST_PROTOCOLS or first not in (protocol, b"ipv4"):
            return None
        try:
            connection = Connection(
                protocol.decode(),
                _SRC[src.decode()],
                _DST[dst.decode()],
                _DPORT[dport.decode()],
                _SRC[reply_src.decode()],
                _SPORT[reply_sport.decode()],
                _DST[reply_dst.decode()],
                unreplied,
            )
        except ValueError:  # _Malformed, or UnicodeDecodeError
            return None
        if len(self._memo) >= self._memo_limit:
            self._memo.clear()
        interned = self._memo[hashed] = self._intern(connection)
        return interned
