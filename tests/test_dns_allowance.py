"""The DNS allowance: every egress-isolated pod resolves over UDP and TCP 53, proven by replay."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from benchmarks.generate import inventory_snapshot, shop_topology
from collectors.inventory import inventory_from_objects
from recommender import api
from recommender.cli import main
from recommender.cluster_model import cluster_model
from recommender.dns_allowance import DnsAllowance, DnsMode, DnsServer, prove_allowance
from recommender.errors import ReplayError
from recommender.semantics import Evaluator, ExternalPeer, parse_policies
from recommender.synthesis import SynthesisOptions, synthesize
from tests.builders import observation_set, observations
from tests.conftest import REPO

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
KUBE_DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
UDP_AND_TCP_53 = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
LOOKUP_AND_DB = (
    ("shop/web", "kube-system/coredns:k8s-app=kube-dns", "UDP", 53),
    ("shop/api", "shop/db", "TCP", 5432),
)


def policies_of(proposal) -> dict:
    return {(plan.namespace, plan.name): plan.manifest for plan in proposal.policies}


def test_every_namespace_gets_one_allow_dns_instead_of_dns_rules_in_workload_policies():
    found = policies_of(synthesize(observations(*LOOKUP_AND_DB)))
    assert found[("shop", "allow-dns")]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [KUBE_DNS_PEER], "ports": UDP_AND_TCP_53}],
    }
    assert ("shop", "allow-web") not in found  # its only traffic, the lookup, is the allowance's
    assert all("53" not in json.dumps(m["spec"]) for (_, name), m in found.items() if name != "allow-dns")


def test_dns_observed_keeps_the_lookups_as_observed_in_the_workload_policies():
    found = policies_of(synthesize(observations(*LOOKUP_AND_DB), options=SynthesisOptions(dns=DnsMode.OBSERVED)))
    assert ("shop", "allow-dns") not in found
    assert found[("shop", "allow-web")]["spec"]["egress"] == [
        {"to": [KUBE_DNS_PEER], "ports": [{"protocol": "UDP", "port": 53}]}
    ]


def test_dns_off_writes_no_dns_rule_and_reports_the_lookups_it_leaves_to_another_policy():
    observed = observation_set(observations(*LOOKUP_AND_DB))
    result = api.recommend(observed, SynthesisOptions(dns=DnsMode.OFF))
    assert "53" not in json.dumps([plan.manifest for plan in result.proposal.policies])
    reasons = list(result.proposal.findings.not_expressed["reason"])
    assert reasons == ["DNS lookup left to another policy (--dns off)"]
    assert result.check.recall == 1.0


def test_a_dns_server_in_a_managed_namespace_keeps_its_observed_rules():
    options = SynthesisOptions(exclude_namespaces=())
    proposal = synthesize(observations(*LOOKUP_AND_DB), options=options)
    assert not proposal.dns.active
    assert policies_of(proposal)[("kube-system", "allow-coredns")]["spec"]["ingress"]


def test_a_workload_called_dns_keeps_its_policy_name():
    proposal = synthesize(observations(("shop/dns", "kube-system/coredns:k8s-app=kube-dns", "TCP", 53),
                                       ("shop/dns", "shop/db", "TCP", 5432)))  # fmt: skip
    names = {plan.name for plan in proposal.policies if plan.namespace == "shop"}
    assert {"allow-dns", "netpol-recommender-allow-dns"} <= names


def _written_policies(result, tmp_path) -> list[dict]:
    """The proposal as a user applies it: written, then read back."""
    folder = tmp_path / "policies"
    api.write_policies(result.proposal, str(folder))
    return api.load_policies(str(folder))


def assert_every_pod_resolves(result, tmp_path, inventory=None) -> None:
    """Replay a UDP and a TCP lookup from every pod of every managed namespace to every DNS server pod
    (`k8s-app: kube-dns`) and to node-local-dns's IP when the allowance names it."""
    model = cluster_model(result.observed, inventory)
    evaluator = Evaluator(parse_policies(_written_policies(result, tmp_path)), model.namespaces, model.pods)
    pods = list(dict.fromkeys(model.pods))  # a pod seen under several names is one pod
    servers = [pod for pod in pods if pod.labels.get("k8s-app") == "kube-dns"]
    servers += [ExternalPeer(server.ip) for server in result.proposal.dns.servers if server.ip]
    clients = [pod for pod in pods if pod.namespace in result.proposal.managed_namespaces]
    assert servers and clients
    for client in clients:
        for server in servers:
            for protocol in ("UDP", "TCP"):
                decision = evaluator.evaluate(client, server, protocol, 53)
                assert decision.allowed, str(decision)
    assert result.check.dns.lookups == len(clients) * len(servers) * 2


def test_every_pod_of_the_example_resolves_over_udp_and_tcp(tmp_path):
    result = api.recommend(api.load_observations([EXAMPLE]))
    assert_every_pod_resolves(result, tmp_path)
    dns_policies = [p for p in result.proposal.policies if p.name == "allow-dns"]
    assert sorted(p.namespace for p in dns_policies) == result.proposal.managed_namespaces
    assert not result.check.excess  # the allowance is counted apart
    unobserved = result.check.dns.unobserved.ranges()
    assert {ports.protocol for ports in unobserved} == {"TCP"}  # only UDP lookups were seen
    assert {ports.server for ports in unobserved} == {"kube-system/coredns"}


def test_every_pod_of_bookinfo_resolves_over_udp_and_tcp(tmp_path, bookinfo_files):
    result = api.recommend(api.load_observations(bookinfo_files))
    assert_every_pod_resolves(result, tmp_path)
    assert not result.check.excess
    assert len(result.check.dns.unobserved) > 0


def shop_inventory(*extra_pods: dict):
    snapshot = inventory_snapshot(shop_topology())
    return inventory_from_objects([*snapshot["items"], *extra_pods], "test")


def node_local_dns_pod(host_network: bool) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "node-local-dns-x7k2p",
            "namespace": "kube-system",
            "labels": {"k8s-app": "node-local-dns", "controller-revision-hash": "5d8f"},
            "ownerReferences": [{"kind": "DaemonSet", "name": "node-local-dns", "controller": True}],
        },
        "spec": {"nodeName": "node-a", "hostNetwork": host_network, "containers": [{"name": "node-cache"}]},
        "status": {"phase": "Running", "podIP": "172.18.0.2" if host_network else "10.244.9.9"},
    }


def test_with_an_inventory_the_servers_are_kube_dns_backends_and_node_local_dns(tmp_path):
    inventory = shop_inventory(node_local_dns_pod(host_network=True))
    result = api.recommend(api.load_observations([EXAMPLE]), inventory=inventory)
    rule = next(p for p in result.proposal.policies if p.name == "allow-dns").manifest["spec"]["egress"][0]
    assert rule == {"to": [KUBE_DNS_PEER, {"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": UDP_AND_TCP_53}
    assert_every_pod_resolves(result, tmp_path, inventory)


def test_node_local_dns_behind_a_local_redirect_policy_is_selected_by_its_labels():
    inventory = shop_inventory(node_local_dns_pod(host_network=False))
    result = api.recommend(api.load_observations([EXAMPLE]), inventory=inventory)
    assert DnsServer("kube-system", "node-local-dns") in result.proposal.dns.servers
    rule = next(p for p in result.proposal.policies if p.name == "allow-dns").manifest["spec"]["egress"][0]
    assert {"k8s-app": "node-local-dns"} in [peer.get("podSelector", {}).get("matchLabels") for peer in rule["to"]]


def test_the_proof_fails_when_a_pod_could_not_resolve():
    result = api.recommend(api.load_observations([EXAMPLE]))
    without = [plan.manifest for plan in result.proposal.policies if plan.name != "allow-dns"]
    model = cluster_model(result.observed)
    evaluator = Evaluator(parse_policies(without), model.namespaces, model.pods)
    with pytest.raises(ReplayError, match="synthetic DNS lookup"):
        prove_allowance(evaluator, model.workload_of, result.proposal.dns, result.check.excess)
    assert not DnsAllowance(DnsMode.OBSERVED).active


def test_the_cli_reports_the_allowance_apart_from_the_excess():
    spec = ["--cni", "kubernetes"]  # on the spec the example's node and API-server edges are ipBlocks
    outcome = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["recommend", EXAMPLE, "-o", "yaml", *spec])
    assert outcome.exit_code == 0, outcome.output
    row = next(line for line in outcome.stderr.splitlines() if "DNS allowance (allowed, never observed)" in line)
    assert row.split("│")[2].strip() == "6"  # TCP/53 of each of the six workloads: only UDP was seen
    documents = [doc for doc in yaml.safe_load_all(outcome.stdout) if doc]
    assert [d["metadata"]["namespace"] for d in documents if d["metadata"]["name"] == "allow-dns"] == [
        "monitoring",
        "payments",
        "shop",
    ]
    observed = CliRunner().invoke(main, ["recommend", EXAMPLE, "-o", "yaml", "--dns", "observed", "-q"])
    assert "allow-dns" not in observed.stdout and "port: 53" in observed.stdout
