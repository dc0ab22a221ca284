"""Synthesis: observed workload edges → the minimal NetworkPolicy set that allows exactly them.

Per managed namespace a `default-deny` (podSelector {}, Ingress and Egress); per workload with
observed traffic one `allow-<workload>` policy: ingress rules from its observed clients, egress rules
to its observed servers. Peers with identical port sets share one rule (a rule is peers × ports, so
this is exact). Pods are always selected by labels, never by IP; world, node and API server peers by
exact ipBlocks of the observed IPs, adjacent blocks collapsed exactly. Every rule carries its
evidence. What NetworkPolicy cannot or need not express is reported in `Findings`, never dropped.

Each policy is built as a semantics `NetworkPolicy` (`PolicyPlan.policy`, what verification evaluates),
its manifest rendered from it by `manifests`; the plans, rules and evidence are the types of `plans`.

The peers depend on the target and the CNI profile (`SynthesisOptions`): on Cilium, NetworkPolicy
cannot reach the node, other nodes, the API server or Cilium Ingress (no ipBlock matches them), so
those edges become `UnexpressiblePeer` findings instead of dead ipBlocks. With `target="cilium"` they
are entity peers, world IPs with DNS names are FQDN peers and ICMP is expressible; the CiliumNetworkPolicy
renderer (`render_cilium`) reads the same `Rule`s. A rule then has peers of one kind only (Cilium
refuses to combine L3 selectors of different kinds in one rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import pandas as pd

from collectors.records import (
    DROPPED,
    HEALTH,
    HOST,
    INGRESS,
    KUBE_APISERVER,
    POD,
    REMOTE_NODE,
    SEEN_VERDICTS,
    UNKNOWN,
    WORLD,
    labels_from_text,
)
from recommender.baseline import CLUSTER_BASELINE_NAME, NAMESPACE_BASELINE, cluster_baseline
from recommender.dns_allowance import (
    DNS_POLICY,
    DNS_PORTS,
    DnsAllowance,
    DnsMode,
    DnsServer,
    observed_dns_servers,
    plan_allowance,
)
from recommender.errors import RecommenderError
from recommender.graph import build_edges
from recommender.manifests import MANAGED_BY
from recommender.plans import (
    POLICY_PROTOCOLS,
    EvidenceNames,
    Peer,
    PolicyPlan,
    PortNames,
    Rule,
    RuleEvidence,
    networkpolicy_rule,
    rule_evidence,
)
from recommender.selectors import Selector, choose_selectors, label_to_select
from recommender.semantics import (
    CIDR_MATCH_NODES,
    PROFILE_NAMES,
    AnyPolicy,
    Direction,
    LabelSelector,
    NetworkPolicy,
)
from recommender.semantics.cluster_policies import parse_cluster_policy
from recommender.semantics.policies import PolicyRule
from recommender.unobserved import Unobserved, UnobservedMode, find_unobserved

DEFAULT_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
DEFAULT_DENY = "default-deny"
TARGETS = ("networkpolicy", "cilium")
CNI_PROFILES = PROFILE_NAMES
CILIUM_ENTITIES = (HOST, REMOTE_NODE, KUBE_APISERVER, INGRESS)
"""Cluster entities Cilium gives their own identity: only `toEntities`/`fromEntities` select them."""
ICMP_PROTOCOLS = ("ICMPv4", "ICMPv6")


@dataclass(frozen=True)
class SynthesisOptions:
    exclude_namespaces: tuple[str, ...] = DEFAULT_EXCLUDED_NAMESPACES
    """Namespaces left without policies; their workloads stay usable as peers."""
    include_dropped: bool = False
    """Treat flows a policy DROPPED as wanted traffic (by default they are only reported)."""
    allow_empty_selector: bool = False
    """Select a workload without stable labels with `podSelector: {}` (its whole namespace; the reach is
    counted as excess) instead of leaving its traffic without rules."""
    target: str = "networkpolicy"
    """The policy kind written: "networkpolicy" (Kubernetes) or "cilium" (CiliumNetworkPolicy)."""
    cni: str | None = None
    """The dataplane that enforces the policies: "kubernetes" (the spec), "cilium" or "calico"; None:
    the one the input implies (`recommend` settles it: Cilium for Hubble flows)."""
    cidr_match_nodes: bool = False
    """The Cilium agent runs with `policy-cidr-match-mode=nodes`: ipBlocks match node IPs."""
    dns: DnsMode = DnsMode.ALLOW
    """How pods resolve names: the shared DNS allowance, DNS only as observed, or no DNS rules."""
    unobserved: UnobservedMode = UnobservedMode.ISOLATE
    """What to do with workloads (known from an inventory) that no allow rule names."""
    baseline: str = NAMESPACE_BASELINE
    """The default deny: a `default-deny` per managed namespace, or one Baseline ClusterNetworkPolicy
    (`recommender.baseline`; a CiliumClusterwideNetworkPolicy for the target cilium)."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise RecommenderError(f"unknown target {self.target!r}: use one of {', '.join(TARGETS)}")
        if self.cni is not None and self.cni not in CNI_PROFILES:
            raise RecommenderError(f"unknown CNI profile {self.cni!r}: use one of {', '.join(CNI_PROFILES)}")
        if self.baseline != NAMESPACE_BASELINE and self.unobserved is not UnobservedMode.ISOLATE:
            raise RecommenderError(
                f"--unobserved {self.unobserved} needs --baseline {NAMESPACE_BASELINE}: the cluster baseline denies by "
                "default every pod of the namespaces not excluded, the unobserved workloads too"
            )
        if self.target == "cilium" and self.unobserved is UnobservedMode.SKIP:
            raise RecommenderError(
                "--unobserved skip is written for --target networkpolicy only (not built for Cilium)"
            )


POLICY_DROP_REASONS = ("POLICY_DENIED", "POLICY_DENY", "AUTH_REQUIRED")
"""Drop reasons that mean a policy refused the traffic; other drops (bad packets such as
INVALID_SOURCE_IP, and drops without a known reason) are never wanted."""


def wanted_observations(observations: pd.DataFrame, options: SynthesisOptions) -> pd.DataFrame:
    """The observations the proposal must allow: traffic that flowed, plus policy drops if asked."""
    wanted = observations["verdict"].isin(SEEN_VERDICTS)
    if options.include_dropped:
        reasons = observations["drop_reasons"].str.split(",")
        policy_drop = reasons.map(lambda items: any(item in POLICY_DROP_REASONS for item in items))
        wanted |= (observations["verdict"] == DROPPED) & policy_drop
    return observations[wanted]


@dataclass(frozen=True)
class UnexpressiblePeer:
    """An observed edge NetworkPolicy cannot allow on the CNI: no rule is written for it."""

    client: str
    server: str
    protocol: str
    port: int
    count: int
    entity: str
    """The Cilium entity on the far side (the policy's peer)."""
    direction: str
    """The direction of the managed workload's policy that would need the rule."""
    reason: str
    fix: str


_UNEXPRESSIBLE = {
    HOST: "Cilium never matches an ipBlock against the pod's own node (the host entity; cilium#13081)",
    REMOTE_NODE: "Cilium never matches an ipBlock against another node (the remote-node entity; cilium#46571)",
    KUBE_APISERVER: "Cilium matches the in-cluster API server only as the kube-apiserver entity, never by "
    "ipBlock (cilium#20550, cilium#33525)",
    INGRESS: "Cilium Ingress traffic carries the ingress identity, which no ipBlock matches (cilium commit 04f19e9)",
}
_NODE_ENTITIES = (HOST, REMOTE_NODE, KUBE_APISERVER)
"""Entities at node IPs: ipBlocks match them when the agent runs with `policy-cidr-match-mode=nodes`
(Cilium language.rst, "Selecting nodes with CIDR / ipBlock"; the API server since cilium#39573)."""


def unexpressible_reason(entity: str, options: SynthesisOptions) -> str:
    """Why a NetworkPolicy peer cannot select `entity` under the options' CNI profile ("" when it can)."""
    if options.target != "networkpolicy" or options.cni != "cilium" or entity not in _UNEXPRESSIBLE:
        return ""
    if options.cidr_match_nodes and entity in _NODE_ENTITIES:
        return ""
    return _UNEXPRESSIBLE[entity]


def _fix(entity: str, direction: str) -> str:
    key = "toEntities" if direction == "egress" else "fromEntities"
    fix = f"--target cilium writes it as a CiliumNetworkPolicy ({key}: [{entity}])"
    if entity in _NODE_ENTITIES:
        fix += f"; or run the Cilium agent with policy-cidr-match-mode=nodes and pass --cni-option {CIDR_MATCH_NODES}"
    return fix


@dataclass
class Findings:
    """Observed traffic that made no rule, and why."""

    host_ingress: pd.DataFrame
    """Edges from the pod's own node (kubelet probes): allowed by CNIs anyway, no rule."""
    not_expressed: pd.DataFrame
    """Edges NetworkPolicy cannot express or that are skipped (ICMP, health, unknown), with `reason`."""
    dropped: pd.DataFrame
    """Edges with DROPPED flows (wanted only with `include_dropped`)."""
    ambiguous_selectors: list[Selector]
    """Workloads whose selector also selects other workloads (extra reach)."""
    no_stable_selector: list[NoStableSelector] = field(default_factory=list)
    """Workloads no stable label selects: their traffic has no rule, unless `allow_empty_selector`."""
    unexpressible: list[UnexpressiblePeer] = field(default_factory=list)
    """Edges of managed workloads the target cannot allow under the CNI profile: the proposal is incomplete."""


@dataclass(frozen=True)
class NoStableSelector:
    """A workload whose pods carry no stable label (only volatile ones such as `job-name`, or none), so
    that only `podSelector: {}`, every pod of its namespace, would select it."""

    namespace: str
    workload: str
    labels: tuple[tuple[str, str], ...]
    """The labels its pods share (none of them stable)."""
    connections: tuple[str, ...]
    """Its observed connections, `client -> server PROTOCOL/port`."""
    emitted: bool
    """Whether its rules were made anyway with `podSelector: {}` (`allow_empty_selector`)."""
    suggestion: tuple[tuple[str, str], ...] = ()
    """With an inventory: a label that, on its pod template, would select it and no other pod."""
    flows: int = 0
    """The flows of its connections."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.workload}"


@dataclass
class Proposal:
    policies: list[PolicyPlan]
    selectors: dict[tuple[str, str], Selector]
    findings: Findings
    edges: pd.DataFrame
    """The wanted edges the policies are built from (the traffic replay must find allowed)."""
    managed_namespaces: list[str]
    target: str = "networkpolicy"
    """The policy kind to render (`render.target_policies`): with "cilium", `manifest` is only the
    NetworkPolicy equivalent of the rules (entity and FQDN peers as ipBlocks of their observed IPs)."""
    dns: DnsAllowance = field(default_factory=lambda: DnsAllowance(DnsMode.OBSERVED))
    """The DNS allowance: its servers and namespaces (rendered as `allow-dns` policies)."""
    unobserved: Unobserved = field(default_factory=lambda: Unobserved(UnobservedMode.ISOLATE, known=False))
    """Workloads of managed namespaces with no allow rule (known with an inventory)."""


# -- peers -------------------------------------------------------------------------------------


def _peer(row: Any, side: str, policy_namespace: str, target: str, fqdn: Mapping[str, tuple[str, ...]]) -> Peer:
    """The peer one side of an edge row names in a rule of a policy of `policy_namespace`; `fqdn`
    names the world IPs to select by DNS name."""
    entity = getattr(row, f"{side}_entity")
    if entity == POD:
        namespace = getattr(row, f"{side}_namespace")
        return Peer(0 if namespace == policy_namespace else 1, namespace, getattr(row, f"{side}_workload"), "")
    ip = getattr(row, f"{side}_ip")
    if target == "cilium" and entity in CILIUM_ENTITIES:
        return Peer(3, "", "", "", entity)
    if entity == WORLD and fqdn.get(ip):
        return Peer(4, "", "", "", names=fqdn[ip])
    return Peer(2, "", "", ip)


# -- synthesis ---------------------------------------------------------------------------------


def synthesize(
    observations: pd.DataFrame,
    pods: pd.DataFrame | None = None,
    dns_names: Mapping[str, tuple[str, ...]] | None = None,
    options: SynthesisOptions | None = None,
    port_names: PortNames | None = None,
    *,
    dns_servers: Sequence[DnsServer] = (),
    complete_pods: bool = False,
) -> Proposal:
    """Propose the NetworkPolicies that allow exactly the wanted observed traffic.

    `dns_servers` are the cluster's DNS servers known besides those observed (the inventory's);
    `complete_pods` says `pods` lists every pod of its namespaces (an inventory's), so unobserved
    workloads are known and an empty selector that selects no other known pod is proven exact
    (otherwise a workload without stable labels gets none).
    """
    options = options or SynthesisOptions()
    names = EvidenceNames(dns_names or {}, port_names or {})
    all_edges = build_edges(observations)
    edges = build_edges(wanted_observations(observations, options))
    members = _selector_members(observations, pods)
    selectors = choose_selectors(members)
    unselectable = {
        key
        for key, selector in selectors.items()
        if not selector.match_labels and not (complete_pods and selector.exact)
    }

    protocols = POLICY_PROTOCOLS + (ICMP_PROTOCOLS if options.target == "cilium" else ())
    expressible = edges["protocol"].isin(protocols)
    reasons = pd.Series("", index=edges.index, dtype=object)
    reasons[~expressible] = (
        "protocol not expressible in NetworkPolicy (only TCP, UDP and SCTP)"
        if options.target == "networkpolicy"
        else "protocol not expressible in CiliumNetworkPolicy (only TCP, UDP, SCTP and ICMP)"
    )
    reasons[edges["protocol"].isin(POLICY_PROTOCOLS) & ~edges["port"].between(1, 65535)] = (
        "server port not a port number (1-65535)"
    )
    for side in ("client", "server"):
        entity = edges[f"{side}_entity"]
        reasons[(reasons == "") & (entity == HEALTH)] = f"{side} is the Cilium health endpoint"
        reasons[(reasons == "") & (entity == UNKNOWN)] = f"{side} identity unknown"
        unresolved = (entity == POD) & (edges[f"{side}_workload"] == "")
        reasons[(reasons == "") & unresolved] = f"{side} pod's workload unresolved (labels only)"
    namespaces = _observed_namespaces(observations, pods)
    managed = sorted(ns for ns in namespaces if ns not in options.exclude_namespaces)
    touches = _ends_in(edges, "client", unselectable) | _ends_in(edges, "server", unselectable)
    selectable = options.allow_empty_selector | ~touches  # a DNS server without stable labels: no allowance
    observed_servers = observed_dns_servers(edges[(reasons == "") & selectable])
    dns = plan_allowance(options.dns, [*dns_servers, *observed_servers], managed, selectors)
    if options.dns is DnsMode.OFF:
        reasons[(reasons == "") & dns.covers(edges)] = "DNS lookup left to another policy (--dns off)"
    host_ingress = (reasons == "") & (edges["client_entity"] == HOST) & (edges["server_entity"] == POD)
    without_selector = (reasons == "") & ~host_ingress & touches

    unexpressible = _unexpressible(edges[(reasons == "") & ~host_ingress], managed, options)
    ruled = edges[(reasons == "") & ~host_ingress & ~edges.index.isin(list(unexpressible)) & selectable]
    lookups = dns.covers(ruled) & ruled["client_namespace"].isin(dns.namespaces)
    traffic: dict[tuple[str, str], dict[str, list]] = {}
    for row, lookup in zip(ruled.itertuples(index=False), lookups, strict=True):
        for side, direction in (("server", "ingress"), ("client", "egress")):
            if lookup and direction == "egress":
                continue  # the DNS allowance allows it
            namespace = getattr(row, f"{side}_namespace")
            if getattr(row, f"{side}_entity") == POD and namespace in managed:
                owner = (namespace, getattr(row, f"{side}_workload"))
                traffic.setdefault(owner, {"ingress": [], "egress": []})[direction].append(row)
    unobserved = find_unobserved(options.unobserved, pods, complete_pods, managed, traffic, selectors)
    skipped = unobserved.skipped_namespaces
    if options.baseline == NAMESPACE_BASELINE:
        policies = [_default_deny(ns, unobserved.pod_selector(ns)) for ns in managed if ns not in skipped]
    else:
        policies = [_cluster_baseline(options)]
    for (namespace, workload), rows in sorted(traffic.items()):
        resolves = namespace in dns.namespaces  # its lookups go through the allowance's DNS rule
        policies.append(_workload_policy(namespace, workload, rows, selectors, names, options.target, resolves))
    policies += _dns_policies(dns, ruled[lookups], policies, unobserved, selectors, names)

    used = _peers(ruled)
    findings = Findings(
        host_ingress=edges[host_ingress & edges["server_namespace"].isin(managed)].reset_index(drop=True),
        not_expressed=edges[reasons != ""].assign(reason=reasons[reasons != ""]).reset_index(drop=True),
        dropped=all_edges[all_edges["verdicts"].str.contains(DROPPED)].reset_index(drop=True),
        ambiguous_selectors=[
            s for key, s in sorted(selectors.items()) if not s.exact and (key[0] in managed or key in used)
        ],
        no_stable_selector=_no_stable_selector(edges[without_selector], unselectable, members, options, complete_pods),
        unexpressible=list(unexpressible.values()),
    )
    return Proposal(
        policies, selectors, findings, ruled.reset_index(drop=True), managed, options.target, dns, unobserved
    )


def _unexpressible(edges: pd.DataFrame, managed: list[str], options: SynthesisOptions) -> dict[Any, UnexpressiblePeer]:
    """The edges (by index) a managed workload's policy would need a peer for that the target cannot
    select under the CNI profile."""
    found = {}
    for index, row in zip(edges.index, edges.itertuples(index=False), strict=True):
        for side, peer_side, direction in (("client", "server", "egress"), ("server", "client", "ingress")):
            entity = getattr(row, f"{peer_side}_entity")
            reason = unexpressible_reason(entity, options)
            if reason and getattr(row, f"{side}_entity") == POD and getattr(row, f"{side}_namespace") in managed:
                found[index] = UnexpressiblePeer(
                    row.client, row.server, row.protocol, int(row.port), int(row.count), entity, direction, reason,
                    _fix(entity, direction),
                )  # fmt: skip
    return found


def _ends_in(edges: pd.DataFrame, side: str, workloads: set[tuple[str, str]]) -> pd.Series:
    """Whether the `side` end of each edge is a pod of one of `workloads`."""
    keys = zip(edges[f"{side}_entity"], edges[f"{side}_namespace"], edges[f"{side}_workload"], strict=True)
    hits = [entity == POD and (namespace, workload) in workloads for entity, namespace, workload in keys]
    return pd.Series(hits, index=edges.index, dtype=bool)


def _no_stable_selector(
    edges: pd.DataFrame,
    unselectable: set[tuple[str, str]],
    members: list[tuple[str, str, dict]],
    options: SynthesisOptions,
    complete_pods: bool,
) -> list[NoStableSelector]:
    """One item per workload without a stable selector that has traffic in `edges`, with its connections."""
    connections: dict[tuple[str, str], dict[str, int]] = {}
    for row in edges.itertuples(index=False):
        for side in ("client", "server"):
            key = (getattr(row, f"{side}_namespace"), getattr(row, f"{side}_workload"))
            if getattr(row, f"{side}_entity") == POD and key in unselectable:
                connection = f"{row.client} -> {row.server} {row.protocol}/{row.port}"
                connections.setdefault(key, {})[connection] = int(row.count)
    items = []
    for (namespace, workload), found in sorted(connections.items()):
        own = [labels for ns, name, labels in members if (ns, name) == (namespace, workload)]
        common = {k: v for k, v in own[0].items() if all(labels.get(k) == v for labels in own)} if own else {}
        others = [labels for ns, name, labels in members if ns == namespace and name != workload]
        items.append(
            NoStableSelector(
                namespace,
                workload,
                labels=tuple(sorted(common.items())),
                connections=tuple(sorted(found)),
                emitted=options.allow_empty_selector,
                suggestion=label_to_select(workload, others) if complete_pods else (),
                flows=sum(found.values()),
            )
        )
    return items


def _peers(edges: pd.DataFrame) -> set[tuple[str, str]]:
    """(namespace, workload) of every pod end of `edges`: the workloads rules select."""
    found = set()
    for side in ("client", "server"):
        pods = edges[edges[f"{side}_entity"] == POD]
        found |= set(zip(pods[f"{side}_namespace"], pods[f"{side}_workload"], strict=True))
    return found


def _selector_members(observations: pd.DataFrame, pods: pd.DataFrame | None) -> list[tuple[str, str, dict]]:
    """(namespace, workload, labels) of every known pod, plus observed endpoints no pod row covers."""
    members = set()
    if pods is not None:
        members |= set(zip(pods["namespace"], pods["workload"], pods["labels"], strict=True))
    for side in ("client", "server"):
        is_pod = (observations[f"{side}_entity"] == POD) & (observations[f"{side}_workload"] != "")
        rows = observations[is_pod]
        members |= set(
            zip(
                rows[f"{side}_namespace"],
                rows[f"{side}_workload"],
                rows[f"{side}_labels"],
                strict=True,
            )
        )
    return [(ns, workload, labels_from_text(labels)) for ns, workload, labels in sorted(members)]


def _observed_namespaces(observations: pd.DataFrame, pods: pd.DataFrame | None) -> set[str]:
    namespaces = set(pods["namespace"]) if pods is not None else set()
    for side in ("client", "server"):
        namespaces |= set(observations.loc[observations[f"{side}_entity"] == POD, f"{side}_namespace"])
    return namespaces


def _default_deny(namespace: str, pod_selector: LabelSelector) -> PolicyPlan:
    return PolicyPlan.of(NetworkPolicy(namespace, DEFAULT_DENY, pod_selector, frozenset(Direction)))


def _dns_policies(
    dns: DnsAllowance,
    lookups: pd.DataFrame,
    policies: list[PolicyPlan],
    unobserved: Unobserved,
    selectors: Mapping[tuple[str, str], Selector],
    names: EvidenceNames,
) -> list[PolicyPlan]:
    """One `allow-dns` per namespace of the allowance, selecting what its default-deny selects. A
    namespace without a default-deny gets the rule in each of its egress policies instead (a policy
    selecting every pod would isolate them all)."""
    found = []
    note = f"DNS allowance: every pod may resolve names over UDP and TCP 53 ({dns.describe()})"
    for namespace in dns.namespaces:
        rows = list(lookups[lookups["client_namespace"] == namespace].itertuples(index=False))
        if namespace in unobserved.skipped_namespaces:
            for i, plan in enumerate(policies):
                policy = plan.policy
                if plan.namespace == namespace and _has_egress(policy):
                    with_dns = plan.with_policy(replace(policy, egress=(*policy.egress, dns.rule(selectors))))
                    dns_evidence = _dns_evidence(len(policy.egress), [], names, note)
                    policies[i] = replace(with_dns, evidence=[*plan.evidence, dns_evidence])
            continue
        taken = {plan.name for plan in policies if plan.namespace == namespace}
        name = DNS_POLICY if DNS_POLICY not in taken else f"netpol-recommender-{DNS_POLICY}"
        pods, egress = unobserved.pod_selector(namespace), frozenset({Direction.EGRESS})
        policy = NetworkPolicy(namespace, name, pods, egress, egress=(dns.rule(selectors),))
        evidence = [_dns_evidence(0, rows, names, note)]
        found.append(PolicyPlan.of(policy, evidence=evidence, purpose="let every pod resolve names"))
    return found


def _has_egress(policy: AnyPolicy) -> TypeGuard[NetworkPolicy]:
    """Whether `policy` is a NetworkPolicy isolating egress (a workload's with egress rules)."""
    return isinstance(policy, NetworkPolicy) and Direction.EGRESS in policy.policy_types


def _dns_evidence(index: int, rows: list, names: EvidenceNames, note: str) -> RuleEvidence:
    if rows:
        return replace(rule_evidence("egress", index, rows, "server", DNS_PORTS, names), note=note)
    return RuleEvidence("egress", index, (), (), 0, None, None, "", "", note=note)


def _cluster_baseline(options: SynthesisOptions) -> PolicyPlan:
    """The cluster-scoped default deny: a plan without namespace."""
    manifest = cluster_baseline(options.exclude_namespaces, MANAGED_BY)
    return PolicyPlan("", CLUSTER_BASELINE_NAME, "", manifest, parse_cluster_policy(manifest))


def _workload_policy(
    namespace: str,
    workload: str,
    rows: Mapping[str, list],
    selectors: Mapping[tuple[str, str], Selector],
    names: EvidenceNames,
    target: str,
    resolves: bool,
) -> PolicyPlan:
    """The allow policy of one workload from its edge rows {"ingress": [...], "egress": [...]}; `resolves`:
    its pods' lookups pass the DNS proxy (the DNS allowance), so world peers may be selected by name."""
    by_direction: dict[Direction, tuple[PolicyRule, ...]] = {}
    evidence: list[RuleEvidence] = []
    plan_rules: list[Rule] = []
    for direction, peer_side in (("ingress", "client"), ("egress", "server")):
        if rows[direction]:
            looks_up = resolves or _uses_dns(rows[direction])
            fqdn = names.dns if target == "cilium" and direction == "egress" and looks_up else {}
            rules, rule_evidence = _rules(
                rows[direction], peer_side, direction, namespace, selectors, names, target, fqdn
            )
            written = (networkpolicy_rule(rule, selectors) for rule in rules)
            by_direction[Direction(direction.capitalize())] = tuple(rule for rule in written if rule.ports)
            evidence += rule_evidence
            plan_rules += rules
    some_row = (rows["ingress"] or rows["egress"])[0]
    kind = some_row.server_kind if rows["ingress"] else some_row.client_kind
    policy = NetworkPolicy(
        namespace,
        f"allow-{workload}",
        selectors[(namespace, workload)].label_selector,
        frozenset(by_direction),
        ingress=by_direction.get(Direction.INGRESS, ()),
        egress=by_direction.get(Direction.EGRESS, ()),
    )
    return PolicyPlan.of(
        policy,
        f"{namespace}/{workload}",
        evidence=evidence,
        warnings=selector_warnings(selectors[(namespace, workload)]),
        rules=plan_rules,
        annotations={"netpol-recommender/workload": f"{kind or 'Workload'}/{workload}"},
    )


def _uses_dns(rows: list) -> bool:
    """Whether the workload was seen asking DNS servers (pods on port 53): Cilium's DNS proxy then
    sees its lookups, which `toFQDNs` needs."""
    return any(row.server_entity == POD and int(row.port) == 53 for row in rows)


def selector_warnings(selector: Selector) -> tuple[str, ...]:
    """Why a workload's podSelector selects more than the workload: `{}`, or labels other workloads share."""
    name = f"{selector.namespace}/{selector.workload}"
    also = f" (also {', '.join(selector.also_selects)})" if selector.also_selects else ""
    if not selector.match_labels:
        return (f"the podSelector of {name} is {{}}: it selects every pod of namespace {selector.namespace}{also}",)
    if not selector.exact:
        return (f"the podSelector of {name} is ambiguous: it also selects {', '.join(selector.also_selects)}",)
    return ()


def _rules(
    rows: list,
    peer_side: str,
    direction: str,
    namespace: str,
    selectors: Mapping[tuple[str, str], Selector],
    names: EvidenceNames,
    target: str,
    fqdn: Mapping[str, tuple[str, ...]],
) -> tuple[list[Rule], list[RuleEvidence]]:
    """One rule per distinct port set (and, for Cilium, peer kind); its peers are every peer
    observed on exactly those ports."""
    rows_of: dict[Peer, list] = {}
    for row in rows:
        rows_of.setdefault(_peer(row, peer_side, namespace, target, fqdn), []).append(row)
    groups: dict[tuple[tuple[tuple[str, int], ...], str], list[Peer]] = {}
    for peer, peer_rows in rows_of.items():
        ports = tuple(sorted({(row.protocol, int(row.port)) for row in peer_rows}))
        groups.setdefault((ports, peer.kind if target == "cilium" else ""), []).append(peer)

    rules, evidence = [], []
    for index, ((ports, _kind), peers) in enumerate(
        sorted(groups.items(), key=lambda item: (item[0], sorted(item[1])))
    ):
        peers.sort()
        rule_rows = [row for peer in peers for row in rows_of[peer]]
        ips = {getattr(row, f"{peer_side}_ip") for peer in peers if peer.kind != "pods" for row in rows_of[peer]}
        rules.append(Rule(direction, tuple(peers), ports, tuple(sorted(ips))))
        warnings = tuple(
            warning
            for peer in peers
            if peer.order < 2
            for warning in selector_warnings(selectors[(peer.namespace, peer.workload)])
        )
        evidence.append(replace(rule_evidence(direction, index, rule_rows, peer_side, ports, names), warnings=warnings))
    return rules, evidence
