"""The command line: outputs, options and user errors (a message, never a stack trace)."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from recommender.cli import main
from recommender.output_folder import MANIFEST
from tests.conftest import REPO, fixture_lines, write_lines

EXAMPLE = str(REPO / "examples" / "shop-capture.json.gz")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_every_command_has_help():
    for command in main.commands.values():
        assert command.help and run(command.name, "--help").exit_code == 0


def test_yaml_on_stdout_is_a_stream_of_network_policies():
    outcome = run("recommend", EXAMPLE, "-o", "yaml", "-q", "--cni", "kubernetes")
    assert outcome.exit_code == 0
    documents = list(yaml.safe_load_all(outcome.stdout))
    assert {d["kind"] for d in documents} == {"NetworkPolicy"}
    assert [d["metadata"]["name"] for d in documents if d["metadata"]["namespace"] == "payments"] == [
        "default-deny",
        "allow-dns",
        "allow-payments",
    ]


def test_json_on_stdout_is_a_list():
    outcome = run("recommend", EXAMPLE, "-o", "json", "-q")
    document = json.loads(outcome.stdout)
    assert document["kind"] == "List" and len(document["items"]) == 11


def test_directory_output_with_json_files(tmp_path):
    outcome = run("recommend", EXAMPLE, "-o", str(tmp_path / "out"), "--format", "json", "-q", "--cni", "kubernetes")
    assert outcome.exit_code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        MANIFEST, "findings.json", "findings.md", "kustomization.yaml", "monitoring.json", "payments.json", "shop.json"
    ]  # fmt: skip
    kustomization = yaml.safe_load((tmp_path / "out" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["monitoring.json", "payments.json", "shop.json"]


def test_explain_puts_evidence_above_every_rule():
    text = run("recommend", EXAMPLE, "-o", "yaml", "--explain", "-q").stdout
    rules = sum(1 for line in text.splitlines() if line.startswith(("    - from:", "    - to:")))
    comments = [line for line in text.splitlines() if line.startswith("    # ")]
    assert rules == len(comments) == 11  # on Cilium (the default for Hubble input) the entity edges get no rule
    assert any("DNS names: api.payments.example.com" in line for line in comments)
    assert all(" flows from " in line and " e.g. " in line for line in comments)
    assert sum(line.startswith("    # DNS allowance: every pod may resolve names") for line in comments) == 3


def test_summary_table_goes_to_stderr():
    outcome = run("recommend", EXAMPLE, "-o", "yaml")
    assert "netpol-recommender summary" in outcome.stderr and "summary" not in outcome.stdout
    assert "dropped flows" in outcome.stderr


def test_include_dropped_allows_the_refused_call():
    plain = run("recommend", EXAMPLE, "-o", "yaml", "-q").stdout
    widened = run("recommend", EXAMPLE, "-o", "yaml", "-q", "--include-dropped").stdout
    assert "8443" in widened and widened.count("port: 8443") > plain.count("port: 8443")


def test_exclude_namespace_replaces_the_defaults():
    text = run("recommend", EXAMPLE, "-o", "yaml", "-q", "--exclude-namespace", "payments").stdout
    namespaces = {d["metadata"]["namespace"] for d in yaml.safe_load_all(text)}
    assert namespaces == {"shop", "monitoring", "kube-system"}


def test_stdin_is_read_with_a_dash():
    lines = "\n".join(fixture_lines("basic-sample-400-tcp-flows.json")) + "\n"
    outcome = run("recommend", "-", "-o", "yaml", "-q", "--cni", "kubernetes", input=lines)
    assert outcome.exit_code == 0 and "allow-productpage-v1" in outcome.stdout


def test_bad_line_is_a_one_line_error_with_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.json", ["{}", "not json"])
    outcome = run("recommend", str(path))
    assert outcome.exit_code == 1
    assert f"Error: {path}:1: not a Hubble flow or event" in outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout


def test_skip_mode_counts_and_lists_bad_lines(tmp_path):
    good = fixture_lines("basic-sample-400-tcp-flows.json")[24]
    path = write_lines(tmp_path / "bad.json", [good, "garbage", good[:30]])
    outcome = run("recommend", str(path), "-o", "yaml", "--on-error", "skip")
    assert outcome.exit_code == 0
    assert f"skipped: {path}:2: not valid JSON" in outcome.stderr
    assert f"skipped: {path}:3: not valid JSON" in outcome.stderr
    row = next(line for line in outcome.stderr.splitlines() if "lines skipped (malformed)" in line)
    assert row.rstrip(" │").endswith("2")


def test_missing_file_is_a_clear_error(tmp_path):
    outcome = run("recommend", str(tmp_path / "missing.json"))
    assert outcome.exit_code == 1 and "no such file" in outcome.stderr and "Traceback" not in outcome.stderr


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    outcome = run("recommend", EXAMPLE, "-o", str(blocker / "sub"), "-q")
    assert outcome.exit_code == 1 and "Error:" in outcome.stderr and "Traceback" not in outcome.stderr


def test_graph_command_writes_pictures_and_reports_bad_requests(tmp_path):
    for args, name in ((["--matrix"], "m.svg"), (["--workload", "shop/checkout"], "w.png"), ([], "g.png")):
        outcome = run("graph", EXAMPLE, "-o", str(tmp_path / name), *args)
        assert outcome.exit_code == 0, outcome.output
        assert (tmp_path / name).stat().st_size > 1000
    outcome = run("graph", EXAMPLE, "-o", str(tmp_path / "x.png"), "--workload", "shop/nope")
    assert outcome.exit_code == 1 and "unknown workload 'shop/nope'" in outcome.stderr
    outcome = run("graph", EXAMPLE, "-o", str(tmp_path / "x.gif"))
    assert outcome.exit_code == 2 and "must end in .svg or .png" in outcome.stderr
