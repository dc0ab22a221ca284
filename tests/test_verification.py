"""Replay, excess and drift: the proof that comes with a recommendation, and `verify` / `diff`."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.generate import Connection, Topology, Workload, write_capture
from collectors.inventory import Inventory
from recommender import api
from recommender.cli import main
from recommender.cluster_model import ClusterModel, pod_addresses_in_ip_blocks
from recommender.errors import RecommenderError, ReplayError
from recommender.semantics import Pod
from recommender.synthesis import SynthesisOptions
from tests.builders import observation_set, observations

DEFAULT_DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "default-deny", "namespace": "mynamespace"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
ALLOW_FRONTEND = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-frontend", "namespace": "mynamespace"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "myapp"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}],
    },
}
FRONTEND_EGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "frontend-egress", "namespace": "mynamespace"},
    "spec": {
        "podSelector": {"matchLabels": {"role": "frontend"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "myapp"}}}], "ports": [{"port": 8080}]}],
    },
}


@pytest.fixture
def seed_capture(tmp_path) -> str:
    """Hubble flows of a frontend calling myapp on TCP 8080 in `mynamespace`."""
    topology = Topology(
        workloads=[
            Workload("mynamespace", "frontend", labels=(("role", "frontend"),), identity=20001),
            Workload("mynamespace", "myapp", labels=(("app", "myapp"),), identity=20002),
        ],
        connections=[Connection("mynamespace/frontend", "mynamespace/myapp", "TCP", 8080)],
    )
    path = tmp_path / "seed.json"
    write_capture(str(path), topology, 200)
    return str(path)


def write_policies(tmp_path, *policies) -> str:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump_all(policies))
    return str(path)


def test_seed_scenario_frontend_egress_is_denied_by_default_deny_and_explained(tmp_path, seed_capture):
    policies = write_policies(tmp_path, DEFAULT_DENY, ALLOW_FRONTEND)
    outcome = CliRunner().invoke(main, ["verify", "--policies", policies, seed_capture, "-o", "json"])
    assert outcome.exit_code == 5  # DENIED
    report = json.loads(outcome.stdout)
    assert report["totals"] == {"connections": 1, "allowed": 0, "denied": 1, "recall": 0.0, "cni": "cilium"}
    (connection,) = report["connections"]
    assert (connection["client"], connection["server"], connection["port"]) == (
        "mynamespace/frontend",
        "mynamespace/myapp",
        8080,
    )
    why = connection["explanation"]
    assert "egress DENIED" in why and "is egress-isolated by [mynamespace/default-deny]" in why
    assert "ingress allowed by mynamespace/allow-frontend ingress[0]" in why


def test_seed_scenario_an_egress_rule_makes_it_allowed(tmp_path, seed_capture):
    policies = write_policies(tmp_path, DEFAULT_DENY, ALLOW_FRONTEND, FRONTEND_EGRESS)
    outcome = CliRunner().invoke(main, ["verify", "--policies", policies, seed_capture])
    assert outcome.exit_code == 0, outcome.output
    assert "1 allowed, 0 denied (recall 100.0%)" in outcome.output
    markdown = CliRunner().invoke(main, ["verify", "--policies", policies, seed_capture, "-o", "markdown"]).stdout
    assert "mynamespace/allow-frontend ingress[0], mynamespace/frontend-egress egress[0]" in markdown


def test_diff_lists_breakage_and_unused_rules_per_namespace(tmp_path, seed_capture):
    unused = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-metrics", "namespace": "mynamespace"},
        "spec": {"podSelector": {"matchLabels": {"app": "myapp"}}, "ingress": [{"ports": [{"port": 9090}]}]},
    }
    policies = write_policies(tmp_path, DEFAULT_DENY, ALLOW_FRONTEND, unused)
    result = api.diff(api.load_policies(policies), api.load_observations([seed_capture]))
    assert list(result.would_break["server"]) == ["mynamespace/myapp"]
    assert list(result.unused_rules["policy"]) == ["allow-metrics"]
    assert set(result.rules.loc[result.rules["used"], "policy"]) == {"allow-frontend"}
    markdown = CliRunner().invoke(main, ["diff", "--policies", policies, seed_capture, "-o", "markdown"]).stdout
    assert "## Namespace mynamespace" in markdown and "| allow-metrics | ingress | 0 |" in markdown
    document = json.loads(CliRunner().invoke(main, ["diff", "--policies", policies, seed_capture, "-o", "json"]).stdout)
    assert document["totals"] == {
        "observed_allowed": 0,
        "would_break": 1,
        "rules": 2,
        "unused_rules": 1,
        "cni": "cilium",
    }
    # the ingress rule of allow-frontend is needed: it allowed its side; the fix is an egress rule


def test_the_recommendation_for_the_seed_capture_passes_verify(tmp_path, seed_capture):
    out = tmp_path / "proposal"
    assert CliRunner().invoke(main, ["recommend", seed_capture, "-o", str(out), "-q"]).exit_code == 0
    outcome = CliRunner().invoke(main, ["verify", "--policies", str(out), seed_capture])
    assert outcome.exit_code == 0 and "recall 100.0%" in outcome.output


def test_bad_policy_files_are_clear_errors(tmp_path, seed_capture):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "kind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 70000}]}]\n"
    )
    outcome = CliRunner().invoke(main, ["verify", "--policies", str(broken), seed_capture])
    assert outcome.exit_code == 1 and f"Error: {broken}: NetworkPolicy default/x" in outcome.stderr
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    outcome = CliRunner().invoke(main, ["verify", "--policies", str(tmp_path / "bad.yaml"), seed_capture])
    assert outcome.exit_code == 1 and "not valid YAML" in outcome.stderr
    outcome = CliRunner().invoke(main, ["verify", "--policies", str(tmp_path / "none"), seed_capture])
    assert outcome.exit_code == 1 and "no such file or directory" in outcome.stderr


def test_a_policy_given_twice_to_verify_or_diff_is_an_error_naming_its_files(tmp_path, seed_capture):
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump_all([DEFAULT_DENY, ALLOW_FRONTEND]))
    (folder / "backup").mkdir()
    (folder / "backup" / "b.yaml").write_text(yaml.safe_dump(ALLOW_FRONTEND))
    for command in ("verify", "diff"):
        outcome = CliRunner().invoke(main, [command, "--policies", str(folder), seed_capture])
        assert outcome.exit_code == 1, outcome.output
        assert (
            f"Error: {folder / 'a.yaml'}: NetworkPolicy mynamespace/allow-frontend is defined twice "
            f"(and in {folder / 'backup' / 'b.yaml'})"
        ) in outcome.stderr
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump_all([ALLOW_FRONTEND, DEFAULT_DENY, ALLOW_FRONTEND]))
    outcome = CliRunner().invoke(main, ["diff", "--policies", str(again), seed_capture])
    assert outcome.exit_code == 1 and "defined twice (again in the same file)" in outcome.stderr


def test_a_policy_set_or_inventory_holding_a_policy_twice_is_refused_not_counted_twice(seed_capture):
    observed = api.load_observations([seed_capture])
    with pytest.raises(RecommenderError, match="holds mynamespace/allow-frontend more than once"):
        api.verify([DEFAULT_DENY, ALLOW_FRONTEND, ALLOW_FRONTEND], observed)
    inventory = Inventory(network_policies=(DEFAULT_DENY, ALLOW_FRONTEND, ALLOW_FRONTEND))
    with pytest.raises(RecommenderError, match="holds mynamespace/allow-frontend more than once"):
        api.diff(None, observed, inventory)


def test_recommend_reports_recall_and_excess(bookinfo_files):
    result = api.recommend(api.load_observations(bookinfo_files))
    summary = dict(result.summary())
    assert summary["recall (observed connections allowed)"] == "100%"
    assert summary["excess (allowed, never observed)"] == "0"
    assert result.check.replayed.connections["allowed"].all()


def test_a_proposal_that_breaks_traffic_fails_the_run(monkeypatch, bookinfo_files):
    from recommender import synthesis

    real = synthesis._rules

    def lose_the_first_rule(rows, *args):
        rules, evidence = real(rows, *args)
        return rules[1:] or [synthesis.Rule(args[1], (), (("TCP", 1),), ())], evidence

    monkeypatch.setattr(synthesis, "_rules", lose_the_first_rule)
    with pytest.raises(ReplayError, match=r"the proposal would break \d+ observed connection"):
        api.recommend(api.load_observations(bookinfo_files))


def test_excess_counts_what_an_ambiguous_selector_opens():
    rows = (("shop/a:tier=x", "shop/db", "TCP", 5432), ("shop/b:tier=x", "shop/cache", "TCP", 6379))
    result = api.recommend(observation_set(observations(*rows)), SynthesisOptions())
    excess = set(result.check.excess.connections())
    assert excess == {("shop/a", "shop/cache", "TCP", 6379), ("shop/b", "shop/db", "TCP", 5432)}


NAMESPACES = ["shop", "data", "kube-system"]
EXTERNAL = ["world:203.0.113.10", "world:203.0.113.11", "world:2001:db8::7", "remote-node:172.18.0.3"]


@st.composite
def topologies(draw):
    count = draw(st.integers(2, 7))
    workloads = []
    for index in range(count):
        namespace = draw(st.sampled_from(NAMESPACES))
        tier = draw(st.sampled_from(["front", "back"]))
        workloads.append(f"{namespace}/w{index}:app=w{index},tier={tier}")
    endpoints = st.sampled_from(workloads + EXTERNAL)
    edge = st.tuples(
        endpoints, endpoints, st.sampled_from(["TCP", "UDP", "SCTP"]), st.sampled_from([53, 80, 443, 8080])
    )
    edges = draw(st.lists(edge, min_size=1, max_size=14))
    return [e for e in edges if "/" in e[0] or "/" in e[1]]  # at least one side is a pod


PROFILES_AND_TARGETS = [("kubernetes", "networkpolicy"), ("calico", "networkpolicy"), ("cilium", "networkpolicy"),
                        ("cilium", "cilium")]  # fmt: skip
"""Every dataplane profile with the targets it proves (CiliumNetworkPolicies are Cilium's alone)."""


@pytest.mark.parametrize(("cni", "target"), PROFILES_AND_TARGETS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edges=topologies())
def test_synthesize_then_replay_is_exact(cni, target, edges):
    if not edges:
        return
    result = api.recommend(observation_set(observations(*edges)), SynthesisOptions(cni=cni, target=target))
    assert result.check.recall == 1.0
    assert not result.check.excess, result.check.excess


# -- dataplane profiles ----------------------------------------------------------------------------

NODE_TRAFFIC = (
    ("shop/operator", "kube-apiserver:172.18.0.2", "TCP", 6443),
    ("shop/metrics", "host:172.18.0.3", "TCP", 10250),
    ("shop/metrics", "remote-node:172.18.0.4", "TCP", 9100),
    ("remote-node:172.18.0.4", "shop/web", "TCP", 30080),
    ("ingress:10.0.0.200", "shop/web", "TCP", 8080),
    ("host:172.18.0.3", "shop/web", "TCP", 8080),  # kubelet probe
)


def _node_edge_policies() -> list[dict]:
    """NetworkPolicy output for NODE_TRAFFIC on the spec: ipBlock /32 for every node-side peer (on Cilium,
    `recommend` writes no rule for them: `test_render_cilium`)."""
    spec = SynthesisOptions(cni="kubernetes")
    return [
        plan.manifest for plan in api.recommend(observation_set(observations(*NODE_TRAFFIC)), spec).proposal.policies
    ]


def _verdicts(replayed) -> dict[tuple[str, str], bool]:
    return {(row.client, row.server): bool(row.allowed) for row in replayed.connections.itertuples()}


def test_node_side_ip_blocks_hold_under_the_spec_and_calico_but_are_denied_under_cilium():
    policies, observed = _node_edge_policies(), observation_set(observations(*NODE_TRAFFIC))

    for cni in ("kubernetes", "calico"):
        assert all(_verdicts(api.verify(policies, observed, cni=cni)).values()), cni
    cilium = api.verify(policies, observed, cni="cilium")

    assert _verdicts(cilium) == {
        ("shop/operator", "kube-apiserver:172.18.0.2"): False,
        ("shop/metrics", "host:172.18.0.3"): False,
        ("shop/metrics", "remote-node:172.18.0.4"): False,
        ("remote-node:172.18.0.4", "shop/web"): False,
        ("ingress:10.0.0.200", "shop/web"): False,
        ("host:172.18.0.3", "shop/web"): True,  # allow-localhost: the local host may reach its pods
    }
    assert all("CIDR selectors never select cluster entities" in str(why) for why in cilium.denied["decision"])
    with_nodes = _verdicts(api.verify(policies, observed, cni="cilium", cni_options=["cidr-match-nodes"]))
    assert [pair for pair, allowed in with_nodes.items() if not allowed] == [("ingress:10.0.0.200", "shop/web")]


def test_pod_to_host_egress_is_enforced_under_every_profile():
    observed = observation_set(observations(("shop/metrics", "host:172.18.0.3", "TCP", 10250)))
    deny_egress = {
        "metadata": {"name": "deny-egress", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
    }
    for cni in ("kubernetes", "cilium", "calico"):
        replayed = api.verify([deny_egress], observed, cni=cni)
        assert replayed.recall == 0.0, cni
        assert "egress DENIED" in str(replayed.denied["decision"][0])


def test_cilium_entities_in_a_cnp_allow_the_node_side_peers():
    observed = observation_set(observations(*NODE_TRAFFIC))
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "node-peers", "namespace": "shop"},
        "spec": {
            "endpointSelector": {},
            "ingress": [{"fromEntities": ["remote-node", "ingress"]}],
            "egress": [{"toEntities": ["kube-apiserver", "host", "remote-node"]}],
        },
    }
    replayed = api.verify([cnp], observed, cni="cilium")
    assert replayed.recall == 1.0
    rules = {str(rule) for rules in replayed.connections["allowed_by"] for rule in rules}
    assert "CiliumNetworkPolicy shop/node-peers egress[0]" in rules
    with pytest.raises(RecommenderError, match="only Cilium enforces it"):
        api.verify([cnp], observed, cni="kubernetes")


def test_the_default_profile_is_cilium_for_hubble_input_and_kubernetes_for_conntrack():
    observed = observation_set(observations(*NODE_TRAFFIC))
    assert api.dataplane_profile(observed).name == "cilium"
    observed.stats.resolution["services_from_dnat"] += 1  # IPs named with an inventory: conntrack
    assert api.dataplane_profile(observed).name == "kubernetes"
    with pytest.raises(RecommenderError, match="no option"):
        api.dataplane_profile(observed, "calico", ["cidr-match-nodes"])


def test_verify_cli_takes_a_cnp_file_and_prints_the_profile(tmp_path, seed_capture):
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "myapp", "namespace": "mynamespace"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "myapp"}},
            "ingress": [
                {"fromEndpoints": [{"matchLabels": {"role": "frontend"}}], "toPorts": [{"ports": [{"port": "8080"}]}]}
            ],
        },
    }
    path = write_policies(tmp_path, cnp)
    result = CliRunner().invoke(main, ["verify", "--policies", path, seed_capture])
    assert result.exit_code == 0, result.output
    assert "CNI profile cilium" in result.output
    result = CliRunner().invoke(main, ["verify", "--policies", path, "--cni", "calico", seed_capture])
    assert result.exit_code == 1
    assert "Error: CiliumNetworkPolicy mynamespace/myapp: kind: only Cilium enforces it" in result.output


def test_excess_of_a_cnp_counts_the_ports_it_opens_beyond_what_was_observed():
    observed = observation_set(observations(("shop/web", "shop/db", "TCP", 5432)))
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "web"}}],
                    "toPorts": [{"ports": [{"port": "5432", "endPort": 5433, "protocol": "TCP"}]}],
                }
            ],
        },
    }
    drift = api.diff([cnp], observed, cni="cilium")
    assert drift.replayed.recall == 1.0
    assert [str(ports) for ports in drift.unobserved().ranges()] == ["shop/web -> shop/db TCP/5433"]


def test_the_pod_address_check_takes_ipv4_and_ipv6_pods_alike():
    web, db = Pod("shop", "web-0", {"app": "web"}), Pod("shop", "db-0", {"app": "db"})
    model = ClusterModel(namespaces=[], pods=[web, db], by_ip={"10.244.0.7": web, "fd00:10:244::7": db})
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}]}]},
    }
    (found,) = pod_addresses_in_ip_blocks([policy], model)
    assert "fd00:10:244::7, the address of pod shop/db-0" in found
