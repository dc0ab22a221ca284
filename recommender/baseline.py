"""The default deny of a proposal: a `default-deny` NetworkPolicy per managed namespace, or one
cluster-wide ClusterNetworkPolicy of tier Baseline (policy.networking.k8s.io/v1alpha2).

The Baseline tier decides only traffic no NetworkPolicy decided, so the proposal's allow policies
still decide for the pods they select; every other pod of a namespace not excluded, observed or not
and created later too, gets deny-by-default with DNS to the kube-dns pods allowed (UDP and TCP 53).
Excluded namespaces are exempt by a `kubernetes.io/metadata.name NotIn` namespace selector.

The API gives ingress rules pod and namespace peers only: ingress from outside the cluster (world,
nodes) to a pod no NetworkPolicy selects stays allowed, where a `default-deny` denies it.

For `--target cilium`, `render_cilium` writes its equivalent: a CiliumClusterwideNetworkPolicy of the same
name, default deny both ways with one egress rule, DNS to the same pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from recommender.selectors import NAMESPACE_NAME_LABEL
from recommender.semantics import Action, AnyPolicy, CiliumPolicy, ClusterNetworkPolicy, Direction
from recommender.semantics.cilium import CCNP

NAMESPACE_BASELINE = "namespace"
CLUSTER_BASELINE = "clusternetworkpolicy"
BASELINES = (NAMESPACE_BASELINE, CLUSTER_BASELINE)
CLUSTER_BASELINE_NAME = "cluster-baseline"
"""The ClusterNetworkPolicy's name, and the stem of its file in an output folder."""
BASELINE_PRIORITY = 1000
"""The last of the Baseline tier (0-1000, lower first): any other baseline a cluster has decides first."""
KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
"""The cluster DNS pods: CoreDNS and kube-dns carry `k8s-app: kube-dns` in kube-system."""
EVERY_NETWORK = ["0.0.0.0/0", "::/0"]


def cluster_baseline(exclude_namespaces: Sequence[str], labels: Mapping[str, str]) -> dict[str, Any]:
    """The Baseline ClusterNetworkPolicy: deny ingress from every pod and egress to everything, but DNS,
    for every pod outside `exclude_namespaces`."""
    excluded = sorted(set(exclude_namespaces))
    subject: dict[str, Any] = (
        {"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": excluded}]}
        if excluded
        else {}
    )
    dns_ports = [{protocol: {"destinationPort": {"number": 53}}} for protocol in ("udp", "tcp")]
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": CLUSTER_BASELINE_NAME, "labels": dict(labels)},
        "spec": {
            "tier": "Baseline",
            "priority": BASELINE_PRIORITY,
            "subject": {"namespaces": subject},
            "ingress": [{"name": "default-deny", "action": "Deny", "from": [{"namespaces": {}}]}],
            "egress": [
                {"name": "allow-dns", "action": "Accept", "to": [{"pods": KUBE_DNS}], "protocols": dns_ports},
                {
                    "name": "default-deny",
                    "action": "Deny",
                    "to": [{"namespaces": {}}, {"networks": list(EVERY_NETWORK)}],
                },
            ],
        },
    }


def without_dns_allowance(policies: Sequence[AnyPolicy]) -> list[AnyPolicy] | None:
    """`policies` with the baseline's allow rules (its only one is the DNS rule) taken out, to tell the excess
    that rule adds (the DNS allowance) from the rest; None when they hold no baseline of ours."""
    found = False
    kept: list[AnyPolicy] = []
    for policy in policies:
        if isinstance(policy, ClusterNetworkPolicy) and policy.name == CLUSTER_BASELINE_NAME:
            found = True
            policy = replace(policy, egress=tuple(rule for rule in policy.egress if rule.action is not Action.ALLOW))
        elif isinstance(policy, CiliumPolicy) and policy.kind == CCNP and policy.name == CLUSTER_BASELINE_NAME:
            found = True
            specs = tuple(replace(spec, allow={**spec.allow, Direction.EGRESS: ()}) for spec in policy.specs)
            policy = replace(policy, specs=specs)
        kept.append(policy)
    return kept if found else None
