"""The `netpol-recommender` command: a thin shell over `recommender.api`."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from collectors.inventory import snapshot_json
from collectors.relay import RelayConnectionError
from recommender import api, tables
from recommender.cli_options import ClusterSource, Sources, cluster_options, source_options, stderr, user_errors
from recommender.cli_report import report
from recommender.render import proposal_text
from recommender.synthesis import DEFAULT_EXCLUDED_NAMESPACES, SynthesisOptions

stdout = Console()
REPORT_FORMATS = click.Choice(["table", "json", "markdown"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netpol-recommender")
def main() -> None:
    """Turn observed Kubernetes traffic into least-privilege NetworkPolicies.

    Every command reads observations from FILES (Hubble `-o jsonpb` captures, exporter logs,
    conntrack dumps with the inventory, saved observations) and/or live from Hubble Relay (`--server`,
    or no FILES at all).
    """


@main.command()
@source_options
@click.option(
    "-o",
    "--output",
    default="yaml",
    show_default=True,
    help="A directory to write one file per namespace and a kustomization.yaml into, "
    "or 'yaml' / 'json' to print the policies on stdout.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="File format when --output is a directory.",
)
@click.option("--explain", is_flag=True, help="Put a comment with its evidence above every rule.")
@click.option(
    "--force",
    is_flag=True,
    help="Write into an --output folder that holds files netpol-recommender did not write (they are left as they are).",
)
@click.option(
    "--exclude-namespace",
    "exclude",
    multiple=True,
    default=DEFAULT_EXCLUDED_NAMESPACES,
    show_default=True,
    help="Leave this namespace without policies (it stays usable as a peer). Repeat for several; "
    "giving any replaces the default list.",
)
@click.option("--include-dropped", is_flag=True, help="Allow traffic Hubble saw DROPPED (by default only reported).")
@click.option("-q", "--quiet", is_flag=True, help="No summary table.")
@cluster_options
def recommend(
    sources: Sources,
    cluster: ClusterSource,
    output: str,
    output_format: str,
    explain: bool,
    force: bool,
    exclude: tuple[str, ...],
    include_dropped: bool,
    quiet: bool,
) -> None:
    """Recommend NetworkPolicies from observed traffic.

    FILES are `hubble observe -o jsonpb` (or `-o json`) captures, Hubble exporter logs, conntrack
    dumps of the nodes (with --inventory or --cluster to name their IPs) or saved observations, plain
    or gzip-compressed; globs are expanded and `-` reads stdin.

    Examples:

        netpol-recommender recommend capture.json -o policies/ --explain

        netpol-recommender recommend --server localhost:4245 --follow --duration 10m -o policies/
    """
    options = SynthesisOptions(exclude_namespaces=tuple(ns for ns in exclude if ns), include_dropped=include_dropped)
    with user_errors():
        inventory = cluster.load()
        result = api.recommend(sources.load(inventory), options, inventory)
        if output == "yaml":
            click.echo(api.render_yaml(result.proposal, explain=explain), nl=False)
        elif output == "json":
            click.echo(proposal_text(result.proposal, "json"), nl=False)
        else:
            written = api.write_policies(
                result.proposal, output, output_format=output_format, explain=explain, force=force
            )
            stderr.print(f"wrote {len(written)} files to {output}")
    if not quiet:
        _print_summary(result)


@main.command()
@source_options
@click.option("-o", "--output", required=True, help="The observations file to write (Parquet).")
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
    with user_errors():
        try:
            observed = sources.load(cluster.load())
        except RelayConnectionError as exc:
            if exc.partial is not None:
                api.save(exc.partial, output)
                stderr.print(f"saved the observations collected before the error to {output}")
            raise
        api.save(observed, output)
    stats = observed.stats
    stderr.print(
        f"wrote {output}: {len(observed.observations):,} observations from {stats.flows:,} flows "
        f"({stats.events_lost:,} lost events)"
    )


@main.command()
@source_options
@click.option("--policies", required=True, help="A NetworkPolicy YAML/JSON file, or a directory of them.")
@click.option("-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True)
@cluster_options
def verify(sources: Sources, cluster: ClusterSource, policies: str, output_format: str) -> None:
    """Replay observed traffic against a set of NetworkPolicies.

    Prints every observed connection as allowed or denied, with the policy and rule that decided;
    exits with status 1 when an observed connection would be denied.

    Example:

        netpol-recommender verify --policies policies/ capture.json
    """
    with user_errors():
        in_force, inventory = api.load_policies(policies), cluster.load()
        replayed = api.verify(in_force, sources.load(inventory), inventory)
    if output_format == "json":
        click.echo(tables.verify_json(replayed), nl=False)
    elif output_format == "markdown":
        click.echo(tables.verify_markdown(replayed), nl=False)
    else:
        stdout.print(tables.connections_table(replayed.connections, "observed connections"))
        denied = len(replayed.denied)
        allowed = len(replayed.connections) - denied
        total = len(replayed.connections)
        stdout.print(f"{total} connections: {allowed} allowed, {denied} denied (recall {replayed.recall:.1%})")
    if len(replayed.denied):
        sys.exit(1)


@main.command()
@source_options
@click.option(
    "--policies", help="The policy set in force: a YAML/JSON file or a directory (default: the inventory's policies)."
)
@click.option("-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True)
@cluster_options
def diff(sources: Sources, cluster: ClusterSource, policies: str | None, output_format: str) -> None:
    """Compare observed traffic with an existing policy set.

    Lists, per namespace, the observed connections the policies would break on enforcement, and the
    rules no observed traffic used (candidates to remove). Without --policies, the cluster's own
    policies from the inventory are compared.

    Example:

        netpol-recommender diff --policies cluster-policies/ capture.json -o markdown
    """
    with user_errors():
        in_force, inventory = api.load_policies(policies) if policies else None, cluster.load()
        result = api.diff(in_force, sources.load(inventory), inventory)
    if output_format == "json":
        click.echo(tables.drift_json(result), nl=False)
    elif output_format == "markdown":
        click.echo(tables.drift_markdown(result), nl=False)
    else:
        stdout.print(tables.connections_table(result.would_break, "would break on enforcement"))
        stdout.print(tables.rules_table(result.unused_rules, "rules never used (candidates to remove)"))
        stdout.print(
            f"{len(result.would_break)} connections would break, {len(result.allowed)} allowed; "
            f"{len(result.unused_rules)} of {len(result.rules)} rules never used"
        )


@main.command()
@source_options
@click.option("-o", "--output", required=True, help="Image file: .svg or .png.")
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
    kind = "matrix" if matrix else "workload" if workload else "graph"
    with user_errors():
        compared, inventory = api.load_policies(policies) if policies else None, cluster.load()
        observed = sources.load(inventory)
        try:
            figure = api.picture(observed, kind=kind, workload=workload, policies=compared, inventory=inventory)
            from recommender import pictures  # matplotlib: a third of the CLI's start, so only when drawing

            pictures.save(figure, output)
        except ValueError as exc:  # an unknown workload, an image format we cannot write
            raise click.ClickException(str(exc)) from exc
    stderr.print(f"wrote {output}")


@main.command("inventory")
@click.option("-o", "--output", required=True, help="Snapshot file to write (`-` for stdout; `.gz` compresses).")
@click.option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).")
@click.option("--context", help="Kubeconfig context.")
def inventory_command(output: str, kubeconfig: str | None, context: str | None) -> None:
    """Snapshot the cluster: pods, namespaces, services, endpointslices, nodes and networkpolicies.

    Only lists (get/list) those resources. The snapshot is a kubectl-style List, readable by
    `--inventory` on the other commands.

    Example:

        netpol-recommender inventory --context prod -o cluster.json
    """
    with user_errors():
        snapshot = api.read_inventory(kubeconfig=kubeconfig, context=context)
        if output == "-":
            click.echo(snapshot_json(snapshot), nl=False)
        else:
            api.save_inventory(snapshot, output)
            stderr.print(f"wrote {output}: {len(snapshot.pods)} pods, {len(snapshot.network_policies)} policies")


def _print_summary(result: api.Recommendation) -> None:
    table = Table(title="netpol-recommender summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in result.summary():
        table.add_row(label, value)
    stderr.print(table)
    for example in result.observed.stats.bad.examples:
        stderr.print(f"skipped: {example}", markup=False, highlight=False)


main.add_command(report)

if __name__ == "__main__":
    sys.exit(main())
