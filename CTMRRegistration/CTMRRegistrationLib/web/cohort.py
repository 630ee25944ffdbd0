"""Cohort review: the cases of a `ctmr-batch` folder (batch.summary) and the reviewers' accept/reject marks.

Marks live in DIR/reviews.csv, the one store every reviewer writes: each write takes DIR/.ctmr-web-reviews.lock,
re-reads the file, changes one case and replaces the file atomically, so a second reviewer's session keeps the
first one's marks. DIR/summary.csv then gets the marks as extra columns (under the runner's lock: never while
`ctmr-batch` computes into DIR; reviews.csv still holds them, and the next mark merges them again).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..batch.case import LOG_NAME, RECORD_NAME, REPORT_DIRECTORY, TRANSFORM_NAME
from ..batch.summary import COLUMNS, SUMMARY_NAME, cohort_lock, is_good
from ..core.errors import InputError
from ..core.output_files import write_text_atomically

REVIEWS_NAME = "reviews.csv"
REVIEWS_LOCK_NAME = ".ctmr-web-reviews.lock"
REVIEW_COLUMNS = ("case", "review", "comment", "reviewer", "reviewed_at")
SUMMARY_REVIEW_COLUMNS = ("review", "review_comment", "reviewer")
DECISIONS = ("accept", "reject")
KEY_METRICS = ("error_bound_mm", "edge_alignment", "foreground_overlap", "tre_mean_mm", "dice_mean")


def rank(row: dict) -> int:
    """Sort key putting the cases to look at first: not registered or failed, check, not run, ok."""
    if row.get("status") in ("pending", "interrupted"):
        return 2
    if not is_good(row):
        return 0
    return 1 if row.get("verdict") == "check" else 3


@dataclass
class Cohort:
    """A `ctmr-batch` output folder."""

    folder: Path

    def __post_init__(self):
        if not (self.folder / SUMMARY_NAME).is_file():
            raise InputError(f"{self.folder} has no {SUMMARY_NAME}: not a ctmr-batch output folder")

    def rows(self) -> list[dict]:
        """summary.csv's rows with the reviews merged, the cases to look at first."""
        with open(self.folder / SUMMARY_NAME, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        reviews = ReviewStore(self.folder).read()
        for row in rows:
            review = reviews.get(row["case"], {})
            row.update(review=review.get("review", ""), comment=review.get("comment", ""),
                       reviewer=review.get("reviewer", ""))
        return sorted(rows, key=lambda row: (rank(row), row["case"]))

    def case_folder(self, case: str) -> Path:
        folder = (self.folder / case).resolve()
        if folder.parent != self.folder.resolve() or not folder.is_dir():
            raise InputError(f"no case folder {case} in {self.folder}")
        return folder

    def record(self, case: str) -> dict:
        """The case's case.json (status, verdict, reasons, metrics), or a pending stand-in."""
        path = self.case_folder(case) / RECORD_NAME
        return json.loads(path.read_text()) if path.is_file() else {"case": case, "status": "pending"}

    def inputs(self, case: str) -> tuple[Path, Path]:
        """The fixed and moving inputs of a case, from the command its log.txt starts with."""
        log = self.case_folder(case) / LOG_NAME
        first = log.read_text(errors="replace").splitlines()[:1] if log.is_file() else []
        words = shlex.split(first[0].removeprefix("$ ")) if first else []
        paths = [words[index + 1] for index, word in enumerate(words[:-1]) if word in ("--fixed", "--moving")]
        if len(paths) != 2:
            raise InputError(f"case {case}: its log.txt does not name the fixed and moving inputs")
        return Path(paths[0]), Path(paths[1])

    def transform(self, case: str) -> Path | None:
        path = self.case_folder(case) / TRANSFORM_NAME
        return path if path.is_file() else None

    def report(self, case: str) -> Path | None:
        path = self.case_folder(case) / REPORT_DIRECTORY / "report.html"
        return path if path.is_file() else None


class ReviewStore:
    """DIR/reviews.csv, written under a lock and re-read before each write."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / REVIEWS_NAME

    def read(self) -> dict[str, dict]:
        """Each reviewed case's latest mark."""
        if not self.path.is_file():
            return {}
        with open(self.path, newline="", encoding="utf-8") as handle:
            return {row["case"]: row for row in csv.DictReader(handle)}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self.folder / REVIEWS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # waits for another reviewer's write: they take milliseconds
            yield
        finally:
            os.close(descriptor)

    def mark(self, case: str, decision: str, comment: str, reviewer: str) -> dict:
        """Record `decision` (accept, reject) for `case`, keeping every other case's mark as the file has it now."""
        if decision not in DECISIONS:
            raise InputError(f"a review is one of {', '.join(DECISIONS)}, not {decision!r}")
        entry = {"case": case, "review": decision, "comment": comment.strip(), "reviewer": reviewer,
                 "reviewed_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._locked():
            reviews = self.read() | {case: entry}
            write_text_atomically(self.path, _csv_text(REVIEW_COLUMNS, [reviews[name] for name in sorted(reviews)]))
            self._merge_into_summary(reviews)
        return entry

    def _merge_into_summary(self, reviews: dict[str, dict]) -> None:
        try:
            with cohort_lock(self.folder):
                with open(self.folder / SUMMARY_NAME, newline="", encoding="utf-8") as handle:
                    rows = list(csv.DictReader(handle))
                for row in rows:
                    review = reviews.get(row["case"], {})
                    row.update(review=review.get("review", ""), review_comment=review.get("comment", ""),
                               reviewer=review.get("reviewer", ""))
                write_text_atomically(self.folder / SUMMARY_NAME, _csv_text((*COLUMNS, *SUMMARY_REVIEW_COLUMNS), rows))
        except InputError:
            pass  # ctmr-batch computes into the folder: it rewrites summary.csv; reviews.csv keeps the mark


def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in columns} for row in rows)
    return buffer.getvalue()
