"""The console entry point: Ctrl-C ends any run with status 130 and no traceback, also while it starts.

This module imports nothing heavy, so the SIGINT handler is in place before the command's libraries
load. On Ctrl-C the parent stops the worker processes it started (forked readers of `--jobs`) at
once instead of waiting for their chunks, and leaves; a worker that gets the signal itself leaves
quietly. Without workers, the KeyboardInterrupt unwinds the run first (temporary files are removed).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from types import FrameType

INTERRUPTED = 130
"""128 + SIGINT, as shells report a command ended by Ctrl-C."""


_MAIN_PID = os.getpid()


def _interrupt(_signal: int, _frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:
        os._exit(INTERRUPTED)  # a forked worker: the parent reports the interruption
    workers = multiprocessing.active_children()
    for worker in workers:
        worker.terminate()
    if workers:  # a parallel read, which writes nothing: waiting for its pool to wind down could hang
        _leave()
    raise KeyboardInterrupt


def _leave() -> None:
    sys.stderr.write("interrupted\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


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
        # Everything has unwound (temporary files removed): skip the interpreter's slow tear-down of
        # the loaded libraries, which would hold the prompt for another second.
        _leave()
    sys.exit(status if isinstance(status, int) else 0)
