"""A `Report` as Markdown, HTML and JSON, and the files the `report` command writes; formatting only.

Markdown and HTML show the same sections (`_sections`), with long tables cut at `MAX_ROWS` rows;
JSON holds everything. Times are the flows' clock, so the same store and input give the same bytes.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd

from recommender.output_folder import replace_folder
from recommender.render import proposal_text
from recommender.report import Report
from recommender.tables import markdown_table

MAX_ROWS = 50
"""Rows of a table shown in Markdown and HTML; report.json has them all."""
SETTLING_ROWS = 24
"""Most recent windows listed in the settling table."""
SPARK_WINDOWS = 60
"""Most recent windows drawn in the sparkline and the chart."""
SPARKS = "▁▂▃▄▅▆▇█"
CHART_CAPTION = "New paths per window, oldest first"
FILES = ("report.md", "report.html", "report.json", "recommendation.yaml")


@dataclass(frozen=True)
class _Section:
    title: str
    paragraphs: tuple[str, ...]
    table: pd.DataFrame | None = None
    chart: tuple[tuple[str, int], ...] = ()
    """(window, new paths) bars: a sparkline in Markdown, an SVG chart in HTML."""
    warnings: tuple[str, ...] = ()
    """Shown before the paragraphs, marked as warnings."""
    items: tuple[str, ...] = ()
    """A list after the paragraphs."""


def write_report(report: Report, directory: str, *, force: bool = False) -> list[str]:
    """Write `FILES` into `directory`, replacing the last report as a whole (`output_folder.replace_folder`:
    a folder holding files the tool did not write is refused unless `force`); returns their paths."""
    contents = (
        markdown(report),
        html_page(report),
        json_document(report),
        proposal_text(report.recommendation.proposal, "yaml", explain=True),
    )
    return replace_folder(directory, dict(zip(FILES, contents, strict=True)), force=force)


def markdown(report: Report) -> str:
    sections = _sections(report)
    lines = [f"# {sections[0].title}", ""]
    for number, section in enumerate(sections):
        if number:
            lines += [f"## {section.title}", ""]
        for warning in section.warnings:
            lines += [f"> **Warning:** {_sentence(warning)}", ""]
        if section.chart:
            lines += [f"{CHART_CAPTION}: {_sparkline([count for _, count in section.chart])}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.items:
            lines += [*(f"- {item}" for item in section.items), ""]
        if section.table is not None:
            lines += [markdown_table(_cut(section.table), list(section.table.columns)), *_more(section.table)]
    return "\n".join(lines).rstrip("\n") + "\n"


def html_page(report: Report) -> str:
    sections = _sections(report)
    body = []
    for number, section in enumerate(sections):
        level = 1 if number == 0 else 2
        body.append(f"<h{level}>{html.escape(section.title)}</h{level}>")
        body += [
            f'<p class="warning"><strong>Warning:</strong> {html.escape(_sentence(warning))}</p>'
            for warning in section.warnings
        ]
        if section.chart:
            body += [f"<p>{CHART_CAPTION}:</p>", _chart(section.chart)]
        body += [f"<p>{html.escape(paragraph)}</p>" for paragraph in section.paragraphs]
        if section.items:
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in section.items) + "</ul>")
        if section.table is not None:
            if section.table.empty:
                body.append("<p><em>none</em></p>")
            else:
                body.append(_cut(section.table).to_html(index=False, border=0))
                body += [f"<p>{html.escape(line)}</p>" for line in _more(section.table)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(sections[0].title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.2em .6em;text-align:left;"
    "border-bottom:1px solid #ddd;font-size:.9em}th{background:#f3f3f3}svg rect{fill:#4a7ab5}"
    ".warning{background:#fdf0e0;border-left:4px solid #d9822b;padding:.5em .8em}"
)


def json_document(report: Report) -> str:
    recommendation = report.recommendation
    comparison = report.comparison
    document = {
        "window": report.window.to_dict(),
        "exit_status": report.exit_status,
        "warnings": report.warnings(),
        "first_run": report.first_run,
        "drift": report.drift,
        "drift_reasons": report.drift_reasons(),
        "retain": _duration(report.options.retain),
        "stale_after": _duration(report.options.stale_after),
        "new_paths": _records(report.new_paths),
        "stale_paths": _records(report.stale_paths),
        "policies_in_force": None
        if comparison is None
        else {
            "source": comparison.source,
            "cni": comparison.cni,
            "rules": comparison.rules,
            "would_break": _records(_explained(comparison.would_break)),
            "unused_rules": _records(comparison.unused_rules),
        },
        "recommendation": {
            "policies": len(recommendation.proposal.policies),
            "rules": recommendation.rule_count(),
            "recall": recommendation.check.recall,
            "excess": len(recommendation.check.excess),
            "changes": None if report.changes is None else _records(report.changes),
        },
        "settling": {
            "settled": report.settled,
            "settled_after": report.options.settled_after,
            "unmet": report.unsettled_reasons(),
            "unobserved_namespaces": report.unobserved_namespaces,
            "windows": _records(report.settling),
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# -- the sections ---------------------------------------------------------------------------------


def _sections(report: Report) -> list[_Section]:
    return [
        _Section(
            f"Network policy review: window {report.window.id}", _overview(report), warnings=tuple(report.warnings())
        ),
        _Section(
            "New paths since the last run",
            ("Paths of this window that no earlier window kept by the store had.",),
            _paths_table(report.new_paths, "first_seen", "first seen"),
        ),
        _Section(
            f"Paths not seen for {_duration(report.options.stale_after)}",
            ("Paths of the running picture whose last flow is older than that, before this window's end.",),
            _paths_table(report.stale_paths, "last_seen", "last seen"),
        ),
        *_comparison_sections(report),
        *_recommendation_sections(report),
        _settling_section(report),
    ]


def _overview(report: Report) -> tuple[str, ...]:
    window, kept = report.window, [*report.history, report.window]
    paragraphs = [
        f"Window {window.id} observed from {_time(window.start)} to {_time(window.end)} (the flows' clock): "
        f"{window.flows:,} flows, {window.paths} paths, {window.new_paths} new. The running picture is the "
        f"{len(kept)} window(s) kept since {_time(kept[0].start)} (retention {_duration(report.options.retain)}).",
    ]
    if report.first_run and window.gap:
        paragraphs.append("No window with flows yet: the first one to have them will be the baseline.")
    elif report.first_run:
        paragraphs.append(
            ("First run" if not report.history else "First window with flows (the earlier ones are gaps)")
            + ": this window is the baseline. Every path in it is new and the recommendation is the first "
            "one, which is not drift; from the next run on, new paths and a changed recommendation are."
        )
    reasons = report.drift_reasons()
    status = f"exit status {report.exit_status}" + (", for the gap" if window.gap else "")
    if reasons:
        paragraphs.append(f"Drift found ({status}): {'; '.join(reasons)}.")
    else:
        paragraphs.append(f"Nothing new: no new path, nothing that would break, the same recommendation ({status}).")
    return tuple(paragraphs)


def _comparison_sections(report: Report) -> list[_Section]:
    comparison = report.comparison
    if comparison is None:
        text = "No policy set to compare with: give --policies, or read the cluster (--cluster or --inventory)."
        return [_Section("Would break on enforcement", (text,))]
    breaks, unused = comparison.would_break, comparison.unused_rules
    why = breaks["decision"].map(lambda decision: decision.reasons)
    return [
        _Section(
            "Would break on enforcement",
            (
                f"Observed connections that the policies in force ({comparison.source}, {comparison.rules} rules) "
                f"deny, as the CNI profile {comparison.cni} enforces them.",
            ),
            pd.DataFrame(
                {
                    "client": breaks["client"],
                    "server": breaks["server"],
                    "port": _ports(breaks),
                    "flows": breaks["count"].map("{:,}".format),
                    "why": why,
                }
            ),
        ),
        _Section(
            "Rules never used (candidates to remove)",
            ("Rules of the policies in force that no connection observed in the retention period used.",),
            pd.DataFrame(
                {
                    "policy": unused["namespace"] + "/" + unused["policy"],
                    "rule": unused["direction"] + "[" + unused["rule"].astype(str) + "]",
                    "allows": unused["text"],
                }
            ),
        ),
    ]


def _recommendation_sections(report: Report) -> list[_Section]:
    recommendation = report.recommendation
    summary = (
        f"{len(recommendation.proposal.policies)} policies with {recommendation.rule_count()} rules for the "
        "running picture, in recommendation.yaml (with each rule's evidence). "
        f"Replay recall {recommendation.check.recall:.0%}, excess {len(recommendation.check.excess)} "
        "(allowed, never observed)."
    )
    dns = recommendation.check.dns
    if dns is not None and recommendation.proposal.dns.active:
        summary += (
            f" The DNS allowance (allow-dns: every pod may resolve names over UDP and TCP 53) adds "
            f"{len(dns.unobserved)} more, proven by {dns.lookups:,} synthetic lookups."
        )
    sections = [_Section("Recommendation", (summary,))]
    if report.changes is not None:
        sections.append(
            _Section(
                "Recommendation changes since the last run",
                ("Policies by namespace/name; a changed policy lists its rules removed (-) and added (+).",),
                report.changes,
            )
        )
    return sections


def _settling_section(report: Report) -> _Section:
    settling, needed = report.settling, report.options.settled_after
    managed = len(report.recommendation.proposal.managed_namespaces)
    verdict = (
        f"Settled: the last {needed} windows each had enough flows (none was a gap), brought no new path, and "
        f"together observed every namespace the recommendation manages ({managed}). The observation has seen "
        "the regular traffic."
        if report.settled
        else "Not settled yet. Keep observing before enforcing the recommendation: the picture is settled once "
        f"{needed} windows in a row each have enough flows (none is a gap), bring no new path, and together "
        f"observe every namespace the recommendation manages ({managed}). Not met yet:"
    )
    table = settling.tail(SETTLING_ROWS).assign(
        start=settling["start"].map(_time),
        end=settling["end"].map(_time),
        flows=settling["flows"].map("{:,}".format),
    )
    bars = settling.tail(SPARK_WINDOWS)
    return _Section(
        "How settled is the picture",
        (verdict,),
        table.rename(columns={"new_paths": "new paths"}),
        tuple(zip(bars["window"], bars["new_paths"].astype(int), strict=True)),
        items=tuple(report.unsettled_reasons()),
    )


# -- helpers ----------------------------------------------------------------------------------------


def _paths_table(paths: pd.DataFrame, time_column: str, time_title: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "client": paths["client"],
            "server": paths["server"],
            "port": _ports(paths),
            "flows": paths["count"].map("{:,}".format),
            time_title: paths[time_column].map(_time),
            "verdicts": paths["verdicts"],
        }
    )


def _ports(frame: pd.DataFrame) -> pd.Series:
    return frame["protocol"] + "/" + frame["port"].astype(str)


def _cut(table: pd.DataFrame) -> pd.DataFrame:
    return table.head(MAX_ROWS)


def _more(table: pd.DataFrame) -> list[str]:
    return [f"… and {len(table) - MAX_ROWS} more (all in report.json)", ""] if len(table) > MAX_ROWS else []


def _sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if not top:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[round(value / top * (len(SPARKS) - 1))] for value in values)


def _chart(bars: tuple[tuple[str, int], ...]) -> str:
    """(window, new paths) as a small SVG bar chart; a window without new paths is a 1-pixel bar."""
    top = max(max(count for _, count in bars), 1)
    rects = []
    for index, (window, count) in enumerate(bars):
        height = max(round(count / top * 60), 1)
        rects.append(
            f'<rect x="{index * 12}" y="{60 - height}" width="10" height="{height}">'
            f"<title>window {html.escape(window)}: {count} new</title></rect>"
        )
    label = 'role="img" aria-label="new paths per window"'
    return f'<svg width="{len(rects) * 12}" height="60" {label}>{"".join(rects)}</svg>'


def _explained(breaks: pd.DataFrame) -> pd.DataFrame:
    """Connections that would break, their decision as its one-line explanation."""
    return breaks.assign(explanation=breaks["decision"].map(str)).drop(columns="decision")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _time(moment: Any) -> str:
    return "" if pd.isna(moment) else pd.Timestamp(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(span: timedelta | None) -> str:
    """`30d`, `12h`, `90m`, `45s`; "forever" for None."""
    if span is None:
        return "forever"
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
