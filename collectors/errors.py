"""Errors and non-fatal issues raised while reading observation sources."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class CollectorError(Exception):
    """A source cannot be read at all (missing file, unreachable server, unknown format)."""


class BadInputError(CollectorError):
    """One record of a source is malformed; names the file and the line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message

    def __reduce__(self) -> tuple:  # picklable, so that worker processes can raise it
        return (BadInputError, (self.path, self.line, self.message))


class OnError(StrEnum):
    """What to do with a malformed record: stop with an error, or skip it and count it."""

    FAIL = "fail"
    SKIP = "skip"


class BadRecords(msgspec.Struct, kw_only=True):
    """Skipped malformed records: a count and the first few locations, so nothing is lost silently."""

    on_error: OnError = OnError.FAIL
    count: int = 0
    examples: list[str] = msgspec.field(default_factory=list)
    max_examples: int = 20

    def report(self, path: str, line: int, message: str) -> None:
        """Raise `BadInputError` in fail mode; otherwise count the record and keep an example."""
        if self.on_error is OnError.FAIL:
            raise BadInputError(path, line, message)
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{path}:{line}: {message}")

    def merge(self, other: BadRecords) -> None:
        self.count += other.count
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.examples[:room])
