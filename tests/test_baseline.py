"""`recommend --baseline clusternetworkpolicy`: one Baseline ClusterNetworkPolicy instead of a
default-deny per namespace (a CiliumClusterwideNetworkPolicy for `--target cilium`), valid by the
upstream CRD, proven by replay with the NetworkPolicies (the CiliumNetworkPolicies)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender import api
from recommender.baseline import CLUSTER_BASELINE, CLUSTER_BASELINE_NAME, cluster_baseline
from recommender.cli import main
from recommender.dns_allowance import DnsAllowance, DnsMode
from recommender.errors import RecommenderError
from recommender.manifests import MANAGED_BY
from recommender.plans import PolicyPlan
from recommender.render import namespace_file, target_policies
from recommender.render_cilium import cilium_policies
from recommender.semantics import (
    CILIUM,
    KUBERNETES,
    Evaluator,
    ExternalPeer,
    Namespace,
    Pod,
    parse_any_policy,
    parse_policy_set,
)
from recommender.semantics.profiles import Entity
from recommender.synthesis import DEFAULT_EXCLUDED_NAMESPACES, SynthesisOptions
from recommender.unobserved import UnobservedMode
from tests.conftest import REPO
from tests.crd_schema import validate

BASELINE_OPTIONS = SynthesisOptions(baseline=CLUSTER_BASELINE)
EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
CLUSTER_WIDE_KINDS = {"networkpolicy": "ClusterNetworkPolicy", "cilium": "CiliumClusterwideNetworkPolicy"}
PROFILES = {"networkpolicy": KUBERNETES, "cilium": CILIUM}
"""The dataplane each target is written for."""
TARGETS = pytest.mark.parametrize("target", sorted(CLUSTER_WIDE_KINDS))
"""Every test of the baseline, for both targets."""


def cilium_baseline(excluded) -> dict:
    """The CiliumClusterwideNetworkPolicy `--target cilium` writes for the baseline."""
    manifest = cluster_baseline(excluded, MANAGED_BY)
    plan = PolicyPlan("", CLUSTER_BASELINE_NAME, "", manifest, parse_any_policy(manifest))
    (written,) = cilium_policies([plan], {}, DnsAllowance(DnsMode.OFF))
    return written.manifest


def written_policies(result: api.Recommendation) -> list[dict]:
    """The manifests of a recommendation, of its target kind."""
    return [plan.manifest for plan in target_policies(result.proposal)]


@pytest.mark.parametrize("excluded", [DEFAULT_EXCLUDED_NAMESPACES, ("kube-system",), ()])
def test_the_baseline_fits_the_upstream_crd_and_the_engine(excluded):
    manifest = cluster_baseline(excluded, MANAGED_BY)
    validate(manifest)
    (policy,) = parse_policy_set([manifest]).cluster_policies
    assert policy.tier.value == "Baseline"


@pytest.mark.parametrize("excluded", [DEFAULT_EXCLUDED_NAMESPACES, ("kube-system",), ()])
def test_the_cilium_baseline_fits_the_upstream_crd_and_the_engine(excluded):
    manifest = cilium_baseline(excluded)
    validate(manifest)
    (policy,) = parse_policy_set([manifest]).cilium_policies
    assert policy.id == f"CiliumClusterwideNetworkPolicy {CLUSTER_BASELINE_NAME}"
    assert manifest["spec"]["enableDefaultDeny"] == {"ingress": True, "egress": True}
    (dns,) = manifest["spec"]["egress"]  # to kube-dns on UDP and TCP 53, through the DNS proxy (toFQDNs)
    assert dns["toEndpoints"] == [
        {"matchLabels": {"k8s-app": "kube-dns", "k8s:io.kubernetes.pod.namespace": "kube-system"}}
    ]
    (ports,) = dns["toPorts"]
    assert ports == {
        "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
        "rules": {"dns": [{"matchPattern": "*"}]},
    }


def test_the_cilium_baseline_exempts_excluded_namespaces_by_name():
    selector = cilium_baseline(("kube-system", "kube-public"))["spec"]["endpointSelector"]
    in_a_namespace = {"key": "k8s:io.kubernetes.pod.namespace", "operator": "Exists"}  # not Cilium's health endpoint
    assert selector == {
        "matchExpressions": [
            in_a_namespace,
            {"key": "k8s:io.kubernetes.pod.namespace", "operator": "NotIn", "values": ["kube-public", "kube-system"]},
        ]
    }
    assert cilium_baseline(())["spec"]["endpointSelector"] == {"matchExpressions": [in_a_namespace]}


def test_excluded_namespaces_are_exempt_by_name():
    subject = cluster_baseline(("kube-system", "kube-public"), MANAGED_BY)["spec"]["subject"]
    assert subject == {
        "namespaces": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-public", "kube-system"]}
            ]
        }
    }
    assert cluster_baseline((), MANAGED_BY)["spec"]["subject"] == {"namespaces": {}}


def test_a_namespace_named_like_the_baseline_file_gets_another_file():
    assert namespace_file("", "yaml") == f"{CLUSTER_BASELINE_NAME}.yaml"
    assert namespace_file(CLUSTER_BASELINE_NAME, "yaml") == f"{CLUSTER_BASELINE_NAME}.namespace.yaml"


@pytest.fixture
def observed(bookinfo_files):
    return api.load_observations(bookinfo_files)


def _evaluator(policies: list[dict], target: str) -> Evaluator:
    """The bookinfo proposal's cluster plus a namespace nobody observed (two pods) and kube-dns, as the
    dataplane the target is written for enforces it."""
    pods = [
        Pod("unseen", "job", {"app": "job"}),
        Pod("unseen", "admin", {"app": "admin"}),
        Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}),
        Pod("kube-system", "agent", {"app": "agent"}),
    ]
    namespaces = [Namespace("unseen"), Namespace("kube-system"), Namespace("bookinfo")]
    return Evaluator(policies, namespaces, pods, profile=PROFILES[target])


@TARGETS
def test_a_pod_in_a_namespace_never_observed_is_denied_under_the_baseline_only(observed, target):
    per_namespace = written_policies(api.recommend(observed, SynthesisOptions(target=target)))
    cluster_wide = written_policies(api.recommend(observed, replace(BASELINE_OPTIONS, target=target)))
    job, admin = Pod("unseen", "job", {"app": "job"}), Pod("unseen", "admin", {"app": "admin"})
    coredns, agent = (
        Pod("kube-system", "coredns", {"k8s-app": "kube-dns"}),
        Pod("kube-system", "agent", {"app": "agent"}),
    )
    world = ExternalPeer("203.0.113.7", Entity.WORLD)
    without, under = _evaluator(per_namespace, target), _evaluator(cluster_wide, target)
    for client, server, protocol, port in [
        (job, admin, "TCP", 8080),
        (agent, job, "TCP", 8080),
        (job, world, "TCP", 443),
        (job, coredns, "UDP", 5353),
    ]:
        assert without.evaluate(client, server, protocol, port).allowed
        decision = under.evaluate(client, server, protocol, port)
        assert not decision.allowed, decision
        assert f"{CLUSTER_WIDE_KINDS[target]} {CLUSTER_BASELINE_NAME}" in str(decision)
    for protocol in ("UDP", "TCP"):  # DNS always resolves, over TCP too
        assert under.evaluate(job, coredns, protocol, 53).allowed
    assert under.evaluate(agent, world, "TCP", 443).allowed  # excluded namespaces are exempt
    assert under.evaluate(agent, coredns, "UDP", 5353).allowed
    # Only Cilium's default deny covers ingress from outside the cluster (the ClusterNetworkPolicy has no peer for it).
    assert under.evaluate(world, job, "TCP", 8080).allowed == (target == "networkpolicy")


@TARGETS
def test_bookinfo_under_the_baseline_has_full_recall_and_the_per_namespace_excess(observed, target):
    per_namespace = api.recommend(observed, SynthesisOptions(target=target))
    cluster_wide = api.recommend(observed, replace(BASELINE_OPTIONS, target=target))
    assert cluster_wide.check.recall == 1.0
    assert len(cluster_wide.check.replayed.connections) == len(per_namespace.check.replayed.connections)
    assert cluster_wide.check.excess == per_namespace.check.excess
    # Every observed namespace has its allow-dns: the baseline's DNS rule opens nothing more there.
    assert len(cluster_wide.check.baseline_dns) == 0
    assert per_namespace.check.baseline_dns is None
    # With DNS only as observed, the baseline's rule is what lets the other pods resolve: counted apart.
    observed_dns = api.recommend(observed, replace(BASELINE_OPTIONS, dns=DnsMode.OBSERVED, target=target))
    assert (
        observed_dns.check.excess
        == api.recommend(observed, SynthesisOptions(dns=DnsMode.OBSERVED, target=target)).check.excess
    )
    dns = observed_dns.check.baseline_dns  # pods no egress policy decides may resolve, over TCP too
    assert {(server, port) for _, server, _, port in dns.connections()} == {("kube-system/coredns", 53)}
    resolving = {(client, protocol) for client, _, protocol, _ in dns.connections()}
    assert {("bookinfo/details-v1", "TCP"), ("bookinfo/details-v1", "UDP")} <= resolving
    names = [(plan.namespace, plan.name) for plan in cluster_wide.proposal.policies]
    assert ("", CLUSTER_BASELINE_NAME) in names
    assert not any(name == "default-deny" for _, name in names)
    assert sorted(names[1:]) == sorted(
        (plan.namespace, plan.name) for plan in per_namespace.proposal.policies if plan.name != "default-deny"
    )


def test_the_example_under_the_cilium_baseline_has_full_recall_and_the_per_namespace_excess():
    example = api.load_observations([EXAMPLE])
    per_namespace = api.recommend(example, SynthesisOptions(target="cilium"))
    cluster_wide = api.recommend(example, replace(BASELINE_OPTIONS, target="cilium"))
    assert cluster_wide.check.recall == 1.0
    assert cluster_wide.check.excess == per_namespace.check.excess
    assert cluster_wide.check.dns.lookups == per_namespace.check.dns.lookups


@TARGETS
def test_the_folder_holds_the_baseline_file_in_the_kustomization(bookinfo_files, tmp_path, target):
    folder = tmp_path / "policies"
    baseline = ["--baseline", CLUSTER_BASELINE, "--target", target]
    args = ["recommend", *bookinfo_files, *baseline, "-o", str(folder), "-q"]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 0, outcome.output
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert f"{CLUSTER_BASELINE_NAME}.yaml" in kustomization["resources"]
    (manifest,) = yaml.safe_load_all((folder / f"{CLUSTER_BASELINE_NAME}.yaml").read_text())
    validate(manifest)
    assert manifest["kind"] == CLUSTER_WIDE_KINDS[target]
    stream = CliRunner().invoke(main, ["recommend", *bookinfo_files, *baseline, "-q"])
    kinds = [document["kind"] for document in yaml.safe_load_all(stream.stdout)]
    assert kinds[0] == CLUSTER_WIDE_KINDS[target] and kinds.count(CLUSTER_WIDE_KINDS[target]) == 1


NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)


@TARGETS
@settings(max_examples=40, deadline=None)
@given(namespaces=st.lists(NAMES, min_size=1, max_size=5, unique=True), data=st.data())
def test_exactly_the_pods_of_namespaces_not_excluded_are_denied_by_default(target, namespaces, data):
    excluded = data.draw(st.lists(st.sampled_from(namespaces), unique=True))
    baseline = cilium_baseline(excluded) if target == "cilium" else cluster_baseline(excluded, MANAGED_BY)
    evaluator = Evaluator(
        [baseline],
        [Namespace(name) for name in namespaces],
        [Pod(name, "app", {"app": "app"}) for name in namespaces],
        profile=PROFILES[target],
    )
    world = ExternalPeer("203.0.113.7", Entity.WORLD)
    for name in namespaces:
        pod = Pod(name, "app", {"app": "app"})
        assert evaluator.evaluate(pod, world, "TCP", 443).allowed == (name in excluded)
        assert evaluator.evaluate(world, pod, "TCP", 80).allowed == (name in excluded or target == "networkpolicy")
        for other in namespaces:
            client = Pod(other, "app", {"app": "app"})
            assert evaluator.evaluate(client, pod, "TCP", 80).allowed == (name in excluded and other in excluded)


@pytest.mark.parametrize("mode", [UnobservedMode.ALLOW_AS_IS, UnobservedMode.SKIP])
@TARGETS
def test_unobserved_workloads_cannot_be_left_out_of_the_cluster_baseline(bookinfo_files, mode, target):
    with pytest.raises(RecommenderError, match=f"--unobserved {mode} needs --baseline namespace"):
        replace(BASELINE_OPTIONS, unobserved=mode, target=target)
    args = ["recommend", *bookinfo_files, "--baseline", CLUSTER_BASELINE, "--unobserved", str(mode), "--target", target]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 1 and outcome.exception.__class__ is SystemExit
    assert f"Error: --unobserved {mode} needs --baseline namespace" in outcome.stderr
