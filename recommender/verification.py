"""Verification: replay observed traffic against policies (recall), measure what else they allow
(excess), and compare them with what was observed (drift).

All answers come from `recommender.semantics`; this module only chooses what to ask and turns the
decisions (which carry their own explanations) into tables.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from collectors.hubble_identity import workload_from_pod_name
from collectors.inventory import Inventory
from collectors.records import POD, ObservationSet, labels_from_text, labels_to_text
from recommender.baseline import without_dns_allowance
from recommender.dns_allowance import DnsAllowance, DnsProof, prove_allowance
from recommender.errors import RecommenderError, ReplayError
from recommender.graph import endpoint_keys
from recommender.semantics import (
    KUBERNETES,
    POLICY_KINDS,
    ConnectionSet,
    ContainerPort,
    Entity,
    Evaluator,
    ExternalPeer,
    Namespace,
    Pod,
    PodClass,
    Profile,
    Protocol,
    RuleRef,
    parse_policy_set,
)
from recommender.semantics.cilium import compile_cilium
from recommender.semantics.cluster_policies import compile_cluster_policy
from recommender.semantics.matcher import PortRange
from recommender.semantics.policies import Direction
from recommender.synthesis import POLICY_PROTOCOLS, SynthesisOptions, wanted_observations
from recommender.unobserved import Unobserved, prove_left_as_is

UNSEEN_POD = "(any-other-pod)"
"""The pods of a namespace nobody saw, in the excess of an empty podSelector."""
ENTITIES = {entity.value: entity for entity in Entity}
"""Observation entities as semantics entities; `unknown` IPs are world to a CNI."""
CONNECTION_COLUMNS = ["client", "server", "protocol", "port", "count", "allowed", "allowed_by", "explanation"]


@dataclass
class ClusterModel:
    """The pods and namespaces policies are evaluated against, and how observations map onto them."""

    namespaces: list[Namespace]
    pods: list[Pod]
    workload_of: dict[Pod, str] = field(default_factory=dict)
    """Each pod's workload key (`namespace/workload`)."""
    by_name: dict[tuple[str, str], Pod] = field(default_factory=dict)
    """Inventory pods by (namespace, name): observed pods are evaluated as the real pod, ports included."""
    dns_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """IP → the DNS names seen for it (Cilium `toFQDNs` match world peers by them)."""
    by_ip: dict[str, Pod] = field(default_factory=dict)
    """Every address any evidence (the inventory, a record naming a pod) gives a pod: such an address
    is that pod in replay, whatever the observations call it."""

    def endpoint(self, row: Any, side: str) -> Pod | ExternalPeer:
        """The semantics endpoint of one side of an observation row."""
        evidence = self.by_ip.get(getattr(row, f"{side}_ip"))
        if evidence is not None:
            return evidence
        if getattr(row, f"{side}_entity") == POD:
            namespace, example = getattr(row, f"{side}_namespace"), getattr(row, f"{side}_pod")
            known = self.by_name.get((namespace, example))
            if known is not None:
                return known
            name = example or getattr(row, f"{side}_workload")
            return Pod(namespace, name, labels_from_text(getattr(row, f"{side}_labels")))
        ip = getattr(row, f"{side}_ip") or None
        entity = ENTITIES.get(getattr(row, f"{side}_entity"), Entity.WORLD)
        return ExternalPeer(ip, entity, self.dns_names.get(ip, ()) if entity is Entity.WORLD and ip else ())


def cluster_model(observed: ObservationSet, inventory: Inventory | None = None) -> ClusterModel:
    """Every known pod: the inventory's when there is one (with their container ports), else the
    pods seen; plus one pod per observed workload label set that no pod covers."""
    model = ClusterModel(namespaces=[], pods=[], dns_names=observed.dns_names)
    namespaces: dict[str, Namespace] = {}
    if inventory is not None:
        for known_namespace in inventory.namespaces:
            namespaces[known_namespace.name] = Namespace(known_namespace.name, known_namespace.labels)
        for known in inventory.pods:
            if known.host_network and not known.ips:
                continue
            ports = tuple(ContainerPort(p.port, p.name or None, Protocol(p.protocol)) for p in known.ports)
            pod = Pod(
                known.namespace,
                known.name,
                known.labels,
                ports,
                known.ips[0] if known.ips else None,
                known.host_network,
            )
            model.pods.append(pod)
            model.workload_of[pod] = f"{known.namespace}/{known.owner.name}"
            model.by_name[(known.namespace, known.name)] = pod
            if not known.host_network:
                model.by_ip.update((ip, pod) for ip in known.ips)
    members: dict[tuple[str, str, str], str] = {}
    for row in observed.pods.itertuples(index=False):
        if (row.namespace, row.pod) not in model.by_name:
            members.setdefault((row.namespace, row.workload, row.labels), row.pod)
    frame = observed.observations
    covered = {
        (ns, workload, labels_to_text(pod.labels))
        for pod, key in model.workload_of.items()
        for ns, workload in [key.split("/", 1)]
    }
    for side in ("client", "server"):
        rows = frame[(frame[f"{side}_entity"] == POD) & (frame[f"{side}_workload"] != "")]
        for key in zip(rows[f"{side}_namespace"], rows[f"{side}_workload"], rows[f"{side}_labels"], strict=True):
            if key not in covered:
                members.setdefault(key, key[1])
    for (namespace, workload, labels), name in sorted(members.items()):
        pod = Pod(namespace, name, labels_from_text(labels))
        model.pods.append(pod)
        model.workload_of[pod] = f"{namespace}/{workload}"
    _add_named_pods(model, observed)
    for namespace in sorted({pod.namespace for pod in model.pods} - set(namespaces)):
        namespaces[namespace] = Namespace(namespace)
    model.namespaces = [namespaces[name] for name in sorted(namespaces)]
    return model


def _add_named_pods(model: ClusterModel, observed: ObservationSet) -> None:
    """The pods records named with an address (`ObservationSet.pod_ips`), as pods of the model: with
    their labels from the pods table, and without an IP, so that no ipBlock matches them (CNIs such as
    Cilium never match a pod by ipBlock)."""
    rows = {(row.namespace, row.pod): row for row in observed.pods.itertuples(index=False)}
    for ip, named in observed.pod_ips.items():
        if ip in model.by_ip or len(named) != 1:
            continue
        ((namespace, name),) = named
        pod = model.by_name.get((namespace, name))
        if pod is None:
            row = rows.get((namespace, name))
            workload = row.workload if row is not None else workload_from_pod_name(name)[0]
            pod = Pod(namespace, name, labels_from_text(row.labels) if row is not None else {})
            model.pods.append(pod)
            model.workload_of[pod] = f"{namespace}/{workload}"
            model.by_name[(namespace, name)] = pod
        model.by_ip[ip] = pod


def pod_addresses_in_ip_blocks(policies: Iterable[Mapping[str, Any]], model: ClusterModel) -> list[str]:
    """Every (rule, pod) where an ipBlock of the NetworkPolicies of `policies` contains an address evidence
    gives a pod: a recommendation must select pods by labels, never by address (the baseline's `networks`
    deny every address on purpose; a CNP's toCIDR is not checked here)."""
    found = []
    addresses = [(ipaddress.ip_address(ip), pod) for ip, pod in sorted(model.by_ip.items())]  # IPv4 and IPv6
    for policy in parse_policy_set(policies).network_policies:
        for direction in (Direction.INGRESS, Direction.EGRESS):
            for index, rule in enumerate(policy.rules(direction)):
                for peer in rule.peers:
                    if peer.ip_block is None:
                        continue
                    for ip, pod in addresses:
                        if ip.version == peer.ip_block.cidr.version and peer.ip_block.contains(ip):
                            found.append(
                                f"{RuleRef(policy.id, direction, index)} ipBlock {peer.ip_block} contains "
                                f"{ip}, the address of pod {pod.namespace}/{pod.name}"
                            )
    return found


@dataclass
class Replay:
    """Observed connections replayed against a policy set."""

    connections: pd.DataFrame
    """One row per (client, server, protocol, port) with `allowed`, the rules that allowed it and
    the one-line explanation of the decision."""
    evaluator: Evaluator
    decisions: list[Any]
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
    policies: Iterable[Mapping[str, Any]],
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
    records, decisions = [], []
    for row in keyed.itertuples(index=False):
        decision = evaluator.evaluate(
            model.endpoint(row, "client"), model.endpoint(row, "server"), row.protocol, int(row.port)
        )
        rules = ", ".join(str(rule) for rule in (*decision.egress.allowed_by, *decision.ingress.allowed_by))
        decisions.append(decision)
        connection = (row.client, row.server, row.protocol, int(row.port), int(row.count))
        records.append((*connection, decision.allowed, rules, str(decision)))
    frame = pd.DataFrame(records, columns=CONNECTION_COLUMNS).astype(
        {"port": "int64", "count": "int64", "allowed": bool}
    )
    connections = (
        frame.sort_values(["allowed", "client", "server", "protocol", "port"])  # a denial wins the explanation
        .groupby(["client", "server", "protocol", "port"], sort=True)
        .agg(
            count=("count", "sum"),
            allowed=("allowed", "all"),
            allowed_by=("allowed_by", lambda v: ", ".join(sorted({r for item in v if item for r in item.split(", ")}))),
            explanation=("explanation", "first"),
        )
        .reset_index()
    )
    return Replay(connections[CONNECTION_COLUMNS] if len(frame) else frame, evaluator, decisions)


def _distinct(manifests: Iterable[Mapping[str, Any]]) -> list[Any]:
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


def named_ports(policies: Iterable[Mapping[str, Any]]) -> ConnectionSet:
    """Every (protocol, port) a policy set names in its rules (ranges included), of every kind."""
    policy_set = parse_policy_set(policies)
    found = ConnectionSet.none()
    for policy in policy_set.network_policies:
        for direction in (Direction.INGRESS, Direction.EGRESS):
            for rule in policy.rules(direction):
                for port in rule.ports:
                    if isinstance(port.port, int):
                        found |= ConnectionSet.ports(port.protocol, port.port, port.end_port or port.port)
    others = [
        *map(compile_cilium, policy_set.cilium_policies),
        *map(compile_cluster_policy, policy_set.cluster_policies),
    ]
    for target in (target for targets in others for target in targets):
        for matcher in target.rules:
            for port_matcher in matcher.ports:
                if isinstance(port_matcher, PortRange) and port_matcher.first is not None:
                    first, last = port_matcher.first, port_matcher.last or port_matcher.first
                    found |= ConnectionSet.ports(port_matcher.protocol, first, last)
    return found


def excess(replayed: Replay, observed: ObservationSet, model: ClusterModel, ports: ConnectionSet) -> pd.DataFrame:
    """(client workload, server workload, protocol, port) tuples the policies allow but nobody used.

    Ports range over `ports` (those the policies name). Only pairs some rule of the policy set
    reaches are considered (pairs of unselected pods are allowed by the absence of policy, not by
    it): for every rule, its subjects and the pods and observed external IPs its peers match.
    """
    evaluator = replayed.evaluator
    external = _external_peers(observed.observations, model)
    observed_tuples = set(
        zip(replayed.connections["client"], replayed.connections["server"], replayed.connections["protocol"],
            replayed.connections["port"], strict=True)
    )  # fmt: skip
    candidates: set[tuple[Any, Any]] = set()
    for target in evaluator.targets:
        subjects = evaluator.subjects_of(target)
        for rule in target.rules:
            peers = [
                *evaluator.peers_of(rule),
                *(peer for peer in external if rule.matches_peer(evaluator.external(peer))),
            ]
            for subject in subjects:
                for peer in peers:
                    candidates.add((peer, subject) if target.direction is Direction.INGRESS else (subject, peer))
    found = set()
    for client, server in candidates:
        allowed = evaluator.allowed_connections(client, server) & ports
        if not allowed:
            continue
        for protocol, port in _pairs(allowed):
            for client_key in _keys(client, evaluator, model, external):
                for server_key in _keys(server, evaluator, model, external):
                    if (client_key, server_key, protocol, port) not in observed_tuples:
                        found.add((client_key, server_key, protocol, port))
    return pd.DataFrame(sorted(found), columns=["client", "server", "protocol", "port"])


def _external_peers(observations: pd.DataFrame, model: ClusterModel) -> dict[ExternalPeer, str]:
    """Every observed non-pod endpoint with an IP, and its endpoint key."""
    peers: dict[ExternalPeer, str] = {}
    for side in ("client", "server"):
        rows = observations[(observations[f"{side}_entity"] != POD) & (observations[f"{side}_ip"] != "")]
        rows = rows.drop_duplicates([f"{side}_entity", f"{side}_ip"])
        for row, key in zip(rows.itertuples(index=False), endpoint_keys(rows, side), strict=True):
            endpoint = model.endpoint(row, side)
            if isinstance(endpoint, ExternalPeer):  # an address evidence gives a pod is that pod, among the pods
                peers[endpoint] = key
    return peers


def _keys(endpoint: Any, evaluator: Evaluator, model: ClusterModel, external: Mapping[ExternalPeer, str]) -> set[str]:
    if isinstance(endpoint, PodClass):
        return {model.workload_of[pod] for pod in evaluator.pods_of(endpoint)}
    return {external[endpoint]}


def _pairs(connections: ConnectionSet) -> Iterable[tuple[str, int]]:
    for protocol in POLICY_PROTOCOLS:
        for first, last in connections.port_set(Protocol(protocol)).intervals:
            for port in range(first, last + 1):
                yield protocol, port


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

    def unobserved(self) -> pd.DataFrame:
        """Workload pairs and ports the policies allow that no observation used (computed on demand:
        broad policies allow many pairs)."""
        return excess(self.replayed, self.observed, self.model, named_ports(self.policies))

    def status(self, *, with_unobserved: bool = True) -> dict[tuple[str, str, str, int], str]:
        """(client, server, protocol, port) → "allowed" | "would-break" | "unobserved", for pictures."""
        found = {
            (row.client, row.server, row.protocol, int(row.port)): "allowed" if row.allowed else "would-break"
            for row in self.replayed.connections.itertuples(index=False)
        }
        if with_unobserved:
            for row in self.unobserved().itertuples(index=False):
                found[(row.client, row.server, row.protocol, int(row.port))] = "unobserved"
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
    excess: pd.DataFrame
    """Allowed but never observed, the DNS allowance's part apart (in `dns`)."""
    dns: DnsProof | None = None
    """The synthetic DNS lookups of every pod, proven allowed, and what the allowance opens unobserved."""
    left_as_is: int = 0
    """Synthetic connections proving the unobserved workloads left as is are not isolated."""
    baseline_dns: pd.DataFrame | None = None
    """With a cluster baseline: the tuples only its DNS rule allows (never observed), not in `excess`."""

    @property
    def recall(self) -> float:
        return self.replayed.recall


def check_proposal(
    policies: Sequence[Mapping[str, Any]],
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
    nobody saw; one label-less pod `UNSEEN_POD` stands for them, and its reach counts as excess."""
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
        raise ReplayError([row.explanation for row in replayed.denied.itertuples()])
    ports = named_ports(policies)
    found = excess(replayed, observed, model, ports)
    baseline_dns = None
    without_dns = without_dns_allowance(policies)
    if without_dns is not None:  # a cluster baseline: its DNS rule's reach is counted apart
        rest = excess(replay(without_dns, observed, rows[meant], model=model, profile=profile), observed, model, ports)
        kept = set(rest.itertuples(index=False, name=None))
        only_dns = [row not in kept for row in found.itertuples(index=False, name=None)]
        baseline_dns, found = found[only_dns].reset_index(drop=True), rest
    proof, found = prove_allowance(replayed.evaluator, model.workload_of, dns, found) if dns else (None, found)
    left_as_is = prove_left_as_is(replayed.evaluator, model.workload_of, unobserved) if unobserved else 0
    return Check(replayed, found, proof, left_as_is, baseline_dns)
