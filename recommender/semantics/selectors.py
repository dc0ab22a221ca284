"""Labels and Kubernetes label selectors (matchLabels and matchExpressions)."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

from recommender.semantics.errors import FieldError
from recommender.semantics.manifest import fields_of, list_of, mapping_of, string_of

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


def parse_label_selector(raw: object, field_path: str) -> LabelSelector:
    """Read a selector dict (camelCase or the kubernetes client's snake_case keys)."""
    spec = fields_of(raw, field_path, ("matchLabels", "matchExpressions"))
    labels: dict[str, str] = {}
    for key, value in mapping_of(spec.get("matchLabels", {}), f"{field_path}.matchLabels").items():
        label_path = f"{field_path}.matchLabels.{key}"
        labels[string_of(key, label_path)] = string_of(value, label_path, allow_empty=True)
    expressions = list_of(spec.get("matchExpressions", []), f"{field_path}.matchExpressions")
    return LabelSelector(
        Labels(labels),
        tuple(_parse_requirement(item, f"{field_path}.matchExpressions[{i}]") for i, item in enumerate(expressions)),
    )


def _parse_requirement(raw: object, field_path: str) -> Requirement:
    spec = fields_of(raw, field_path, ("key", "operator", "values"))
    key = string_of(spec.get("key"), f"{field_path}.key")
    operator_name = spec.get("operator")
    try:
        operator = Operator(operator_name if isinstance(operator_name, str) else "")  # not a string: no operator
    except ValueError:
        allowed = ", ".join(op.value for op in Operator)
        raise FieldError(f"{field_path}.operator", f"unknown operator {operator_name!r} (expected {allowed})") from None
    values_path = f"{field_path}.values"
    values = list_of(spec.get("values", []), values_path)
    values = [string_of(v, f"{values_path}[{i}]", allow_empty=True) for i, v in enumerate(values)]
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        raise FieldError(values_path, f"must be non-empty for operator {operator}")
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        raise FieldError(values_path, f"must be empty for operator {operator}")
    return Requirement(key, operator, frozenset(values))
