"""One case of `ctmr-batch`, run on a Dask worker as a `ctmr-register` child process.

A child process keeps a crash, an elastix failure or an out-of-memory kill from taking the worker down, and
lets the worker measure the case's peak memory (resident set of the child and its elastix processes). The
case's folder holds transform.h5, result.json (the `--json` output), report/, log.txt and, written last,
case.json: the record that marks the case finished.

The child runs in a session of its own, so a Ctrl-C in the terminal reaches only `ctmr-batch`, which then stops
the running cases itself (SIGTERM: ctmr-register cleans up and reports `interrupted`). A case that runs longer
than its wall-clock limit is stopped the same way and recorded as failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RECORD_NAME = "case.json"
TRANSFORM_NAME = "transform.h5"
RESULT_NAME = "result.json"
LOG_NAME = "log.txt"
REPORT_DIRECTORY = "report"
ATTEMPTS_NAME = "attempts"
FINAL_STATUSES = ("registered", "error", "mirrored")  # what a rerun keeps; failed, crashed, interrupted are redone
INTERRUPTED = "interrupted"  # a case stopped because ctmr-batch was stopped (its record and its summary row)
INTERRUPTED_ERROR = "ctmr-batch was stopped before this case finished"
POLL_SECONDS = 0.2
TERMINATE_SECONDS = 5.0  # how long a case asked to stop (SIGTERM) has to clean up before its processes are killed
PARENT_VARIABLE = "CTMR_BATCH_WORKER_PID"
CASE_MODULE = "CTMRRegistrationLib.batch.case"
_signalled: set[int] = set()  # case processes already asked to stop by terminate_cases (in this process)


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs to run one case: `ctmr-register` options without outputs, threads, memory cap."""

    case: str
    directory: str
    arguments: tuple[str, ...]
    threads: int
    fingerprint: str
    timeout: float | None = None  # wall-clock limit of the case in seconds; None: none


def run_case(job: CaseJob) -> dict:
    """Run one case in a child process and write its record; never raises for a failing case."""
    directory = Path(job.directory)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = _count_attempt(directory)
    _remove_outputs(directory)
    command = [sys.executable, "-m", CASE_MODULE, *job.arguments,
               "--output-transform", str(directory / TRANSFORM_NAME), "--json", "--threads", str(job.threads)]
    if [token for token in job.arguments if token in ("--qa", "--no-qa")][-1:] != ["--no-qa"]:  # the last one wins
        command += ["--report-folder", str(directory / REPORT_DIRECTORY)]
    environment = os.environ | {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(job.threads),
                                PARENT_VARIABLE: str(os.getpid())}
    limit = worker_memory_limit()
    start = time.monotonic()
    with open(directory / RESULT_NAME, "wb") as stdout, open(directory / LOG_NAME, "wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        child = subprocess.Popen(command, stdout=stdout, stderr=log, env=environment, start_new_session=True)
        exit_code, peak_bytes, stopped = _wait_measuring(child, limit, job.timeout)
    record = case_record(job, exit_code, _read_result(directory / RESULT_NAME), directory / LOG_NAME)
    record |= {"seconds": round(time.monotonic() - start, 2), "peak_memory_mb": round(peak_bytes / 2**20),
               "attempts": attempts}
    if stopped == "memory":
        record |= {"status": "crashed", "error": f"out of memory: the case used {peak_bytes / 2**20:.0f} MB, "
                   f"more than the {limit / 2**20:.0f} MB allowed per worker"}
    elif stopped == "timeout":
        record |= {"status": "failed", "error": f"timed out after {job.timeout:g} s (--case-timeout)"}
    existing = read_record(directory)
    if existing is not None:  # ctmr-batch, stopping, recorded the case meanwhile: its record and summary stand
        return existing
    write_record(directory, record)
    return record


def case_record(job: CaseJob, exit_code: int, result: dict | None, log: Path) -> dict:
    """The summary of one finished child: status, verdict, QA reasons, main metrics, error."""
    record = {"case": job.case, "fingerprint": job.fingerprint, "exit_code": exit_code, "verdict": "",
              "reasons": [], "metrics": {}, "error": ""}
    if result is None and exit_code == 2:  # ctmr-register refused its options before reading anything
        return record | {"status": "error", "error": _last_line(log) or "ctmr-register refused its options"}
    if result is None and exit_code in (-signal.SIGTERM, 128 + signal.SIGTERM):  # stopped by ctmr-batch early on
        return record | {"status": INTERRUPTED, "error": INTERRUPTED_ERROR}
    if result is None:
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        return record | {"status": "crashed", "error": f"ctmr-register {how}: {_last_line(log)}".rstrip(": ")}
    status = {"ok": "registered", "mirrored": "mirrored", INTERRUPTED: INTERRUPTED}.get(result.get("status"), "failed")
    if result.get("status") == "error" and exit_code == 2:
        status = "error"
    qa = result.get("qa") or {}
    record |= {"status": status, "verdict": result.get("verdict") or "", "reasons": qa.get("reasons", []),
               "metrics": main_metrics(result), "error": result.get("error", "")}
    if status == "mirrored":
        record["error"] = "; ".join(result.get("warnings", [])) or "the moving image looks mirrored"
    if status == INTERRUPTED:
        record["error"] = INTERRUPTED_ERROR
    return record


def interrupted_record(job: CaseJob) -> dict:
    """Record (and write) a case that ctmr-batch stopped and whose worker did not record it in time."""
    directory = Path(job.directory)
    attempts = directory / ATTEMPTS_NAME
    record = {"case": job.case, "fingerprint": job.fingerprint, "status": INTERRUPTED, "exit_code": None,
              "verdict": "", "reasons": [], "metrics": {}, "error": INTERRUPTED_ERROR,
              "attempts": int(attempts.read_text()) if attempts.is_file() else 0}
    write_record(directory, record)
    return record


def started(job: CaseJob) -> bool:
    """Whether a worker has started this case since ctmr-batch reset it (run_case counts an attempt first)."""
    return (Path(job.directory) / ATTEMPTS_NAME).is_file()


def case_processes(directories: list[str]) -> list:
    """The `ctmr-register` processes on this machine that run a case writing into one of `directories`."""
    import psutil

    transforms = {str(Path(directory) / TRANSFORM_NAME) for directory in directories}
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if CASE_MODULE in command and transforms & set(command):
            found.append(process)
    return found


def terminate_cases(directories: list[str], kill: bool = False) -> int:
    """Ask the cases of `directories` running on this machine to stop (SIGTERM, once each: ctmr-register
    removes its partial outputs and elastix), or with `kill` end their process trees (SIGKILL). Runs in
    ctmr-batch for a LocalCluster, on every worker (Client.run) for a scheduler. Returns how many it found."""
    import psutil

    processes = case_processes(directories)
    for process in processes:
        if kill:
            _kill_tree(process)
        elif process.pid not in _signalled:
            _signalled.add(process.pid)
            try:
                process.terminate()
            except psutil.Error:
                pass
    return len(processes)


def crashed_record(job: CaseJob, error: BaseException) -> dict:
    """Record (and write) a case whose task did not return: its worker died twice, or the task failed."""
    from distributed import KilledWorker

    directory = Path(job.directory)
    if isinstance(error, KilledWorker):
        message = "its worker died twice while running it (killed, or out of memory)"
    else:
        message = f"the task failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    attempts = directory / ATTEMPTS_NAME
    record = {"case": job.case, "fingerprint": job.fingerprint, "status": "crashed", "exit_code": None,
              "verdict": "", "reasons": [], "metrics": {}, "error": message,
              "attempts": int(attempts.read_text()) if attempts.is_file() else 0}
    directory.mkdir(parents=True, exist_ok=True)
    write_record(directory, record)
    return record


def worker_memory_limit() -> int | None:
    """The memory limit (bytes) of the Dask worker running this task, None outside a worker or unlimited."""
    try:
        from distributed import get_worker

        return get_worker().memory_manager.memory_limit or None
    except (ImportError, ValueError):
        return None


def main_metrics(result: dict) -> dict:
    """The figures of a result that a cohort table shows: time per stage aside, QA and ground-truth errors."""
    qa = (result.get("qa") or {}).get("metrics", {})
    metrics = {key: qa[key] for key in ("error_bound_mm", "foreground_overlap", "edge_alignment", "restart_spread_mm")
               if qa.get(key) is not None}
    targets = qa.get("targets", {}).get("after")
    if targets:
        metrics |= {"tre_mean_mm": targets["tre_mean_mm"], "tre_max_mm": targets["tre_max_mm"]}
    segments = qa.get("segmentations", {}).get("after", {})
    dice = [values["dice"] for values in segments.values() if values.get("dice") is not None]
    if dice:
        metrics["dice_mean"] = round(sum(dice) / len(dice), 4)
    return metrics


def write_record(directory: Path, record: dict) -> None:
    """Write case.json atomically: present means the case finished, in whatever state."""
    partial = directory / (RECORD_NAME + ".partial")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, directory / RECORD_NAME)


def read_record(directory: Path) -> dict | None:
    """The record of a finished case, None when absent or unreadable."""
    try:
        return json.loads((Path(directory) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None


def reset_attempts(directory: Path) -> None:
    """Forget earlier attempts and the old record: the case is about to be computed afresh."""
    for name in (ATTEMPTS_NAME, RECORD_NAME):
        (Path(directory) / name).unlink(missing_ok=True)


def _count_attempt(directory: Path) -> int:
    path = directory / ATTEMPTS_NAME
    attempts = int(path.read_text()) + 1 if path.is_file() else 1
    path.write_text(str(attempts))
    return attempts


def _remove_outputs(directory: Path) -> None:
    for name in (RECORD_NAME, TRANSFORM_NAME, RESULT_NAME, LOG_NAME):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / REPORT_DIRECTORY, ignore_errors=True)


def _wait_measuring(child: subprocess.Popen, limit: int | None, timeout: float | None = None
                    ) -> tuple[int, int, str | None]:
    """Wait for `child`, sampling its process tree's resident memory; kill the tree above `limit` bytes, and
    stop it after `timeout` seconds (SIGTERM, then the tree killed TERMINATE_SECONDS later). Returns the exit
    code (negative: killed by that signal), the peak bytes and why it was stopped: "memory", "timeout" or None."""
    import psutil

    process, peak, stopped = psutil.Process(child.pid), 0, None
    start, kill_at = time.monotonic(), None
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, max(peak, usage.ru_maxrss * 1024), stopped
        peak = max(peak, _tree_resident_bytes(process))
        now = time.monotonic()
        if limit and peak > limit and stopped != "memory":
            stopped = "memory"
            _kill_tree(process)
        elif timeout and now - start > timeout and stopped is None:
            stopped, kill_at = "timeout", now + TERMINATE_SECONDS
            child.terminate()
        elif kill_at is not None and now > kill_at:
            kill_at = None
            _kill_tree(process)
        time.sleep(POLL_SECONDS)


def _tree_resident_bytes(process) -> int:
    import psutil

    total = 0
    try:
        for member in [process, *process.children(recursive=True)]:
            total += member.memory_info().rss
    except psutil.Error:
        pass
    return total


def _kill_tree(process) -> None:
    import psutil

    try:
        members = [*process.children(recursive=True), process]
    except psutil.Error:
        members = [process]
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            pass


def _read_result(path: Path) -> dict | None:
    try:
        lines = path.read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if len(lines) > 1 else ""


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the worker that started it dies (no orphaned cases); take the
    signals that ctmr-batch blocks in its LocalCluster's workers (cli.open_client) as ctmr-register expects."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if str(os.getppid()) != os.environ.get(PARENT_VARIABLE, str(os.getppid())):
            raise SystemExit("ctmr-batch: the worker that started this case is gone")


if __name__ == "__main__":
    _die_with_parent()
    from ..apps.register_cli import main

    raise SystemExit(main())
