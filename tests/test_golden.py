"""Golden files: the full output of every command on every real fixture and the shipped example.

Each case's outputs are compared with the checked-in files under `tests/golden/<case>/`. A change
of output is a change of behaviour: review it, then rewrite the files with
`pytest tests/test_golden.py --update-golden` and commit them with the change that caused it.
On a mismatch the test prints a unified diff and leaves the actual output beside the golden file
as `actual_<name>` (git-ignored).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from recommender.cli import main
from tests.conftest import FIXTURES, REPO

GOLDEN = REPO / "tests" / "golden"
EXAMPLE = REPO / "examples" / "shop-capture.json.gz"
EXAMPLE_POLICIES = REPO / "examples" / "existing-policies"
NETNS_INVENTORY = REPO / "tests" / "data" / "conntrack" / "netns-inventory.json"
WIDE = {"COLUMNS": "200"}  # terminal tables at a fixed width


@dataclass(frozen=True)
class Case:
    """One input of the golden suite: observation files (and options every command gets)."""

    name: str
    files: tuple[Path, ...]
    options: tuple[str, ...] = ()
    policies: Path | None = None
    """Existing policies to verify and diff against, besides the case's own recommendation."""
    recommend_options: tuple[str, ...] = ()
    """Options only `recommend` gets."""

    def available(self) -> bool:
        return all(path.exists() for path in self.files)


HUBBLE = FIXTURES / "hubble"
NETNS = FIXTURES / "conntrack" / "netns"
BOOKINFO = (HUBBLE / "basic-sample-400-tcp-flows.json", HUBBLE / "basic-sample-400-udp-flows.json")
CASES = [
    Case("example", (EXAMPLE,), policies=EXAMPLE_POLICIES),
    Case("bookinfo", BOOKINFO),
    Case("bookinfo-baseline", BOOKINFO, recommend_options=("--baseline", "clusternetworkpolicy")),
    *(
        Case(name, (HUBBLE / f"{name}.json",))
        for name in (
            "basic-sample-10-flows",
            "basic-sample-5-dns-flows",
            "basic-sample-5-http-flows",
            "basic-sample-400-tcp-flows",
            "basic-sample-400-udp-flows",
            "basic-sample-400-icmpv4-flows",
        )
    ),
    Case("exporter-fieldmask-events", (HUBBLE / "exporter-fieldmask-events.log",)),
    Case(
        "conntrack-netns",
        (NETNS / "conntrack-L-ktimestamp.txt", NETNS / "conntrack-events.txt"),  # with times: the report's window
        ("--inventory", str(NETNS_INVENTORY)),
    ),
]


def _run(*args: str) -> tuple[int, str, str]:
    outcome = CliRunner(env=WIDE).invoke(main, [str(arg) for arg in args])
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return outcome.exit_code, outcome.stdout, outcome.stderr


def _portable(text: str, work: Path) -> str:
    """Output with machine-specific paths replaced by stable names."""
    return text.replace(str(work), "<work>").replace(str(REPO), "<repo>").replace(str(FIXTURES), "<fixtures>")


def case_outputs(case: Case, work: Path) -> dict[str, str]:
    """Every command's output for one case, by golden file name."""
    files = [str(path) for path in case.files]
    outputs: dict[str, str] = {}

    def record(name: str, *args: str) -> None:
        code, out, err = _run(*args)
        outputs[name] = _portable(out, work)
        outputs[f"{name}.stderr"] = _portable(err, work) + f"exit status {code}\n"

    recommending = ("recommend", *files, *case.options, *case.recommend_options)
    record("recommend.yaml", *recommending, "-o", "yaml")
    record("recommend-explain.yaml", *recommending, "-o", "yaml", "--explain", "-q")
    record("recommend.json", *recommending, "-o", "json", "-q")
    cilium = ("--target", "cilium")
    record("recommend-cilium.yaml", *recommending, *cilium, "-o", "yaml")
    record("recommend-cilium-explain.yaml", *recommending, *cilium, "-o", "yaml", "--explain", "-q")
    record("recommend-cilium.json", *recommending, *cilium, "-o", "json", "-q")
    folder = work / "policies"
    record("recommend-folder.txt", *recommending, "-o", str(folder), "-q")
    for path in sorted(folder.iterdir()) if folder.exists() else ():  # none when there is nothing to recommend
        outputs[f"folder/{path.name}"] = path.read_text()

    policy_sets = [("own", str(folder))]
    if case.policies is not None:
        policy_sets.append(("existing", str(case.policies)))
    for label, policies in policy_sets:
        for output_format in ("table", "json", "markdown"):
            suffix = {"table": "txt", "json": "json", "markdown": "md"}[output_format]
            for command in ("verify", "diff"):
                record(
                    f"{command}-{label}.{suffix}",
                    command,
                    *files,
                    *case.options,
                    "--policies",
                    policies,
                    "-o",
                    output_format,
                )

    if case.recommend_options:  # the report takes none of them: it would repeat the case without them
        return outputs
    store, report = work / "store", work / "report"
    record("report.md", "report", *files, *case.options, "--store", str(store), "-o", str(report))
    for path in sorted(report.iterdir()):
        outputs[f"report/{path.name}"] = _portable(path.read_text(), work)
    return outputs


def _compare(case: Case, outputs: dict[str, str], update: bool) -> list[str]:
    folder = GOLDEN / case.name
    problems = []
    expected_names = (
        {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
    )
    expected_names = {name for name in expected_names if not Path(name).name.startswith("actual_")}
    for name, actual in sorted(outputs.items()):
        path = folder / name
        actual_path = path.with_name(f"actual_{path.name}")
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            actual_path.unlink(missing_ok=True)
            continue
        expected = path.read_text() if path.exists() else None
        if expected == actual:
            actual_path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        actual_path.write_text(actual)
        diff = difflib.unified_diff(
            (expected or "").splitlines(keepends=True),
            actual.splitlines(keepends=True),
            f"golden/{case.name}/{name}",
            f"actual ({actual_path.name})",
        )
        problems.append("".join(diff) if expected is not None else f"golden/{case.name}/{name}: no golden file\n")
    for name in sorted(expected_names - set(outputs)):
        if update:
            (folder / name).unlink()
        else:
            problems.append(f"golden/{case.name}/{name}: no longer produced\n")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_outputs_match_the_golden_files(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not case.available():
        pytest.skip(f"shared fixtures not available ({case.files[0]})")
    os.environ.pop("COLUMNS", None)
    problems = _compare(case, case_outputs(case, tmp_path), request.config.getoption("--update-golden"))
    assert not problems, "outputs differ from the golden files (review, then --update-golden):\n" + "\n".join(problems)
