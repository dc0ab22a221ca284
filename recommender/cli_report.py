"""The `report` command: observe a window, api.review it against the observation store, write the report,
and add the window to the store (last, so that a run that fails changes nothing)."""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from recommender import api
from recommender.cli_options import (
    OUTPUT,
    ClusterSource,
    Command,
    Sources,
    cluster_options,
    dataplane_options,
    folder_or_format_options,
    option,
    output_target,
    source_options,
    user_errors,
)
from recommender.cli_output import say, warn

ENVIRONMENT_PREFIX = "NETPOL_RECOMMENDER"


def _duration(_context: click.Context, _parameter: click.Parameter, value: str) -> timedelta:
    try:
        return api.parse_duration(value)
    except api.CollectorError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command(
    cls=Command,
    context_settings={"auto_envvar_prefix": ENVIRONMENT_PREFIX},
    epilog=f"Every option can also be set by an environment variable {ENVIRONMENT_PREFIX}_<NAME>: the long option "
    f"name in capitals with dashes as underscores (--stale-after: {ENVIRONMENT_PREFIX}_STALE_AFTER), except "
    "--timeout: CONNECT_TIMEOUT, --namespace: NAMESPACES, --verdict: VERDICTS, --inventory: INVENTORY_FILE, "
    "--format: OUTPUT_FORMAT. "
    "Repeatable options take space-separated values; the command line wins. The CronJob's ConfigMap uses this.",
)
@source_options
@click.option("--store", required=True, help="The observation store: a directory, created if missing.")
@folder_or_format_options(
    ("markdown", "json"),
    "A folder to write report.md, report.html, report.json and recommendation.yaml into "
    "(replacing the last run's; see --force)",
    "The format of the report on stdout.",
)
@option(
    OUTPUT,
    "--force",
    is_flag=True,
    help="Write into an --output folder that holds files netpol-recommender did not write (they are left as they are).",
)
@click.option(
    "--retain",
    default="30d",
    show_default=True,
    callback=_duration,
    help="Keep the windows that ended at most this long before the newest one.",
)
@click.option(
    "--stale-after",
    default="7d",
    show_default=True,
    callback=_duration,
    help="Report paths not seen for this long before the newest window's end.",
)
@click.option(
    "--policies", help="The policies in force: a YAML/JSON file or a directory (default: the cluster's, if read)."
)
@click.option(
    "--lock-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for another run of the same store to finish.",
)
@dataplane_options
@cluster_options
def report(
    sources: Sources,
    cluster: ClusterSource,
    store: str,
    output: str | None,
    output_format: str | None,
    force: bool,
    retain: timedelta,
    stale_after: timedelta,
    policies: str | None,
    lock_timeout: float,
    cni: str | None,
    cni_options: tuple[str, ...],
) -> None:
    """Observe a window, add it to the observation store, and report what changed.

    The report (Markdown on stdout; Markdown, HTML and JSON in --output) lists the paths new since the
    last run, the paths not seen for --stale-after, the observed connections the policies in force
    would break, their rules nothing used in the retention period, the recommendation for every
    window kept and how it changed since the last run, and how settled the picture is: settled once
    3 windows in a row each had enough flows, brought no new path, and together observed every
    managed namespace. Times are the flows' own clock.

    \b
    Exit status:
      0  nothing new
      3  drift found: new paths, connections that would break on enforcement,
         or a changed recommendation
      4  gap: this window had no flows, no connection, or under 10% of the median
         flows of the earlier windows; it is stored, but counts as no evidence
         (before 3: the observation needs a look first)
      1  error (the store is left as it was), also for a window already stored
         or one starting before the newest stored window ends
      2  usage error

    The first run (an empty store, or one holding only gaps) is the baseline: its paths and its
    recommendation are not drift, so it exits 0 unless observed connections would break.

    Examples:

        netpol-recommender report capture.json --store store/ -o report/

        netpol-recommender report --follow --duration 1h --cluster --store store/
    """
    folder, output_format = output_target(output, output_format, ("markdown", "json"))
    with user_errors(), api.locked_store(store, lock_timeout) as observation_store:
        in_force = api.load_policies(policies) if policies else None  # a bad file fails before the window
        inventory = cluster.load()
        observed = sources.load(inventory)
        if in_force is None and inventory is not None:
            in_force = list(inventory.network_policies)
        result = api.review(
            observation_store,
            observed,
            policies=in_force,
            policy_source=policies or "the cluster's NetworkPolicies",
            inventory=inventory,
            options=api.ReportOptions(retain=retain, stale_after=stale_after, cni=cni, cni_options=cni_options),
        )
        if folder:
            api.write_report(result, folder, force=force)
        kept = observation_store.append(result.window, observed, result.recommendation_yaml, result.options.retain)
    shown = api.report_json(result) if output_format == "json" else api.report_markdown(result)
    click.echo(shown, nl=False)
    for warning in result.warnings():
        warn(warning)
    outcome = "; ".join(result.drift_reasons()) or "nothing new"
    say(f"window {result.window.id} stored in {store} ({len(kept)} kept): {outcome}")
    sys.exit(result.exit_status)
