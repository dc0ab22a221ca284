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
from recommender.semantics.matcher import RuleRef, Target
from recommender.semantics.policies import Direction


class Isolation(StrEnum):
    NOT_A_POD = "not a pod"
    NOT_SELECTED = "not selected"
    ISOLATED = "isolated"


@dataclass(frozen=True, slots=True)
class Grant:
    """A rule whose peers match the other endpoint, and what it allows to the server."""

    rule: RuleRef
    connections: ConnectionSet

    def __str__(self) -> str:
        return f"{self.rule} allows {self.connections}"


@dataclass(frozen=True, slots=True)
class DirectionResult:
    """One side of a pair: egress on the client or ingress on the server.

    `policies` are the policies isolating the subject in this direction; `grants` are the
    rules of those policies whose peers match the other endpoint.
    """

    direction: Direction
    isolation: Isolation
    policies: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()

    @property
    def isolated(self) -> bool:
        return self.isolation is Isolation.ISOLATED

    @property
    def connections(self) -> ConnectionSet:
        if not self.isolated:
            return ConnectionSet.all()
        return ConnectionSet.union_all(grant.connections for grant in self.grants)

    def verdict(self, subject: str, protocol: str, port: int | None) -> SideVerdict:
        """This side's verdict on one connection; `subject` names the client or server."""
        allowed_by = tuple(g.rule for g in self.grants if g.connections.contains(protocol, port))
        return SideVerdict(
            direction=self.direction,
            subject=subject,
            traffic=_traffic(protocol, port),
            isolation=self.isolation,
            policies=self.policies,
            allowed_by=allowed_by,
            near_misses=tuple(g for g in self.grants if g.rule not in allowed_by),
        )


@dataclass(frozen=True, slots=True)
class SideVerdict:
    """One side's verdict on one connection, with the rules that allowed it or why not.

    `near_misses` are rules whose peers match but whose ports do not cover the traffic.
    """

    direction: Direction
    subject: str
    traffic: str
    isolation: Isolation
    policies: tuple[str, ...]
    allowed_by: tuple[RuleRef, ...]
    near_misses: tuple[Grant, ...]

    @property
    def allowed(self) -> bool:
        return self.isolation is not Isolation.ISOLATED or bool(self.allowed_by)

    def __str__(self) -> str:
        direction = self.direction.lower()
        match self.isolation:
            case Isolation.NOT_A_POD:
                return f"{direction} allowed: {self.subject} is not a pod"
            case Isolation.NOT_SELECTED:
                return f"{direction} allowed: {self.subject} is not {direction}-isolated"
            case Isolation.ISOLATED if self.allowed:
                return f"{direction} allowed by {', '.join(map(str, self.allowed_by))}"
            case Isolation.ISOLATED:
                policies = ", ".join(self.policies)
                text = (
                    f"{direction} DENIED: {self.subject} is {direction}-isolated by [{policies}];"
                    f" no {direction} rule of [{policies}] matches {self.traffic}"
                )
                misses = "; ".join(map(str, self.near_misses))
                return f"{text} (peer matched: {misses})" if misses else text
            case _:
                assert_never(self.isolation)


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

    def __str__(self) -> str:
        verdict = "ALLOWED" if self.allowed else "DENIED"
        flow = f"{self.client} -> {self.server} {self.traffic}"
        return f"{verdict} {flow}: {self.egress} | {self.ingress}"


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
        subject = f"{target.namespace}[{target.subject}]"
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
