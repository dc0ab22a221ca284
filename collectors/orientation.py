"""Orientation: which side of a Hubble event is the client (DESIGN.md, "Orientation").

Reply traffic must never become a rule. Per-event evidence is tried first, strongest first:
`is_reply`, the L7 record type, the legacy `reply`, TCP flags, policy-verdict events (always the
first packet), ICMP echo types, and drops (Hubble's own assumption: drops are not replies). Events
none of these decide are decided by the `Correlator` from the decided events of the same 5-tuple
seen so far, or held and decided later from the other events of the same 5-tuple, then from ports
already seen as server ports of the same endpoint, and only last by a port heuristic. What still
cannot be decided is reported as unoriented, never guessed into a rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collectors.aggregate import Aggregate

FORWARD = 1
REPLY = 2
UNDECIDED = 0

EPHEMERAL_START = 32768
"""Start of Linux's default ephemeral port range (net.ipv4.ip_local_port_range)."""

POLICY_VERDICT_EVENT = 5
ICMP_REQUESTS = {"ICMPv4": frozenset({8, 13, 15, 17}), "ICMPv6": frozenset({128})}
ICMP_REPLIES = {"ICMPv4": frozenset({0, 14, 16, 18}), "ICMPv6": frozenset({129})}
_L7_REQUEST = ("REQUEST", 1)
_L7_RESPONSE = ("RESPONSE", 2)


def orient_event(flow: Any, protocol: str, icmp_type: int, dropped: bool) -> tuple[int, str]:
    """(FORWARD | REPLY | UNDECIDED, the rule that decided) from one event's own fields."""
    if flow.is_reply is not None:
        return (REPLY if flow.is_reply else FORWARD), "is_reply"
    l7 = flow.l7
    if l7 is not None:
        if l7.type in _L7_REQUEST:
            return FORWARD, "l7-type"
        if l7.type in _L7_RESPONSE:
            return REPLY, "l7-type"
    if flow.reply:
        return REPLY, "reply"
    if protocol == "TCP":
        flags = flow.l4.TCP.flags
        if flags is not None and flags.SYN:
            return (REPLY if flags.ACK else FORWARD), "tcp-flags"
    event = flow.event_type
    if event is not None and event.type == POLICY_VERDICT_EVENT:
        return FORWARD, "policy-verdict"
    if protocol in ICMP_REQUESTS:
        if icmp_type in ICMP_REQUESTS[protocol]:
            return FORWARD, "icmp-type"
        if icmp_type in ICMP_REPLIES[protocol]:
            return REPLY, "icmp-type"
    if dropped:
        return FORWARD, "dropped"
    return UNDECIDED, ""


FiveTuple = tuple[str, str, int, str, int]
"""(protocol, client IP, client port, server IP, server port)."""

PendingKey = tuple[int, int, str, int, int, str, str, str]
"""(source endpoint id, destination endpoint id, protocol, source port, destination port, verdict,
source IP, destination IP) of an undecided event, in packet order."""


class Correlator:
    """Holds undecided events and decides them from what the rest of the stream shows.

    Memory stays bounded: the 5-tuples of decided connections are kept in two generations of at most
    `capacity` entries (recent events of a connection are close together in a stream), and the
    undecided events are aggregated per 5-tuple; the caller resolves them when `full`.
    """

    def __init__(self, capacity: int = 1 << 15) -> None:
        self.capacity = capacity
        self.recent: set[FiveTuple] = set()
        """5-tuples of decided connections, client first. The hot path adds to it directly and
        calls `age` when it reaches `capacity`."""
        self._older: set[FiveTuple] = set()
        self.pending: dict[PendingKey, Aggregate] = {}

    def age(self) -> None:
        """Drop the older generation of remembered connections."""
        self._older = self.recent
        self.recent = set()

    def remembered(self) -> set[FiveTuple]:
        return self.recent | self._older

    def knows(self, five_tuple: FiveTuple) -> bool:
        return five_tuple in self.recent or five_tuple in self._older

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.capacity

    def resolve(self, server_ports: set[tuple[int, str, int]]) -> Iterator[tuple[PendingKey, Aggregate, int, str]]:
        """Decide every held event: yields (key, record, FORWARD | REPLY | UNDECIDED, rule), emptying.

        `server_ports` holds (endpoint id, protocol, port) already seen as the server side.
        """
        pending, self.pending = self.pending, {}
        for key, record in pending.items():
            direction, rule = self._decide(key, server_ports)
            yield key, record, direction, rule

    def correlate(self, five_tuple: FiveTuple) -> tuple[int, str]:
        """An event's direction from the decided connections, given its 5-tuple in packet order."""
        if self.knows(five_tuple):
            return FORWARD, "correlated"
        protocol, src_ip, sport, dst_ip, dport = five_tuple
        if self.knows((protocol, dst_ip, dport, src_ip, sport)):
            return REPLY, "correlated"
        return UNDECIDED, ""

    def _decide(self, key: PendingKey, server_ports: set[tuple[int, str, int]]) -> tuple[int, str]:
        src, dst, protocol, sport, dport, _verdict, src_ip, dst_ip = key
        direction, rule = self.correlate((protocol, src_ip, sport, dst_ip, dport))
        if direction != UNDECIDED:
            return direction, rule
        dst_serves = (dst, protocol, dport) in server_ports
        src_serves = (src, protocol, sport) in server_ports
        if dst_serves != src_serves:
            return (FORWARD if dst_serves else REPLY), "known-server-port"
        return port_heuristic(sport, dport)


def port_heuristic(sport: int, dport: int) -> tuple[int, str]:
    """The last resort: the server port is the one below the ephemeral range (the lower if both)."""
    if sport >= EPHEMERAL_START and dport >= EPHEMERAL_START:
        return UNDECIDED, "unoriented"
    if dport < sport:
        return FORWARD, "port-heuristic"
    if sport < dport:
        return REPLY, "port-heuristic"
    return UNDECIDED, "unoriented"
