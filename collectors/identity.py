"""Identity from all the evidence of a capture: one pass over the distinct endpoints after aggregation.

Flows are identified one record at a time (`collectors.hubble_identity`); some records know less
than others about the same pod. This pass settles every endpoint with what the whole capture says,
in a fixed order of trust:

1. a record naming a pod (namespace and pod name) is that pod; its labels come from the pod's best
   record, never from one that only carries reserved labels;
2. a pod endpoint without a pod name (an L7 proxy leg) takes the workload of the pods carrying
   exactly its labels, when that workload is unique;
3. an address that records of the capture name as one pod is that pod for the `world`, `unknown`
   (`reserved:unmanaged`, `init`) and `remote-node` records of the same address; an address several
   pods were named with stays unresolved (`unknown`), never `world`;
4. an L7 proxy forwards a pod's connections from its node's address (`cilium_host`) with the pod's
   identity, and the other node may see the same connection's replies as `remote-node` (or `world`):
   such an end, at an address a proxy leg was seen with, on a connection (other end, protocol, port,
   verdict) exactly one leg was seen on too, is that leg (`fold_proxy_twins`, on the aggregate records). The
   node's own traffic from that address (health probes) stays the node's;
5. only then does a reserved identity stand. `host` (the local node) always does: kubelet probes.
"""

from __future__ import annotations

from collections.abc import Mapping

from collectors.aggregate import ObservationAggregator
from collectors.hubble_identity import PodKey
from collectors.records import POD, READ_BY_ADDRESS, UNKNOWN, WORLD, Endpoint


def settle_endpoints(
    endpoints: list[Endpoint],
    pods: Mapping[PodKey, Endpoint],
    pod_ips: Mapping[str, set[PodKey]],
    unlabelled: Mapping[Endpoint, set[PodKey]],
) -> None:
    """Rewrite `endpoints` (interned, in place) with what the capture's evidence says about them."""
    owners: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for endpoint in pods.values():
        owners.setdefault((endpoint.cluster, endpoint.namespace, endpoint.labels), set()).add(
            (endpoint.workload, endpoint.kind)
        )
    for index, endpoint in enumerate(endpoints):
        if endpoint.entity != POD:
            continue
        if endpoint in unlabelled:
            best = {pods[pod] for pod in unlabelled[endpoint]}
            if len(best) == 1:
                endpoints[index] = best.pop()
        elif not endpoint.workload:
            candidates = owners.get((endpoint.cluster, endpoint.namespace, endpoint.labels), set())
            if len(candidates) == 1:
                workload, kind = next(iter(candidates))
                endpoints[index] = Endpoint(
                    POD, endpoint.namespace, workload, kind, endpoint.labels, "", endpoint.cluster
                )
    for index, endpoint in enumerate(endpoints):
        if endpoint.entity not in READ_BY_ADDRESS or not endpoint.ip:
            continue
        named = {pods[pod] for pod in pod_ips.get(endpoint.ip, ()) if pod in pods}
        if len({(pod.namespace, pod.workload) for pod in named}) == 1:
            endpoints[index] = min(named, key=lambda pod: pod.labels)
        elif len(named) > 1 and endpoint.entity == WORLD:
            endpoints[index] = Endpoint(UNKNOWN, ip=endpoint.ip, cluster=endpoint.cluster)


def fold_proxy_twins(aggregator: ObservationAggregator, leg_ips: Mapping[str, set[Endpoint]]) -> None:
    """Fold the records of a connection seen with a node-side end at a proxy leg's address into the
    leg's record of the same connection (see the module docstring, point 4)."""
    if not leg_ips:  # no proxy leg seen (the usual capture): nothing to fold, and no sort of every record
        return
    endpoints = aggregator.endpoints
    legs_at = {ip: sorted({endpoints[aggregator.id_of(leg)] for leg in legs}, key=str) for ip, legs in leg_ips.items()}
    by_value = {_named(key, endpoints): key for key in sorted(aggregator.records, reverse=True)}
    for key in sorted(aggregator.records):
        named = _named(key, endpoints)
        for side in (0, 1):
            end = named[side]
            if end.entity not in READ_BY_ADDRESS or end.ip not in legs_at:
                continue
            twins = [by_value[twin] for leg in legs_at[end.ip] if (twin := _replace(named, side, leg)) in by_value]
            if len(twins) == 1:  # legs of several pods at one address: which one is not for us to guess
                aggregator.merge(twins[0], aggregator.records.pop(key))
                break


def _named(key: tuple, endpoints: list[Endpoint]) -> tuple:
    return (endpoints[key[0]], endpoints[key[1]], *key[2:])


def _replace(key: tuple, index: int, value: object) -> tuple:
    return (*key[:index], value, *key[index + 1 :])
