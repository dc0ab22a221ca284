"""Identity from all the evidence of a capture: one pass over the distinct endpoints after aggregation.

Flows are identified one record at a time (`collectors.hubble_identity`); some records know less
than others about the same pod. This pass settles every endpoint with what the whole capture says,
in a fixed order of trust:

1. a record naming a pod (namespace and pod name) is that pod; its labels come from the pod's best
   record, never from one that only carries reserved labels;
2. a pod endpoint without a pod name (an L7 proxy leg) takes the workload of the pods carrying
   exactly its labels, when that workload is unique;
3. an address that records of the capture give one pod workload (by name, or a proxy leg's identity)
   is that workload for the `world`, `unknown` (`reserved:unmanaged`, `init`) and `remote-node`
   records of the same address: a reply seen at the other node, before it learned the identity;
   an address several pods were named with stays unresolved (`unknown`), never `world`;
4. only then does a reserved identity stand. `host` (the local node) always does: kubelet probes.
"""

from __future__ import annotations

from collections.abc import Mapping

from collectors.hubble_identity import PodKey
from collectors.records import POD, REMOTE_NODE, UNKNOWN, WORLD, Endpoint

_READ_BY_ADDRESS = (WORLD, UNKNOWN, REMOTE_NODE)


def settle_endpoints(
    endpoints: list[Endpoint],
    pods: Mapping[PodKey, Endpoint],
    pod_ips: Mapping[str, set[PodKey]],
    unlabelled: Mapping[Endpoint, set[PodKey]],
    leg_ips: Mapping[str, set[Endpoint]],
) -> None:
    """Rewrite `endpoints` (interned, in place) with what the capture's evidence says about them."""
    settled: dict[Endpoint, Endpoint] = {}
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
        settled[endpoint] = endpoints[index]
    for index, endpoint in enumerate(endpoints):
        if endpoint.entity not in _READ_BY_ADDRESS or not endpoint.ip:
            continue
        named = {pods[pod] for pod in pod_ips.get(endpoint.ip, ()) if pod in pods}
        legs = {settled.get(leg, leg) for leg in leg_ips.get(endpoint.ip, ())}
        candidates = named or {leg for leg in legs if leg.workload}
        if len({(pod.namespace, pod.workload) for pod in candidates}) == 1:
            endpoints[index] = min(candidates, key=lambda pod: pod.labels)
        elif len(named) > 1 and endpoint.entity == WORLD:
            endpoints[index] = Endpoint(UNKNOWN, ip=endpoint.ip, cluster=endpoint.cluster)
