"""What the commands show: tables on a terminal or as plain lines in a pipe, and messages on stderr.

Every user-derived string (names, labels, reasons, paths) is shown literally: Rich markup is never
read from data. `-q` keeps stderr to errors and warnings, `-v` adds detail (`set_verbosity`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recommender import api

QUIET, NORMAL, VERBOSE = 0, 1, 2
stderr = Console(stderr=True, soft_wrap=True)
_verbosity = NORMAL
_VERDICT_STYLES = {"allowed": "green", "DENIED": "red"}
COLUMN_GAP = "   "


def set_verbosity(level: int) -> None:
    """QUIET, NORMAL or VERBOSE for the rest of the run; VERBOSE also logs at INFO on stderr."""
    global _verbosity
    _verbosity = level
    if level >= VERBOSE:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


def verbosity() -> int:
    return _verbosity


def say(message: str, *, level: int = NORMAL) -> None:
    """A message on stderr, shown literally, unless the run is quieter than `level`."""
    if _verbosity >= level:
        stderr.print(message, markup=False, highlight=False, emoji=False)


def warn(message: str) -> None:
    """A warning on stderr, shown even with -q."""
    stderr.print(f"warning: {message}", markup=False, highlight=False, emoji=False)


def rich_table(table: api.TextTable) -> Table:
    """The table for a terminal: every cell escaped, long cells folded, verdicts coloured."""
    shown = Table(title=escape(table.title), title_justify="left")
    for column in table.columns:
        shown.add_column(column, overflow="fold")
    verdict = table.columns.index("verdict") if "verdict" in table.columns else None
    for row in table.rows:
        cells = [escape(cell) for cell in row]
        if verdict is not None and row[verdict] in _VERDICT_STYLES:
            cells[verdict] = f"[{_VERDICT_STYLES[row[verdict]]}]{cells[verdict]}[/]"
        shown.add_row(*cells)
    return shown


def plain_lines(table: api.TextTable, *, headers: bool = True) -> list[str]:
    """The table for a pipe: one line per row, never wrapped, columns aligned (kubectl's style);
    with `headers`, the column names in capitals first."""
    rows = [tuple(name.upper() for name in table.columns), *table.rows] if headers else list(table.rows)
    if not rows:
        return []
    widths = [max(len(row[index]) for row in rows) for index in range(len(table.columns) - 1)]
    return [
        COLUMN_GAP.join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]


def show_tables(tables: Sequence[api.TextTable], totals: str, *, headers: bool = True) -> None:
    """Tables and their totals line on stdout: Rich tables on a terminal; in a pipe, plain lines
    (each table's title before its header, the totals on stderr, so stdout holds only rows with --no-headers)."""
    stdout = Console(soft_wrap=False)
    if stdout.is_terminal:
        for table in tables:
            stdout.print(rich_table(table))
        stdout.print(totals, markup=False, highlight=False)
        return
    blocks = []
    for table in tables:
        lines = plain_lines(table, headers=headers)
        blocks.append("\n".join([f"# {table.title}", *lines] if headers else lines))
    text = ("\n\n" if headers else "\n").join(block for block in blocks if block)
    if text:
        click.echo(text)
    say(totals)
