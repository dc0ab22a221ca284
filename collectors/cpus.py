"""How many CPUs this process may use: its affinity mask, capped by the CPU quota of its cgroup.

A container's CPU limit (a CronJob's `resources.limits.cpu`) is a CFS quota on its cgroup, which
neither `os.cpu_count()` nor the affinity mask shows: a pod limited to 2 CPUs on a 64-core node
would otherwise start 64 processes sharing 2 CPUs' worth of time. The quota is read where the
kernel publishes it: cgroup v2 `cpu.max` (`"max 100000"` or `"150000 100000"`), cgroup v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 for none), for this process's cgroup and each of its
parents up to the root of the mounted hierarchy (a parent's quota binds its children too).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path


def available_cpus(proc: str | Path = "/proc/self") -> int:
    """The CPUs this process can use: its affinity mask, capped by its cgroup CPU quota rounded up
    (1.5 CPUs make 2 processes: the second still gets half a CPU of work done); at least 1."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc)
    return max(1, min(usable, math.ceil(quota))) if quota is not None else usable


def cgroup_cpu_quota(proc: str | Path = "/proc/self") -> float | None:
    """The CPU quota of the process whose `/proc/<pid>` is `proc`, in CPUs (the smallest on the way
    up its cgroup hierarchies); None when there is none, or no cgroup file system (not Linux)."""
    proc = Path(proc)
    try:
        memberships = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    v2_path, v1_path = None, None
    for line in memberships:  # "hierarchy-id:controllers:path"
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    quotas = []
    for line in mounts:  # "id parent major:minor root mount-point options [optional...] - type source super-options"
        fields = line.split()
        if "-" not in fields:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        kind, super_options = fields[fields.index("-") + 1], fields[-1].split(",")
        if kind == "cgroup2" and v2_path is not None:
            quotas += _quotas_up_to(Path(mount_point), _relative(v2_path, root), _v2_quota)
        elif kind == "cgroup" and "cpu" in super_options and v1_path is not None:
            quotas += _quotas_up_to(Path(mount_point), _relative(v1_path, root), _v1_quota)
    return min(quotas, default=None)


def _relative(path: str, root: str) -> str:
    """The cgroup `path` (from /proc/<pid>/cgroup) within a mount of the hierarchy from `root`;
    "" when it is not below that root (a cgroup namespace shows "/" and mounts its own cgroup)."""
    if root == "/":
        return path.strip("/")
    if path == root or path.startswith(root.rstrip("/") + "/"):
        return path[len(root) :].strip("/")
    return ""


def _quotas_up_to(mount_point: Path, relative: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas set on the cgroup `relative` below `mount_point` and on each of its parents."""
    quotas = []
    directory = mount_point / relative if relative else mount_point
    while True:
        quota = read(directory)
        if quota is not None:
            quotas.append(quota)
        if directory == mount_point or mount_point not in directory.parents:
            return quotas
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        limit, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        limit = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)
