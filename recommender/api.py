"""The public Python API: everything the CLI does, as functions a notebook can call.

from recommender import api
observed = api.load_observations(["capture.json"])
result = api.recommend(observed)
print(api.render_yaml(result.proposal))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pandas as pd

from collectors import read_observations
from collectors.conntrack_observations import UNREPLIED, resolution_counts
from collectors.cpus import available_cpus
from collectors.enrich import apply_inventory
from collectors.errors import OnError
from collectors.flow_filter import FlowFilter
from collectors.inventory import Inventory, inventory_from_cluster, load_inventory, write_snapshot
from collectors.parquet import save_observations
from collectors.records import DROPPED, ObservationSet
from collectors.relay import RelayOptions, RelayProgress, collect_from_relay
from recommender.cluster_model import cluster_model
from recommender.coverage import Coverage, observation_coverage
from recommender.dns_allowance import DnsMode, inventory_dns_servers
from recommender.errors import RecommenderError
from recommender.findings import Finding, FindingKind, collect_findings, count, findings_json, findings_markdown
from recommender.graph import build_edges, build_graph
from recommender.policy_files import load_policy_files
from recommender.render import proposal_text, target_policies, write_proposal
from recommender.semantics import Profile, profile_named
from recommender.synthesis import CIDR_MATCH_NODES, Proposal, SynthesisOptions, synthesize, wanted_observations
from recommender.unobserved import UnobservedMode
from recommender.verification import Check, Drift, Replay, check_proposal, drift, replay

if TYPE_CHECKING:
    import networkx as nx

    from recommender import pictures

__all__ = [
    "Check",
    "Coverage",
    "DnsMode",
    "Drift",
    "FlowFilter",
    "Inventory",
    "ObservationSet",
    "Proposal",
    "Recommendation",
    "RelayOptions",
    "Replay",
    "SynthesisOptions",
    "UnobservedMode",
    "collect",
    "dataplane_profile",
    "default_cni",
    "diff",
    "edges",
    "graph",
    "load_observations",
    "load_policies",
    "picture",
    "read_inventory",
    "recommend",
    "render_yaml",
    "save",
    "save_inventory",
    "verify",
    "write_findings",
    "write_policies",
]


def load_observations(
    sources: Sequence[str],
    *,
    on_error: OnError | str = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
    jobs: int | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    inventory: Inventory | None = None,
    flow_filter: FlowFilter | None = None,
) -> ObservationSet:
    """Read observation sources: Hubble flow files (`hubble observe -o jsonpb`, exporter logs, gzip,
    `-` for stdin, globs), conntrack dumps of the nodes (any format; their IPs are named with
    `inventory`, which they need) and saved observation files (Parquet, from `collect`).

    `on_error="skip"` skips and counts malformed lines instead of raising `BadInputError`. `jobs`
    processes read large Hubble files in parallel (default: one per CPU this process may use, its
    cgroup quota counted); the result does not depend on it.
    `engine="dask"` reads Hubble files, local or at fsspec URLs (`s3://bucket/hubble/*.json.gz`), on the
    Dask cluster at `scheduler` (an address such as `tcp://scheduler:8786`), or on a local cluster of
    `jobs` workers when there is none; the result is the same. `flow_filter` keeps what matches the
    `hubble observe` filters (namespace, verdict, time window, pods, protocol, port).
    """
    jobs = jobs if jobs is not None else available_cpus()
    return read_observations(
        sources,
        on_error=OnError(on_error),
        progress=progress,
        jobs=jobs,
        engine=engine,
        scheduler=scheduler,
        inventory=inventory,
        flow_filter=flow_filter,
    )


def collect(relay: RelayOptions, progress: Callable[[RelayProgress], None] | None = None) -> ObservationSet:
    """Observe the cluster live through Hubble Relay for the window `relay` describes.

    The flows go through the same orientation and aggregation as files. A stream that breaks is
    resumed; SIGINT and SIGTERM end the window and still return what was observed.
    """
    return collect_from_relay(relay, progress=progress)


def save(observed: ObservationSet, path: str) -> None:
    """Save aggregated observations as Parquet, to analyse later or merge with other windows."""
    save_observations(observed, path)


def edges(observed: ObservationSet, *, verdicts: Sequence[str] | None = None) -> pd.DataFrame:
    """Workload-level edges: (client, server, protocol, port) with counts, times and verdicts."""
    return build_edges(observed.observations, verdicts)


def graph(observed: ObservationSet) -> nx.DiGraph:
    """The workload communication graph (nodes: workloads and entities; edges: traffic)."""
    return build_graph(edges(observed), observed.dns_names)


@dataclass
class Recommendation:
    """A proposal, the observations it was made from, and the replay that proves it."""

    observed: ObservationSet
    proposal: Proposal
    options: SynthesisOptions
    check: Check
    coverage: Coverage
    _findings: list[Finding] | None = field(default=None, init=False, repr=False, compare=False)

    def findings(self) -> list[Finding]:
        """Every item behind the summary's counts that are not rules, with its evidence (collected once:
        the summary, the folder and `--findings` all ask)."""
        if self._findings is None:
            self._findings = collect_findings(self.observed, self.proposal, self.check, self.coverage)
        return list(self._findings)

    def summary(self) -> list[tuple[str, str]]:
        """The figures of the run, for the terminal summary table and reports."""
        proposal, stats = self.proposal, self.observed.stats
        findings = proposal.findings
        observations = self.observed.observations
        dropped = int(observations.loc[observations["verdict"] == DROPPED, "count"].sum())
        rules = sum(len(p.manifest["spec"].get(d, [])) for p in proposal.policies for d in ("ingress", "egress"))
        listed = self.findings()
        rows = [
            ("sources", str(len(stats.sources))),
            ("lines read", f"{stats.lines:,}"),
            ("flows", f"{stats.flows:,}"),
            ("duplicate flows dropped", f"{stats.duplicates:,}"),
            ("flows skipped (not connection traffic)", f"{sum(stats.skipped.values()):,}"),
            ("lines skipped (malformed)", f"{stats.bad.count:,}"),
            ("lost events (ring buffer overflow)", f"{stats.events_lost:,}"),
            ("unoriented flows (not used)", f"{stats.unoriented:,}"),
            ("dropped flows", f"{dropped:,}" + _dropped_note(observations, self.options)),
            *_resolution_rows(observations, stats.resolution),
            ("target", self.options.target),
            (
                "CNI profile",
                f"{self.options.cni}" + (f" ({CIDR_MATCH_NODES})" if self.options.cidr_match_nodes else ""),
            ),
            ("managed namespaces", str(len(proposal.managed_namespaces))),
            ("workloads with policies", str(sum(1 for p in proposal.policies if p.workload))),
            ("edges allowed", str(len(proposal.edges))),
            ("policies", str(len(proposal.policies))),
            ("rules", str(rules)),
            ("recall (observed connections allowed)", f"{self.check.recall:.0%}"),
            ("replayed as", f"{self.options.target} on {self.options.cni}"),
            ("excess (allowed, never observed)", str(len(self.check.excess))),
            *_dns_allowance_rows(self.check),
            ("host ingress edges (kubelet probes, no rule)", str(len(findings.host_ingress))),
            ("edges not expressed", str(len(findings.not_expressed))),
            ("edges not expressible on the CNI (no rule)", str(len(findings.unexpressible))),
            ("unresolved endpoints", str(count(listed, FindingKind.UNRESOLVED))),
            ("ambiguous selectors", str(len(findings.ambiguous_selectors))),
            *self._switch_on_rows(),
        ]
        without_selector = count(listed, FindingKind.NO_STABLE_SELECTOR)
        if without_selector:  # listed below the table
            fate = "podSelector {}, reach in excess" if self.options.allow_empty_selector else "no rule"
            rows.append(("workloads without a stable selector", f"{without_selector} ({fate})"))
        return rows

    def _switch_on_rows(self) -> list[tuple[str, str]]:
        """The DNS allowance, the unobserved workloads and the observation coverage."""
        dns, proof, unobserved = self.proposal.dns, self.check.dns, self.proposal.unobserved
        rows = [("observation window", self.coverage.describe_window())]
        rows.append(("flows per namespace", self.coverage.describe_flows()))
        if dns.active and proof is not None:
            rows += [
                (
                    "DNS allowance (UDP and TCP 53)",
                    f"{len(dns.namespaces)} namespace{'s' if len(dns.namespaces) != 1 else ''} to {dns.describe()}",
                ),
                ("DNS lookups proven (synthetic, every pod)", f"{proof.lookups:,}"),
                ("DNS allowance (allowed, never observed)", str(len(proof.unobserved))),
            ]
        else:
            rows.append(
                (
                    "DNS allowance",
                    f"none (--dns {dns.mode})" if dns.mode != DnsMode.ALLOW else "none (no DNS server known)",
                )
            )
        if unobserved.known:
            isolated = sum(item.isolated for item in unobserved.workloads)
            rows.append(("unobserved workloads (no allow rule)", f"{len(unobserved.workloads)} ({isolated} isolated)"))
        else:
            rows.append(("unobserved workloads", "unknown without an inventory (--inventory FILE or --cluster)"))
        return rows

    def warnings(self) -> list[str]:
        """What the input or the proposal cannot support: coverage warnings, and no DNS server known."""
        lines = [warning.message for warning in self.coverage.warnings]
        dns = self.proposal.dns
        if dns.mode is DnsMode.ALLOW and not dns.active and self.proposal.managed_namespaces:
            where = (
                "the inventory (no Service kube-dns with pods, no node-local-dns)"
                if self.proposal.unobserved.known
                else "an inventory (give one: --inventory FILE or --cluster)"
            )
            lines.append(f"the proposal lets no pod resolve names: no DNS server was observed or found in {where}")
        return lines

    def notes(self) -> list[str]:
        """Lines to read after the summary: the unobserved workloads and what became of them."""
        return [f"unobserved: {item.describe()}" for item in self.proposal.unobserved.workloads]


def _dns_allowance_rows(check: Check) -> list[tuple[str, str]]:
    """With a cluster baseline: what its DNS rule allows beyond the observed, apart from excess."""
    if check.baseline_dns is None:
        return []
    return [("cluster baseline DNS rule (allowed, never observed)", str(len(check.baseline_dns)))]


def _dropped_note(observations: pd.DataFrame, options: SynthesisOptions) -> str:
    """Whether dropped flows were allowed: with `include_dropped`, policy drops only."""
    if not options.include_dropped:
        return " (reported only)"
    dropped = observations[observations["verdict"] == DROPPED]
    allowed = int(wanted_observations(dropped, options)["count"].sum())
    return f" ({allowed:,} policy drops allowed, the rest reported only)"


def _resolution_rows(observations: pd.DataFrame, resolution: Counter[str]) -> list[tuple[str, str]]:
    """What naming IP addresses with the inventory decided (conntrack dumps; none for Hubble)."""
    if not resolution:
        return []
    counts = resolution_counts(resolution)
    unanswered = int(observations.loc[observations["verdict"] == UNREPLIED, "count"].sum())
    return [
        ("unanswered connections ([UNREPLIED], reported only)", f"{unanswered:,}"),
        ("connections to Services (backend from DNAT)", f"{counts['services_from_dnat']:,}"),
        ("connections with SNAT", f"{counts['snat']:,}"),
        ("unresolved IPs (not in the inventory)", f"{counts['unresolved_ips']:,}"),
        ("ambiguous IPs (several pods)", f"{counts['ambiguous_ips']:,}"),
    ]


def recommend(
    observed: ObservationSet, options: SynthesisOptions | None = None, inventory: Inventory | None = None
) -> Recommendation:
    """Synthesize the least-privilege NetworkPolicy set for the observed traffic, and prove it.

    Every observed connection the proposal is meant to allow is replayed against it; one that
    would break raises `ReplayError` (a bug, never a warning). The check also counts the excess:
    (client, server, protocol, port) tuples the proposal allows that were never observed.

    With an `inventory`, workloads and labels come from the cluster, selectors are exact against
    every pod of a namespace, the excess counts every pod, and the evidence names container ports.

    `options.cni` None means the input's CNI (`default_cni`). Edges the target cannot express on that
    CNI get no rule and are listed in `proposal.findings.unexpressible`: the proposal is incomplete.
    """
    options = options or SynthesisOptions()
    if options.cni is None:
        options = replace(options, cni=default_cni(observed))
    if inventory is None and options.unobserved is not UnobservedMode.ISOLATE:
        raise RecommenderError(
            f"--unobserved {options.unobserved} needs the inventory (--inventory FILE or --cluster): without it the "
            "workloads nobody saw cannot be known"
        )
    if inventory is not None:
        observed = apply_inventory(observed, inventory)
    proposal = synthesize(
        observed.observations,
        observed.pods,
        observed.dns_names,
        options,
        _port_names(inventory),
        dns_servers=inventory_dns_servers(inventory) if inventory is not None else (),
        complete_pods=inventory is not None,
    )
    edges = pd.concat([proposal.edges, proposal.findings.host_ingress], ignore_index=True)
    profile = dataplane_profile(observed, options.cni, (CIDR_MATCH_NODES,) if options.cidr_match_nodes else ())
    policies = [plan.policy for plan in target_policies(proposal)]
    unseen = sorted({item.namespace for item in proposal.findings.no_stable_selector if item.emitted})
    check = check_proposal(
        policies, observed, edges, options, inventory, profile, proposal.dns, proposal.unobserved, unseen_pods_in=unseen
    )
    coverage = observation_coverage(observed, proposal.managed_namespaces)
    return Recommendation(observed, proposal, options, check, coverage)


def default_cni(observed: ObservationSet) -> str:
    """The CNI profile an input implies: "cilium" for Hubble flows, "kubernetes" (the spec) for conntrack
    dumps (the only inputs that name their IPs with an inventory)."""
    return "kubernetes" if observed.stats.resolution else "cilium"


def _port_names(inventory: Inventory | None) -> dict[tuple[str, str, str, int], str]:
    if inventory is None:
        return {}
    return {
        (pod.namespace, pod.owner.name, port.protocol, port.port): port.name
        for pod in inventory.pods
        for port in pod.ports
        if port.name
    }


def load_policies(path: str) -> list[dict]:
    """NetworkPolicies from a YAML/JSON file or a directory of them (validated)."""
    return load_policy_files(path)


def dataplane_profile(observed: ObservationSet, cni: str | None = None, options: Sequence[str] = ()) -> Profile:
    """The dataplane profile named `cni` (`kubernetes`, `cilium`, `calico`; `cilium` takes the option
    `cidr-match-nodes`). By default `cilium` for Hubble input (Cilium produced it) and `kubernetes`
    for conntrack dumps (the CNI is not known)."""
    name = cni or default_cni(observed)
    try:
        return profile_named(name, options)
    except ValueError as exc:
        raise RecommenderError(str(exc)) from None


def verify(
    policies: list[dict],
    observed: ObservationSet,
    inventory: Inventory | None = None,
    *,
    cni: str | None = None,
    cni_options: Sequence[str] = (),
) -> Replay:
    """Replay every observed connection against `policies` (NetworkPolicies, CiliumNetworkPolicies,
    CiliumClusterwideNetworkPolicies, ClusterNetworkPolicies) as the CNI `cni` enforces them (see
    `dataplane_profile`): allowed or denied, and why."""
    profile = dataplane_profile(observed, cni, cni_options)
    if inventory is not None:
        observed = apply_inventory(observed, inventory)
    return replay(policies, observed, model=cluster_model(observed, inventory), profile=profile)


def diff(
    policies: list[dict] | None,
    observed: ObservationSet,
    inventory: Inventory | None = None,
    *,
    cni: str | None = None,
    cni_options: Sequence[str] = (),
) -> Drift:
    """Observed traffic against a policy set (by default the inventory's, i.e. the cluster's own) as the
    CNI `cni` enforces it: what it allows, what would break on enforcement, which rules nothing used."""
    profile = dataplane_profile(observed, cni, cni_options)
    if policies is None:
        if inventory is None:
            raise RecommenderError("diff needs policies: give a policy file or an inventory holding the cluster's")
        policies = list(inventory.network_policies)
    if inventory is not None:
        observed = apply_inventory(observed, inventory)
    return drift(policies, observed, model=cluster_model(observed, inventory), profile=profile)


def read_inventory(*, kubeconfig: str | None = None, context: str | None = None, path: str | None = None) -> Inventory:
    """The cluster inventory: from a snapshot file (`path`: `inventory -o` output or `kubectl get
    pods,services,endpointslices,namespaces,nodes,networkpolicies -A -o json`) or from the cluster."""
    if path is not None:
        return load_inventory(path)
    return inventory_from_cluster(kubeconfig, context)


def save_inventory(snapshot: Inventory, path: str) -> None:
    """Write an inventory snapshot (a kubectl-style `List`, byte-identical for the same cluster)."""
    write_snapshot(snapshot, path)


def picture(
    observed: ObservationSet,
    *,
    kind: str = "graph",
    workload: str | None = None,
    policies: list[dict] | None = None,
    inventory: Inventory | None = None,
) -> pictures.Picture:
    """A picture of the traffic: `kind` "graph" (the workload graph), "matrix" (namespace by
    namespace) or "workload" (one `workload` with its clients and servers). With `policies`, edges
    are coloured as allowed, would-break or unobserved (allowed but never seen)."""
    from recommender import pictures  # matplotlib: a third of the CLI's start, so only when drawing

    status = diff(policies, observed, inventory).status() if policies is not None else None
    traffic = edges(apply_inventory(observed, inventory) if inventory is not None else observed)
    if kind == "matrix":
        return pictures.namespace_matrix(traffic, status=status)
    if kind == "workload":
        if not workload:
            raise RecommenderError("a workload picture needs the workload, as namespace/name")
        return pictures.workload_view(traffic, workload, status=status, dns_names=observed.dns_names)
    return pictures.workload_graph(traffic, status=status, dns_names=observed.dns_names)


def render_yaml(proposal: Proposal, *, explain: bool = False) -> str:
    """All proposed policies as one YAML stream (with evidence comments when `explain`)."""
    return proposal_text(proposal, "yaml", explain=explain)


def write_policies(
    proposal: Proposal,
    directory: str,
    *,
    output_format: str = "yaml",
    explain: bool = False,
    force: bool = False,
    findings: Sequence[Finding] | None = None,
) -> list[str]:
    """Write one file per namespace and a kustomization.yaml into `directory` (with `findings`, also
    `findings.md` and `findings.json`), replacing the files an earlier run wrote there; a folder
    holding other files is refused unless `force` (they are kept)."""
    return write_proposal(
        proposal, directory, output_format=output_format, explain=explain, force=force, findings=findings
    )


def write_findings(findings: Sequence[Finding], path: str) -> None:
    """Write the findings to `path`: JSON for a `.json` name, Markdown otherwise."""
    text = findings_json(findings) if path.endswith(".json") else findings_markdown(findings)
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise RecommenderError(f"cannot write findings to {path}: {error.strerror}") from error
