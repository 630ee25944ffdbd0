"""What every command-line tool does around its work: SIGINT, SIGTERM and SIGHUP stop it cleanly, an
unexpected error is one line, and private folders of dead runs are removed at the start.

A signal stops the work where Python next runs; everything on the way out is cleaned up (elastix killed,
private folders removed, half-written outputs deleted) and the tool exits 128 + the signal's number, as a shell
expects. An error the library does not know is a one-line message with exit status 1; `--debug` adds its
traceback."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..core.private_folders import remove_stale_folders

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_UNEXPECTED = 1


class Interrupted(BaseException):
    """A signal asked the tool to stop. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


def _raise(signal_number, _frame) -> None:
    raise Interrupted(signal_number)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn the HANDLED signals into Interrupted inside the block; the previous handlers come back after it."""
    previous = {number: signal.signal(number, _raise) for number in HANDLED}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")


def run_command(prog: str, args: argparse.Namespace, work: Callable[[], int],
                json_error: Callable[[str, str], dict] | None = None) -> int:
    """`work()`'s exit status, inside the boundary every tool shares; `json_error(message, status)` (status
    "interrupted" or "error") is the JSON object printed with `--json` when the work stops without its own."""

    def report(message: str, status: str) -> None:
        if getattr(args, "json", False) and json_error is not None:
            print(json.dumps(json_error(message, status)))
        print(f"{prog}: {message}", file=sys.stderr)

    remove_stale_folders()
    try:
        with signals_interrupt():
            return work()
    except Interrupted as interruption:
        report(f"stopped by {interruption}: no partial output left", "interrupted")
        return interruption.exit_code
    except Exception as error:  # the boundary: anything the library did not turn into a message
        if getattr(args, "debug", False):
            traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        hint = "" if getattr(args, "debug", False) else " (rerun with --debug for the traceback)"
        report(f"error: unexpected {type(error).__name__}: {first}{hint}", "error")
        return EXIT_UNEXPECTED
