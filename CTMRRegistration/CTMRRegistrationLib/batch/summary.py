"""The files of a `ctmr-batch` cohort folder DIR itself: the overview, DIR/summary.csv and DIR/index.html,
one row per manifest case, and the lock, DIR/.ctmr-batch.lock.

Both are rewritten (atomically) each time a case finishes, so a running cohort can be watched; cases not
finished yet show as pending, and index.html reloads itself until none is left. A case counts as good when it
is registered with verdict ok or check, or registered without a quality assessment (`--no-qa`, no verdict).

One runner at a time computes into a DIR: the lock file holds the pid of the runner that has it locked
(fcntl.flock, exclusive). The kernel releases the lock when that process ends however it ends, so a runner
that was killed leaves no stale lock; the file is removed when the runner finishes.
"""

from __future__ import annotations

import csv
import fcntl
import html
import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import InputError
from .case import REPORT_DIRECTORY

SUMMARY_NAME = "summary.csv"
INDEX_NAME = "index.html"
LOCK_NAME = ".ctmr-batch.lock"
WRITTEN_NAMES = (SUMMARY_NAME, INDEX_NAME, SUMMARY_NAME + ".partial", INDEX_NAME + ".partial", LOCK_NAME)
HOLDER_WAIT_SECONDS = 0.5  # how long to wait for a runner that has just taken the lock to write its pid
GOOD_VERDICTS = ("ok", "check", "")  # "": registered with --no-qa, no verdict to judge
METRIC_COLUMNS = ("error_bound_mm", "foreground_overlap", "edge_alignment", "restart_spread_mm", "tre_mean_mm",
                  "tre_max_mm", "dice_mean")
COLUMNS = ("case", "status", "verdict", "reasons", "seconds", "peak_memory_mb", "attempts", "reused",
           *METRIC_COLUMNS, "error")
THUMBNAIL = "after_blend.png"
COLOURS = {"ok": "#2e7d32", "check": "#f9a825", "failed": "#c62828"}
STATUS_COLOURS = {"pending": "#9e9e9e", "interrupted": "#9e9e9e", "registered": "#2e7d32", "error": "#c62828",
                  "crashed": "#6a1b9a", "failed": "#c62828", "mirrored": "#c62828"}
NOT_RUN = ("pending", "interrupted")  # cases without a result of this cohort's options yet


def pending_row(case: str) -> dict:
    """The row of a case not finished yet."""
    return {"case": case, "status": "pending"}


def summary_row(record: dict, reused: bool) -> dict:
    """The row of a finished case from its record (see case.case_record)."""
    row = {key: record.get(key, "") for key in ("case", "status", "verdict", "seconds", "peak_memory_mb",
                                                  "attempts", "error")}
    metrics = record.get("metrics") or {}
    return row | {key: metrics.get(key, "") for key in METRIC_COLUMNS} | {
        "reasons": "; ".join(record.get("reasons") or []), "reused": "yes" if reused else "no"}


def write_summary(directory: Path, rows: list[dict], running: bool = True) -> None:
    """Rewrite summary.csv and index.html in `directory` for `rows` (manifest order); `running`: the cohort run
    goes on, so the page reloads itself while cases are pending."""
    directory = Path(directory)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in rows)
    _write_atomically(directory / SUMMARY_NAME, buffer.getvalue())
    _write_atomically(directory / INDEX_NAME, index_html(directory, rows, running))


def is_good(row: dict) -> bool:
    """A case registered with verdict ok or check, or registered without a quality assessment (--no-qa)."""
    return row.get("status") == "registered" and (row.get("verdict") or "") in GOOD_VERDICTS


def counts(rows: list[dict]) -> dict[str, int]:
    """Cases by outcome: good (see is_good), bad (anything else finished), pending (not finished: pending or
    interrupted)."""
    good = sum(is_good(row) for row in rows)
    pending = sum(row["status"] in NOT_RUN for row in rows)
    return {"good": good, "bad": len(rows) - good - pending, "pending": pending}


def index_html(directory: Path, rows: list[dict], running: bool = True) -> str:
    """One table row per case: verdict colour, thumbnail, link to its report, status and error."""
    tally = counts(rows)
    refresh = '<meta http-equiv="refresh" content="10">' if running and tally["pending"] else ""
    lines = [
        "<!DOCTYPE html>", f'<html><head><meta charset="utf-8">{refresh}<title>ctmr-batch</title>',
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
        ".tag{color:white;padding:2px 6px;border-radius:3px}</style></head><body>",
        f"<h1>CT-MR registration cohort</h1><p>{len(rows)} cases: {tally['good']} registered (ok/check or no QA), "
        f"{tally['bad']} not, {tally['pending']} not run yet.</p>",
        "<table><tr><th>case</th><th>picture</th><th>status</th><th>verdict</th><th>seconds</th>"
        "<th>peak MB</th><th>reasons / error</th></tr>",
    ]
    lines += [_html_row(directory, row) for row in rows]
    lines.append("</table></body></html>")
    return "\n".join(lines) + "\n"


def _html_row(directory: Path, row: dict) -> str:
    case = row["case"]
    report = f"{case}/{REPORT_DIRECTORY}/report.html"
    thumbnail = f"{case}/{REPORT_DIRECTORY}/{THUMBNAIL}"
    has_report = row["status"] == "registered" and (directory / report).is_file()
    name = f'<a href="{html.escape(report)}">{html.escape(case)}</a>' if has_report else html.escape(case)
    picture = (f'<img src="{html.escape(thumbnail)}" width="160" alt="after">'
               if (directory / thumbnail).is_file() and has_report else "")
    verdict = row.get("verdict") or ""
    colour = COLOURS.get(verdict) or STATUS_COLOURS.get(row["status"], "#9e9e9e")
    tag = f'<span class="tag" style="background:{colour}">{html.escape(verdict or row["status"])}</span>'
    notes = html.escape(row.get("error") or row.get("reasons") or "")
    return (f"<tr><td>{name}</td><td>{picture}</td><td>{html.escape(row['status'])}</td><td>{tag}</td>"
            f"<td>{row.get('seconds', '')}</td><td>{row.get('peak_memory_mb', '')}</td><td>{notes}</td></tr>")


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@contextmanager
def cohort_lock(directory: Path) -> Iterator[None]:
    """Hold the lock of cohort folder `directory` inside the block; InputError naming the holder's pid when
    another runner has it."""
    path = Path(directory) / LOCK_NAME
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise InputError(f"cannot lock cohort folder {directory}: {error.strerror}") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise InputError(f"cohort folder {directory} is in use by ctmr-batch (pid {holder}); wait for it to "
                             "finish or stop it") from None
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed after this runner opened it
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)


def _holder(descriptor: int) -> str:
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    while True:
        text = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.05)
