"""Observation sets saved as Parquet: `collect -o observations.parquet`, and read back by `recommend`.

The file is the observations table itself (readable with `pandas.read_parquet`); the known pods,
DNS names, unoriented traffic and read statistics travel in the file's key-value metadata, with a
format version so that files from other versions of the tool are read or refused clearly.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from collectors.aggregate import concat_observations, normalize_dtypes
from collectors.errors import CollectorError
from collectors.records import POD_COLUMNS, ObservationSet, ReadStats, stats_from_dict

FORMAT = 1
METADATA_KEY = b"netpol-recommender"
PARQUET_MAGIC = b"PAR1"


def is_parquet(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def save_observations(observed: ObservationSet, path: str) -> None:
    """Write atomically: a crash leaves either the old file or the new one, never half of one."""
    table = pa.Table.from_pandas(normalize_dtypes(observed.observations), preserve_index=False)
    extra = {
        "format": FORMAT,
        "pods": observed.pods[list(POD_COLUMNS)].to_dict(orient="split")["data"],
        "dns_names": observed.dns_names,
        "pod_ips": {ip: [list(pod) for pod in pods] for ip, pods in observed.pod_ips.items()},
        "unoriented": _records(observed.unoriented),
        "stats": observed.stats.to_dict(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(extra)})
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".observations-", suffix=".parquet", dir=directory)
    os.close(handle)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _records(frame: pd.DataFrame) -> list[list]:
    return json.loads(frame.to_json(orient="split", date_format="iso", date_unit="ns"))["data"]


def load_observation_file(path: str) -> ObservationSet:
    """Read an observations file written by `save_observations`."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CollectorError(f"{path}: not a readable Parquet file ({exc})") from exc
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise CollectorError(f"{path}: a Parquet file, but not one written by netpol-recommender")
    extra = json.loads(raw)
    if extra.get("format") != FORMAT:
        raise CollectorError(
            f"{path}: observations format {extra.get('format')} is not supported by this version "
            f"(format {FORMAT}); re-collect, or read it with the version that wrote it"
        )
    observations = normalize_dtypes(table.to_pandas())
    columns = list(observations.columns)
    unoriented = normalize_dtypes(pd.DataFrame(extra["unoriented"], columns=columns)) if extra["unoriented"] else None
    return ObservationSet(
        observations=observations,
        pods=pd.DataFrame(extra["pods"], columns=list(POD_COLUMNS)),
        unoriented=unoriented if unoriented is not None else observations.iloc[0:0],
        dns_names={ip: tuple(names) for ip, names in extra["dns_names"].items()},
        stats=stats_from_dict(extra["stats"]),
        pod_ips={ip: tuple(tuple(pod) for pod in pods) for ip, pods in extra.get("pod_ips", {}).items()},
    )


def merge_observation_sets(sets: Iterable[ObservationSet]) -> ObservationSet:
    """Combine observation sets (files, windows, nodes) into one, as if read together."""
    sets = list(sets)
    stats = ReadStats()
    dns: dict[str, set[str]] = {}
    pod_ips: dict[str, set[tuple[str, str]]] = {}
    for observed in sets:
        stats.merge(observed.stats)
        for ip, names in observed.dns_names.items():
            dns.setdefault(ip, set()).update(names)
        for ip, pods in observed.pod_ips.items():
            pod_ips.setdefault(ip, set()).update(pods)
    pods = pd.concat([s.pods for s in sets], ignore_index=True).drop_duplicates(subset=["cluster", "namespace", "pod"])
    return ObservationSet(
        observations=concat_observations(s.observations for s in sets),
        pods=pods.sort_values(["cluster", "namespace", "pod"]).reset_index(drop=True),
        unoriented=concat_observations(s.unoriented for s in sets),
        dns_names={ip: tuple(sorted(names)) for ip, names in sorted(dns.items())},
        stats=stats,
        pod_ips={ip: tuple(sorted(pods)) for ip, pods in sorted(pod_ips.items())},
    )
