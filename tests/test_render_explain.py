"""`--explain`: the evidence of every rule is written as YAML comments above the rule, from data."""

from __future__ import annotations

import yaml

from recommender.plans import PolicyPlan, RuleEvidence
from recommender.render import policy_yaml
from recommender.semantics import parse_policy


def web() -> dict:
    return {"podSelector": {"matchLabels": {"app": "web"}}}


def world() -> dict:
    return {"ipBlock": {"cidr": "203.0.113.10/32"}}


MANIFEST = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-db", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [web(), world()], "ports": [{"protocol": "TCP", "port": 5432}]}, {"from": [web()]}],
        "egress": [{"to": [world()]}],
    },
}


def note(direction: str, index: int, text: str, warnings: tuple[str, ...] = ()) -> RuleEvidence:
    return RuleEvidence(direction, index, (), (), 0, None, None, "", "", note=text, warnings=warnings)


def test_each_rule_has_its_evidence_right_above_it_and_the_yaml_is_unchanged():
    evidence = [
        note("ingress", 0, "from web: 12 flows; e.g. web-0 -> db-0 (TCP/5432)", ("the podSelector {} ...",)),
        note("ingress", 1, "second: a note with # and : inside {}"),
        note("egress", 0, "to the world"),
    ]
    plan = PolicyPlan("shop", "allow-db", "shop/db", MANIFEST, parse_policy(MANIFEST), evidence)
    text = policy_yaml(plan, explain=True)
    assert yaml.safe_load(text) == MANIFEST
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith(("    - from:", "    - to:"))]
    assert [lines[i - 1] for i in rules] == [
        "    # from web: 12 flows; e.g. web-0 -> db-0 (TCP/5432)",
        "    # second: a note with # and : inside {}",
        "    # to the world",
    ]
    assert lines[rules[0] - 2] == "    # WARNING: the podSelector {} ..."
    assert sum(line.lstrip().startswith("#") for line in lines) == 1 + 4  # the header and 4 rule lines
    assert policy_yaml(plan) == "\n".join(line for line in lines if not line.lstrip().startswith("#")) + "\n"


def test_a_rule_without_evidence_is_written_without_a_comment():
    plan = PolicyPlan(
        "shop", "allow-db", "shop/db", MANIFEST, parse_policy(MANIFEST), [note("ingress", 0, "only the first")]
    )
    lines = policy_yaml(plan, explain=True).splitlines()
    comments = [line for line in lines if line.startswith("    #")]
    assert comments == ["    # only the first"]
    assert "# " not in policy_yaml(plan)
