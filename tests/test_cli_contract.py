"""The command line's contract with users and scripts: what -o means, what a pipe gets, exit
statuses, empty inputs, completion and the layout of --help (issue 12)."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from recommender.cli import DENIED, NO_TRAFFIC, main
from recommender.cli_options import GROUP_ORDER
from recommender.cli_output import plain_lines, rich_table
from recommender.tables import TextTable
from tests.conftest import REPO, fixture_path

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")
EXISTING = str(REPO / "examples" / "existing-policies")
USAGE = 2
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(main, list(args))


@pytest.mark.parametrize("output", ["out.yaml", "policies.json", "markdown", "table"])
def test_recommend_refuses_an_output_that_looks_like_a_file_or_a_format(tmp_path, output):
    outcome = run("recommend", EXAMPLE, "-o", str(tmp_path / output) if "." in output else output)
    assert outcome.exit_code == USAGE, outcome.output
    assert "-o is a folder" in outcome.stderr
    assert not (tmp_path / output).exists() and not (REPO / output).exists()


def test_recommend_prints_the_format_chosen_by_o_or_format_and_refuses_a_disagreement():
    by_option = run("recommend", EXAMPLE, "-o", "json", "-q", "--cni", "kubernetes")
    by_format = run("recommend", EXAMPLE, "--format", "json", "-q", "--cni", "kubernetes")
    assert by_option.exit_code == by_format.exit_code == 0
    assert by_option.stdout == by_format.stdout and json.loads(by_option.stdout)["kind"] == "List"
    outcome = run("recommend", EXAMPLE, "-o", "yaml", "--format", "json")
    assert outcome.exit_code == USAGE and "disagree" in outcome.stderr


def test_collect_writes_parquet_only_to_a_parquet_name(tmp_path):
    outcome = run("collect", EXAMPLE, "-o", str(tmp_path / "x.csv"))
    assert outcome.exit_code == USAGE and "must end in .parquet" in outcome.stderr
    assert not (tmp_path / "x.csv").exists()
    assert run("collect", EXAMPLE, "-o", str(tmp_path / "x.parquet")).exit_code == 0
    assert (tmp_path / "x.parquet").read_bytes()[:4] == b"PAR1"


def test_inventory_refuses_a_file_name_that_is_not_json(tmp_path):
    outcome = run("inventory", "-o", str(tmp_path / "cluster.yaml"))
    assert outcome.exit_code == USAGE and ".json" in outcome.stderr


def test_report_prints_json_with_o_json_and_writes_a_folder_otherwise(tmp_path):
    outcome = run("report", EXAMPLE, "--store", str(tmp_path / "store"), "-o", "json")
    assert outcome.exit_code == 0, outcome.output
    assert "window" in json.loads(outcome.stdout)
    outcome = run("report", EXAMPLE, "--store", str(tmp_path / "store2"), "-o", str(tmp_path / "report.md"))
    assert outcome.exit_code == USAGE


def test_table_cells_are_never_read_as_markup():
    table = TextTable("rules of [shop/allow-dns]", ("policy", "verdict"), (("[shop/allow-dns, shop/x]", "DENIED"),))
    console = Console(record=True, width=200, force_terminal=True)
    console.print(rich_table(table))
    text = console.export_text()
    assert "[shop/allow-dns, shop/x]" in text and "rules of [shop/allow-dns]" in text


def test_verify_on_a_terminal_shows_the_policy_lists_of_denials():
    outcome = run("verify", EXAMPLE, "--policies", EXISTING, env={"FORCE_COLOR": "1", "COLUMNS": "1000"})
    assert outcome.exit_code == DENIED
    shown = ANSI.sub("", outcome.stdout)
    assert "┃ client" in shown  # a Rich table: the terminal's form
    assert "is egress-isolated by [shop/allow-dns, shop/catalog, shop/default-deny]; no egress rule of" in shown


def test_verify_in_a_pipe_prints_one_unwrapped_line_per_connection():
    document = json.loads(run("verify", EXAMPLE, "--policies", EXISTING, "-o", "json").stdout)
    connections = document["connections"]
    outcome = run("verify", EXAMPLE, "--policies", EXISTING, env={"COLUMNS": "40"})
    lines = outcome.stdout.splitlines()
    assert lines[0] == "# observed connections" and lines[1].split() == [
        "CLIENT", "SERVER", "PORT", "FLOWS", "VERDICT", "WHY"
    ]  # fmt: skip
    assert len(lines) == 2 + len(connections)
    denied = [line for line in lines if " DENIED " in line]
    assert len(denied) == document["totals"]["denied"] == 2
    assert all(line.endswith("matches TCP/5432 | ingress allowed by shop/catalog-db ingress[0]") for line in denied[:1])
    assert "26 connections: 24 allowed, 2 denied" in outcome.stderr  # totals off stdout


def test_no_headers_leaves_only_the_rows():
    verified = run("verify", EXAMPLE, "--policies", EXISTING, "--no-headers")
    rows = verified.stdout.splitlines()
    assert len(rows) == 26 and all(not row.startswith(("#", "CLIENT")) for row in rows)
    differences = run("diff", EXAMPLE, "--policies", EXISTING, "--no-headers").stdout.splitlines()
    assert differences and all(row.strip() and not row.startswith("#") for row in differences)


def test_plain_lines_align_columns_and_keep_the_last_one_whole():
    table = TextTable("t", ("a", "bb", "c"), (("x", "yyyy", "a long last cell"), ("xxx", "y", "z")))
    assert plain_lines(table) == ["A     BB     C", "x     yyyy   a long last cell", "xxx   y      z"]
    assert plain_lines(table, headers=False)[0] == "x     yyyy   a long last cell"


def test_empty_input_is_an_error_with_its_own_status(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for command in (("recommend",), ("verify", "--policies", EXISTING), ("diff", "--policies", EXISTING)):
        outcome = run(*command, str(empty))
        assert outcome.exit_code == NO_TRAFFIC, outcome.output
        assert "no connections in the input (0 flows read)" in outcome.stderr
        assert outcome.stdout == ""


def test_traffic_only_in_excluded_namespaces_says_how_to_include_them():
    dns = str(fixture_path("hubble", "basic-sample-5-dns-flows.json"))  # kube-system to kube-system
    outcome = run("recommend", dns, "-q")
    assert outcome.exit_code == NO_TRAFFIC and outcome.stdout == ""
    assert "every connection is in an excluded namespace (kube-system)" in outcome.stderr
    assert "--exclude-namespace ''" in outcome.stderr
    included = run("recommend", dns, "-q", "--exclude-namespace", "")
    assert included.exit_code == 0 and "namespace: kube-system" in included.stdout


def test_traffic_without_pods_is_no_recommendation():
    icmp = str(fixture_path("hubble", "basic-sample-400-icmpv4-flows.json"))  # nodes probing health endpoints
    outcome = run("recommend", icmp)
    assert outcome.exit_code == NO_TRAFFIC and "gives a pod a policy" in outcome.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_script(shell):
    outcome = run("completion", shell)
    assert outcome.exit_code == 0 and "_NETPOL_RECOMMENDER_COMPLETE" in outcome.stdout
    assert f"{shell}_complete" in outcome.stdout
    assert run("completion", "powershell").exit_code == USAGE


def test_the_completion_scripts_question_is_answered_with_commands_and_options():
    def complete(words: str) -> str:
        environment = {
            "_NETPOL_RECOMMENDER_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        return CliRunner().invoke(main, [], prog_name="netpol-recommender", env=environment).stdout

    assert "plain,recommend" in complete("netpol-recommender rec").splitlines()
    assert "plain,--no-headers" in complete("netpol-recommender verify --no-h").splitlines()


def test_every_command_takes_quiet_and_verbose_and_groups_its_help():
    for name in main.commands:
        shown = run(name, "--help").stdout
        assert "-q, --quiet" in shown and "-v, --verbose" in shown, name
        sections = [line[:-1] for line in shown.splitlines() if line.endswith(":") and line[:-1] in GROUP_ORDER]
        assert sections == sorted(sections, key=GROUP_ORDER.index), name
        if "--server" in shown:
            assert sections.index("Output") < sections.index("Sources") < sections.index("Hubble Relay"), name


def test_quiet_silences_the_summary_and_verbose_says_what_was_read():
    spec = ("--cni", "kubernetes")  # on Cilium the example's entity edges are warnings, kept with -q
    normal, quiet, verbose = (run("recommend", EXAMPLE, *spec, *flag) for flag in ((), ("-q",), ("-v",)))
    assert "summary" in normal.stderr and "summary" not in quiet.stderr
    assert all(line.startswith("warning: ") for line in quiet.stderr.splitlines())  # warnings stay, as -q says
    warned = run("recommend", EXAMPLE, "-q")
    assert warned.stderr.count("not expressible: ") == 10 and "summary" not in warned.stderr
    assert "read 1 sources: 6,000 lines" in verbose.stderr
    assert normal.stdout == quiet.stdout == verbose.stdout
    assert run("recommend", EXAMPLE, "-q", "-v").exit_code == USAGE
