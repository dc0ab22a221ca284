"""Exact, stable label selectors for workloads (DESIGN.md, "Identity and selectors").

A workload's selector is the smallest subset of its pods' common labels that selects none of the
other known pods of its namespace. Volatile labels are never used; stable keys are preferred; a
semi-stable key such as `version` is used only when it is needed to tell workloads apart. When no
subset separates two workloads the selector says so, with the workloads it also selects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from collectors.names import label_value_problem
from recommender.semantics.selectors import Labels, LabelSelector

VOLATILE_KEYS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "job-name",
        "controller-uid",
        "helm.sh/chart",
        "chart",
        "heritage",
        "app.kubernetes.io/version",
        "io.kubernetes.pod.namespace",
    }
)
VOLATILE_PREFIXES = ("batch.kubernetes.io/", "io.cilium.k8s.", "io.cilium/")
STABLE_KEYS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app",
    "k8s-app",
    "name",
    "component",
)
SEMI_STABLE_KEYS = ("version",)
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
MAX_SUBSET_SIZE = 4


def is_volatile(key: str) -> bool:
    """Labels that change with every rollout, revision or job run, or that Cilium adds."""
    return key in VOLATILE_KEYS or key.startswith(VOLATILE_PREFIXES)


def key_rank(key: str) -> tuple[int, int, str]:
    """Sort order of label keys for selectors: stable keys first, then others, semi-stable last."""
    if key in STABLE_KEYS:
        return (0, STABLE_KEYS.index(key), key)
    if key in SEMI_STABLE_KEYS:
        return (2, SEMI_STABLE_KEYS.index(key), key)
    return (1, 0, key)


@dataclass(frozen=True)
class Selector:
    """The podSelector of one workload, and whether it is exact."""

    namespace: str
    workload: str
    match_labels: tuple[tuple[str, str], ...]
    also_selects: tuple[str, ...] = ()
    """Other workloads of the namespace this selector cannot exclude (empty when exact)."""

    @property
    def exact(self) -> bool:
        return not self.also_selects

    def as_dict(self) -> dict[str, object]:
        return {"matchLabels": dict(self.match_labels)} if self.match_labels else {}

    @functools.cached_property
    def label_selector(self) -> LabelSelector:
        """The selector as the semantics engine and the renderer read it."""
        return LabelSelector(Labels(dict(self.match_labels)))


@functools.cache
def namespace_selector(namespace: str) -> LabelSelector:
    """The namespace `namespace`, by the label the API server gives every namespace."""
    return LabelSelector(Labels({NAMESPACE_NAME_LABEL: namespace}))


def _selects(subset: Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in subset)


def choose_selectors(
    members: Iterable[tuple[str, str, Mapping[str, str]]],
) -> dict[tuple[str, str], Selector]:
    """Selectors for every workload, from (namespace, workload, pod labels) of every known pod.

    Returns {(namespace, workload): Selector}. Deterministic: the same members in any order give the
    same selectors.
    """
    pods: dict[str, dict[str, list[Mapping[str, str]]]] = {}
    for namespace, workload, labels in members:
        pods.setdefault(namespace, {}).setdefault(workload, []).append(labels)
    selectors: dict[tuple[str, str], Selector] = {}
    for namespace, workloads in sorted(pods.items()):
        for workload, own in sorted(workloads.items()):
            others = [
                (name, labels) for name, pod_labels in workloads.items() if name != workload for labels in pod_labels
            ]
            selectors[(namespace, workload)] = _choose(namespace, workload, own, others)
    return selectors


def _choose(
    namespace: str,
    workload: str,
    own: list[Mapping[str, str]],
    others: list[tuple[str, Mapping[str, str]]],
) -> Selector:
    common = dict(own[0])
    for labels in own[1:]:
        common = {key: value for key, value in common.items() if labels.get(key) == value}
    candidates = sorted(((k, v) for k, v in common.items() if not is_volatile(k)), key=lambda kv: key_rank(kv[0]))
    has_stable = any(key not in SEMI_STABLE_KEYS for key, _value in candidates)
    for size in range(1, min(len(candidates), MAX_SUBSET_SIZE) + 1):
        for subset in combinations(candidates, size):
            if has_stable and all(key in SEMI_STABLE_KEYS for key, _value in subset):
                continue  # a semi-stable key only ever narrows a stable one
            if not any(_selects(subset, labels) for _name, labels in others):
                return Selector(namespace, workload, tuple(sorted(subset)))
    widest = tuple(sorted(candidates))
    if len(candidates) > MAX_SUBSET_SIZE and not any(_selects(widest, labels) for _name, labels in others):
        return Selector(namespace, workload, widest)
    also = tuple(sorted({name for name, labels in others if _selects(widest, labels)}))
    return Selector(namespace, workload, widest, also)


def label_to_select(workload: str, others: Iterable[Mapping[str, str]]) -> tuple[tuple[str, str], ...]:
    """A stable label (`app.kubernetes.io/name=<workload>`, else the next stable key) that, put on a
    workload's pod template, would select it and none of `others` (the other pods of its namespace)."""
    others = list(others)
    if label_value_problem(workload):
        return ()
    for key in STABLE_KEYS:
        if not any(labels.get(key) == workload for labels in others):
            return ((key, workload),)
    return ()
