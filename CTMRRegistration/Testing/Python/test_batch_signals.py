"""`ctmr-batch` stopped by a signal sent to its whole process group, as a terminal sends Ctrl-C or a hang-up:
one line, exit 128 + the signal's number, the running case recorded `interrupted` in its record and in the
summary alike, the others `pending`, no process left; a rerun then computes them (`--no-qa`: registered, exit 0).
Two bundled 2 mm cases with the fast options on a LocalCluster (about half a minute in all)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from CTMRRegistrationLib.core import resources

pytestmark = pytest.mark.slow
FAST = ["--initialization", "none", "--bias-correction", "off", "--no-qa"]


def start(tmp_path, workers: int) -> subprocess.Popen:
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case,fixed,moving\n" + "".join(
        f"{case},{resources.sample_ct_path()},{resources.sample_mr_path()}\n" for case in ("a", "b")))
    command = [sys.executable, "-m", "CTMRRegistrationLib", "batch", str(manifest), "--output-dir",
               str(tmp_path / "out"), "--workers", str(workers), "--dashboard-address", ":0", *FAST]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, signalled as a terminal does


def first_case_started(process: subprocess.Popen, output) -> tuple[str, list]:
    """The case whose ctmr-register child runs first, a second into it, and every process of the run then."""
    while process.poll() is None:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
            for child in descendants:
                for case in ("a", "b"):
                    if str(output / case / "transform.h5") in child.cmdline():
                        time.sleep(1.0)
                        return case, psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
        time.sleep(0.1)
    pytest.fail(f"ctmr-batch ended before a case started: {process.communicate()}")


def rows(output) -> dict[str, dict]:
    with open(output / "summary.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def left_running(processes: list) -> list:
    return [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_stops_the_cohort_consistently_and_a_rerun_finishes_it(tmp_path):
    output = tmp_path / "out"
    process = start(tmp_path, workers=1)
    running, processes = first_case_started(process, output)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "ctmr-batch: stopped by SIGINT: 0 cases done, 2 not run"
    other = "b" if running == "a" else "a"
    table = rows(output)
    assert table[running]["status"] == "interrupted" and table[other]["status"] == "pending"
    record = json.loads((output / running / "case.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == table[running]["error"]
    assert not (output / other / "case.json").exists()
    assert not (output / ".ctmr-batch.lock").exists()
    assert 'http-equiv="refresh"' not in (output / "index.html").read_text()
    time.sleep(0.5)
    assert left_running(processes) == []

    rerun = start(tmp_path, workers=2)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "0 already done, 2 to compute" in err and "2/2 done, 0 failed" in err
    assert {(row["status"], row["verdict"]) for row in rows(output).values()} == {("registered", "")}


def test_hang_up_stops_the_cohort_with_one_line(tmp_path):
    process = start(tmp_path, workers=2)
    _, processes = first_case_started(process, tmp_path / "out")
    os.killpg(process.pid, signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 129, err
    assert "Traceback" not in err and "died unexpectedly" not in err
    assert err.strip().splitlines()[-1] == "ctmr-batch: stopped by SIGHUP: 0 cases done, 2 not run"
    assert {row["status"] for row in rows(tmp_path / "out").values()} <= {"interrupted", "pending"}
    time.sleep(0.5)
    assert left_running(processes) == []
