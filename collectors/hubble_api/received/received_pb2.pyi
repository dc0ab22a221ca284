import datetime

from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ..flow import flow_pb2 as _flow_pb2
from ..relay import relay_pb2 as _relay_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetFlowsResponse(_message.Message):
    __slots__ = ("flow", "node_status", "lost_events", "node_name", "time")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    LOST_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    flow: Flow
    node_status: _relay_pb2.NodeStatusEvent
    lost_events: _flow_pb2.LostEvent
    node_name: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, flow: _Optional[_Union[Flow, _Mapping]] = ..., node_status: _Optional[_Union[_relay_pb2.NodeStatusEvent, _Mapping]] = ..., lost_events: _Optional[_Union[_flow_pb2.LostEvent, _Mapping]] = ..., node_name: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("time", "uuid", "verdict", "IP", "l4", "source", "destination", "Type", "node_name", "source_names", "destination_names", "l7", "reply", "event_type", "source_service", "destination_service", "drop_reason_desc", "is_reply", "egress_allowed_by", "ingress_allowed_by")
    TIME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    L4_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NAMES_FIELD_NUMBER: _ClassVar[int]
    L7_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SERVICE_FIELD_NUMBER: _ClassVar[int]
    DROP_REASON_DESC_FIELD_NUMBER: _ClassVar[int]
    IS_REPLY_FIELD_NUMBER: _ClassVar[int]
    EGRESS_ALLOWED_BY_FIELD_NUMBER: _ClassVar[int]
    INGRESS_ALLOWED_BY_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    uuid: str
    verdict: _flow_pb2.Verdict
    IP: _flow_pb2.IP
    l4: _flow_pb2.Layer4
    source: bytes
    destination: bytes
    Type: _flow_pb2.FlowType
    node_name: str
    source_names: _containers.RepeatedScalarFieldContainer[str]
    destination_names: _containers.RepeatedScalarFieldContainer[str]
    l7: _flow_pb2.Layer7
    reply: bool
    event_type: _flow_pb2.CiliumEventType
    source_service: _flow_pb2.Service
    destination_service: _flow_pb2.Service
    drop_reason_desc: _flow_pb2.DropReason
    is_reply: _wrappers_pb2.BoolValue
    egress_allowed_by: _containers.RepeatedCompositeFieldContainer[_flow_pb2.Policy]
    ingress_allowed_by: _containers.RepeatedCompositeFieldContainer[_flow_pb2.Policy]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uuid: _Optional[str] = ..., verdict: _Optional[_Union[_flow_pb2.Verdict, str]] = ..., IP: _Optional[_Union[_flow_pb2.IP, _Mapping]] = ..., l4: _Optional[_Union[_flow_pb2.Layer4, _Mapping]] = ..., source: _Optional[bytes] = ..., destination: _Optional[bytes] = ..., Type: _Optional[_Union[_flow_pb2.FlowType, str]] = ..., node_name: _Optional[str] = ..., source_names: _Optional[_Iterable[str]] = ..., destination_names: _Optional[_Iterable[str]] = ..., l7: _Optional[_Union[_flow_pb2.Layer7, _Mapping]] = ..., reply: _Optional[bool] = ..., event_type: _Optional[_Union[_flow_pb2.CiliumEventType, _Mapping]] = ..., source_service: _Optional[_Union[_flow_pb2.Service, _Mapping]] = ..., destination_service: _Optional[_Union[_flow_pb2.Service, _Mapping]] = ..., drop_reason_desc: _Optional[_Union[_flow_pb2.DropReason, str]] = ..., is_reply: _Optional[_Union[_wrappers_pb2.BoolValue, _Mapping]] = ..., egress_allowed_by: _Optional[_Iterable[_Union[_flow_pb2.Policy, _Mapping]]] = ..., ingress_allowed_by: _Optional[_Iterable[_Union[_flow_pb2.Policy, _Mapping]]] = ...) -> None: ...
