"""Errors raised while reading NetworkPolicies."""

from __future__ import annotations

from recommender.errors import RecommenderError


class InvalidPolicyError(RecommenderError, ValueError):
    """A policy is malformed; the message names its kind, the policy, the field and the reason."""

    def __init__(self, policy: str, field: str, reason: str, kind: str = "NetworkPolicy") -> None:
        super().__init__(f"{kind} {policy}: {field}: {reason}")
        self.kind = kind
        self.policy = policy
        self.field = field
        self.reason = reason
