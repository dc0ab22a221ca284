"""Unobserved workloads: named with an inventory, and each `--unobserved` mode proven by replay."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.generate import inventory_snapshot, shop_topology
from collectors.inventory import inventory_from_objects, snapshot_json
from collectors.records import labels_from_text
from recommender import api
from recommender.cli import main
from recommender.cluster_model import cluster_model
from recommender.errors import RecommenderError
from recommender.findings import FindingKind
from recommender.selectors import choose_selectors
from recommender.semantics import Evaluator, ExternalPeer, parse_policies
from recommender.semantics.selectors import LabelSelector
from recommender.synthesis import SynthesisOptions
from recommender.unobserved import UnobservedMode, find_unobserved
from tests.conftest import REPO

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
NIGHTLY = "nightly-report"
OUTSIDER = ExternalPeer("192.0.2.77")


def nightly_pod(index: int) -> dict:
    """A pod of a Deployment that sent and received nothing during the window."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{NIGHTLY}-6b7c9d-{index}x2",
            "namespace": "shop",
            "labels": {
                "app.kubernetes.io/name": NIGHTLY,
                "app.kubernetes.io/part-of": "shop",
                "pod-template-hash": "6b7c9d",
            },
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{NIGHTLY}-6b7c9d", "controller": True}],
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "report", "ports": [{"containerPort": 9000}]}]},
        "status": {"phase": "Running", "podIP": f"10.244.7.{index}"},
    }


@pytest.fixture(scope="module")
def inventory():
    snapshot = inventory_snapshot(shop_topology())
    return inventory_from_objects([*snapshot["items"], nightly_pod(1), nightly_pod(2)], "test")


@pytest.fixture(scope="module")
def observed():
    return api.load_observations([EXAMPLE])


def recommend(observed, inventory, mode: UnobservedMode):
    # On the spec: on Cilium the example's prometheus (entity peers only) would be one more unobserved workload.
    return api.recommend(observed, SynthesisOptions(unobserved=mode, cni="kubernetes"), inventory)


def evaluator_of(result, inventory, tmp_path) -> tuple[Evaluator, list]:
    """The written proposal over the cluster's pods, and the nightly pods."""
    folder = tmp_path / "policies"
    api.write_policies(result.proposal, str(folder))
    model = cluster_model(result.observed, inventory)
    evaluator = Evaluator(parse_policies(api.load_policies(str(folder))), model.namespaces, model.pods)
    return evaluator, [pod for pod in model.pods if pod.name.startswith(NIGHTLY)]


def synthetic_connections_allowed(evaluator, pods, port: int = 9000) -> list[bool]:
    """A connection from a peer no rule names to each pod, and from each pod to it."""
    return [
        decision.allowed
        for pod in pods
        for decision in (evaluator.evaluate(OUTSIDER, pod, "TCP", port), evaluator.evaluate(pod, OUTSIDER, "TCP", port))
    ]


def test_isolate_names_the_workload_and_the_replay_shows_it_cut_off(observed, inventory, tmp_path):
    result = recommend(observed, inventory, UnobservedMode.ISOLATE)
    (item,) = result.proposal.unobserved.workloads
    assert (item.key, item.kind, item.isolated) == (f"shop/{NIGHTLY}", "Deployment", True)
    assert item.pods == (f"{NIGHTLY}-6b7c9d-1x2", f"{NIGHTLY}-6b7c9d-2x2")
    assert f"unobserved: shop/{NIGHTLY} (Deployment, 2 pods" in "\n".join(result.notes())
    assert ("unobserved workloads (no allow rule)", "1 (1 isolated)") in result.summary()
    (finding,) = [f for f in result.findings() if f.kind == FindingKind.UNOBSERVED_WORKLOAD]
    assert (finding.subject, finding.evidence) == (f"shop/{NIGHTLY}", item.pods)
    evaluator, pods = evaluator_of(result, inventory, tmp_path)
    assert len(pods) == 2 and synthetic_connections_allowed(evaluator, pods) == [False] * 4


def test_allow_as_is_exempts_exactly_the_workload_from_the_default_deny(observed, inventory, tmp_path):
    result = recommend(observed, inventory, UnobservedMode.ALLOW_AS_IS)
    deny = next(p for p in result.proposal.policies if (p.namespace, p.name) == ("shop", "default-deny"))
    selector = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": [NIGHTLY]}]}
    assert deny.manifest["spec"]["podSelector"] == selector
    dns = next(p for p in result.proposal.policies if (p.namespace, p.name) == ("shop", "allow-dns"))
    assert dns.manifest["spec"]["podSelector"] == selector
    assert result.check.left_as_is == 4
    evaluator, pods = evaluator_of(result, inventory, tmp_path)
    assert synthetic_connections_allowed(evaluator, pods) == [True] * 4
    frontend = [pod for pod in cluster_model(result.observed, inventory).pods if pod.name.startswith("frontend-")]
    assert synthetic_connections_allowed(evaluator, frontend, 8080) == [False] * (2 * len(frontend))


def test_allow_as_is_keeps_a_workload_isolated_when_no_label_sets_it_apart(observed, tmp_path):
    snapshot = inventory_snapshot(shop_topology())
    twin = nightly_pod(1)
    twin["metadata"]["labels"] = {"app.kubernetes.io/name": "frontend", "app.kubernetes.io/part-of": "shop"}
    twin["metadata"]["ownerReferences"] = []
    twin["metadata"]["name"] = "frontend-debug"
    inventory = inventory_from_objects([*snapshot["items"], twin], "test")
    result = recommend(observed, inventory, UnobservedMode.ALLOW_AS_IS)
    (item,) = result.proposal.unobserved.workloads
    assert item.isolated and "no label sets it apart" in item.outcome
    deny = next(p for p in result.proposal.policies if (p.namespace, p.name) == ("shop", "default-deny"))
    assert deny.manifest["spec"]["podSelector"] == {}


def test_skip_leaves_the_namespace_without_a_default_deny_and_dns_in_the_egress_policies(observed, inventory, tmp_path):
    result = recommend(observed, inventory, UnobservedMode.SKIP)
    names = {(p.namespace, p.name) for p in result.proposal.policies}
    assert ("shop", "default-deny") not in names and ("shop", "allow-dns") not in names
    assert ("payments", "default-deny") in names and ("payments", "allow-dns") in names
    checkout = next(p for p in result.proposal.policies if (p.namespace, p.name) == ("shop", "allow-checkout"))
    assert checkout.manifest["spec"]["egress"][-1]["ports"] == [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53},
    ]
    assert "DNS allowance" in checkout.evidence_for("egress")[-1].comment()
    evaluator, pods = evaluator_of(result, inventory, tmp_path)
    assert synthetic_connections_allowed(evaluator, pods) == [True] * 4
    assert result.check.dns.lookups > 0 and result.check.recall == 1.0


def test_without_an_inventory_unobserved_workloads_cannot_be_known(observed):
    result = api.recommend(observed)
    assert not result.proposal.unobserved.known
    assert ("unobserved workloads", "unknown without an inventory (--inventory FILE or --cluster)") in result.summary()
    with pytest.raises(RecommenderError, match="needs the inventory"):
        api.recommend(observed, SynthesisOptions(unobserved=UnobservedMode.SKIP))


def test_the_cli_prints_the_unobserved_workloads_and_refuses_modes_it_cannot_honour(inventory, tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(snapshot_json(inventory))
    runner = CliRunner(env={"COLUMNS": "200"})
    outcome = runner.invoke(
        main, ["recommend", EXAMPLE, "--inventory", str(path), "--unobserved", "allow-as-is", "--cni", "kubernetes"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert f"unobserved: shop/{NIGHTLY} (Deployment, 2 pods" in outcome.stderr
    assert "left as is: the default-deny does not select app.kubernetes.io/name=nightly-report" in outcome.stderr
    refused = runner.invoke(main, ["recommend", EXAMPLE, "--unobserved", "skip"])
    assert refused.exit_code == 1 and "needs the inventory" in refused.output


@st.composite
def namespaces_of_pods(draw):
    """A namespace of workloads whose pods draw labels from a small pool, so that labels collide."""
    keys, values = ["app", "tier", "team"], ["a", "b", "c"]
    rows = []
    for index in range(draw(st.integers(1, 6))):
        labels = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(values), min_size=1))
        for pod in range(draw(st.integers(1, 2))):
            extra = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(values)))
            text = ",".join(f"{k}={v}" for k, v in sorted({**extra, **labels}.items()))
            rows.append(("", "ns", f"w{index}-{pod}", f"w{index}", "Deployment", text))
    observed = draw(st.sets(st.sampled_from(sorted({row[3] for row in rows}))))
    return pd.DataFrame(rows, columns=["cluster", "namespace", "pod", "workload", "kind", "labels"]), observed


@given(namespaces_of_pods())
@settings(max_examples=200, deadline=None)
def test_allow_as_is_selects_every_pod_but_exactly_those_of_the_workloads_left_as_is(case):
    pods, observed = case
    members = [(row.namespace, row.workload, labels_from_text(row.labels)) for row in pods.itertuples()]
    found = find_unobserved(
        UnobservedMode.ALLOW_AS_IS, pods, True, ["ns"], {("ns", w) for w in observed}, choose_selectors(members)
    )
    selector = found.pod_selector("ns")
    left = {item.workload for item in found.workloads if not item.isolated}
    assert {item.workload for item in found.workloads} == set(pods["workload"]) - observed
    for row in pods.itertuples():
        assert selector.matches(labels_from_text(row.labels)) == (row.workload not in left), row


def test_a_label_shared_with_a_workload_that_stays_isolated_exempts_nothing():
    rows = [("w0", "app=a"), ("w1", "app=a"), ("w1", "app=a,tier=a"), ("w2", "tier=a")]
    pods = pd.DataFrame(
        [("", "ns", f"{w}-{i}", w, "Deployment", text) for i, (w, text) in enumerate(rows)],
        columns=["cluster", "namespace", "pod", "workload", "kind", "labels"],
    )
    found = find_unobserved(UnobservedMode.ALLOW_AS_IS, pods, True, ["ns"], {("ns", "w0")}, {})
    assert [(item.workload, item.isolated) for item in found.workloads] == [("w1", True), ("w2", True)]
    assert found.pod_selector("ns") == LabelSelector()
