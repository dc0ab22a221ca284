"""CPU counting from the cgroup CPU quota, against fake /proc/self and cgroup file systems laid out
as the kernel publishes them (cgroup v2, v1, hybrid, nested limits, cgroup namespaces)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collectors.cpus import available_cpus, cgroup_cpu_quota


def fake_process(tmp_path: Path, memberships: list[str], mounts: dict[str, tuple[str, str, str]]) -> Path:
    """A /proc/self with `cgroup` lines and a `mountinfo` line per mount point name under `tmp_path`:
    {name: (root, file system type, super options)}; returns the fake /proc/self."""
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("".join(f"{line}\n" for line in memberships))
    lines = []
    for number, (name, (root, kind, options)) in enumerate(mounts.items(), start=30):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        lines.append(f"{number} 23 0:{number} {root} {tmp_path / name} rw,relatime shared:9 - {kind} cgroup {options}")
    (proc / "mountinfo").write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n" + "".join(f"{line}\n" for line in lines)
    )
    return proc


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


V2 = ("/", "cgroup2", "rw,nsdelegate")


def test_a_cgroup_v2_container_limit_caps_the_cpus(tmp_path, monkeypatch) -> None:
    proc = fake_process(tmp_path, ["0::/"], {"sys/fs/cgroup": V2})  # a cgroup namespace: the container is "/"
    write(tmp_path / "sys/fs/cgroup/cpu.max", "150000 100000")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))
    assert cgroup_cpu_quota(proc) == 1.5
    assert available_cpus(proc) == 2


def test_the_tightest_quota_on_the_way_up_the_v2_hierarchy_applies(tmp_path) -> None:
    leaf = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"
    proc = fake_process(tmp_path, [f"0::{leaf}"], {"sys/fs/cgroup": V2})
    write(tmp_path / f"sys/fs/cgroup{leaf}/cpu.max", "max 100000")
    write(tmp_path / "sys/fs/cgroup/kubepods.slice/kubepods-pod1.slice/cpu.max", "200000 100000")
    write(tmp_path / "sys/fs/cgroup/kubepods.slice/cpu.max", "max 100000")
    assert cgroup_cpu_quota(proc) == 2.0


def test_no_v2_quota_means_the_affinity_mask_decides(tmp_path, monkeypatch) -> None:
    proc = fake_process(tmp_path, ["0::/"], {"sys/fs/cgroup": V2})
    write(tmp_path / "sys/fs/cgroup/cpu.max", "max 100000")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert cgroup_cpu_quota(proc) is None
    assert available_cpus(proc) == 3


def test_a_cgroup_v1_cfs_quota_caps_the_cpus_and_never_below_one(tmp_path, monkeypatch) -> None:
    path = "/kubepods/burstable/pod1/abc"
    proc = fake_process(
        tmp_path,
        ["12:memory:" + path, "4:cpu,cpuacct:" + path, "0::/"],
        {"sys/fs/cgroup/cpu,cpuacct": ("/", "cgroup", "rw,cpu,cpuacct"), "sys/fs/cgroup/unified": V2},
    )
    write(tmp_path / f"sys/fs/cgroup/cpu,cpuacct{path}/cpu.cfs_quota_us", "50000")
    write(tmp_path / f"sys/fs/cgroup/cpu,cpuacct{path}/cpu.cfs_period_us", "100000")
    write(tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1")
    write(tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert cgroup_cpu_quota(proc) == 0.5  # the hybrid unified hierarchy without cpu.max adds nothing
    assert available_cpus(proc) == 1


def test_a_v1_mount_of_the_containers_own_cgroup_is_read_at_the_mount_point(tmp_path) -> None:
    """Docker without a cgroup namespace: /proc/self/cgroup names /docker/ID, which is also the
    root of the mount, so the container's files are at the mount point itself."""
    proc = fake_process(tmp_path, ["3:cpu:/docker/abc"], {"sys/fs/cgroup/cpu": ("/docker/abc", "cgroup", "rw,cpu")})
    write(tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "300000")
    write(tmp_path / "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    assert cgroup_cpu_quota(proc) == 3.0


def test_mount_points_with_escaped_spaces_are_found(tmp_path) -> None:
    proc = fake_process(tmp_path, ["0::/"], {"my cgroup": V2})
    info = proc / "mountinfo"
    info.write_text(info.read_text().replace(str(tmp_path / "my cgroup"), str(tmp_path / "my\\040cgroup")))
    write(tmp_path / "my cgroup/cpu.max", "100000 100000")
    assert cgroup_cpu_quota(proc) == 1.0


def test_without_cgroup_files_there_is_no_quota(tmp_path) -> None:
    assert cgroup_cpu_quota(tmp_path / "nowhere") is None


@pytest.mark.skipif(not Path("/proc/self/cgroup").exists(), reason="not Linux")
def test_this_machine_has_at_least_one_cpu_and_no_more_than_its_affinity() -> None:
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
