"""One case of `ctmr-batch`, run on a Dask worker as a `ctmr-register` child process.

A child process keeps a crash, an elastix failure or an out-of-memory kill from taking the worker down, and
lets the worker measure the case's peak memory (resident set of the child and its elastix processes). The
case's folder holds transform.h5, result.json (the `--json` output), report/, log.txt and, written last,
case.json: the record that marks the case finished.
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
FINAL_STATUSES = ("registered", "error", "mirrored")  # what a rerun keeps; failed and crashed cases are redone
POLL_SECONDS = 0.2
PARENT_VARIABLE = "CTMR_BATCH_WORKER_PID"


@dataclass(frozen=True)
class CaseJob:
    """What a worker needs to run one case: `ctmr-register` options without outputs, threads, memory cap."""

    case: str
    directory: str
    arguments: tuple[str, ...]
    threads: int
    fingerprint: str


def run_case(job: CaseJob) -> dict:
    """Run one case in a child process and write its record; never raises for a failing case."""
    directory = Path(job.directory)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = _count_attempt(directory)
    _remove_outputs(directory)
    command = [sys.executable, "-m", "CTMRRegistrationLib.batch.case", *job.arguments,
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
        child = subprocess.Popen(command, stdout=stdout, stderr=log, env=environment)
        exit_code, peak_bytes, over_limit = _wait_measuring(child, limit)
    record = case_record(job, exit_code, _read_result(directory / RESULT_NAME), directory / LOG_NAME)
    record |= {"seconds": round(time.monotonic() - start, 2), "peak_memory_mb": round(peak_bytes / 2**20),
               "attempts": attempts}
    if over_limit:
        record |= {"status": "crashed", "error": f"out of memory: the case used {peak_bytes / 2**20:.0f} MB, "
                   f"more than the {limit / 2**20:.0f} MB allowed per worker"}
    write_record(directory, record)
    return record


def case_record(job: CaseJob, exit_code: int, result: dict | None, log: Path) -> dict:
    """The summary of one finished child: status, verdict, QA reasons, main metrics, error."""
    record = {"case": job.case, "fingerprint": job.fingerprint, "exit_code": exit_code, "verdict": "",
              "reasons": [], "metrics": {}, "error": ""}
    if result is None and exit_code == 2:  # ctmr-register refused its options before reading anything
        return record | {"status": "error", "error": _last_line(log) or "ctmr-register refused its options"}
    if result is None:
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit code {exit_code}"
        return record | {"status": "crashed", "error": f"ctmr-register {how}: {_last_line(log)}".rstrip(": ")}
    status = {"ok": "registered", "mirrored": "mirrored"}.get(result.get("status"), "failed")
    if result.get("status") == "error" and exit_code == 2:
        status = "error"
    qa = result.get("qa") or {}
    record |= {"status": status, "verdict": result.get("verdict") or "", "reasons": qa.get("reasons", []),
               "metrics": main_metrics(result), "error": result.get("error", "")}
    if status == "mirrored":
        record["error"] = "; ".join(result.get("warnings", [])) or "the moving image looks mirrored"
    return record


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
    metrics = {key: qa[key] for key in ("foreground_overlap", "edge_alignment", "restart_spread_mm") if key in qa}
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


def _wait_measuring(child: subprocess.Popen, limit: int | None) -> tuple[int, int, bool]:
    """Wait for `child`, sampling its process tree's resident memory; kill the tree above `limit` bytes.
    Returns the exit code (negative: killed by that signal), the peak bytes and whether the limit was hit."""
    import psutil

    process, peak, over_limit = psutil.Process(child.pid), 0, False
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, max(peak, usage.ru_maxrss * 1024), over_limit
        peak = max(peak, _tree_resident_bytes(process))
        if limit and peak > limit and not over_limit:
            over_limit = True
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
    """Ask Linux to kill this process when the worker that started it dies (no orphaned cases)."""
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
