"""The deployment under deploy/ and the Dockerfile, checked statically: every manifest against the
Kubernetes 1.30 schema in strict mode, the least privilege of the ServiceAccount and of the pod's
network, the CronJob's security settings, and an image that runs the installed wheel as non-root."""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from collectors.inventory_api import RESOURCES
from recommender.cli_report import ENVIRONMENT_PREFIX, report
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
KUSTOMIZATION = "kustomization.yaml"
READ_ONLY = {"get", "list", "watch"}


def manifest_files() -> list[Path]:
    """The recommender's deployment: the manifests next to the kustomization (subfolders such as
    deploy/dask hold other deployments, of custom resources outside the Kubernetes schema)."""
    return sorted(path for path in DEPLOY.glob("*.yaml") if path.name != KUSTOMIZATION)


def manifests() -> list[dict[str, Any]]:
    return [document for path in manifest_files() for document in yaml.safe_load_all(path.read_text()) if document]


def the(kind: str) -> dict[str, Any]:
    (found,) = [document for document in manifests() if document["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    return the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return only


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_manifest_is_valid_kubernetes_1_30_in_strict_mode(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / KUSTOMIZATION).read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in manifest_files())
    kinds = {document["kind"] for document in manifests()}
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
        "NetworkPolicy",
    }


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_deployment_with_the_image_set():
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True)
    documents = list(yaml.safe_load_all(built.stdout))
    assert len(documents) == len(manifests())
    (cronjob,) = [d for d in documents if d["kind"] == "CronJob"]
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    images = yaml.safe_load((DEPLOY / KUSTOMIZATION).read_text())["images"]
    assert image == f"{images[0]['newName']}:{images[0]['newTag']}"


def test_the_cluster_role_grants_only_reading_what_the_inventory_lists():
    granted = set()
    for rule in the("ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
        assert set(rule["verbs"]) == READ_ONLY
        granted |= {(group, resource) for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {
        ("", "pods"),
        ("", "namespaces"),
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
        ("cilium.io", "ciliumnetworkpolicies"),
        ("cilium.io", "ciliumclusterwidenetworkpolicies"),
        ("policy.networking.k8s.io", "clusternetworkpolicies"),
    }
    assert granted == {(resource.group, resource.name) for resource in RESOURCES}


def test_the_binding_gives_the_role_to_the_cronjobs_service_account():
    binding, account = the("ClusterRoleBinding"), the("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": the("ClusterRole")["metadata"]["name"],
    }
    subject = {"kind": "ServiceAccount", **{k: account["metadata"][k] for k in ("name", "namespace")}}
    assert binding["subjects"] == [subject]
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False  # mounted only where asked for
    assert pod_spec()["automountServiceAccountToken"] is True  # the report reads the inventory


def test_the_cronjob_runs_one_at_a_time_with_bounded_resources():
    spec = the("CronJob")["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    resources = container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}


def test_the_pod_runs_non_root_read_only_without_privileges():
    pod, own = pod_spec()["securityContext"], container()["securityContext"]
    assert pod["runAsNonRoot"] is True and own["runAsNonRoot"] is True
    assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0 and own["runAsUser"] == pod["runAsUser"]
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"} == own["seccompProfile"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in own


def test_the_pod_writes_only_to_its_volumes():
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    claim = the("PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[mounts["/data"]]["persistentVolumeClaim"] == {"claimName": claim}
    arguments = container()["args"]
    assert "--store=/data/store" in arguments and "--output=/data/reports" in arguments
    tls = volumes[mounts["/var/run/hubble-relay-tls"]]["secret"]
    assert tls["optional"] is True  # only needed with TLS


def test_the_report_folder_is_replaced_inside_the_writable_volume_it_lives_on():
    """`report -o DIR` writes the new set in a folder next to DIR and renames it into place: DIR's parent must
    be on a writable volume (the root filesystem is read-only, /tmp is another filesystem), DIR no mount point."""
    (output,) = [arg.split("=", 1)[1] for arg in container()["args"] if arg.startswith("--output=")]
    mounts = {mount["mountPath"]: mount for mount in container()["volumeMounts"]}
    parent = posixpath.dirname(output)
    assert output not in mounts
    (volume,) = [path for path in mounts if parent == path or parent.startswith(f"{path}/")]
    assert volume == "/data" and not mounts[volume].get("readOnly")


def test_the_settings_come_from_the_configmap():
    configmap = the("ConfigMap")
    assert container()["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    referenced = {name for argument in container()["args"] for name in re.findall(r"\$\((\w+)\)", argument)}
    assert referenced == {"HUBBLE_RELAY_ADDRESS", "WINDOW", "RETAIN", "STALE_AFTER"}
    assert referenced <= set(configmap["data"])
    assert "--server=$(HUBBLE_RELAY_ADDRESS)" in container()["args"]
    options = {parameter.name for parameter in report.params}
    prefix = f"{ENVIRONMENT_PREFIX}_"
    named = [key.removeprefix(prefix) for key in configmap["data"] if key.startswith(prefix)]
    assert {"TLS", "TLS_CA_CERT_FILES", "TLS_SERVER_NAME", "TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE"} <= set(named)
    assert {name.lower() for name in named} <= options  # each sets an option of `report` (its environment variable)


def kube_system_pods(k8s_app: str) -> list[dict[str, Any]]:
    namespace = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    return [{"namespaceSelector": namespace, "podSelector": {"matchLabels": {"k8s-app": k8s_app}}}]


def test_the_network_policy_allows_no_ingress_and_only_dns_relay_and_api_server_egress():
    spec = the("NetworkPolicy")["spec"]
    pod_labels = the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"] == {"matchLabels": pod_labels}
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in spec
    egress = [(rule["to"], sorted((p["protocol"], p["port"]) for p in rule["ports"])) for rule in spec["egress"]]
    assert egress == [
        (kube_system_pods("kube-dns"), [("TCP", 53), ("UDP", 53)]),
        (kube_system_pods("hubble-relay"), [("TCP", 4245)]),
        ([{"ipBlock": {"cidr": "192.0.2.1/32"}}], [("TCP", 443), ("TCP", 6443)]),
    ]
    assert "SET THIS to your API server's addresses" in (DEPLOY / "networkpolicy.yaml").read_text()


# -- the image ----------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            if line.startswith("FROM "):
                stages.append([])
            stages[-1].append(line.strip())
    return stages


def test_the_image_builds_the_wheel_then_installs_only_the_wheel():
    build, final = dockerfile_stages()
    assert build[0].startswith("FROM python:3.11-slim AS ")
    assert any("pip wheel" in line and "--no-deps" in line for line in build)
    assert final[0] == "FROM python:3.11-slim"
    installs = [line for line in final if "pip install" in line]
    assert len(installs) == 1 and re.search(r"/wheels/netpol_recommender-\*\.whl$", installs[0])
    assert not any(line.startswith(("COPY", "ADD")) and "--from=" not in line for line in final)


def test_the_image_runs_the_console_script_as_the_cronjobs_non_root_user():
    final = dockerfile_stages()[-1]
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    assert int(uid) == pod_spec()["securityContext"]["runAsUser"]
    assert final.index(f"USER {user}") > max(i for i, line in enumerate(final) if line.startswith("RUN "))
    assert 'ENTRYPOINT ["netpol-recommender"]' in final


def test_the_build_context_holds_only_the_package():
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignored[0] == "*"
    assert {line for line in ignored if line.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!collectors/",
        "!recommender/",
    }
