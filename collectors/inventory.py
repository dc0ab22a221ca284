"""The cluster inventory: pods, namespaces, Services, EndpointSlices, nodes and NetworkPolicies.

Read from a snapshot file (the output of `kubectl get pods,services,endpointslices,namespaces,nodes,
networkpolicies -A -o json` as it is, `-o yaml`, or a plain JSON/YAML list of objects; gzip or not) or
from the Kubernetes API (`collectors.inventory_api`), and written back as the same kubectl-style `List`.
Each model class converts from and to its API object and keeps only what the recommender uses, so a
snapshot written from an inventory reads back as an equal inventory.

    inventory = load_inventory("cluster.json")          # or inventory_from_cluster(context="prod")
    [pod.workload for pod in inventory.pods_by_ip("10.244.1.7")]
    write_snapshot(inventory, "cluster.json.gz")
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, TypeVar

import msgspec
import yaml

from collectors.decoding import FieldError, Lenient, decode, describe
from collectors.errors import CollectorError
from collectors.names import (
    InvalidName,
    check_cidr,
    check_ip,
    check_kind,
    check_labels,
    check_namespace,
    check_object_name,
)
from collectors.sources import display_name, open_input

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TEMPLATE_HASH_LABEL = "pod-template-hash"
_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
_CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
_CRONJOB_JOB_NAME = re.compile(r"(.+)-[0-9]{8,}")
"""A Job a CronJob created: `<cronjob>-<scheduled time in minutes since the epoch>`."""
T = TypeVar("T")


# -- the API objects, as read: only the fields the model keeps ------------------------------------


class _OwnerReference(Lenient, frozen=True):
    kind: str
    name: str
    controller: bool = False


class _Metadata(Lenient, frozen=True):
    name: str
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    owner_references: tuple[_OwnerReference, ...] = ()
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


class _NamespacedMetadata(_Metadata, kw_only=True, frozen=True):
    namespace: str


class _ContainerPort(Lenient, frozen=True):
    container_port: int
    name: str = ""
    protocol: str = "TCP"


class _Container(Lenient, frozen=True):
    name: str
    ports: tuple[_ContainerPort, ...] = ()
    restart_policy: str = ""


class _PodSpec(Lenient, frozen=True):
    node_name: str = ""
    host_network: bool = False
    containers: tuple[_Container, ...] = ()
    init_containers: tuple[_Container, ...] = ()


class _PodIP(Lenient, frozen=True):
    ip: str


class _PodStatus(Lenient, frozen=True):
    phase: str = ""
    pod_ip: str = msgspec.field(default="", name="podIP")
    pod_ips: tuple[_PodIP, ...] = msgspec.field(default=(), name="podIPs")


class _PodObject(Lenient, frozen=True):
    metadata: _NamespacedMetadata
    spec: _PodSpec = msgspec.field(default_factory=_PodSpec)
    status: _PodStatus = msgspec.field(default_factory=_PodStatus)


class _NamespaceObject(Lenient, frozen=True):
    metadata: _Metadata


class _ServicePort(Lenient, frozen=True):
    port: int
    target_port: int | str | None = None
    name: str = ""
    protocol: str = "TCP"
    node_port: int | None = None


class _ServiceSpec(Lenient, frozen=True):
    type: str = "ClusterIP"
    cluster_ip: str = msgspec.field(default="", name="clusterIP")
    cluster_ips: tuple[str, ...] = msgspec.field(default=(), name="clusterIPs")
    ports: tuple[_ServicePort, ...] = ()
    selector: dict[str, str] = msgspec.field(default_factory=dict)


class _ServiceObject(Lenient, frozen=True):
    metadata: _NamespacedMetadata
    spec: _ServiceSpec = msgspec.field(default_factory=_ServiceSpec)


class _TargetReference(Lenient, frozen=True):
    name: str
    kind: str = ""
    namespace: str = ""


class _Conditions(Lenient, frozen=True):
    ready: bool = True  # unset means ready (API reference)


class _SliceEndpoint(Lenient, frozen=True):
    addresses: tuple[str, ...] = ()
    conditions: _Conditions = msgspec.field(default_factory=_Conditions)
    target_ref: _TargetReference | None = None
    node_name: str = ""


class _SlicePort(Lenient, frozen=True):
    port: int | None = None
    name: str = ""
    protocol: str = "TCP"


class _EndpointSliceObject(Lenient, frozen=True):
    metadata: _NamespacedMetadata
    address_type: str = "IPv4"
    endpoints: tuple[_SliceEndpoint, ...] = ()
    ports: tuple[_SlicePort, ...] = ()


class _NodeAddress(Lenient, frozen=True):
    type: str
    address: str


class _NodeSpec(Lenient, frozen=True):
    pod_cidr: str = msgspec.field(default="", name="podCIDR")
    pod_cidrs: tuple[str, ...] = msgspec.field(default=(), name="podCIDRs")


class _NodeStatus(Lenient, frozen=True):
    addresses: tuple[_NodeAddress, ...] = ()


class _NodeObject(Lenient, frozen=True):
    metadata: _Metadata
    spec: _NodeSpec = msgspec.field(default_factory=_NodeSpec)
    status: _NodeStatus = msgspec.field(default_factory=_NodeStatus)


class _PolicyObject(Lenient, frozen=True):
    """Any policy kind: its spec (and Cilium's specs) kept as they are, for the policy parsers."""

    metadata: _Metadata
    kind: str = "NetworkPolicy"
    api_version: str = "networking.k8s.io/v1"
    spec: dict[str, Any] = msgspec.field(default_factory=dict)
    specs: list[Any] = msgspec.field(default_factory=list)


class _Kind(Lenient, frozen=True):
    kind: Annotated[str, msgspec.Meta(min_length=1)]


def _checked(path: str, check: Callable[[T], object], value: T) -> T:
    """`value` (read from `path`) if `check` (of `collectors.names`) accepts it."""
    try:
        check(value)
    except InvalidName as exc:
        raise FieldError(path, str(exc)) from None
    return value


def _namespace(metadata: _Metadata) -> str:
    return _checked("metadata.namespace", check_namespace, metadata.namespace)


def _object_name(metadata: _Metadata, what: str) -> str:
    """`metadata.name`, an object name (of a `what`)."""
    return _checked("metadata.name", lambda name: check_object_name(name, f"{what} name"), metadata.name)


def _labels(metadata: _Metadata) -> dict[str, str]:
    """`metadata.labels`, in the Kubernetes label syntax."""
    return _checked("metadata.labels", check_labels, metadata.labels)


def _utc(value: datetime | None) -> datetime | None:
    """An RFC 3339 time in UTC (one without a zone is taken as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _format_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Drop unset fields (None, "", empty lists and maps) the way the API server omits them."""
    return {key: value for key, value in mapping.items() if value is not None and value not in ("", {}, [])}


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """A controller or workload: `Deployment/frontend`, `ReplicaSet/frontend-7d9c5b8f6d`, `Pod/debug`."""

    kind: str
    name: str


def top_owner(pod_name: str, labels: Mapping[str, str], controller: Owner | None) -> Owner:
    """The workload a pod belongs to, from its controller reference and labels alone.

    The inventory may only list pods (no ReplicaSets or Jobs), so the controller's own owner is
    recognised by the names Kubernetes gives it: a ReplicaSet `<deployment>-<pod-template-hash>` is
    a Deployment's, a Job `<cronjob>-<8+ digits>` of a pod with the Job labels is a CronJob's. Bare
    pods and static pods (mirrored by their Node) are their own workload.
    """
    if controller is None or controller.kind == "Node":
        return Owner("Pod", pod_name)
    if controller.kind == "ReplicaSet":
        template_hash = labels.get(TEMPLATE_HASH_LABEL, "")
        if template_hash and controller.name.endswith(f"-{template_hash}"):
            return Owner("Deployment", controller.name[: -len(template_hash) - 1])
    if controller.kind == "Job":
        match = _CRONJOB_JOB_NAME.fullmatch(controller.name)
        job_labels = any(labels.get(key) == controller.name for key in _JOB_NAME_LABELS)
        if match and job_labels and any(key in labels for key in _CONTROLLER_UID_LABELS):
            return Owner("CronJob", match.group(1))
    return controller


def _controller(metadata: _Metadata) -> Owner | None:
    """The owner reference marked `controller` (else the first one): who created the pod."""
    references = metadata.owner_references
    index = next((i for i, ref in enumerate(references) if ref.controller), 0 if references else None)
    if index is None:
        return None
    path = f"metadata.ownerReferences[{index}]"
    chosen = references[index]
    name = _checked(f"{path}.name", lambda name: check_object_name(name, "owner name"), chosen.name)
    return Owner(_checked(f"{path}.kind", check_kind, chosen.kind), name)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container: str
    port: int
    name: str = ""
    protocol: str = "TCP"

    def to_object(self) -> dict[str, Any]:
        return _compact({"name": self.name, "containerPort": self.port, "protocol": self.protocol})


def _port_key(port: ContainerPort) -> tuple[str, int, str, str]:
    return port.container, port.port, port.protocol, port.name


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod; `owner` is its workload (see `top_owner`), `controller` its direct controller, and
    `ports` the ports of its containers and sidecars, sorted by container.

    `ips` are the pod's IPs (for a hostNetwork pod, its node's). They stay on a terminated pod
    (phase Succeeded/Failed) and may have been given to a newer pod since: compare the times.
    """

    namespace: str
    name: str
    owner: Owner
    uid: str = ""
    ips: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    controller: Owner | None = None
    node: str = ""
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()
    created: datetime | None = None
    deleted: datetime | None = None
    phase: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", tuple(sorted(self.ports, key=_port_key)))

    @property
    def workload(self) -> tuple[str, str, str]:
        """(namespace, owner kind, owner name)."""
        return self.namespace, self.owner.kind, self.owner.name

    @classmethod
    def from_object(cls, item: _PodObject) -> Pod:
        metadata, spec, status = item.metadata, item.spec, item.status
        name, labels, controller = _object_name(metadata, "pod"), _labels(metadata), _controller(metadata)
        ips = [(f"status.podIPs[{i}].ip", entry.ip) for i, entry in enumerate(status.pod_ips)]
        sidecars = tuple(c for c in spec.init_containers if c.restart_policy == "Always")
        return cls(
            namespace=_namespace(metadata),
            name=name,
            uid=metadata.uid,
            ips=tuple(_checked(path, check_ip, ip) for path, ip in ips or [("status.podIP", status.pod_ip)] if ip),
            labels=labels,
            owner=top_owner(name, labels, controller),
            controller=controller,
            node=spec.node_name,
            host_network=spec.host_network,
            ports=tuple(
                ContainerPort(container.name, port.container_port, port.name, port.protocol)
                for container in spec.containers + sidecars
                for port in container.ports
            ),
            created=_utc(metadata.creation_timestamp),
            deleted=_utc(metadata.deletion_timestamp),
            phase=status.phase,
        )

    def to_object(self) -> dict[str, Any]:
        containers: dict[str, list[dict[str, Any]]] = {}
        for port in self.ports:
            containers.setdefault(port.container, []).append(port.to_object())
        controller = self.controller
        metadata = {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "labels": self.labels,
            "ownerReferences": [{"kind": controller.kind, "name": controller.name, "controller": True}]
            if controller
            else None,
            "creationTimestamp": _format_time(self.created),
            "deletionTimestamp": _format_time(self.deleted),
        }
        spec = {
            "nodeName": self.node,
            "hostNetwork": self.host_network or None,
            "containers": [{"name": name, "ports": ports} for name, ports in containers.items()],
        }
        status = {
            "phase": self.phase,
            "podIP": self.ips[0] if self.ips else None,
            "podIPs": [{"ip": ip} for ip in self.ips],
        }
        return _object("v1", "Pod", metadata, spec=_compact(spec), status=_compact(status))


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace; its labels always include `kubernetes.io/metadata.name`, as the API server sets it."""

    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", {**self.labels, NAMESPACE_NAME_LABEL: self.name})

    @classmethod
    def from_object(cls, item: _NamespaceObject) -> Namespace:
        return cls(_checked("metadata.name", check_namespace, item.metadata.name), _labels(item.metadata))

    def to_object(self) -> dict[str, Any]:
        return _object("v1", "Namespace", {"name": self.name, "labels": self.labels})


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target_port: int | str
    """The pod's port: a number, or the name of a container port."""
    name: str = ""
    protocol: str = "TCP"
    node_port: int | None = None

    @classmethod
    def from_object(cls, port: _ServicePort) -> ServicePort:
        target = port.port if port.target_port is None else port.target_port
        return cls(port.port, target, port.name, port.protocol, port.node_port)

    def to_object(self) -> dict[str, Any]:
        return _compact(
            {
                "name": self.name,
                "port": self.port,
                "targetPort": self.target_port,
                "protocol": self.protocol,
                "nodePort": self.node_port,
            }
        )


@dataclass(frozen=True, slots=True)
class Service:
    """A Service; `cluster_ips` is empty for a headless or ExternalName one."""

    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def headless(self) -> bool:
        return self.type == "ClusterIP" and not self.cluster_ips

    @classmethod
    def from_object(cls, item: _ServiceObject) -> Service:
        spec = item.spec
        ips = spec.cluster_ips or (spec.cluster_ip,)
        return cls(
            namespace=_namespace(item.metadata),
            name=_object_name(item.metadata, "Service"),
            type=spec.type,
            cluster_ips=tuple(_checked("spec.clusterIPs", check_ip, ip) for ip in ips if ip not in ("", "None")),
            ports=tuple(ServicePort.from_object(port) for port in spec.ports),
            selector=_checked("spec.selector", check_labels, spec.selector),
        )

    def to_object(self) -> dict[str, Any]:
        ips = ["None"] if self.headless else list(self.cluster_ips)
        spec = {
            "type": self.type,
            "clusterIP": ips[0] if ips else None,
            "clusterIPs": ips,
            "ports": [port.to_object() for port in self.ports],
            "selector": self.selector,
        }
        return _object("v1", "Service", {"namespace": self.namespace, "name": self.name}, spec=_compact(spec))


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice; `pod` is the (namespace, name) of its target pod, if any."""

    addresses: tuple[str, ...]
    ready: bool = True
    pod: tuple[str, str] | None = None
    node: str = ""

    @classmethod
    def from_object(cls, endpoint: _SliceEndpoint, path: str, namespace: str) -> SliceEndpoint:
        target = endpoint.target_ref
        pod = (target.namespace or namespace, target.name) if target is not None and target.kind == "Pod" else None
        return cls(
            addresses=tuple(_checked(f"{path}.addresses", check_ip, ip) for ip in endpoint.addresses),
            ready=endpoint.conditions.ready,
            pod=pod,
            node=endpoint.node_name,
        )

    def to_object(self) -> dict[str, Any]:
        target = self.pod and {"kind": "Pod", "namespace": self.pod[0], "name": self.pod[1]}
        return _compact(
            {
                "addresses": list(self.addresses),
                "conditions": {"ready": self.ready},
                "targetRef": target,
                "nodeName": self.node,
            }
        )


@dataclass(frozen=True, slots=True)
class SlicePort:
    port: int | None
    """None means every port."""
    name: str = ""
    protocol: str = "TCP"

    def to_object(self) -> dict[str, Any]:
        return _compact({"name": self.name, "port": self.port, "protocol": self.protocol})


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice of the Service named `service` (label `kubernetes.io/service-name`)."""

    namespace: str
    name: str
    service: str = ""
    address_type: str = "IPv4"
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()

    @classmethod
    def from_object(cls, item: _EndpointSliceObject) -> EndpointSlice:
        namespace = _namespace(item.metadata)
        return cls(
            namespace=namespace,
            name=_object_name(item.metadata, "EndpointSlice"),
            service=item.metadata.labels.get(SERVICE_NAME_LABEL, ""),
            address_type=item.address_type,
            endpoints=tuple(
                SliceEndpoint.from_object(endpoint, f"endpoints[{i}]", namespace)
                for i, endpoint in enumerate(item.endpoints)
            ),
            ports=tuple(SlicePort(port.port, port.name, port.protocol) for port in item.ports),
        )

    def to_object(self) -> dict[str, Any]:
        metadata = {
            "namespace": self.namespace,
            "name": self.name,
            "labels": {SERVICE_NAME_LABEL: self.service} if self.service else None,
        }
        return _object(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            metadata,
            addressType=self.address_type,
            endpoints=[endpoint.to_object() for endpoint in self.endpoints],
            ports=[port.to_object() for port in self.ports],
        )


_NODE_IPS = ("InternalIP", "ExternalIP")


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    internal_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_object(cls, item: _NodeObject) -> Node:
        addresses = list(enumerate(item.status.addresses))
        ips = {
            kind: tuple(
                _checked(f"status.addresses[{i}].address", check_ip, a.address) for i, a in addresses if a.type == kind
            )
            for kind in _NODE_IPS
        }
        cidrs = item.spec.pod_cidrs or tuple(cidr for cidr in [item.spec.pod_cidr] if cidr)
        return cls(
            name=_object_name(item.metadata, "Node"),
            internal_ips=ips["InternalIP"],
            external_ips=ips["ExternalIP"],
            pod_cidrs=tuple(_checked("spec.podCIDRs", check_cidr, cidr) for cidr in cidrs),
            labels=item.metadata.labels,
        )

    def to_object(self) -> dict[str, Any]:
        addresses = [{"type": "InternalIP", "address": ip} for ip in self.internal_ips] + [
            {"type": "ExternalIP", "address": ip} for ip in self.external_ips
        ]
        spec = {"podCIDR": self.pod_cidrs[0] if self.pod_cidrs else None, "podCIDRs": list(self.pod_cidrs)}
        return _object(
            "v1",
            "Node",
            {"name": self.name, "labels": self.labels},
            spec=_compact(spec),
            status=_compact({"addresses": addresses}),
        )


def _policy(item: _PolicyObject) -> dict[str, Any]:
    """A policy (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, ClusterNetworkPolicy)
    reduced to what defines it: apiVersion, kind, name, namespace, labels, spec (and Cilium's specs).

    Status, managedFields, uid, resourceVersion and annotations (such as kubectl's
    last-applied-configuration) are dropped, so that policies compare equal across clusters and
    snapshots and can be fed to the evaluator as they are.
    """
    metadata = item.metadata
    if not metadata.namespace and item.kind not in ("CiliumClusterwideNetworkPolicy", "ClusterNetworkPolicy"):
        raise FieldError("metadata.namespace", "is required")
    reduced = {"namespace": metadata.namespace, "name": metadata.name, "labels": metadata.labels}
    return _object(item.api_version, item.kind, reduced, spec=item.spec, specs=item.specs)


def _object(api_version: str, kind: str, metadata: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": _compact(metadata), **_compact(body)}


def _name_key(item: Any) -> tuple[str, str]:
    return getattr(item, "namespace", ""), item.name


def _policy_key(policy: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = policy["metadata"]
    return metadata.get("namespace", ""), policy.get("kind", "NetworkPolicy"), metadata["name"]


def _oldest_first(pod: Pod) -> tuple[datetime, str, str]:
    return pod.created or datetime.min.replace(tzinfo=UTC), pod.namespace, pod.name


@dataclass(frozen=True)
class Inventory:
    """Everything known about a cluster's pods, Services, nodes and policies; sorted by name.

    Lookups are by the IPs the API server reports, in their canonical text form.
    """

    pods: tuple[Pod, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    nodes: tuple[Node, ...] = ()
    network_policies: tuple[dict[str, Any], ...] = ()
    """Plain policy objects, reduced as `_policy` does."""

    def __post_init__(self) -> None:
        for name in ("pods", "namespaces", "services", "endpoint_slices", "nodes"):
            object.__setattr__(self, name, tuple(sorted(getattr(self, name), key=_name_key)))
        object.__setattr__(self, "network_policies", tuple(sorted(self.network_policies, key=_policy_key)))

    def pods_by_ip(self, ip: str) -> tuple[Pod, ...]:
        """Every pod that has or had `ip`, oldest first: IPs are reused, and every hostNetwork pod of
        a node has the node's IP. Tell them apart with `created`, `deleted`, `phase` and `host_network`."""
        return self._pods_by_ip.get(ip, ())

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self._pods_by_name.get((namespace, name))

    def pods_in_namespace(self, namespace: str) -> tuple[Pod, ...]:
        return self._pods_by_namespace.get(namespace, ())

    def service_by_cluster_ip(self, ip: str) -> Service | None:
        return self._services_by_ip.get(ip)

    def endpoint_slices_of(self, service: Service) -> tuple[EndpointSlice, ...]:
        return self._slices_by_service.get((service.namespace, service.name), ())

    def node(self, name: str) -> Node | None:
        return self._nodes_by_name.get(name)

    def node_by_ip(self, ip: str) -> Node | None:
        """The node with this internal or external IP."""
        return self._nodes_by_ip.get(ip)

    def node_by_pod_cidr(self, ip: str) -> Node | None:
        """The node whose pod CIDR contains `ip` (a pod IP, possibly of a pod not in the inventory)."""
        address = ipaddress.ip_address(ip)
        return next((node for network, node in self._pod_networks if address in network), None)

    def node_by_pod_gateway(self, ip: str) -> Node | None:
        """The node whose pod network has `ip` as its gateway, the first address of a pod CIDR (the
        bridge `cni0`, or the node's routing address): the node's own side of its pods' network."""
        address = ipaddress.ip_address(ip)
        return next((node for network, node in self._pod_networks if address == network.network_address + 1), None)

    @cached_property
    def namespace_labels(self) -> dict[str, dict[str, str]]:
        """Namespace name → its labels."""
        return {namespace.name: namespace.labels for namespace in self.namespaces}

    @cached_property
    def _pods_by_ip(self) -> dict[str, tuple[Pod, ...]]:
        found: dict[str, list[Pod]] = {}
        for pod in self.pods:
            for ip in pod.ips:
                found.setdefault(ip, []).append(pod)
        return {ip: tuple(sorted(pods, key=_oldest_first)) for ip, pods in found.items()}

    @cached_property
    def _pods_by_name(self) -> dict[tuple[str, str], Pod]:
        return {(pod.namespace, pod.name): pod for pod in self.pods}

    @cached_property
    def _pods_by_namespace(self) -> dict[str, tuple[Pod, ...]]:
        return _group(self.pods, lambda pod: pod.namespace)

    @cached_property
    def _services_by_ip(self) -> dict[str, Service]:
        return {ip: service for service in self.services for ip in service.cluster_ips}

    @cached_property
    def _slices_by_service(self) -> dict[tuple[str, str], tuple[EndpointSlice, ...]]:
        return _group(self.endpoint_slices, lambda item: (item.namespace, item.service))

    @cached_property
    def _nodes_by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    @cached_property
    def _nodes_by_ip(self) -> dict[str, Node]:
        return {ip: node for node in self.nodes for ip in (*node.internal_ips, *node.external_ips)}

    @cached_property
    def _pod_networks(self) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Node]]:
        return [(ipaddress.ip_network(cidr, strict=False), node) for node in self.nodes for cidr in node.pod_cidrs]


def _group(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, tuple[Any, ...]]:
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return {name: tuple(members) for name, members in groups.items()}


# -- reading and writing ------------------------------------------------------------------------

POLICY_CRD_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "ClusterNetworkPolicy")
"""Policy kinds of CRDs, read beside NetworkPolicies (into `Inventory.network_policies`) where installed."""

_READERS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "Pod": (_PodObject, Pod.from_object),
    "Service": (_ServiceObject, Service.from_object),
    "EndpointSlice": (_EndpointSliceObject, EndpointSlice.from_object),
    "Namespace": (_NamespaceObject, Namespace.from_object),
    "Node": (_NodeObject, Node.from_object),
    **{kind: (_PolicyObject, _policy) for kind in ("NetworkPolicy", *POLICY_CRD_KINDS)},
}
"""The kinds of the inventory: the struct each is decoded into, and how the model is built from it."""


def inventory_from_objects(items: Iterable[object], source: str) -> Inventory:
    """Build an inventory from API objects of any kind (other kinds are not part of it and are skipped).

    Raises `CollectorError` naming `source`, the item's index and the bad field.
    """
    found: dict[str, list[Any]] = {kind: [] for kind in _READERS}
    seen: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(items):
        try:
            kind = decode(item, _Kind).kind
            if kind not in _READERS:
                continue
            struct, build = _READERS[kind]
            decoded: Any = decode(item, struct)  # one of the `_READERS` structs
            read = build(decoded)
        except FieldError as exc:
            raise CollectorError(f"{source}: item {index}{_item_name(item)}: {exc}") from None
        key = (kind, decoded.metadata.namespace, decoded.metadata.name)
        if key in seen:
            raise CollectorError(f"{source}: item {index}{_item_name(item)}: the same object as item {seen[key]}")
        seen[key] = index
        found[kind].append(read)
    return Inventory(
        pods=tuple(found["Pod"]),
        namespaces=tuple(found["Namespace"]),
        services=tuple(found["Service"]),
        endpoint_slices=tuple(found["EndpointSlice"]),
        nodes=tuple(found["Node"]),
        network_policies=tuple(policy for kind in ("NetworkPolicy", *POLICY_CRD_KINDS) for policy in found[kind]),
    )


def _item_name(item: object) -> str:
    """` (Pod shop/frontend-x)`, or as much of it as the item has."""
    if not isinstance(item, dict):
        return ""
    metadata = item.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    parts = [str(metadata[key]) for key in ("namespace", "name") if isinstance(metadata.get(key), str)]
    name = " ".join(filter(None, [str(item.get("kind") or ""), "/".join(parts)]))
    return f" ({name})" if name else ""


def list_items(document: object, source: str) -> Iterator[object]:
    """The objects of one document: a `List` or `PodList`-style list (its items inherit the list's
    kind and apiVersion when they lack them, as in API responses), a plain list, or one object."""
    if isinstance(document, list):
        yield from document
    elif isinstance(document, dict) and isinstance(document.get("items"), list):
        kind = str(document.get("kind", ""))
        typed = kind.endswith("List") and kind != "List"
        inherited = {"kind": kind.removesuffix("List"), "apiVersion": document.get("apiVersion")} if typed else {}
        for item in document["items"]:
            yield {**inherited, **item} if inherited and isinstance(item, dict) else item
    elif isinstance(document, dict) and "kind" in document:
        yield document
    elif document is not None:
        raise CollectorError(
            f"{source}: expected a Kubernetes List (kubectl get ... -o json), a list of objects or an object, "
            f"got {describe(document)}"
        )


def load_inventory(path: str) -> Inventory:
    """Read a snapshot: `kubectl get pods,services,endpointslices,namespaces,nodes,networkpolicies -A
    -o json` (or `-o yaml`) output, a JSON or YAML list of objects, or a file `write_snapshot` wrote;
    gzip-compressed or not; `-` is stdin."""
    name = display_name(path)
    documents = _parse_documents(_read_text(path), name)
    inventory = inventory_from_objects((item for document in documents for item in list_items(document, name)), name)
    if inventory == Inventory():
        raise CollectorError(f"{name}: no pods, namespaces, services, endpointslices, nodes or networkpolicies")
    return inventory


def _read_text(path: str) -> str:
    stream = open_input(path)
    try:
        return stream.read().decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CollectorError(f"{display_name(path)}: cannot read: {exc}") from exc
    finally:
        stream.close()


def _parse_documents(text: str, name: str) -> list[object]:
    """JSON when the text starts like JSON (fast, precise errors), else YAML (one or more documents)."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise CollectorError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise CollectorError(f"{name}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None


def snapshot_document(inventory: Inventory) -> dict[str, Any]:
    """The inventory as a kubectl-style `List`, kinds in `kubectl get` order, each sorted by name."""
    items = [
        *(pod.to_object() for pod in inventory.pods),
        *(service.to_object() for service in inventory.services),
        *(endpoint_slice.to_object() for endpoint_slice in inventory.endpoint_slices),
        *(namespace.to_object() for namespace in inventory.namespaces),
        *(node.to_object() for node in inventory.nodes),
        *inventory.network_policies,
    ]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def snapshot_json(inventory: Inventory) -> str:
    """The snapshot text: the same inventory always gives the same bytes."""
    return json.dumps(snapshot_document(inventory), indent=4, sort_keys=True, ensure_ascii=False) + "\n"


def write_snapshot(inventory: Inventory, path: str) -> None:
    """Write the snapshot `load_inventory` and kubectl users read; gzip-compressed when `path` ends in `.gz`."""
    data = snapshot_json(inventory).encode("utf-8")
    try:
        with open(path, "wb") as out:
            if path.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed:
                    compressed.write(data)
            else:
                out.write(data)
    except OSError as exc:
        raise CollectorError(f"{path}: cannot write: {exc.strerror}") from exc


def inventory_from_cluster(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    page_size: int = 500,
    timeout: float = 30.0,
) -> Inventory:
    """Read the inventory from the Kubernetes API (see `inventory_api.list_pages` for the connection)."""
    from collectors import inventory_api  # the kubernetes client: 2 s and 50 MB to import, for the cluster only

    pages = inventory_api.list_pages(kubeconfig, context, page_size=page_size, timeout=timeout)
    return inventory_from_objects(
        (item for page in pages for item in list_items(page, "the API server")), "the API server"
    )
