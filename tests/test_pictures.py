"""The pictures: rendered for the example capture and the real bookinfo capture, then inspected through
their artists (labels, arrow colours) and their files (valid PNG, deterministic SVG)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.text import Text

from recommender import api, pictures
from recommender.pictures import ALLOWED, STATUS_COLORS, UNOBSERVED, WOULD_BREAK
from tests.conftest import REPO

SHOP = REPO / "examples" / "shop-capture.json.gz"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shop() -> api.ObservationSet:
    return api.load_observations([str(SHOP)])


@pytest.fixture(params=["shop", "bookinfo"])
def capture(request: pytest.FixtureRequest, shop: api.ObservationSet) -> api.ObservationSet:
    """Each capture in turn: the shipped example, then the real bookinfo capture (skipped when absent)."""
    if request.param == "shop":
        return shop
    return api.load_observations(request.getfixturevalue("bookinfo_files"))


def texts(figure: Figure) -> list[str]:
    return [text.get_text() for text in figure.findobj(Text) if text.get_text()]


def arrows(figure: Figure) -> dict[str, list[FancyArrowPatch]]:
    """The arrows of a figure by their label, "client -> server"."""
    found: dict[str, list[FancyArrowPatch]] = {}
    for patch in figure.findobj(FancyArrowPatch):
        found.setdefault(patch.get_label(), []).append(patch)
    return found


def assert_png(path: Path) -> None:
    """A valid PNG of a reasonable size, with more than a handful of colours."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert 20_000 < path.stat().st_size < 5_000_000
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert 500 <= width <= 6000 and 250 <= height <= 4000
    red, green, blue = ((pixels[..., channel] * 255).astype(np.uint32) for channel in range(3))
    assert len(np.unique(red << 16 | green << 8 | blue)) > 20


def assert_no_text_overlaps(figure: Figure) -> None:
    renderer = FigureCanvasAgg(figure).get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in figure.axes[0].texts if text.get_text()]
    overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert overlapping == []


def endpoints(edges: pd.DataFrame) -> set[str]:
    return set(edges["client"]) | set(edges["server"])


def pairs(edges: pd.DataFrame) -> set[str]:
    """The arrow labels the edges should give: one "client -> server" per pair."""
    return {f"{row.client} -> {row.server}" for row in edges.itertuples()}


def compared(edges: pd.DataFrame) -> dict[tuple[str, str, str, int], str]:
    """A comparison of the shop with a policy set: all allowed but the dropped frontend → payments call,
    plus allowed paths nobody used, one of them from a workload that sent nothing, one a loop."""
    status = {(row.client, row.server, row.protocol, int(row.port)): ALLOWED for row in edges.itertuples()}
    return status | {
        ("shop/frontend", "payments/payments", "TCP", 8443): WOULD_BREAK,
        ("shop/frontend", "shop/reviews", "TCP", 9080): UNOBSERVED,
        ("shop/reporting", "shop/catalog-db", "TCP", 5432): UNOBSERVED,
        ("shop/catalog", "shop/catalog", "TCP", 7000): UNOBSERVED,
    }


def color_of(patch: FancyArrowPatch) -> tuple[float, float, float]:
    return to_rgb(patch.get_edgecolor())


# ---------------------------------------------------------------------------------------------------- the graph


def test_graph_shows_every_namespace_workload_and_entity(capture, tmp_path):
    edges = api.edges(capture)
    figure = pictures.workload_graph(edges, dns_names=capture.dns_names)
    pictures.save(figure, tmp_path / "graph.png")
    assert_png(tmp_path / "graph.png")
    labels = texts(figure)
    for key in endpoints(edges):
        if "/" in key:
            namespace, workload = key.split("/")
            assert namespace in labels and workload in labels, key
        else:
            ip = key.split(":")[1]
            assert any(ip in label for label in labels), key
    assert set(arrows(figure)) == pairs(edges)
    assert_no_text_overlaps(figure)


def test_graph_labels_ports_and_names_world_ips(shop):
    labels = texts(pictures.workload_graph(api.edges(shop), dns_names=shop.dns_names))
    assert {"TCP/5432", "TCP/443", "TCP/8443 dropped"} <= set(labels)
    assert "api.payments.example.com\n203.0.113.10" in labels
    assert "UDP/53" not in labels  # arrows to the DNS server say nothing: the legend and subtitle do
    assert "DNS server" in labels and "world" in labels


def test_graph_colours_edges_by_status_and_draws_unobserved_ones(shop):
    figure = pictures.workload_graph(api.edges(shop), status=compared(api.edges(shop)))
    drawn = arrows(figure)
    (breaking,) = drawn["shop/frontend -> payments/payments"]
    assert color_of(breaking) == to_rgb(STATUS_COLORS[WOULD_BREAK])
    (unobserved,) = drawn["shop/reporting -> shop/catalog-db"]
    assert color_of(unobserved) == to_rgb(STATUS_COLORS[UNOBSERVED])
    assert unobserved.get_linestyle() == "--"
    assert "shop/catalog -> shop/catalog" in drawn  # a loop
    (allowed,) = drawn["shop/catalog -> shop/catalog-db"]
    assert color_of(allowed) == to_rgb(STATUS_COLORS[ALLOWED])
    assert {"reporting", "allowed", "would break", "allowed, never observed"} <= set(texts(figure))


def test_graph_keeps_one_arrow_per_status_between_two_workloads(shop):
    edges = api.edges(shop)
    status = {
        ("shop/frontend", "shop/catalog", "TCP", 8080): ALLOWED,
        ("shop/frontend", "shop/catalog", "TCP", 9090): UNOBSERVED,
    }
    figure = pictures.workload_graph(edges, status=status)
    colors = {color_of(patch) for patch in arrows(figure)["shop/frontend -> shop/catalog"]}
    assert colors == {to_rgb(STATUS_COLORS[ALLOWED]), to_rgb(STATUS_COLORS[UNOBSERVED])}
    assert "not compared" in texts(figure)  # edges the status does not mention


def test_graph_rejects_an_unknown_status(shop):
    with pytest.raises(ValueError, match="unknown status"):
        pictures.workload_graph(api.edges(shop), status={("a/b", "c/d", "TCP", 80): "maybe"})


def teams_cluster(teams: int = 12, size: int = 6) -> pd.DataFrame:
    """The edges of a large cluster: teams of `size` workloads calling each other in a chain, each called by
    the ingress, one calling a shared database and one an outside API, every workload using kube-dns."""
    rows = []
    for team in range(teams):
        names = [f"team-{team:02d}/svc-{i}" for i in range(size)]
        rows += [(a, b, "TCP", 8080 + i, 100) for i, (a, b) in enumerate(itertools.pairwise(names))]
        rows += [(name, "kube-system/coredns", "UDP", 53, 50) for name in names]
        rows += [(names[-1], "data/postgres", "TCP", 5432, 30), ("ingress/nginx", names[0], "TCP", 8080, 300)]
        rows.append((names[2], f"world:203.0.113.{team}", "TCP", 443, 5))
    edges = pd.DataFrame(rows, columns=["client", "server", "protocol", "port", "count"])
    return edges.assign(verdicts="FORWARDED")


def test_a_large_cluster_is_drawn_namespace_by_namespace_with_how_to_see_one_workload(tmp_path):
    edges = teams_cluster()
    status = {(row.client, row.server, row.protocol, row.port): ALLOWED for row in edges.itertuples()}
    status[("team-03/svc-5", "data/postgres", "TCP", 5432)] = WOULD_BREAK
    figure = pictures.workload_graph(edges, status=status)
    labels = texts(figure)
    assert not any("svc-" in label for label in labels)  # no workload drawn one by one
    assert labels.count("6 workloads") == 12 and "world\n12 addresses" in labels
    (subtitle,) = [label for label in labels if label.startswith("75 workloads, 12 other endpoints, 168 edges")]
    assert "each of the 15 namespaces is one node" in subtitle and "--workload NAMESPACE/NAME" in subtitle
    assert "TCP/8080-8084" not in labels and "TCP/8080,8081 +3 more" in labels  # inside a team: its loop
    drawn = arrows(figure)
    assert len(drawn["team-03/* -> data/*"]) == 1 and len(drawn["team-04/* -> data/*"]) == 1
    assert color_of(drawn["team-03/* -> data/*"][0]) == to_rgb(STATUS_COLORS[WOULD_BREAK])
    assert color_of(drawn["team-04/* -> data/*"][0]) == to_rgb(STATUS_COLORS[ALLOWED])
    assert set(drawn) == {
        *(f"team-{t:02d}/* -> {server}" for t in range(12) for server in (f"team-{t:02d}/*", "data/*", "world")),
        *(f"team-{t:02d}/* -> kube-system/*" for t in range(12)),
        *(f"ingress/* -> team-{t:02d}/*" for t in range(12)),
    }
    for name in ("a.svg", "b.svg"):
        pictures.save(pictures.workload_graph(edges, status=status), tmp_path / name)
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_the_size_limit_can_be_raised_to_draw_every_workload():
    edges = teams_cluster(teams=5)  # 33 workloads, 70 edges
    assert "6 workloads" in texts(pictures.workload_graph(edges))
    labels = texts(pictures.workload_graph(edges, max_workloads=40))
    assert "svc-0" in labels and "6 workloads" not in labels


# ---------------------------------------------------------------------------------------------------- the matrix


def test_matrix_writes_the_flow_count_of_every_namespace_pair(capture, tmp_path):
    edges = api.edges(capture)
    figure = pictures.namespace_matrix(edges)
    pictures.save(figure, tmp_path / "matrix.png")
    assert_png(tmp_path / "matrix.png")
    client = edges["client_namespace"].where(edges["client_entity"] == "pod", edges["client_entity"])
    server = edges["server_namespace"].where(edges["server_entity"] == "pod", edges["server_entity"])
    totals = edges.groupby([client, server])["count"].sum()
    labels = texts(figure)
    assert set(client) | set(server) <= set(labels)
    assert {f"{count:,}" for count in totals} <= set(labels)


def test_matrix_frames_the_cells_with_would_break_traffic(shop):
    axes = pictures.namespace_matrix(api.edges(shop), status=compared(api.edges(shop))).axes[0]
    rows = [label.get_text() for label in axes.get_yticklabels()]
    columns = [label.get_text() for label in axes.get_xticklabels()]
    frames = [
        patch.get_xy()
        for patch in axes.patches
        if isinstance(patch, Rectangle) and to_rgb(patch.get_edgecolor()) == to_rgb(STATUS_COLORS[WOULD_BREAK])
    ]
    assert frames == [(columns.index("payments") - 0.45, rows.index("shop") - 0.45)]


# ---------------------------------------------------------------------------------------------------- one workload


def test_workload_view_lists_clients_and_servers_with_ports_and_counts(capture, tmp_path):
    edges = api.edges(capture)
    workload = edges.groupby("client")["count"].sum().idxmax()
    figure = pictures.workload_view(edges, workload, dns_names=capture.dns_names)
    pictures.save(figure, tmp_path / "view.png")
    assert_png(tmp_path / "view.png")
    labels = texts(figure)
    mine = edges[(edges["client"] == workload) | (edges["server"] == workload)]
    for row in mine.itertuples():
        peer = row.server if row.client == workload else row.client
        assert any(peer.split(":")[-1] in label for label in labels), peer
        assert any(f"{row.protocol}/{row.port}  {row.count:,} flow" in label for label in labels), row
    assert set(arrows(figure)) == pairs(mine)
    assert_no_text_overlaps(figure)


def test_workload_view_colours_by_status(shop):
    drawn = arrows(pictures.workload_view(api.edges(shop), "shop/frontend", status=compared(api.edges(shop))))
    assert color_of(drawn["shop/frontend -> payments/payments"][0]) == to_rgb(STATUS_COLORS[WOULD_BREAK])
    assert color_of(drawn["shop/frontend -> shop/reviews"][0]) == to_rgb(STATUS_COLORS[UNOBSERVED])
    assert color_of(drawn["shop/frontend -> shop/catalog"][0]) == to_rgb(STATUS_COLORS[ALLOWED])


def test_workload_view_of_an_unknown_workload_says_which_exist(shop):
    with pytest.raises(ValueError, match=r"unknown workload 'shop/nope'.*shop/frontend"):
        pictures.workload_view(api.edges(shop), "shop/nope")


# ---------------------------------------------------------------------------------------------------- no traffic, files


def test_no_traffic_gives_a_picture_that_says_so(shop, tmp_path):
    empty = api.edges(shop, verdicts=["NO-SUCH-VERDICT"])
    assert empty.empty
    for draw in (pictures.workload_graph, pictures.namespace_matrix):
        figure = draw(empty)
        assert "No traffic to show" in texts(figure)
        pictures.save(figure, tmp_path / "empty.png")
        assert imread(tmp_path / "empty.png").shape[1] > 0
    with pytest.raises(ValueError, match="there is no traffic"):
        pictures.workload_view(empty, "shop/frontend")


def test_svg_and_png_are_byte_identical_run_after_run(shop, tmp_path):
    edges = api.edges(shop)
    figure = pictures.workload_graph(edges, dns_names=shop.dns_names)
    pictures.save(figure, tmp_path / "a.svg")
    pictures.save(figure, tmp_path / "b.svg")
    pictures.save(pictures.workload_graph(edges, dns_names=shop.dns_names), tmp_path / "c.svg")
    svg = (tmp_path / "a.svg").read_bytes()
    assert svg.startswith(b"<?xml") and b"<dc:date>" not in svg
    assert svg == (tmp_path / "b.svg").read_bytes() == (tmp_path / "c.svg").read_bytes()
    for name in ("a.png", "b.png"):
        pictures.save(pictures.namespace_matrix(edges), tmp_path / name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_pictures_show_in_a_notebook_without_pyplot(shop):
    """Jupyter displays `_repr_png_`; a bare Figure only has a text repr unless pyplot set up the inline backend."""
    assert pictures.namespace_matrix(api.edges(shop))._repr_png_().startswith(PNG_SIGNATURE)


def test_save_refuses_other_formats(shop, tmp_path):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        pictures.save(pictures.namespace_matrix(api.edges(shop)), tmp_path / "matrix.pdf")
