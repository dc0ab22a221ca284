"""Acceptance on the real Istio bookinfo capture: the policies allow exactly what was seen."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from recommender import api
from recommender.cli import main
from recommender.output_folder import MANIFEST
from recommender.selectors import is_volatile


@pytest.fixture
def result(bookinfo_files):
    return api.recommend(api.load_observations(bookinfo_files))


def allowed(result) -> set[tuple[str, str, str, int, str]]:
    """(policy namespace, policy name, direction, peer description, port) of every rule entry."""
    entries = set()
    for plan in result.proposal.policies:
        spec = plan.manifest["spec"]
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction, []):
                for peer in rule[key]:
                    for port in rule["ports"]:
                        entries.add((plan.name, direction, _peer(peer), port["protocol"], port["port"]))
    return entries


def _peer(peer: dict) -> str:
    if "ipBlock" in peer:
        return peer["ipBlock"]["cidr"]
    labels = ",".join(f"{k}={v}" for k, v in sorted(peer["podSelector"].get("matchLabels", {}).items()))
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name", "")
    return f"{namespace}/{labels}" if namespace else labels


def test_bookinfo_paths_are_allowed_both_ways(result):
    rules = allowed(result)
    for reviews in ("v1", "v2", "v3"):
        assert ("allow-productpage-v1", "egress", f"app=reviews,version={reviews}", "TCP", 9080) in rules
        assert (f"allow-reviews-{reviews}", "ingress", "app=productpage", "TCP", 9080) in rules
    assert ("allow-productpage-v1", "egress", "app=details", "TCP", 9080) in rules
    assert ("allow-details-v1", "ingress", "app=productpage", "TCP", 9080) in rules
    assert ("allow-ratings-v1", "egress", "app=productpage", "TCP", 9080) in rules
    assert ("allow-productpage-v1", "ingress", "app=ratings", "TCP", 9080) in rules
    for protocol in ("UDP", "TCP"):  # every pod resolves, through the namespace's allow-dns
        assert ("allow-dns", "egress", "kube-system/k8s-app=kube-dns", protocol, 53) in rules
    assert not any(rule[0] != "allow-dns" and rule[4] == 53 for rule in rules)


def test_reviews_v1_does_not_call_ratings_but_v2_and_v3_do(result):
    rules = allowed(result)
    assert ("allow-ratings-v1", "ingress", "app=reviews,version=v2", "TCP", 9080) in rules
    assert ("allow-ratings-v1", "ingress", "app=reviews,version=v3", "TCP", 9080) in rules
    assert not any(rule[0] == "allow-reviews-v1" and rule[1] == "egress" for rule in rules)


def test_every_rule_port_is_a_server_port(result):
    ports = {rule[4] for rule in allowed(result)}
    assert ports <= {53, 9080, 14250}, ports  # never a client's ephemeral port from a reply


def test_host_ingress_makes_no_rule_but_is_reported(result):
    host_ips = set(result.proposal.findings.host_ingress["client_ip"])
    assert host_ips == {"10.244.0.148"}
    assert not any(rule[2].startswith("10.244.0.148") for rule in allowed(result))


def test_no_selector_uses_a_volatile_label(result):
    for plan in result.proposal.policies:
        text = yaml.safe_dump(plan.manifest)
        for selector in _selectors(plan.manifest):
            assert not any(is_volatile(key) for key in selector), (plan.name, selector)
        assert "pod-template-hash" not in text and "io.cilium" not in text


def _selectors(manifest: dict):
    spec = manifest["spec"]
    yield spec["podSelector"].get("matchLabels", {})
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction, []):
            for peer in rule[key]:
                if "podSelector" in peer:
                    yield peer["podSelector"].get("matchLabels", {})


def test_kube_system_is_a_peer_but_gets_no_policies(result):
    assert {plan.namespace for plan in result.proposal.policies} == {"bookinfo", "jaeger"}
    assert result.proposal.managed_namespaces == ["bookinfo", "jaeger"]


def test_two_runs_give_byte_identical_files(bookinfo_files, tmp_path):
    runner = CliRunner()
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        outcome = runner.invoke(main, ["recommend", *bookinfo_files, "-o", str(out), "--explain", "-q"])
        assert outcome.exit_code == 0, outcome.output
        outputs.append({path.name: path.read_bytes() for path in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert sorted(outputs[0]) == [
        MANIFEST,
        "bookinfo.yaml",
        "findings.json",
        "findings.md",
        "jaeger.yaml",
        "kustomization.yaml",
    ]


@pytest.mark.parametrize("explain", [False, True])
def test_every_generated_file_validates_against_kubernetes_1_30_strict(bookinfo_files, tmp_path, explain):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out = tmp_path / "policies"
    args = ["recommend", *bookinfo_files, "-o", str(out), "-q"] + (["--explain"] if explain else [])
    assert CliRunner().invoke(main, args).exit_code == 0
    documents = 0
    for path in sorted(out.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, "1.30.0", strict=True)
            documents += 1
    assert documents == 11
