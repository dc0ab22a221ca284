"""The Dask engine: partitions read on a local cluster of two worker processes give exactly the in-process result."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner, Result
from distributed import LocalCluster

from benchmarks.generate import shop_topology, write_capture, write_conntrack_dumps
from collectors.dask_engine import input_files, read_with_dask
from collectors.errors import BadInputError, CollectorError, OnError
from collectors.hubble import read_hubble_files
from recommender.cli import main
from tests.conftest import REPO, fixture_lines, fixture_path
from tests.test_parallel import same

SMALL = 64 << 10  # bytes per partition, so that small files are read in many partitions


@pytest.fixture(scope="module")
def scheduler():
    """The address of one local cluster for the whole module: two worker processes, as on a laptop."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_real_fixtures_in_many_partitions_give_the_in_process_result(tmp_path, scheduler):
    fixtures = sorted(str(path) for path in fixture_path("hubble").glob("*.json"))
    # the bookinfo captures joined: one file whose undecided events are decided by other partitions
    joined = tmp_path / "bookinfo.json"
    joined.write_text("".join(Path(path).read_text() for path in fixtures if "400-" in path) * 10)
    files = [*fixtures, str(joined)]
    one = read_hubble_files(files)
    assert one.stats.orientation["correlated"] > 0 and one.stats.orientation["known-server-port"] > 0
    assert len([p for file in input_files(files) for p in file.partitions(SMALL)]) > 2 * len(files)
    same(one, read_with_dask(files, scheduler=scheduler, blocksize=SMALL))


def test_generated_capture_in_many_partitions_gives_the_in_process_result(tmp_path, scheduler):
    path = str(tmp_path / "shop.json")
    write_capture(path, shop_topology(), 3000)
    assert len(input_files([path])[0].partitions(SMALL)) > 40
    read: list[int] = []
    same(read_hubble_files([path]), read_with_dask([path], scheduler=scheduler, blocksize=SMALL, progress=read.append))
    assert sum(read) == Path(path).stat().st_size  # progress: every byte, once


def test_gzip_files_are_one_partition_each_recognised_by_their_bytes(tmp_path, scheduler):
    named, unnamed = tmp_path / "a.json.gz", tmp_path / "b.json"
    write_capture(str(named), shop_topology(), 2000)
    write_capture(str(tmp_path / "b.json.gz"), shop_topology(), 1000, seed=2)
    shutil.move(tmp_path / "b.json.gz", unnamed)  # gzip without the suffix: read as gzip, as in-process
    files = [str(named), str(unnamed)]
    assert [len(file.partitions(SMALL)) for file in input_files(files)] == [1, 1]
    same(read_hubble_files(files), read_with_dask(files, scheduler=scheduler, blocksize=SMALL))


def test_fsspec_urls_are_expanded_and_named_as_given(tmp_path, scheduler):
    for seed in (1, 2):
        write_capture(str(tmp_path / f"part-{seed}.json"), shop_topology(), 1000, seed=seed)
    one = read_hubble_files([str(tmp_path / "part-*.json")])
    many = read_with_dask([f"file://{tmp_path}/part-*.json"], scheduler=scheduler, blocksize=SMALL)
    assert many.stats.sources == [f"file://{tmp_path}/part-1.json", f"file://{tmp_path}/part-2.json"]
    many.stats.sources = one.stats.sources
    same(one, many)


def test_a_bad_line_in_a_later_partition_is_named_by_its_line_in_the_file(tmp_path, scheduler):
    lines = fixture_lines("basic-sample-400-tcp-flows.json") * 3
    lines.insert(1000, "not json at all")
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    assert len(input_files([str(path)])[0].partitions(SMALL)) > 10
    with pytest.raises(BadInputError) as error:
        read_with_dask([str(path)], scheduler=scheduler, blocksize=SMALL)
    assert (error.value.path, error.value.line) == (str(path), 1001)
    skipped = read_with_dask([str(path)], scheduler=scheduler, blocksize=SMALL, on_error=OnError.SKIP)
    (example,) = skipped.stats.bad.examples
    assert example.startswith(f"{path}:1001: not valid JSON")


def test_inputs_the_workers_cannot_read_are_refused_clearly(tmp_path):
    write_conntrack_dumps(str(tmp_path), shop_topology(), 100)
    dump = next(tmp_path.glob("*.conntrack"))
    with gzip.open(tmp_path / "dump.gz", "wb") as compressed:
        compressed.write(dump.read_bytes())
    for path in (dump, tmp_path / "dump.gz"):
        with pytest.raises(CollectorError, match="conntrack dumps are read by the local engine"):
            input_files([str(path)])
    with pytest.raises(CollectorError, match="not standard input"):
        input_files(["-"])
    with pytest.raises(CollectorError, match="no file matches"):
        input_files([f"file://{tmp_path}/*.json"])
    with pytest.raises(CollectorError, match="no such file"):
        input_files([f"file://{tmp_path}/missing.json"])


def test_cli_reads_on_the_cluster_and_starts_its_own_without_scheduler(scheduler):
    def recommend(*options: str) -> Result:
        return CliRunner().invoke(main, ["recommend", str(REPO / "examples" / "shop-capture.json.gz"), *options])

    expected = recommend("-o", "yaml", "-q").stdout
    assert recommend("-o", "yaml", "-q", "--engine", "dask", "--scheduler", scheduler).stdout == expected
    assert recommend("-o", "yaml", "-q", "--engine", "dask", "-j", "1").stdout == expected
    outcome = recommend("--scheduler", scheduler)
    assert outcome.exit_code == 2 and "--scheduler needs --engine dask" in outcome.output


def test_the_example_dask_cluster_manifest_is_a_hardened_dask_operator_cluster():
    (cluster,) = yaml.safe_load_all((REPO / "deploy" / "dask" / "daskcluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    spec = cluster["spec"]
    assert spec["worker"]["replicas"] >= 1 and spec["scheduler"]["service"]["ports"][0]["port"] == 8786
    (worker,) = spec["worker"]["spec"]["containers"]
    assert worker["args"][0] == "dask-worker" and worker["envFrom"][0]["secretRef"]["name"]
    for role in ("worker", "scheduler"):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": role}, "spec": spec[role]["spec"]}
        kubernetes_validate.validate(pod, "1.30.0", strict=True)  # the operator's pod specs are PodSpecs
        (container,) = pod["spec"]["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"] and security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}  # the only writable place
