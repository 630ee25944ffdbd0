"""`ctmr-batch` on a real LocalCluster of 2 worker processes, with the bundled MR moved by known poses.

One cohort run is shared by the first tests: two good cases (p95 < 5 mm against pose @ reference over the CT
object), a missing file and an unreadable image (recorded with their error while the others finish, exit 1),
and the worker of case `a` killed mid-case (Dask retries it once). Reruns then recompute nothing, a changed
manifest option recomputes only its case, --force recomputes, a case over its memory limit is stopped, and
the same command runs on the workers of an existing scheduler.
"""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from conftest import move_header, p95_distance, rigid_pose

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk

pytestmark = pytest.mark.slow
POSES = {"a": ((10.0, -5.0, 15.0), (12.0, -8.0, 6.0)), "b": ((-20.0, 10.0, -8.0), (-15.0, 20.0, 10.0))}
HEADER = "case,fixed,moving,stages\n"
KILL_AFTER_SECONDS = 3.0


def command(manifest, output, *options, where=("--workers", "2")) -> list[str]:
    return [sys.executable, "-m", "CTMRRegistrationLib", "batch", str(manifest), "--output-dir", str(output),
            *where, "--threads-per-case", "1", "--dashboard-address", ":0", *options]


def batch(manifest, output, *options, where=("--workers", "2")) -> subprocess.CompletedProcess:
    return subprocess.run(command(manifest, output, *options, where=where), capture_output=True, text=True,
                          timeout=900)


def summary(output) -> dict[str, dict]:
    with open(output / "summary.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def modification_times(output) -> dict[str, int]:
    return {str(path.relative_to(output)): path.stat().st_mtime_ns for path in output.rglob("*")
            if path.is_file() and path.parent != output}


def bad_rows() -> str:
    return f"missing,{resources.sample_ct_path()},nope.nii.gz,\nunreadable,{resources.sample_ct_path()},bad.nrrd,\n"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, sample_mr):
    folder = tmp_path_factory.mktemp("cohort")
    centre = np.asarray(sample_mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in sample_mr.GetSize()]))
    poses = {case: rigid_pose(*pose, centre=centre) for case, pose in POSES.items()}
    for case, pose in poses.items():
        sitk.WriteImage(move_header(sample_mr, pose), str(folder / f"mr_{case}.nii.gz"))
    (folder / "bad.nrrd").write_bytes(b"NRRD0004\nthis is broken\n")
    good = "".join(f"{case},{resources.sample_ct_path()},mr_{case}.nii.gz,\n" for case in poses)
    (folder / "cases.csv").write_text(HEADER + good + bad_rows())
    return folder, poses


def kill_worker_of(batch_process: subprocess.Popen, case_directory) -> int | None:
    """SIGKILL the Dask worker running the case writing to `case_directory`, a few seconds into the case."""
    marker = str(case_directory / "transform.h5")
    while batch_process.poll() is None:
        try:
            for process in psutil.Process(batch_process.pid).children(recursive=True):
                if marker in process.cmdline() and time.time() - process.create_time() > KILL_AFTER_SECONDS:
                    worker = process.parent()
                    worker.send_signal(signal.SIGKILL)
                    return worker.pid
        except psutil.Error:
            pass
        time.sleep(0.2)
    return None


@pytest.fixture(scope="module")
def first_run(cohort):
    folder, _ = cohort
    output = folder / "out"
    process = subprocess.Popen(command(folder / "cases.csv", output), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    killed = kill_worker_of(process, output / "a")
    _, err = process.communicate(timeout=900)
    return process.returncode, err, output, killed


def test_good_cases_recover_their_pose(cohort, first_run, reference_ct_to_mr, ct_object_points):
    _, poses = cohort
    _, _, output, _ = first_run
    rows = summary(output)
    for case, pose in poses.items():
        assert rows[case]["status"] == "registered" and rows[case]["verdict"] in ("ok", "check")
        matrix = matrix_from_sitk(sitk.ReadTransform(str(output / case / "transform.h5")))
        error = p95_distance(matrix, pose @ reference_ct_to_mr, ct_object_points)
        assert error < 5.0 and error < float(rows[case]["error_bound_mm"]) < 10.0
        assert float(rows[case]["seconds"]) > 0 and int(rows[case]["peak_memory_mb"]) > 100


def test_bad_cases_are_recorded_while_the_others_finish(first_run):
    code, err, output, _ = first_run
    assert code == 1
    rows = summary(output)
    assert list(rows) == ["a", "b", "missing", "unreadable"]
    assert rows["missing"]["status"] == "error" and "not found" in rows["missing"]["error"]
    assert "nope.nii.gz" in rows["missing"]["error"]
    assert rows["unreadable"]["status"] == "error" and "cannot read volume bad.nrrd" in rows["unreadable"]["error"]
    index = (output / "index.html").read_text()
    assert index.count("<tr><td>") == 4 and "<td>pending</td>" not in index
    assert 'href="a/report/report.html"' in index and 'src="b/report/after_blend.png"' in index
    assert "Dask dashboard at http" in err and "4/4 done, 2 failed" in err


def test_killed_worker_case_is_retried(first_run):
    _, _, output, killed = first_run
    assert killed is not None
    row = summary(output)["a"]
    assert row["attempts"] == "2" and row["status"] == "registered"


def test_rerun_recomputes_nothing_and_a_changed_option_only_its_case(cohort, first_run):
    folder, _ = cohort
    _, _, output, _ = first_run
    before = modification_times(output)
    rerun = batch(folder / "cases.csv", output)
    assert rerun.returncode == 1 and "4 already done, 0 to compute" in rerun.stderr
    assert modification_times(output) == before
    assert {row["reused"] for row in summary(output).values()} == {"yes"}

    manifest = folder / "cases.csv"
    manifest.write_text(manifest.read_text().replace("bad.nrrd,\n", "bad.nrrd,rigid\n"))
    changed = batch(manifest, output)
    assert changed.returncode == 1 and "3 already done, 1 to compute" in changed.stderr
    after = modification_times(output)
    assert {name for name in before if after.get(name) != before[name]} == {
        name for name in before if name.startswith("unreadable")}
    rows = summary(output)
    assert rows["unreadable"]["reused"] == "no" and rows["a"]["reused"] == "yes"


def test_force_recomputes(tmp_path, cohort, first_run):
    folder, _ = cohort
    output = tmp_path / "out"
    shutil.copytree(first_run[2] / "missing", output / "missing")
    manifest = folder / "missing_only.csv"
    manifest.write_text(HEADER + bad_rows().splitlines(keepends=True)[0])
    record = output / "missing" / "case.json"
    written = record.stat().st_mtime_ns
    rerun = batch(manifest, output)
    assert rerun.returncode == 1 and "1 already done, 0 to compute" in rerun.stderr
    assert record.stat().st_mtime_ns == written
    forced = batch(manifest, output, "--force")
    assert forced.returncode == 1 and "0 already done, 1 to compute" in forced.stderr
    assert record.stat().st_mtime_ns > written
    row = summary(output)["missing"]
    assert row["reused"] == "no" and row["attempts"] == "1" and "nope.nii.gz" in row["error"]


def test_case_over_its_memory_limit_is_stopped(tmp_path, cohort):
    folder, _ = cohort
    manifest = folder / "one.csv"
    manifest.write_text(HEADER + f"a,{resources.sample_ct_path()},mr_a.nii.gz,\n")
    completed = batch(manifest, tmp_path, "--memory-per-worker", "350MB")
    row = summary(tmp_path)["a"]
    assert completed.returncode == 1 and row["status"] == "crashed"
    assert row["error"].startswith("out of memory") and int(row["peak_memory_mb"]) > 300
    assert os.path.getsize(tmp_path / "a" / "log.txt") > 0


def test_runs_on_an_existing_scheduler(tmp_path, cohort):
    from distributed import LocalCluster

    folder, _ = cohort
    manifest = folder / "missing_on_scheduler.csv"
    manifest.write_text(HEADER + bad_rows().splitlines(keepends=True)[0])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        completed = batch(manifest, tmp_path, where=("--scheduler", cluster.scheduler_address))
    assert completed.returncode == 1 and "1/1 done, 1 failed" in completed.stderr
    row = summary(tmp_path)["missing"]
    assert row["status"] == "error" and "nope.nii.gz" in row["error"]
