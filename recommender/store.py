"""The observation store: a directory that scheduled runs add observation windows to.

    <store>/index.json                          the windows in order, with the store's format version
    <store>/windows/<id>.parquet                a window's aggregated observations (`collectors.parquet`)
    <store>/windows/<id>.recommendation.yaml    the recommendation made when the window was added
    <store>/lock                                held (`flock`) by the run changing the store: its pid, host

The index lists each window's id, start and end (the data's clock: its first and last flow), the
flows it read, the paths it saw, whether it was a gap (too few flows to count as evidence) and a
digest of its observations; the running picture is the merge of the windows. A window is stored
once and in order: observations already stored, or starting before the newest window ends, are
refused (their flows would be counted twice). Every file is
written under a temporary name and renamed into place, the index last: a run that dies before
renaming the index leaves the store as it was, and the next run removes the files it left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd

from collectors.parquet import load_observation_file, merge_observation_sets, save_observations
from collectors.records import ObservationSet
from recommender.errors import RecommenderError

FORMAT = 1
"""The index's format version. Adding fields keeps it (readers ignore fields they do not know);
changing or removing one bumps it, and other versions then refuse the store with a clear message."""
INDEX = "index.json"
LOCK = "lock"
WINDOWS = "windows"


class StoreError(RecommenderError):
    """The store cannot be read or written: not a store, another format version, or locked."""


@dataclass(frozen=True)
class Window:
    """One observation window: its id, its span on the data's clock, and what it saw."""

    id: str
    start: datetime
    end: datetime
    flows: int = 0
    paths: int = 0
    """Distinct (client, server, protocol, port) paths observed in the window."""
    new_paths: int = 0
    """Paths that no earlier window kept by the store had, when the window was added."""
    gap: str = ""
    """Why the window is a gap, too thin to count as evidence (no flows, far fewer than usual); "" if it is not."""
    digest: str = ""
    """A digest of the window's observations ("" without any): the same observations have the same digest."""

    @property
    def observations_file(self) -> str:
        return f"{WINDOWS}/{self.id}.parquet"

    @property
    def recommendation_file(self) -> str:
        return f"{WINDOWS}/{self.id}.recommendation.yaml"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "start": _timestamp(self.start),
            "end": _timestamp(self.end),
            "observations": self.observations_file,
            "recommendation": self.recommendation_file,
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Window:
        return cls(
            id=str(entry["id"]),
            start=datetime.fromisoformat(entry["start"]),
            end=datetime.fromisoformat(entry["end"]),
            flows=int(entry.get("flows", 0)),
            paths=int(entry.get("paths", 0)),
            new_paths=int(entry.get("new_paths", 0)),
            gap=str(entry.get("gap", "" if entry.get("flows") else "no flows")),
            digest=str(entry.get("digest", "")),
        )


class ObservationStore:
    """A store directory as its index describes it (read when opened; a missing directory is an empty store).

    Reading needs no lock: files are replaced atomically. Changing it does: use `locked_store`.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.windows: list[Window] = _read_index(directory)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def observations(self, window: Window) -> ObservationSet:
        return load_observation_file(self._path(window.observations_file))

    def picture(self, windows: Sequence[Window]) -> ObservationSet:
        """The running picture of `windows`: their observations merged (counts add up, first and last seen
        are the earliest and latest)."""
        return merge_observation_sets(self.observations(window) for window in windows)

    def recommendation(self, window: Window) -> str | None:
        """The recommendation stored with `window` (YAML), if any."""
        try:
            with open(self._path(window.recommendation_file), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def next_window(self, observed: ObservationSet) -> Window:
        """The window `observed` would be stored as: the next id, and the span of its flows' times (a window
        without flows starts and ends where the last one ended, or now for the first).

        Raises `StoreError` for observations the store already holds, or that start before the newest
        window ends: they would be counted twice.
        """
        number = int(self.windows[-1].id) + 1 if self.windows else 1
        seen = observed.observations
        if len(seen) and seen["first_seen"].notna().any():
            start, end = seen["first_seen"].min().to_pydatetime(), seen["last_seen"].max().to_pydatetime()
        else:
            start = end = self.windows[-1].end if self.windows else datetime.now(UTC).replace(microsecond=0)
        window = Window(f"{number:06d}", start, end, flows=observed.stats.flows, digest=_digest(seen))
        self._refuse_repeated(window)
        return window

    def _refuse_repeated(self, window: Window) -> None:
        if not window.digest:
            return  # nothing observed: a gap, never a repeat
        span = f"{_timestamp(window.start)} to {_timestamp(window.end)}"
        for stored in self.windows:
            if stored.digest == window.digest:
                raise StoreError(
                    f"the observations of this window ({span}) are those of window {stored.id}, already stored: "
                    "a window is added once. The store is left as it was"
                )
        observing = [stored for stored in self.windows if stored.digest or stored.paths]  # a gap's span is made up
        newest = observing[-1] if observing else None
        if newest is not None and window.start < newest.end:
            raise StoreError(
                f"this window ({span}, the flows' clock) starts before the newest stored window {newest.id} ends "
                f"({_timestamp(newest.end)}): it repeats or precedes stored flows, which would be counted twice. "
                "Add windows in order, each after the last; the store is left as it was"
            )

    def retained(self, newest: Window, retain: timedelta | None) -> list[Window]:
        """The stored windows kept next to `newest`: those that ended at most `retain` before it ended."""
        if retain is None:
            return list(self.windows)
        return [window for window in self.windows if window.end >= newest.end - retain]

    def append(
        self, window: Window, observed: ObservationSet, recommendation: str, retain: timedelta | None = None
    ) -> list[Window]:
        """Add a window (from `next_window`), drop the windows past `retain`, and return those kept.

        Call it while holding the lock (`locked_store`). The index is renamed into place last.
        """
        os.makedirs(self._path(WINDOWS), exist_ok=True)
        save_observations(observed, self._path(window.observations_file))
        write_atomically(self._path(window.recommendation_file), recommendation)
        kept = [*self.retained(window, retain), window]
        document = {"format": FORMAT, "written_by": _tool_version(), "windows": [w.to_dict() for w in kept]}
        write_atomically(self._path(INDEX), json.dumps(document, indent=2) + "\n")
        self.windows = kept
        self._remove_unlisted_files()
        return kept

    def _remove_unlisted_files(self) -> None:
        """Remove what the index does not list: dropped windows, and files of runs that died."""
        listed = {name for w in self.windows for name in (w.observations_file, w.recommendation_file)}
        present = [f"{WINDOWS}/{name}" for name in os.listdir(self._path(WINDOWS))]
        present += [name for name in os.listdir(self.directory) if name.startswith(f".{INDEX}-")]
        for name in present:
            if name not in listed:
                os.unlink(self._path(name))


@contextmanager
def locked_store(directory: str, timeout: float = 60.0) -> Iterator[ObservationStore]:
    """Open the store (created if missing) holding its lock; wait up to `timeout` seconds for another run.

    The lock is a `flock` on `<store>/lock`: the kernel releases it when its holder ends, however it
    ends, so a killed run never leaves the store locked. Raises `StoreError` naming the holder on timeout.
    """
    _check_is_store(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK)
    with open(path, "a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"store {directory} is in use by another run ({_holder(path)}); waited {timeout:g}s. "
                        "Runs of the same store take turns: try again when it has finished"
                    ) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": _timestamp(datetime.now(UTC))}
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        try:
            yield ObservationStore(directory)
        finally:
            handle.truncate(0)  # the next holder is named only once it has written itself
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(lock_path: str) -> str:
    """Who holds the lock, as its holder wrote it (it may not have written it yet)."""
    try:
        with open(lock_path, encoding="utf-8") as handle:
            holder = json.loads(handle.read())
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def write_atomically(path: str, text: str) -> None:
    """Write `text` to a temporary file next to `path`, flush it to disk, and rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates it private; these are for others to read
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _check_is_store(directory: str) -> None:
    """Refuse a directory that holds other things than a store, before creating anything in it."""
    if os.path.isdir(directory) and not os.path.exists(os.path.join(directory, INDEX)):
        foreign = sorted(set(os.listdir(directory)) - {LOCK, WINDOWS})
        if foreign:
            raise StoreError(
                f"{directory} is not an observation store (no {INDEX}) and is not empty "
                f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}): give an empty or new directory"
            )


def _read_index(directory: str) -> list[Window]:
    path = os.path.join(directory, INDEX)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read the store's index ({exc})") from exc
    found = document.get("format") if isinstance(document, dict) else None
    if not isinstance(found, int):
        raise StoreError(f"{path}: not the index of a netpol-recommender observation store (no format version)")
    if found != FORMAT:
        newer = found > FORMAT
        raise StoreError(
            f"store {directory} has format {found}, written by {document.get('written_by') or 'another version'}; "
            f"this version ({_tool_version()}) reads format {FORMAT}. "
            + (
                "Upgrade netpol-recommender to read it."
                if newer
                else "Read it with the version that wrote it, or start a new store."
            )
        )
    try:
        return [Window.from_dict(entry) for entry in document["windows"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: a window entry is malformed ({exc!r})") from exc


def _digest(observations: pd.DataFrame) -> str:
    """A digest of the observations' rows, in any order ("" for none)."""
    if not len(observations):
        return ""
    rows = np.sort(pd.util.hash_pandas_object(observations, index=False).to_numpy())
    return hashlib.sha256(rows.tobytes()).hexdigest()[:32]


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _tool_version() -> str:
    try:
        return f"netpol-recommender {version('netpol-recommender')}"
    except PackageNotFoundError:
        return "netpol-recommender (not installed)"
