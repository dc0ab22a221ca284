"""Verification and drift results as JSON, Markdown and terminal tables; formatting only."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recommender.semantics import RuleRef
from recommender.verification import Drift, Replay

CONNECTION_FIELDS = ["client", "server", "protocol", "port", "count", "allowed", "allowed_by", "explanation"]


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return json.loads(frame[columns].to_json(orient="records"))


def _shown(connections: pd.DataFrame) -> pd.DataFrame:
    """Replayed connections with their rules and decision as text: `allowed_by` and `explanation`."""
    return connections.assign(
        allowed_by=connections["allowed_by"].map(rule_list), explanation=connections["decision"].map(str)
    )


def rule_list(rules: Iterable[RuleRef]) -> str:
    """`ns/a ingress[0], ns/b egress[1]`."""
    return ", ".join(map(str, rules))


def verify_json(replayed: Replay) -> str:
    connections = replayed.connections
    document = {
        "totals": {
            "connections": len(connections),
            "allowed": int(connections["allowed"].sum()),
            "denied": int((~connections["allowed"]).sum()),
            "recall": round(replayed.recall, 6),
            "cni": str(replayed.profile),
        },
        "connections": _records(_shown(connections), CONNECTION_FIELDS),
    }
    return json.dumps(document, indent=2) + "\n"


def drift_json(result: Drift) -> str:
    document = {
        "totals": {
            "observed_allowed": len(result.allowed),
            "would_break": len(result.would_break),
            "rules": len(result.rules),
            "unused_rules": len(result.unused_rules),
            "cni": str(result.replayed.profile),
        },
        "would_break": _records(_shown(result.would_break), CONNECTION_FIELDS),
        "allowed": _records(_shown(result.allowed), CONNECTION_FIELDS),
        "unused_rules": _records(result.unused_rules, ["namespace", "policy", "direction", "rule"]),
        "rules": _records(result.rules, ["namespace", "policy", "direction", "rule", "used", "flows"]),
    }
    return json.dumps(document, indent=2) + "\n"


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    if frame.empty:
        return "_none_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame[columns].itertuples(index=False):
        lines.append("| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |")
    return "\n".join(lines) + "\n"


def verify_markdown(replayed: Replay) -> str:
    connections = _shown(replayed.connections)
    denied = _shown(replayed.denied)
    text = [
        "# Replay of observed traffic\n",
        f"{len(connections)} observed connections: {len(connections) - len(denied)} allowed, "
        f"{len(denied)} denied (recall {replayed.recall:.1%}), as the CNI profile {replayed.profile} enforces them.\n",
        "## Denied\n",
        markdown_table(denied, ["client", "server", "protocol", "port", "count", "explanation"]),
        "## Allowed\n",
        markdown_table(
            connections[connections["allowed"]], ["client", "server", "protocol", "port", "count", "allowed_by"]
        ),
    ]
    return "\n".join(text)


def drift_markdown(result: Drift) -> str:
    text = [
        "# Observed traffic against the policies\n",
        f"{len(result.would_break)} observed connections would break, {len(result.allowed)} are allowed; "
        f"{len(result.unused_rules)} of {len(result.rules)} rules were never used "
        f"(CNI profile {result.replayed.profile}).\n",
    ]
    namespaces = sorted(set(result.rules["namespace"]) | set(_namespace(result.would_break["server"])))
    for namespace in namespaces:
        breaks = _shown(result.would_break[_namespace(result.would_break["server"]) == namespace])
        unused = result.unused_rules[result.unused_rules["namespace"] == namespace]
        text += [
            f"## Namespace {namespace}\n",
            "### Would break on enforcement\n",
            markdown_table(breaks, ["client", "server", "protocol", "port", "count", "explanation"]),
            "### Rules never used (candidates to remove)\n",
            markdown_table(unused, ["policy", "direction", "rule"]),
        ]
    return "\n".join(text)


def _namespace(keys: pd.Series) -> pd.Series:
    return keys.str.split("/").str[0].where(keys.str.contains("/"), "(not a pod)")


@dataclass(frozen=True)
class TextTable:
    """A titled table of plain strings: what the terminal shows, as data (the CLI renders it)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def connections_table(frame: pd.DataFrame, title: str) -> TextTable:
    """One row per connection: client, server, port, flows, verdict and why (the deciding rules)."""
    rows = []
    for row in frame.itertuples(index=False):
        why = rule_list(row.allowed_by) if row.allowed and row.allowed_by else row.decision.reasons
        verdict = "allowed" if row.allowed else "DENIED"
        rows.append((row.client, row.server, f"{row.protocol}/{row.port}", f"{row.count:,}", verdict, why))
    return TextTable(title, ("client", "server", "port", "flows", "verdict", "why"), tuple(rows))


def rules_table(frame: pd.DataFrame, title: str) -> TextTable:
    rows = tuple(
        (row.namespace, row.policy, f"{row.direction}[{row.rule}]", f"{row.flows:,}")
        for row in frame.itertuples(index=False)
    )
    return TextTable(title, ("namespace", "policy", "rule", "flows"), rows)
