"""The console entry point: Ctrl-C ends any run with status 130 and no traceback, also while it starts.

This module imports nothing heavy, so the SIGINT handler is in place before the command's libraries
load. On Ctrl-C the parent stops the worker processes it started (forked readers of `--jobs`) at
once instead of waiting for their chunks; a worker that gets the signal itself leaves quietly.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130
"""128 + SIGINT, as shells report a command ended by Ctrl-C."""


def _interrupt(_signal: int, _frame: FrameType | None) -> None:
    if multiprocessing.parent_process() is not None:
        os._exit(INTERRUPTED)  # a worker: the parent reports the interruption
    for child in multiprocessing.active_children():
        child.terminate()
    raise KeyboardInterrupt


def run() -> None:
    """`netpol-recommender`: the click group with the exit statuses the README documents."""
    signal.signal(signal.SIGINT, _interrupt)
    try:
        import click

        from recommender.cli import main

        try:
            status = main.main(prog_name="netpol-recommender", standalone_mode=False)
        except click.exceptions.Abort:  # click's name for a KeyboardInterrupt
            raise KeyboardInterrupt from None
        except click.ClickException as exc:
            exc.show()
            status = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        status = INTERRUPTED
    sys.exit(status if isinstance(status, int) else 0)
