"""An index of pod classes, to find the classes a peer matcher matches without a full scan."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import assert_never

from recommender.semantics.endpoints import PodClass
from recommender.semantics.matcher import AllPeers, EntityPeers, FQDNPeers, IPPeers, PeerMatcher, PodPeers
from recommender.semantics.policies import IPBlock
from recommender.semantics.selectors import LabelSelector


class ClassIndex:
    """Pod classes numbered in arrival order, indexed by namespace labels, label and ipBlock.

    `select` narrows with the index and lets the matcher's own `matches()` decide, so the
    index only has to over-approximate: the semantics live in one place.
    """

    def __init__(self) -> None:
        self.classes: list[PodClass] = []
        self._ids: dict[PodClass, int] = {}
        self._by_namespace: dict[Mapping[str, str], set[int]] = defaultdict(set)
        self._by_namespace_name: dict[str, set[int]] = defaultdict(set)
        self._by_label: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._by_block: dict[IPBlock, set[int]] = defaultdict(set)
        self._namespace_selections: dict[LabelSelector, tuple[Mapping[str, str], ...]] = {}

    def add(self, pods: PodClass) -> tuple[int, bool]:
        """The class's id, and whether it was new."""
        known = self._ids.get(pods)
        if known is not None:
            return known, False
        class_id = self._ids[pods] = len(self.classes)
        self.classes.append(pods)
        if pods.namespace_labels not in self._by_namespace:
            self._namespace_selections.clear()
        self._by_namespace[pods.namespace_labels].add(class_id)
        self._by_namespace_name[pods.namespace].add(class_id)
        for label in pods.labels.items():
            self._by_label[label].add(class_id)
        for block in pods.ip_blocks:
            self._by_block[block].add(class_id)
        return class_id, True

    def id_of(self, pods: PodClass) -> int:
        return self._ids[pods]

    def select(self, matcher: PeerMatcher) -> frozenset[int]:
        """The ids of the classes `matcher` matches."""
        return frozenset(i for i in self._candidates(matcher) if matcher.matches(self.classes[i]))

    def subjects(self, namespace: str, selector: LabelSelector) -> frozenset[int]:
        """The ids of the classes of `namespace` that a policy's podSelector `selector` selects."""
        candidates = self._by_namespace_name.get(namespace, set())
        if selector.match_labels:
            candidates = min((self._by_label.get(label, set()) for label in selector.match_labels.items()), key=len)
        return frozenset(
            i for i in candidates if self.classes[i].namespace == namespace and selector.matches(self.classes[i].labels)
        )

    def _candidates(self, matcher: PeerMatcher) -> Collection[int]:
        match matcher:
            case AllPeers():
                return range(len(self.classes))
            case EntityPeers():
                return range(len(self.classes)) if {"all", "cluster"} & matcher.entities else ()
            case FQDNPeers():
                return ()
            case IPPeers():
                return self._by_block.get(matcher.block, ())
            case PodPeers() if matcher.pods.match_labels:
                label_sets = [self._by_label.get(label, set()) for label in matcher.pods.match_labels.items()]
                return min(label_sets, key=len)
            case PodPeers():
                namespaces = self._namespaces_matching(matcher.namespaces)
                return set().union(*(self._by_namespace[labels] for labels in namespaces))
            case _:
                assert_never(matcher)

    def _namespaces_matching(self, selector: LabelSelector) -> tuple[Mapping[str, str], ...]:
        """The label sets of the namespaces `selector` matches (namespaces are keyed by labels)."""
        found = self._namespace_selections.get(selector)
        if found is None:
            found = tuple(labels for labels in self._by_namespace if selector.matches(labels))
            self._namespace_selections[selector] = found
        return found
