"""Small builders for observation tables, named for what they describe."""

from __future__ import annotations

import pandas as pd

from collectors.aggregate import combine_observations
from collectors.records import OBSERVATION_COLUMNS, POD, ObservationSet, ReadStats

WHEN = pd.Timestamp("2026-11-02T09:00:00Z")


def endpoint(spec: str) -> dict[str, str]:
    """`ns/workload:app=x,tier=y` for a pod, `world:203.0.113.1` (or host:, remote-node:…) otherwise."""
    if "/" in spec:
        namespace, rest = spec.split("/", 1)
        workload, _, labels = rest.partition(":")
        return {
            "entity": POD,
            "namespace": namespace,
            "workload": workload,
            "kind": "Deployment",
            "labels": labels or f"app={workload}",
            "ip": "",
            "cluster": "",
        }
    entity, _, ip = spec.partition(":")
    return {"entity": entity, "namespace": "", "workload": "", "kind": "", "labels": "", "ip": ip, "cluster": ""}


def observations(*rows: tuple) -> pd.DataFrame:
    """Rows of (client spec, server spec, protocol, port[, verdict[, count[, drop reason]]])."""
    records = []
    for row in rows:
        client, server, protocol, port, *rest = row
        verdict = rest[0] if rest else "FORWARDED"
        count = rest[1] if len(rest) > 1 else 1
        record = {f"client_{k}": v for k, v in endpoint(client).items()}
        record |= {f"server_{k}": v for k, v in endpoint(server).items()}
        record |= {
            "protocol": protocol,
            "port": port,
            "verdict": verdict,
            "count": count,
            "first_seen": WHEN,
            "last_seen": WHEN,
            "client_pod": f"{record['client_workload']}-0" if record["client_workload"] else "",
            "server_pod": f"{record['server_workload']}-0" if record["server_workload"] else "",
            "allowed_by": "",
            "drop_reasons": rest[2] if len(rest) > 2 else "",
            "services": "",
        }
        records.append(record)
    return combine_observations(pd.DataFrame(records, columns=list(OBSERVATION_COLUMNS)))


def observation_set(frame: pd.DataFrame) -> ObservationSet:
    """An ObservationSet of an observations table alone (no pods table, no read statistics)."""
    return ObservationSet(
        frame,
        frame.iloc[0:0][[]].assign(cluster="", namespace="", pod="", workload="", kind="", labels=""),
        frame.iloc[0:0],
        {},
        ReadStats(),
    )
