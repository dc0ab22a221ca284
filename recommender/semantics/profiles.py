"""Dataplane profiles: how a CNI enforces what the NetworkPolicy spec leaves open.

The spec says ipBlocks are meant for cluster-external IPs and exempts ingress from a pod's
own node; CNIs differ beyond that (`cni-semantics.md` lists the sources). A profile answers
the two questions the evaluator asks: may an ipBlock / CIDR select this endpoint, and is
this connection allowed whatever the policies say. Each answer cites its source, so a
decision can say which profile rule made it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

CIDR_MATCH_NODES = "cidr-match-nodes"
"""Cilium agent option `policy-cidr-match-mode=nodes`: CIDR selectors also match node IPs."""


class Entity(StrEnum):
    """What a non-pod endpoint is, in Cilium's reserved-identity terms."""

    WORLD = "world"
    HOST = "host"
    """The node of the pod on the other side of the connection."""
    REMOTE_NODE = "remote-node"
    KUBE_APISERVER = "kube-apiserver"
    INGRESS = "ingress"
    HEALTH = "health"


NODES = frozenset({Entity.HOST, Entity.REMOTE_NODE, Entity.KUBE_APISERVER})
ALL_NON_POD = frozenset(Entity)

SPEC_NODE = "the NetworkPolicy API reference: a pod's own node may always reach it"
CILIUM_LOCALHOST = "Cilium allow-localhost=auto (the default, daemon/cmd/daemon.go): the local host may reach its pods"
CALICO_LOCALHOST = "Calico (projectcalico/calico PR #2691): the local host may reach its pods"
SPEC_CIDR = "the NetworkPolicy spec: an ipBlock matches non-pod IPs"
CILIUM_CIDR = (
    "Cilium: CIDR selectors never select cluster entities or pods"
    " (language.rst 'Selecting nodes with CIDR / ipBlock'; cilium#9209, cilium#20550)"
)
CILIUM_CIDR_NODES = f"Cilium with {CIDR_MATCH_NODES}: CIDR selectors match node IPs but no other entity (cilium#39573)"
CALICO_CIDR = "Calico: ipBlocks match any IP, pod and node IPs included (projectcalico/calico#6634)"


@dataclass(frozen=True, slots=True)
class Profile:
    """One CNI's reading of the policies. Build with `profile_named`."""

    name: str
    options: frozenset[str]
    cidr_entities: frozenset[Entity]
    """The non-pod entities an ipBlock / CIDR may select by IP."""
    cidr_matches_pods: bool
    cidr_rule: str
    """Why: the source of the two fields above."""
    local_host_rule: str
    """Why ingress from a pod's own node is always allowed."""
    cilium_policies: bool
    """Whether CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy objects take effect."""

    def cidr_selects(self, entity: Entity) -> bool:
        return entity in self.cidr_entities

    def __str__(self) -> str:
        return self.name + "".join(f" ({option})" for option in sorted(self.options))


PROFILE_NAMES = ("kubernetes", "cilium", "calico")


def profile_named(name: str, options: Iterable[str] = ()) -> Profile:
    """The profile `kubernetes`, `cilium` or `calico`; `cilium` takes the option `cidr-match-nodes`."""
    options = frozenset(options)
    unknown = options - ({CIDR_MATCH_NODES} if name == "cilium" else set())
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown dataplane profile {name!r} (expected {', '.join(PROFILE_NAMES)})")
    if unknown:
        raise ValueError(f"profile {name} has no option {', '.join(sorted(unknown))}")
    match name:
        case "kubernetes":
            return Profile(name, options, ALL_NON_POD, False, SPEC_CIDR, SPEC_NODE, False)
        case "calico":
            return Profile(name, options, ALL_NON_POD, True, CALICO_CIDR, CALICO_LOCALHOST, False)
        case _:
            nodes = CIDR_MATCH_NODES in options
            entities = frozenset({Entity.WORLD} | (NODES if nodes else set()))
            rule = CILIUM_CIDR_NODES if nodes else CILIUM_CIDR
            return Profile(name, options, entities, False, rule, CILIUM_LOCALHOST, True)


KUBERNETES = profile_named("kubernetes")
CILIUM = profile_named("cilium")
CALICO = profile_named("calico")
