"""Hubble flows as received from Relay (`received.Flow`, the generated protobuf classes) → the flow
structs `HubbleIngest` reads.

A flow from Relay reaches the ingest in the shape the JSON decoder gives the same flow from a file
(`collectors.hubble_schema`, with lazy endpoints): enum names as str (an unset enum stays 0, a
number this proto does not know stays a number), absent messages as None, and the two endpoints as
bytes that the ingest's resolver decodes once per distinct endpoint: here their protobuf encoding,
as received (`received.proto` declares them `bytes`), decoded by `endpoint_from_wire`. A nameless
service becomes None, which the ingest treats alike.

It is the Relay client's hot path, so each field is read once, a present-but-empty sub-message is
told from an absent one (`HasField`) only when its content looks empty, and the few values that
repeat from flow to flow (TCP flags, event types) are shared structs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_schema import PROTO_NAMES

_S = PROTO_NAMES.structs
Flow, Endpoint, Workload = _S["Flow"], _S["Endpoint"], _S["Workload"]
_IPHeader, _Layer4, _PortLayer, _ICMPLayer = _S["IPHeader"], _S["Layer4"], _S["PortLayer"], _S["ICMPLayer"]
_TCPFlags, _EventType, _Layer7, _DNS = _S["TCPFlags"], _S["EventType"], _S["Layer7"], _S["DNS"]
_Service, _Policy = _S["Service"], _S["Policy"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLOW_FIELDS = (
    "time", "uuid", "verdict", "IP", "l4", "source", "destination", "Type", "node_name", "source_names",
    "destination_names", "l7", "reply", "event_type", "source_service", "destination_service",
    "drop_reason_desc", "is_reply", "ingress_allowed_by", "egress_allowed_by",
)  # fmt: skip
if Flow.__struct_fields__ != _FLOW_FIELDS:  # `flow_from_message` passes them by position (7x faster than keywords)
    raise ImportError(f"collectors.hubble_schema's Flow fields changed; update {__name__}.flow_from_message")


def _names(enum: EnumTypeWrapper) -> dict[int, str]:
    """Number → name of an enum's values, except 0, which stays 0 (protojson leaves it out)."""
    return {value.number: value.name for value in enum.DESCRIPTOR.values if value.number}


_VERDICTS = _names(flow_pb2.Verdict)
_FLOW_TYPES = _names(flow_pb2.FlowType)
_DROP_REASONS = _names(flow_pb2.DropReason)
_L7_TYPES = _names(flow_pb2.L7FlowType)
_TCP_FLAGS = {(syn, ack): _TCPFlags(syn, ack) for syn in (False, True) for ack in (False, True)}
"""Shared (never modified): only SYN and ACK matter to the ingest."""
_EVENT_TYPES: dict[tuple[int, int], Any] = {}


def to_datetime(timestamp: Any) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime, rounded to the microsecond like msgspec's
    RFC 3339 decoder (half up), so Relay and file timestamps compare equal."""
    return EPOCH + timedelta(0, timestamp.seconds, (timestamp.nanos + 500) // 1000)


def flow_from_message(flow: Any) -> Any:
    """The ingest's `Flow` struct of one `received_pb2.Flow`."""
    has = flow.HasField
    stamp = flow.time
    seconds, nanos = stamp.seconds, stamp.nanos
    ip = flow.IP
    source_ip, destination_ip = ip.source, ip.destination
    event = flow.event_type
    event_type, sub_type = event.type, event.sub_type
    verdict, flow_type, drop_reason = flow.verdict, flow.Type, flow.drop_reason_desc
    source_names, destination_names = flow.source_names, flow.destination_names
    ingress_allowed_by, egress_allowed_by = flow.ingress_allowed_by, flow.egress_allowed_by
    return Flow(
        EPOCH + timedelta(0, seconds, (nanos + 500) // 1000) if seconds or nanos or has("time") else None,
        flow.uuid,
        _VERDICTS.get(verdict, verdict),
        _IPHeader(source_ip, destination_ip) if source_ip or destination_ip or has("IP") else None,
        _layer4(flow),
        flow.source,
        flow.destination,
        _FLOW_TYPES.get(flow_type, flow_type),
        flow.node_name,
        tuple(source_names) if source_names else (),
        tuple(destination_names) if destination_names else (),
        _layer7(flow.l7) if has("l7") else None,
        flow.reply,
        _event_type(event_type, sub_type) if event_type or sub_type or has("event_type") else None,
        _service(flow.source_service),
        _service(flow.destination_service),
        _DROP_REASONS.get(drop_reason, drop_reason),
        flow.is_reply.value if has("is_reply") else None,
        tuple(map(_policy, ingress_allowed_by)) if ingress_allowed_by else (),
        tuple(map(_policy, egress_allowed_by)) if egress_allowed_by else (),
    )


def endpoint_from_wire(data: bytes) -> Any:
    """The ingest's `Endpoint` struct of a `flow_pb2.Endpoint`'s encoding (a received flow's `source`
    or `destination`): what the ingest's resolver decodes, once per distinct endpoint."""
    endpoint = flow_pb2.Endpoint.FromString(data)
    return Endpoint(
        ID=endpoint.ID,
        identity=endpoint.identity,
        cluster_name=endpoint.cluster_name,
        namespace=endpoint.namespace,
        labels=tuple(endpoint.labels),
        pod_name=endpoint.pod_name,
        workloads=tuple(Workload(w.name, w.kind) for w in endpoint.workloads),
    )


def _layer4(flow: Any) -> Any:
    """The flow's `l4` (None when absent), its layer passed by position (TCP, UDP, SCTP, ICMPv4, ICMPv6)."""
    l4 = flow.l4
    protocol = l4.WhichOneof("protocol")
    if protocol == "TCP":
        tcp = l4.TCP
        flags = _TCP_FLAGS[tcp.flags.SYN, tcp.flags.ACK] if tcp.HasField("flags") else None
        return _Layer4(_PortLayer(tcp.source_port, tcp.destination_port, flags))
    if protocol == "UDP":
        udp = l4.UDP
        return _Layer4(None, _PortLayer(udp.source_port, udp.destination_port))
    if protocol == "SCTP":
        sctp = l4.SCTP
        return _Layer4(None, None, _PortLayer(sctp.source_port, sctp.destination_port))
    if protocol == "ICMPv4" or protocol == "ICMPv6":
        icmp = getattr(l4, protocol)
        return _Layer4(**{protocol: _ICMPLayer(icmp.type, icmp.code)})
    return _Layer4() if flow.HasField("l4") else None  # another transport, or none: the ingest skips the flow


def _event_type(event_type: int, sub_type: int) -> Any:
    found = _EVENT_TYPES.get((event_type, sub_type))
    if found is None:
        found = _EVENT_TYPES[event_type, sub_type] = _EventType(event_type, sub_type)
    return found


def _service(service: Any) -> Any:
    """None for an absent or nameless service: the ingest ignores both alike."""
    name = service.name
    return _Service(name, service.namespace) if name else None


def _layer7(l7: Any) -> Any:
    dns = _DNS(l7.dns.query, tuple(l7.dns.ips)) if l7.HasField("dns") else None
    return _Layer7(_L7_TYPES.get(l7.type, l7.type), dns)


def _policy(policy: Any) -> Any:
    return _Policy(policy.name, policy.namespace, policy.kind)
