"""Errors of the recommender that a user can cause or must hear about; the CLI turns them into
one-line messages and exit codes."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class: a problem to report to the user, not a bug."""


class PolicyFileError(RecommenderError):
    """A policy file cannot be read or holds an invalid NetworkPolicy; names the file."""


class ReplayError(RecommenderError):
    """The proposal would break observed traffic. This is a bug of the synthesizer, never a warning."""

    def __init__(
        self, broken: list[str], headline: str = "the proposal would break {count} observed connection(s)"
    ) -> None:
        listing = "\n".join(f"  {line}" for line in broken[:50])
        more = f"\n  … and {len(broken) - 50} more" if len(broken) > 50 else ""
        super().__init__(f"{headline.format(count=len(broken))}:\n{listing}{more}")
        self.broken = broken
