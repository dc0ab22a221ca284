"""Workload-level traffic: the edges table and the networkx graph.

Observations are per endpoint (workload + labels, or entity + IP) and verdict; an edge is one
(client workload, server workload, protocol, port) with its counts, first/last seen and the verdicts
seen. World, host and node endpoints keep their IP: `world:203.0.113.10`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import pandas as pd

from collectors.aggregate import smallest_nonempty, union_of_sets
from collectors.records import POD

if TYPE_CHECKING:
    import networkx as nx

EDGE_KEY = ["client", "server", "protocol", "port"]
ENDPOINT_ATTRIBUTES = ["entity", "namespace", "workload", "kind", "ip"]
EDGE_COLUMNS = [
    *EDGE_KEY,
    *(f"client_{name}" for name in ENDPOINT_ATTRIBUTES),
    *(f"server_{name}" for name in ENDPOINT_ATTRIBUTES),
    "count",
    "first_seen",
    "last_seen",
    "verdicts",
    "client_pod",
    "server_pod",
    "services",
]


def endpoint_keys(frame: pd.DataFrame, side: str) -> pd.Series:
    """The workload key of one side of every row: `namespace/workload` or `entity:ip`."""
    entity = frame[f"{side}_entity"]
    workload = frame[f"{side}_workload"].where(frame[f"{side}_workload"] != "", "{" + frame[f"{side}_labels"] + "}")
    pod_key = frame[f"{side}_namespace"] + "/" + workload
    other_key = entity.where(frame[f"{side}_ip"] == "", entity + ":" + frame[f"{side}_ip"])
    return pod_key.where(entity == POD, other_key)


def build_edges(observations: pd.DataFrame, verdicts: Collection[str] | None = None) -> pd.DataFrame:
    """Aggregate observations into workload edges, keeping only `verdicts` when given."""
    frame = observations
    if verdicts is not None:
        frame = frame[frame["verdict"].isin(list(verdicts))]
    if frame.empty:
        return _empty_edges()
    frame = frame.assign(client=endpoint_keys(frame, "client"), server=endpoint_keys(frame, "server"))
    attributes = {f"{side}_{name}": (f"{side}_{name}", "first") for side in ("client", "server")
                  for name in ENDPOINT_ATTRIBUTES}  # fmt: skip
    edges = (
        frame.groupby(EDGE_KEY, sort=True)
        .agg(
            **attributes,
            count=("count", "sum"),
            first_seen=("first_seen", "min"),
            last_seen=("last_seen", "max"),
            verdicts=("verdict", lambda values: ",".join(sorted(set(values)))),
            client_pod=("client_pod", smallest_nonempty),
            server_pod=("server_pod", smallest_nonempty),
            services=("services", union_of_sets),
        )
        .reset_index()
    )
    return edges[EDGE_COLUMNS]


def _empty_edges() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=str) for name in EDGE_COLUMNS})
    return frame.astype(
        {"port": "int64", "count": "int64", "first_seen": "datetime64[ns, UTC]", "last_seen": "datetime64[ns, UTC]"}
    )


def build_graph(edges: pd.DataFrame, dns_names: Mapping[str, tuple[str, ...]] | None = None) -> nx.DiGraph:
    """A DiGraph of workloads: node attributes describe the endpoint, edge attributes the traffic.

    Each edge carries `count` (all flows), `ports` (e.g. "TCP/8080,UDP/53") and `connections`, the
    rows of the edges table between the two nodes.
    """
    dns_names = dns_names or {}
    import networkx as nx  # a tenth of a second to import: only for those who ask for the graph

    graph = nx.DiGraph()
    for row in edges.itertuples(index=False):
        for side in ("client", "server"):
            key = getattr(row, side)
            if key not in graph:
                ip = getattr(row, f"{side}_ip")
                graph.add_node(
                    key,
                    **{name: getattr(row, f"{side}_{name}") for name in ENDPOINT_ATTRIBUTES},
                    dns_names=",".join(dns_names.get(ip, ())),
                )
        connection = {
            "protocol": row.protocol,
            "port": int(row.port),
            "count": int(row.count),
            "first_seen": row.first_seen,
            "last_seen": row.last_seen,
            "verdicts": row.verdicts,
        }
        if graph.has_edge(row.client, row.server):
            data = graph.edges[row.client, row.server]
            data["connections"].append(connection)
            data["count"] += connection["count"]
        else:
            graph.add_edge(row.client, row.server, connections=[connection], count=connection["count"])
    for _client, _server, data in graph.edges(data=True):
        data["ports"] = ",".join(f"{c['protocol']}/{c['port']}" for c in data["connections"])
    return graph
