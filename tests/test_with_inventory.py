"""The inventory everywhere: recommend, verify and diff with a cluster snapshot or the cluster itself."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from click.testing import CliRunner

from benchmarks.generate import inventory_snapshot, shop_topology, write_capture
from recommender import api
from recommender.cli import main
from tests.kube_api_server import KubeApiServer, record_api_lists, write_kubeconfig

TOKEN = "test-token-0a1b2c3d"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    capture = folder / "capture.json"
    write_capture(str(capture), shop_topology(), 20000)
    snapshot = inventory_snapshot(shop_topology())
    path = folder / "inventory.json"
    path.write_text(json.dumps(snapshot))
    return str(capture), str(path), snapshot


def with_canary(snapshot: dict) -> dict:
    """A frontend canary nobody called: same name label, other part-of, so only the inventory knows it."""
    snapshot = copy.deepcopy(snapshot)
    frontend = next(
        i for i in snapshot["items"] if i["kind"] == "Pod" and i["metadata"]["name"].startswith("frontend-")
    )
    canary = copy.deepcopy(frontend)
    canary["metadata"]["name"] = "frontend-canary-0"
    canary["metadata"]["uid"] = "canary-uid"
    canary["metadata"]["labels"] = {"app.kubernetes.io/name": "frontend", "app.kubernetes.io/part-of": "shop-canary"}
    canary["metadata"].pop("ownerReferences", None)
    canary["status"]["podIP"] = "10.244.200.200"
    canary["status"]["podIPs"] = [{"ip": "10.244.200.200"}]
    snapshot["items"].append(canary)
    return snapshot


def selector_of(result, name: str) -> dict:
    plan = next(p for p in result.proposal.policies if p.name == name)
    return plan.manifest["spec"]["podSelector"]


def test_selectors_are_exact_against_every_pod_of_the_inventory(shop, tmp_path):
    capture, _, snapshot = shop
    inventory_path = tmp_path / "inventory.json"
    inventory_path.write_text(json.dumps(with_canary(snapshot)))
    observed = api.load_observations([capture])
    without = api.recommend(observed)
    assert selector_of(without, "allow-frontend") == {"matchLabels": {"app.kubernetes.io/name": "frontend"}}
    inventory = api.read_inventory(path=str(inventory_path))
    result = api.recommend(observed, inventory=inventory)
    assert selector_of(result, "allow-frontend") == {
        "matchLabels": {"app.kubernetes.io/name": "frontend", "app.kubernetes.io/part-of": "shop"}
    }
    assert result.check.recall == 1.0 and not result.check.excess


def test_the_inventory_names_workloads_and_container_ports_in_the_evidence(shop):
    capture, inventory_path, snapshot = shop
    snapshot = copy.deepcopy(snapshot)
    for item in snapshot["items"]:
        if item["kind"] == "Pod" and item["metadata"]["name"].startswith("catalog-db-"):
            item["spec"]["containers"][0]["ports"] = [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}]
    inventory = api.read_inventory(path=inventory_path)
    from collectors.inventory import inventory_from_objects

    named = inventory_from_objects(snapshot["items"], "test")
    result = api.recommend(api.load_observations([capture]), inventory=named)
    db = next(p for p in result.proposal.policies if p.name == "allow-catalog-db")
    assert db.evidence_for("ingress")[0].ports == ("TCP/5432 (postgres)",)
    assert {
        p.workload for p in api.recommend(api.load_observations([capture]), inventory=inventory).proposal.policies
    } >= {
        "shop/catalog-db",
        "shop/frontend",
    }


def test_cli_recommend_with_an_inventory_file(shop, tmp_path):
    capture, inventory_path, _ = shop
    out = tmp_path / "policies"
    command = ["recommend", capture, "--inventory", inventory_path, "-o", str(out), "--cni", "kubernetes"]
    outcome = CliRunner().invoke(main, command)
    assert outcome.exit_code == 0, outcome.output
    assert "recall (observed connections allowed)" in outcome.stderr
    documents = list(yaml.safe_load_all((out / "shop.yaml").read_text()))
    assert documents[0]["metadata"]["name"] == "default-deny"


def test_inventory_and_cluster_flags_are_exclusive(shop):
    capture, inventory_path, _ = shop
    outcome = CliRunner().invoke(main, ["recommend", capture, "--inventory", inventory_path, "--context", "x"])
    assert outcome.exit_code == 2 and "either --inventory or --cluster" in outcome.stderr


def test_diff_reads_the_cluster_policies_from_the_inventory(shop, tmp_path):
    capture, _, snapshot = shop
    snapshot = copy.deepcopy(snapshot)
    snapshot["items"].append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "payments"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(snapshot))
    outcome = CliRunner().invoke(main, ["diff", capture, "--inventory", str(path), "-o", "json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout)
    assert {(c["client"], c["server"]) for c in report["would_break"]} == {("shop/checkout", "payments/payments")}
    outcome = CliRunner().invoke(main, ["diff", capture])
    assert outcome.exit_code == 1 and "diff needs policies" in outcome.stderr


def test_inventory_command_through_the_kubernetes_api(shop, tmp_path):
    _, _, snapshot = shop
    root = tmp_path / "api"
    record_api_lists(root, snapshot)
    with KubeApiServer(root, token=TOKEN) as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url, token=TOKEN)
        out = tmp_path / "cluster.json"
        outcome = CliRunner().invoke(main, ["inventory", "--kubeconfig", str(kubeconfig), "-o", str(out)])
        assert outcome.exit_code == 0, outcome.output
        assert TOKEN not in outcome.output + outcome.stderr
    from_api = api.read_inventory(path=str(out))
    from collectors.inventory import inventory_from_objects

    assert from_api == inventory_from_objects(snapshot["items"], "snapshot")
