"""The output folders the tool owns (`recommend -o DIR`, `report -o DIR`): a re-run replaces its own files
and only those, a folder holding other files is refused unless --force, a failed run leaves the last set,
and no name from the input writes outside the folder or over the folder's own files."""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recommender import output_folder
from recommender.cli import main
from recommender.output_folder import MANIFEST, NEXT, PREVIOUS, OutputFolderError, check_name, replace_folder
from recommender.store import ObservationStore
from tests.conftest import REPO

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
EXCLUDED = (
    "--exclude-namespace",
    "kube-system",
    "--exclude-namespace",
    "payments",
    "--exclude-namespace",
    "monitoring",
)


def recommend(*args: str) -> tuple[int, str]:
    """Run `recommend` on the example, on the spec's semantics (on Cilium some of its edges have no rule: exit 6)."""
    outcome = CliRunner().invoke(main, ["recommend", EXAMPLE, "-q", "--cni", "kubernetes", *args])
    return outcome.exit_code, outcome.output


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def kustomization(folder: Path) -> list[str]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]


# -- a re-run replaces the files it wrote, and only those ------------------------------------------


def test_rerunning_with_exclude_namespace_removes_the_excluded_namespaces_file(tmp_path):
    out = tmp_path / "policies"
    assert recommend("-o", str(out))[0] == 0
    assert {"payments.yaml", "shop.yaml", "kustomization.yaml"} <= set(os.listdir(out))
    assert recommend("-o", str(out), *EXCLUDED)[0] == 0
    assert not (out / "payments.yaml").exists()
    assert sorted(os.listdir(out)) == [MANIFEST, "findings.json", "findings.md", "kustomization.yaml", "shop.yaml"]
    assert kustomization(out) == ["shop.yaml"]


def test_json_after_yaml_leaves_no_yaml_policy_file(tmp_path):
    out = tmp_path / "policies"
    recommend("-o", str(out))
    assert recommend("-o", str(out), "--format", "json")[0] == 0
    assert [path.name for path in out.glob("*.yaml")] == ["kustomization.yaml"]
    assert sorted(os.listdir(out)) == [
        MANIFEST,
        "findings.json",
        "findings.md",
        "kustomization.yaml",
        "monitoring.json",
        "payments.json",
        "shop.json",
    ]
    assert kustomization(out) == ["monitoring.json", "payments.json", "shop.json"]


def test_the_manifest_names_the_files_written_and_is_ignored_by_kubectl_and_policy_readers(tmp_path):
    out = tmp_path / "policies"
    recommend("-o", str(out))
    listed = (out / MANIFEST).read_text().splitlines()
    assert listed[0].startswith("#") and listed[1:] == [
        "monitoring.yaml",
        "payments.yaml",
        "shop.yaml",
        "kustomization.yaml",
        "findings.md",
        "findings.json",
    ]
    assert not MANIFEST.endswith((".yaml", ".yml", ".json"))  # `kubectl apply -f DIR` reads only those
    outcome = CliRunner().invoke(main, ["verify", EXAMPLE, "--policies", str(out), "-o", "json", "--cni", "kubernetes"])
    assert outcome.exit_code == 0, outcome.output


def test_a_folder_holding_a_file_the_tool_did_not_write_is_refused_and_force_keeps_that_file(tmp_path):
    out = tmp_path / "policies"
    recommend("-o", str(out))
    (out / "README.md").write_text("our notes\n")
    before = contents(out)
    code, output = recommend("-o", str(out), *EXCLUDED)
    assert code == 1
    assert "holds files netpol-recommender did not write (README.md)" in output and "--force" in output
    assert contents(out) == before
    assert recommend("-o", str(out), *EXCLUDED, "--force")[0] == 0
    assert sorted(os.listdir(out)) == [
        MANIFEST,
        "README.md",
        "findings.json",
        "findings.md",
        "kustomization.yaml",
        "shop.yaml",
    ]
    assert (out / "README.md").read_text() == "our notes\n"
    assert (out / MANIFEST).read_text().splitlines()[1:] == [
        "shop.yaml",
        "kustomization.yaml",
        "findings.md",
        "findings.json",
    ]


def test_a_folder_of_an_older_version_without_a_manifest_is_refused_as_foreign(tmp_path):
    out = tmp_path / "policies"
    out.mkdir()
    (out / "shop.yaml").write_text("kind: NetworkPolicy\n")
    assert recommend("-o", str(out))[0] == 1
    assert recommend("-o", str(out), "--force")[0] == 0
    assert (out / "shop.yaml").read_text() != "kind: NetworkPolicy\n"  # a file named like one of ours is replaced


def test_a_failed_run_leaves_the_previous_set_intact(tmp_path, monkeypatch):
    out = tmp_path / "policies"
    recommend("-o", str(out))
    before = contents(out)
    write, calls = output_folder._write, []

    def disk_full_at_the_second_file(path: str, text: str) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        write(path, text)

    monkeypatch.setattr(output_folder, "_write", disk_full_at_the_second_file)
    code, output = recommend("-o", str(out), *EXCLUDED, "--format", "json")
    assert code == 1 and "No space left on device" in output
    assert contents(out) == before
    assert sorted(os.listdir(tmp_path)) == ["policies"]  # no temporary folder left behind


def test_a_run_killed_between_its_two_renames_gets_the_last_set_back_on_the_next_run(tmp_path):
    out = tmp_path / "report"
    replace_folder(str(out), {"a.txt": "old\n"})
    os.rename(out, tmp_path / f".report.{PREVIOUS}x1")  # killed after moving the last set aside
    (tmp_path / f".report.{NEXT}x2").mkdir()  # and before renaming the new set in
    replace_folder(str(out), {"b.txt": "new\n"})
    assert sorted(os.listdir(tmp_path)) == ["report"]
    assert sorted(os.listdir(out)) == [MANIFEST, "b.txt"]


def test_the_working_directory_is_rewritten_in_place_and_stays_the_same_folder(tmp_path, monkeypatch):
    out = tmp_path / "policies"
    replace_folder(str(out), {"a.yaml": "a\n", "b.yaml": "b\n"})
    inode = out.stat().st_ino
    monkeypatch.chdir(out)
    replace_folder(".", {"b.yaml": "b2\n", "c.yaml": "c\n"})
    assert out.stat().st_ino == inode
    assert contents(out) == {MANIFEST: contents(out)[MANIFEST], "b.yaml": b"b2\n", "c.yaml": b"c\n"}
    assert (out / MANIFEST).read_text().splitlines()[1:] == ["b.yaml", "c.yaml"]


def test_a_manifest_naming_paths_outside_the_folder_never_removes_them(tmp_path):
    out = tmp_path / "policies"
    out.mkdir()
    victim = tmp_path / "victim.yaml"
    victim.write_text("keep me\n")
    (out / MANIFEST).write_text(f"../victim.yaml\n{victim}\nours.yaml\n")
    (out / "ours.yaml").write_text("old\n")
    (out / "notes.txt").write_text("foreign\n")
    replace_folder(str(out), {"new.yaml": "new\n"}, force=True)
    assert victim.read_text() == "keep me\n"
    assert sorted(os.listdir(out)) == [MANIFEST, "new.yaml", "notes.txt"]


# -- names from the input never leave the folder ------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../escaped.yaml", "/tmp/absolute.yaml", "a/b.yaml", "..", ".", "", ".hidden", MANIFEST, "a\\b", "x\0"]
)
def test_only_plain_visible_file_names_are_written(name):
    with pytest.raises(OutputFolderError, match="is not a plain file name"):
        check_name(name)


def capture_with_namespace(tmp_path: Path, namespace: str) -> str:
    """The example capture with its payments namespace renamed, as a hostile or careless capture could."""
    text = gzip.decompress(Path(EXAMPLE).read_bytes()).decode()
    assert '"namespace":"payments"' in text
    path = tmp_path / "captures" / "capture.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text.replace('"namespace":"payments"', f'"namespace":"{namespace}"'))
    return str(path)


def all_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("namespace", ["../../escaped", "/ABSOLUTE/escaped", "Shop"])
def test_a_namespace_that_is_not_a_kubernetes_name_writes_nothing(tmp_path, namespace):
    namespace = namespace.replace("/ABSOLUTE", str(tmp_path))
    capture = capture_with_namespace(tmp_path, namespace)
    before = all_files(tmp_path)
    outcome = CliRunner().invoke(main, ["recommend", capture, "-q", "-o", str(tmp_path / "a" / "b" / "out")])
    assert outcome.exit_code == 1
    assert all_files(tmp_path) == before
    assert not (tmp_path / "escaped.yaml").exists() and not (tmp_path / "a").exists()


def test_a_namespace_named_like_the_folders_own_files_gets_a_file_of_its_own(tmp_path):
    out = tmp_path / "out"
    outcome = CliRunner().invoke(
        main,
        ["recommend", capture_with_namespace(tmp_path, "kustomization"), "-q", "--cni", "kubernetes", "-o", str(out)],
    )
    assert outcome.exit_code == 0, outcome.output
    assert kustomization(out) == ["kustomization.namespace.yaml", "monitoring.yaml", "shop.yaml"]
    policies = list(yaml.safe_load_all((out / "kustomization.namespace.yaml").read_text()))
    assert {policy["metadata"]["namespace"] for policy in policies} == {"kustomization"}


# -- the report folder follows the same contract ----------------------------------------------------


def test_a_report_folder_holding_other_files_is_refused_before_the_window_is_stored(tmp_path):
    out, store = tmp_path / "reports", tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    refused = CliRunner().invoke(main, ["report", EXAMPLE, "--store", str(store), "-o", str(out)])
    assert refused.exit_code == 1 and "notes.txt" in refused.output
    assert ObservationStore(str(store)).windows == []
    forced = CliRunner().invoke(main, ["report", EXAMPLE, "--store", str(store), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(os.listdir(out)) == [MANIFEST, "notes.txt", "recommendation.yaml", "report.html", "report.json",
                                       "report.md"]  # fmt: skip
