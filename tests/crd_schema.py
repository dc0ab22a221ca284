"""Validate manifests against the upstream CRD schemas in ../shared/reference/crds/ (skipped when absent).

The schema of a kind is its CRD's `openAPIV3Schema` for the manifest's version, made strict as the
API server's field validation is: an object schema (`type: object`) that lists `properties` and does
not preserve unknown fields is closed (`additionalProperties: false`); `anyOf`/`oneOf` branches that
only say which properties are required stay open. CEL rules (`x-kubernetes-validations`) are not
checked.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

CRDS = REPO.parent / "shared" / "reference" / "crds"
CRD_FILES = {
    ("cilium.io", "CiliumNetworkPolicy"): "cilium.io_ciliumnetworkpolicies.yaml",
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): "cilium.io_ciliumclusterwidenetworkpolicies.yaml",
    ("policy.networking.k8s.io", "ClusterNetworkPolicy"): "policy.networking.k8s.io_clusternetworkpolicies.yaml",
}


def _strict(schema: Any) -> Any:
    """The schema with every object that lists properties closed, recursively."""
    if isinstance(schema, dict):
        strict = {key: _strict(value) for key, value in schema.items()}
        closable = schema.get("type") == "object" and "properties" in schema
        if closable and not schema.get("x-kubernetes-preserve-unknown-fields"):
            strict.setdefault("additionalProperties", False)
        return strict
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def _validator(group: str, kind: str, version: str) -> jsonschema.Draft7Validator:
    path = CRDS / CRD_FILES[(group, kind)]
    if not path.exists():
        pytest.skip(f"upstream CRDs not available ({path})")
    crd = yaml.safe_load(path.read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return jsonschema.Draft7Validator(_strict(served["schema"]["openAPIV3Schema"]))
    raise AssertionError(f"{path.name} has no version {version}")


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every violation of the manifest's CRD schema, as `path: message` (empty when valid)."""
    group, version = manifest["apiVersion"].split("/")
    validator = _validator(group, manifest["kind"], version)
    errors = sorted(validator.iter_errors(manifest), key=lambda error: list(error.absolute_path))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]
