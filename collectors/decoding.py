"""Typed decoding of API objects and manifests with msgspec, and errors that name the field.

`decode(raw, Type)` converts what JSON, YAML or the kubernetes client's `to_dict()` produced
into msgspec structs (camelCase names by `rename="camel"`). A value that does not fit raises
`FieldError` with the field's `path` (`spec.ingress[0].ports[1].port`) and a `reason`
(`expected an integer, got str 'http'`), built from msgspec's `ValidationError`.

Keys are read as the API server reads them: a null field is an absent one, and `to_dict()`'s
snake_case spellings (`pod_selector`, `_from`) are the camelCase ones; the keys and values of
free-form maps (labels, selectors) are kept as they are. That reading (`_plain`) is done only when
the object does not convert as it is: a null or a snake_case key fails a `Strict` struct. `Lenient`
structs read camelCase, what the API server and kubectl write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

T = TypeVar("T")

_FREE_FORM = frozenset({"labels", "annotations", "matchLabels", "selector"})
"""Maps whose keys are data (label keys), not field names."""


class Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """A manifest part: a misspelled field, if ignored, could widen a policy, so it is an error."""


class Lenient(msgspec.Struct, frozen=True, rename="camel"):
    """An API object part: only the fields read are declared, the others are ignored."""


class FieldError(ValueError):
    """One field of an object is malformed: `path` says where, `reason` what."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


def decode(raw: object, type_: type[T]) -> T:
    """`raw` as a `type_`; raises `FieldError` naming the first field that does not fit."""
    try:
        return msgspec.convert(raw, type_)  # the common case: nothing to read as absent or to rename
    except msgspec.ValidationError:
        data = _plain(raw)
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc), data, type_) from None


def exactly_one(spec: msgspec.Struct, path: str) -> str:
    """The name of the one field of `spec` that is given (not None); else raises `FieldError`."""
    given = given_fields(spec)
    if len(given) != 1:
        raise FieldError(path, f"needs exactly one of {', '.join(spec.__struct_encode_fields__)}")
    return given[0]


def given_fields(spec: msgspec.Struct) -> list[str]:
    """The names (as written) of the fields of `spec` that are given (not None)."""
    names = zip(spec.__struct_fields__, spec.__struct_encode_fields__, strict=True)
    return [written for name, written in names if getattr(spec, name) is not None]


def _plain(value: object, *, free_form: bool = False) -> object:
    """`value` with null fields dropped and snake_case keys in camelCase, below free-form maps too."""
    if isinstance(value, Mapping) and not free_form:
        return {
            _camel(key): _plain(item, free_form=_camel(key) in _FREE_FORM)
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list | tuple) and not free_form:
        return [_plain(item) for item in value]
    return value


def _camel(key: object) -> object:
    if not isinstance(key, str) or "_" not in key:
        return key
    head, *rest = key.lstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def describe(value: object) -> str:
    """A value for an error message: its type and (the start of) its repr."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


_MESSAGE = re.compile(r"(?P<what>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>.*)`)?", re.DOTALL)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"Object (?P<problem>missing required|contains unknown) field `(?P<name>.*)`")
_EXPECTED = re.compile(r"Expected `(?P<types>[^`]*)`(?P<bound>[^,]*)(, got `\w+`)?")
_WORDS = {"int": "an integer", "str": "a string", "bool": "true or false", "object": "an object", "array": "a list"}
_INVALID = {"Invalid RFC3339 encoded datetime": "expected an RFC 3339 time"}


def _field_error(message: str, data: object, type_: type) -> FieldError:
    match = _MESSAGE.fullmatch(message)
    assert match is not None  # the pattern matches every text
    what = match["what"]
    path, value, node = _locate(data, inspect.type_info(type_), match["path"] or "")
    if match["key"]:
        key = next(key for key in value if not isinstance(key, str))  # type: ignore[attr-defined]
        return FieldError(path, f"keys must be strings, got {describe(key)}")
    if field := _FIELD.fullmatch(what):
        path = f"{path}.{field['name']}" if path else field["name"]
        if field["problem"] == "missing required":
            return FieldError(path, "is required")
        names = [f.encode_name for f in node.fields] if isinstance(node, inspect.StructType) else []
        return FieldError(path, f"unknown field (expected {', '.join(names)})")
    if what.startswith("Invalid enum value"):
        choices = node.values if isinstance(node, inspect.LiteralType) else [m.value for m in node.cls]
        return FieldError(path, f"unsupported value {value!r} (expected {', '.join(map(str, choices))})")
    if expected := _EXPECTED.fullmatch(what):
        types = [t for t in expected["types"].split(" | ") if t != "null"]
        hint = " (quote it in YAML)" if types == ["str"] and isinstance(value, bool | int | float) else ""
        words = " or ".join(_WORDS.get(t, t) for t in types)
        return FieldError(path, f"expected {words}{expected['bound']}, got {describe(value)}{hint}")
    return FieldError(path, f"{_INVALID.get(what, what)}, got {describe(value)}")


def _locate(data: Any, node: Any, path: str) -> tuple[str, object, Any]:
    """The readable path, the value and the type at msgspec's `path`; `[...]` (a map's key) is
    resolved to the first key whose value does not fit."""
    where = ""
    for name, index in _PART.findall(path):
        node = _unwrap(node)
        if name:
            field = next(f for f in node.fields if f.encode_name == name)
            node, data = field.type, data.get(name)
            where = f"{where}.{name}" if where else name
        elif index == "...":
            node = node.value_type  # a map of strings: labels or a selector
            key, data = next((k, v) for k, v in data.items() if not isinstance(v, str))
            where = f"{where}.{key}"
        else:
            node, data = node.item_type, data[int(index)]
            where = f"{where}[{index}]"
    return where, data, _unwrap(node)


def _unwrap(node: Any) -> Any:
    """The type an optional (`X | None`) stands for."""
    if isinstance(node, inspect.UnionType):
        types = [t for t in node.types if not isinstance(t, inspect.NoneType)]
        return types[0] if len(types) == 1 else node
    return node
