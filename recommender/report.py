"""The review of a new observation window against the store's history, as data.

What is new since the last run, which paths went quiet, what the policies in force would break or
never use, the recommendation for the running picture and how it changed since the last run, and
how settled the picture is. `report_render` formats a `Report`; the `report` command exits with
`Report.exit_status`.

A window with no flows, no connection, or far fewer flows than the store's windows usually have is a
gap: stored, but no evidence that nothing changed. The picture is settled when the last
`settled_after` windows were none of them a gap, brought no new path, and together observed every
namespace the recommendation manages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from statistics import median
from typing import Any

import pandas as pd
import yaml

from collectors.records import POD, ObservationSet
from recommender.graph import EDGE_KEY, build_edges
from recommender.recommendation import Recommendation
from recommender.render import ordered_policies, proposal_text
from recommender.semantics import CIDR_MATCH_NODES, Direction, NetworkPolicy, parse_policies
from recommender.semantics.matcher import RuleMatcher, compile_policies
from recommender.store import ObservationStore, Window
from recommender.synthesis import SynthesisOptions
from recommender.verification import Drift, rule_row

PATH_TYPES = {
    "client": str,
    "server": str,
    "protocol": str,
    "port": "int64",
    "count": "int64",
    "first_seen": "datetime64[ns, UTC]",
    "last_seen": "datetime64[ns, UTC]",
    "verdicts": str,
}
PATH_COLUMNS = list(PATH_TYPES)
BREAK_COLUMNS = [*EDGE_KEY, "count", "decision"]
RULE_COLUMNS = ["namespace", "policy", "direction", "rule", "text"]
CHANGE_COLUMNS = ["policy", "change", "detail"]
SETTLING_COLUMNS = ["window", "start", "end", "flows", "paths", "new_paths", "gap"]
NOTHING_NEW, DRIFT, GAP = 0, 3, 4
"""Exit statuses of the `report` command (1 and 2 are errors); a gap comes before drift."""
SHOWN_NAMESPACES = 10
"""Unobserved namespaces named in a reason; the rest are counted."""


@dataclass(frozen=True)
class ReportOptions:
    retain: timedelta | None = timedelta(days=30)
    """Windows that ended longer than this before the newest one are dropped (None: keep all)."""
    stale_after: timedelta = timedelta(days=7)
    """A path not seen for this long before the newest window's end is reported as stale."""
    settled_after: int = 3
    """The picture is settled when this many windows in a row had enough flows and brought no new path."""
    gap_below: float = 0.1
    """A window with fewer flows than this fraction of the median of the earlier windows is a gap."""
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    cni: str | None = None
    """The CNI profile the policies in force and the recommendation are evaluated under (default: by the
    input, `recommender.api.dataplane_profile`); it replaces `synthesis.cni`."""
    cni_options: tuple[str, ...] = ()

    def synthesis_options(self) -> SynthesisOptions:
        """`synthesis` under this report's dataplane (the policies in force are evaluated under the same)."""
        return replace(self.synthesis, cni=self.cni, cidr_match_nodes=CIDR_MATCH_NODES in self.cni_options)


@dataclass(frozen=True)
class NamedWindows:
    """The observations a review compares, each named by the inventory once: this window, the earlier
    windows kept (merged; None on the first run) and the running picture (both together)."""

    pending: Window
    """This window, before its paths are counted."""
    history: list[Window]
    window: ObservationSet
    earlier: ObservationSet | None
    picture: ObservationSet


@dataclass
class PolicyComparison:
    """The running picture against the policies in force."""

    source: str
    """Where the policies come from: a path, or the cluster."""
    rules: int
    would_break: pd.DataFrame
    """Observed connections the policies deny (`BREAK_COLUMNS`): they break on enforcement."""
    unused_rules: pd.DataFrame
    """Rules no observed connection used in the retention period (`RULE_COLUMNS`): candidates to remove."""
    cni: str = "kubernetes"
    """The dataplane profile the policies were evaluated under."""


@dataclass
class Report:
    window: Window
    """This run's window, with its paths and new paths counted."""
    history: list[Window]
    """The earlier windows the store keeps (within the retention period)."""
    options: ReportOptions
    new_paths: pd.DataFrame
    """Paths (`PATH_COLUMNS`) of this window that no earlier window had; counts and times are this window's."""
    stale_paths: pd.DataFrame
    """Paths of the running picture not seen for `options.stale_after`."""
    comparison: PolicyComparison | None
    """None when there is no policy set to compare with (no inventory, no --policies)."""
    recommendation: Recommendation
    recommendation_yaml: str
    """The recommended policies as stored for the next run's comparison (no evidence comments)."""
    changes: pd.DataFrame | None
    """The recommendation against the last run's (`CHANGE_COLUMNS`); None on the first run."""
    unobserved_namespaces: list[str] = field(default_factory=list)
    """Namespaces the recommendation manages that none of the last `settled_after` windows observed."""

    @property
    def first_run(self) -> bool:
        """No earlier window kept has evidence (the store is empty, or holds only gaps): this window is the
        baseline, and everything in it is new."""
        return all(window.gap for window in self.history)

    @property
    def recent(self) -> list[Window]:
        """The last `settled_after` windows, this one included, oldest first."""
        return [*self.history, self.window][-self.options.settled_after :]

    @property
    def settling(self) -> pd.DataFrame:
        """Every kept window with its flows, paths, new paths and gap, oldest first (`SETTLING_COLUMNS`)."""
        rows = [(w.id, w.start, w.end, w.flows, w.paths, w.new_paths, w.gap) for w in [*self.history, self.window]]
        return pd.DataFrame(rows, columns=SETTLING_COLUMNS)

    def unsettled_reasons(self) -> list[str]:
        """Why the picture is not settled yet, one unmet condition a line; empty when it is settled."""
        needed, recent = self.options.settled_after, self.recent
        reasons = []
        if len(recent) < needed:
            reasons.append(f"{len(recent)} of the {needed} windows needed observed so far")
        reasons += [f"window {w.id} is a gap: {w.gap}" for w in recent if w.gap]
        reasons += [f"window {w.id} brought {w.new_paths} new path(s)" for w in recent if w.new_paths]
        if self.unobserved_namespaces:
            names = self.unobserved_namespaces
            more = f" and {len(names) - SHOWN_NAMESPACES} more" if len(names) > SHOWN_NAMESPACES else ""
            reasons.append(
                f"no traffic of managed namespace(s) {', '.join(names[:SHOWN_NAMESPACES])}{more} "
                f"in the last {len(recent)} window(s)"
            )
        return reasons

    @property
    def settled(self) -> bool:
        return not self.unsettled_reasons()

    def drift_reasons(self) -> list[str]:
        """Why this run found drift; empty when nothing needs a look. On the first run new paths and the
        recommendation are the baseline, not drift; connections that would break always are."""
        reasons = []
        if self.comparison is not None and len(self.comparison.would_break):
            reasons.append(f"{len(self.comparison.would_break)} observed connection(s) would break on enforcement")
        if not self.first_run and len(self.new_paths):
            reasons.append(f"{len(self.new_paths)} new path(s)")
        if not self.first_run and self.changes is not None and len(self.changes):
            reasons.append(f"the recommendation changed ({self.changes['policy'].nunique()} policies)")
        return reasons

    @property
    def drift(self) -> bool:
        return bool(self.drift_reasons())

    def warnings(self) -> list[str]:
        """What makes this window's evidence doubtful, for every format and the terminal."""
        if not self.window.gap:
            return []
        return [
            f"window {self.window.id} is a gap ({self.window.gap}): it is stored, but it is no evidence that "
            "nothing changed and does not count towards a settled picture. Check the observation: the relay's "
            f"address and filters (--namespace, --verdict), or the input files (exit status {GAP})"
        ]

    @property
    def exit_status(self) -> int:
        """GAP when this window is a gap (the observation itself needs a look first), else DRIFT or NOTHING_NEW."""
        return GAP if self.window.gap else DRIFT if self.drift else NOTHING_NEW


def assemble_report(
    store: ObservationStore,
    observed: ObservationSet,
    *,
    windows: NamedWindows,
    recommendation: Recommendation,
    drift: Drift | None,
    policy_source: str,
    options: ReportOptions,
) -> Report:
    """The report of `observed` as the store's next window, without changing the store, from the
    observations named by the inventory (`windows`), the recommendation for the running picture and
    the policies in force evaluated over it (`drift`; None when there are none)."""
    history = windows.history
    window_paths = _paths(windows.window)
    seen_before = _paths(windows.earlier) if windows.earlier is not None else window_paths.iloc[0:0]
    new_paths = window_paths[~_keys(window_paths).isin(_keys(seen_before))]
    window = replace(windows.pending, paths=len(window_paths), new_paths=len(new_paths))
    window = replace(window, gap=_gap(window, history, options.gap_below))
    picture_paths = _paths(windows.picture)
    stale_paths = picture_paths[picture_paths["last_seen"] < pd.Timestamp(windows.pending.end) - options.stale_after]
    previous = store.recommendation(store.windows[-1]) if store.windows else None
    manifests = [plan.manifest for plan in ordered_policies(recommendation.proposal)]
    recent = history[-(options.settled_after - 1) :] if options.settled_after > 1 else []  # with this window
    observed_namespaces = set().union(*(_namespaces(store.observations(w)) for w in recent), _namespaces(observed))
    return Report(
        window=window,
        history=history,
        options=options,
        new_paths=new_paths.reset_index(drop=True),
        stale_paths=stale_paths.reset_index(drop=True),
        comparison=_compare(drift, policy_source) if drift is not None else None,
        recommendation=recommendation,
        recommendation_yaml=proposal_text(recommendation.proposal, "yaml"),
        changes=None if previous is None else recommendation_changes(yaml.safe_load_all(previous), manifests),
        unobserved_namespaces=sorted(set(recommendation.proposal.managed_namespaces) - observed_namespaces),
    )


def _gap(window: Window, history: Sequence[Window], below: float) -> str:
    """Why `window` is too thin to count as evidence, or "": no flows, no connection, or fewer flows than
    `below` times the median of the earlier windows that were not gaps."""
    if not window.flows:
        return "no flows"
    if not window.paths:
        return f"no connection in its {window.flows:,} flows"
    usual = median([w.flows for w in history if not w.gap] or [0])
    if window.flows < below * usual:
        return f"{window.flows:,} flows, fewer than {below:.0%} of the median of the earlier windows ({usual:,.0f})"
    return ""


def _namespaces(observed: ObservationSet) -> set[str]:
    """The namespaces of the pods that sent or received the observed traffic."""
    seen = observed.observations
    return {
        namespace
        for side in ("client", "server")
        for namespace in seen.loc[seen[f"{side}_entity"] == POD, f"{side}_namespace"]
    }


def _paths(observed: ObservationSet) -> pd.DataFrame:
    return build_edges(observed.observations)[PATH_COLUMNS].astype(PATH_TYPES)  # typed even when empty


def _keys(paths: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(paths[EDGE_KEY])


def _compare(drift: Drift, source: str) -> PolicyComparison:
    texts = {
        rule_row(rule.ref): _rule_text(rule) for target in drift.replayed.evaluator.targets for rule in target.rules
    }
    unused = drift.unused_rules
    text = [texts[(r.namespace, r.policy, r.direction, r.rule)] for r in unused.itertuples(index=False)]
    return PolicyComparison(
        source=source,
        rules=len(drift.rules),
        would_break=drift.would_break[BREAK_COLUMNS],
        unused_rules=unused.assign(text=text)[RULE_COLUMNS],
        cni=str(drift.replayed.profile),
    )


def _rule_text(rule: RuleMatcher) -> str:
    return f"{', '.join(map(str, rule.peers))} on {', '.join(map(str, rule.ports))}"


def recommendation_changes(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Policies added, removed or changed between two policy sets, matched by namespace/name; a changed
    policy has one row per change: its podSelector, its policyTypes, a rule removed (`-`) or added (`+`)."""
    old = {policy.id: policy for policy in parse_policies(before)}
    new = {policy.id: policy for policy in parse_policies(after)}
    rows = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            rows.append((name, "added", ""))
        elif name not in new:
            rows.append((name, "removed", ""))
        else:
            rows += [(name, "changed", detail) for detail in _policy_changes(old[name], new[name])]
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def _policy_changes(old: NetworkPolicy, new: NetworkPolicy) -> list[str]:
    details = []
    if old.pod_selector != new.pod_selector:
        details.append(f"podSelector [{old.pod_selector}] → [{new.pod_selector}]")
    if old.policy_types != new.policy_types:
        details.append(f"policyTypes {sorted(old.policy_types)} → {sorted(new.policy_types)}")
    for direction in (Direction.INGRESS, Direction.EGRESS):
        before, after = (Counter(_direction_texts(policy, direction)) for policy in (old, new))
        details += [f"- {direction.lower()} {text}" for text in sorted((before - after).elements())]
        details += [f"+ {direction.lower()} {text}" for text in sorted((after - before).elements())]
    return details


def _direction_texts(policy: NetworkPolicy, direction: Direction) -> list[str]:
    return [
        _rule_text(rule)
        for target in compile_policies([policy])
        if target.direction is direction
        for rule in target.rules
    ]
