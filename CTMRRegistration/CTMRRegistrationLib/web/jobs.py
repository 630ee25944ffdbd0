"""One background job at a time (a registration), with progress pushed to the event loop and a working Cancel.

The job runs in a worker thread so that the server keeps answering (progress, Cancel, a second tab) while it
computes; its progress and its end are handed to the event loop's thread, the only one that touches the page.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

Progress = Callable[[float, str], None]


class JobRunner:
    """Runs `work(progress, cancelled)` in a thread; `on_progress`, `on_done` run on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, work: Callable[[Progress, Callable[[], bool]], Any], on_progress: Progress,
              on_done: Callable[[Any, BaseException | None], None]) -> None:
        """Start `work`; `on_done(result, error)` follows it (error: a Cancelled when the user cancelled)."""
        if self.running:
            raise RuntimeError("a job is already running")
        self._cancel.clear()

        def progress(fraction: float, message: str) -> None:
            self.loop.call_soon_threadsafe(on_progress, fraction, message)

        def run() -> None:
            try:
                result, error = work(progress, self._cancel.is_set), None
            except Exception as caught:  # a Cancelled too: the page shows why the job ended
                result, error = None, caught
            self.loop.call_soon_threadsafe(on_done, result, error)

        self._thread = threading.Thread(target=run, name="ctmr-web job", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress check."""
        self._cancel.set()
