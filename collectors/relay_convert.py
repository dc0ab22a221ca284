"""Hubble GetFlowsResponse wire bytes → the msgspec `Flow` structs that `HubbleIngest.add_flow` reads.

The Relay client's hot path. A flow from Relay must reach the ingest in the shape the JSON decoder
gives the same flow from a file (`collectors.hubble_schema`: enum names as str, unset enums as 0,
absent messages as None, endpoints as `Endpoint` structs; a nameless service becomes None, which the
ingest treats alike), and fast: reading a protobuf message
field by field from Python costs more than the rest of the ingest. So responses are decoded with a
*view* of `observer.GetFlowsResponse`: the same field numbers, but the flow's sub-messages that
repeat from flow to flow (endpoints, IP pairs, event types, services) are left as their wire bytes,
which key caches of converted structs; labels are decoded once per distinct endpoint, not per flow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import BoolValue

from collectors.hubble_api.flow import flow_pb2
from collectors.hubble_api.observer import observer_pb2
from collectors.hubble_api.relay import relay_pb2
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
if Flow.__struct_fields__ != _FLOW_FIELDS:  # `convert` passes them by position: 7x faster than keywords
    raise ImportError(f"collectors.hubble_schema's Flow fields changed; update {__name__}._FLOW_FIELDS and convert()")


def _nonzero_names(enum: EnumTypeWrapper) -> dict[int, str]:
    """Number → name of an enum's values, except 0: an unset enum stays 0, as when decoding JSON
    (protojson leaves zero values out); a number this proto does not know stays a number."""
    return {value.number: value.name for value in enum.DESCRIPTOR.values if value.number}


_VERDICTS = _nonzero_names(flow_pb2.Verdict)
_FLOW_TYPES = _nonzero_names(flow_pb2.FlowType)
_DROP_REASONS = _nonzero_names(flow_pb2.DropReason)
_L7_TYPES = _nonzero_names(flow_pb2.L7FlowType)


def _response_views() -> tuple[type, type]:
    """Message classes that decode `observer.GetFlowsResponse` wire bytes (one, or a block) into the view.

    Built from Cilium's descriptors, so names and numbers cannot drift: the view's Flow keeps the
    fields of the msgspec schema, with message fields as `bytes`, enums as int32 (no closed-enum
    surprises) and proto2 presence (`HasField` tells an absent `is_reply` from false).
    """
    fields = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="netpol_recommender/hubble_flow_view.proto", package="netpol_recommender.view", syntax="proto2"
    )
    flow = file.message_type.add(name="FlowView")
    for name in _FLOW_FIELDS:
        real = flow_pb2.Flow.DESCRIPTOR.fields_by_name[name]
        kind = {FieldDescriptor.TYPE_MESSAGE: fields.TYPE_BYTES, FieldDescriptor.TYPE_ENUM: fields.TYPE_INT32}
        label = fields.LABEL_REPEATED if real.is_repeated else fields.LABEL_OPTIONAL
        flow.field.add(name=name, number=real.number, label=label, type=kind.get(real.type, real.type))
    response = file.message_type.add(name="GetFlowsResponseView")
    response.oneof_decl.add(name="response_types")
    real_response = observer_pb2.GetFlowsResponse.DESCRIPTOR.fields_by_name
    for name in ("flow", "node_status", "lost_events", "time"):
        real = real_response[name]
        type_name = ".netpol_recommender.view.FlowView" if name == "flow" else f".{real.message_type.full_name}"
        response.field.add(
            name=name, number=real.number, label=fields.LABEL_OPTIONAL, type=fields.TYPE_MESSAGE,
            type_name=type_name, oneof_index=0 if real.containing_oneof else None,
        )  # fmt: skip
    batch = file.message_type.add(name="GetFlowsResponseBatch")
    batch.field.add(
        name="responses", number=1, label=fields.LABEL_REPEATED, type=fields.TYPE_MESSAGE,
        type_name=".netpol_recommender.view.GetFlowsResponseView",
    )  # fmt: skip
    file.dependency.extend(module.DESCRIPTOR.name for module in (flow_pb2, relay_pb2, timestamp_pb2))
    messages = descriptor_pool.Default().Add(file).message_types_by_name
    return tuple(
        message_factory.GetMessageClass(messages[name]) for name in ("GetFlowsResponseView", "GetFlowsResponseBatch")
    )


GetFlowsResponseView, GetFlowsResponseBatch = _response_views()
"""`GetFlowsResponseView` decodes GetFlowsResponse bytes: `WhichOneof("response_types")` is "flow",
"node_status", "lost_events" or None (a response type this client does not know); `time` is the
envelope's. `GetFlowsResponseBatch` decodes a block of the receiver (`relay_receiver.encode_block`):
its `responses` are views, parsed in one call."""


def to_datetime(timestamp: Timestamp) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime, rounded to the microsecond like msgspec's
    RFC 3339 decoder (half up), so Relay and file timestamps compare equal."""
    return EPOCH + timedelta(0, timestamp.seconds, (timestamp.nanos + 500) // 1000)


class _Cache(dict):
    """Wire bytes → converted struct, cleared when full so memory stays bounded on endless streams."""

    def __init__(self, convert: Callable[[bytes], Any], limit: int = 1 << 16) -> None:
        super().__init__()
        self._convert = convert
        self._limit = limit

    def __missing__(self, key: bytes) -> Any:
        if len(self) >= self._limit:
            self.clear()
        value = self[key] = self._convert(key)
        return value


class FlowConverter:
    """Converts the flows of `GetFlowsResponseView` messages; one per stream keeps its caches warm."""

    def __init__(self) -> None:
        self._endpoints = _Cache(_endpoint)
        self._ips = _Cache(_ip)
        self._layer4 = _Cache(_l4)
        self._event_types = _Cache(_event_type)
        self._services = _Cache(_service)
        self._booleans = _Cache(lambda data: BoolValue.FromString(data).value)
        self._layer7 = _Cache(_layer7, limit=4096)
        self._timestamp = Timestamp()
        self._seconds: dict[bytes, datetime] = {}
        self.convert: Callable[[Any], Any] = self._converter()

    def _converter(self) -> Callable[[Any], Any]:
        """`convert`, a closure: caches read as free variables rather than attributes save ~1 µs a flow."""
        endpoints, ips, layer4, layer7 = self._endpoints, self._ips, self._layer4, self._layer7
        event_types, services, booleans, datetime_of = self._event_types, self._services, self._booleans, self._datetime

        def convert(flow: Any) -> Any:
            """The msgspec `Flow` of one `FlowView` (the `flow` of a `GetFlowsResponseView`).

            A sub-message sent empty is told from an absent one (`HasField`) only when its bytes
            are empty, so the common case costs no presence check.
            """
            stamp, ip, l4, event_type, l7 = flow.time, flow.IP, flow.l4, flow.event_type, flow.l7
            is_reply, verdict, flow_type, drop_reason = flow.is_reply, flow.verdict, flow.Type, flow.drop_reason_desc
            source_names, destination_names = flow.source_names, flow.destination_names
            ingress_allowed_by, egress_allowed_by = flow.ingress_allowed_by, flow.egress_allowed_by
            return Flow(
                datetime_of(stamp) if stamp or flow.HasField("time") else None,
                flow.uuid,
                _VERDICTS.get(verdict, verdict),
                ips[ip] if ip or flow.HasField("IP") else None,
                layer4[l4] if l4 or flow.HasField("l4") else None,
                endpoints[flow.source],
                endpoints[flow.destination],
                _FLOW_TYPES.get(flow_type, flow_type),
                flow.node_name,
                tuple(source_names) if source_names else (),
                tuple(destination_names) if destination_names else (),
                layer7[l7] if l7 or flow.HasField("l7") else None,
                flow.reply,
                event_types[event_type] if event_type or flow.HasField("event_type") else None,
                services[flow.source_service],
                services[flow.destination_service],
                _DROP_REASONS.get(drop_reason, drop_reason),
                booleans[is_reply] if is_reply or flow.HasField("is_reply") else None,
                tuple(map(_policy, ingress_allowed_by)) if ingress_allowed_by else (),
                tuple(map(_policy, egress_allowed_by)) if egress_allowed_by else (),
            )

        return convert

    def _datetime(self, data: bytes) -> datetime:
        """A Timestamp's wire bytes as a datetime. Fast path for today's encoding (seconds as a
        5-byte varint, then nanos): keyed by those first 7 bytes, the second's datetime is cached,
        and the nanos varint (at most 5 bytes) is decoded with shifts and masks."""
        second = self._seconds.get(data[:7])
        if second is None:
            if not (len(data) > 7 and data[0] == 0x08 and data[6] == 0x10 and data[5] < 0x80 <= min(data[1:5])):
                stamp = self._timestamp
                stamp.ParseFromString(data)
                return to_datetime(stamp)
            self._seconds.clear()  # times advance: only the current second is worth keeping
            stamp = self._timestamp
            stamp.ParseFromString(data[:6])
            second = self._seconds[data[:7]] = to_datetime(stamp)
        v = int.from_bytes(data[7:], "little")
        nanos = v & 0x7F | v >> 1 & 0x3F80 | v >> 2 & 0x1FC000 | v >> 3 & 0xFE00000 | v >> 4 & 0x7F0000000
        return second + timedelta(0, 0, (nanos + 500) // 1000)


def _endpoint(data: bytes) -> Any:
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


def _ip(data: bytes) -> Any:
    ip = flow_pb2.IP.FromString(data)
    return _IPHeader(ip.source, ip.destination)


def _l4(data: bytes) -> Any:
    l4 = flow_pb2.Layer4.FromString(data)
    protocol = l4.WhichOneof("protocol")
    if protocol is None:
        return _Layer4()
    layer = getattr(l4, protocol)
    if protocol in ("ICMPv4", "ICMPv6"):
        converted = _ICMPLayer(layer.type, layer.code)
    else:
        flags = layer.flags if protocol == "TCP" and layer.HasField("flags") else None
        converted = _PortLayer(layer.source_port, layer.destination_port, flags and _TCPFlags(flags.SYN, flags.ACK))
    return _Layer4(**{protocol: converted})


def _event_type(data: bytes) -> Any:
    event = flow_pb2.CiliumEventType.FromString(data)
    return _EventType(event.type, event.sub_type)


def _service(data: bytes) -> Any:
    """None for an absent or nameless service: the ingest ignores both alike."""
    service = flow_pb2.Service.FromString(data)
    return _Service(service.name, service.namespace) if service.name else None


def _layer7(data: bytes) -> Any:
    l7 = flow_pb2.Layer7.FromString(data)
    dns = _DNS(l7.dns.query, tuple(l7.dns.ips)) if l7.HasField("dns") else None
    return _Layer7(_L7_TYPES.get(l7.type, l7.type), dns)


def _policy(data: bytes) -> Any:
    policy = flow_pb2.Policy.FromString(data)
    return _Policy(policy.name, policy.namespace, policy.kind)
