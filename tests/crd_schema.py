"""Validate manifests against the upstream CRD schemas in ../shared/reference/crds/.

`validate(manifest)` finds the CRD of the manifest's kind and checks it with jsonschema over
the version's `openAPIV3Schema`, strictly: every object schema that lists `properties` and
does not preserve unknown fields is closed (`additionalProperties: false`), as the API
server's field validation is. Tests that use it skip cleanly when the folder is absent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "crds"


def require_crds() -> None:
    """Skip the calling test when the reference CRDs are not available."""
    if not CRDS_DIR.is_dir():
        pytest.skip(f"reference CRDs not found in {CRDS_DIR}")


@functools.cache
def _validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) → a validator of the closed openAPIV3Schema of that served version."""
    import jsonschema

    return {
        key: jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
        for key, schema in _schemas().items()
    }


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the closed openAPIV3Schema of that served version."""
    found = {}
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                found[f"{group}/{version['name']}", kind] = _closed(version["schema"]["openAPIV3Schema"])
    return found


def _closed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed.setdefault("additionalProperties", False)
    # metadata is an ObjectMeta the CRD does not spell out
    if isinstance(closed.get("properties"), dict) and "metadata" in closed["properties"]:
        closed["properties"]["metadata"] = {"type": "object"}
    return closed


def known_kinds() -> set[str]:
    require_crds()
    return {kind for _, kind in _schemas()}


def validate(manifest: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` if `manifest` does not fit its kind's upstream CRD."""
    import jsonschema

    require_crds()
    key = manifest.get("apiVersion"), manifest.get("kind")
    validator = _validators().get(key)
    if validator is None:
        raise LookupError(f"no reference CRD for {key[1]} {key[0]} in {CRDS_DIR}")
    error = jsonschema.exceptions.best_match(validator.iter_errors(manifest))
    if error is not None:
        raise error


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every violation of the manifest's CRD schema, as `path: message` (empty when valid)."""
    require_crds()
    validator = _validators()[(manifest["apiVersion"], manifest["kind"])]
    errors = sorted(validator.iter_errors(manifest), key=lambda error: list(map(str, error.absolute_path)))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]
