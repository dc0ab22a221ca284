"""A recommendation: the proposal, the observations it was made from, the replay that proves it,
and the figures, warnings and findings of the run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from collectors.conntrack_observations import UNREPLIED, resolution_counts
from collectors.records import DROPPED, ObservationSet
from recommender.coverage import Coverage
from recommender.dns_allowance import DnsMode
from recommender.findings import Finding, FindingKind, collect_findings, count
from recommender.synthesis import CIDR_MATCH_NODES, Proposal, SynthesisOptions, wanted_observations
from recommender.verification import Check


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

    def rule_count(self) -> int:
        """The ingress and egress rules of every proposed policy."""
        return sum(
            len(plan.manifest["spec"].get(direction, []))
            for plan in self.proposal.policies
            for direction in ("ingress", "egress")
        )

    def summary(self) -> list[tuple[str, str]]:
        """The figures of the run, for the terminal summary table and reports."""
        proposal, stats = self.proposal, self.observed.stats
        findings = proposal.findings
        observations = self.observed.observations
        dropped = int(observations.loc[observations["verdict"] == DROPPED, "count"].sum())
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
            ("rules", str(self.rule_count())),
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
