"""Connection sets: which (protocol, port) pairs are allowed, as exact and canonical values.

A `ConnectionSet` holds TCP, UDP and SCTP port sets plus one flag for every other protocol
(ICMP, ...). NetworkPolicy cannot tell the other protocols apart (a rule with `ports` never
matches them, a rule without `ports` matches them all), so one flag is exact. Unlike an
"allow all" flag beside a port map, this form is closed under difference: "everything but
TCP 22" is a value like any other, and `is_all` is derived, never stored.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

MIN_PORT = 1
MAX_PORT = 65535

Interval = tuple[int, int]


class Protocol(StrEnum):
    """The protocols a NetworkPolicy port can name."""

    SCTP = "SCTP"
    TCP = "TCP"
    UDP = "UDP"

    @classmethod
    def lookup(cls, name: str) -> Protocol | None:
        """The port protocol called `name` (any case), or None for ICMP and other protocols."""
        return cls.__members__.get(name.upper())


def _normalize(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    intervals = tuple(intervals)
    if len(intervals) == 1 and MIN_PORT <= intervals[0][0] <= intervals[0][1] <= MAX_PORT:
        return intervals  # the common case, already canonical
    merged: list[list[int]] = []
    for first, last in sorted(intervals):
        if not MIN_PORT <= first <= last <= MAX_PORT:
            raise ValueError(f"bad port interval {first}-{last}")
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return tuple((first, last) for first, last in merged)


@dataclass(frozen=True, slots=True)
class PortSet:
    """Sorted, disjoint, non-adjacent port intervals within 1-65535 (normalized on creation)."""

    intervals: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "intervals", _normalize(self.intervals))

    @classmethod
    def range(cls, first: int, last: int | None = None) -> PortSet:
        return cls(((first, first if last is None else last),))

    @classmethod
    def full(cls) -> PortSet:
        return cls(((MIN_PORT, MAX_PORT),))

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        index = bisect.bisect_right(self.intervals, (port, MAX_PORT))
        return index > 0 and self.intervals[index - 1][1] >= port

    def __or__(self, other: PortSet) -> PortSet:
        return PortSet(self.intervals + other.intervals)

    def __and__(self, other: PortSet) -> PortSet:
        result: list[Interval] = []
        i = j = 0
        while i < len(self.intervals) and j < len(other.intervals):
            (a_first, a_last), (b_first, b_last) = self.intervals[i], other.intervals[j]
            first, last = max(a_first, b_first), min(a_last, b_last)
            if first <= last:
                result.append((first, last))
            if a_last < b_last:
                i += 1
            else:
                j += 1
        return PortSet(tuple(result))

    def complement(self) -> PortSet:
        gaps: list[Interval] = []
        start = MIN_PORT
        for first, last in self.intervals:
            if first > start:
                gaps.append((start, first - 1))
            start = last + 1
        if start <= MAX_PORT:
            gaps.append((start, MAX_PORT))
        return PortSet(tuple(gaps))

    def __sub__(self, other: PortSet) -> PortSet:
        return self & other.complement()

    def __le__(self, other: PortSet) -> bool:
        return not self - other

    def __str__(self) -> str:
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.intervals)


@dataclass(frozen=True, slots=True)
class ConnectionSet:
    """TCP/UDP/SCTP port sets plus a flag for all other protocols; a canonical value.

    Build with `all()`, `none()`, `ports()` and `other_protocols()`, combine with
    `|`, `&`, `-`, compare with `==` and `<=` (`issubset`), query with `contains`.
    """

    by_protocol: tuple[tuple[Protocol, PortSet], ...] = ()
    non_port_protocols: bool = False

    def __post_init__(self) -> None:
        canonical = tuple(sorted(((p, ports) for p, ports in self.by_protocol if ports), key=lambda item: item[0]))
        if len({p for p, _ in canonical}) != len(canonical):
            raise ValueError("a protocol appears twice in a ConnectionSet")
        object.__setattr__(self, "by_protocol", canonical)

    @classmethod
    def all(cls) -> ConnectionSet:
        return cls(tuple((p, PortSet.full()) for p in Protocol), True)

    @classmethod
    def none(cls) -> ConnectionSet:
        return cls()

    @classmethod
    def ports(cls, protocol: Protocol, first: int | None = None, last: int | None = None) -> ConnectionSet:
        """Ports `first`-`last` (or the single port `first`, or every port) of `protocol`."""
        ports = PortSet.full() if first is None else PortSet.range(first, last)
        return cls(((protocol, ports),))

    @classmethod
    def other_protocols(cls) -> ConnectionSet:
        """ICMP and every other protocol without ports."""
        return cls((), True)

    def port_set(self, protocol: Protocol) -> PortSet:
        return dict(self.by_protocol).get(protocol, PortSet())

    @property
    def is_all(self) -> bool:
        return self == ConnectionSet.all()

    def __bool__(self) -> bool:
        return self.non_port_protocols or bool(self.by_protocol)

    def contains(self, protocol: str, port: int | None = None) -> bool:
        """Whether `protocol`/`port` is in the set; the port is ignored for non-port protocols."""
        known = Protocol.lookup(protocol)
        if known is None:
            return self.non_port_protocols
        return port in self.port_set(known)

    def _combine(self, other: ConnectionSet, op: Callable[[PortSet, PortSet], PortSet], flag: bool) -> ConnectionSet:
        mine, theirs = dict(self.by_protocol), dict(other.by_protocol)
        empty = PortSet()
        ports = tuple((p, op(mine.get(p, empty), theirs.get(p, empty))) for p in mine.keys() | theirs)
        return ConnectionSet(ports, flag)

    def __or__(self, other: ConnectionSet) -> ConnectionSet:
        return self._combine(other, PortSet.__or__, self.non_port_protocols or other.non_port_protocols)

    def __and__(self, other: ConnectionSet) -> ConnectionSet:
        return self._combine(other, PortSet.__and__, self.non_port_protocols and other.non_port_protocols)

    def __sub__(self, other: ConnectionSet) -> ConnectionSet:
        flag = self.non_port_protocols and not other.non_port_protocols
        return self._combine(other, PortSet.__sub__, flag)

    def __le__(self, other: ConnectionSet) -> bool:
        return not self - other

    def issubset(self, other: ConnectionSet) -> bool:
        return self <= other

    @staticmethod
    def union_all(sets: Iterable[ConnectionSet]) -> ConnectionSet:
        result: ConnectionSet | None = None
        for connections in sets:
            result = connections if result is None else result | connections
        return ConnectionSet.none() if result is None else result

    def __str__(self) -> str:
        if self.is_all:
            return "all"
        parts = [f"{protocol} {ports}" for protocol, ports in self.by_protocol]
        if self.non_port_protocols:
            parts.append("other protocols")
        return "; ".join(parts) or "none"
