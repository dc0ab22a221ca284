"""Policies of every kind the engine understands, parsed by `kind` and compiled to targets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from recommender.semantics import cilium, cluster_policies
from recommender.semantics.cilium import CiliumPolicy, compile_cilium, parse_cilium_policy
from recommender.semantics.cluster_policies import ClusterNetworkPolicy, compile_cluster_policy, parse_cluster_policy
from recommender.semantics.errors import InvalidPolicyError
from recommender.semantics.matcher import Target, compile_policies
from recommender.semantics.policies import NetworkPolicy, parse_policy
from recommender.semantics.profiles import Profile

AnyPolicy = NetworkPolicy | CiliumPolicy | ClusterNetworkPolicy
POLICY_KINDS = ("NetworkPolicy", *cilium.KINDS, cluster_policies.KIND)


@dataclass(frozen=True, slots=True)
class PolicySet:
    network_policies: tuple[NetworkPolicy, ...] = ()
    cilium_policies: tuple[CiliumPolicy, ...] = ()
    cluster_policies: tuple[ClusterNetworkPolicy, ...] = ()

    def __iter__(self) -> Iterator[AnyPolicy]:
        yield from self.network_policies
        yield from self.cilium_policies
        yield from self.cluster_policies


def parse_any_policy(manifest: Mapping[str, Any], *, default_namespace: str = "default") -> AnyPolicy:
    """A NetworkPolicy (the default kind), CNP, CCNP or ClusterNetworkPolicy manifest, validated."""
    kind = manifest.get("kind", "NetworkPolicy") if isinstance(manifest, Mapping) else None
    if kind in cilium.KINDS:
        return parse_cilium_policy(manifest, default_namespace=default_namespace)
    if kind == cluster_policies.KIND:
        return parse_cluster_policy(manifest)
    return parse_policy(manifest, default_namespace=default_namespace)


def parse_policy_set(
    policies: Iterable[AnyPolicy | Mapping[str, Any]], *, default_namespace: str = "default"
) -> PolicySet:
    """Parse the manifests among `policies` (already parsed ones are kept) and group them by kind."""
    parsed = [
        p if isinstance(p, AnyPolicy) else parse_any_policy(p, default_namespace=default_namespace) for p in policies
    ]
    return PolicySet(
        tuple(p for p in parsed if isinstance(p, NetworkPolicy)),
        tuple(p for p in parsed if isinstance(p, CiliumPolicy)),
        tuple(p for p in parsed if isinstance(p, ClusterNetworkPolicy)),
    )


def compile_policy_set(policy_set: PolicySet, profile: Profile) -> tuple[Target, ...]:
    """Every policy's targets, sorted. Cilium's own policies need a profile that enforces them."""
    if policy_set.cilium_policies and not profile.cilium_policies:
        first = policy_set.cilium_policies[0]
        reason = f"only Cilium enforces it: evaluate with the cilium profile, not {profile}"
        raise InvalidPolicyError(first.id.split(" ", 1)[1], "kind", reason, first.kind)
    targets = list(compile_policies(policy_set.network_policies))
    for cilium_policy in policy_set.cilium_policies:
        targets += compile_cilium(cilium_policy)
    for cluster_policy in policy_set.cluster_policies:
        targets += compile_cluster_policy(cluster_policy)
    return tuple(sorted(targets, key=Target.sort_key))
