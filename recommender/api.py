"""The public Python API: everything the CLI does, as functions a notebook can call.

from recommender import api
observed = api.load_observations(["capture.json"])
result = api.recommend(observed)
print(api.render_yaml(result.proposal))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import pandas as pd

from collectors import read_observations
from collectors.errors import OnError
from collectors.parquet import save_observations
from collectors.records import DROPPED, ObservationSet
from recommender.graph import build_edges, build_graph
from recommender.render import proposal_text, write_proposal
from recommender.synthesis import Proposal, SynthesisOptions, synthesize

__all__ = [
    "ObservationSet",
    "Proposal",
    "Recommendation",
    "SynthesisOptions",
    "edges",
    "graph",
    "load_observations",
    "recommend",
    "render_yaml",
    "save",
    "write_policies",
]


def load_observations(
    sources: Sequence[str],
    *,
    on_error: OnError | str = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
) -> ObservationSet:
    """Read observation sources: Hubble flow files (`hubble observe -o jsonpb`, exporter logs, gzip,
    `-` for stdin, globs) and saved observation files (Parquet, from `collect`).

    `on_error="skip"` skips and counts malformed lines instead of raising `BadInputError`.
    """
    return read_observations(sources, on_error=OnError(on_error), progress=progress)


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
    """A proposal together with the observations it was made from."""

    observed: ObservationSet
    proposal: Proposal
    options: SynthesisOptions

    def summary(self) -> list[tuple[str, str]]:
        """The figures of the run, for the terminal summary table and reports."""
        proposal, stats = self.proposal, self.observed.stats
        findings = proposal.findings
        observations = self.observed.observations
        dropped = int(observations.loc[observations["verdict"] == DROPPED, "count"].sum())
        rules = sum(len(p.manifest["spec"].get(d, [])) for p in proposal.policies for d in ("ingress", "egress"))
        unresolved = findings.not_expressed["reason"].str.contains("unknown|unresolved").sum()
        rows = [
            ("sources", str(len(stats.sources))),
            ("lines read", f"{stats.lines:,}"),
            ("flows", f"{stats.flows:,}"),
            ("duplicate flows dropped", f"{stats.duplicates:,}"),
            ("flows skipped (not connection traffic)", f"{sum(stats.skipped.values()):,}"),
            ("lines skipped (malformed)", f"{stats.bad.count:,}"),
            ("lost events (ring buffer overflow)", f"{stats.events_lost:,}"),
            ("unoriented flows (not used)", f"{stats.unoriented:,}"),
            (
                "dropped flows",
                f"{dropped:,}" + (" (allowed)" if self.options.include_dropped else " (reported only)"),
            ),
            ("managed namespaces", str(len(proposal.managed_namespaces))),
            ("workloads with policies", str(sum(1 for p in proposal.policies if p.workload))),
            ("edges allowed", str(len(proposal.edges))),
            ("policies", str(len(proposal.policies))),
            ("rules", str(rules)),
            ("host ingress edges (kubelet probes, no rule)", str(len(findings.host_ingress))),
            ("edges not expressed", str(len(findings.not_expressed))),
            ("unresolved endpoints", str(int(unresolved))),
            ("ambiguous selectors", str(len(findings.ambiguous_selectors))),
        ]
        return rows


def recommend(observed: ObservationSet, options: SynthesisOptions | None = None) -> Recommendation:
    """Synthesize the least-privilege NetworkPolicy set for the observed traffic."""
    options = options or SynthesisOptions()
    proposal = synthesize(observed.observations, observed.pods, observed.dns_names, options)
    return Recommendation(observed, proposal, options)


def render_yaml(proposal: Proposal, *, explain: bool = False) -> str:
    """All proposed policies as one YAML stream (with evidence comments when `explain`)."""
    return proposal_text(proposal, "yaml", explain=explain)


def write_policies(
    proposal: Proposal, directory: str, *, output_format: str = "yaml", explain: bool = False
) -> list[str]:
    """Write one file per namespace and a kustomization.yaml into `directory`."""
    return write_proposal(proposal, directory, output_format=output_format, explain=explain)
