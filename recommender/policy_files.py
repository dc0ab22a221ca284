"""Policies from files: YAML (multi-document) or JSON, `List` objects, whole directories.

NetworkPolicies, CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies and ClusterNetworkPolicies
are read; other kinds are skipped."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from collectors.names import InvalidName, check_labels, check_namespace, check_object_name
from recommender.errors import PolicyFileError
from recommender.semantics import (
    POLICY_KINDS,
    AnyPolicy,
    CiliumPolicy,
    InvalidPolicyError,
    NetworkPolicy,
    parse_any_policy,
)

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def load_policy_files(path: str) -> list[dict[str, Any]]:
    """Every policy in a file, or in the files of a directory tree (sorted by path).

    Other kinds (a kustomization.yaml, Services…) are skipped. Each policy is validated, so a
    malformed one is reported with its file now rather than misread later; so is a namespace/name
    given twice (the cluster holds one object per name: which one is in force is not for us to guess).
    """
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _dirs, names in os.walk(path)
            for name in names
            if name.endswith(POLICY_SUFFIXES)
        )
    elif os.path.exists(path):
        files = [path]
    else:
        raise PolicyFileError(f"{path}: no such file or directory")
    found: dict[str, str] = {}
    policies = []
    for file in files:
        for policy, policy_id in _policies_in(file):
            if policy_id in found:
                again = "again in the same file" if found[policy_id] == file else f"and in {file}"
                raise PolicyFileError(
                    f"{found[policy_id]}: {policy_id} is defined twice ({again}): a cluster holds one "
                    "object per namespace and name, so give each policy once"
                )
            found[policy_id] = file
            policies.append(policy)
    return policies


def _policies_in(path: str) -> list[tuple[dict[str, Any], str]]:
    """The policies of one file, each with its kind and namespace/name."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        documents = [json.loads(text)] if path.endswith(".json") else list(yaml.safe_load_all(text))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path}: cannot read: {exc}") from exc
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PolicyFileError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {exc}") from exc
    found = []
    for document in _flatten(documents):
        if not isinstance(document, dict) or document.get("kind") not in POLICY_KINDS:
            continue
        try:
            policy = parse_any_policy(document)
            policy_id = f"NetworkPolicy {policy.id}" if isinstance(policy, NetworkPolicy) else policy.id
            _check_names(policy)
        except InvalidPolicyError as exc:
            raise PolicyFileError(f"{path}: {exc}") from exc
        except InvalidName as exc:
            raise PolicyFileError(f"{path}: {policy_id}: {exc}") from exc
        found.append((document, policy_id))
    return found


def _check_names(policy: AnyPolicy) -> None:
    """Check the names of a valid policy: its namespace and name, and (for a NetworkPolicy) the labels
    its selectors match. Cilium selectors carry source prefixes (`k8s:`, `reserved:`) their parser checks."""
    if isinstance(policy, NetworkPolicy | CiliumPolicy) and policy.namespace:
        check_namespace(policy.namespace)
    check_object_name(policy.name, "policy name")
    if not isinstance(policy, NetworkPolicy):
        return
    peers = [peer for rule in policy.ingress + policy.egress for peer in rule.peers]
    selectors = [policy.pod_selector, *(peer.pod_selector for peer in peers), *(p.namespace_selector for p in peers)]
    for selector in filter(None, selectors):
        check_labels(selector.match_labels)
        check_labels({requirement.key: "" for requirement in selector.expressions})


def _flatten(documents: list[Any]) -> list[Any]:
    """Documents, with the items of `List` objects (what `kubectl get -o yaml` writes) in their place."""
    flat = []
    for document in documents:
        kind = document.get("kind") if isinstance(document, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and isinstance(document.get("items") or [], list):
            flat.extend(_flatten(document.get("items") or []))
        elif document is not None:
            flat.append(document)
    return flat
