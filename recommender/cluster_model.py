"""The cluster policies are evaluated against: its namespaces and pods, from the inventory or the
observations, and how each observed endpoint maps onto a semantics endpoint."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.hubble_identity import workload_from_pod_name
from collectors.inventory import Inventory
from collectors.records import POD, ObservationSet, labels_from_text, labels_to_text
from recommender.semantics import (
    AnyPolicy,
    ContainerPort,
    Entity,
    ExternalPeer,
    Namespace,
    Pod,
    Protocol,
    RuleRef,
    parse_policy_set,
)
from recommender.semantics.policies import Direction

ENTITIES = {entity.value: entity for entity in Entity}
"""Observation entities as semantics entities; `unknown` IPs are world to a CNI."""


@dataclass
class ClusterModel:
    """The pods and namespaces policies are evaluated against, and how observations map onto them."""

    namespaces: list[Namespace]
    pods: list[Pod]
    workload_of: dict[Pod, str] = field(default_factory=dict)
    """Each pod's workload key (`namespace/workload`)."""
    by_name: dict[tuple[str, str], Pod] = field(default_factory=dict)
    """Inventory pods by (namespace, name): observed pods are evaluated as the real pod, ports included."""
    dns_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """IP → the DNS names seen for it (Cilium `toFQDNs` match world peers by them)."""
    by_ip: dict[str, Pod] = field(default_factory=dict)
    """Every address any evidence (the inventory, a record naming a pod) gives a pod: such an address
    is that pod in replay, whatever the observations call it."""

    def endpoint(self, row: Any, side: str) -> Pod | ExternalPeer:
        """The semantics endpoint of one side of an observation row."""
        evidence = self.by_ip.get(getattr(row, f"{side}_ip"))
        if evidence is not None:
            return evidence
        if getattr(row, f"{side}_entity") == POD:
            namespace, example = getattr(row, f"{side}_namespace"), getattr(row, f"{side}_pod")
            known = self.by_name.get((namespace, example))
            if known is not None:
                return known
            name = example or getattr(row, f"{side}_workload")
            return Pod(namespace, name, labels_from_text(getattr(row, f"{side}_labels")))
        ip = getattr(row, f"{side}_ip") or None
        entity = ENTITIES.get(getattr(row, f"{side}_entity"), Entity.WORLD)
        return ExternalPeer(ip, entity, self.dns_names.get(ip, ()) if entity is Entity.WORLD and ip else ())


def cluster_model(observed: ObservationSet, inventory: Inventory | None = None) -> ClusterModel:
    """Every known pod: the inventory's when there is one (with their container ports), else the
    pods seen; plus one pod per observed workload label set that no pod covers."""
    model = ClusterModel(namespaces=[], pods=[], dns_names=observed.dns_names)
    namespaces: dict[str, Namespace] = {}
    if inventory is not None:
        for known_namespace in inventory.namespaces:
            namespaces[known_namespace.name] = Namespace(known_namespace.name, known_namespace.labels)
        for known in inventory.pods:
            if known.host_network and not known.ips:
                continue
            ports = tuple(ContainerPort(p.port, p.name or None, Protocol(p.protocol)) for p in known.ports)
            pod = Pod(
                known.namespace,
                known.name,
                known.labels,
                ports,
                known.ips[0] if known.ips else None,
                known.host_network,
            )
            model.pods.append(pod)
            model.workload_of[pod] = f"{known.namespace}/{known.owner.name}"
            model.by_name[(known.namespace, known.name)] = pod
            if not known.host_network:
                model.by_ip.update((ip, pod) for ip in known.ips)
    members: dict[tuple[str, str, str], str] = {}
    for row in observed.pods.itertuples(index=False):
        if (row.namespace, row.pod) not in model.by_name:
            members.setdefault((row.namespace, row.workload, row.labels), row.pod)
    frame = observed.observations
    covered = {
        (ns, workload, labels_to_text(pod.labels))
        for pod, key in model.workload_of.items()
        for ns, workload in [key.split("/", 1)]
    }
    for side in ("client", "server"):
        rows = frame[(frame[f"{side}_entity"] == POD) & (frame[f"{side}_workload"] != "")]
        for key in zip(rows[f"{side}_namespace"], rows[f"{side}_workload"], rows[f"{side}_labels"], strict=True):
            if key not in covered:
                members.setdefault(key, key[1])
    for (namespace, workload, labels), name in sorted(members.items()):
        pod = Pod(namespace, name, labels_from_text(labels))
        model.pods.append(pod)
        model.workload_of[pod] = f"{namespace}/{workload}"
    _add_named_pods(model, observed)
    for namespace in sorted({pod.namespace for pod in model.pods} - set(namespaces)):
        namespaces[namespace] = Namespace(namespace)
    model.namespaces = [namespaces[name] for name in sorted(namespaces)]
    return model


def _add_named_pods(model: ClusterModel, observed: ObservationSet) -> None:
    """The pods records named with an address (`ObservationSet.pod_ips`), as pods of the model: with
    their labels from the pods table, and without an IP, so that no ipBlock matches them (CNIs such as
    Cilium never match a pod by ipBlock)."""
    rows = {(row.namespace, row.pod): row for row in observed.pods.itertuples(index=False)}
    for ip, named in observed.pod_ips.items():
        if ip in model.by_ip or len(named) != 1:
            continue
        ((namespace, name),) = named
        pod = model.by_name.get((namespace, name))
        if pod is None:
            row = rows.get((namespace, name))
            workload = row.workload if row is not None else workload_from_pod_name(name)[0]
            pod = Pod(namespace, name, labels_from_text(row.labels) if row is not None else {})
            model.pods.append(pod)
            model.workload_of[pod] = f"{namespace}/{workload}"
            model.by_name[(namespace, name)] = pod
        model.by_ip[ip] = pod


def pod_addresses_in_ip_blocks(policies: Iterable[AnyPolicy | Mapping[str, Any]], model: ClusterModel) -> list[str]:
    """Every (rule, pod) where an ipBlock of the NetworkPolicies of `policies` contains an address evidence
    gives a pod: a recommendation must select pods by labels, never by address (the baseline's `networks`
    deny every address on purpose; a CNP's toCIDR is not checked here)."""
    found = []
    addresses = [(ipaddress.ip_address(ip), pod) for ip, pod in sorted(model.by_ip.items())]  # IPv4 and IPv6
    for policy in parse_policy_set(policies).network_policies:
        for direction in (Direction.INGRESS, Direction.EGRESS):
            for index, rule in enumerate(policy.rules(direction)):
                for peer in rule.peers:
                    if peer.ip_block is None:
                        continue
                    for ip, pod in addresses:
                        if ip.version == peer.ip_block.cidr.version and peer.ip_block.contains(ip):
                            found.append(
                                f"{RuleRef(policy.id, direction, index)} ipBlock {peer.ip_block} contains "
                                f"{ip}, the address of pod {pod.namespace}/{pod.name}"
                            )
    return found
