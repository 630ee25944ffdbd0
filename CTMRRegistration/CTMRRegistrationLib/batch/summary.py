"""The cohort overview of `ctmr-batch`: DIR/summary.csv and DIR/index.html, one row per manifest case.

Both are rewritten (atomically) each time a case finishes, so a running cohort can be watched; cases not
finished yet show as pending, and index.html reloads itself until none is left.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path

from .case import REPORT_DIRECTORY

SUMMARY_NAME = "summary.csv"
INDEX_NAME = "index.html"
METRIC_COLUMNS = ("foreground_overlap", "edge_alignment", "restart_spread_mm", "tre_mean_mm", "tre_max_mm",
                  "dice_mean")
COLUMNS = ("case", "status", "verdict", "reasons", "seconds", "peak_memory_mb", "attempts", "reused",
           *METRIC_COLUMNS, "error")
THUMBNAIL = "after_blend.png"
COLOURS = {"ok": "#2e7d32", "check": "#f9a825", "failed": "#c62828"}
STATUS_COLOURS = {"pending": "#9e9e9e", "error": "#c62828", "crashed": "#6a1b9a", "failed": "#c62828",
                  "mirrored": "#c62828"}


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


def write_summary(directory: Path, rows: list[dict]) -> None:
    """Rewrite summary.csv and index.html in `directory` for `rows` (manifest order)."""
    directory = Path(directory)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in rows)
    _write_atomically(directory / SUMMARY_NAME, buffer.getvalue())
    _write_atomically(directory / INDEX_NAME, index_html(directory, rows))


def counts(rows: list[dict]) -> dict[str, int]:
    """Cases by outcome: good (registered with verdict ok/check), bad (anything else finished), pending."""
    good = sum(row["status"] == "registered" and row.get("verdict") in ("ok", "check") for row in rows)
    pending = sum(row["status"] == "pending" for row in rows)
    return {"good": good, "bad": len(rows) - good - pending, "pending": pending}


def index_html(directory: Path, rows: list[dict]) -> str:
    """One table row per case: verdict colour, thumbnail, link to its report, status and error."""
    tally = counts(rows)
    refresh = '<meta http-equiv="refresh" content="10">' if tally["pending"] else ""
    lines = [
        "<!DOCTYPE html>", f'<html><head><meta charset="utf-8">{refresh}<title>ctmr-batch</title>',
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
        ".tag{color:white;padding:2px 6px;border-radius:3px}</style></head><body>",
        f"<h1>CT-MR registration cohort</h1><p>{len(rows)} cases: {tally['good']} registered (ok/check), "
        f"{tally['bad']} not, {tally['pending']} pending.</p>",
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
