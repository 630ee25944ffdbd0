"""`ctmr-batch`: register a cohort listed in a CSV manifest on Dask distributed.

    ctmr-batch CASES.csv --output-dir DIR [--workers N | --scheduler ADDRESS] [--threads-per-case T]
               [--memory-per-worker 4GB] [--case-timeout S] [--force] [any ctmr-register option ...]

Each case runs `ctmr-register` in a child process of a Dask worker (one case per worker at a time), writing
DIR/<case>/ (transform.h5, result.json, report/, log.txt, case.json). DIR/summary.csv and DIR/index.html
are rewritten as cases finish. A rerun skips the cases already registered, or refused for their input, whose
inputs and options are unchanged (fingerprint); --force redoes every case. A worker that dies in a case
(killed, out of memory) has that case retried once elsewhere, then recorded as crashed; a case over its
wall-clock limit (--case-timeout) is stopped and recorded as failed. The Dask client (a LocalCluster of worker
processes, or a running scheduler) and the progress lines on stderr are here too.

Everything is checked before any work: the options, the output folder, the manifest (columns, case ids, input
paths, each case's stages with the presets given), and that the scheduler answers. DIR is locked while a
runner computes into it (summary.cohort_lock). SIGINT, SIGTERM and SIGHUP stop the run: no case starts any more, the
running ones are stopped and recorded `interrupted`, the summary is written, and ctmr-batch exits 128 + the
signal's number with one line. An unexpected error is one line too (--debug adds its traceback).

Exit status: 0 every case registered with verdict ok or check (or without QA, --no-qa), 1 otherwise or an
unexpected error, 2 bad manifest, options or output folder, an unreachable scheduler, the folder in use by
another runner, or Dask missing (the `batch` extra: pip install "ctmr-registration[batch]"); 129, 130, 143
stopped by SIGHUP, SIGINT, SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..apps import register_cli
from ..apps.command import HANDLED, Interrupted, signals_interrupt
from ..core.errors import CTMRError, InputError
from .case import (
    FINAL_STATUSES,
    RESULT_NAME,
    TRANSFORM_NAME,
    CaseJob,
    interrupted_record,
    read_record,
    reset_attempts,
    started,
    terminate_cases,
)
from .manifest import Case, case_fingerprint, read_manifest
from .summary import (
    NOT_RUN,
    SUMMARY_NAME,
    cohort_lock,
    counts,
    is_good,
    pending_row,
    summary_row,
    write_summary,
)

EXIT_NOT_ALL_GOOD, EXIT_INPUT, EXIT_UNEXPECTED = 1, 2, 1
SET_PER_CASE = ("--fixed", "--moving", "--output-transform", "--report-folder", "--report", "--json", "--threads",
                "--demo", "--output-dir")
WRITES_ONE_PATH = ("--overlay", "--registered-region")  # besides every --output-* option
NEEDED_MODULES = {"dask": "Dask", "distributed": "Dask", "psutil": "psutil"}  # the `batch` extra
ALLOWED_WORKER_DEATHS = 1  # a case whose worker dies is retried once, then recorded as crashed
BAR_WIDTH = 20
CASE_TIMEOUT_SECONDS = 3600.0  # default wall-clock limit of one case
SCHEDULER_TIMEOUT_SECONDS = 10.0  # default time to reach a scheduler
MIN_WORKER_MEMORY = 100 * 10**6  # a Dask worker alone takes about this much
STOP_SECONDS = 20.0  # after a signal: how long stopped cases have to record themselves; then they are killed
STOP_POLL_SECONDS = 0.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctmr-batch", allow_abbrev=False,
        description="Register a CT/MR cohort listed in a CSV manifest, on Dask distributed.",
        epilog="Any other option is passed to ctmr-register for every case (a manifest column wins over it).")
    parser.add_argument("manifest", type=Path, help="CSV with columns case,fixed,moving and optional "
                        "fixed_landmarks, moving_landmarks, fixed_targets, moving_targets, fixed_seg, moving_seg, "
                        "fixed_mask, moving_mask, stages; paths relative to the CSV's folder")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="folder for the cases, summary.csv, index.html; locked while a runner computes into it")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local Dask workers, one case each at a time "
                       "(default: CPU cores / threads per case)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--scheduler-timeout", type=float, default=SCHEDULER_TIMEOUT_SECONDS, metavar="SECONDS",
                        help=f"how long to try reaching the scheduler (default {SCHEDULER_TIMEOUT_SECONDS:g})")
    parser.add_argument("--threads-per-case", type=int, default=1, metavar="T", help="threads of each case (default 1)")
    parser.add_argument("--memory-per-worker", default="auto", metavar="SIZE",
                        help="memory limit of each local worker, e.g. 4GB (default: RAM / workers); a case whose "
                        "processes exceed its worker's limit is stopped and recorded as out of memory")
    parser.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT_SECONDS, metavar="SECONDS",
                        help=f"wall-clock limit of one case (default {CASE_TIMEOUT_SECONDS:g}, 0: none); a case over "
                        "it is stopped and recorded as failed")
    parser.add_argument("--dashboard-address", default=":8787", metavar="ADDRESS",
                        help="local Dask dashboard address (default :8787)")
    parser.add_argument("--force", action="store_true", help="recompute every case, even finished ones")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    return parser


def check_register_options(options: list[str]) -> argparse.Namespace:
    """Refuse options ctmr-batch sets per case, and any that ctmr-register would not accept; the options as
    ctmr-register reads them."""
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
    return parser.parse_args(["--fixed", "f", "--moving", "m", "--output-transform", "t.h5", *options])


def check_columns_known(manifest: Path, cases: list[Case]) -> None:
    """Refuse a row whose columns map to options this `ctmr-register` does not accept, naming its line."""
    for case in cases:
        try:
            check_register_options(case.optional_arguments())
        except InputError as error:
            raise InputError(f"{manifest.name} line {case.line}: {error}") from error


def check_stages(manifest: Path, cases: list[Case], register: argparse.Namespace) -> None:
    """Check each case's stages (its `stages` cell, else --stages) with the presets passed through, as
    ctmr-register would before its work: InputError naming the line of a case whose own stages are refused."""
    from ..registration.pipeline import RegistrationOptions, stage_parameters

    default, presets = getattr(register, "stages", "rigid"), getattr(register, "preset", [])
    checked: dict[str, InputError | None] = {}
    for case in cases:
        text = case.values.get("stages", default)
        if text not in checked:
            stages = tuple(stage.strip() for stage in text.split(",") if stage.strip())
            try:
                stage_parameters(RegistrationOptions(stages=stages, presets=presets))
                checked[text] = None
            except InputError as error:
                checked[text] = error
        error = checked[text]
        if error is not None:
            where = f"{manifest.name} line {case.line}: " if "stages" in case.values else ""
            got = f" (got {text!r})" if str(error).startswith("stages ") else ""
            raise InputError(f"{where}{error}{got}") from error


def check_output_dir(directory: Path) -> None:
    """Refuse an output folder that is a file, or lies under one, or cannot be written, before any work."""
    for candidate in [directory, *directory.parents]:
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                what = "is" if candidate == directory else f"lies under {candidate}, which is"
                raise InputError(f"--output-dir {directory} {what} not a folder")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise InputError(f"--output-dir {directory}: cannot write in {candidate}")
            return


def parse_memory(text: str) -> str | int:
    """--memory-per-worker as LocalCluster takes it: "auto" or bytes; InputError for anything else."""
    if text.strip().lower() == "auto":
        return "auto"
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(text) if text.strip() else 0
    except (ValueError, TypeError):
        size = None
    if size is None or size < MIN_WORKER_MEMORY:
        raise InputError(f"--memory-per-worker {text!r}: give a size of at least 100MB, such as 4GB or 512MiB, "
                         "or auto")
    return size


def check_numbers(args) -> None:
    if args.threads_per_case < 1 or (args.workers is not None and args.workers < 1):
        raise InputError("--workers and --threads-per-case must be at least 1")
    if not args.case_timeout >= 0:  # also NaN
        raise InputError(f"--case-timeout {args.case_timeout:g}: give seconds, 0 for no limit")
    if not args.scheduler_timeout > 0:
        raise InputError(f"--scheduler-timeout {args.scheduler_timeout:g}: give seconds, more than 0")


def check_scheduler(address: str, timeout: float) -> None:
    """InputError unless a Dask scheduler answers at `address` within `timeout` seconds."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        comm = await connect(address, timeout=timeout, **Security().get_connection_args("client"))
        await comm.close()

    try:
        asyncio.run(probe())
    except Exception as error:  # timeout, refused, malformed address, not a Dask scheduler
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot reach the Dask scheduler at {address}: {message}") from None


def _absolute(token: str) -> str:
    """A pass-through argument naming an existing file or folder, made absolute for the workers."""
    return str(Path(token).resolve()) if not token.startswith("-") and Path(token).exists() else token


def case_job(case: Case, output_dir: Path, options: list[str], threads: int, timeout: float | None = None
             ) -> CaseJob:
    """The job of one case: pass-through options first, so that the manifest's columns override them."""
    inputs = dict(case.paths) | {f"option {i}": Path(token) for i, token in enumerate(options)
                                 if not token.startswith("-") and Path(token).exists()}
    fingerprint_options = [*options, *(f"{k}={v}" for k, v in sorted(case.values.items())), f"threads={threads}"]
    return CaseJob(case=case.case, directory=str(output_dir / case.case),
                   arguments=(*options, *case.register_arguments()), threads=threads,
                   fingerprint=case_fingerprint(fingerprint_options, inputs), timeout=timeout)


def reusable(job: CaseJob) -> dict | None:
    """The record of a finished case that a rerun keeps: final status, same fingerprint, outputs present."""
    record = read_record(Path(job.directory))
    if record is None or record.get("status") not in FINAL_STATUSES or record.get("fingerprint") != job.fingerprint:
        return None
    needed = (TRANSFORM_NAME, RESULT_NAME) if record["status"] == "registered" else (RESULT_NAME,)
    return record if all((Path(job.directory) / name).is_file() for name in needed) else None


def case_jobs(manifest: Path, cases: list[Case], output_dir: Path, options: list[str], args) -> list[CaseJob]:
    """The job of every case; reading an input for its fingerprint fails with an InputError naming the line."""
    jobs = []
    for case in cases:
        try:
            jobs.append(case_job(case, output_dir, options, args.threads_per_case, args.case_timeout or None))
        except OSError as error:
            raise InputError(f"{manifest.name} line {case.line}: cannot read {error.filename}: "
                             f"{error.strerror}") from None
    return jobs


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
    rows: list[dict] = []  # the summary rows, once written
    try:
        with signals_interrupt():
            return _run(args, options, rows)
    except Interrupted as stop:
        if rows:
            not_run = sum(row["status"] in NOT_RUN for row in rows)
            print(f"ctmr-batch: stopped by {stop}: {len(rows) - not_run} cases done, {not_run} not run",
                  file=sys.stderr)
        else:
            print(f"ctmr-batch: stopped by {stop} before any case ran", file=sys.stderr)
        return stop.exit_code
    except CTMRError as error:
        print(f"ctmr-batch: error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return EXIT_INPUT if isinstance(error, InputError) else EXIT_UNEXPECTED
    except Exception as error:  # the boundary: anything not turned into a message on the way
        if args.debug:
            traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        print(f"ctmr-batch: error: unexpected {type(error).__name__}: {first}{hint}", file=sys.stderr)
        return EXIT_UNEXPECTED


def _run(args, options: list[str], rows: list[dict]) -> int:
    """Check everything, lock DIR, write the summary, compute the cases; `rows` is filled once written."""
    check_numbers(args)
    memory = parse_memory(args.memory_per_worker)
    check_output_dir(args.output_dir)
    options = [_absolute(token) for token in options]
    register = check_register_options(options)
    cases = read_manifest(args.manifest)
    check_columns_known(args.manifest, cases)
    check_stages(args.manifest, cases, register)
    if args.scheduler:
        check_scheduler(args.scheduler, args.scheduler_timeout)
    output_dir = args.output_dir.resolve()
    with ExitStack() as stack:
        created = not output_dir.exists()
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create --output-dir {args.output_dir}: {error.strerror}") from None
        if created:
            stack.callback(_remove_if_empty, output_dir)
        stack.enter_context(cohort_lock(output_dir))
        jobs = case_jobs(args.manifest, cases, output_dir, options, args)
        new_rows, to_run = [], []
        for job in jobs:
            record = None if args.force else reusable(job)
            new_rows.append(summary_row(record, reused=True) if record else pending_row(job.case))
            if record is None:
                to_run.append(job)
        write_summary(output_dir, new_rows, running=bool(to_run))
        rows[:] = new_rows
        for job in to_run:
            reset_attempts(Path(job.directory))
        print(f"ctmr-batch: {len(jobs)} cases, {len(jobs) - len(to_run)} already done, {len(to_run)} to compute",
              file=sys.stderr)
        if to_run:
            _compute(args, memory, output_dir, jobs, to_run, rows)
    tally = counts(rows)
    print(f"ctmr-batch: {tally['good']} registered (ok/check or no QA), {tally['bad']} not; see "
          f"{args.output_dir / SUMMARY_NAME}", file=sys.stderr)
    return 0 if tally["bad"] == 0 and tally["pending"] == 0 else EXIT_NOT_ALL_GOOD


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def _compute(args, memory, output_dir: Path, jobs: list[CaseJob], to_run: list[CaseJob], rows: list[dict]) -> None:
    position = {job.case: index for index, job in enumerate(jobs)}
    workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads_per_case)
    try:
        with open_client(args.scheduler, workers, memory, args.dashboard_address, args.scheduler_timeout) as client:
            print(f"ctmr-batch: Dask dashboard at {client.dashboard_link}", file=sys.stderr, flush=True)
            progress = Progress(len(to_run))
            futures = _submit(client, to_run)
            try:
                for record in _records_as_finished(futures):
                    rows[position[record["case"]]] = summary_row(record, reused=False)
                    write_summary(output_dir, rows)
                    progress.update(record)
            except Interrupted:
                _ignore_signals()  # a second Ctrl-C does not cut the records short
                unfinished = [job for job in to_run if rows[position[job.case]]["status"] == "pending"]
                for job in _stop_cases(client, list(futures), unfinished, remote=bool(args.scheduler)):
                    record = read_record(Path(job.directory))
                    if record is None and started(job):
                        record = interrupted_record(job)
                    if record is not None and record.get("fingerprint") == job.fingerprint:
                        rows[position[job.case]] = summary_row(record, reused=False)
                raise
    except Interrupted:  # also while the cluster starts: the cases not run stay pending, the page stops reloading
        _ignore_signals()
        write_summary(output_dir, rows, running=False)
        raise


def _submit(client, jobs: list[CaseJob]) -> dict:
    """Submit every job: a task that raises is retried once (retries=1); one whose worker dies is rescheduled
    once (the scheduler's allowed-failures), then raises KilledWorker."""
    from .case import run_case

    return {client.submit(run_case, job, key=f"ctmr-{job.case}-{uuid.uuid4().hex[:8]}", retries=1): job
            for job in jobs}


def _records_as_finished(futures: dict):
    """Yield the records of the submitted jobs as they finish."""
    from distributed import as_completed

    from .case import crashed_record

    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as error:  # a killed worker or a bug: record it and go on with the others
            yield crashed_record(futures[future], error)
        finally:
            future.release()


def _stop_cases(client, futures: list, jobs: list[CaseJob], remote: bool) -> list[CaseJob]:
    """Stop the cohort: no task starts any more, the running cases are asked to stop (SIGTERM: ctmr-register
    cleans up, and its worker records the case `interrupted`), and those still running STOP_SECONDS later are
    killed. Returns `jobs`, whose records on disk are then final."""
    client.cancel(futures)  # queued cases never start; a running task's own record comes from its worker
    directories = [job.directory for job in jobs]

    def on_workers(kill: bool) -> None:
        try:
            if remote:
                client.run(terminate_cases, directories, kill=kill)
            else:  # a LocalCluster's cases run on this machine
                terminate_cases(directories, kill=kill)
        except Exception:  # a worker gone meanwhile: its cases are gone with it
            pass

    deadline, kill = time.monotonic() + STOP_SECONDS, False
    while True:
        on_workers(kill)
        waiting = [job for job in jobs if started(job) and read_record(Path(job.directory)) is None]
        if not waiting:
            return jobs
        if time.monotonic() > deadline:
            if kill:
                return jobs
            deadline, kill = time.monotonic() + STOP_SECONDS / 4, True
        time.sleep(STOP_POLL_SECONDS)


def _ignore_signals() -> None:
    for number in HANDLED:
        signal.signal(number, signal.SIG_IGN)


@contextmanager
def open_client(scheduler: str | None, workers: int, memory_per_worker: str | int, dashboard_address: str,
                timeout: float = SCHEDULER_TIMEOUT_SECONDS) -> Iterator:
    """A distributed.Client on the scheduler at `scheduler`, else on a new LocalCluster of `workers` processes
    with one task thread each (a case's own threads are its child process's). The LocalCluster's processes are
    born with SIGINT and SIGHUP blocked: a Ctrl-C or hang-up of the terminal reaches the whole process group,
    and is for ctmr-batch alone, which stops the cases and the workers itself."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_WORKER_DEATHS}):
        if scheduler:
            with Client(scheduler, timeout=timeout) as client:
                yield client
            return
        with ExitStack() as stack:
            with _terminal_signals_blocked():
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_per_worker,
                    dashboard_address=dashboard_address))
            yield stack.enter_context(Client(cluster))


@contextmanager
def _terminal_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGHUP in this thread inside the block, so that the threads and processes started in
    it inherit them blocked (case.py unblocks them in each case). multiprocessing's resource tracker is started
    first: it unblocks SIGINT in the thread that starts it, and ignores SIGINT and SIGTERM, not SIGHUP. A
    signal that comes meanwhile reaches ctmr-batch when the block ends."""
    from multiprocessing import resource_tracker

    terminal = {signal.SIGINT, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, terminal)
    try:
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, terminal)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Progress:
    """Counts the cases computed in this run and estimates the time left from their mean duration."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        self.stream = stream or sys.stderr

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += not is_good(record)
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
