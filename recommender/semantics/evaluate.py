"""The NetworkPolicy engine: exact upstream semantics over pod equivalence classes.

A connection client -> server is allowed when the client's egress side allows it and the
server's ingress side allows it. A side that is not a pod, or a pod that no policy selects
for that direction, allows everything; otherwise the side allows the union of what the
matching rules of its isolating policies allow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, assert_never

from recommender.semantics.classes import ClassIndex
from recommender.semantics.connections import MAX_PORT, MIN_PORT, ConnectionSet, Protocol
from recommender.semantics.endpoints import Endpoint, ExternalPeer, Namespace, Pod, PodClass
from recommender.semantics.explain import Decision, DirectionResult, Grant, Isolation, PairResult
from recommender.semantics.matcher import IPPeers, RuleMatcher, RuleRef, Target, compile_policies
from recommender.semantics.policies import Direction, IPBlock, NetworkPolicy, parse_policy

Resolved = PodClass | ExternalPeer
_Key = int | ExternalPeer


class Evaluator:
    """Compiles policies once and answers queries about pods, pod classes and external IPs.

    Work is done per class pair (see `PodClass`) and cached, so the cost grows with the
    number of classes queried and rules, not with pods squared.

    A hostNetwork pod is treated as its IP, an `ExternalPeer`: selectors never match it and
    no policy isolates it. By default an ipBlock does not match the IPs of in-cluster pods:
    the API reference says ipBlocks are meant for cluster-external IPs, and CNIs differ on
    pod IPs. `ip_block_matches_pod_ips=True` lets ipBlocks match pods by `Pod.ip` too.
    """

    def __init__(
        self,
        policies: Iterable[NetworkPolicy | Mapping[str, Any]],
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        *,
        default_namespace: str = "default",
        ip_block_matches_pod_ips: bool = False,
    ) -> None:
        parsed = [
            p if isinstance(p, NetworkPolicy) else parse_policy(p, default_namespace=default_namespace)
            for p in policies
        ]
        self.targets: tuple[Target, ...] = compile_policies(parsed)
        # Targets by (namespace, direction, one matchLabels pair of the subject, or None).
        self._target_index: dict[tuple[str, Direction, tuple[str, str] | None], list[int]] = {}
        for i, target in enumerate(self.targets):
            label = next(iter(target.subject.match_labels.items()), None)
            self._target_index.setdefault((target.namespace, target.direction, label), []).append(i)
        self._namespaces = {ns.name: ns for ns in namespaces}
        self._pod_ip_blocks = (
            {peer.block for t in self.targets for r in t.rules for peer in r.peers if isinstance(peer, IPPeers)}
            if ip_block_matches_pod_ips
            else set()
        )
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
        """The pod's class, or an `ExternalPeer` for a hostNetwork pod."""
        if pod.host_network:
            if pod.ip is None:
                raise ValueError(f"hostNetwork pod {pod} has no IP: it can only be matched by its IP")
            return ExternalPeer(pod.ip)
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
        """The ipBlocks a pod IP falls in; none unless ipBlocks may match pod IPs."""
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
            case PodClass() | ExternalPeer():
                return endpoint
            case _:
                assert_never(endpoint)

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
        targets = self._targets_selecting(subject, direction)
        if not targets:
            return DirectionResult(direction, Isolation.NOT_SELECTED)
        server = peer if direction is Direction.EGRESS else subject
        grants = tuple(
            Grant(rule.ref, rule.allowed(server))
            for target in targets
            for rule in target.rules
            if self._rule_matches_peer(rule, peer)
        )
        policies = tuple(sorted({policy for target in targets for policy in target.policies}))
        return DirectionResult(direction, Isolation.ISOLATED, policies, tuple(sorted(grants, key=lambda g: g.rule)))

    def _targets_selecting(self, subject: PodClass, direction: Direction) -> tuple[Target, ...]:
        key = self._index.id_of(subject), direction
        found = self._subjects.get(key)
        if found is None:
            buckets = [(subject.namespace, direction, label) for label in (None, *subject.labels.items())]
            candidates = sorted({i for bucket in buckets for i in self._target_index.get(bucket, ())})
            found = tuple(self.targets[i] for i in candidates if self.targets[i].selects(subject))
            self._subjects[key] = found
        return found

    def subjects_of(self, target: Target) -> tuple[PodClass, ...]:
        """The known pod classes `target` selects: the pods its rules apply to."""
        return tuple(self._index.classes[i] for i in sorted(self._index.subjects(target.namespace, target.subject)))

    def peers_of(self, rule: RuleMatcher) -> tuple[PodClass, ...]:
        """The known pod classes the peers of `rule` match (external peers: `rule.matches_peer`)."""
        return tuple(self._index.classes[i] for i in sorted(self._selection(rule)))

    def _rule_matches_peer(self, rule: RuleMatcher, peer: Resolved) -> bool:
        if isinstance(peer, ExternalPeer):
            return rule.matches_peer(peer)
        return self._index.id_of(peer) in self._selection(rule)

    def _selection(self, rule: RuleMatcher) -> frozenset[int]:
        selection = self._selections.get(rule.ref)
        if selection is None:
            selection = frozenset().union(*(self._index.select(matcher) for matcher in rule.peers))
            self._selections[rule.ref] = selection
        return selection
