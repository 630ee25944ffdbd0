"""ctmr-web's cohort review store and data folders, without a browser: the cases to look at come first, two
reviewers' marks both survive, summary.csv gets the marks, and paths outside the data folders are refused."""

import csv
import json
import os

import pytest

from CTMRRegistrationLib.batch.summary import LOCK_NAME, cohort_lock, summary_row, write_summary
from CTMRRegistrationLib.core.errors import InputError
from CTMRRegistrationLib.web.cohort import Cohort, ReviewStore
from CTMRRegistrationLib.web.roots import DataRoots

RECORDS = [
    {"case": "a_ok", "status": "registered", "verdict": "ok", "metrics": {"error_bound_mm": 3.0}},
    {"case": "b_failed", "status": "registered", "verdict": "failed", "reasons": ["edges do not align"]},
    {"case": "c_check", "status": "registered", "verdict": "check", "metrics": {"error_bound_mm": 7.0}},
    {"case": "d_error", "status": "error", "error": "cannot read fixed"},
]


def make_cohort(folder, records=RECORDS):
    """A ctmr-batch output folder: case folders with case.json and log.txt, and summary.csv."""
    for record in records:
        case = folder / record["case"]
        case.mkdir(parents=True)
        (case / "case.json").write_text(json.dumps(record))
        (case / "log.txt").write_text("$ python -m CTMRRegistrationLib.batch.case "
                                      f"--fixed '/data/{record['case']} ct.nii' --moving /data/mr.nii --json\n")
    write_summary(folder, [summary_row(record, False) for record in records], running=False)
    return folder


def summary(folder):
    with open(folder / "summary.csv", newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_cases_to_look_at_come_first(tmp_path):
    cohort = Cohort(make_cohort(tmp_path))
    assert [row["case"] for row in cohort.rows()] == ["b_failed", "d_error", "c_check", "a_ok"]
    assert cohort.record("b_failed")["reasons"] == ["edges do not align"]
    assert [str(path) for path in cohort.inputs("a_ok")] == ["/data/a_ok ct.nii", "/data/mr.nii"]
    assert cohort.transform("a_ok") is None
    with pytest.raises(InputError):
        cohort.case_folder("../elsewhere")
    with pytest.raises(InputError, match="not a ctmr-batch output folder"):
        Cohort(tmp_path / "a_ok")


def test_two_reviewers_keep_each_others_marks(tmp_path):
    folder = make_cohort(tmp_path)
    first, second = ReviewStore(folder), ReviewStore(folder)  # two sessions, each with its own view of the file
    first.mark("b_failed", "reject", "  shifted by a vertebra ", "ann")
    second.mark("a_ok", "accept", "", "bob")
    first.mark("c_check", "accept", "fine at the edges", "ann")
    reviews = ReviewStore(folder).read()
    assert {case: (row["review"], row["reviewer"]) for case, row in reviews.items()} == {
        "a_ok": ("accept", "bob"), "b_failed": ("reject", "ann"), "c_check": ("accept", "ann")}
    assert reviews["b_failed"]["comment"] == "shifted by a vertebra"
    rows = summary(folder)
    assert (rows["b_failed"]["review"], rows["b_failed"]["review_comment"]) == ("reject", "shifted by a vertebra")
    assert rows["a_ok"]["reviewer"] == "bob" and rows["d_error"]["review"] == ""
    assert rows["b_failed"]["verdict"] == "failed"  # the runner's columns are kept
    assert sorted(path.name for path in folder.iterdir() if path.is_file()) == [
        ".ctmr-web-reviews.lock", "index.html", "reviews.csv", "summary.csv"]  # no partial file left
    assert Cohort(folder).rows()[0]["review"] == "reject"


def test_a_mark_while_ctmr_batch_runs_waits_in_reviews_csv(tmp_path):
    folder = make_cohort(tmp_path)
    with cohort_lock(folder):
        ReviewStore(folder).mark("a_ok", "accept", "", "ann")
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert summary(folder)["a_ok"].get("review") is None  # summary.csv untouched while the runner had it
    assert ReviewStore(folder).read()["a_ok"]["review"] == "accept"
    ReviewStore(folder).mark("b_failed", "reject", "", "ann")  # the next mark merges both
    assert (summary(folder)["a_ok"]["review"], summary(folder)["b_failed"]["review"]) == ("accept", "reject")
    with pytest.raises(InputError, match="accept, reject"):
        ReviewStore(folder).mark("a_ok", "maybe", "", "ann")


def test_paths_outside_the_data_folders_are_refused(tmp_path):
    inside, outside = tmp_path / "data", tmp_path / "other"
    inside.mkdir()
    outside.mkdir()
    (inside / "link").symlink_to(outside)
    roots = DataRoots([inside])
    assert roots.resolve("ct.nii") == inside / "ct.nii"
    assert roots.resolve(str(inside / "sub" / "mr.nii")) == inside / "sub" / "mr.nii"
    for escape in (str(outside / "ct.nii"), "../other/ct.nii", "link/ct.nii", "/etc/passwd"):
        with pytest.raises(InputError, match="outside the data folders"):
            roots.resolve(escape)
    assert roots.optional("  ", "moving") is None
    with pytest.raises(InputError, match="not a folder"):
        DataRoots([tmp_path / "missing"])
