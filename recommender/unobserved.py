"""Unobserved workloads: the pods a namespace's default-deny isolates although no allow rule names them.

A nightly job or a rarely used admin tool sends nothing during the window, so the proposal has no
rule for it, and its namespace's default-deny cuts it off. With an inventory (every pod of the
cluster) these workloads are listed per managed namespace, and `--unobserved` decides:

- `isolate`: the default-deny isolates them (listed, so that someone decides);
- `allow-as-is`: the default-deny's (and allow-dns's) pod selector excludes them, with a
  `matchExpressions` NotIn on one of their labels that no other pod of the namespace carries;
- `skip`: their namespace gets no default-deny at all.

Without an inventory only the pods seen are known, so unobserved workloads cannot be named.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from collectors.records import labels_from_text
from recommender.errors import ReplayError
from recommender.selectors import Selector, is_volatile, key_rank
from recommender.semantics import Evaluator, ExternalPeer, Pod
from recommender.semantics.selectors import LabelSelector, Operator, Requirement

PROBE_PEER = ipaddress.ip_address("192.0.2.1")
"""A documentation address (RFC 5737): the synthetic peer that proves a workload is left unisolated."""
PROBE_PORT = 1


class UnobservedMode(StrEnum):
    """`--unobserved`: what the proposal does with workloads it has no allow rule for."""

    ISOLATE = "isolate"
    ALLOW_AS_IS = "allow-as-is"
    SKIP = "skip"


@dataclass(frozen=True)
class UnobservedWorkload:
    """A workload of a managed namespace with no allow policy of its own, and what became of it."""

    namespace: str
    workload: str
    kind: str
    pods: tuple[str, ...]
    exempt_by: tuple[str, str] | None = None
    """The label (key, value) the default-deny's NotIn exempts it by (`allow-as-is`)."""
    isolated: bool = True
    outcome: str = "isolated without an allow rule"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.workload}"

    def describe(self) -> str:
        pods = ", ".join(self.pods[:3]) + (", …" if len(self.pods) > 3 else "")
        count = f"{len(self.pods)} pod{'s' if len(self.pods) != 1 else ''}"
        return f"{self.key} ({self.kind or 'Workload'}, {count}: {pods}): {self.outcome}"


@dataclass(frozen=True)
class Unobserved:
    """The unobserved workloads of a proposal (`known` only with an inventory)."""

    mode: UnobservedMode
    known: bool
    workloads: tuple[UnobservedWorkload, ...] = ()

    def in_namespace(self, namespace: str) -> list[UnobservedWorkload]:
        return [item for item in self.workloads if item.namespace == namespace]

    @property
    def skipped_namespaces(self) -> tuple[str, ...]:
        """Namespaces left without a default-deny (`skip`)."""
        if self.mode is not UnobservedMode.SKIP:
            return ()
        return tuple(sorted({item.namespace for item in self.workloads}))

    def pod_selector(self, namespace: str) -> LabelSelector:
        """The default-deny's pod selector: every pod, but the workloads left as is."""
        values: dict[str, set[str]] = {}
        for item in self.in_namespace(namespace):
            if item.exempt_by is not None:
                values.setdefault(item.exempt_by[0], set()).add(item.exempt_by[1])
        return LabelSelector(
            expressions=tuple(Requirement(key, Operator.NOT_IN, frozenset(values[key])) for key in sorted(values))
        )


def find_unobserved(
    mode: UnobservedMode,
    pods: pd.DataFrame | None,
    known: bool,
    managed: Iterable[str],
    with_policy: Iterable[tuple[str, str]],
    selectors: Mapping[tuple[str, str], Selector],
) -> Unobserved:
    """The workloads of `managed` namespaces among `pods` (every pod, when `known`) that have no
    allow policy (`with_policy`: their (namespace, workload)), and what `mode` does with them."""
    if not known or pods is None:
        return Unobserved(mode, known=False)
    managed, covered = set(managed), set(with_policy)
    in_managed = pods[pods["namespace"].isin(managed)]
    carriers: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    """(namespace, label key, label value) → the workloads whose pods carry that label."""
    for namespace, workload, text in zip(in_managed["namespace"], in_managed["workload"], in_managed["labels"],
                                         strict=True):  # fmt: skip
        for key, value in labels_from_text(text).items():
            carriers.setdefault((namespace, key, value), set()).add((namespace, workload))
    found = [
        (namespace, workload, rows)
        for (namespace, workload), rows in in_managed[in_managed["workload"] != ""].groupby(["namespace", "workload"])
        if (namespace, workload) not in covered
    ]
    labels = {(namespace, workload): _candidate_labels(rows, selectors.get((namespace, workload)))
              for namespace, workload, rows in found}  # fmt: skip
    exempt = _exemptions(labels, carriers) if mode is UnobservedMode.ALLOW_AS_IS else {}
    workloads = []
    for namespace, workload, rows in found:
        label = exempt.get((namespace, workload))
        kind = next((kind for kind in rows["kind"] if kind), "")
        workloads.append(UnobservedWorkload(namespace, workload, kind, tuple(sorted(rows["pod"])), label,
                                            *_outcome(mode, label)))  # fmt: skip
    return Unobserved(mode, known=True, workloads=tuple(workloads))


def _exemptions(
    labels: Mapping[tuple[str, str], list[tuple[str, str]]],
    carriers: Mapping[tuple[str, str, str], set[tuple[str, str]]],
) -> dict[tuple[str, str], tuple[str, str]]:
    """The label each unobserved workload is exempted by, such that the pods carrying any chosen label
    are exactly the pods of the exempted workloads. A workload with no label that only exempted
    workloads carry stays isolated, which can take the label away from another: repeat until stable."""
    exempted = set(labels)
    while True:
        chosen = {}
        for (namespace, workload), candidates in labels.items():
            if (namespace, workload) in exempted:
                label = next((item for item in candidates if carriers[(namespace, *item)] <= exempted), None)
                if label is not None:
                    chosen[(namespace, workload)] = label
        if set(chosen) == exempted:
            return chosen
        exempted = set(chosen)


def _outcome(mode: UnobservedMode, exempt: tuple[str, str] | None) -> tuple[bool, str]:
    """(isolated, what became of the workload) under `mode`."""
    if mode is UnobservedMode.SKIP:
        return False, "left as is: its namespace gets no default-deny"
    if exempt is not None:
        return False, f"left as is: the default-deny does not select {exempt[0]}={exempt[1]}"
    if mode is UnobservedMode.ALLOW_AS_IS:
        return True, "isolated without an allow rule: no label sets it apart from the observed workloads"
    return True, "isolated without an allow rule"


def _candidate_labels(rows: pd.DataFrame, selector: Selector | None) -> list[tuple[str, str]]:
    """The labels every pod of a workload has, to exempt it by: its selector's first, then its other
    stable ones. One only pods of unobserved workloads carry exempts exactly those pods."""
    labels = [labels_from_text(text) for text in rows["labels"]]
    common = {key: value for key, value in labels[0].items() if all(other.get(key) == value for other in labels)}
    ordered = [item for item in (selector.match_labels if selector else ()) if item in common.items()]
    rest = [item for item in common.items() if item not in ordered and not is_volatile(item[0])]
    return ordered + sorted(rest, key=lambda item: (key_rank(item[0]), item[1]))


def prove_left_as_is(evaluator: Evaluator, workload_of: Mapping[Pod, str], unobserved: Unobserved) -> int:
    """Replay a synthetic connection to and from every pod of each workload left as is (a peer no
    rule names, on a port no rule names): it must be allowed. Raises `ReplayError`; returns the count."""
    left = {item.key for item in unobserved.workloads if not item.isolated}
    peer, denied, replayed = ExternalPeer(PROBE_PEER), [], 0
    for pod in sorted((pod for pod, key in workload_of.items() if key in left), key=str):
        for decision in (
            evaluator.evaluate(peer, pod, "TCP", PROBE_PORT),
            evaluator.evaluate(pod, peer, "TCP", PROBE_PORT),
        ):
            replayed += 1
            if not decision.allowed:
                denied.append(f"unobserved workload left as is: {decision}")
    if denied:
        raise ReplayError(denied)
    return replayed
