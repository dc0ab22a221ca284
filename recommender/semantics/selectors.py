"""Labels and Kubernetes label selectors (matchLabels and matchExpressions)."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, assert_never

import msgspec
from msgspec import Meta

from collectors.decoding import FieldError, Strict

NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace, equal to the namespace's name."""


class Labels(Mapping[str, str]):
    """An immutable, hashable label map, printed sorted as `k=v,k2=v2`."""

    __slots__ = ("_hash", "_labels")

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        self._labels = dict(sorted((labels or {}).items()))
        self._hash = hash(tuple(self._labels.items()))

    def __getitem__(self, key: str) -> str:
        return self._labels[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._labels.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._labels

    def items(self) -> ItemsView[str, str]:
        return self._labels.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._hash == other._hash and self._labels == other._labels
        return isinstance(other, Mapping) and self._labels == dict(other)

    def __repr__(self) -> str:
        return f"Labels({self._labels!r})"

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self._labels.items())


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry. NotIn also matches pods that lack the key, as upstream."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case Operator.IN:
                return labels.get(self.key) in self.values
            case Operator.NOT_IN:
                return labels.get(self.key) not in self.values
            case Operator.EXISTS:
                return self.key in labels
            case Operator.DOES_NOT_EXIST:
                return self.key not in labels
            case _:
                assert_never(self.operator)

    def __str__(self) -> str:
        values = ",".join(sorted(self.values))
        match self.operator:
            case Operator.IN:
                return f"{self.key} in ({values})"
            case Operator.NOT_IN:
                return f"{self.key} notin ({values})"
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case _:
                assert_never(self.operator)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A label selector; the empty selector matches everything."""

    match_labels: Labels = field(default_factory=Labels)
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.expressions
        )

    def __str__(self) -> str:
        """The kubectl `-l` form, or `{}` for the empty selector (which matches everything)."""
        parts = [str(self.match_labels)] if self.match_labels else []
        parts += sorted(str(requirement) for requirement in self.expressions)
        return ",".join(parts) or "{}"


class RequirementSpec(Strict, frozen=True):
    """One matchExpressions entry as written."""

    key: Annotated[str, Meta(min_length=1)]
    operator: Operator
    values: tuple[str, ...] = ()


class SelectorSpec(Strict, frozen=True):
    """A label selector as written (`matchLabels`, `matchExpressions`)."""

    match_labels: dict[str, str] = msgspec.field(default_factory=dict)
    match_expressions: tuple[RequirementSpec, ...] = ()


def label_selector(spec: SelectorSpec, field_path: str) -> LabelSelector:
    """The selector `spec` means, checked as the API server checks it."""
    if "" in spec.match_labels:
        raise FieldError(f"{field_path}.matchLabels", "a label key may not be empty")
    for i, requirement in enumerate(spec.match_expressions):
        values_path = f"{field_path}.matchExpressions[{i}].values"
        if requirement.operator in (Operator.IN, Operator.NOT_IN) and not requirement.values:
            raise FieldError(values_path, f"must be non-empty for operator {requirement.operator}")
        if requirement.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and requirement.values:
            raise FieldError(values_path, f"must be empty for operator {requirement.operator}")
    return LabelSelector(
        Labels(spec.match_labels),
        tuple(Requirement(r.key, r.operator, frozenset(r.values)) for r in spec.match_expressions),
    )
