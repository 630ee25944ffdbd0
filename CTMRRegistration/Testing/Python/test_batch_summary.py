"""summary.csv and index.html of `ctmr-batch`: one row per case, pending cases shown, the page reloading
itself until none is left, metrics and errors carried from the case records."""

import csv

from CTMRRegistrationLib.batch.summary import counts, pending_row, summary_row, write_summary

REGISTERED = {"case": "p1", "status": "registered", "verdict": "check", "seconds": 41.5, "peak_memory_mb": 672,
              "attempts": 1, "error": "", "reasons": ["edges disagree", "restarts drift"],
              "metrics": {"foreground_overlap": 0.95, "tre_mean_mm": 1.8, "dice_mean": 0.91}}
REFUSED = {"case": "p2", "status": "error", "verdict": "", "seconds": 12.0, "peak_memory_mb": 490, "attempts": 1,
           "error": "volume file not found: /data/<p2>.nii.gz", "reasons": [], "metrics": {}}


def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_pending_cases_are_listed_and_the_page_reloads(tmp_path):
    rows = [summary_row(REGISTERED, reused=False), pending_row("p2")]
    write_summary(tmp_path, rows)
    table = read_rows(tmp_path / "summary.csv")
    assert [(row["case"], row["status"]) for row in table] == [("p1", "registered"), ("p2", "pending")]
    assert table[0]["reasons"] == "edges disagree; restarts drift" and table[0]["tre_mean_mm"] == "1.8"
    assert table[0]["dice_mean"] == "0.91" and table[0]["edge_alignment"] == "" and table[0]["reused"] == "no"
    page = (tmp_path / "index.html").read_text()
    assert 'http-equiv="refresh"' in page and "<td>pending</td>" in page
    assert counts(rows) == {"good": 1, "bad": 0, "pending": 1}


def test_finished_cohort_page_is_static_and_escapes_errors(tmp_path):
    rows = [summary_row(REGISTERED, reused=True), summary_row(REFUSED, reused=False)]
    write_summary(tmp_path, rows)
    page = (tmp_path / "index.html").read_text()
    assert "refresh" not in page and "/data/&lt;p2&gt;.nii.gz" in page
    assert "href=" not in page  # no report on disk: no link, no thumbnail
    assert read_rows(tmp_path / "summary.csv")[1]["error"] == "volume file not found: /data/<p2>.nii.gz"
    assert counts(rows) == {"good": 1, "bad": 1, "pending": 0}
    assert not list(tmp_path.glob("*.partial"))
