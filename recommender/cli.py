"""The `netpol-recommender` command: a thin shell over `recommender.api`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.shell_completion import get_completion_class
from rich.markup import escape
from rich.table import Table

from recommender import api
from recommender.cli_options import (
    OUTPUT,
    ClusterSource,
    Command,
    Sources,
    cluster_options,
    dataplane_options,
    dns_options,
    file_target,
    folder_or_format_options,
    option,
    output_target,
    source_options,
    target_option,
    user_errors,
)
from recommender.cli_output import NORMAL, say, show_tables, stderr, verbosity, warn
from recommender.cli_report import report

REPORT_FORMATS = click.Choice(["table", "json", "markdown"])
TABLE_HELP = "table: a table on a terminal, one plain line per row in a pipe; or json, markdown."
DENIED = 5
"""Exit status of `verify` when an observed connection would be denied."""
INCOMPLETE = 6
"""Exit status of `recommend` when observed edges cannot be expressed for the target on the CNI."""
NO_TRAFFIC = api.GAP
"""Exit status when the input holds no connection to work on (as `report` for a gap)."""
COMPLETION_SHELLS = ("bash", "zsh", "fish")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netpol-recommender")
def main() -> None:
    """Turn observed Kubernetes traffic into least-privilege NetworkPolicies.

    Every command reads observations from FILES (Hubble `-o jsonpb` captures, exporter logs,
    conntrack dumps with the inventory, saved observations) and/or live from Hubble Relay (`--server`,
    or no FILES at all).
    """


main.command_class = Command


def no_headers_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return option(OUTPUT, "--no-headers", is_flag=True, help="Piped table output: no titles or column names.")(command)


def _stop(status: int, message: str) -> NoReturn:
    """End the run with `status` and a one-line message (for outcomes that are not errors of the tool)."""
    stderr.print(f"Error: {message}", markup=False, highlight=False)
    sys.exit(status)


def _require_traffic(observed: api.ObservationSet) -> None:
    """Stop with NO_TRAFFIC when the input holds no connection: there is nothing to work on."""
    if observed.observations.empty:
        _stop(
            NO_TRAFFIC,
            f"no connections in the input ({observed.stats.flows:,} flows read): check the files, "
            "or the relay's address and filters",
        )


def _require_managed_namespace(result: api.Recommendation) -> None:
    """Stop with NO_TRAFFIC when no namespace gets policies: an empty recommendation is no answer."""
    if result.proposal.managed_namespaces:
        return
    _print_summary(result)
    observations = result.observed.observations
    namespaces = {namespace for namespace, _flows in result.coverage.flows_by_namespace}
    excluded = sorted(namespaces & set(result.options.exclude_namespaces))
    if excluded:
        _stop(
            NO_TRAFFIC,
            f"every connection is in an excluded namespace ({', '.join(excluded)}): nothing to recommend; "
            "--exclude-namespace NAME replaces the excluded list (--exclude-namespace '' excludes none, "
            "e.g. to include kube-system)",
        )
    _stop(
        NO_TRAFFIC,
        f"none of the {len(observations):,} connections observed gives a pod a policy (they are between "
        "hosts, nodes and other entities, or refused; see the summary): nothing to recommend",
    )


@main.command()
@source_options
@folder_or_format_options(
    ("yaml", "json"),
    "A folder to write one file per namespace and a kustomization.yaml into (created; see --force)",
    "The format of the files, or of stdout.",
)
@option(OUTPUT, "--explain", is_flag=True, help="Put a comment with its evidence above every rule.")
@option(
    OUTPUT,
    "--force",
    is_flag=True,
    help="Write into an --output folder that holds files netpol-recommender did not write (they are left as they are).",
)
@click.option(
    "--exclude-namespace",
    "exclude",
    multiple=True,
    default=api.DEFAULT_EXCLUDED_NAMESPACES,
    show_default=True,
    help="Leave this namespace without policies (it stays usable as a peer). Repeat for several; "
    "giving any replaces the default list; --exclude-namespace '' excludes none.",
)
@click.option(
    "--baseline",
    type=click.Choice(api.BASELINES),
    default=api.NAMESPACE_BASELINE,
    show_default=True,
    help="The default deny: a default-deny NetworkPolicy per managed namespace, or one ClusterNetworkPolicy of "
    "tier Baseline (a CiliumClusterwideNetworkPolicy with --target cilium) for every namespace not excluded (DNS "
    "to kube-dns allowed; file cluster-baseline.yaml).",
)
@click.option(
    "--include-dropped",
    is_flag=True,
    help="Allow traffic a policy DROPPED (by default only reported; other drops never).",
)
@click.option(
    "--allow-empty-selector",
    is_flag=True,
    help="Select a workload without stable labels with podSelector {} (its whole namespace, counted as excess) "
    "instead of leaving its traffic without rules.",
)
@option(
    OUTPUT,
    "--findings",
    "findings_file",
    type=click.Path(dir_okay=False),
    help="Write every item behind the summary's counts (dropped, not expressed, unresolved, ...) to this file: "
    "JSON for a .json name, Markdown otherwise. An --output folder gets findings.md and findings.json anyway.",
)
@target_option
@dataplane_options
@dns_options
@cluster_options
def recommend(
    sources: Sources,
    cluster: ClusterSource,
    output: str | None,
    output_format: str | None,
    explain: bool,
    force: bool,
    exclude: tuple[str, ...],
    baseline: str,
    include_dropped: bool,
    allow_empty_selector: bool,
    target: str,
    cni: str | None,
    cni_options: tuple[str, ...],
    findings_file: str | None,
    dns: str,
    unobserved: str,
) -> None:
    """Recommend NetworkPolicies from observed traffic.

    FILES are `hubble observe -o jsonpb` (or `-o json`) captures, Hubble exporter logs, conntrack
    dumps of the nodes (with --inventory or --cluster to name their IPs) or saved observations, plain
    or gzip-compressed; globs are expanded and `-` reads stdin.

    Examples:

        netpol-recommender recommend capture.json -o policies/ --explain

        netpol-recommender recommend --server localhost:4245 --follow --duration 10m -o policies/

    Exits with status 6 when some observed edges cannot be expressed for the --target on the --cni
    (e.g. the API server or other nodes on Cilium with NetworkPolicies): the policies are written
    without them, and each is named with why and how to fix it.
    """
    folder, output_format = output_target(output, output_format, ("yaml", "json"))
    with user_errors():
        options = api.SynthesisOptions(
            exclude_namespaces=tuple(ns for ns in exclude if ns),
            include_dropped=include_dropped,
            target=target,
            cni=cni,
            cidr_match_nodes=api.CIDR_MATCH_NODES in cni_options,
            dns=api.DnsMode(dns),
            unobserved=api.UnobservedMode(unobserved),
            baseline=baseline,
            allow_empty_selector=allow_empty_selector,
        )
        inventory = cluster.load()
        observed = sources.load(inventory)
        _require_traffic(observed)
        result = api.recommend(observed, options, inventory)
        _require_managed_namespace(result)
        if folder is None:
            click.echo(api.proposal_text(result.proposal, output_format, explain=explain), nl=False)
        else:
            written = api.write_policies(
                result.proposal,
                folder,
                output_format=output_format,
                explain=explain,
                force=force,
                findings=result.findings(),
            )
            say(f"wrote {len(written)} files to {folder}")
        if findings_file:
            api.write_findings(result.findings(), findings_file)
    _print_summary(result)
    _report_unexpressible(result)


@main.command()
@source_options
@option(OUTPUT, "-o", "--output", required=True, help="The observations file to write: NAME.parquet.")
@cluster_options
def collect(sources: Sources, cluster: ClusterSource, output: str) -> None:
    """Collect and aggregate observations, and save them for later.

    The file holds the aggregated observations (one row per client, server, protocol, port and
    verdict), readable with `pandas.read_parquet`, and is accepted as input by every command, alone
    or merged with other windows.

    Example:

        netpol-recommender collect --server localhost:4245 --follow --duration 1h -o monday.parquet

        netpol-recommender collect node-*.conntrack --inventory cluster.json -o monday.parquet
    """
    file_target(output, (".parquet",), "the observations (Parquet)")
    with user_errors():
        try:
            observed = sources.load(cluster.load())
        except api.RelayConnectionError as exc:
            if exc.partial is not None:
                api.save(exc.partial, output)
                say(f"saved the observations collected before the error to {output}")
            raise
        api.save(observed, output)
    stats = observed.stats
    say(
        f"wrote {output}: {len(observed.observations):,} observations from {stats.flows:,} flows "
        f"({stats.events_lost:,} lost events)"
    )


@main.command()
@source_options
@click.option(
    "--policies",
    required=True,
    help="A YAML/JSON file, or a directory of them: NetworkPolicies, CiliumNetworkPolicies, "
    "CiliumClusterwideNetworkPolicies, ClusterNetworkPolicies.",
)
@option(
    OUTPUT, "-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True, help=TABLE_HELP
)
@no_headers_option
@dataplane_options
@cluster_options
def verify(
    sources: Sources,
    cluster: ClusterSource,
    policies: str,
    output_format: str,
    no_headers: bool,
    cni: str | None,
    cni_options: tuple[str, ...],
) -> None:
    """Replay observed traffic against a set of policies, as the CNI enforces them.

    Prints every observed connection as allowed or denied, with the policy and rule that decided
    (or the CNI rule); exits with status 5 when an observed connection would be denied, 4 when the
    input holds no connection.

    Example:

        netpol-recommender verify --policies policies/ capture.json
    """
    with user_errors():
        in_force, inventory = api.load_policies(policies), cluster.load()
        observed = sources.load(inventory)
        _require_traffic(observed)
        replayed = api.verify(in_force, observed, inventory, cni=cni, cni_options=cni_options)
    if output_format == "json":
        click.echo(api.verify_json(replayed), nl=False)
    elif output_format == "markdown":
        click.echo(api.verify_markdown(replayed), nl=False)
    else:
        denied, total = len(replayed.denied), len(replayed.connections)
        show_tables(
            [api.connections_table(replayed.connections, "observed connections")],
            f"{total} connections: {total - denied} allowed, {denied} denied (recall {replayed.recall:.1%}); "
            f"CNI profile {replayed.profile}",
            headers=not no_headers,
        )
    if len(replayed.denied):
        sys.exit(DENIED)


@main.command()
@source_options
@click.option(
    "--policies", help="The policy set in force: a YAML/JSON file or a directory (default: the inventory's policies)."
)
@option(
    OUTPUT, "-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True, help=TABLE_HELP
)
@no_headers_option
@dataplane_options
@cluster_options
def diff(
    sources: Sources,
    cluster: ClusterSource,
    policies: str | None,
    output_format: str,
    no_headers: bool,
    cni: str | None,
    cni_options: tuple[str, ...],
) -> None:
    """Compare observed traffic with an existing policy set.

    Lists, per namespace, the observed connections the policies would break on enforcement, and the
    rules no observed traffic used (candidates to remove). Without --policies, the cluster's own
    policies from the inventory are compared.

    Example:

        netpol-recommender diff --policies cluster-policies/ capture.json -o markdown
    """
    with user_errors():
        in_force, inventory = api.load_policies(policies) if policies else None, cluster.load()
        observed = sources.load(inventory)
        _require_traffic(observed)
        result = api.diff(in_force, observed, inventory, cni=cni, cni_options=cni_options)
    if output_format == "json":
        click.echo(api.drift_json(result), nl=False)
    elif output_format == "markdown":
        click.echo(api.drift_markdown(result), nl=False)
    else:
        show_tables(
            [
                api.connections_table(result.would_break, "would break on enforcement"),
                api.rules_table(result.unused_rules, "rules never used (candidates to remove)"),
            ],
            f"{len(result.would_break)} connections would break, {len(result.allowed)} allowed; "
            f"{len(result.unused_rules)} of {len(result.rules)} rules never used; "
            f"CNI profile {result.replayed.profile}",
            headers=not no_headers,
        )


@main.command()
@source_options
@option(OUTPUT, "-o", "--output", required=True, help="Image file: NAME.svg or NAME.png.")
@click.option("--matrix", is_flag=True, help="A namespace-by-namespace matrix instead of the graph.")
@click.option("--workload", help="One workload (namespace/name) with its clients and servers.")
@click.option("--policies", help="Colour edges as allowed, would-break or unobserved under these policies.")
@cluster_options
def graph(
    sources: Sources, cluster: ClusterSource, output: str, matrix: bool, workload: str | None, policies: str | None
) -> None:
    """Draw the observed traffic as a picture (no browser needed).

    Example:

        netpol-recommender graph capture.json -o graph.svg --policies policies/
    """
    if matrix and workload:
        raise click.UsageError("use either --matrix or --workload")
    file_target(output, (".svg", ".png"), "the picture")
    kind = "matrix" if matrix else "workload" if workload else "graph"
    with user_errors():
        compared, inventory = api.load_policies(policies) if policies else None, cluster.load()
        observed = sources.load(inventory)
        try:
            figure = api.picture(observed, kind=kind, workload=workload, policies=compared, inventory=inventory)
            api.save_picture(figure, output)
        except ValueError as exc:  # an unknown workload
            raise click.ClickException(str(exc)) from exc
    say(f"wrote {output}")


@main.command("inventory")
@option(
    OUTPUT,
    "-o",
    "--output",
    required=True,
    help="Snapshot file to write: NAME.json or NAME.json.gz (compressed); json or - prints it on stdout.",
)
@click.option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).")
@click.option("--context", help="Kubeconfig context.")
def inventory_command(output: str, kubeconfig: str | None, context: str | None) -> None:
    """Snapshot the cluster: pods, namespaces, services, endpointslices, nodes and networkpolicies.

    Only lists (get/list) those resources. The snapshot is a kubectl-style List, readable by
    `--inventory` on the other commands.

    Example:

        netpol-recommender inventory --context prod -o cluster.json
    """
    to_stdout = output in ("-", "json")
    if not to_stdout:
        file_target(output, (".json", ".json.gz"), "the snapshot (JSON)")
    with user_errors():
        snapshot = api.read_inventory(kubeconfig=kubeconfig, context=context)
        if to_stdout:
            click.echo(api.snapshot_json(snapshot), nl=False)
        else:
            api.save_inventory(snapshot, output)
            say(f"wrote {output}: {len(snapshot.pods)} pods, {len(snapshot.network_policies)} policies")


@main.command()
@click.argument("shell", type=click.Choice(COMPLETION_SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    Examples:
      source <(netpol-recommender completion bash)            # bash, this shell
      netpol-recommender completion zsh > "${fpath[1]}/_netpol-recommender"
      netpol-recommender completion fish > ~/.config/fish/completions/netpol-recommender.fish
    """
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # COMPLETION_SHELLS are shells click completes
    script = completion_class(main, {}, "netpol-recommender", "_NETPOL_RECOMMENDER_COMPLETE")
    click.echo(script.source())


def _report_unexpressible(result: api.Recommendation) -> None:
    """Name every edge the target cannot express on the CNI (a warning, even with -q), and exit INCOMPLETE."""
    unexpressible = result.proposal.findings.unexpressible
    for edge in unexpressible:
        stderr.print(
            f"not expressible: {edge.client} -> {edge.server} {edge.protocol}/{edge.port} ({edge.count} flows): "
            f"{edge.reason}. Fix: {edge.fix}.",
            markup=False,
            highlight=False,
        )
    if unexpressible:
        stderr.print(
            f"incomplete: {len(unexpressible)} observed edges have no rule and would be denied once the policies "
            f"are enforced on {result.options.cni} (exit status {INCOMPLETE})",
            markup=False,
            highlight=False,
        )
        sys.exit(INCOMPLETE)


def _print_summary(result: api.Recommendation) -> None:
    table = Table(title="netpol-recommender summary", show_header=False, title_justify="left")
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right")
    for label, value in result.summary():
        table.add_row(escape(label), escape(value))
    if verbosity() >= NORMAL:
        stderr.print(table)
    for example in result.observed.stats.bad.examples:
        say(f"skipped: {example}")
    for line in result.notes():
        say(line)
    for message in result.warnings():
        warn(message)
    for item in result.findings():
        if item.kind == api.FindingKind.NO_STABLE_SELECTOR:
            say(api.finding_text(item))


main.add_command(report)
