"""The public Python API: everything the CLI does, as functions a notebook can call.

from recommender import api
observed = api.load_observations(["capture.json"])
result = api.recommend(observed)
print(api.render_yaml(result.proposal))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from collectors import ENGINES, read_observations
from collectors.cpus import available_cpus
from collectors.enrich import apply_inventory
from collectors.errors import CollectorError, OnError
from collectors.flow_filter import FlowFilter
from collectors.inventory import Inventory, inventory_from_cluster, load_inventory, snapshot_json, write_snapshot
from collectors.parquet import merge_observation_sets, save_observations
from collectors.records import ObservationSet
from collectors.relay import (
    DEFAULT_SERVER,
    RelayConnectionError,
    RelayOptions,
    RelayProgress,
    collect_from_relay,
    parse_duration,
    parse_time,
)
from collectors.sources import STDIN, expand_inputs
from recommender.baseline import BASELINES, NAMESPACE_BASELINE
from recommender.cluster_model import cluster_model
from recommender.coverage import Coverage, observation_coverage
from recommender.dns_allowance import DnsMode, inventory_dns_servers
from recommender.errors import RecommenderError
from recommender.findings import Finding, FindingKind, finding_text, findings_json, findings_markdown
from recommender.graph import build_edges, build_graph
from recommender.policy_files import load_policy_files
from recommender.recommendation import Recommendation
from recommender.render import proposal_text, target_policies, write_proposal
from recommender.report import GAP, NamedWindows, Report, ReportOptions, assemble_report
from recommender.report_render import json_document as report_json
from recommender.report_render import markdown as report_markdown
from recommender.report_render import write_report
from recommender.semantics import CIDR_MATCH_NODES, PROFILE_NAMES, Profile, profile_named
from recommender.store import ObservationStore, locked_store
from recommender.synthesis import DEFAULT_EXCLUDED_NAMESPACES, TARGETS, Proposal, SynthesisOptions, synthesize
from recommender.tables import (
    TextTable,
    connections_table,
    drift_json,
    drift_markdown,
    rules_table,
    verify_json,
    verify_markdown,
)
from recommender.unobserved import UnobservedMode
from recommender.verification import Check, Drift, Replay, check_proposal, drift, replay

if TYPE_CHECKING:
    import networkx as nx

    from recommender import pictures

__all__ = [
    "BASELINES",
    "CIDR_MATCH_NODES",
    "DEFAULT_EXCLUDED_NAMESPACES",
    "DEFAULT_SERVER",
    "ENGINES",
    "GAP",
    "NAMESPACE_BASELINE",
    "PROFILE_NAMES",
    "TARGETS",
    "Check",
    "CollectorError",
    "Coverage",
    "DnsMode",
    "Drift",
    "Finding",
    "FindingKind",
    "FlowFilter",
    "Inventory",
    "ObservationSet",
    "ObservationStore",
    "Proposal",
    "Recommendation",
    "RecommenderError",
    "RelayConnectionError",
    "RelayOptions",
    "RelayProgress",
    "Replay",
    "Report",
    "ReportOptions",
    "SynthesisOptions",
    "TextTable",
    "UnobservedMode",
    "collect",
    "connections_table",
    "dataplane_profile",
    "default_cni",
    "diff",
    "drift_json",
    "drift_markdown",
    "edges",
    "finding_text",
    "graph",
    "input_size",
    "load_observations",
    "load_policies",
    "locked_store",
    "merge_observation_sets",
    "parse_duration",
    "parse_time",
    "picture",
    "proposal_text",
    "read_inventory",
    "recommend",
    "render_yaml",
    "report_json",
    "report_markdown",
    "review",
    "rules_table",
    "save",
    "save_inventory",
    "save_picture",
    "snapshot_json",
    "verify",
    "verify_json",
    "verify_markdown",
    "write_findings",
    "write_policies",
    "write_report",
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


def input_size(sources: Sequence[str]) -> int | None:
    """The bytes of the files `sources` name (globs expanded), e.g. for a progress bar; None when stdin is
    among them or they cannot be listed (reading them reports why)."""
    try:
        paths = expand_inputs(sources)
    except CollectorError:
        return None
    if STDIN in paths:
        return None
    return sum(os.path.getsize(path) for path in paths)


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
    _check_unobserved_mode(options, inventory)
    return _recommend(_named(observed, inventory), options, inventory)


def _check_unobserved_mode(options: SynthesisOptions, inventory: Inventory | None) -> None:
    if inventory is None and options.unobserved is not UnobservedMode.ISOLATE:
        raise RecommenderError(
            f"--unobserved {options.unobserved} needs the inventory (--inventory FILE or --cluster): without it the "
            "workloads nobody saw cannot be known"
        )


def _recommend(observed: ObservationSet, options: SynthesisOptions, inventory: Inventory | None) -> Recommendation:
    """`recommend` for observations already named by `inventory` (`_named`)."""
    if options.cni is None:
        options = replace(options, cni=default_cni(observed))
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


def _named(observed: ObservationSet, inventory: Inventory | None) -> ObservationSet:
    """`observed` as the inventory names it (`collectors.enrich.apply_inventory`). Each entry point names
    each observation set it is given once, and hands the named set on."""
    return apply_inventory(observed, inventory) if inventory is not None else observed


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
    named = _named(observed, inventory)
    return replay(policies, named, model=cluster_model(named, inventory), profile=profile)


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
    return _drift(policies, _named(observed, inventory), inventory, profile)


def _drift(
    policies: Sequence[Mapping[str, Any]], observed: ObservationSet, inventory: Inventory | None, profile: Profile
) -> Drift:
    """`diff` for observations already named by `inventory` (`_named`)."""
    return drift(policies, observed, model=cluster_model(observed, inventory), profile=profile)


def review(
    store: ObservationStore,
    observed: ObservationSet,
    *,
    policies: Sequence[Mapping[str, Any]] | None = None,
    policy_source: str = "",
    inventory: Inventory | None = None,
    options: ReportOptions | None = None,
) -> Report:
    """Review `observed` as the store's next window, without changing the store: new and stale paths,
    what the policies in force (`policies`, from `policy_source`) would break or never use, and the
    recommendation for the running picture (the windows kept and this one) under the same dataplane.
    With an `inventory`, workloads are named and selectors made exact as the cluster knows them."""
    options = options or ReportOptions()
    synthesis = options.synthesis_options()
    _check_unobserved_mode(synthesis, inventory)
    pending = store.next_window(observed)
    history = store.retained(pending, options.retain)
    window = _named(observed, inventory)
    earlier = _named(store.picture(history), inventory) if history else None
    picture = merge_observation_sets([earlier, window]) if earlier is not None else window
    profile = dataplane_profile(picture, options.cni, options.cni_options)
    return assemble_report(
        store,
        observed,
        windows=NamedWindows(pending, history, window, earlier, picture),
        recommendation=_recommend(picture, synthesis, inventory),
        drift=_drift(policies, picture, inventory, profile) if policies is not None else None,
        policy_source=policy_source,
        options=options,
    )


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

    named = _named(observed, inventory)
    status = _drift(policies, named, inventory, dataplane_profile(observed)).status() if policies is not None else None
    traffic = edges(named)
    if kind == "matrix":
        return pictures.namespace_matrix(traffic, status=status)
    if kind == "workload":
        if not workload:
            raise RecommenderError("a workload picture needs the workload, as namespace/name")
        return pictures.workload_view(traffic, workload, status=status, dns_names=observed.dns_names)
    return pictures.workload_graph(traffic, status=status, dns_names=observed.dns_names)


def save_picture(figure: pictures.Picture, path: str) -> None:
    """Write a `picture` as SVG or PNG (by the file extension), byte-identical for the same picture."""
    from recommender import pictures  # matplotlib, as in `picture`

    pictures.save(figure, path)


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
