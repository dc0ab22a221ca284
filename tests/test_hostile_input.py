"""Hostile or odd input (issue 17): names that are not Kubernetes names, workloads no stable label
selects, gzip files cut short. Nothing widens access, nothing is written outside the output folder."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.errors import BadInputError, CollectorError, OnError
from collectors.hubble import read_hubble_files
from collectors.inventory import inventory_from_objects
from collectors.names import (
    InvalidName,
    check_labels,
    check_namespace,
    check_object_name,
    is_host_name,
    label_key_problem,
)
from collectors.sources import GzipLines, TruncatedInput
from recommender import api
from recommender.cli import main
from recommender.errors import PolicyFileError
from recommender.verification import UNSEEN_POD
from tests.conftest import write_lines


def pod_end(namespace: str, pod: str, labels: dict[str, str], workload: tuple[str, str] | None = None) -> dict:
    end = {"namespace": namespace, "pod_name": pod, "labels": [f"k8s:{k}={v}" for k, v in labels.items()]}
    if workload:
        end["workloads"] = [{"name": workload[0], "kind": workload[1]}]
    return end


def flow(source: dict, destination: dict, port: int, second: int = 0, *, source_ip: str = "10.0.0.1") -> dict:
    return {
        "flow": {
            "time": f"2024-05-01T10:00:{second:02d}Z",
            "verdict": "FORWARDED",
            "IP": {"source": source_ip, "destination": "10.0.0.2"},
            "l4": {"TCP": {"source_port": 40000 + second, "destination_port": port}},
            "is_reply": False,
            "source": source,
            "destination": destination,
        }
    }


SERVER = pod_end("shop", "db-0", {"app": "db"}, ("db", "StatefulSet"))
CLIENT = pod_end("shop", "api-5d8f7b9c4d-abcde", {"app": "api"}, ("api", "Deployment"))
BACKUP = pod_end(
    "shop",
    "backup-28391040-x7k2p",
    {"job-name": "backup-28391040", "controller-uid": "0f3c", "batch.kubernetes.io/job-name": "backup-28391040"},
    ("backup", "CronJob"),
)


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../escaped", "/etc/cron.d", "Shop", "a" * 64, "", "-shop", "shop-", "sh op", "shop\n", "a.b"]
)
def test_a_namespace_that_is_not_an_rfc_1123_label_is_refused(name):
    with pytest.raises(InvalidName, match="not a Kubernetes namespace name"):
        check_namespace(name)


@pytest.mark.parametrize("name", ["shop", "kustomization", "a", "a" * 63, "kube-system", "0"])
def test_namespace_names_kubernetes_accepts_are_accepted(name):
    assert check_namespace(name) == name


def test_object_names_are_rfc_1123_subdomains():
    assert check_object_name("reviews-v1-7f9c.x", "pod name")
    for bad in ("../x", "a/b", "A", "a" * 254, "a..b", ".a"):
        with pytest.raises(InvalidName):
            check_object_name(bad, "pod name")


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"app": "a,b=c"}, "value"),  # would break the k=v,k2=v2 encoding of label sets
        ({"app": "x\ny"}, "value"),
        ({"app": "v" * 64}, "value"),
        ({"a=b": "c"}, "key"),
        ({"/app": "c"}, "prefix"),
        ({"Example.COM/app": "c"}, "prefix"),
        ({"example.com/": "c"}, "name"),
        ({"": "c"}, "name"),
    ],
)
def test_labels_outside_the_kubernetes_label_syntax_are_refused(labels, problem):
    with pytest.raises(InvalidName, match=problem):
        check_labels(labels)


def test_labels_kubernetes_accepts_are_accepted():
    labels = {"app.kubernetes.io/name": "Shop_1.2-x", "k8s-app": "", "a": "b", "x.y/z-1": "v"}
    assert check_labels(labels) == labels
    assert label_key_problem("batch.kubernetes.io/job-name") == ""


def test_dns_names_of_peers_must_be_host_names():
    assert is_host_name("api.example.com") and is_host_name("*.example.com") and is_host_name("_sip._tcp.example.org")
    assert not is_host_name("evil.com\napiVersion: v1") and not is_host_name("a b") and not is_host_name("")


@pytest.mark.parametrize(
    ("end", "message"),
    [
        ({"namespace": "../../escaped", "pod_name": "x"}, "namespace '../../escaped'"),
        ({"namespace": "shop", "pod_name": "../x"}, "pod name '../x'"),
        ({"namespace": "shop", "pod_name": "x", "labels": ["k8s:app=a,b=c"]}, "label 'app'"),
        ({"namespace": "shop", "pod_name": "x", "workloads": [{"name": "a/b", "kind": "Deployment"}]}, "workload"),
        ({"namespace": "shop", "pod_name": "x", "workloads": [{"name": "a", "kind": "De ploy"}]}, "kind"),
    ],
)
def test_a_hubble_endpoint_with_a_name_kubernetes_refuses_is_an_error_naming_the_line(tmp_path, end, message):
    path = write_lines(tmp_path / "odd.json", [flow(CLIENT, SERVER, 5432), flow(end, SERVER, 5432, 1)])
    with pytest.raises(BadInputError) as raised:
        read_hubble_files([str(path)])
    assert raised.value.line == 2 and message in str(raised.value) and str(raised.value).startswith(f"{path}:2:")
    skipped = read_hubble_files([str(path)], on_error=OnError.SKIP)
    assert skipped.stats.bad.count == 1 and int(skipped.observations["count"].sum()) == 1


def test_a_world_peer_whose_address_is_not_an_ip_is_an_error_not_a_crash(tmp_path):
    world = {"labels": ["reserved:world"]}
    bad = flow(CLIENT, world, 443)
    bad["flow"]["IP"]["destination"] = "10.0.0.2/8"
    path = write_lines(tmp_path / "world.json", [bad])
    with pytest.raises(BadInputError, match=r"world\.json:1: '10\.0\.0\.2/8' is not an IP address"):
        read_hubble_files([str(path)])


def test_dns_names_that_are_not_host_names_are_dropped_and_counted(tmp_path):
    world = {"labels": ["reserved:world"]}
    named = flow(CLIENT, world, 443)
    named["flow"]["IP"]["destination"] = "93.184.216.34"
    named["flow"]["destination_names"] = ["example.com", "evil.com\n- kind: ClusterRoleBinding"]
    observed = api.load_observations([str(write_lines(tmp_path / "names.json", [named]))], jobs=1)
    assert observed.dns_names == {"93.184.216.34": ("example.com",)}
    assert observed.stats.ignored["DNS name that is not a host name"] == 1


def test_an_inventory_pod_with_a_bad_name_is_an_error_naming_the_item():
    pod = {"kind": "Pod", "metadata": {"namespace": "../x", "name": "p"}, "status": {"podIP": "10.0.0.1"}}
    with pytest.raises(CollectorError, match=r"inv\.json: item 0 .*metadata\.namespace: namespace '\.\./x'"):
        inventory_from_objects([pod], "inv.json")
    pod = {"kind": "Pod", "metadata": {"namespace": "shop", "name": "p", "labels": {"app": "a b"}}}
    with pytest.raises(CollectorError, match=r"metadata\.labels: label 'app'"):
        inventory_from_objects([pod], "inv.json")
    pod = {"kind": "Pod", "metadata": {"namespace": "shop", "name": "p"}, "status": {"podIP": "not-an-ip"}}
    with pytest.raises(CollectorError, match=r"status\.podIP: 'not-an-ip' is not an IP address"):
        inventory_from_objects([pod], "inv.json")


def test_a_policy_file_with_a_bad_namespace_or_label_is_an_error_naming_the_file(tmp_path):
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "../../x"},
        "spec": {"podSelector": {}},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(policy))
    with pytest.raises(api.RecommenderError, match=r"policy\.yaml: NetworkPolicy \.\./\.\./x/p: namespace"):
        api.load_policies(str(path))
    policy["metadata"]["namespace"] = "shop"
    policy["spec"]["podSelector"] = {"matchLabels": {"app": "a,b"}}
    path.write_text(json.dumps(policy))
    with pytest.raises(api.RecommenderError, match=r"label 'app'"):
        api.load_policies(str(path))


# -- the traversal capture, end to end ------------------------------------------------------------


def _traversal_capture(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.yaml"
    victim.write_text("precious\n")
    lines = [
        flow(CLIENT, SERVER, 5432, 0),
        flow(pod_end("../../escaped", "x", {"app": "x"}), SERVER, 5432, 1),
        flow(pod_end(str(tmp_path / "victim"), "x", {"app": "x"}), SERVER, 5432, 2),
        flow(pod_end("kustomization", "web-0", {"app": "web"}, ("web", "StatefulSet")), SERVER, 5432, 3),
    ]
    return write_lines(tmp_path / "capture.json", lines)


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_the_traversal_capture_fails_naming_the_line_and_writes_nothing(tmp_path):
    capture = _traversal_capture(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    result = CliRunner().invoke(main, ["recommend", str(capture), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{capture}:2: namespace '../../escaped' is not a Kubernetes namespace name" in result.output
    assert _files(tmp_path) == before and (tmp_path / "victim.yaml").read_text() == "precious\n"


def test_the_traversal_capture_skipped_writes_only_inside_the_output_folder(tmp_path):
    capture = _traversal_capture(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    result = CliRunner().invoke(main, ["recommend", str(capture), "-o", str(out), "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    written = _files(tmp_path) - before
    assert all(name.startswith("a/b/out/") for name in written)
    assert {name.removeprefix("a/b/out/") for name in written} == {
        ".netpol-recommender-files",
        "kustomization.yaml",
        "kustomization.namespace.yaml",
        "shop.yaml",
        "findings.md",
        "findings.json",
    }
    assert (tmp_path / "victim.yaml").read_text() == "precious\n"
    malformed = [
        item for item in json.loads((out / "findings.json").read_text())["findings"] if item["kind"] == "malformed-line"
    ]
    assert [item["subject"].split(": ", 1)[0] for item in malformed] == [f"{capture}:2", f"{capture}:3"]
    assert "lines skipped (malformed)" in result.output and f"skipped: {capture}:3: namespace" in result.output
    assert "kind: Kustomization" in (out / "kustomization.yaml").read_text()


# -- workloads without a stable selector ----------------------------------------------------------


def _cronjob_capture(tmp_path: Path) -> list[str]:
    lines = [flow(BACKUP, SERVER, 5432, 0, source_ip="10.0.0.9"), flow(CLIENT, SERVER, 5432, 1)]
    return [str(write_lines(tmp_path / "cronjob.json", lines))]


def _workload_selectors(result: api.Recommendation) -> list:
    """Every selector of a workload the proposal writes: policy subjects and rule peers."""
    found = []
    for plan in result.proposal.policies:
        spec = plan.manifest["spec"]
        if plan.workload:
            found.append(spec["podSelector"])
        for direction, key in (("ingress", "from"), ("egress", "to")):
            found += [
                peer["podSelector"] for rule in spec.get(direction, []) for peer in rule[key] if "podSelector" in peer
            ]
    return found


def test_a_cronjob_with_only_volatile_labels_gets_no_empty_selector_and_is_reported(tmp_path):
    result = api.recommend(api.load_observations(_cronjob_capture(tmp_path), jobs=1))
    assert {} not in _workload_selectors(result)
    assert "allow-backup" not in {plan.name for plan in result.proposal.policies}
    (item,) = result.proposal.findings.no_stable_selector
    assert (item.key, item.emitted, item.suggestion) == ("shop/backup", False, ())
    assert item.connections == ("shop/backup -> shop/db TCP/5432",)
    assert dict(item.labels)["job-name"] == "backup-28391040"
    assert ("workloads without a stable selector", "1 (no rule)") in result.summary()
    assert len(result.check.excess) == 0  # api -> db stays exact


def test_the_summary_names_the_workload_without_a_stable_selector(tmp_path):
    capture = _cronjob_capture(tmp_path)
    result = CliRunner().invoke(main, ["recommend", *capture, "-o", "yaml"])
    assert result.exit_code == 0, result.output
    assert "no stable selector: shop/backup" in result.output and "shop/backup -> shop/db TCP/5432" in result.output
    assert "podSelector: {}\n  policyTypes:\n    - Ingress\n    - Egress" in result.output  # only the default-deny
    assert result.output.count("podSelector: {}") == 1


@pytest.mark.parametrize("allow_empty_selector", [False, True])
def test_the_output_folder_names_the_workload_in_its_findings(tmp_path, allow_empty_selector):
    out = tmp_path / "out"
    option = ["--allow-empty-selector"] if allow_empty_selector else []
    result = CliRunner().invoke(main, ["recommend", *_cronjob_capture(tmp_path), "-o", str(out), *option])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "findings.json").read_text())
    (item,) = [item for item in document["findings"] if item["kind"] == "no-stable-selector"]
    assert (item["subject"], item["evidence"]) == ("shop/backup", ["shop/backup -> shop/db TCP/5432"])
    assert document["counts"]["no-stable-selector"] == 1
    empty_selectors = (out / "shop.yaml").read_text().count("podSelector: {}")  # one is the default-deny's
    assert (empty_selectors > 1) == allow_empty_selector
    assert (document["counts"]["excess"] > 0) == allow_empty_selector
    assert "| shop/backup |" in (out / "findings.md").read_text()


def test_with_the_option_the_empty_selector_is_emitted_and_its_reach_counted_as_excess(tmp_path):
    options = api.SynthesisOptions(allow_empty_selector=True)
    result = api.recommend(api.load_observations(_cronjob_capture(tmp_path), jobs=1), options)
    assert {} in _workload_selectors(result)
    (item,) = result.proposal.findings.no_stable_selector
    assert item.emitted
    assert result.check.recall == 1.0
    excess = {(item.client, item.server) for item in result.check.excess.pairs}
    assert (f"shop/{UNSEEN_POD}", "shop/db") in excess  # any other pod of shop may now reach the database


def test_with_an_inventory_the_label_that_would_select_it_is_named(tmp_path):
    def pod(name: str, labels: dict, owner: tuple[str, str], ip: str) -> dict:
        return {
            "kind": "Pod",
            "metadata": {
                "namespace": "shop",
                "name": name,
                "labels": labels,
                "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}],
            },
            "status": {"podIP": ip},
        }

    backup_labels = {"job-name": "backup-28391040", "controller-uid": "0f3c"}
    inventory = inventory_from_objects(
        [
            pod("backup-28391040-x7k2p", backup_labels, ("Job", "backup-28391040"), "10.0.0.9"),
            pod("db-0", {"app": "db"}, ("StatefulSet", "db"), "10.0.0.2"),
            pod(
                "api-5d8f7b9c4d-abcde",
                {"app": "api", "pod-template-hash": "5d8f7b9c4d"},
                ("ReplicaSet", "api-5d8f7b9c4d"),
                "10.0.0.1",
            ),
        ],
        "inventory.json",
    )
    result = api.recommend(api.load_observations(_cronjob_capture(tmp_path), jobs=1), inventory=inventory)
    (item,) = result.proposal.findings.no_stable_selector
    assert item.key == "shop/backup" and item.suggestion == (("app.kubernetes.io/name", "backup"),)
    assert {} not in _workload_selectors(result)


def test_with_an_inventory_a_workload_alone_in_its_namespace_may_be_selected_by_an_empty_selector(tmp_path):
    alone = pod_end("batch", "backup-28391040-x7k2p", {"job-name": "backup-28391040"}, ("backup", "CronJob"))
    path = write_lines(tmp_path / "alone.json", [flow(alone, SERVER, 5432, 0, source_ip="10.0.0.9")])
    owner = [{"kind": "Job", "name": "backup-28391040", "controller": True}]
    inventory = inventory_from_objects(
        [
            {
                "kind": "Pod",
                "metadata": {
                    "namespace": "batch",
                    "name": "backup-28391040-x7k2p",
                    "labels": {"job-name": "backup-28391040"},
                    "ownerReferences": owner,
                },
                "status": {"podIP": "10.0.0.9"},
            }
        ],
        "inventory.json",
    )
    result = api.recommend(api.load_observations([str(path)], jobs=1), inventory=inventory)
    assert result.proposal.findings.no_stable_selector == []
    assert "allow-backup-28391040" in {plan.name for plan in result.proposal.policies}  # its Job, alone in batch


# -- truncated gzip -------------------------------------------------------------------------------


def _gzip_capture(count: int = 200) -> bytes:
    lines = [json.dumps(flow(CLIENT, SERVER, 5432 + index % 7, index % 60)) + "\n" for index in range(count)]
    return "".join(lines).encode()


def test_a_gzip_file_cut_in_the_middle_gives_the_flows_before_the_cut_and_counts_the_loss(tmp_path):
    plain = _gzip_capture()
    packed = gzip.compress(plain)
    path = tmp_path / "cut.json.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(BadInputError) as raised:
        read_hubble_files([str(path)])
    assert f"gzip stream broken at byte {len(packed) // 2:,}" in str(raised.value) and "cut" in str(raised.value)
    result = read_hubble_files([str(path)], on_error=OnError.SKIP)
    readable = zlib.decompressobj(31).decompress(packed[: len(packed) // 2])
    complete = readable.count(b"\n")
    assert 0 < complete < 200
    assert result.stats.flows == complete and result.stats.lines == complete
    assert result.stats.bad.count == 1 and result.stats.bad.examples[0].startswith(f"{path}:{complete + 1}: gzip")


def test_a_cut_gzip_fails_the_cli_with_a_clear_error(tmp_path):
    packed = gzip.compress(_gzip_capture())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(packed[:-20])
    result = CliRunner().invoke(main, ["recommend", str(path), "-o", "yaml"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {path}:" in result.output and "gzip stream broken at byte" in result.output


def test_a_corrupt_gzip_names_the_byte_where_it_broke(tmp_path):
    packed = bytearray(gzip.compress(_gzip_capture()))
    packed[10:14] = b"\xff\xff\xff\xff"  # the first deflate block header
    with pytest.raises(TruncatedInput, match=r"gzip stream broken at byte 1[0-3]: corrupt compressed data"):
        GzipLines(io.BytesIO(bytes(packed)), "x.gz").read()


@settings(max_examples=40, deadline=None)
@given(
    members=st.lists(st.lists(st.binary(max_size=60), max_size=30).map(b"\n".join), min_size=1, max_size=3),
    padding=st.integers(0, 3),
)
def test_gzip_lines_read_what_gzip_reads(members, padding):
    packed = b"".join(gzip.compress(member) for member in members) + b"\0" * padding
    assert GzipLines(io.BytesIO(packed), "x.gz").read() == b"".join(members)


@settings(max_examples=40, deadline=None)
@given(text=st.lists(st.binary(max_size=50), min_size=1, max_size=40).map(b"\n".join), cut=st.floats(0, 1))
def test_a_cut_gzip_yields_whole_lines_of_its_content_then_the_break(text, cut):
    packed = gzip.compress(text)
    at = max(2, int(len(packed) * cut))
    reader = io.BufferedReader(GzipLines(io.BytesIO(packed[:at]), "x.gz"))
    lines = []
    try:
        lines.extend(reader)
    except TruncatedInput as broken:
        assert broken.line == len(lines) + 1 and all(line.endswith(b"\n") for line in lines)
        assert text.startswith(b"".join(lines))
    else:
        assert at == len(packed) and b"".join(lines) == text


@pytest.mark.parametrize("kind", ["NetworkPolicy", "CiliumNetworkPolicy"])
def test_a_policy_port_whose_protocol_is_not_a_string_is_refused_naming_the_field(tmp_path, kind):
    spec = (
        {"podSelector": {}, "egress": [{"ports": [{"protocol": ["TCP"], "port": 5432}]}]}
        if kind == "NetworkPolicy"
        else {"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"protocol": ["TCP"], "port": "5432"}]}]}]}
    )
    api_version = "networking.k8s.io/v1" if kind == "NetworkPolicy" else "cilium.io/v2"
    policy = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "p", "namespace": "shop"}, "spec": spec}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    with pytest.raises(PolicyFileError, match=r"policy\.json: .*protocol"):
        api.load_policies(str(path))
