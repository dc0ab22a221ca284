"""The cluster inventory: through the real `kubernetes` client against a loopback API server that
serves recorded list responses, and from the `kubectl get -o json` snapshot of the same cluster.

The recorded cluster (tests/data/inventory) is a small kind cluster: a Deployment with a sidecar and
dual-stack IPs, a StatefulSet, a DaemonSet and a static pod on the host network, a Job and a CronJob
run that have completed (the CronJob pod's IP now belongs to a bare pod), a terminating pod, Services
(named target port, headless, NodePort), EndpointSlices, nodes with pod CIDRs and NetworkPolicies.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import socket
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.config import incluster_config

from benchmarks.generate import flow_lines, inventory_snapshot, scale_topology, shop_topology, write_inventory
from collectors.errors import CollectorError
from collectors.hubble_identity import split_labels
from collectors.inventory import (
    ContainerPort,
    EndpointSlice,
    Inventory,
    Namespace,
    Node,
    Owner,
    Pod,
    Service,
    ServicePort,
    SliceEndpoint,
    SlicePort,
    inventory_from_cluster,
    inventory_from_objects,
    list_items,
    load_inventory,
    snapshot_json,
    top_owner,
    write_snapshot,
)
from recommender.selectors import is_volatile
from tests.conftest import REPO
from tests.kube_api_server import KubeApiServer, write_kubeconfig

DATA = REPO / "tests" / "data" / "inventory"
SNAPSHOT = DATA / "kubectl-get.json"
TOKEN = "sekret-bearer-7f3a9c0d"


@pytest.fixture
def api_server():
    with KubeApiServer(DATA, token=TOKEN) as server:
        yield server


@pytest.fixture
def kubeconfig(tmp_path, api_server) -> str:
    return str(write_kubeconfig(tmp_path / "kubeconfig", api_server.url, token=TOKEN))


@pytest.fixture(scope="module")
def cluster() -> Inventory:
    return load_inventory(str(SNAPSHOT))


def cluster_error(kubeconfig: str | None, context: str | None = None, **options) -> str:
    with pytest.raises(CollectorError) as raised:
        inventory_from_cluster(kubeconfig, context, **options)
    return str(raised.value)


# -- the API and the snapshot agree ----------------------------------------------------------------


def test_the_api_and_the_kubectl_snapshot_give_the_same_inventory(kubeconfig, cluster):
    from_api = inventory_from_cluster(kubeconfig, page_size=4)
    assert from_api == cluster
    assert (len(from_api.pods), len(from_api.services), len(from_api.endpoint_slices)) == (11, 6, 6)
    assert (len(from_api.namespaces), len(from_api.nodes), len(from_api.network_policies)) == (4, 3, 3)


def test_every_list_is_read_page_by_page_following_the_continue_token(api_server, kubeconfig):
    inventory_from_cluster(kubeconfig, page_size=4)
    assert Counter(api_server.paths()) == {
        "/api/v1/pods": 3,
        "/api/v1/services": 2,
        "/apis/discovery.k8s.io/v1/endpointslices": 2,
        "/api/v1/namespaces": 1,
        "/api/v1/nodes": 1,
        "/apis/networking.k8s.io/v1/networkpolicies": 1,
        # policy CRDs this cluster does not have: one request each, answered 404, skipped
        "/apis/cilium.io/v2/ciliumnetworkpolicies": 1,
        "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies": 1,
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies": 1,
    }
    pods = [request.query for request in api_server.requests if request.path == "/api/v1/pods"]
    assert [query["limit"] for query in pods] == ["4", "4", "4"]
    assert "continue" not in pods[0]
    assert pods[1]["continue"] != pods[2]["continue"]
    assert {request.bearer_token for request in api_server.requests} == {TOKEN}


def test_cilium_and_cluster_network_policies_are_read_where_their_crds_exist(tmp_path):
    shutil.copytree(DATA, tmp_path / "api-data")
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "to-api", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
        "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["kube-apiserver"]}]},
    }
    cnp_list = {"kind": "CiliumNetworkPolicyList", "apiVersion": "cilium.io/v2", "metadata": {"resourceVersion": "9"}}
    cnp_list["items"] = [cnp]
    folder = tmp_path / "api-data" / "apis" / "cilium.io" / "v2"
    folder.mkdir(parents=True)
    (folder / "ciliumnetworkpolicies.json").write_text(json.dumps(cnp_list))
    with KubeApiServer(tmp_path / "api-data", token=TOKEN) as server:
        config = write_kubeconfig(tmp_path / "kubeconfig", server.url, token=TOKEN)
        inventory = inventory_from_cluster(str(config))
    read = [p for p in inventory.network_policies if p["kind"] == "CiliumNetworkPolicy"]
    assert read == [
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"namespace": "shop", "name": "to-api"},
            "spec": cnp["spec"],
        }
    ]


def test_the_default_page_size_reads_each_list_in_one_request(api_server, kubeconfig):
    inventory_from_cluster(kubeconfig)
    assert len(api_server.requests) == 9  # 6 lists and 3 policy CRDs (absent here)
    assert {request.query["limit"] for request in api_server.requests} == {"500"}


def test_a_context_of_the_kubeconfig_can_be_chosen_and_an_unknown_one_is_named(kubeconfig, cluster):
    assert inventory_from_cluster(kubeconfig, "test", page_size=4) == cluster
    message = cluster_error(kubeconfig, "prod")
    assert "no context 'prod'" in message and "it has: test" in message


def test_in_a_pod_without_kubeconfig_the_service_account_is_used(tmp_path, monkeypatch, cluster):
    with KubeApiServer(DATA, token=TOKEN, tls=True) as server:
        (tmp_path / "token").write_text(TOKEN)
        monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
        monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", server.ca_file)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
        assert inventory_from_cluster() == cluster
        assert {request.bearer_token for request in server.requests} == {TOKEN}


# -- what the inventory holds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "pod", "workload"),
    [
        ("shop", "frontend-7d9c5b8f6d-x2x9k", ("shop", "Deployment", "frontend")),
        ("shop", "catalog-db-0", ("shop", "StatefulSet", "catalog-db")),
        ("kube-system", "kube-proxy-6xq4w", ("kube-system", "DaemonSet", "kube-proxy")),
        ("ops", "report-29893440-7tq8c", ("ops", "CronJob", "report")),
        ("ops", "migrate-schema-x7k2p", ("ops", "Job", "migrate-schema")),
        ("default", "debug", ("default", "Pod", "debug")),
        (
            "kube-system",
            "kube-apiserver-kind-control-plane",
            ("kube-system", "Pod", "kube-apiserver-kind-control-plane"),
        ),
    ],
)
def test_each_pod_belongs_to_its_top_owner(cluster, namespace, pod, workload):
    assert cluster.pod(namespace, pod).workload == workload


def test_pods_keep_their_ips_ports_node_and_lifecycle(cluster):
    frontend = cluster.pod("shop", "frontend-7d9c5b8f6d-b4mzq")
    assert frontend.ips == ("10.244.2.6", "fd00:10:244:2::6")
    assert frontend.node == "kind-worker2"
    assert frontend.controller == Owner("ReplicaSet", "frontend-7d9c5b8f6d")
    # the sidecar (an init container that keeps running) counts; the plain init container does not
    assert [(port.container, port.name, port.port, port.protocol) for port in frontend.ports] == [
        ("envoy", "envoy-admin", 15000, "TCP"),
        ("frontend", "http", 8080, "TCP"),
        ("frontend", "metrics", 9090, "TCP"),
    ]
    dns = cluster.pod("kube-system", "coredns-5d78c9869d-8h2xq")
    assert [(port.name, port.port, port.protocol) for port in dns.ports] == [
        ("dns-tcp", 53, "TCP"),
        ("dns", 53, "UDP"),
        ("metrics", 9153, "TCP"),
    ]
    proxy = cluster.pod("kube-system", "kube-proxy-6xq4w")
    assert proxy.host_network and proxy.ips == ("172.18.0.3",)
    terminating = cluster.pod("shop", "checkout-6b8f9c7d5f-q8w2r")
    assert terminating.deleted == datetime(2026, 11, 2, 9, 20, tzinfo=UTC) and terminating.phase == "Running"
    assert cluster.pod("ops", "report-29893440-7tq8c").phase == "Succeeded"


def test_a_reused_ip_lists_every_pod_that_had_it_oldest_first(cluster):
    holders = cluster.pods_by_ip("10.244.1.9")
    assert [(pod.name, pod.phase, pod.created) for pod in holders] == [
        ("report-29893440-7tq8c", "Succeeded", datetime(2026, 11, 2, 8, 0, tzinfo=UTC)),
        ("debug", "Running", datetime(2026, 11, 2, 9, 5, tzinfo=UTC)),
    ]
    assert [pod.name for pod in cluster.pods_by_ip("172.18.0.2")] == ["kube-apiserver-kind-control-plane"]
    assert cluster.pods_by_ip("10.244.9.9") == ()


def test_services_resolve_by_cluster_ip_with_their_ports_and_endpoints(cluster):
    frontend = cluster.service_by_cluster_ip("10.96.120.15")
    assert (frontend.namespace, frontend.name, frontend.selector) == (
        "shop",
        "frontend",
        {"app.kubernetes.io/name": "frontend"},
    )
    assert [(port.port, port.target_port) for port in frontend.ports] == [(80, "http")]
    node_port = cluster.service_by_cluster_ip("10.96.44.2")
    assert (node_port.type, node_port.ports[0].node_port, node_port.ports[0].target_port) == ("NodePort", 30080, 8080)
    headless = next(service for service in cluster.services if service.name == "catalog-db")
    assert headless.headless and headless.cluster_ips == ()
    assert cluster.service_by_cluster_ip("10.96.99.99") is None

    checkout = cluster.service_by_cluster_ip("10.96.30.30")
    [endpoints] = cluster.endpoint_slices_of(checkout)
    assert [(e.addresses, e.ready, e.pod, e.node) for e in endpoints.endpoints] == [
        (("10.244.1.6",), True, ("shop", "checkout-6b8f9c7d5f-m5vzt"), "kind-worker"),
        (("10.244.2.8",), False, ("shop", "checkout-6b8f9c7d5f-q8w2r"), "kind-worker2"),
    ]
    assert [(port.name, port.port, port.protocol) for port in endpoints.ports] == [("http", 8080, "TCP")]
    [kubernetes] = cluster.endpoint_slices_of(cluster.service_by_cluster_ip("10.96.0.1"))
    assert kubernetes.endpoints[0].pod is None and kubernetes.endpoints[0].addresses == ("172.18.0.2",)


def test_nodes_resolve_by_ip_and_by_pod_cidr(cluster):
    assert cluster.node_by_ip("172.18.0.3").name == "kind-worker"
    assert cluster.node_by_ip("203.0.113.21").name == "kind-worker"
    assert cluster.node("kind-worker").external_ips == ("203.0.113.21",)
    assert cluster.node_by_ip("fc00:f853:ccd:e793::4").name == "kind-worker2"
    assert cluster.node_by_pod_cidr("10.244.1.200").name == "kind-worker"
    assert cluster.node_by_pod_cidr("fd00:10:244:2::99").name == "kind-worker2"
    assert cluster.node_by_pod_cidr("10.245.0.1") is None


def test_namespaces_and_their_pods(cluster):
    assert cluster.namespace_labels["ops"] == {"kubernetes.io/metadata.name": "ops", "team": "platform"}
    assert [pod.name for pod in cluster.pods_in_namespace("ops")] == ["migrate-schema-x7k2p", "report-29893440-7tq8c"]
    assert cluster.pods_in_namespace("nowhere") == ()


def test_network_policies_keep_only_what_defines_them(cluster):
    [default_deny] = [policy for policy in cluster.network_policies if policy["metadata"]["name"] == "default-deny"]
    assert default_deny == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "namespace": "shop",
            "name": "default-deny",
            "labels": {"app.kubernetes.io/managed-by": "netpol-recommender"},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in cluster.network_policies] == [
        ("kube-system", "allow-dns"),
        ("shop", "default-deny"),
        ("shop", "frontend"),
    ]


HASH = "7d9c5b8f6d"
JOB_LABELS = {"batch.kubernetes.io/controller-uid": "0c1f", "batch.kubernetes.io/job-name": "report-29893440"}


@pytest.mark.parametrize(
    ("labels", "controller", "expected"),
    [
        ({"pod-template-hash": HASH}, Owner("ReplicaSet", f"web-{HASH}"), Owner("Deployment", "web")),
        ({"pod-template-hash": HASH}, Owner("ReplicaSet", f"my-web-app-{HASH}"), Owner("Deployment", "my-web-app")),
        ({}, Owner("ReplicaSet", f"web-{HASH}"), Owner("ReplicaSet", f"web-{HASH}")),
        ({"pod-template-hash": "other"}, Owner("ReplicaSet", f"web-{HASH}"), Owner("ReplicaSet", f"web-{HASH}")),
        ({"pod-template-hash": HASH}, Owner("ReplicaSet", HASH), Owner("ReplicaSet", HASH)),
        (JOB_LABELS, Owner("Job", "report-29893440"), Owner("CronJob", "report")),
        (
            {"controller-uid": "0c1f", "job-name": "nightly-backup-28000000"},
            Owner("Job", "nightly-backup-28000000"),
            Owner("CronJob", "nightly-backup"),
        ),
        (
            {"batch.kubernetes.io/job-name": "report-29893440"},
            Owner("Job", "report-29893440"),
            Owner("Job", "report-29893440"),
        ),
        (JOB_LABELS, Owner("Job", "report-2989344"), Owner("Job", "report-2989344")),
        (JOB_LABELS, Owner("Job", "other-29893440"), Owner("Job", "other-29893440")),
        ({}, Owner("Job", "migrate"), Owner("Job", "migrate")),
        ({}, Owner("StatefulSet", "db"), Owner("StatefulSet", "db")),
        ({}, Owner("DaemonSet", "agent"), Owner("DaemonSet", "agent")),
        ({}, None, Owner("Pod", "the-pod")),
        ({}, Owner("Node", "node-1"), Owner("Pod", "the-pod")),
    ],
)
def test_top_owner_is_found_from_the_controller_reference_and_labels(labels, controller, expected):
    assert top_owner("the-pod", labels, controller) == expected


# -- snapshot files --------------------------------------------------------------------------------


def test_a_written_snapshot_reads_back_equal_and_is_byte_identical(tmp_path, cluster):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write_snapshot(cluster, str(first))
    assert load_inventory(str(first)) == cluster
    write_snapshot(load_inventory(str(first)), str(second))
    assert first.read_bytes() == second.read_bytes() == snapshot_json(cluster).encode()
    document = json.loads(first.read_text())
    assert (document["apiVersion"], document["kind"]) == ("v1", "List")
    kinds = [item["kind"] for item in document["items"]]
    assert list(dict.fromkeys(kinds)) == ["Pod", "Service", "EndpointSlice", "Namespace", "Node", "NetworkPolicy"]


def test_a_gzip_snapshot_is_byte_identical_too(tmp_path, cluster):
    first, second = tmp_path / "first.json.gz", tmp_path / "second.json.gz"
    write_snapshot(cluster, str(first))
    write_snapshot(cluster, str(second))
    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes()).decode() == snapshot_json(cluster)
    assert load_inventory(str(first)) == cluster


def _as_yaml(document: dict) -> str:
    return yaml.safe_dump(document)


def _as_plain_json_list(document: dict) -> str:
    return json.dumps(document["items"])


def _as_yaml_documents(document: dict) -> str:
    return yaml.safe_dump_all(document["items"])


def _as_api_list_responses(document: dict) -> str:
    """Each kind as the API server lists it (`PodList`...), items without kind: one YAML document each."""
    lists: dict[str, dict] = {}
    for item in document["items"]:
        bare = {key: value for key, value in item.items() if key not in ("kind", "apiVersion")}
        entry = lists.setdefault(
            item["kind"], {"kind": f"{item['kind']}List", "apiVersion": item["apiVersion"], "items": []}
        )
        entry["items"].append(bare)
    return yaml.safe_dump_all(list(lists.values()))


@pytest.mark.parametrize("render", [_as_yaml, _as_plain_json_list, _as_yaml_documents, _as_api_list_responses])
def test_other_snapshot_shapes_give_the_same_inventory(tmp_path, cluster, render):
    path = tmp_path / "snapshot"
    path.write_text(render(json.loads(SNAPSHOT.read_text())))
    assert load_inventory(str(path)) == cluster


def test_a_namespace_always_carries_its_name_label(tmp_path):
    path = tmp_path / "namespaces.yaml"
    path.write_text("- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {team: shop}}}\n")
    assert load_inventory(str(path)).namespace_labels == {
        "shop": {"team": "shop", "kubernetes.io/metadata.name": "shop"}
    }


def test_other_kinds_in_a_snapshot_are_not_part_of_the_inventory(tmp_path):
    path = tmp_path / "all.json"
    items = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "shop", "name": "web"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    ]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    assert [namespace.name for namespace in load_inventory(str(path)).namespaces] == ["shop"]


def _pod(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "shop", "name": "web"}, "spec": spec}


BAD_SNAPSHOTS = [
    ("not_json", '{"kind": "List", "items": [', "bad:1: invalid JSON"),
    ("not_yaml", "items: [unclosed\nkind: List\n", "bad:2: invalid YAML"),
    ("a_scalar", "42\n", "bad: expected a Kubernetes List"),
    ("empty", "", "bad: no pods, namespaces"),
    ("an_item_without_kind", json.dumps([{"metadata": {"name": "x"}}]), "bad: item 0 (x): kind: is required"),
    ("an_item_that_is_not_an_object", json.dumps([_pod(), "x"]), "bad: item 1: expected an object, got str 'x'"),
    (
        "a_container_port_that_is_a_name",
        json.dumps([_pod(containers=[{"name": "c", "ports": [{"containerPort": "http"}]}])]),
        "bad: item 0 (Pod shop/web): spec.containers[0].ports[0].containerPort: expected an integer, got str 'http'",
    ),
    (
        "a_label_that_is_not_a_string",
        "- {kind: Namespace, metadata: {name: shop, labels: {enabled: true}}}\n",
        "bad: item 0 (Namespace shop): metadata.labels.enabled: expected a string, got bool True",
    ),
    (
        "a_pod_without_namespace",
        json.dumps([{"kind": "Pod", "metadata": {"name": "web"}}]),
        "bad: item 0 (Pod web): metadata.namespace: is required",
    ),
    (
        "a_bad_timestamp",
        json.dumps([{**_pod(), "metadata": {"namespace": "shop", "name": "web", "creationTimestamp": "yesterday"}}]),
        "metadata.creationTimestamp: expected an RFC 3339 time, got str 'yesterday'",
    ),
    ("the_same_pod_twice", json.dumps([_pod(), _pod()]), "bad: item 1 (Pod shop/web): the same object as item 0"),
]


@pytest.mark.parametrize(
    ("content", "message"), [case[1:] for case in BAD_SNAPSHOTS], ids=[case[0] for case in BAD_SNAPSHOTS]
)
def test_a_bad_snapshot_is_an_error_naming_the_file_the_item_and_the_field(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    Path("bad").write_text(content)
    with pytest.raises(CollectorError) as raised:
        load_inventory("bad")
    assert message in str(raised.value)


def test_null_fields_read_as_absent_as_kubectl_create_dry_run_writes_them():
    pod = {**_pod(containers=[{"name": "c", "ports": None}]), "status": {"podIP": None, "phase": None}}
    pod["metadata"] = {**pod["metadata"], "creationTimestamp": None, "labels": None}
    (read,) = inventory_from_objects([pod], "dry-run").pods
    assert (read.created, read.labels, read.ips, read.ports, read.phase) == (None, {}, (), (), "")


def test_a_bad_owner_reference_is_named_by_its_index():
    pod = _pod()
    pod["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "a"},
        {"kind": "Bad Kind", "name": "b", "controller": True},
    ]
    with pytest.raises(
        CollectorError, match=r"item 0 \(Pod shop/web\): metadata\.ownerReferences\[1\]\.kind: workload kind"
    ):
        inventory_from_objects([pod], "inv.json")


def test_a_missing_snapshot_is_an_error_naming_it(tmp_path):
    with pytest.raises(CollectorError, match=r"absent\.json"):
        load_inventory(str(tmp_path / "absent.json"))


# -- API errors: clear, and never with a credential ------------------------------------------------


def test_a_forbidden_list_names_the_resource_and_the_rbac_rule_to_grant(api_server, kubeconfig, caplog):
    api_server.fail(
        "/apis/discovery.k8s.io/v1/endpointslices",
        403,
        "Forbidden",
        'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:netpol:recommender" cannot list '
        'resource "endpointslices" in API group "discovery.k8s.io" at the cluster scope',
    )
    with caplog.at_level(logging.DEBUG):
        message = cluster_error(kubeconfig)
    assert "does not allow listing endpointslices.discovery.k8s.io in all namespaces (403 Forbidden" in message
    assert 'User "system:serviceaccount:netpol:recommender" cannot list' in message
    assert '{apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list"]}' in message
    assert "kubectl auth can-i list endpointslices.discovery.k8s.io --all-namespaces" in message
    assert TOKEN not in message and TOKEN not in caplog.text


def test_rejected_credentials_are_reported_without_them(api_server, tmp_path):
    wrong = "wrong-token-51b2e8"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api_server.url, token=wrong)
    message = cluster_error(str(kubeconfig))
    assert "rejected the credentials while listing pods (401 Unauthorized" in message
    assert wrong not in message and TOKEN not in message


def test_an_unreachable_api_server_fails_fast_and_clearly(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", token=TOKEN)
    started = time.monotonic()
    message = cluster_error(str(kubeconfig), timeout=2)
    assert time.monotonic() - started < 5
    assert f"cannot reach the API server http://127.0.0.1:{port} (context 'test')" in message
    assert "Connection refused" in message and TOKEN not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (f"users:\n- name: reader\n  user: {{token: {TOKEN}\n", "invalid YAML at line"),
        ("apiVersion: v1\nkind: Config\n", "current-context"),
        (
            "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
            f"users: [{{name: u, user: {TOKEN}}}]\n"
            "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
            "malformed",
        ),
    ],
    ids=["missing", "not_yaml", "no_current_context", "a_user_that_is_not_a_map"],
)
def test_a_bad_kubeconfig_is_named_without_its_secrets(tmp_path, content, expected):
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    message = cluster_error(str(path))
    assert f"kubeconfig {path}" in message and expected in message
    assert TOKEN not in message


# -- the generator's cluster is the one its flows come from --------------------------------------


def _flow_pods(lines) -> dict[str, tuple[str, str, dict[str, str], tuple[str, str]]]:
    """IP → (namespace, pod, labels, (workload kind, name)) of every pod endpoint in Hubble lines."""
    found = {}
    for line in lines:
        flow = json.loads(line)["flow"]
        for side, ip in (("source", flow["IP"]["source"]), ("destination", flow["IP"]["destination"])):
            endpoint = flow[side]
            if endpoint.get("pod_name"):
                labels = split_labels(tuple(endpoint["labels"]))[0]
                workload = endpoint["workloads"][0]
                found[ip] = (endpoint["namespace"], endpoint["pod_name"], labels, (workload["kind"], workload["name"]))
    return found


@pytest.mark.parametrize("topology", [shop_topology(), scale_topology(40, namespaces=3)], ids=["shop", "scale"])
def test_the_generated_inventory_has_every_pod_of_the_flows_with_its_labels_and_owner(tmp_path, topology):
    path = tmp_path / "cluster.json.gz"
    write_inventory(str(path), topology, seed=3)
    inventory = load_inventory(str(path))
    seen = _flow_pods(flow_lines(topology, 4000, seed=3))
    assert len(seen) == len(inventory.pods)
    for ip, (namespace, name, labels, (kind, workload)) in seen.items():
        [pod] = inventory.pods_by_ip(ip)
        assert (pod.namespace, pod.name, pod.owner) == (namespace, name, Owner(kind, workload))
        assert {key: value for key, value in pod.labels.items() if not is_volatile(key)} == labels


def test_the_generated_services_send_each_called_port_to_the_workload_pods():
    topology = shop_topology()
    inventory = inventory_from_objects(list_items(inventory_snapshot(topology), "generated"), "generated")
    dns = inventory.service_by_cluster_ip("10.96.0.10")
    assert (dns.namespace, dns.name) == ("kube-system", "kube-dns")
    for connection in topology.connections:
        if "/" not in connection.server:
            continue
        namespace, name = connection.server.split("/")
        pods = {pod.ips[0] for pod in inventory.pods_in_namespace(namespace) if pod.owner.name == name}
        [service] = [s for s in inventory.services if s.selector == dict(topology.workload(connection.server).labels)]
        assert (connection.protocol, connection.port, connection.port) in {
            (port.protocol, port.port, port.target_port) for port in service.ports
        }
        [endpoint_slice] = inventory.endpoint_slices_of(service)
        assert {address for endpoint in endpoint_slice.endpoints for address in endpoint.addresses} == pods
        assert any(port.port == connection.port for pod in inventory.pods_in_namespace(namespace) for port in pod.ports)


# -- any inventory survives a snapshot -------------------------------------------------------------

_names = st.from_regex(r"[abcxyz019]([-abcxyz019]{0,6}[abcxyz019])?", fullmatch=True)  # valid Kubernetes names
_labels = st.dictionaries(st.sampled_from(["app", "tier", "pod-template-hash", "job-name"]), _names, max_size=3)
_ips = st.lists(st.ip_addresses().map(str), max_size=2).map(tuple)
_times = st.none() | st.datetimes(timezones=st.just(UTC))
_protocols = st.sampled_from(["TCP", "UDP", "SCTP"])
_owners = st.none() | st.builds(Owner, st.sampled_from(["ReplicaSet", "StatefulSet", "Job", "Node"]), _names)


@st.composite
def _pods(draw):
    name, labels, controller = draw(_names), draw(_labels), draw(_owners)
    ports = draw(st.lists(st.builds(ContainerPort, _names, st.integers(1, 65535), _names | st.just(""), _protocols)))
    return Pod(
        draw(_names),
        name,
        top_owner(name, labels, controller),
        uid=draw(_names | st.just("")),
        ips=draw(_ips),
        labels=labels,
        controller=controller,
        node=draw(_names | st.just("")),
        host_network=draw(st.booleans()),
        ports=tuple(ports),
        created=draw(_times),
        deleted=draw(_times),
        phase=draw(st.sampled_from(["", "Running", "Succeeded"])),
    )


_services = st.builds(
    Service,
    _names,
    _names,
    st.sampled_from(["ClusterIP", "NodePort", "ExternalName"]),
    _ips,
    st.lists(st.builds(ServicePort, st.integers(1, 65535), st.integers(1, 65535) | _names, _names, _protocols)).map(
        tuple
    ),
    _labels,
)
_slices = st.builds(
    EndpointSlice,
    _names,
    _names,
    _names | st.just(""),
    st.sampled_from(["IPv4", "IPv6"]),
    st.lists(st.builds(SliceEndpoint, _ips, st.booleans(), st.none() | st.tuples(_names, _names), _names)).map(tuple),
    st.lists(st.builds(SlicePort, st.none() | st.integers(1, 65535), _names, _protocols)).map(tuple),
)
_nodes = st.builds(Node, _names, _ips, _ips, st.lists(st.just("10.244.0.0/24"), max_size=1).map(tuple), _labels)


def _unique(strategy, key):
    return st.lists(strategy, max_size=4, unique_by=key).map(tuple)


@settings(max_examples=40, deadline=None)
@given(
    pods=_unique(_pods(), lambda pod: (pod.namespace, pod.name)),
    namespaces=_unique(st.builds(Namespace, _names, _labels), lambda namespace: namespace.name),
    services=_unique(_services, lambda service: (service.namespace, service.name)),
    endpoint_slices=_unique(_slices, lambda item: (item.namespace, item.name)),
    nodes=_unique(_nodes, lambda node: node.name),
)
def test_any_inventory_reads_back_equal_from_its_snapshot(pods, namespaces, services, endpoint_slices, nodes):
    inventory = Inventory(pods, namespaces, services, endpoint_slices, nodes)
    document = json.loads(snapshot_json(inventory))
    assert inventory_from_objects(list_items(document, "snapshot"), "snapshot") == inventory
