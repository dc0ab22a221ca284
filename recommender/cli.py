"""The `netpol-recommender` command: a thin shell over `recommender.api`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from collectors.errors import CollectorError
from collectors.inventory import snapshot_json
from collectors.sources import STDIN, expand_inputs
from recommender import api, pictures, tables
from recommender.errors import RecommenderError
from recommender.synthesis import DEFAULT_EXCLUDED_NAMESPACES, SynthesisOptions

PROGRESS_THRESHOLD = 32 << 20  # bytes: inputs smaller than this read too fast for a progress bar

stderr = Console(stderr=True)
stdout = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netpol-recommender")
def main() -> None:
    """Turn observed Kubernetes traffic into least-privilege NetworkPolicies."""


def input_options(command: Callable) -> Callable:
    """FILES and --on-error, identical on every command that reads observations."""
    command = click.option(
        "--on-error",
        type=click.Choice(["fail", "skip"]),
        default="fail",
        show_default=True,
        help="On a malformed input line: stop with an error naming file and line, or skip and count it.",
    )(command)
    return click.argument("files", nargs=-1, required=True)(command)


def cluster_options(command: Callable) -> Callable:
    """Where the cluster inventory comes from: a snapshot file, or the cluster itself."""
    for option in reversed(
        [
            click.option(
                "--inventory",
                "inventory_file",
                help="A cluster snapshot: `inventory -o` output or "
                "`kubectl get pods,services,endpointslices,namespaces,nodes,networkpolicies -A -o json`.",
            ),
            click.option(
                "--cluster", is_flag=True, help="Read the inventory from the cluster (kubeconfig or in-cluster)."
            ),
            click.option("--kubeconfig", help="Kubeconfig file (implies --cluster)."),
            click.option("--context", help="Kubeconfig context (implies --cluster)."),
        ]
    ):
        command = option(command)
    return command


def _inventory(
    inventory_file: str | None, cluster: bool, kubeconfig: str | None, context: str | None
) -> api.Inventory | None:
    if inventory_file and (cluster or kubeconfig or context):
        raise click.UsageError("use either --inventory or --cluster/--kubeconfig/--context, not both")
    if inventory_file:
        return api.read_inventory(path=inventory_file)
    if cluster or kubeconfig or context:
        return api.read_inventory(kubeconfig=kubeconfig, context=context)
    return None


def _load(files: Sequence[str], on_error: str) -> api.ObservationSet:
    with _progress(files) as advance:
        return api.load_observations(files, on_error=on_error, progress=advance)


@main.command()
@input_options
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
    "--exclude-namespace",
    "exclude",
    multiple=True,
    default=DEFAULT_EXCLUDED_NAMESPACES,
    show_default=True,
    help="Leave this namespace without policies (it stays usable as a peer). Repeat for several; "
    "giving any replaces the default list.",
)
@click.option(
    "--include-dropped",
    is_flag=True,
    help="Allow traffic Hubble saw DROPPED (by default only reported).",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary table.")
@cluster_options
def recommend(
    files: Sequence[str],
    output: str,
    output_format: str,
    explain: bool,
    exclude: Sequence[str],
    include_dropped: bool,
    on_error: str,
    quiet: bool,
    inventory_file: str | None,
    cluster: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Recommend NetworkPolicies from Hubble flow files.

    FILES are `hubble observe -o jsonpb` (or `-o json`) captures or Hubble exporter logs, plain or
    gzip-compressed; globs are expanded and `-` reads stdin.

    Example:

        netpol-recommender recommend capture.json -o policies/ --explain
    """
    options = SynthesisOptions(exclude_namespaces=tuple(ns for ns in exclude if ns), include_dropped=include_dropped)
    with _user_errors():
        inventory = _inventory(inventory_file, cluster, kubeconfig, context)
        result = api.recommend(_load(files, on_error), options, inventory)
        if output in ("yaml", "json"):
            text = api.render_yaml(result.proposal, explain=explain) if output == "yaml" else None
            click.echo(text if text is not None else _json(result), nl=False)
        else:
            written = api.write_policies(result.proposal, output, output_format=output_format, explain=explain)
            stderr.print(f"wrote {len(written)} files to {output}")
    if not quiet:
        _print_summary(result)


REPORT_FORMATS = click.Choice(["table", "json", "markdown"])


@main.command()
@input_options
@click.option("--policies", required=True, help="A NetworkPolicy YAML/JSON file, or a directory of them.")
@click.option("-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True)
@cluster_options
def verify(files: Sequence[str], on_error: str, policies: str, output_format: str, **cluster: Any) -> None:
    """Replay observed traffic against a set of NetworkPolicies.

    Prints every observed connection as allowed or denied, with the policy and rule that decided;
    exits with status 1 when an observed connection would be denied.

    Example:

        netpol-recommender verify --policies policies/ capture.json
    """
    with _user_errors():
        replayed = api.verify(api.load_policies(policies), _load(files, on_error), _inventory(**cluster))
    if output_format == "json":
        click.echo(tables.verify_json(replayed), nl=False)
    elif output_format == "markdown":
        click.echo(tables.verify_markdown(replayed), nl=False)
    else:
        stdout.print(tables.connections_table(replayed.connections, "observed connections"))
        denied = len(replayed.denied)
        stdout.print(
            f"{len(replayed.connections)} connections: {len(replayed.connections) - denied} allowed, "
            f"{denied} denied (recall {replayed.recall:.1%})"
        )
    if len(replayed.denied):
        sys.exit(1)


@main.command()
@input_options
@click.option(
    "--policies", help="The policy set in force: a YAML/JSON file or a directory (default: the inventory's policies)."
)
@click.option("-o", "--output", "output_format", type=REPORT_FORMATS, default="table", show_default=True)
@cluster_options
def diff(files: Sequence[str], on_error: str, policies: str | None, output_format: str, **cluster: Any) -> None:
    """Compare observed traffic with an existing policy set.

    Lists, per namespace, the observed connections the policies would break on enforcement, and the
    rules no observed traffic used (candidates to remove).

    Example:

        netpol-recommender diff --policies cluster-policies/ capture.json -o markdown
    """
    with _user_errors():
        inventory = _inventory(**cluster)
        result = api.diff(api.load_policies(policies) if policies else None, _load(files, on_error), inventory)
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
@input_options
@click.option("-o", "--output", required=True, help="Image file: .svg or .png.")
@click.option("--matrix", is_flag=True, help="A namespace-by-namespace matrix instead of the graph.")
@click.option("--workload", help="One workload (namespace/name) with its clients and servers.")
@click.option("--policies", help="Colour edges as allowed, would-break or unobserved under these policies.")
@cluster_options
def graph(
    files: Sequence[str],
    on_error: str,
    output: str,
    matrix: bool,
    workload: str | None,
    policies: str | None,
    **cluster: Any,
) -> None:
    """Draw the observed traffic as a picture (no browser needed).

    Example:

        netpol-recommender graph capture.json -o graph.svg --policies policies/
    """
    if matrix and workload:
        raise click.UsageError("use either --matrix or --workload")
    kind = "matrix" if matrix else "workload" if workload else "graph"
    with _user_errors():
        observed = _load(files, on_error)
        compared = api.load_policies(policies) if policies else None
        try:
            figure = api.picture(
                observed, kind=kind, workload=workload, policies=compared, inventory=_inventory(**cluster)
            )
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
    with _user_errors():
        snapshot = api.read_inventory(kubeconfig=kubeconfig, context=context)
        if output == "-":
            click.echo(snapshot_json(snapshot), nl=False)
        else:
            api.save_inventory(snapshot, output)
            stderr.print(f"wrote {output}: {len(snapshot.pods)} pods, {len(snapshot.network_policies)} policies")


def _json(result: api.Recommendation) -> str:
    from recommender.render import proposal_text

    return proposal_text(result.proposal, "json")


def _print_summary(result: api.Recommendation) -> None:
    table = Table(title="netpol-recommender summary", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in result.summary():
        table.add_row(label, value)
    stderr.print(table)
    for example in result.observed.stats.bad.examples:
        stderr.print(f"skipped: {example}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a one-line message and exit status 1."""
    try:
        yield
    except (CollectorError, RecommenderError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc


@contextmanager
def _progress(files: Sequence[str]) -> Iterator[Callable[[int], None] | None]:
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
    columns = (
        "{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task("reading flows", total=total)
        yield lambda n: progress.advance(task, n)


if __name__ == "__main__":
    sys.exit(main())
