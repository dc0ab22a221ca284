"""Exact upstream Kubernetes NetworkPolicy (networking.k8s.io/v1) semantics.

Parse and validate policies (`parse_policy`), build an `Evaluator` over the cluster's
namespaces and pods, then ask it about connections (`evaluate`) or everything allowed
between two endpoints (`allowed_connections`, a `ConnectionSet`).
"""

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
from recommender.semantics.matcher import RuleRef, Target
from recommender.semantics.policies import Direction, NetworkPolicy, parse_policies, parse_policy
from recommender.semantics.selectors import Labels, LabelSelector

__all__ = [
    "Attribution",
    "ConnectionSet",
    "ContainerPort",
    "Decision",
    "Direction",
    "DirectionResult",
    "Endpoint",
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
    "PortSet",
    "Protocol",
    "RuleRef",
    "SideVerdict",
    "Target",
    "TargetRow",
    "explain_targets",
    "parse_policies",
    "parse_policy",
]
