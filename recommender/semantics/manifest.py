"""Reading manifest dicts: camelCase YAML or the kubernetes client's `to_dict()` snake_case.

`to_dict()` spells fields in snake_case, prefixes Python keywords with `_` (`_from`,
`_except`) and writes absent fields as None; all of that reads like the YAML form here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from recommender.semantics.errors import FieldError


@functools.cache
def _aliases(names: tuple[str, ...]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name in names:
        snake = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
        for alias in (name, snake, f"_{name}", f"_{snake}"):
            aliases[alias] = name
    return aliases


def mapping_of(raw: object, field_path: str) -> Mapping[Any, Any]:
    if not isinstance(raw, Mapping):
        raise FieldError(field_path, f"must be a mapping, got {type(raw).__name__}")
    return raw


def fields_of(raw: object, field_path: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The non-null fields of a mapping under their camelCase `names`; other keys are errors.

    Unknown keys are rejected because a misspelled field (`podselector`) that is silently
    ignored changes a policy's meaning, often to "allow everything".
    """
    aliases = _aliases(names)
    found: dict[str, Any] = {}
    for key, value in mapping_of(raw, field_path).items():
        name = aliases.get(key)
        if name is None:
            raise FieldError(f"{field_path}.{key}", f"unknown field (expected {', '.join(names)})")
        if value is not None:
            found[name] = value
    return found


def list_of(raw: object, field_path: str) -> list[Any]:
    if not isinstance(raw, list | tuple):
        raise FieldError(field_path, f"must be a list, got {type(raw).__name__}")
    return list(raw)


def string_of(raw: object, field_path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(raw, str) or not (raw or allow_empty):
        hint = " (quote it in YAML)" if isinstance(raw, bool | int | float) else ""
        raise FieldError(field_path, f"must be a non-empty string, got {raw!r}{hint}")
    return raw
