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
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from recommender import api
from recommender.cli_output import NORMAL, QUIET, VERBOSE, say, set_verbosity, stderr

PROGRESS_THRESHOLD = 32 << 20  # bytes: inputs smaller than this read too fast for a progress bar

OUTPUT, OPTIONS, SOURCES, FILTERS, RELAY, TLS, CLUSTER, GENERAL = (
    "Output",
    "Options",
    "Sources",
    "Filters (as hubble observe's, on FILES and the relay)",
    "Hubble Relay",
    "Hubble Relay TLS",
    "Cluster inventory",
    "General",
)
GROUP_ORDER = (OUTPUT, OPTIONS, SOURCES, FILTERS, RELAY, TLS, CLUSTER, GENERAL)
"""The sections of `--help`, in order; an option declared with plain `click.option` is under OPTIONS."""


class GroupedOption(click.Option):
    """An option that `--help` lists under its `group` (one of GROUP_ORDER)."""

    def __init__(self, *declarations: Any, group: str = OPTIONS, **attributes: Any) -> None:
        super().__init__(*declarations, **attributes)
        self.group = group


def option(group: str, *declarations: str, **attributes: Any) -> Callable:
    """`click.option`, listed under `group` in `--help`."""
    return click.option(*declarations, cls=GroupedOption, group=group, **attributes)


class Command(click.Command):
    """A command whose `--help` groups its options (GROUP_ORDER) and which takes -q/--quiet and
    -v/--verbose (they set `cli_output`'s verbosity before the command runs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params += [
            GroupedOption(["-q", "--quiet"], is_flag=True, group=GENERAL, help="Only errors and warnings on stderr."),
            GroupedOption(
                ["-v", "--verbose"], is_flag=True, group=GENERAL, help="More detail on stderr (what was read, logs)."
            ),
        ]

    def invoke(self, ctx: click.Context) -> Any:
        quiet, verbose = ctx.params.pop("quiet"), ctx.params.pop("verbose")
        if quiet and verbose:
            raise click.UsageError("use either -q/--quiet or -v/--verbose", ctx)
        set_verbosity(QUIET if quiet else VERBOSE if verbose else NORMAL)
        return super().invoke(ctx)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        help_option = self.get_help_option(ctx)
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                group = getattr(param, "group", GENERAL if param is help_option else OPTIONS)
                sections.setdefault(group, []).append(record)
        for group in sorted(sections, key=lambda name: GROUP_ORDER.index(name) if name in GROUP_ORDER else 1):
            with formatter.section(group):
                formatter.write_dl(sections[group])


@dataclass(frozen=True)
class Sources:
    """Observation files, and/or a Hubble Relay window."""

    files: tuple[str, ...]
    on_error: str
    relay: api.RelayOptions | None
    jobs: int | None = None
    engine: str = "local"
    scheduler: str | None = None
    flow_filter: api.FlowFilter | None = None

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
                        flow_filter=self.flow_filter,
                    )
                )
        if self.relay is not None:
            relayed = _collect(self.relay)
            sets.append(self.flow_filter.apply(relayed) if self.flow_filter is not None else relayed)
        observed = sets[0] if len(sets) == 1 else api.merge_observation_sets(sets)
        stats = observed.stats
        say(
            f"read {len(stats.sources)} sources: {stats.lines:,} lines, {stats.flows:,} flows "
            f"({stats.duplicates:,} duplicates, {stats.bad.count:,} malformed lines skipped), "
            f"{len(observed.observations):,} observations",
            level=VERBOSE,
        )
        return observed


_RELAY_OPTIONS = [
    option(
        RELAY,
        "--server",
        help=f"Hubble Relay address (default when no FILES are given: {api.DEFAULT_SERVER}, "
        "the target of `cilium hubble port-forward`).",
    ),
    option(
        RELAY,
        "--timeout",
        "connect_timeout",
        type=float,
        default=5.0,
        show_default=True,
        help="Seconds to wait for the relay to answer.",
    ),
    option(TLS, "--tls", is_flag=True, help="Use TLS to connect to the relay."),
    option(TLS, "--tls-ca-cert-files", multiple=True, help="CA certificates to verify the relay with (repeatable)."),
    option(TLS, "--tls-client-cert-file", default="", help="Client certificate for mTLS."),
    option(TLS, "--tls-client-key-file", default="", help="Client key for mTLS."),
    option(TLS, "--tls-server-name", default="", help="Server name to verify the relay's certificate against."),
    option(
        TLS,
        "--tls-allow-insecure",
        is_flag=True,
        help="Skip certificate verification (not possible with "
        "gRPC for Python: the error explains how to get the relay's CA).",
    ),
    option(RELAY, "--last", type=int, default=0, help="The last N flows."),
    option(RELAY, "--follow", is_flag=True, help="Keep observing new flows (until --duration or Ctrl-C)."),
    option(RELAY, "--duration", help="How long to --follow, e.g. 10m."),
    option(
        RELAY,
        "--streams",
        type=click.IntRange(min=1),
        help="Relay streams collected in parallel, split by node, one process each (default: one per CPU this "
        "process may use, its cgroup quota counted, at most one per node); results do not depend on it.",
    ),
]
_FILTER_OPTIONS = [
    option(
        FILTERS,
        "-n",
        "--namespace",
        "namespaces",
        multiple=True,
        help="Only connections from or to this namespace (repeatable).",
    ),
    option(
        FILTERS,
        "--verdict",
        "verdicts",
        multiple=True,
        help="Only flows with this verdict: FORWARDED, DROPPED, AUDIT... (repeatable).",
    ),
    option(
        FILTERS,
        "--since",
        help="Flows since a duration ago (1h) or an RFC 3339 time (Hubble files and the relay).",
    ),
    option(FILTERS, "--until", help="Flows until a duration ago or an RFC 3339 time."),
    option(
        FILTERS,
        "--from-pod",
        "from_pods",
        multiple=True,
        metavar="[NAMESPACE/]POD",
        help="Only connections from pods whose name starts with POD (namespace: default; repeatable).",
    ),
    option(
        FILTERS,
        "--to-pod",
        "to_pods",
        multiple=True,
        metavar="[NAMESPACE/]POD",
        help="Only connections to pods whose name starts with POD (namespace: default; repeatable).",
    ),
    option(
        FILTERS,
        "--protocol",
        "protocols",
        multiple=True,
        help="Only this L4 protocol: tcp, udp, sctp, icmp, icmpv4, icmpv6 (repeatable).",
    ),
    option(
        FILTERS,
        "--port",
        "ports",
        type=int,
        multiple=True,
        help="Only connections to this port: the server's (repeatable).",
    ),
]
_FILTER_NAMES = ("from_pods", "to_pods", "protocols", "ports")
"""The filters applied to observations only; -n, --verdict, --since and --until also go to the relay."""
_RELAY_FILTERS = ("since", "until", "namespaces", "verdicts")
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
        flow_filter = _flow_filter(relay, {name: tuple(kwargs.pop(name)) for name in _FILTER_NAMES})
        relay_options = _relay_options(files, relay)
        return command(sources=Sources(files, on_error, relay_options, jobs, engine, scheduler, flow_filter), **kwargs)

    options = [
        click.argument("files", nargs=-1),
        option(
            SOURCES,
            "--on-error",
            type=click.Choice(["fail", "skip"]),
            default="fail",
            show_default=True,
            help="On a malformed input line: stop with an error naming file and line, or skip and count it.",
        ),
        option(
            SOURCES,
            "-j",
            "--jobs",
            type=click.IntRange(min=1),
            help="Processes reading large Hubble files in parallel (default: one per CPU this process may use); "
            "results do not depend on it. conntrack dumps are read in one process.",
        ),
        option(
            SOURCES,
            "--engine",
            type=click.Choice(api.ENGINES),
            default="local",
            show_default=True,
            help="Read FILES with this machine's processes, or on a Dask cluster (FILES may then be fsspec URLs "
            "such as s3://bucket/hubble/*.json.gz); the observations do not depend on it.",
        ),
        option(
            SOURCES,
            "--scheduler",
            metavar="ADDRESS",
            help="The Dask scheduler, e.g. tcp://dask-scheduler:8786 (default: a local cluster of --jobs workers).",
        ),
        *_FILTER_OPTIONS,
        *_RELAY_OPTIONS,
    ]
    for decorator in reversed(options):
        with_sources = decorator(with_sources)
    return with_sources


def _relay_options(files: tuple[str, ...], flags: dict[str, Any]) -> api.RelayOptions | None:
    """The relay window the flags describe, or None when only FILES are read."""
    if files and flags["server"] is None:
        ignored = ("server", "connect_timeout", *_RELAY_FILTERS)
        used = [name for name in _RELAY_NAMES if name not in ignored and flags[name]]
        if used:
            raise click.UsageError(f"--{used[0].replace('_', '-')} needs --server (it is about the relay window)")
        return None
    try:
        values = {
            **flags,
            "server": flags["server"] or api.DEFAULT_SERVER,
            "since": api.parse_time(flags["since"]) if flags["since"] else None,
            "until": api.parse_time(flags["until"]) if flags["until"] else None,
            "duration": api.parse_duration(flags["duration"]).total_seconds() if flags["duration"] else None,
            "tls_ca_cert_files": tuple(flags["tls_ca_cert_files"]),
            "namespaces": tuple(flags["namespaces"]),
            "verdicts": tuple(flags["verdicts"]),
        }
        return api.RelayOptions(**values)
    except api.CollectorError as exc:
        raise click.UsageError(str(exc)) from exc


def _flow_filter(relay_flags: dict[str, Any], filters: dict[str, tuple]) -> api.FlowFilter | None:
    """The filters the flags describe (the relay gets -n, --verdict and the window too), or None."""
    try:
        flow_filter = api.FlowFilter(
            namespaces=tuple(relay_flags["namespaces"]),
            verdicts=tuple(relay_flags["verdicts"]),
            since=api.parse_time(relay_flags["since"]) if relay_flags["since"] else None,
            until=api.parse_time(relay_flags["until"]) if relay_flags["until"] else None,
            **filters,
        )
    except api.CollectorError as exc:
        raise click.UsageError(str(exc)) from exc
    return flow_filter if flow_filter.rows_filtered or flow_filter.windowed else None


def _collect(relay: api.RelayOptions) -> api.ObservationSet:
    """Collect from the relay with a live status line: elapsed, flows/s, distinct edges, lost events."""
    server = escape(relay.server)
    with stderr.status(f"connecting to {server}") as status:

        def show(progress: api.RelayProgress) -> None:
            rate = f"{progress.flows:,} flows ({progress.flows_per_second:,.0f}/s)"
            status.update(
                f"{server}: {progress.elapsed:.0f}s, {rate}, {progress.edges:,} distinct edges, "
                f"{progress.lost_events:,} lost events"
            )

        return api.collect(relay, progress=show)


@contextmanager
def _file_progress(files: tuple[str, ...]) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over the input bytes, for large inputs read from files on a terminal."""
    total = api.input_size(files)
    if total is None or total < PROGRESS_THRESHOLD or not stderr.is_terminal:
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
        option(
            CLUSTER,
            "--inventory",
            "inventory_file",
            help="A cluster snapshot: `inventory -o` output or "
            "`kubectl get pods,services,endpointslices,namespaces,nodes,networkpolicies -A -o json`.",
        ),
        option(
            CLUSTER, "--cluster", is_flag=True, help="Read the inventory from the cluster (kubeconfig or in-cluster)."
        ),
        option(CLUSTER, "--kubeconfig", help="Kubeconfig file (implies --cluster)."),
        option(CLUSTER, "--context", help="Kubeconfig context (implies --cluster)."),
    ]
    for decorator in reversed(options):
        with_cluster = decorator(with_cluster)
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


FILE_SUFFIXES = (".yaml", ".yml", ".json", ".md", ".markdown", ".html", ".txt", ".csv", ".parquet", ".gz")
FORMAT_WORDS = ("yaml", "yml", "json", "markdown", "md", "html", "table", "text", "txt", "wide", "csv", "parquet")


def folder_or_format_options(formats: tuple[str, ...], folder: str, format_help: str) -> Callable:
    """`-o DIR|FORMAT` and `--format FORMAT` (one of `formats`, the first the default), which
    `output_target` reads together; `folder` says what the folder receives."""

    def decorate(command: Callable) -> Callable:
        command = option(
            OUTPUT,
            "--format",
            "output_format",
            type=click.Choice(formats),
            help=f"{format_help}  [default: {formats[0]}]",
        )(command)
        return option(
            OUTPUT,
            "-o",
            "--output",
            help=f"{folder}, or {' / '.join(formats)}: print on stdout in that format.",
        )(command)

    return decorate


def output_target(output: str | None, output_format: str | None, formats: tuple[str, ...]) -> tuple[str | None, str]:
    """Where `-o` points, for a command that prints one of `formats` or writes a folder: (None, format)
    for stdout (`-o FORMAT`, or no -o), (folder, format) otherwise. A name that looks like a file or another
    format (`-o out.yaml`, `-o markdown`) is a usage error: it would silently become a folder."""
    if output is None or output in formats:
        if output and output_format and output_format != output:
            raise click.UsageError(f"-o {output} and --format {output_format} disagree")
        return None, output or output_format or formats[0]
    name = os.path.basename(output.rstrip("/")).lower()
    looks_like_a_file = name.endswith(FILE_SUFFIXES) or (output.lower() in FORMAT_WORDS)  # ./yaml is a folder
    if (looks_like_a_file and not output.endswith("/")) or os.path.isfile(output):
        hint = f"; for one file use the shell: -o {formats[0]} > {output}" if name.endswith(FILE_SUFFIXES) else ""
        raise click.UsageError(
            f"-o {output}: -o is a folder (it is created), or {' / '.join(formats)} to print on stdout, "
            f"in the format --format chooses{hint}"
        )
    return output, output_format or formats[0]


def file_target(output: str, suffixes: tuple[str, ...], what: str) -> str:
    """`-o FILE` where the extension says what the file is: a usage error for any other name."""
    if not output.lower().endswith(suffixes):
        raise click.UsageError(f"-o {output}: {what} file name must end in {' or '.join(suffixes)}")
    return output


def dataplane_options(command: Callable) -> Callable:
    """--cni and --cni-option: how the CNI enforces the policies (see `api.dataplane_profile`)."""
    options = [
        option(
            OPTIONS,
            "--cni",
            type=click.Choice(api.PROFILE_NAMES),
            help="The CNI that enforces the policies (default: cilium for Hubble input, kubernetes otherwise).",
        ),
        option(
            OPTIONS,
            "--cni-option",
            "cni_options",
            multiple=True,
            type=click.Choice([api.CIDR_MATCH_NODES]),
            help="A CNI setting that changes verdicts: cidr-match-nodes (Cilium policy-cidr-match-mode=nodes).",
        ),
    ]
    for add in reversed(options):
        command = add(command)
    return command


def target_option(command: Callable) -> Callable:
    """--target: the kind of policy written (handed over as `target=`)."""
    return option(
        OPTIONS,
        "--target",
        type=click.Choice(api.TARGETS),
        default=api.TARGETS[0],
        show_default=True,
        help="Write Kubernetes NetworkPolicies, or CiliumNetworkPolicies (entities, FQDNs, ICMP).",
    )(command)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a one-line message and exit status 1."""
    try:
        yield
    except (api.CollectorError, api.RecommenderError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc
