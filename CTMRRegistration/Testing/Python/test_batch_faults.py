"""`ctmr-batch` refuses what would fail later before any work (exit 2, one line), locks its cohort folder,
limits a case's wall-clock time, counts `--no-qa` cases as registered, stops running cases it is asked to stop,
and turns an unexpected error into one line. No Dask cluster here (seconds); test_batch_signals.py runs one."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from CTMRRegistrationLib.batch import case as case_module
from CTMRRegistrationLib.batch import cli
from CTMRRegistrationLib.batch.case import CaseJob, case_record, run_case, terminate_cases
from CTMRRegistrationLib.batch.cli import EXIT_INPUT, main
from CTMRRegistrationLib.batch.summary import LOCK_NAME, cohort_lock, counts, summary_row
from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.elastix.parameters import format_parameter_map, read_parameter_file

CT, MR = str(resources.sample_ct_path()), str(resources.sample_mr_path())


def manifest(tmp_path, rows: str, header: str = "case,fixed,moving,stages") -> str:
    path = tmp_path / "cases.csv"
    path.write_text(header + "\n" + rows)
    return str(path)


def refused(capsys, *arguments) -> str:
    """The one line of a command refused with exit 2."""
    assert main([*map(str, arguments)]) == EXIT_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctmr-batch: error: "), lines
    return lines[0].removeprefix("ctmr-batch: error: ")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where, expected", [
    ("file", "--output-dir {} is not a folder"),
    ("file/cohort", "--output-dir {} lies under {}, which is not a folder"),
])
def test_output_folder_that_is_a_file_is_refused(tmp_path, capsys, where, expected):
    (tmp_path / "file").write_text("x")
    output = tmp_path / where
    message = refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", output)
    assert message == expected.format(output, tmp_path / "file")


@pytest.mark.parametrize("value", ["4XB", "", "0", "12", "-1GB"])
def test_malformed_memory_is_refused_with_nothing_written(tmp_path, capsys, value):
    output = tmp_path / "out"
    message = refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", output,
                      f"--memory-per-worker={value}")
    assert message.startswith(f"--memory-per-worker {value!r}: give a size of at least 100MB")
    assert not output.exists()


@pytest.mark.parametrize("option, value", [("--case-timeout", "-1"), ("--case-timeout", "nan"),
                                           ("--scheduler-timeout", "0")])
def test_negative_time_limits_are_refused(tmp_path, capsys, option, value):
    message = refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", tmp_path / "out", option, value)
    assert message.startswith(f"{option} {value}: give seconds")


def test_unreachable_scheduler_is_refused_within_its_timeout(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    message = refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", tmp_path / "out",
                      "--scheduler", address, "--scheduler-timeout", "1")
    assert time.monotonic() - started < 10
    assert message.startswith(f"cannot reach the Dask scheduler at {address}: ")
    assert not (tmp_path / "out").exists()
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", tmp_path / "out",
                   "--scheduler", "no-port-here").startswith("cannot reach the Dask scheduler at no-port-here: ")


@pytest.mark.parametrize("case, name", [("summary.csv", "summary.csv"), ("INDEX.html", "index.html"),
                                        ("summary.csv.partial", "summary.csv.partial")])
def test_case_id_that_is_a_file_of_the_cohort_is_refused(tmp_path, capsys, case, name):
    message = refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n{case},{CT},{MR},\n"), "--output-dir",
                      tmp_path / "out")
    assert message == (f"cases.csv line 3: case id {case!r} is the name of the file {name} that ctmr-batch writes "
                       "in the output folder; rename the case")


def test_inputs_that_are_no_files_are_refused_with_their_line(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    output = tmp_path / "out"
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\nb,{CT},loop,\n"), "--output-dir", output) == (
        f"cases.csv line 3: moving {tmp_path / 'loop'} is not a file or a DICOM folder (a symbolic-link loop)")
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},pipe\n", "case,fixed,moving,fixed_landmarks"),
                   "--output-dir", output) == f"cases.csv line 2: fixed_landmarks {tmp_path / 'pipe'} is not a file " \
                                              "(a named pipe)"
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},folder\n", "case,fixed,moving,moving_mask"),
                   "--output-dir", output) == f"cases.csv line 2: moving_mask {tmp_path / 'folder'} is not a file " \
                                              "(a folder)"
    assert refused(capsys, tmp_path / "loop", "--output-dir", output) == (
        f"manifest {tmp_path / 'loop'} is not a regular file (a symbolic-link loop)")
    assert not output.exists()


def test_missing_input_is_left_to_its_case(tmp_path):
    [case] = cli.read_manifest(manifest(tmp_path, f"a,{CT},absent.nii.gz,\n"))
    assert case.paths["moving"] == tmp_path / "absent.nii.gz"


def preset(tmp_path, name: str, transform: str) -> str:
    parameters = read_parameter_file(resources.parameter_file("Rigid")) | {"Transform": [transform]}
    (tmp_path / name).write_text(format_parameter_map(parameters))
    return str(tmp_path / name)


def test_stages_and_presets_are_checked_per_case_before_a_cluster(tmp_path, capsys, monkeypatch):
    def no_cluster(*_, **__):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(cli, "open_client", no_cluster)
    output = tmp_path / "out"
    rows = f'a,{CT},{MR},"rigid,affine"\nb,{CT},{MR},"affine,rigid"\n'
    assert refused(capsys, manifest(tmp_path, rows), "--output-dir", output) == (
        "cases.csv line 3: stages must be one or more of rigid, affine, deformable, in that order (e.g. rigid,affine) "
        "(got 'affine,rigid')")
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", output, "--stages", "rigid,warp"
                   ).startswith("stages must be one or more of rigid, affine, deformable")
    affine = preset(tmp_path, "affine.txt", "AffineTransform")
    rows = f'a,{CT},{MR},"rigid,affine"\nb,{CT},{MR},rigid\n'
    assert refused(capsys, manifest(tmp_path, rows), "--output-dir", output, "--preset", affine) == (
        "cases.csv line 3: a preset is given for the affine stage, which is not among the stages run (rigid)")
    assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", output, "--preset", CT
                   ).endswith("is not an elastix parameter file (not text)")
    assert not output.exists()


def test_second_runner_on_a_cohort_folder_exits_2_with_the_holders_pid(tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    with cohort_lock(output):
        assert refused(capsys, manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", output) == (
            f"cohort folder {output} is in use by ctmr-batch (pid {os.getpid()}); wait for it to finish or stop it")
        assert (output / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (output / LOCK_NAME).exists()
    assert not (output / "summary.csv").exists()


def test_lock_of_a_killed_runner_is_free(tmp_path):
    code = ("import os, signal, sys; from pathlib import Path\n"
            "from CTMRRegistrationLib.batch.summary import cohort_lock\n"
            "with cohort_lock(Path(sys.argv[1])):\n    os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / LOCK_NAME).exists()
    with cohort_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_cases_without_qa_count_as_registered():
    registered = {"case": "a", "status": "registered", "verdict": "", "error": ""}
    rows = [summary_row(registered, reused=False), summary_row(registered | {"case": "b", "verdict": "failed"}, False),
            {"case": "c", "status": "interrupted"}, {"case": "d", "status": "pending"}]
    assert counts(rows) == {"good": 1, "bad": 1, "pending": 2}
    progress = cli.Progress(2, stream=open(os.devnull, "w"))
    progress.update(registered)
    assert progress.failed == 0


def test_a_case_stopped_by_the_runner_is_interrupted():
    job = CaseJob(case="a", directory="/unused", arguments=(), threads=1, fingerprint="f")
    for exit_code, result in ((143, {"status": "interrupted", "error": "stopped by SIGTERM"}), (-15, None)):
        record = case_record(job, exit_code, result, log=case_module.Path("/nonexistent/log.txt"))
        assert record["status"] == "interrupted" and record["error"] == case_module.INTERRUPTED_ERROR


def test_case_over_its_wall_clock_limit_is_stopped_and_failed(tmp_path):
    job = CaseJob(case="slow", directory=str(tmp_path / "slow"), threads=1, fingerprint="f", timeout=0.5,
                  arguments=("--fixed", CT, "--moving", MR, "--no-qa", "--initialization", "none"))
    started = time.monotonic()
    record = run_case(job)
    assert time.monotonic() - started < 0.5 + case_module.TERMINATE_SECONDS + 3
    assert record["status"] == "failed" and record["error"] == "timed out after 0.5 s (--case-timeout)"
    assert case_module.read_record(tmp_path / "slow") == record
    assert not list(tmp_path.glob("slow/transform.h5*"))


def test_running_cases_are_found_and_stopped_by_their_folder(tmp_path):
    transform = str(tmp_path / "a" / "transform.h5")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", case_module.CASE_MODULE,
                                "--output-transform", transform])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", case_module.CASE_MODULE,
                              "--output-transform", str(tmp_path / "b" / "transform.h5")])
    try:
        deadline = time.monotonic() + 10
        while not case_module.case_processes([str(tmp_path / "a")]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert terminate_cases([str(tmp_path / "a")]) == 1
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for process in (sleeper, other):
            process.kill()
            process.wait()


def test_an_unexpected_error_is_one_line_with_a_hint_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    def broken(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "read_manifest", broken)
    arguments = [manifest(tmp_path, f"a,{CT},{MR},\n"), "--output-dir", str(tmp_path / "out")]
    assert main(arguments) == cli.EXIT_UNEXPECTED
    assert capsys.readouterr().err.strip().splitlines() == [
        "ctmr-batch: error: unexpected ZeroDivisionError: division by zero (rerun with --debug for the traceback)"]
    assert main([*arguments, "--debug"]) == cli.EXIT_UNEXPECTED
    assert "Traceback (most recent call last)" in capsys.readouterr().err
