"""The scheduled report: its analysis on small stores, then the container's entry command run with the
CronJob's own arguments against the loopback Hubble Relay and a recorded inventory, three windows in a
row, and a run killed while it holds the store."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from benchmarks.generate import START, Topology, flow_lines, inventory_snapshot, shop_topology
from collectors.enrich import apply_inventory
from collectors.inventory import Inventory, inventory_from_objects
from collectors.records import ObservationSet, ReadStats
from recommender import api
from recommender.cli import main
from recommender.output_folder import MANIFEST
from recommender.report import GAP, Report, ReportOptions, recommendation_changes
from recommender.store import LOCK, ObservationStore, StoreError, locked_store
from tests.conftest import REPO
from tests.hubble_server import FakeRelay, parse_lines, serve
from tests.kube_api_server import KubeApiServer, record_api_lists, write_kubeconfig
from tests.test_deploy import container, the
from tests.test_store import RECOMMENDATION, add, observed_at

WORLD_PATH = ("shop/checkout", "world:203.0.113.10", "TCP", 443)
UNUSED_RULE = ("shop", "catalog-db", "ingress", 1)
CATALOG_DB_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "catalog-db", "namespace": "shop"},
    "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "catalog-db"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": client}}}],
                "ports": [{"protocol": "TCP", "port": 5432}],
            }
            for client in ("catalog", "checkout")  # checkout never calls the database: rule 1 is unused
        ],
    },
}
TOKEN = "cronjob-token-5e6f"
EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")


def without_world_path() -> Topology:
    shop = shop_topology()
    return Topology(shop.workloads, [c for c in shop.connections if not c.server.startswith("world:")])


def advance(directory: str, observed: ObservationSet, **options: Any) -> Report:
    """What the `report` command does with a window: review it, then add it to the store."""
    with locked_store(directory) as store:
        report = api.review(store, observed, **options)
        store.append(report.window, observed, report.recommendation_yaml)
    return report


def path_keys(rows: list[dict[str, Any]]) -> list[tuple]:
    return [(row["client"], row["server"], row["protocol"], row["port"]) for row in rows]


# -- the analysis ---------------------------------------------------------------------------------


def test_a_path_is_new_only_in_the_first_window_that_has_it(tmp_path):
    directory = str(tmp_path / "store")
    advance(directory, observed_at(START, topology=without_world_path()))
    report = advance(directory, observed_at(START + timedelta(hours=1)))
    assert path_keys(report.new_paths.to_dict("records")) == [WORLD_PATH]
    assert (report.window.paths, report.window.new_paths) == (len(shop_topology().connections), 1)
    assert report.drift_reasons() == ["1 new path(s)", "the recommendation changed (1 policies)"]


def test_paths_not_seen_for_stale_after_are_reported(tmp_path):
    directory = str(tmp_path / "store")
    add(directory, observed_at(START))
    later = observed_at(START + timedelta(days=10), topology=without_world_path())
    report = api.review(ObservationStore(directory), later, options=ReportOptions(stale_after=timedelta(days=7)))
    (stale,) = report.stale_paths.to_dict("records")
    assert path_keys([stale]) == [WORLD_PATH] and stale["last_seen"] == START + timedelta(minutes=10)


def test_the_inventory_names_each_observation_set_once(tmp_path, monkeypatch):
    """This window and the earlier ones are named once each; the picture, its paths, the comparison and the
    recommendation reuse them."""
    inventory = inventory_from_objects(inventory_snapshot(shop_topology())["items"], "shop")
    named: list[int] = []

    def counting(observed: ObservationSet, given: Inventory) -> ObservationSet:
        named.append(len(observed.observations))
        return apply_inventory(observed, given)

    monkeypatch.setattr(api, "apply_inventory", counting)
    directory = str(tmp_path / "store")
    add(directory, observed_at(START))
    later = observed_at(START + timedelta(hours=1), topology=without_world_path())
    report = api.review(ObservationStore(directory), later, policies=[], inventory=inventory)
    assert named == [len(later.observations), len(observed_at(START).observations)]
    assert report.comparison is not None and report.recommendation.proposal.policies
    named.clear()
    api.recommend(later, inventory=inventory)
    assert named == [len(later.observations)]


def test_the_first_run_is_a_baseline_unless_observed_connections_would_break(tmp_path):
    directory = str(tmp_path / "store")
    baseline = api.review(ObservationStore(directory), observed_at(START), policies=[], policy_source="none")
    assert baseline.first_run and len(baseline.new_paths) == len(shop_topology().connections)
    assert not baseline.drift
    deny_shop = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    breaking = api.review(ObservationStore(directory), observed_at(START), policies=[deny_shop], policy_source="test")
    assert breaking.drift_reasons() == ["5 observed connection(s) would break on enforcement"]


def test_rules_no_observed_connection_used_are_reported_with_what_they_allow(tmp_path):
    report = api.review(ObservationStore(str(tmp_path)), observed_at(START), policies=[CATALOG_DB_POLICY])
    (unused,) = report.comparison.unused_rules.to_dict("records")
    assert (unused["namespace"], unused["policy"], unused["direction"], unused["rule"]) == UNUSED_RULE
    assert unused["text"] == (
        "pods [app.kubernetes.io/name=checkout] in namespaces [kubernetes.io/metadata.name=shop] on TCP/5432"
    )


def test_the_picture_is_settled_after_three_windows_without_a_new_path(tmp_path):
    directory = str(tmp_path / "store")
    paths = len(shop_topology().connections)
    with locked_store(directory) as store:  # a first window, and one more with the same paths
        for hour, new in ((0, paths), (1, 0)):
            observed = observed_at(START + timedelta(hours=hour))
            store.append(replace(store.next_window(observed), paths=paths, new_paths=new), observed, RECOMMENDATION)
    third = advance(directory, observed_at(START + timedelta(hours=2)))
    fourth = api.review(ObservationStore(directory), observed_at(START + timedelta(hours=3)))
    assert (third.settled, fourth.settled) == (False, True)
    assert fourth.settling["new_paths"].tolist() == [paths, 0, 0, 0]


def test_a_window_with_far_fewer_flows_than_usual_is_a_gap_and_breaks_the_settling(tmp_path):
    directory = str(tmp_path / "store")
    for hour in range(3):
        advance(directory, observed_at(START + timedelta(hours=hour)))
    thin = observed_at(START + timedelta(hours=3))
    thin = replace(thin, stats=ReadStats(flows=thin.stats.flows // 20))
    report = advance(directory, thin)
    assert report.window.gap == f"{thin.stats.flows:,} flows, fewer than 10% of the median of the earlier windows " + (
        f"({observed_at(START).stats.flows:,})"
    )
    assert report.exit_status == GAP and report.warnings()
    after = api.review(ObservationStore(directory), observed_at(START + timedelta(hours=4)))
    assert not after.settled
    assert after.unsettled_reasons() == [f"window 000004 is a gap: {report.window.gap}"]


def test_the_same_window_twice_is_refused_and_never_counted(tmp_path):
    directory = str(tmp_path / "store")
    advance(directory, observed_at(START))
    with pytest.raises(StoreError, match="are those of window 000001, already stored"):
        advance(directory, observed_at(START))
    assert [w.id for w in ObservationStore(directory).windows] == ["000001"]


def test_a_window_older_than_the_newest_stored_is_refused(tmp_path):
    directory = str(tmp_path / "store")
    advance(directory, observed_at(START + timedelta(hours=1)))
    for moment in (START, START + timedelta(hours=1, minutes=5)):  # older, and overlapping
        with pytest.raises(StoreError, match="starts before the newest stored window 000001 ends"):
            advance(directory, observed_at(moment, topology=without_world_path()))
    assert len(ObservationStore(directory).windows) == 1


def test_the_picture_is_not_settled_while_a_managed_namespace_goes_unobserved(tmp_path):
    directory = str(tmp_path / "store")
    shop = shop_topology()
    without_payments = Topology(shop.workloads, [c for c in shop.connections if "payments" not in c.client + c.server])
    advance(directory, observed_at(START))
    for hour in (1, 2):
        advance(directory, observed_at(START + timedelta(hours=hour), topology=without_payments))
    report = api.review(ObservationStore(directory), observed_at(START + timedelta(hours=3), topology=without_payments))
    assert "payments" in report.recommendation.proposal.managed_namespaces  # from the first window, still kept
    assert report.unsettled_reasons() == ["no traffic of managed namespace(s) payments in the last 3 window(s)"]
    assert not report.settled


def test_after_only_gaps_the_first_window_with_flows_is_the_baseline(tmp_path):
    directory = str(tmp_path / "store")
    empty = observed_at(START)
    empty = replace(empty, observations=empty.observations.iloc[0:0], stats=ReadStats())
    gap = advance(directory, empty)
    assert (gap.window.gap, gap.exit_status, gap.first_run) == ("no flows", GAP, True)
    baseline = advance(directory, observed_at(START))
    assert baseline.first_run and baseline.drift_reasons() == [] and baseline.exit_status == 0


def test_recommendation_changes_name_policies_and_rules():
    def policy(name: str, *ports: int) -> dict[str, Any]:
        rules = [{"ports": [{"protocol": "TCP", "port": port}]} for port in ports]
        spec = {"podSelector": {"matchLabels": {"app": name}}, "policyTypes": ["Ingress"], "ingress": rules}
        return {"metadata": {"name": name, "namespace": "shop"}, "spec": spec}

    changes = recommendation_changes([policy("a", 80), policy("b", 80, 443)], [policy("b", 443, 8443), policy("c")])
    assert changes.to_dict("split")["data"] == [
        ["shop/a", "removed", ""],
        ["shop/b", "changed", "- ingress all peers on TCP/80"],
        ["shop/b", "changed", "+ ingress all peers on TCP/8443"],
        ["shop/c", "added", ""],
    ]


# -- the command line -----------------------------------------------------------------------------


def run(*args: str, **kwargs: Any):
    return CliRunner().invoke(main, ["report", *args], **kwargs)


def test_usage_errors_exit_2(tmp_path):
    assert run(EXAMPLE).exit_code == 2  # no --store
    assert run(EXAMPLE, "--store", str(tmp_path), "--retain", "a month").exit_code == 2
    bad = run(EXAMPLE, "--store", str(tmp_path), env={"NETPOL_RECOMMENDER_STALE_AFTER": "soon"})
    assert bad.exit_code == 2 and "invalid duration 'soon'" in bad.stderr


def test_a_store_fed_one_real_window_and_three_empty_ones_is_not_settled_and_reports_the_gaps(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    store, out = str(tmp_path / "store"), tmp_path / "report"
    runs = [run(source, "--store", store, "-o", str(out)) for source in (EXAMPLE, str(empty), str(empty), str(empty))]
    assert [outcome.exit_code for outcome in runs] == [0, GAP, GAP, GAP], [r.output for r in runs]
    document = json.loads((out / "report.json").read_text())
    assert document["exit_status"] == GAP and document["window"]["gap"] == "no flows"
    assert document["settling"]["settled"] is False
    assert document["settling"]["unmet"] == [
        "window 000002 is a gap: no flows",
        "window 000003 is a gap: no flows",
        "window 000004 is a gap: no flows",
        "no traffic of managed namespace(s) monitoring, payments, shop in the last 3 window(s)",
    ]
    (warning,) = document["warnings"]
    assert warning.startswith("window 000004 is a gap (no flows): it is stored, but it is no evidence")
    assert "> **Warning:** Window 000004 is a gap (no flows)" in (out / "report.md").read_text()
    assert "> **Warning:** Window 000004 is a gap" in runs[-1].stdout
    assert '<p class="warning"><strong>Warning:</strong> Window 000004 is a gap' in (out / "report.html").read_text()
    assert "warning: window 000004 is a gap (no flows)" in runs[-1].stderr
    assert "Settled" not in runs[-1].stdout


def test_a_store_another_run_holds_fails_with_exit_1_naming_it(tmp_path):
    with locked_store(str(tmp_path)):
        outcome = run(EXAMPLE, "--store", str(tmp_path), "--lock-timeout", "0.2")
    assert outcome.exit_code == 1
    assert f"in use by another run (pid {os.getpid()} on " in outcome.stderr


def readme_sample() -> tuple[str, str]:
    """The README's Sample report: the command that made it, and the Markdown it shows."""
    readme = (REPO / "README.md").read_text()
    found = re.search(r"^## Sample report\n.*?```sh\n(.*?)\n```.*?```markdown\n(.*?)```", readme, re.S | re.M)
    assert found, 'README.md has no "## Sample report" section with a ```sh command and a ```markdown block'
    return found.group(1), found.group(2)


def test_the_readme_sample_is_the_report_of_the_example_data(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the sample names its inputs relative to the repository
    command, sample = readme_sample()
    program, *arguments = command.split()
    assert program == "netpol-recommender"
    arguments[arguments.index("--store") + 1] = str(tmp_path / "store")
    outcome = CliRunner().invoke(main, arguments)
    assert outcome.exit_code == 3, outcome.output
    assert outcome.stdout == sample


# -- the container's entry command, as the CronJob runs it ------------------------------------------


@dataclass
class WindowRelay(FakeRelay):
    """A relay that ends the stream once it has served its flows, as a relay going away does: a --follow
    window then ends at once instead of after --duration. With `ends=False` it follows until cancelled."""

    ends: bool = True

    def GetFlows(self, request: Any, context: Any) -> Iterator[Any]:
        if self.ends:
            request.follow = False
        yield from super().GetFlows(request, context)


@contextmanager
def relay_serving(topology: Topology, hour: int, *, ends: bool = True) -> Iterator[str]:
    """The topology's flows, `hour` hours after the generator's start, on a loopback relay; its address."""
    responses = parse_lines(flow_lines(topology, 2500))
    for response in responses:
        response.flow.time.seconds += hour * 3600
        if response.time.seconds:
            response.time.seconds += hour * 3600
    server, address = serve(WindowRelay(responses, ends=ends))
    try:
        yield address
    finally:
        server.stop(grace=None)


def entry_command() -> list[str]:
    """The image's ENTRYPOINT: the console script of this interpreter's environment, if installed."""
    script = Path(sys.executable).with_name("netpol-recommender")
    return [str(script)] if script.exists() else [sys.executable, "-m", "recommender.cli"]


def expand(argument: str, environment: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of container args: defined names are replaced, `$$` escapes, and
    undefined references are left as they are."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return environment.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\((\w+)\)", value, argument)


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    markdown: str


@dataclass
class CronJob:
    """The CronJob's container: the ConfigMap as its environment, its args expanded, and only the relay
    address, the store and report paths, and the cluster (a kubeconfig for the loopback API server) swapped."""

    folder: Path
    kubeconfig: Path

    @property
    def store(self) -> Path:
        return self.folder / "store"

    def start(self, relay: str, number: int) -> subprocess.Popen:
        environment = {**the("ConfigMap")["data"], "HUBBLE_RELAY_ADDRESS": relay}
        paths = {"--store=": self.store, "--output=": self.folder / f"reports-{number}"}
        arguments = []
        for argument in container()["args"]:
            prefix = next((p for p in paths if argument.startswith(p)), None)
            arguments.append(f"{prefix}{paths[prefix]}" if prefix else expand(argument, environment))
        process_environment = {**os.environ, **environment, "KUBECONFIG": str(self.kubeconfig)}
        process_environment["PYTHONPATH"] = str(REPO)
        return subprocess.Popen(
            [*entry_command(), *arguments],
            env=process_environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, relay: str, number: int) -> Run:
        process = self.start(relay, number)
        stdout, stderr = process.communicate(timeout=180)
        reports = self.folder / f"reports-{number}"
        report = json.loads((reports / "report.json").read_text()) if process.returncode in (0, 3) else {}
        markdown = (reports / "report.md").read_text() if report else ""
        return Run(process.returncode, stdout, stderr, report, markdown)


@pytest.fixture(scope="module")
def cronjob(tmp_path_factory) -> Iterator[CronJob]:
    folder = tmp_path_factory.mktemp("cronjob")
    snapshot = copy.deepcopy(inventory_snapshot(shop_topology()))
    snapshot["items"].append(CATALOG_DB_POLICY)
    record_api_lists(folder / "api", snapshot)
    with KubeApiServer(folder / "api", token=TOKEN) as server:
        yield CronJob(folder, write_kubeconfig(folder / "kubeconfig", server.url, token=TOKEN))


@pytest.fixture(scope="module")
def runs(cronjob) -> list[Run]:
    """Window 1: the shop without its call to the payment API; window 2 adds it; window 3 is window 2 again."""
    results = []
    for number, topology in enumerate([without_world_path(), shop_topology(), shop_topology()], start=1):
        with relay_serving(topology, hour=number) as relay:
            results.append(cronjob.run(relay, number))
    return results


def test_the_three_runs_exit_as_documented(runs):
    assert [run.exit_code for run in runs] == [0, 3, 0], [run.stderr for run in runs]
    assert [run.report["first_run"] for run in runs] == [True, False, False]
    assert runs[1].report["drift_reasons"] == ["1 new path(s)", "the recommendation changed (1 policies)"]


def test_a_path_added_in_window_2_is_new_in_run_2_and_not_in_run_3(runs):
    assert WORLD_PATH not in path_keys(runs[0].report["new_paths"])
    assert path_keys(runs[1].report["new_paths"]) == [WORLD_PATH]
    assert runs[2].report["new_paths"] == []
    changes = runs[1].report["recommendation"]["changes"]
    assert changes == [
        {"policy": "shop/allow-checkout", "change": "changed", "detail": "+ egress ipBlock 203.0.113.10/32 on TCP/443"}
    ]
    assert runs[2].report["recommendation"]["changes"] == []


def test_a_rule_unused_in_every_window_is_reported(runs):
    for run in runs:
        unused = run.report["policies_in_force"]["unused_rules"]
        assert [(r["namespace"], r["policy"], r["direction"], r["rule"]) for r in unused] == [UNUSED_RULE]
        assert run.report["policies_in_force"]["would_break"] == []


def test_the_markdown_report_is_printed_for_the_logs_and_written_with_html_json_and_policies(runs, cronjob):
    for number, run in enumerate(runs, start=1):
        assert run.stdout == run.markdown
        reports = cronjob.folder / f"reports-{number}"
        assert {"report.md", "report.html", "report.json", "recommendation.yaml", MANIFEST} == set(os.listdir(reports))
        assert "<svg" in (reports / "report.html").read_text()
    assert "## How settled is the picture" in runs[2].markdown


def test_the_store_holds_the_three_windows_on_the_flows_clock(runs, cronjob):
    store = ObservationStore(str(cronjob.store))
    assert [(w.id, w.new_paths) for w in store.windows] == [("000001", 25), ("000002", 1), ("000003", 0)]
    assert [w.start.hour for w in store.windows] == [START.hour + 1, START.hour + 2, START.hour + 3]
    picture = store.picture(store.windows)
    assert picture.stats.flows == sum(w.flows for w in store.windows)
    assert runs[2].report["settling"]["windows"][-1]["new_paths"] == 0


def test_a_run_killed_while_it_holds_the_store_leaves_it_readable(runs, cronjob):
    before = ObservationStore(str(cronjob.store)).windows
    with relay_serving(shop_topology(), hour=4, ends=False) as relay:  # the window never ends by itself
        process = cronjob.start(relay, 4)
        try:
            deadline = time.monotonic() + 120
            while f'"pid": {process.pid},' not in (cronjob.store / LOCK).read_text():
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
    store = ObservationStore(str(cronjob.store))
    assert store.windows == before
    assert all(len(store.observations(window).observations) for window in store.windows)
    with locked_store(str(cronjob.store), timeout=1):  # the kernel released the killed run's lock
        pass


def test_the_recommendation_is_made_for_the_cni_the_report_is_given(tmp_path):
    observed = api.load_observations([EXAMPLE])  # Cilium's: the API server is no ipBlock there
    on_cilium = api.review(ObservationStore(str(tmp_path / "a")), observed)
    on_the_spec = api.review(ObservationStore(str(tmp_path / "b")), observed, options=ReportOptions(cni="kubernetes"))
    api_server = "cidr: 172.18.0.5/32"
    assert api_server not in on_cilium.recommendation_yaml
    assert api_server in on_the_spec.recommendation_yaml
