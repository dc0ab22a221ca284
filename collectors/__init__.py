"""Collectors: observation sources (Hubble files, conntrack dumps, saved observations) → one `ObservationSet`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collectors.conntrack import is_conntrack
from collectors.conntrack_observations import read_conntrack
from collectors.errors import CollectorError, OnError
from collectors.flow_filter import FlowFilter
from collectors.hubble import read_hubble_files
from collectors.inventory import Inventory
from collectors.parquet import is_parquet, load_observation_file, merge_observation_sets
from collectors.records import ObservationSet
from collectors.sources import STDIN, expand_inputs

ENGINES = ("local", "dask")


def read_observations(
    sources: Sequence[str],
    *,
    on_error: OnError = OnError.FAIL,
    progress: Callable[[int], None] | None = None,
    jobs: int = 1,
    engine: str = "local",
    scheduler: str | None = None,
    inventory: Inventory | None = None,
    flow_filter: FlowFilter | None = None,
) -> ObservationSet:
    """Read every source, whatever its format, into one observation set.

    Saved observation files (Parquet, from `collect`) are loaded as they are; conntrack dumps (any
    format, recognised by their first line) are read together as one snapshot of the cluster's nodes,
    their IPs named with `inventory`, which they need; all other files are read together as Hubble
    flows, so that orientation can correlate events across them.

    `engine="dask"` reads Hubble files (paths or fsspec URLs) on the Dask cluster at `scheduler`, or on
    a local cluster of `jobs` workers: see `collectors.dask_engine`.

    `flow_filter` keeps what matches the `hubble observe` filters (`collectors.flow_filter`); its time
    window applies to the flows of Hubble files as they are read.
    """
    observed = _read(sources, on_error, progress, jobs, engine, scheduler, inventory, flow_filter)
    return flow_filter.apply(observed) if flow_filter is not None else observed


def _read(
    sources: Sequence[str],
    on_error: OnError,
    progress: Callable[[int], None] | None,
    jobs: int,
    engine: str,
    scheduler: str | None,
    inventory: Inventory | None,
    flow_filter: FlowFilter | None,
) -> ObservationSet:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if engine == "dask":
        try:
            from collectors.dask_engine import read_with_dask
        except ImportError as exc:  # Dask is an optional dependency
            raise CollectorError(f"the Dask engine needs: pip install 'netpol-recommender[dask]' ({exc})") from exc
        _refuse_window(flow_filter, "the Dask engine")
        return read_with_dask(sources, on_error=on_error, progress=progress, scheduler=scheduler, workers=jobs)
    saved: list[str] = []
    dumps: list[str] = []
    flows: list[str] = []
    for path in expand_inputs(sources):  # is_conntrack never sniffs stdin
        kind = saved if path != STDIN and is_parquet(path) else dumps if is_conntrack(path) else flows
        kind.append(path)
    if saved or dumps:
        _refuse_window(flow_filter, (saved + dumps)[0])
    sets = [load_observation_file(path) for path in saved]
    if dumps:
        if inventory is None:
            raise CollectorError(
                f"{dumps[0]}: a conntrack dump only has IP addresses; name them with the cluster inventory "
                "(--inventory FILE, or --cluster to read it from the cluster)"
            )
        sets.insert(0, read_conntrack(dumps, inventory, on_error=on_error, progress=progress))
    if flows or not sets:
        sets.insert(0, read_hubble_files(flows, on_error=on_error, progress=progress, jobs=jobs, window=flow_filter))
    return sets[0] if len(sets) == 1 else merge_observation_sets(sets)


def _refuse_window(flow_filter: FlowFilter | None, source: str) -> None:
    if flow_filter is not None and flow_filter.windowed:
        raise CollectorError(
            f"{source}: --since/--until select flows as Hubble files are read; saved observations and "
            "conntrack dumps hold connections already aggregated (and the Dask engine reads no window)"
        )
