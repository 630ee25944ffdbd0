"""SIGINT and SIGTERM in the command-line tools: the work stops where Python next runs, everything on the
way out is cleaned up (elastix killed, temporary folders removed, half-written outputs deleted), and the
tool exits 130 or 143 as a shell expects of a process ended by that signal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


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
    """Turn SIGINT and SIGTERM into Interrupted inside the block; the previous handlers come back after it."""
    previous = {number: signal.signal(number, _raise) for number in HANDLED}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
