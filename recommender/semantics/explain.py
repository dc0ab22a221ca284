"""Verdicts and their evidence, as data. Rendering only formats; it never evaluates again.

`PairResult` is what the evaluator computes once per (client, server) class pair: the
client's egress side and the server's ingress side, each with the rules whose peers match
and what each allows. `Decision` is one connection's verdict drawn from it; `Attribution`
splits the allowed connections by the rules that allow them. `explain_targets` shows the
compiled policies, i.e. what the evaluator understood rather than what the YAML said.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from recommender.semantics.connections import ConnectionSet, Protocol
from recommender.semantics.matcher import Action, RuleRef, Target, Tier
from recommender.semantics.policies import Direction

_VERBS = {Action.ALLOW: "allows", Action.DENY: "denies", Action.PASS: "passes"}


class Isolation(StrEnum):
    NOT_A_POD = "not a pod"
    NOT_SELECTED = "not selected"
    ISOLATED = "isolated"
    EXEMPT = "exempt"
    """The dataplane allows this side whatever the policies say (the profile's rule)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A rule whose peers match the other endpoint, and what it allows (or denies, or passes)."""

    rule: RuleRef
    connections: ConnectionSet
    action: Action = Action.ALLOW
    tier: Tier = Tier.NETWORK_POLICY

    def __str__(self) -> str:
        return f"{self.rule} {_VERBS[self.action]} {self.connections}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Which part of some traffic one side allows, and the rules that decided each part."""

    allowed: ConnectionSet
    allowed_by: tuple[RuleRef, ...] = ()
    denied_by: tuple[RuleRef, ...] = ()


@dataclass(frozen=True, slots=True)
class DirectionResult:
    """One side of a pair: egress on the client or ingress on the server.

    `policies` are the policies isolating the subject in this direction; `grants` are the
    rules selecting the subject whose peers match the other endpoint, in precedence order
    (tier, priority, rule). `reason` says why an exempt side is allowed; `notes` name the
    profile rules that kept a rule from matching (an ipBlock that may not select a node).
    """

    direction: Direction
    isolation: Isolation
    policies: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def isolated(self) -> bool:
        return self.isolation is Isolation.ISOLATED

    @property
    def connections(self) -> ConnectionSet:
        if not self.grants:
            return ConnectionSet.none() if self.isolated else ConnectionSet.all()
        return self.resolve(ConnectionSet.all()).allowed

    def resolve(self, traffic: ConnectionSet) -> Resolution:
        """The part of `traffic` this side allows: Admin tier first (Accept, Deny or Pass decide
        in order), then NetworkPolicy and Cilium policy (allows, minus denies, if isolated),
        then Baseline for what no NetworkPolicy decided; the rest is allowed."""
        if self.isolation in (Isolation.NOT_A_POD, Isolation.EXEMPT):
            return Resolution(traffic)
        allowed, pending, passed = ConnectionSet.none(), traffic, ConnectionSet.none()
        allowed_by: list[RuleRef] = []
        denied_by: list[RuleRef] = []
        for grant in self._tier(Tier.ADMIN):
            part = grant.connections & pending
            if part:
                pending -= part
                if grant.action is Action.ALLOW:
                    allowed, allowed_by = allowed | part, [*allowed_by, grant.rule]
                elif grant.action is Action.DENY:
                    denied_by.append(grant.rule)
                else:
                    passed |= part
        pending |= passed
        for grant in self._tier(Tier.NETWORK_POLICY):
            if grant.action is Action.DENY and grant.connections & pending:
                pending -= grant.connections
                denied_by.append(grant.rule)
        if self.isolated:
            for grant in self._tier(Tier.NETWORK_POLICY):
                part = grant.connections & pending
                if grant.action is Action.ALLOW and part:
                    allowed, allowed_by = allowed | part, [*allowed_by, grant.rule]
            return Resolution(allowed, tuple(allowed_by), tuple(denied_by))
        for grant in self._tier(Tier.BASELINE):
            part = grant.connections & pending
            if part:
                pending -= part
                if grant.action is Action.DENY:
                    denied_by.append(grant.rule)
                else:  # Pass leaves it to the default: allowed
                    allowed = allowed | part
                    allowed_by += [grant.rule] if grant.action is Action.ALLOW else []
        return Resolution(allowed | pending, tuple(allowed_by), tuple(denied_by))

    def _tier(self, tier: Tier) -> tuple[Grant, ...]:
        return tuple(grant for grant in self.grants if grant.tier is tier)

    def verdict(self, subject: str, protocol: str, port: int | None) -> SideVerdict:
        """This side's verdict on one connection; `subject` names the client or server."""
        resolution = self.resolve(_single(protocol, port))
        return SideVerdict(
            direction=self.direction,
            subject=subject,
            traffic=_traffic(protocol, port),
            isolation=self.isolation,
            policies=self.policies,
            allowed_by=resolution.allowed_by,
            near_misses=tuple(
                g for g in self.grants if g.action is Action.ALLOW and g.rule not in resolution.allowed_by
            ),
            allowed=bool(resolution.allowed),
            denied_by=resolution.denied_by,
            reason=self.reason,
            notes=self.notes,
        )


@dataclass(frozen=True, slots=True)
class SideVerdict:
    """One side's verdict on one connection, with the rules that allowed it or why not.

    `near_misses` are allow rules whose peers match but whose ports do not cover the traffic
    (or whose part a deny took); `denied_by` the deny rules (Cilium deny, ClusterNetworkPolicy
    Deny) that decided it.
    """

    direction: Direction
    subject: str
    traffic: str
    isolation: Isolation
    policies: tuple[str, ...]
    allowed_by: tuple[RuleRef, ...]
    near_misses: tuple[Grant, ...]
    allowed: bool
    denied_by: tuple[RuleRef, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        direction = self.direction.lower()
        match self.isolation:
            case Isolation.EXEMPT:
                return f"{direction} allowed: {self.reason}"
            case Isolation.NOT_A_POD:
                return f"{direction} allowed: {self.subject} is not a pod"
            case _ if self.allowed and self.allowed_by:
                return f"{direction} allowed by {', '.join(map(str, self.allowed_by))}"
            case Isolation.NOT_SELECTED if self.allowed:
                return f"{direction} allowed: {self.subject} is not {direction}-isolated"
            case _ if self.denied_by:
                text = f"{direction} DENIED by {', '.join(map(str, self.denied_by))}"
            case Isolation.ISOLATED | Isolation.NOT_SELECTED:
                policies = ", ".join(self.policies)
                text = (
                    f"{direction} DENIED: {self.subject} is {direction}-isolated by [{policies}];"
                    f" no {direction} rule of [{policies}] matches {self.traffic}"
                )
                misses = "; ".join(map(str, self.near_misses))
                text = f"{text} (peer matched: {misses})" if misses else text
            case _:
                assert_never(self.isolation)
        return text + "".join(f" [{note}]" for note in self.notes)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether `client` may open `traffic` to `server`: both sides must allow it."""

    client: str
    server: str
    traffic: str
    egress: SideVerdict
    ingress: SideVerdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def reasons(self) -> str:
        """Both sides' verdicts, without the connection: `egress allowed by ... | ingress DENIED: ...`."""
        return f"{self.egress} | {self.ingress}"

    def __str__(self) -> str:
        verdict = "ALLOWED" if self.allowed else "DENIED"
        return f"{verdict} {self.client} -> {self.server} {self.traffic}: {self.reasons}"


@dataclass(frozen=True, slots=True)
class Attribution:
    """A part of the allowed connections and the rules allowing it on each side.

    An empty tuple means that side is not isolated.
    """

    connections: ConnectionSet
    egress: tuple[RuleRef, ...]
    ingress: tuple[RuleRef, ...]

    def __str__(self) -> str:
        def side(rules: tuple[RuleRef, ...]) -> str:
            return ", ".join(map(str, rules)) or "not isolated"

        return f"{self.connections}: egress {side(self.egress)} | ingress {side(self.ingress)}"


@dataclass(frozen=True, slots=True)
class PairResult:
    """Everything policies say about one (client, server) pair."""

    egress: DirectionResult
    ingress: DirectionResult

    @property
    def connections(self) -> ConnectionSet:
        return self.egress.connections & self.ingress.connections

    def decide(self, client: str, server: str, protocol: str, port: int | None) -> Decision:
        return Decision(
            client=client,
            server=server,
            traffic=_traffic(protocol, port),
            egress=self.egress.verdict(client, protocol, port),
            ingress=self.ingress.verdict(server, protocol, port),
        )

    def attribution(self) -> tuple[Attribution, ...]:
        """The allowed connections split into parts allowed by the same rules on each side."""
        parts = [Attribution(self.connections, (), ())]
        for grant in self.egress.grants + self.ingress.grants:
            if grant.action is not Action.ALLOW:
                continue
            on_egress = grant.rule.direction is Direction.EGRESS
            refined = []
            for part in parts:
                inside = part.connections & grant.connections
                if inside:
                    egress = (*part.egress, grant.rule) if on_egress else part.egress
                    ingress = part.ingress if on_egress else (*part.ingress, grant.rule)
                    refined.append(Attribution(inside, egress, ingress))
                outside = part.connections - grant.connections
                if outside:
                    refined.append(Attribution(outside, part.egress, part.ingress))
            parts = refined
        return tuple(sorted(parts, key=str))


def _single(protocol: str, port: int | None) -> ConnectionSet:
    known = Protocol.lookup(protocol)
    return ConnectionSet.other_protocols() if known is None else ConnectionSet.ports(known, port)


def _traffic(protocol: str, port: int | None) -> str:
    known = Protocol.lookup(protocol)
    return protocol.upper() if known is None else f"{known}/{port}"


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One rule of the compiled model, or a target without rules (it only isolates)."""

    direction: Direction
    subject: str
    policies: tuple[str, ...]
    rule: RuleRef | None
    peers: str
    ports: str

    def __str__(self) -> str:
        source = str(self.rule) if self.rule else f"[{', '.join(self.policies)}]"
        return f"{self.direction} {self.subject} {source}: {self.peers} on {self.ports}"


def explain_targets(targets: Iterable[Target]) -> tuple[TargetRow, ...]:
    """A table of the compiled targets, one row per rule, in the targets' sorted order."""
    rows = []
    for target in targets:
        namespace = target.namespace or f"namespaces[{target.namespaces}]"
        subject = f"{namespace}[{target.subject}]"
        rows += [
            TargetRow(
                target.direction,
                subject,
                target.policies,
                rule.ref,
                " or ".join(map(str, rule.peers)),
                ", ".join(map(str, rule.ports)),
            )
            for rule in target.rules
        ]
        if not target.rules:
            rows.append(TargetRow(target.direction, subject, target.policies, None, "no peer", "no port"))
    return tuple(rows)
