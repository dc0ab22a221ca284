"""Exact upstream policy semantics: NetworkPolicy (networking.k8s.io/v1), CiliumNetworkPolicy and
CiliumClusterwideNetworkPolicy (cilium.io/v2), ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2).

Parse and validate policies (`parse_policy_set`, or `parse_policy` for one NetworkPolicy), build
an `Evaluator` over the cluster's namespaces and pods under a dataplane profile
(`profile_named("cilium")`), then ask it about connections (`evaluate`) or everything allowed
between two endpoints (`allowed_connections`, a `ConnectionSet`).
"""

from recommender.semantics.cilium import CiliumPolicy
from recommender.semantics.cluster_policies import ClusterNetworkPolicy
from recommender.semantics.connections import ConnectionSet, PortSet, Protocol
from recommender.semantics.endpoints import (
    ContainerPort,
    Endpoint,
    ExternalPeer,
    Namespace,
    Pod,
    PodClass,
)
from recommender.semantics.errors import InvalidPolicyError
from recommender.semantics.evaluate import Evaluator
from recommender.semantics.explain import (
    Attribution,
    Decision,
    DirectionResult,
    Grant,
    Isolation,
    PairResult,
    SideVerdict,
    TargetRow,
    explain_targets,
)
from recommender.semantics.matcher import Action, RuleRef, Target, Tier
from recommender.semantics.policies import Direction, NetworkPolicy, parse_policies, parse_policy
from recommender.semantics.policy_set import POLICY_KINDS, AnyPolicy, PolicySet, parse_any_policy, parse_policy_set
from recommender.semantics.profiles import (
    CALICO,
    CIDR_MATCH_NODES,
    CILIUM,
    KUBERNETES,
    PROFILE_NAMES,
    Entity,
    Profile,
    profile_named,
)
from recommender.semantics.selectors import Labels, LabelSelector

__all__ = [
    "CALICO",
    "CIDR_MATCH_NODES",
    "CILIUM",
    "KUBERNETES",
    "POLICY_KINDS",
    "PROFILE_NAMES",
    "Action",
    "AnyPolicy",
    "Attribution",
    "CiliumPolicy",
    "ClusterNetworkPolicy",
    "ConnectionSet",
    "ContainerPort",
    "Decision",
    "Direction",
    "DirectionResult",
    "Endpoint",
    "Entity",
    "Evaluator",
    "ExternalPeer",
    "Grant",
    "InvalidPolicyError",
    "Isolation",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NetworkPolicy",
    "PairResult",
    "Pod",
    "PodClass",
    "PolicySet",
    "PortSet",
    "Profile",
    "Protocol",
    "RuleRef",
    "SideVerdict",
    "Target",
    "TargetRow",
    "Tier",
    "explain_targets",
    "parse_any_policy",
    "parse_policies",
    "parse_policy",
    "parse_policy_set",
    "profile_named",
]
