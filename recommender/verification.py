"""Verification: replay observed traffic against policies (recall), measure what else they allow
(excess), and compare them with what was observed (drift).

All answers come from `recommender.semantics`; this module only chooses what to ask and turns the
decisions (which carry their own explanations) into tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from collectors.inventory import Inventory
from collectors.records import ObservationSet
from recommender.baseline import without_dns_allowance
from recommender.cluster_model import ClusterModel, cluster_model, pod_addresses_in_ip_blocks
from recommender.dns_allowance import DnsAllowance, DnsProof, prove_allowance
from recommender.errors import RecommenderError, ReplayError
from recommender.excess import Excess, excess, named_ports
from recommender.graph import endpoint_keys
from recommender.plans import POLICY_PROTOCOLS
from recommender.semantics import (
    KUBERNETES,
    POLICY_KINDS,
    AnyPolicy,
    Decision,
    Evaluator,
    Pod,
    Profile,
    RuleRef,
    parse_policy_set,
)
from recommender.synthesis import SynthesisOptions, wanted_observations
from recommender.unobserved import Unobserved, prove_left_as_is

UNSEEN_POD = "(any-other-pod)"
"""The pods of a namespace nobody saw, in the excess of an empty podSelector."""
CONNECTION_COLUMNS = ["client", "server", "protocol", "port", "count", "allowed", "allowed_by", "decision"]
Connection = tuple[str, str, str, int]
"""(client key, server key, protocol, port)."""


@dataclass
class Replay:
    """Observed connections replayed against a policy set."""

    connections: pd.DataFrame
    """One row per (client, server, protocol, port) with `allowed`, the rules that allowed it (`RuleRef`s,
    over every observation of it) and the semantics `Decision` that explains it (a denial if any)."""
    evaluator: Evaluator
    decisions: list[Decision]
    """The semantics `Decision` of every replayed observation row."""

    @property
    def profile(self) -> Profile:
        """The dataplane profile the policies were evaluated under."""
        return self.evaluator.profile

    @property
    def recall(self) -> float:
        """The share of observed connections (weighted by distinct connection, not flows) allowed."""
        return float(self.connections["allowed"].mean()) if len(self.connections) else 1.0

    @property
    def denied(self) -> pd.DataFrame:
        return self.connections[~self.connections["allowed"]].reset_index(drop=True)


def replayable(observed: ObservationSet, options: SynthesisOptions | None = None) -> pd.DataFrame:
    """The observations a policy set must allow: wanted traffic on protocols NetworkPolicy speaks."""
    wanted = wanted_observations(observed.observations, options or SynthesisOptions())
    return wanted[wanted["protocol"].isin(POLICY_PROTOCOLS)]


def replay(
    policies: Iterable[AnyPolicy | Mapping[str, Any]],
    observed: ObservationSet,
    observations: pd.DataFrame | None = None,
    *,
    model: ClusterModel | None = None,
    profile: Profile = KUBERNETES,
) -> Replay:
    """Decide every observed connection (default: `replayable(observed)`) under `policies`, as the
    dataplane of `profile` enforces them (which node traffic is exempt, what ipBlocks select)."""
    model = model or cluster_model(observed)
    evaluator = Evaluator(_distinct(policies), model.namespaces, model.pods, profile=profile)
    rows = replayable(observed) if observations is None else observations
    keyed = rows.assign(client=endpoint_keys(rows, "client"), server=endpoint_keys(rows, "server"))
    counts: dict[Connection, int] = {}
    rules: dict[Connection, set[RuleRef]] = {}
    deciding: dict[Connection, Decision] = {}
    decisions = []
    for row in keyed.itertuples(index=False):
        decision = evaluator.evaluate(
            model.endpoint(row, "client"), model.endpoint(row, "server"), row.protocol, int(row.port)
        )
        decisions.append(decision)
        key = (row.client, row.server, row.protocol, int(row.port))
        counts[key] = counts.get(key, 0) + int(row.count)
        rules.setdefault(key, set()).update(decision.egress.allowed_by, decision.ingress.allowed_by)
        if deciding.setdefault(key, decision).allowed and not decision.allowed:
            deciding[key] = decision  # the first denial explains the connection
    records = [
        (*key, counts[key], deciding[key].allowed, tuple(sorted(rules[key], key=str)), deciding[key])
        for key in sorted(counts)
    ]
    connections = pd.DataFrame(records, columns=CONNECTION_COLUMNS).astype(
        {"port": "int64", "count": "int64", "allowed": bool}
    )
    return Replay(connections, evaluator, decisions)


def _distinct(manifests: Iterable[AnyPolicy | Mapping[str, Any]]) -> list[AnyPolicy]:
    """The policies parsed, refused if one (kind, namespace/name) comes twice (from a list, an inventory):
    it would count twice."""
    policies = list(parse_policy_set(manifests))
    twice = sorted(name for name, count in Counter(policy.id for policy in policies).items() if count > 1)
    if twice:
        raise RecommenderError(
            f"the policy set holds {', '.join(twice)} more than once: a cluster holds one object per namespace and "
            "name, so give each policy once"
        )
    return policies


@dataclass
class Drift:
    """Observed traffic compared with an existing policy set."""

    replayed: Replay
    model: ClusterModel
    observed: ObservationSet
    policies: list[Mapping[str, Any]]
    rules: pd.DataFrame
    """Every rule of the policy set: namespace, policy, direction, index, `used` (allowed its side
    of some observed connection) and the observed flows it allowed on its side."""

    @property
    def allowed(self) -> pd.DataFrame:
        return self.replayed.connections[self.replayed.connections["allowed"]].reset_index(drop=True)

    @property
    def would_break(self) -> pd.DataFrame:
        """Observed connections the policies deny: they break when the policies are enforced."""
        return self.replayed.denied

    @property
    def unused_rules(self) -> pd.DataFrame:
        """Rules no observed connection needed: candidates to remove."""
        return self.rules[~self.rules["used"]].reset_index(drop=True)

    def unobserved(self) -> Excess:
        """Workload pairs and ports the policies allow that no observation used (computed on demand:
        broad policies allow many pairs)."""
        connections = self.replayed.connections
        return excess(self.replayed.evaluator, connections, self.observed, self.model, named_ports(self.policies))

    def status(self, *, with_unobserved: bool = True) -> dict[tuple[str, str, str, int], str]:
        """(client, server, protocol, port) → "allowed" | "would-break" | "unobserved", for pictures."""
        found = {
            (row.client, row.server, row.protocol, int(row.port)): "allowed" if row.allowed else "would-break"
            for row in self.replayed.connections.itertuples(index=False)
        }
        if with_unobserved:
            found.update((connection, "unobserved") for connection in self.unobserved().connections())
        return found


def drift(
    policies: Sequence[Mapping[str, Any]],
    observed: ObservationSet,
    *,
    model: ClusterModel | None = None,
    profile: Profile = KUBERNETES,
) -> Drift:
    """Which observed connections the policies allow or would break under `profile`, and which rules
    nothing used."""
    model = model or cluster_model(observed)
    replayed = replay(policies, observed, model=model, profile=profile)
    flows: dict[RuleRef, int] = {}
    for decision, count in zip(replayed.decisions, replayable(observed)["count"], strict=True):
        # A rule that allowed its side is needed even when the other side denies the connection;
        # a deny rule that decided an observed connection is in use too.
        sides = (decision.egress, decision.ingress)
        for rule in (ref for side in sides for ref in (*side.allowed_by, *side.denied_by)):
            flows[rule] = flows.get(rule, 0) + int(count)
    records = [
        (*rule_row(rule.ref), rule.ref in flows, flows.get(rule.ref, 0))
        for target in replayed.evaluator.targets
        for rule in target.rules
    ]
    rules = pd.DataFrame(records, columns=["namespace", "policy", "direction", "rule", "used", "flows"]).astype(
        {"rule": "int64", "used": bool, "flows": "int64"}
    )
    rules = rules.sort_values(["namespace", "policy", "direction", "rule"]).reset_index(drop=True)
    return Drift(replayed, model, observed, list(policies), rules)


def rule_row(rule: RuleRef) -> tuple[str, str, str, int]:
    """A rule as `Drift.rules` lists it: (namespace, policy, direction, index). The policy is `name`
    for a NetworkPolicy, `Kind name` (perhaps with `specs[i]`) for the other kinds; cluster-scoped
    policies are in the namespace `(cluster)`; Cilium deny rules have the direction `ingressDeny`/`egressDeny`."""
    words = rule.policy.split(" ")
    kind = words.pop(0) if words[0] in POLICY_KINDS else ""
    namespace, _, name = words[0].rpartition("/")
    policy = " ".join([kind, name, *words[1:]] if kind else [name])
    return namespace or "(cluster)", policy, rule.direction.lower() + ("Deny" if rule.deny else ""), rule.index


@dataclass
class Check:
    """The proof that comes with every recommendation: recall over what it must allow, and excess."""

    replayed: Replay
    excess: Excess
    """Allowed but never observed, the DNS allowance's part apart (in `dns`)."""
    dns: DnsProof | None = None
    """The synthetic DNS lookups of every pod, proven allowed, and what the allowance opens unobserved."""
    left_as_is: int = 0
    """Synthetic connections proving the unobserved workloads left as is are not isolated."""
    baseline_dns: Excess | None = None
    """With a cluster baseline: the connections only its DNS rule allows (never observed), not in `excess`."""

    @property
    def recall(self) -> float:
        return self.replayed.recall


def check_proposal(
    policies: Sequence[AnyPolicy],
    observed: ObservationSet,
    edges: pd.DataFrame,
    options: SynthesisOptions,
    inventory: Inventory | None = None,
    profile: Profile = KUBERNETES,
    dns: DnsAllowance | None = None,
    unobserved: Unobserved | None = None,
    *,
    unseen_pods_in: Iterable[str] = (),
) -> Check:
    """Replay the traffic a proposal was built to allow (`edges`), every pod's lookups under the `dns`
    allowance, and connections of the `unobserved` workloads it leaves as is, as the dataplane of
    `profile` enforces `policies`; raise `ReplayError` if any is denied.

    `unseen_pods_in`: namespaces where an empty podSelector selects a workload, so that it reaches pods
    nobody saw; one label-less pod `UNSEEN_POD` stands for them, and its reach counts as excess.

    `policies` are semantics objects (a proposal's `PolicyPlan.policy`) or manifests, parsed once here."""
    policies = list(parse_policy_set(policies))
    rows = replayable(observed, options)
    keys = set(zip(edges["client"], edges["server"], edges["protocol"], edges["port"], strict=True))
    row_keys = zip(
        endpoint_keys(rows, "client"), endpoint_keys(rows, "server"), rows["protocol"], rows["port"], strict=True
    )
    model = cluster_model(observed, inventory)
    for namespace in unseen_pods_in:
        pod = Pod(namespace, UNSEEN_POD, {})
        model.pods.append(pod)
        model.workload_of[pod] = f"{namespace}/{UNSEEN_POD}"
    misread = pod_addresses_in_ip_blocks(policies, model)
    if misread:
        raise ReplayError(misread, "the proposal selects pods by address ({count} ipBlock/pod pair(s)); a bug")
    meant = pd.Series([key in keys for key in row_keys], index=rows.index, dtype=bool)
    replayed = replay(policies, observed, rows[meant], model=model, profile=profile)
    if len(replayed.denied):
        raise ReplayError([str(row.decision) for row in replayed.denied.itertuples()])
    ports = named_ports(policies)
    found = excess(replayed.evaluator, replayed.connections, observed, model, ports)
    baseline_dns = None
    without_dns = without_dns_allowance(policies)
    if without_dns is not None:  # a cluster baseline: its DNS rule's reach is counted apart
        apart = replay(without_dns, observed, rows[meant], model=model, profile=profile)
        rest = excess(apart.evaluator, apart.connections, observed, model, ports)
        baseline_dns, found = found - rest, rest
    proof, found = prove_allowance(replayed.evaluator, model.workload_of, dns, found) if dns else (None, found)
    left_as_is = prove_left_as_is(replayed.evaluator, model.workload_of, unobserved) if unobserved else 0
    return Check(replayed, found, proof, left_as_is, baseline_dns)
