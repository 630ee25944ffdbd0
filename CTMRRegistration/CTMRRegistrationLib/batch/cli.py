"""`ctmr-batch`: register a cohort listed in a CSV manifest on Dask distributed.

    ctmr-batch CASES.csv --output-dir DIR [--workers N | --scheduler ADDRESS] [--threads-per-case T]
               [--memory-per-worker 4GB] [--force] [any ctmr-register option ...]

Each case runs `ctmr-register` in a child process of a Dask worker (one case per worker at a time), writing
DIR/<case>/ (transform.h5, result.json, report/, log.txt, case.json). DIR/summary.csv and DIR/index.html
are rewritten as cases finish. A rerun skips the cases already registered, or refused for their input, whose
inputs and options are unchanged (fingerprint); --force redoes every case. A worker that dies in a case
(killed, out of memory) has that case retried once elsewhere, then recorded as crashed. The Dask client
(a LocalCluster of worker processes, or a running scheduler) and the progress lines on stderr are here too.

Exit status: 0 every case registered with verdict ok or check, 1 otherwise, 2 bad manifest or options, or
Dask missing (the `batch` extra: pip install "ctmr-registration[batch]").
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..apps import register_cli
from ..core.errors import InputError
from .case import FINAL_STATUSES, RESULT_NAME, TRANSFORM_NAME, CaseJob, read_record, reset_attempts
from .manifest import Case, case_fingerprint, read_manifest
from .summary import counts, pending_row, summary_row, write_summary

EXIT_NOT_ALL_GOOD, EXIT_INPUT = 1, 2
SET_PER_CASE = ("--fixed", "--moving", "--output-transform", "--report-folder", "--report", "--json", "--threads",
                "--demo", "--output-dir")
WRITES_ONE_PATH = ("--overlay", "--registered-region")  # besides every --output-* option
NEEDED_MODULES = {"dask": "Dask", "distributed": "Dask", "psutil": "psutil"}  # the `batch` extra
ALLOWED_WORKER_DEATHS = 1  # a case whose worker dies is retried once, then recorded as crashed
BAR_WIDTH = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctmr-batch", allow_abbrev=False,
        description="Register a CT/MR cohort listed in a CSV manifest, on Dask distributed.",
        epilog="Any other option is passed to ctmr-register for every case (a manifest column wins over it).")
    parser.add_argument("manifest", type=Path, help="CSV with columns case,fixed,moving and optional "
                        "fixed_landmarks, moving_landmarks, fixed_targets, moving_targets, fixed_seg, moving_seg, "
                        "fixed_mask, moving_mask, stages; paths relative to the CSV's folder")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="folder for the cases, summary.csv, index.html")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local Dask workers, one case each at a time "
                       "(default: CPU cores / threads per case)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--threads-per-case", type=int, default=1, metavar="T", help="threads of each case (default 1)")
    parser.add_argument("--memory-per-worker", default="auto", metavar="SIZE",
                        help="memory limit of each local worker, e.g. 4GB (default: RAM / workers); a case whose "
                        "processes exceed its worker's limit is stopped and recorded as out of memory")
    parser.add_argument("--dashboard-address", default=":8787", metavar="ADDRESS",
                        help="local Dask dashboard address (default :8787)")
    parser.add_argument("--force", action="store_true", help="recompute every case, even finished ones")
    return parser


def check_register_options(options: list[str]) -> None:
    """Refuse options ctmr-batch sets per case, and any that ctmr-register would not accept."""
    for token in options:
        name = token.split("=")[0]
        if name in SET_PER_CASE:
            hint = " (use --threads-per-case)" if name == "--threads" else ""
            raise InputError(f"{name} is set per case by ctmr-batch and cannot be passed through{hint}")
        if name.startswith("--output") or name in WRITES_ONE_PATH:
            raise InputError(f"{name} would write every case's output to one path: ctmr-batch writes the transform, "
                             "result and report of each case into its own folder")
    parser = register_cli.build_parser()

    def refuse(message: str):
        raise InputError(f"ctmr-register option: {message}")

    parser.error = refuse
    parser.parse_args(["--fixed", "f", "--moving", "m", "--output-transform", "t.h5", *options])


def check_columns_known(manifest: Path, cases: list[Case]) -> None:
    """Refuse a row whose columns map to options this `ctmr-register` does not accept, naming its line."""
    for case in cases:
        try:
            check_register_options(case.optional_arguments())
        except InputError as error:
            raise InputError(f"{manifest.name} line {case.line}: {error}") from error


def _absolute(token: str) -> str:
    """A pass-through argument naming an existing file or folder, made absolute for the workers."""
    return str(Path(token).resolve()) if not token.startswith("-") and Path(token).exists() else token


def case_job(case: Case, output_dir: Path, options: list[str], threads: int) -> CaseJob:
    """The job of one case: pass-through options first, so that the manifest's columns override them."""
    inputs = dict(case.paths) | {f"option {i}": Path(token) for i, token in enumerate(options)
                                 if not token.startswith("-") and Path(token).exists()}
    fingerprint_options = [*options, *(f"{k}={v}" for k, v in sorted(case.values.items())), f"threads={threads}"]
    return CaseJob(case=case.case, directory=str(output_dir / case.case),
                   arguments=(*options, *case.register_arguments()), threads=threads,
                   fingerprint=case_fingerprint(fingerprint_options, inputs))


def reusable(job: CaseJob) -> dict | None:
    """The record of a finished case that a rerun keeps: final status, same fingerprint, outputs present."""
    record = read_record(Path(job.directory))
    if record is None or record.get("status") not in FINAL_STATUSES or record.get("fingerprint") != job.fingerprint:
        return None
    needed = (TRANSFORM_NAME, RESULT_NAME) if record["status"] == "registered" else (RESULT_NAME,)
    return record if all((Path(job.directory) / name).is_file() for name in needed) else None


def missing_dependency() -> str | None:
    """What of the `batch` extra cannot be imported (Dask, psutil), None when everything is there."""
    for module, name in NEEDED_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, options = parser.parse_known_args(argv)
    missing = missing_dependency()
    if missing:
        print(f'ctmr-batch: error: the cohort runner needs {missing}: pip install "ctmr-registration[batch]"',
              file=sys.stderr)
        return EXIT_INPUT
    try:
        if args.threads_per_case < 1 or (args.workers is not None and args.workers < 1):
            raise InputError("--workers and --threads-per-case must be at least 1")
        options = [_absolute(token) for token in options]
        check_register_options(options)
        cases = read_manifest(args.manifest)
        check_columns_known(args.manifest, cases)
    except InputError as error:
        print(f"ctmr-batch: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    args.output_dir.mkdir(parents=True, exist_ok=True)
    jobs = [case_job(case, args.output_dir.resolve(), options, args.threads_per_case) for case in cases]
    rows, to_run = [], []
    for job in jobs:
        record = None if args.force else reusable(job)
        rows.append(summary_row(record, reused=True) if record else pending_row(job.case))
        if record is None:
            reset_attempts(Path(job.directory))
            to_run.append(job)
    write_summary(args.output_dir, rows)
    print(f"ctmr-batch: {len(jobs)} cases, {len(jobs) - len(to_run)} already done, {len(to_run)} to compute",
          file=sys.stderr)
    if to_run:
        _compute(args, jobs, to_run, rows)
    tally = counts(rows)
    print(f"ctmr-batch: {tally['good']} registered (ok/check), {tally['bad']} not; see "
          f"{args.output_dir / 'summary.csv'}", file=sys.stderr)
    return 0 if tally["bad"] == 0 and tally["pending"] == 0 else EXIT_NOT_ALL_GOOD


def _compute(args, jobs: list[CaseJob], to_run: list[CaseJob], rows: list[dict]) -> None:
    position = {job.case: index for index, job in enumerate(jobs)}
    workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads_per_case)
    with open_client(args.scheduler, workers, args.memory_per_worker, args.dashboard_address) as client:
        print(f"ctmr-batch: Dask dashboard at {client.dashboard_link}", file=sys.stderr, flush=True)
        progress = Progress(len(to_run))
        for record in _records_as_finished(client, to_run):
            rows[position[record["case"]]] = summary_row(record, reused=False)
            write_summary(args.output_dir, rows)
            progress.update(record)


def _records_as_finished(client, jobs: list[CaseJob]):
    """Submit every job and yield records as they finish. A task that raises is retried once (retries=1);
    one whose worker dies is rescheduled once (the scheduler's allowed-failures), then raises KilledWorker."""
    from distributed import as_completed

    from .case import crashed_record, run_case

    futures = {client.submit(run_case, job, key=f"ctmr-{job.case}-{uuid.uuid4().hex[:8]}", retries=1): job
               for job in jobs}
    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as error:  # a killed worker or a bug: record it and go on with the others
            yield crashed_record(futures[future], error)
        finally:
            future.release()


@contextmanager
def open_client(scheduler: str | None, workers: int, memory_per_worker: str, dashboard_address: str) -> Iterator:
    """A distributed.Client on the scheduler at `scheduler`, else on a new LocalCluster of `workers` processes
    with one task thread each (a case's own threads are its child process's)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_WORKER_DEATHS}):
        if scheduler:
            with Client(scheduler) as client:
                yield client
            return
        with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_per_worker,
                           dashboard_address=dashboard_address) as cluster,
              Client(cluster) as client):
            yield client


class Progress:
    """Counts the cases computed in this run and estimates the time left from their mean duration."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr

    def update(self, record: dict) -> None:
        self.done += 1
        good = record.get("status") == "registered" and record.get("verdict") in ("ok", "check")
        self.failed += not good
        filled = BAR_WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        outcome = record.get("verdict") or record.get("status", "")
        print(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} done, {self.failed} failed, "
              f"ETA {_duration(left)} | {record.get('case')}: {outcome}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
