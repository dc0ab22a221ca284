"""Decoding a policy manifest (camelCase YAML or the kubernetes client's `to_dict()`) into structs.

The kinds' structs are `collectors.decoding.Strict`: an unknown field is an error, because a
misspelled field (`podselector`) that is silently ignored changes a policy's meaning, often to
"allow everything".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from msgspec import Meta

from collectors.decoding import FieldError, Lenient
from recommender.semantics.errors import InvalidPolicyError


class Metadata(Lenient, frozen=True):
    """What a policy's metadata defines for the evaluator; labels, annotations and the rest are ignored."""

    name: Annotated[str, Meta(min_length=1)]
    namespace: str = ""


def raw_name(manifest: object, key: str = "name") -> str | None:
    """`metadata.name` (or another `key`) read before decoding, to name a policy in its errors."""
    metadata = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    value = metadata.get(key) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) else None


def policy_error(error: FieldError, kind: str, label: str) -> InvalidPolicyError:
    """The error of a field of the policy `label` (`namespace/name`) of `kind`."""
    return InvalidPolicyError(label, error.path or "(manifest)", error.reason, kind)
