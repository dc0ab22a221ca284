"""Typed decoders for Hubble JSON: only the fields the recommender reads.

Hubble writes proto field names (`source_port`, `is_reply`, `IP`, `Type`); other producers
(grpcurl, protobuf's MessageToJson) write lowerCamelCase (`sourcePort`, `isReply`). Both schemas are
built by one factory from the same field list. Unknown fields are ignored by msgspec, so newer
Cilium versions decode, and only the listed fields are materialised (about 2x faster than a general
JSON parser).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

EMPTY_RAW = msgspec.Raw(b"{}")
NULL_RAW = msgspec.Raw(b"null")

# Enum fields arrive as names ("FORWARDED"); protojson also accepts numbers.
EnumValue = str | int


def _lower_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class HubbleSchema:
    """The decoders of one naming convention."""

    line: msgspec.json.Decoder  # a GetFlowsResponse / ExportEvent envelope
    bare_flow: msgspec.json.Decoder  # a legacy bare Flow object
    endpoint: msgspec.json.Decoder  # an Endpoint, from a flow's raw `source` / `destination`
    structs: dict[str, type[msgspec.Struct]]


def build_schema(rename: Callable[[str], str] | None = None, *, lazy_endpoints: bool = True) -> HubbleSchema:
    """Decoders for one naming convention.

    With `lazy_endpoints`, a flow's `source` and `destination` stay raw JSON: the resolver decodes
    each distinct endpoint once and looks the rest up by their bytes, which is faster than decoding
    the labels of every endpoint of every flow.
    """
    # gc=False: decoded structs never form cycles, so the garbage collector need not track them.
    opts: dict[str, Any] = {"gc": False, **({"rename": rename} if rename else {})}

    class Workload(msgspec.Struct, frozen=True, **opts):
        name: str = ""
        kind: str = ""

    class Endpoint(msgspec.Struct, frozen=True, **opts):
        ID: int = 0
        identity: int = 0
        cluster_name: str = ""
        namespace: str = ""
        labels: tuple[str, ...] = ()
        pod_name: str = ""
        workloads: tuple[Workload, ...] = ()

    EndpointField = msgspec.Raw if lazy_endpoints else Endpoint | None

    class TCPFlags(msgspec.Struct, **opts):
        SYN: bool = False
        ACK: bool = False

    class PortLayer(msgspec.Struct, **opts):
        source_port: int = 0
        destination_port: int = 0
        flags: TCPFlags | None = None

    class ICMPLayer(msgspec.Struct, **opts):
        type: int = 0
        code: int = 0

    class Layer4(msgspec.Struct, **opts):
        TCP: PortLayer | None = None
        UDP: PortLayer | None = None
        SCTP: PortLayer | None = None
        ICMPv4: ICMPLayer | None = None
        ICMPv6: ICMPLayer | None = None

    class IPHeader(msgspec.Struct, **opts):
        source: str = ""
        destination: str = ""

    class EventType(msgspec.Struct, **opts):
        type: int = 0
        sub_type: int = 0

    class DNS(msgspec.Struct, **opts):
        query: str = ""
        ips: tuple[str, ...] = ()

    class Layer7(msgspec.Struct, **opts):
        type: EnumValue = 0
        dns: DNS | None = None

    class Service(msgspec.Struct, **opts):
        name: str = ""
        namespace: str = ""

    class Policy(msgspec.Struct, **opts):
        name: str = ""
        namespace: str = ""
        kind: str = ""

    class Flow(msgspec.Struct, **opts):
        time: datetime | None = None
        uuid: str = ""
        verdict: EnumValue = 0
        IP: IPHeader | None = None
        l4: Layer4 | None = None
        source: EndpointField = EMPTY_RAW  # type: ignore[valid-type]
        destination: EndpointField = EMPTY_RAW  # type: ignore[valid-type]
        Type: EnumValue = 0
        node_name: str = ""
        source_names: tuple[str, ...] = ()
        destination_names: tuple[str, ...] = ()
        l7: Layer7 | None = None
        reply: bool = False
        event_type: EventType | None = None
        source_service: Service | None = None
        destination_service: Service | None = None
        drop_reason_desc: EnumValue = 0
        is_reply: bool | None = None
        ingress_allowed_by: tuple[Policy, ...] = ()
        egress_allowed_by: tuple[Policy, ...] = ()

    class LostEvent(msgspec.Struct, **opts):
        source: EnumValue = 0
        num_events_lost: int | str = 0

    class Line(msgspec.Struct, **opts):
        flow: Flow | None = None
        lost_events: LostEvent | None = None
        node_status: dict[str, Any] | None = None
        agent_event: dict[str, Any] | None = None
        debug_event: dict[str, Any] | None = None
        time: msgspec.Raw = NULL_RAW  # needed only for a flow without its own: decoded by `envelope_time`

    structs: dict[str, type[msgspec.Struct]] = {
        cls.__name__: cls
        for cls in (
            Workload,
            Endpoint,
            TCPFlags,
            PortLayer,
            ICMPLayer,
            Layer4,
            IPHeader,
            EventType,
            DNS,
            Layer7,
            Service,
            Policy,
            Flow,
            LostEvent,
            Line,
        )
    }
    return HubbleSchema(
        line=msgspec.json.Decoder(Line),
        bare_flow=msgspec.json.Decoder(Flow),
        endpoint=msgspec.json.Decoder(Endpoint),
        structs=structs,
    )


_TIME = msgspec.json.Decoder(datetime | None)


def envelope_time(line: Any) -> datetime | None:
    """The time of a decoded envelope (its `time` stays raw JSON until asked for)."""
    return _TIME.decode(line.time)


PROTO_NAMES = build_schema()
CAMEL_NAMES = build_schema(_lower_camel)

_CAMEL_MARKERS = (b'"isReply"', b'"sourcePort"', b'"nodeName"', b'"eventType"', b'"podName"')


def schema_for(line: bytes) -> HubbleSchema:
    """Pick the naming convention of one line with a cheap byte search."""
    if b'_port"' in line or b'"node_name"' in line or b'"is_reply"' in line:
        return PROTO_NAMES
    if any(marker in line for marker in _CAMEL_MARKERS):
        return CAMEL_NAMES
    return PROTO_NAMES
