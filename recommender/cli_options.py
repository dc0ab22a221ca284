"""Options shared by the commands: where observations come from, and where the inventory comes from.

Each decorator adds its options and hands the command one object (`sources=`, `cluster=`) that
knows how to load what the options describe, so every command reads its inputs the same way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from collectors import ENGINES
from collectors.errors import CollectorError
from collectors.parquet import merge_observation_sets
from collectors.relay import DEFAULT_SERVER, RelayOptions, RelayProgress, parse_duration, parse_time
from collectors.sources import STDIN, expand_inputs
from recommender import api
from recommender.errors import RecommenderError

PROGRESS_THRESHOLD = 32 << 20  # bytes: inputs smaller than this read too fast for a progress bar
stderr = Console(stderr=True, soft_wrap=True)


@dataclass(frozen=True)
class Sources:
    """Observation files, and/or a Hubble Relay window."""

    files: tuple[str, ...]
    on_error: str
    relay: RelayOptions | None
    jobs: int | None = None
    engine: str = "local"
    scheduler: str | None = None

    def load(self, inventory: api.Inventory | None = None) -> api.ObservationSet:
        """The observations; `inventory` names the IPs of conntrack dumps."""
        sets = []
        if self.files:
            with _file_progress(self.files) as advance:
                sets.append(
                    api.load_observations(
                        self.files,
                        on_error=self.on_error,
                        progress=advance,
                        jobs=self.jobs,
                        engine=self.engine,
                        scheduler=self.scheduler,
                        inventory=inventory,
                    )
                )
        if self.relay is not None:
            sets.append(_collect(self.relay))
        return sets[0] if len(sets) == 1 else merge_observation_sets(sets)


_RELAY_OPTIONS = [
    click.option(
        "--server",
        help=f"Hubble Relay address (default when no FILES are given: {DEFAULT_SERVER}, "
        "the target of `cilium hubble port-forward`).",
    ),
    click.option(
        "--timeout",
        "connect_timeout",
        type=float,
        default=5.0,
        show_default=True,
        help="Seconds to wait for the relay to answer.",
    ),
    click.option("--tls", is_flag=True, help="Use TLS to connect to the relay."),
    click.option("--tls-ca-cert-files", multiple=True, help="CA certificates to verify the relay with (repeatable)."),
    click.option("--tls-client-cert-file", default="", help="Client certificate for mTLS."),
    click.option("--tls-client-key-file", default="", help="Client key for mTLS."),
    click.option("--tls-server-name", default="", help="Server name to verify the relay's certificate against."),
    click.option(
        "--tls-allow-insecure",
        is_flag=True,
        help="Skip certificate verification (not possible with "
        "gRPC for Python: the error explains how to get the relay's CA).",
    ),
    click.option("--since", help="Flows since a duration ago (1h) or an RFC 3339 time."),
    click.option("--until", help="Flows until a duration ago or an RFC 3339 time."),
    click.option("--last", type=int, default=0, help="The last N flows."),
    click.option("--follow", is_flag=True, help="Keep observing new flows (until --duration or Ctrl-C)."),
    click.option("--duration", help="How long to --follow, e.g. 10m."),
    click.option(
        "-n",
        "--namespace",
        "namespaces",
        multiple=True,
        help="Only flows from or to this namespace (a server-side filter; repeatable).",
    ),
    click.option("--verdict", "verdicts", multiple=True, help="Only flows with this verdict (repeatable)."),
    click.option(
        "--streams",
        type=click.IntRange(min=1),
        help="Relay streams collected in parallel, split by node, one process each (default: one per CPU this "
        "process may use, its cgroup quota counted, at most one per node); results do not depend on it.",
    ),
]
_RELAY_NAMES = (
    "server",
    "connect_timeout",
    "tls",
    "tls_ca_cert_files",
    "tls_client_cert_file",
    "tls_client_key_file",
    "tls_server_name",
    "tls_allow_insecure",
    "since",
    "until",
    "last",
    "follow",
    "duration",
    "namespaces",
    "verdicts",
    "streams",
)


def source_options(command: Callable) -> Callable:
    """FILES, --on-error, --jobs, --engine, --scheduler and the Hubble Relay flags (named like the `hubble` CLI's)."""

    @functools.wraps(command)
    def with_sources(**kwargs: Any) -> Any:
        files, on_error, jobs = tuple(kwargs.pop("files")), kwargs.pop("on_error"), kwargs.pop("jobs")
        engine, scheduler = kwargs.pop("engine"), kwargs.pop("scheduler")
        if scheduler and engine != "dask":
            raise click.UsageError("--scheduler needs --engine dask")
        relay = {name: kwargs.pop(name) for name in _RELAY_NAMES}
        return command(
            sources=Sources(files, on_error, _relay_options(files, relay), jobs, engine, scheduler), **kwargs
        )

    options = [
        click.argument("files", nargs=-1),
        click.option(
            "--on-error",
            type=click.Choice(["fail", "skip"]),
            default="fail",
            show_default=True,
            help="On a malformed input line: stop with an error naming file and line, or skip and count it.",
        ),
        click.option(
            "-j",
            "--jobs",
            type=click.IntRange(min=1),
            help="Processes reading large Hubble files in parallel (default: one per CPU this process may use); "
            "results do not depend on it. conntrack dumps are read in one process.",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="Read FILES with this machine's processes, or on a Dask cluster (FILES may then be fsspec URLs "
            "such as s3://bucket/hubble/*.json.gz); the observations do not depend on it.",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="The Dask scheduler, e.g. tcp://dask-scheduler:8786 (default: a local cluster of --jobs workers).",
        ),
        *_RELAY_OPTIONS,
    ]
    for option in reversed(options):
        with_sources = option(with_sources)
    return with_sources


def _relay_options(files: tuple[str, ...], flags: dict[str, Any]) -> RelayOptions | None:
    """The relay window the flags describe, or None when only FILES are read."""
    if files and flags["server"] is None:
        used = [name for name in _RELAY_NAMES if name not in ("server", "connect_timeout") and flags[name]]
        if used:
            raise click.UsageError(f"--{used[0].replace('_', '-')} needs --server (it is about the relay window)")
        return None
    try:
        values = {
            **flags,
            "server": flags["server"] or DEFAULT_SERVER,
            "since": parse_time(flags["since"]) if flags["since"] else None,
            "until": parse_time(flags["until"]) if flags["until"] else None,
            "duration": parse_duration(flags["duration"]).total_seconds() if flags["duration"] else None,
            "tls_ca_cert_files": tuple(flags["tls_ca_cert_files"]),
            "namespaces": tuple(flags["namespaces"]),
            "verdicts": tuple(flags["verdicts"]),
        }
        return RelayOptions(**values)
    except CollectorError as exc:
        raise click.UsageError(str(exc)) from exc


def _collect(relay: RelayOptions) -> api.ObservationSet:
    """Collect from the relay with a live status line: elapsed, flows/s, distinct edges, lost events."""
    with stderr.status(f"connecting to {relay.server}") as status:

        def show(progress: RelayProgress) -> None:
            rate = f"{progress.flows:,} flows ({progress.flows_per_second:,.0f}/s)"
            status.update(
                f"{relay.server}: {progress.elapsed:.0f}s, {rate}, {progress.edges:,} distinct edges, "
                f"{progress.lost_events:,} lost events"
            )

        return api.collect(relay, progress=show)


@contextmanager
def _file_progress(files: tuple[str, ...]) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over the input bytes, for large inputs read from files on a terminal."""
    try:
        paths = expand_inputs(files)
    except CollectorError:
        yield None  # the reader reports the error
        return
    total = sum(os.path.getsize(p) for p in paths if p != STDIN)
    if total < PROGRESS_THRESHOLD or STDIN in paths or not stderr.is_terminal:
        yield None
        return
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("reading flows", total=total)
        yield lambda n: progress.advance(task, n)


@dataclass(frozen=True)
class ClusterSource:
    """Where the inventory comes from: a snapshot file, the cluster, or nowhere."""

    inventory_file: str | None
    cluster: bool
    kubeconfig: str | None
    context: str | None

    def load(self) -> api.Inventory | None:
        if self.inventory_file:
            return api.read_inventory(path=self.inventory_file)
        if self.cluster or self.kubeconfig or self.context:
            return api.read_inventory(kubeconfig=self.kubeconfig, context=self.context)
        return None


def cluster_options(command: Callable) -> Callable:
    """--inventory FILE, or the cluster itself (--cluster, --kubeconfig, --context)."""

    @functools.wraps(command)
    def with_cluster(**kwargs: Any) -> Any:
        source = ClusterSource(*(kwargs.pop(name) for name in ("inventory_file", "cluster", "kubeconfig", "context")))
        if source.inventory_file and (source.cluster or source.kubeconfig or source.context):
            raise click.UsageError("use either --inventory or --cluster/--kubeconfig/--context, not both")
        return command(cluster=source, **kwargs)

    options = [
        click.option(
            "--inventory",
            "inventory_file",
            help="A cluster snapshot: `inventory -o` output or "
            "`kubectl get pods,services,endpointslices,namespaces,nodes,networkpolicies -A -o json`.",
        ),
        click.option("--cluster", is_flag=True, help="Read the inventory from the cluster (kubeconfig or in-cluster)."),
        click.option("--kubeconfig", help="Kubeconfig file (implies --cluster)."),
        click.option("--context", help="Kubeconfig context (implies --cluster)."),
    ]
    for option in reversed(options):
        with_cluster = option(with_cluster)
    return with_cluster


def _mode_option(name: str, modes: type[StrEnum], help_text: str) -> Callable:
    """A choice among the values of `modes`, the first one the default."""
    choices = [mode.value for mode in modes]
    return click.option(name, type=click.Choice(choices), default=choices[0], show_default=True, help=help_text)


def dns_options(command: Callable) -> Callable:
    """--dns and --unobserved: what the proposal does for name resolution and for workloads nobody saw."""
    options = [
        _mode_option(
            "--dns",
            api.DnsMode,
            "allow: one allow-dns per namespace lets every pod reach the cluster's DNS servers on UDP and TCP 53; "
            "observed: DNS only as observed, in the workloads' policies; off: no DNS rules (lookups are left to "
            "another policy and reported).",
        ),
        _mode_option(
            "--unobserved",
            api.UnobservedMode,
            "Workloads of the inventory no allow rule names: isolate them (listed), allow-as-is (the "
            "default-deny does not select them) or skip (their namespace gets no default-deny). Needs an inventory.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a one-line message and exit status 1."""
    try:
        yield
    except (CollectorError, RecommenderError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc
