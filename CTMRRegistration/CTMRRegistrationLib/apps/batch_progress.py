"""Progress of `ctmr-batch` on stderr: one line per finished case with a bar, counts and the time left."""

from __future__ import annotations

import sys
import time

BAR_WIDTH = 20


class Progress:
    """Counts the cases computed in this run and estimates the time left from their mean duration."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr

    def update(self, record: dict) -> None:
        self.done += 1
        good = record.get("status") == "registered" and record.get("verdict") in ("ok", "check")
        self.failed += not good
        filled = BAR_WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        outcome = record.get("verdict") or record.get("status", "")
        print(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} done, {self.failed} failed, "
              f"ETA {_duration(left)} | {record.get('case')}: {outcome}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
