"""Static pictures of the traffic: the workload graph, the namespace matrix and one workload's view.

Every function takes the edges table (`api.edges`) and returns a `matplotlib.figure.Figure` built without
pyplot, so it renders headless, shows in a notebook (as PNG), and `save` writes it as PNG or SVG. Layouts are
computed, never random: the same edges give the same picture, byte for byte.

`status` compares the traffic with a policy set: it maps (client, server, protocol, port) to "allowed",
"would-break" or "unobserved" (allowed but never seen; such edges may be absent from the edges table).
"""

from __future__ import annotations

import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import matplotlib
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.path import Path
from matplotlib.textpath import text_to_path

from collectors.records import DROPPED, HEALTH, HOST, KUBE_APISERVER, POD, REMOTE_NODE, WORLD

__all__ = [
    "ALLOWED",
    "STATUS_COLORS",
    "UNOBSERVED",
    "WOULD_BREAK",
    "Picture",
    "Status",
    "namespace_matrix",
    "save",
    "workload_graph",
    "workload_view",
]

ALLOWED, WOULD_BREAK, UNOBSERVED = "allowed", "would-break", "unobserved"
Point = tuple[float, float]
Status = Mapping[tuple[str, str, str, int], str]
"""(client, server, protocol, port) → ALLOWED, WOULD_BREAK or UNOBSERVED."""

STATUS_COLORS = {ALLOWED: "#2ca02c", WOULD_BREAK: "#d62728", UNOBSERVED: "#9e9e9e"}
NOT_COMPARED_COLOR = "#56606e"
"""Edges when no status is given, or when the status mapping does not mention them."""
STATUS_LEGEND = {
    ALLOWED: "allowed",
    WOULD_BREAK: "would break",
    UNOBSERVED: "allowed, never observed",
    None: "not compared",
}

DNS_PORT = 53
DNS_WORKLOADS = ("coredns", "kube-dns")
SVG_SALT = "netpol-recommender"
PNG_DPI = 150
FONT = 8  # points, node and edge labels
LINE_HEIGHT = 0.15  # inches per text line at FONT
LABEL_BOX = {"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}
EDGE_LABEL_BOX = {"boxstyle": "round,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
LABEL_STEPS = np.array(sorted(np.linspace(0.15, 0.85, 15), key=lambda t: abs(t - 0.5)))
"""Where along an arrow its label may go (0: client, 1: server), best first."""
ROUTE_STEPS = np.linspace(0.08, 0.92, 40)
BENDS = (0.12, -0.12, 0.2, -0.2, 0.3, -0.3, 0.45, -0.45)
"""Curvatures tried in turn for an arrow, until one keeps clear of the other nodes."""
MAX_SAGITTA = 1.5
"""How far (inches) an arc may stray from the straight line, unless that is less than the first of BENDS."""
MAX_WORKLOADS, MAX_ARROWS = 30, 80
"""Above either, the graph has one node per namespace (and per kind of entity): drawn one by one, that many
workloads or arrows are a hairball."""
NAMESPACE_LEVEL_PORTS = 2
"""Ports listed on an arrow between namespaces; the others are counted."""
WORKLOAD_HINT = (
    "One workload with its clients and servers: netpol-recommender graph ... --workload NAMESPACE/NAME "
    '(api.picture(observed, kind="workload", workload=...)).'
)


@dataclass(frozen=True)
class _Kind:
    marker: str
    color: str
    legend: str


KINDS = {
    "workload": _Kind("o", "#4c78a8", "workload"),
    "dns": _Kind("h", "#b279a2", "DNS server"),
    "world": _Kind("D", "#f58518", "world"),
    "node": _Kind("s", "#9d755d", "host / node"),
    "apiserver": _Kind("^", "#3f9f9a", "kube-apiserver"),
    "other": _Kind("p", "#bab0ac", "other entity"),
}
ENTITY_KINDS = {WORLD: "world", HOST: "node", REMOTE_NODE: "node", HEALTH: "node", KUBE_APISERVER: "apiserver"}
ENTITY_BOXES = {HOST: "nodes", REMOTE_NODE: "nodes", HEALTH: "nodes"}
"""The box an entity is drawn in, in the workload graph (other entities: a box named after the entity)."""


@dataclass(frozen=True)
class _Node:
    """An endpoint as drawn, from its key (`namespace/workload` or `entity:ip`)."""

    key: str
    kind: str
    namespace: str  # "" for entities
    entity: str  # POD for workloads
    label: str

    @property
    def lines(self) -> list[str]:
        return self.label.split("\n")


@dataclass(frozen=True)
class _Flow:
    """One (client, server, protocol, port), with its flow count (0 when only in the status)."""

    client: str
    server: str
    protocol: str
    port: int
    count: int
    status: str | None
    dropped: bool


@dataclass(frozen=True)
class _Arrow:
    """The flows of one client → server pair that share a status: drawn as one arrow."""

    client: str
    server: str
    status: str | None
    flows: tuple[_Flow, ...]

    @property
    def count(self) -> int:
        return sum(flow.count for flow in self.flows)


# ---------------------------------------------------------------------------------------------------- the data


def _flows(edges: pd.DataFrame, status: Status | None) -> list[_Flow]:
    """The observed edges with their status, plus the status entries the edges table does not have."""
    status = dict(status or {})
    unknown = sorted(set(status.values()) - set(STATUS_COLORS))
    if unknown:
        raise ValueError(f"unknown status {unknown}: use {sorted(STATUS_COLORS)}")
    flows = []
    for row in edges.itertuples(index=False):
        key = (row.client, row.server, row.protocol, int(row.port))
        flows.append(_Flow(*key, int(row.count), status.pop(key, None), row.verdicts == DROPPED))
    flows += [_Flow(*key, 0, value, False) for key, value in status.items()]
    return sorted(flows, key=lambda flow: (flow.client, flow.server, flow.protocol, flow.port))


def _arrows(flows: Iterable[_Flow]) -> list[_Arrow]:
    """The flows grouped into arrows: one per client, server and status, in a stable order."""
    grouped: dict[tuple[str, str, str | None], list[_Flow]] = defaultdict(list)
    for flow in flows:
        grouped[flow.client, flow.server, flow.status].append(flow)
    order = [None, ALLOWED, WOULD_BREAK, UNOBSERVED]
    keys = sorted(grouped, key=lambda key: (key[0], key[1], order.index(key[2])))
    return [_Arrow(*key, tuple(grouped[key])) for key in keys]


def _nodes(flows: list[_Flow], dns_names: Mapping[str, tuple[str, ...]] | None) -> dict[str, _Node]:
    """Every endpoint of the flows. Pods serving port 53 (or named like kube-dns) are DNS servers."""
    dns_servers = {flow.server for flow in flows if flow.port == DNS_PORT}
    keys = sorted({flow.client for flow in flows} | {flow.server for flow in flows})
    return {key: _node(key, key in dns_servers, dns_names or {}) for key in keys}


def _node(key: str, serves_dns: bool, dns_names: Mapping[str, tuple[str, ...]]) -> _Node:
    if "/" in key:
        namespace, workload = key.split("/", 1)
        kind = "dns" if serves_dns or workload in DNS_WORKLOADS else "workload"
        return _Node(key, kind, namespace, POD, workload)
    entity, _, ip = key.partition(":")
    names = dns_names.get(ip, ())
    if entity == WORLD:
        more = [f"+{len(names) - 1} more names"] if len(names) > 1 else []
        label = "\n".join([*names[:1], *more, ip or WORLD])
    else:
        label = f"{entity} {ip}".strip()
    return _Node(key, ENTITY_KINDS.get(entity, "other"), "", entity, label)


def _ports(flows: Iterable[_Flow], most: int | None = None) -> str:
    """`TCP/80,443 UDP/53`, with "dropped" after ports only seen dropped; past `most` ports, `+N more`."""
    by_protocol: dict[str, list[str]] = defaultdict(list)
    flows = list(flows)
    for flow in flows[:most]:
        by_protocol[flow.protocol].append(f"{flow.port}{' dropped' if flow.dropped else ''}")
    text = " ".join(f"{protocol}/{','.join(ports)}" for protocol, ports in sorted(by_protocol.items()))
    return text + (f" +{len(flows) - most} more" if most is not None and len(flows) > most else "")


def _namespace_level(nodes: Mapping[str, _Node], flows: Iterable[_Flow]) -> tuple[dict[str, _Node], list[_Flow]]:
    """The same traffic between namespaces and kinds of entity: one node per namespace (`ns/*`) or entity
    (`world`, `host`, …), one flow per (client, server, protocol, port, status), counts added up."""
    group = {key: f"{node.namespace}/*" if node.namespace else node.entity for key, node in nodes.items()}
    members: dict[str, list[_Node]] = defaultdict(list)
    for key, node in nodes.items():
        members[group[key]].append(node)
    grouped = {key: _group_node(key, found) for key, found in members.items()}
    totals: dict[tuple[str, str, str, int, str | None], list[int]] = {}
    for flow in flows:
        summed = (group[flow.client], group[flow.server], flow.protocol, flow.port, flow.status)
        count, dropped = totals.get(summed, [0, 1])
        totals[summed] = [count + flow.count, dropped and flow.dropped]
    order = [None, ALLOWED, WOULD_BREAK, UNOBSERVED]
    keys = sorted(totals, key=lambda key: (*key[:4], order.index(key[4])))
    return grouped, [_Flow(*key[:4], totals[key][0], key[4], bool(totals[key][1])) for key in keys]


def _group_node(key: str, members: list[_Node]) -> _Node:
    """A namespace's workloads, or an entity's addresses, as one node."""
    first = members[0]
    if first.namespace:
        kind = "dns" if all(node.kind == "dns" for node in members) else "workload"
        label = f"{len(members)} workload{'s' if len(members) != 1 else ''}"
        return _Node(key, kind, first.namespace, POD, label)
    label = first.label if len(members) == 1 else f"{first.entity}\n{len(members)} addresses"
    return _Node(key, first.kind, "", first.entity, label)


def _counted(flow: _Flow) -> str:
    """`TCP/8080  1,570 flows` for the workload view."""
    if flow.count == 0:
        return f"{flow.protocol}/{flow.port}  never observed"
    return f"{flow.protocol}/{flow.port}  {flow.count:,} flow{'s' if flow.count != 1 else ''}" + (
        " (dropped)" if flow.dropped else ""
    )


def _width(count: int) -> float:
    """Edge width in points: logarithmic in the flow count."""
    return 1.0 if count == 0 else min(4.5, 0.5 + 0.7 * math.log10(count))


# ---------------------------------------------------------------------------------------------------- drawing


class Picture(Figure):
    """The figures made here: a plain matplotlib Figure that also shows itself in a notebook when pyplot
    (and so the inline backend) was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()


def _canvas(width: float, height: float) -> tuple[Picture, Axes]:
    """A figure of `width` × `height` inches whose data coordinates are inches (origin bottom left)."""
    figure = Picture(figsize=(width, height), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(0, height)
    axes.set_axis_off()
    return figure, axes


def _no_traffic(title: str) -> Picture:
    figure, axes = _canvas(6, 2)
    axes.text(3, 1.55, title, ha="center", va="center", fontsize=12, weight="bold")
    axes.text(3, 0.9, "No traffic to show", ha="center", va="center", fontsize=14, color="#555555")
    return figure


def _text_size(text: str, font: float = FONT) -> Point:
    """The width and height of `text` in inches, at `font` points."""
    lines = text.split("\n")
    font_properties = FontProperties(size=font)
    width = max(text_to_path.get_text_width_height_descent(line, font_properties, ismath=False)[0] for line in lines)
    width /= 72
    return width, len(lines) * LINE_HEIGHT * font / FONT


class _Labels:
    """Keeps text from overlapping: areas are reserved, edge labels slide along their curve to a free spot."""

    PAD: ClassVar[float] = 0.04

    def __init__(self) -> None:
        self.taken = np.empty((0, 4))  # rows of left, bottom, right, top

    def reserve(self, x: float, y: float, width: float, height: float) -> None:
        width, height = width + 2 * self.PAD, height + 2 * self.PAD
        self.taken = np.vstack([self.taken, (x - width / 2, y - height / 2, x + width / 2, y + height / 2)])

    def overlap(self, x: float, y: float, width: float, height: float) -> float:
        """The area of the reserved rectangles that a `width` × `height` box centred on (x, y) would cover."""
        left, bottom, right, top = self.taken.T
        across = np.clip(np.minimum(right, x + width / 2) - np.maximum(left, x - width / 2), 0, None)
        up = np.clip(np.minimum(top, y + height / 2) - np.maximum(bottom, y - height / 2), 0, None)
        return float((across * up).sum())

    def place(self, candidates: np.ndarray, text: str) -> Point:
        """The first of the `candidates` points where `text` covers the least reserved area; reserves it."""
        size = _text_size(text, FONT - 1)
        x, y = candidates[int(np.argmin([self.overlap(point[0], point[1], *size) for point in candidates]))]
        self.reserve(x, y, *size)
        return x, y


def _draw_node(axes: Axes, node: _Node, x: float, y: float, side: str = "below", text: str = "") -> None:
    """A marker in the node's style with its label (`text`, else the node's label) `side` of it:
    "below", "left" or "right"."""
    kind = KINDS[node.kind]
    axes.plot([x], [y], kind.marker, markersize=11, color=kind.color, markeredgecolor="white", zorder=4)
    if side == "below":
        (left, bottom), ha, va = (x, y - 0.14), "center", "top"
    else:
        left, bottom = x + (0.16 if side == "right" else -0.16), y
        ha, va = "left" if side == "right" else "right", "center"
    axes.text(left, bottom, text or node.label, fontsize=FONT, zorder=5, linespacing=1.15, bbox=LABEL_BOX, ha=ha, va=va)


def _curve(start: Point, end: Point, rad: float, steps: np.ndarray) -> np.ndarray:
    """Points at `steps` (0 to 1) along matplotlib's `arc3` connection, a quadratic Bézier, in inches."""
    (x1, y1), (x2, y2) = start, end
    control = ((x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1))
    t = steps[:, None]
    return (1 - t) ** 2 * np.array(start) + 2 * (1 - t) * t * np.array(control) + t**2 * np.array(end)


def _clearance(arcs: list[tuple[Point, Point]], rad: float, obstacles: np.ndarray, size: Point) -> float:
    """The smallest distance between the `arc3` arcs of curvature `rad` and the obstacle points, in inches
    (0 when an arc comes near the edge of the drawing, of `size` inches)."""
    points = np.concatenate([_curve(*arc, rad, ROUTE_STEPS) for arc in arcs])
    if (points < 0.25).any() or (points > np.array(size) - 0.25).any():
        return 0.0
    return float(np.linalg.norm(points[:, None, :] - obstacles[None, :, :], axis=2).min(initial=np.inf))


def _bends(pairs: set[tuple[str, str]], positions: Mapping[str, Point], size: Point) -> dict[tuple[str, str], float]:
    """An `arc3` curvature per client → server pair that keeps its arc clear of the other nodes and their
    labels. A pair talking both ways gets the same value both ways: two arcs, one on each side."""
    bends: dict[tuple[str, str], float] = {}
    for client, server in sorted(pairs):
        if (server, client) in bends or client == server:
            bends[client, server] = bends.get((server, client), 0.0)
            continue
        obstacles = np.array(
            [p for key, (x, y) in positions.items() if key not in (client, server) for p in ((x, y), (x, y - 0.2))]
        ).reshape(-1, 2)
        arcs = [(positions[client], positions[server])]
        if (server, client) in pairs:
            arcs.append((positions[server], positions[client]))
        length = math.dist(positions[client], positions[server])
        rads = [rad for rad in BENDS if abs(rad) <= max(BENDS[0], 2 * MAX_SAGITTA / length)]
        clear = [(rad, _clearance(arcs, rad, obstacles, size)) for rad in rads]
        bends[client, server] = next((rad for rad, room in clear if room >= 0.25), max(clear, key=lambda c: c[1])[0])
    return bends


def _draw_arrow(
    axes: Axes,
    arrow: _Arrow,
    ends: tuple[Point, Point],
    text: str,
    labels: _Labels,
    rad: float,
) -> None:
    """An `arc3` arrow with `text` placed on it, as near its middle as the labels already placed allow."""
    start, end = ends
    (shrink_a, shrink_b), lift = (9, 11), 0.0
    if start == end:  # a workload calling itself: a loop above its node, its label above the loop
        (x, y), rad, (shrink_a, shrink_b), lift = start, -2.5, (0, 0), _text_size(text, FONT - 1)[1] / 2
        start, end = (x - 0.12, y + 0.08), (x + 0.12, y + 0.08)
    patch = FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}", shrinkA=shrink_a, shrinkB=shrink_b)
    color = _add_arrow(axes, arrow, patch)
    if text:
        x, y = labels.place(_curve(start, end, rad, LABEL_STEPS) + np.array([0, lift]), text)
        axes.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=FONT - 1,
            color=color,
            zorder=3,
            linespacing=1.1,
            bbox=EDGE_LABEL_BOX,
        )


class _Stroke(NamedTuple):
    color: str
    linestyle: str


def _status_style(status: str | None) -> _Stroke:
    color = STATUS_COLORS.get(status, NOT_COMPARED_COLOR) if status is not None else NOT_COMPARED_COLOR
    return _Stroke(color, "--" if status == UNOBSERVED else "-")


def _add_arrow(axes: Axes, arrow: _Arrow, patch: FancyArrowPatch) -> str:
    """Style `patch` for `arrow` (colour by status, width by flow count), add it, return its colour.

    The patch's label is "client -> server", for whoever inspects the figure."""
    style = _status_style(arrow.status)
    patch.set(
        arrowstyle="-|>",
        mutation_scale=12,
        linewidth=_width(arrow.count),
        alpha=0.75,
        zorder=2,
        color=style.color,
        linestyle=style.linestyle,
    )
    patch.set_label(f"{arrow.client} -> {arrow.server}")
    axes.add_patch(patch)
    return style.color


def _legend(axes: Axes, nodes: Iterable[_Node], arrows: list[_Arrow], compared: bool) -> None:
    """Node kinds present, and the statuses present when the traffic was compared with policies."""
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            marker=KINDS[kind].marker,
            markersize=9,
            color=KINDS[kind].color,
            label=KINDS[kind].legend,
        )
        for kind in sorted({node.kind for node in nodes}, key=list(KINDS).index)
    ]
    if compared:
        handles += [
            Line2D([], [], linewidth=2, label=STATUS_LEGEND[status], **_status_style(status)._asdict())
            for status in sorted({arrow.status for arrow in arrows}, key=list(STATUS_LEGEND).index)
        ]
    axes.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.1 / axes.get_xlim()[1], 0.0),
        ncol=len(handles),
        fontsize=FONT,
        frameon=False,
        handlelength=2.2,
    )


# ---------------------------------------------------------------------------------------------------- the graph


@dataclass
class _Box:
    """A group of nodes drawn together: a namespace, or entities of one kind (world, nodes, …)."""

    title: str
    is_namespace: bool
    columns: list[list[_Node]]
    cell: Point  # width and height of a node's place, inches
    head: float = 0.3
    """Room above the nodes for the title (and, between namespaces, for a namespace's loop)."""
    x: float = 0.0  # lower left corner, inches
    y: float = 0.0

    PAD: ClassVar[float] = 0.15

    @property
    def size(self) -> Point:
        rows = max(map(len, self.columns))
        width = max(len(self.columns) * self.cell[0] + 2 * self.PAD, _text_size(self.title, 10)[0] + 0.4)
        return width, rows * self.cell[1] + self.head + self.PAD

    def positions(self) -> dict[str, Point]:
        """Node positions: each column centred vertically, the node's label below it."""
        width, height = self.size
        left = self.x + (width - len(self.columns) * self.cell[0]) / 2
        rows = max(map(len, self.columns))
        positions = {}
        for i, column in enumerate(self.columns):
            top = self.y + height - self.head - (rows - len(column)) * self.cell[1] / 2
            for j, node in enumerate(column):
                positions[node.key] = (left + (i + 0.5) * self.cell[0], top - j * self.cell[1] - 0.2)
        return positions


def _layers(graph: nx.DiGraph) -> dict[str, int]:
    """Longest-path layers (callers left of the called) after dropping the edges that close a cycle.

    Edges are kept callers first (nodes ranked by in-degree minus out-degree), so in a cycle the edge
    back to the first caller is the one dropped.
    """
    rank = {node: (graph.in_degree(node) - graph.out_degree(node), node) for node in graph}
    dag = nx.DiGraph()
    dag.add_nodes_from(graph)
    for client, server in sorted(graph.edges, key=lambda edge: (rank[edge[0]], rank[edge[1]])):
        if client != server and not nx.has_path(dag, server, client):
            dag.add_edge(client, server)
    layers: dict[str, int] = {}
    for node in nx.topological_sort(dag):
        layers[node] = max((layers[caller] + 1 for caller in dag.predecessors(node)), default=0)
    return layers


def _box(title: str, is_namespace: bool, members: list[_Node], graph: nx.DiGraph, head: float) -> _Box:
    """A group laid out left to right by its internal traffic, in columns of at most ~1.5 √n nodes."""
    by_key = {node.key: node for node in members}
    layers = _layers(graph.subgraph(by_key))
    height = max(4, math.ceil(1.5 * math.sqrt(len(members))))
    columns = []
    for layer in sorted(set(layers.values())):
        keys = sorted(key for key in layers if layers[key] == layer)
        columns += [[by_key[key] for key in keys[i : i + height]] for i in range(0, len(keys), height)]
    longest = max(_text_size(node.label)[0] for node in members)
    lines = max(len(node.lines) for node in members)
    return _Box(title, is_namespace, columns, (max(1.4, longest + 0.7), 0.5 + lines * LINE_HEIGHT), head)


def _boxes(nodes: dict[str, _Node], graph: nx.DiGraph, head: float) -> list[list[_Box]]:
    """Columns of boxes, left to right: entities that only call; the namespaces in a grid, column by
    column in traffic order; entities that are called. `head` is the room above the nodes of a box."""
    members: dict[tuple[str, str], list[_Node]] = defaultdict(list)
    for node in nodes.values():
        if node.namespace:
            members["namespace", node.namespace].append(node)
        else:
            side = "called" if graph.in_degree(node.key) else "calling"
            members[side, ENTITY_BOXES.get(node.entity, node.entity)].append(node)
    boxes = {key: _box(key[1], key[0] == "namespace", group, graph, head) for key, group in sorted(members.items())}
    namespaces = nx.DiGraph()
    namespaces.add_nodes_from(name for side, name in boxes if side == "namespace")
    namespaces.add_edges_from(
        (nodes[client].namespace, nodes[server].namespace)
        for client, server in graph.edges
        if nodes[client].namespace and nodes[server].namespace
    )
    layers = _layers(namespaces)
    ordered = [boxes["namespace", name] for name in sorted(layers, key=lambda name: (layers[name], name))]
    rows = math.ceil(len(ordered) / math.ceil(math.sqrt(len(ordered)))) if ordered else 1
    grid = [ordered[i : i + rows] for i in range(0, len(ordered), rows)]
    calling = [box for (side, _), box in boxes.items() if side == "calling"]
    called = [box for (side, _), box in boxes.items() if side == "called"]
    return [column for column in (calling, *grid, called) if column]


def _place(columns: list[list[_Box]], gap: float, margin: Point) -> Point:
    """Set each box's corner: columns left to right, boxes stacked and centred; returns the content size."""
    heights = [sum(box.size[1] for box in column) + gap / 2 * (len(column) - 1) for column in columns]
    x = margin[0]
    for column, height in zip(columns, heights, strict=True):
        width = max(box.size[0] for box in column)
        y = margin[1] + (max(heights) + height) / 2
        for box in column:
            y -= box.size[1]
            box.x, box.y = x + (width - box.size[0]) / 2, y
            y -= gap / 2
        x += width + gap
    return x - gap + margin[0], max(heights) + margin[1]


def _draw_box(axes: Axes, box: _Box, labels: _Labels) -> None:
    """The shaded rounded box with its title (namespaces bold, entity groups italic); reserves the title."""
    width, height = box.size
    axes.add_patch(
        FancyBboxPatch(
            (box.x, box.y),
            width,
            height,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor="#e8eef6" if box.is_namespace else "#f6efe6",
            edgecolor="#b8c2cf",
            linewidth=1,
            zorder=0,
        )
    )
    axes.text(
        box.x + 0.12,
        box.y + height - 0.08,
        box.title,
        ha="left",
        va="top",
        fontsize=10,
        color="#333333",
        fontweight="bold" if box.is_namespace else "normal",
        fontstyle="normal" if box.is_namespace else "italic",
    )
    title_width = _text_size(box.title, 10)[0]
    labels.reserve(box.x + 0.12 + title_width / 2, box.y + height - 0.18, title_width + 0.1, 0.25)


def workload_graph(
    edges: pd.DataFrame,
    *,
    status: Status | None = None,
    dns_names: Mapping[str, tuple[str, ...]] | None = None,
    title: str | None = None,
    max_workloads: int = MAX_WORKLOADS,
    max_arrows: int = MAX_ARROWS,
) -> Picture:
    """The workload communication graph: namespaces as boxes, traffic as arrows client → server.

    Arrow width grows with the log of the flow count; labels give the ports. World, nodes and DNS
    servers have their own shapes; world IPs show their DNS name when `dns_names` ({ip: names}) has it.
    With `status`, arrows are coloured allowed (green), would-break (red) or unobserved (grey, dashed).
    Above `max_workloads` workloads or `max_arrows` arrows, each namespace (and each kind of entity) is
    one node, and the subtitle says how to see one workload.
    """
    title = title or "Workload communication"
    flows = _flows(edges, status)
    if not flows:
        return _no_traffic(title)
    nodes = _nodes(flows, dns_names)
    workloads = sum(1 for node in nodes.values() if node.namespace)
    summary = f"{workloads} workloads, {len(nodes) - workloads} other endpoints, {len(flows)} edges"
    subtitle = f"{summary}. Arrow width: log of the flow count; arrows to DNS servers are port 53."
    most, gap, head = None, 1.1, 0.3
    if workloads > max_workloads or len(_arrows(flows)) > max_arrows:
        namespaces = len({node.namespace for node in nodes.values() if node.namespace})
        subtitle = (
            f"{summary}: too many to draw one by one, so each of the {namespaces} namespaces is one node, and so is "
            "each kind of other endpoint. Arrow width: log of the flow count.\n" + WORKLOAD_HINT
        )
        nodes, flows = _namespace_level(nodes, flows)
        most, gap, head = NAMESPACE_LEVEL_PORTS, 2.2, 0.8  # room for the loop of traffic inside a namespace
        if len(_arrows(flows)) > max_arrows:
            most = 0
            subtitle += " Too many arrows between namespaces to list their ports: graph --matrix counts the flows."
    arrows = _arrows(flows)
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((arrow.client, arrow.server) for arrow in arrows)
    columns = _boxes(nodes, graph, head)
    width, height = _place(columns, gap=gap, margin=(0.3, 0.5))
    header = 0.8 + LINE_HEIGHT * subtitle.count("\n")
    width = max(width, _text_size(subtitle)[0] + 0.6)
    figure, axes = _canvas(width, height + header)
    axes.text(0.3, height + header - 0.1, title, ha="left", va="top", fontsize=13, weight="bold")
    axes.text(0.3, height + header - 0.4, subtitle, ha="left", va="top", fontsize=FONT, color="#555555")
    labels = _Labels()
    positions: dict[str, Point] = {}
    for box in (box for column in columns for box in column):
        _draw_box(axes, box, labels)
        positions |= box.positions()
    for key, (x, y) in positions.items():
        _draw_node(axes, nodes[key], x, y)
        label_width, label_height = _text_size(nodes[key].label)
        labels.reserve(x, y - 0.07 - label_height / 2, max(label_width, 0.25), label_height + 0.3)
    bends = _bends({(arrow.client, arrow.server) for arrow in arrows}, positions, (width, height))
    parallel: dict[tuple[str, str], int] = defaultdict(int)
    for arrow in arrows:
        rad = bends[arrow.client, arrow.server]
        rad += math.copysign(0.14, rad) * parallel[arrow.client, arrow.server]
        parallel[arrow.client, arrow.server] += 1
        ends = (positions[arrow.client], positions[arrow.server])
        dns = nodes[arrow.server].kind == "dns" and all(flow.port == DNS_PORT for flow in arrow.flows)
        _draw_arrow(axes, arrow, ends, "" if dns or most == 0 else _ports(arrow.flows, most), labels, rad)
    _legend(axes, nodes.values(), arrows, status is not None)
    return figure


# ---------------------------------------------------------------------------------------------------- the matrix


def namespace_matrix(edges: pd.DataFrame, *, status: Status | None = None) -> Picture:
    """Flow counts from client namespaces (rows) to server namespaces (columns); entities in italics.

    The colour scale is logarithmic. With `status`, cells holding would-break traffic get a red frame.
    """
    title = "Traffic between namespaces"
    flows = _flows(edges, status)
    if not flows:
        return _no_traffic(title)
    group = {key: (not node.namespace, node.namespace or node.entity) for key, node in _nodes(flows, None).items()}
    groups = sorted(set(group.values()))  # namespaces, then entities
    index = {name: i for i, name in enumerate(groups)}
    counts = np.zeros((len(groups), len(groups)), dtype=np.int64)
    breaking = set()
    for flow in flows:
        cell = index[group[flow.client]], index[group[flow.server]]
        counts[cell] += flow.count
        if flow.status == WOULD_BREAK:
            breaking.add(cell)
    names = [name for _, name in groups]
    side = 0.7 * len(groups) + max(_text_size(name, FONT + 1)[0] for name in names)
    figure = Picture(figsize=(side + 2.2, side + 1.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    norm = LogNorm(vmin=1, vmax=max(10, int(counts.max())))
    image = axes.imshow(np.ma.masked_equal(counts, 0), cmap="Blues", norm=norm)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            color = "white" if np.asarray(norm(count)).item() > 0.6 else "#222222"
            axes.text(column, row, f"{count:,}", ha="center", va="center", fontsize=FONT, color=color)
    breaking_color = STATUS_COLORS[WOULD_BREAK]
    for row, column in sorted(breaking):
        axes.add_patch(
            Rectangle((column - 0.45, row - 0.45), 0.9, 0.9, fill=False, edgecolor=breaking_color, linewidth=2.5)
        )
    axes.set_xticks(range(len(groups)), names, rotation=45, ha="left", rotation_mode="anchor", fontsize=FONT + 1)
    axes.set_yticks(range(len(groups)), names, fontsize=FONT + 1)
    for ticks in (axes.get_xticklabels(), axes.get_yticklabels()):
        for tick, (is_entity, _) in zip(ticks, groups, strict=True):
            tick.set_fontstyle("italic" if is_entity else "normal")
    axes.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    axes.set_xlabel("server", fontsize=FONT + 2)
    axes.xaxis.set_label_position("top")
    axes.set_ylabel("client", fontsize=FONT + 2)
    axes.set_xticks(np.arange(len(groups) + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(len(groups) + 1) - 0.5, minor=True)
    axes.grid(which="minor", color="#dddddd", linewidth=0.8)
    axes.tick_params(which="minor", length=0)
    figure.colorbar(image, ax=axes, shrink=0.8).set_label("flows (log scale)", fontsize=FONT + 1)
    figure.suptitle(title, fontsize=12, weight="bold")
    if breaking:
        marker = Patch(fill=False, edgecolor=breaking_color, linewidth=2.5, label="holds would-break traffic")
        axes.legend(handles=[marker], loc="upper left", bbox_to_anchor=(0, 0), frameon=False, fontsize=FONT + 1)
    return figure


# ---------------------------------------------------------------------------------------------------- one workload


def workload_view(
    edges: pd.DataFrame,
    workload: str,
    *,
    status: Status | None = None,
    dns_names: Mapping[str, tuple[str, ...]] | None = None,
) -> Picture:
    """One workload (a key such as `shop/checkout`) in the middle, its clients left, its servers right.

    Each arrow lists its protocol/ports and flow counts; with `status` it is coloured as in
    `workload_graph`. Raises ValueError when the workload has no traffic in `edges` or `status`.
    """
    flows = _flows(edges, status)
    nodes = _nodes(flows, dns_names)
    if workload not in nodes:
        known = ", ".join(key for key in nodes if "/" in key) or "none, there is no traffic"
        raise ValueError(
            f"unknown workload {workload!r}: it is neither client nor server of any edge (workloads: {known})"
        )
    arrows = _arrows(flow for flow in flows if workload in (flow.client, flow.server))
    peers = {key: nodes[key] for arrow in arrows for key in (arrow.client, arrow.server)}
    names = {key: key if node.namespace else node.label for key, node in peers.items()}
    texts = {arrow: "\n".join(map(_counted, arrow.flows)) for arrow in arrows}
    row = max(0.5, max(_text_size(text)[1] for text in texts.values()) + 0.25)
    clients = sorted((a for a in arrows if a.server == workload), key=lambda a: (-a.count, a.client, a.status or ""))
    servers = sorted((a for a in arrows if a.client == workload), key=lambda a: (-a.count, a.server, a.status or ""))
    margin = max(_text_size(name)[0] for name in names.values()) + 0.5
    width, height = 2 * margin + 7.5, max(len(clients), len(servers), 1) * row + 1.5
    figure, axes = _canvas(width, height)
    axes.text(0.3, height - 0.15, f"Traffic of {workload}", ha="left", va="top", fontsize=13, weight="bold")
    middle = (width / 2, (height - 0.6) / 2 + 0.3)
    _draw_node(axes, peers[workload], *middle, text=names[workload])
    for side, x, side_arrows in (("left", margin, clients), ("right", width - margin, servers)):
        top = middle[1] + (len(side_arrows) - 1) * row / 2
        for i, arrow in enumerate(side_arrows):
            peer, position = arrow.client if side == "left" else arrow.server, (x, top - i * row)
            _draw_node(axes, peers[peer], *position, side, names[peer])
            _draw_link(axes, arrow, position, middle, texts[arrow], side)
    _legend(axes, peers.values(), arrows, status is not None)
    return figure


def _draw_link(axes: Axes, arrow: _Arrow, peer: Point, middle: Point, text: str, side: str) -> None:
    """An S-shaped arrow between a peer and the middle node, leaving and arriving level; its text beside the
    peer, on the side away from the middle so the curve does not cross it."""
    sign = -1 if side == "left" else 1
    (x1, y1), (x2, y2) = (peer[0] - sign * 0.15, peer[1]), (middle[0] + sign * 0.15, middle[1])
    if side == "right":
        (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
    bend = (x2 - x1) / 2
    path = Path([(x1, y1), (x1 + bend, y1), (x2 - bend, y2), (x2, y2)], [Path.MOVETO, *[Path.CURVE4] * 3])
    color = _add_arrow(axes, arrow, FancyArrowPatch(path=path))
    above = peer[1] >= middle[1]
    axes.text(
        peer[0] - sign * 0.3,
        peer[1] + (0.06 if above else -0.06),
        text,
        ha="left" if side == "left" else "right",
        va="bottom" if above else "top",
        fontsize=FONT - 1,
        color=color,
        linespacing=1.1,
    )


# ---------------------------------------------------------------------------------------------------- saving


def save(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Write `figure` as PNG or SVG (by the file extension), byte-identical for the same figure."""
    extension = os.fspath(path).rsplit(".", 1)[-1].lower()
    if extension == "svg":
        with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}):
            figure.savefig(path, format="svg", metadata={"Date": None})
    elif extension == "png":
        figure.savefig(path, format="png", dpi=PNG_DPI, metadata={"Software": None})
    else:
        raise ValueError(f"cannot save a picture as {os.fspath(path)!r}: use a .png or .svg file name")
