"""Selector choice: smallest, stable, exact among the namespace's pods, ambiguity reported."""

from __future__ import annotations

import pytest

from recommender.selectors import choose_selectors, is_volatile


def choose(*members):
    return {workload: selector for (_ns, workload), selector in choose_selectors(members).items()}


def test_a_single_stable_label_is_enough_when_it_is_unique():
    chosen = choose(("ns", "web", {"app": "web", "tier": "front"}), ("ns", "api", {"app": "api", "tier": "back"}))
    assert chosen["web"].match_labels == (("app", "web"),) and chosen["web"].exact


def test_stable_keys_are_preferred_in_their_order():
    labels = {"team": "x", "component": "c", "app.kubernetes.io/name": "web", "app": "w"}
    chosen = choose(("ns", "web", labels), ("ns", "other", {"team": "y"}))
    assert chosen["web"].match_labels == (("app.kubernetes.io/name", "web"),)


def test_version_is_used_only_to_tell_workloads_apart():
    chosen = choose(
        ("bookinfo", "reviews-v1", {"app": "reviews", "version": "v1"}),
        ("bookinfo", "reviews-v2", {"app": "reviews", "version": "v2"}),
        ("bookinfo", "productpage-v1", {"app": "productpage", "version": "v1"}),
    )
    assert chosen["reviews-v1"].match_labels == (("app", "reviews"), ("version", "v1"))
    assert chosen["reviews-v2"].match_labels == (("app", "reviews"), ("version", "v2"))
    assert chosen["productpage-v1"].match_labels == (("app", "productpage"),)


def test_only_labels_common_to_all_pods_of_the_workload_are_used():
    chosen = choose(
        ("ns", "web", {"app": "web", "canary": "yes"}),
        ("ns", "web", {"app": "web"}),
        ("ns", "web-canary", {"app": "web2", "canary": "yes"}),
    )
    assert chosen["web"].match_labels == (("app", "web"),)


@pytest.mark.parametrize(
    "key",
    [
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "job-name",
        "controller-uid",
        "batch.kubernetes.io/job-name",
        "helm.sh/chart",
        "chart",
        "heritage",
        "app.kubernetes.io/version",
        "io.cilium.k8s.policy.cluster",
        "io.kubernetes.pod.namespace",
    ],
)
def test_volatile_labels_are_never_used(key):
    assert is_volatile(key)
    chosen = choose(("ns", "a", {key: "1", "app": "shared"}), ("ns", "b", {key: "2", "app": "shared"}))
    assert chosen["a"].match_labels == (("app", "shared"),) and not chosen["a"].exact
    assert chosen["a"].also_selects == ("b",)


def test_workloads_in_other_namespaces_do_not_matter():
    chosen = choose(("a", "web", {"app": "web"}), ("b", "web", {"app": "web"}))
    assert chosen["web"].exact


def test_a_workload_without_usable_labels_selects_its_whole_namespace_and_says_so():
    chosen = choose(("ns", "bare", {"pod-template-hash": "x"}), ("ns", "web", {"app": "web"}))
    assert chosen["bare"].match_labels == () and chosen["bare"].also_selects == ("web",)
    assert chosen["bare"].as_dict() == {}


def test_the_choice_does_not_depend_on_member_order():
    members = [("ns", f"w{i}", {"app": f"a{i % 3}", "tier": f"t{i % 2}", "zone": f"z{i}"}) for i in range(8)]
    assert choose_selectors(members) == choose_selectors(list(reversed(members)))
