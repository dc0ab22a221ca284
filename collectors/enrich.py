"""Observations as the cluster knows them: workloads, labels and the full set of pods from the inventory.

Hubble names a pod's workload from its `workloads` field or its pod name, and its labels are
Cilium's identity labels (a subset of the pod's labels). With an inventory, every pod endpoint
takes its top owner and labels from the inventory pods it was seen as, and the known pods become
every pod of the cluster, so that selectors are exact against all of them, not only the pods seen
talking.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from collectors.aggregate import combine_observations
from collectors.conntrack_observations import AddressResolver
from collectors.inventory import Inventory
from collectors.inventory import Pod as InventoryPod
from collectors.records import (
    ENDPOINT_FIELDS,
    POD,
    POD_COLUMNS,
    READ_BY_ADDRESS,
    REMOTE_NODE,
    WORLD,
    ObservationSet,
    labels_to_text,
)

EndpointId = tuple[str, str, str]  # (namespace, workload, labels text)


def apply_inventory(observed: ObservationSet, inventory: Inventory) -> ObservationSet:
    """The same observations, named by the inventory, with every inventory pod as a known pod."""
    frame = _name_addresses(observed.observations, inventory)
    seen_as = _pods_seen_as(observed.pods, frame)
    renamed: dict[EndpointId, tuple[str, str, str]] = {}
    for endpoint, names in seen_as.items():
        pods = [pod for name in sorted(names) if (pod := inventory.pod(endpoint[0], name)) is not None]
        if pods and len({pod.owner for pod in pods}) == 1:
            renamed[endpoint] = (pods[0].owner.name, pods[0].owner.kind, labels_to_text(_common_labels(pods)))
    for side in ("client", "server"):
        columns = [f"{side}_{name}" for name in ("workload", "kind", "labels")]
        keys = zip(frame[f"{side}_namespace"], frame[f"{side}_workload"], frame[f"{side}_labels"], strict=True)
        updates = [
            renamed.get(key) if entity == POD else None
            for entity, key in zip(frame[f"{side}_entity"], keys, strict=True)
        ]
        for index, column in enumerate(columns):
            frame[column] = [new[index] if new else old for new, old in zip(updates, frame[column], strict=True)]
    return ObservationSet(
        observations=combine_observations(frame),
        pods=inventory_pods_frame(inventory, extra=observed.pods),
        unoriented=observed.unoriented,
        dns_names=observed.dns_names,
        stats=observed.stats,
        pod_ips=observed.pod_ips,
    )


def _name_addresses(observations: pd.DataFrame, inventory: Inventory) -> pd.DataFrame:
    """The observations with the ends read by their address (`world`, `unknown`, `remote-node`) named
    by the inventory, which the capture's labels do not outrank: the pod that held the address at
    the time, or a node's pod network gateway (`host` for its own pods); an address in a node's pod
    CIDR that no pod held is `unknown` (reported unresolved), never `world`."""
    resolver = AddressResolver(inventory, cluster_cidrs=())
    frame = observations.copy()
    for side, other in (("client", "server"), ("server", "client")):
        entities = list(frame[f"{side}_entity"])
        columns = {name: list(frame[f"{side}_{name}"]) for name in (*ENDPOINT_FIELDS, "pod")}
        for index, (entity, ip, seen, other_pod, other_namespace) in enumerate(
            zip(
                entities,
                columns["ip"],
                frame["first_seen"],
                frame[f"{other}_pod"],
                frame[f"{other}_namespace"],
                strict=True,
            )
        ):
            if entity not in READ_BY_ADDRESS or not ip:
                continue
            neighbour = inventory.pod(other_namespace, other_pod)
            when = None if pd.isna(seen) else seen.timestamp()
            found = resolver.address(ip, when, neighbour.node if neighbour is not None else "")
            if found.endpoint.entity == POD or (entity != REMOTE_NODE and found.endpoint.entity != WORLD):
                for name in ENDPOINT_FIELDS:
                    columns[name][index] = getattr(found.endpoint, name)
                columns["pod"][index] = found.pod
        for name, values in columns.items():
            frame[f"{side}_{name}"] = values
    return frame


def _pods_seen_as(pods: pd.DataFrame, frame: pd.DataFrame) -> dict[EndpointId, set[str]]:
    """Endpoint → the names of the pods it was seen as (the pods table and the example pods)."""
    found: dict[EndpointId, set[str]] = {}
    for row in pods.itertuples(index=False):
        found.setdefault((row.namespace, row.workload, row.labels), set()).add(row.pod)
    for side in ("client", "server"):
        rows = frame[(frame[f"{side}_entity"] == POD) & (frame[f"{side}_pod"] != "")]
        for key in zip(
            rows[f"{side}_namespace"],
            rows[f"{side}_workload"],
            rows[f"{side}_labels"],
            rows[f"{side}_pod"],
            strict=True,
        ):
            found.setdefault(key[:3], set()).add(key[3])
    return found


def _common_labels(pods: Iterable[InventoryPod]) -> dict[str, str]:
    pods = list(pods)
    common = dict(pods[0].labels)
    for pod in pods[1:]:
        common = {key: value for key, value in common.items() if pod.labels.get(key) == value}
    return common


def inventory_pods_frame(inventory: Inventory, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pod of the inventory (hostNetwork pods excluded: no selector selects them) as a pods
    table, plus the rows of `extra` for pods the inventory does not have."""
    rows = [
        ("", pod.namespace, pod.name, pod.owner.name, pod.owner.kind, labels_to_text(pod.labels))
        for pod in inventory.pods
        if not pod.host_network
    ]
    if extra is not None:
        rows += [
            tuple(row)
            for row in extra[list(POD_COLUMNS)].itertuples(index=False)
            if inventory.pod(row.namespace, row.pod) is None
        ]
    frame = pd.DataFrame(rows, columns=list(POD_COLUMNS))
    return frame.drop_duplicates(subset=["namespace", "pod"]).sort_values(["namespace", "pod"]).reset_index(drop=True)
