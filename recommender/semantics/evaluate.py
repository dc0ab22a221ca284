"""The policy engine: exact upstream semantics over pod equivalence classes, under a profile.

A connection client -> server is allowed when the client's egress side allows it and the
server's ingress side allows it. A side that is not a pod, or a pod that no policy selects
for that direction, allows everything; otherwise the side allows the union of what the
matching rules of its isolating policies allow (minus Cilium deny rules), with
ClusterNetworkPolicy tiers before (Admin) and after (Baseline) that, and the dataplane
profile deciding what ipBlocks select and which node traffic is exempt.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, assert_never

from recommender.semantics.classes import ClassIndex
from recommender.semantics.connections import MAX_PORT, MIN_PORT, ConnectionSet, Protocol
from recommender.semantics.endpoints import Endpoint, ExternalPeer, Namespace, Pod, PodClass
from recommender.semantics.explain import Decision, DirectionResult, Grant, Isolation, PairResult
from recommender.semantics.matcher import FQDNPeers, IPPeers, RuleMatcher, RuleRef, Target, Tier
from recommender.semantics.policies import Direction, IPBlock
from recommender.semantics.policy_set import AnyPolicy, compile_policy_set, parse_policy_set
from recommender.semantics.profiles import KUBERNETES, Entity, Profile

Resolved = PodClass | ExternalPeer
_Key = int | ExternalPeer
_Bucket = tuple[str | None, Direction, tuple[str, str] | None]
"""Where targets are indexed: (namespace or None for any, direction, one label of their selector or None)."""


class Evaluator:
    """Compiles policies once and answers queries about pods, pod classes and external IPs.

    Work is done per class pair (see `PodClass`) and cached, so the cost grows with the
    number of classes queried and rules, not with pods squared.

    A hostNetwork pod is treated as its node's IP, an `ExternalPeer` of entity `remote-node`
    (where it runs is not known, so its traffic is never the exempt local-node kind):
    selectors never match it and no policy isolates it. Whether an ipBlock matches pod IPs
    (`Pod.ip`) or a node, and which node traffic is always allowed, is the `profile`'s
    (default `kubernetes`: ipBlocks match every non-pod IP and no pod IP, as the API
    reference means them for cluster-external IPs).
    """

    def __init__(
        self,
        policies: Iterable[AnyPolicy | Mapping[str, Any]],
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        *,
        default_namespace: str = "default",
        profile: Profile = KUBERNETES,
    ) -> None:
        self.profile = profile
        policy_set = parse_policy_set(policies, default_namespace=default_namespace)
        self.targets: tuple[Target, ...] = compile_policy_set(policy_set, profile)
        # Targets by (namespace or None, direction, one matchLabels pair of the subject, or None).
        self._target_index: dict[_Bucket, list[int]] = {}
        for i, target in enumerate(self.targets):
            label = next(iter(target.subject.match_labels.items()), None)
            self._target_index.setdefault((target.namespace, target.direction, label), []).append(i)
        self._namespaces = {ns.name: ns for ns in namespaces}
        self._pod_ip_blocks = {
            peer.block
            for t in self.targets
            for r in t.rules
            for peer in r.peers
            if isinstance(peer, IPPeers) and (peer.any_ip or profile.cidr_matches_pods)
        }
        self._index = ClassIndex()
        self._classes_of_pods: dict[Pod, PodClass] = {}
        self._members: dict[PodClass, list[Pod]] = {}
        self._subjects: dict[tuple[int, Direction], tuple[Target, ...]] = {}
        self._selections: dict[RuleRef, frozenset[int]] = {}
        self._pairs: dict[tuple[_Key, _Key], PairResult] = {}
        for pod in pods:
            resolved = self.class_of(pod)
            if isinstance(resolved, PodClass):
                self._members.setdefault(resolved, []).append(pod)
                self._index.add(resolved)  # now, so that no query invalidates a selection

    def classes(self) -> tuple[PodClass, ...]:
        """The classes of the pods given to the constructor, sorted."""
        return tuple(sorted(self._members, key=PodClass.sort_key))

    def pods_of(self, pods: PodClass) -> tuple[Pod, ...]:
        """The constructor's pods in that class, in the order given."""
        return tuple(self._members.get(pods, ()))

    def class_of(self, pod: Pod) -> Resolved:
        """The pod's class, or an `ExternalPeer` (a node) for a hostNetwork pod."""
        if pod.host_network:
            if pod.ip is None:
                raise ValueError(f"hostNetwork pod {pod} has no IP: it can only be matched by its IP")
            return self.external(ExternalPeer(ipaddress.ip_address(pod.ip), Entity.REMOTE_NODE))
        known = self._classes_of_pods.get(pod)
        if known is None:
            namespace = self._namespaces.get(pod.namespace) or Namespace(pod.namespace)
            known = self._classes_of_pods[pod] = PodClass(
                namespace=pod.namespace,
                namespace_labels=namespace.labels,
                labels=pod.labels,
                named_ports=frozenset(port for port in pod.ports if port.name),
                ip_blocks=self._ip_blocks_containing(pod.ip),
            )
        return known

    def _ip_blocks_containing(self, ip: str | None) -> frozenset[IPBlock]:
        """The ipBlocks a pod IP falls in, of those that may match pod IPs."""
        if ip is None or not self._pod_ip_blocks:
            return frozenset()
        address = ipaddress.ip_address(ip)
        return frozenset(block for block in self._pod_ip_blocks if block.contains(address))

    def evaluate(self, client: Endpoint, server: Endpoint, protocol: str, port: int | None = None) -> Decision:
        """The verdict, with its evidence, on `client` opening `protocol`/`port` to `server`."""
        if Protocol.lookup(protocol) is not None and not (port and MIN_PORT <= port <= MAX_PORT):
            raise ValueError(f"{protocol} traffic needs a port in {MIN_PORT}-{MAX_PORT}, got {port}")
        return self.pair(client, server).decide(str(client), str(server), protocol, port)

    def allowed_connections(self, client: Endpoint, server: Endpoint) -> ConnectionSet:
        """Everything `client` may open to `server`."""
        return self.pair(client, server).connections

    def pair(self, client: Endpoint, server: Endpoint) -> PairResult:
        """Both sides of (client, server), computed once per class pair and cached."""
        client_end, server_end = self._resolve(client), self._resolve(server)
        key = self._key(client_end), self._key(server_end)
        result = self._pairs.get(key)
        if result is None:
            result = self._pairs[key] = PairResult(
                egress=self._side(client_end, server_end, Direction.EGRESS),
                ingress=self._side(server_end, client_end, Direction.INGRESS),
            )
        return result

    def _resolve(self, endpoint: Endpoint) -> Resolved:
        match endpoint:
            case Pod():
                return self.class_of(endpoint)
            case PodClass():
                return endpoint
            case ExternalPeer():
                return self.external(endpoint)
            case _:
                assert_never(endpoint)

    def external(self, peer: ExternalPeer) -> ExternalPeer:
        """`peer` as the profile sees it: whether ipBlocks and CIDRs may select it."""
        return dataclasses.replace(peer, cidr_selectable=self.profile.cidr_selects(peer.entity))

    def _key(self, endpoint: Resolved) -> _Key:
        if isinstance(endpoint, ExternalPeer):
            return endpoint
        class_id, new = self._index.add(endpoint)
        if new:
            self._selections.clear()  # rule selections were computed without this class
        return class_id

    def _side(self, subject: Resolved, peer: Resolved, direction: Direction) -> DirectionResult:
        """The subject's side: egress towards the peer, or ingress from it."""
        if isinstance(subject, ExternalPeer):
            return DirectionResult(direction, Isolation.NOT_A_POD)
        if direction is Direction.INGRESS and isinstance(peer, ExternalPeer) and peer.entity is Entity.HOST:
            return DirectionResult(direction, Isolation.EXEMPT, reason=self.profile.local_host_rule)
        targets = self._targets_selecting(subject, direction)
        if not targets:
            return DirectionResult(direction, Isolation.NOT_SELECTED)
        server = peer if direction is Direction.EGRESS else subject
        dns_proxy = any(rule.dns_proxy for target in targets for rule in target.rules)
        grants, notes = [], []
        for target in sorted(targets, key=lambda t: (t.tier.rank, t.priority, t.sort_key())):
            for rule in target.rules:
                if self._rule_matches_peer(rule, peer, dns_proxy):
                    grants.append(Grant(rule.ref, rule.allowed(server), rule.action, target.tier))
                elif isinstance(peer, ExternalPeer):
                    notes += self._profile_notes(rule, peer, dns_proxy)
        isolating = [target for target in targets if target.isolates and target.tier is Tier.NETWORK_POLICY]
        policies = tuple(sorted({policy for target in isolating for policy in target.policies}))
        # NetworkPolicy-tier rules by name (their order does not matter); other tiers keep precedence.
        ordered = tuple(sorted(grants, key=lambda g: (g.tier.rank, g.rule if g.tier is Tier.NETWORK_POLICY else "")))
        isolation = Isolation.ISOLATED if isolating else Isolation.NOT_SELECTED
        return DirectionResult(direction, isolation, policies, ordered, notes=tuple(sorted(set(notes))))

    def _profile_notes(self, rule: RuleMatcher, peer: ExternalPeer, dns_proxy: bool) -> list[str]:
        """Why peers of `rule` that would match `peer` on their face do not, under this profile."""
        notes = []
        for matcher in rule.peers:
            if (
                isinstance(matcher, IPPeers)
                and not peer.cidr_selectable
                and matcher.matches(dataclasses.replace(peer, cidr_selectable=True))
            ):
                notes.append(f"{rule.ref}: {matcher} does not select {peer.entity} {peer}: {self.profile.cidr_rule}")
            if isinstance(matcher, FQDNPeers) and not dns_proxy and matcher.matches(peer):
                notes.append(
                    f"{rule.ref}: {matcher} never matches: no egress rule of the subject sends its DNS lookups"
                    " through Cilium's DNS proxy (toPorts with rules.dns)"
                )
        return notes

    def _targets_selecting(self, subject: PodClass, direction: Direction) -> tuple[Target, ...]:
        key = self._index.id_of(subject), direction
        found = self._subjects.get(key)
        if found is None:
            buckets: list[_Bucket] = [
                (subject.namespace, direction, label) for label in (None, *subject.labels.items())
            ]
            buckets += [(None, direction, label) for label in (None, *subject.labels.items())]
            candidates = sorted({i for bucket in buckets for i in self._target_index.get(bucket, ())})
            found = tuple(self.targets[i] for i in candidates if self.targets[i].selects(subject))
            self._subjects[key] = found
        return found

    def subjects_of(self, target: Target) -> tuple[PodClass, ...]:
        """The known pod classes `target` selects: the pods its rules apply to."""
        if target.namespace is None:
            return tuple(pods for pods in self._index.classes if target.selects(pods))
        candidates = (self._index.classes[i] for i in sorted(self._index.subjects(target.namespace, target.subject)))
        return tuple(pods for pods in candidates if target.selects(pods))  # a CNP may select namespace labels too

    def peers_of(self, rule: RuleMatcher) -> tuple[PodClass, ...]:
        """The known pod classes the peers of `rule` match (external peers: `rule.matches_peer`)."""
        return tuple(self._index.classes[i] for i in sorted(self._selection(rule)))

    def _rule_matches_peer(self, rule: RuleMatcher, peer: Resolved, dns_proxy: bool = True) -> bool:
        if isinstance(peer, ExternalPeer):
            matched = [matcher for matcher in rule.peers if matcher.matches(peer)]
            return any(dns_proxy or not isinstance(matcher, FQDNPeers) for matcher in matched)
        return self._index.id_of(peer) in self._selection(rule)

    def _selection(self, rule: RuleMatcher) -> frozenset[int]:
        selection = self._selections.get(rule.ref)
        if selection is None:
            selection = frozenset().union(*(self._index.select(matcher) for matcher in rule.peers))
            self._selections[rule.ref] = selection
        return selection
