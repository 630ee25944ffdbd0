"""Run an elastix executable (the Debian `elastix` package, SlicerElastix's, or a path the user gives).

The run reports its progress, read from the lines elastix prints (parameter file, resolution, iteration),
and is stopped at a wall-clock limit from the work its parameter maps ask for. Elastix's cost grows with
iterations x samples per resolution (times the points a B-spline sample touches) plus a pass over the
voxels per resolution; the limit allows about ten times what the bundled stages take on one slow core, so
it only stops runs that would otherwise not end.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import Cancelled, InputError, NoOverlapError, RegistrationError
from ..core.private_folders import private_folder
from .parameters import ElastixJob, ParameterMap, read_parameter_file, write_parameter_file

NO_OVERLAP_SIGNS = ("Too many samples map outside moving image buffer", "outside the moving image")
CANCEL_POLL_SECONDS = 0.1
EXE_SUFFIX = ".exe" if os.name == "nt" else ""
# the time limit (see time_limit_seconds)
BASE_SECONDS = 120.0
SECONDS_PER_SAMPLE_ITERATION = 2e-5
SECONDS_PER_VOXEL_PASS = 1e-5
BSPLINE_FACTOR = 8.0
DEFAULT_ITERATIONS, DEFAULT_SAMPLES = 500, 5000
# the lines of elastix's output that tell its progress
_PARAMETER_FILE = re.compile(r"^Running elastix with parameter file (\d+):")
_RESOLUTION = re.compile(r"^Resolution: (\d+)")
_ITERATION = re.compile(r"^(\d+)\t")


@dataclass(frozen=True)
class ElastixExecutable:
    """An elastix binary, the environment it needs (SlicerElastix sets library paths) and where it came from."""

    path: Path
    environment: dict | None = field(default=None, compare=False)
    origin: str = "PATH"

    def __str__(self) -> str:
        return f"elastix {self.path} ({self.origin})"

    @property
    def transformix(self) -> Path:
        return self.path.with_name(f"transformix{EXE_SUFFIX}")


def executable_at(path: str | os.PathLike, origin: str = "--elastix") -> ElastixExecutable:
    """The elastix at `path` (the binary or its folder); InputError when there is none."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / f"elastix{EXE_SUFFIX}"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise InputError(f"no elastix executable at {candidate} (given by {origin})")
    return ElastixExecutable(candidate, origin=origin)


def log_tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _write_inputs(job: ElastixJob, workdir: Path) -> list[str]:
    """Write the job's images and parameter files; the elastix arguments that name them."""
    arguments = ["-out", str(workdir)]
    images = (("-f", job.fixed), ("-m", job.moving), ("-fMask", job.fixed_mask), ("-mMask", job.moving_mask))
    for flag, image in images:
        if image is not None:
            path = workdir / f"{flag[1:]}.mha"
            sitk.WriteImage(image, str(path))
            arguments += [flag, str(path)]
    for index, parameters in enumerate(job.parameter_maps):
        arguments += ["-p", str(write_parameter_file(parameters, workdir / f"Parameters.{index}.txt"))]
    if job.initial_transform_map is not None:
        arguments += ["-t0", str(write_parameter_file(job.initial_transform_map, workdir / "InitialTransform.txt"))]
    if job.threads:
        arguments += ["-threads", str(int(job.threads))]
    return arguments


def run_elastix_executable(
    executable: ElastixExecutable,
    job: ElastixJob,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ParameterMap]:
    """Run `job` in one elastix process; returns its TransformParameters maps, one per parameter map."""
    with private_folder("elastix") as workdir:
        command = [str(executable.path)] + _write_inputs(job, workdir)
        output, status = _run(command, executable.environment, ElastixProgress(job.parameter_maps), progress,
                              cancelled, time_limit_seconds(job))
        results = [workdir / f"TransformParameters.{i}.txt" for i in range(len(job.parameter_maps))]
        if not all(path.exists() for path in results):
            log = workdir / "elastix.log"
            text = log.read_text(errors="replace") if log.exists() else output
            if any(sign in text for sign in NO_OVERLAP_SIGNS):
                raise NoOverlapError(f"the images do not overlap after initialisation\n{log_tail(text)}")
            raise RegistrationError(f"elastix failed (exit status {status}): {failure_cause(text)}\n{log_tail(text)}")
        return [read_parameter_file(path, required=("Transform",)) for path in results]


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def failure_cause(text: str) -> str:
    """The line of an elastix log that names why it failed: ITK's Description, else the last error line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return (errors or lines or ["it printed nothing"])[-1]


def _run(command, environment, tracker: ElastixProgress, progress, cancelled, time_limit: float) -> tuple[str, int]:
    """Run elastix, reporting progress; kill it within CANCEL_POLL_SECONDS of `cancelled()` turning true, when
    it runs longer than `time_limit` seconds, or when anything interrupts the wait (a signal). Returns the
    tail of its output and its exit status.

    Output is read on a thread so that a cancel is seen even while elastix prints nothing."""
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    started = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=environment
    ) as process:
        reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled("registration cancelled")
                if time.monotonic() - started > time_limit:
                    raise RegistrationError(f"elastix stopped after {time_limit:.0f} s, the time limit for this "
                                            "problem size (iterations x samples of its parameter files)")
                try:
                    line = lines.get(timeout=CANCEL_POLL_SECONDS)
                except queue.Empty:
                    continue
                if line is None:
                    break
                seen.append(line)
                fraction = tracker.update(line)
                if fraction is not None and progress is not None:
                    progress(fraction)
        except BaseException:
            process.kill()
            reader.join(timeout=5)  # the reader must see the output's end while the pipe is open
            raise
        process.wait()
    return "".join(seen[-200:]), process.returncode


def _iterations_per_resolution(parameters: ParameterMap) -> list[int]:
    resolutions = int(parameters.get("NumberOfResolutions", ["1"])[0])
    counts = [int(v) for v in parameters.get("MaximumNumberOfIterations", ["500"])]
    return [max(counts[min(level, len(counts) - 1)], 1) for level in range(resolutions)]


class ElastixProgress:
    """Turns elastix output lines into a monotone fraction in [0, 1].

    Every parameter map gets an equal share, every resolution an equal share of its map, and iterations
    fill the resolution up to its MaximumNumberOfIterations.
    """

    def __init__(self, parameter_maps: list[ParameterMap]):
        self.iterations = [_iterations_per_resolution(p) for p in parameter_maps]
        self.map = self.level = 0
        self.fraction = 0.0

    def update(self, line: str) -> float | None:
        """The new fraction when `line` moves it forward, else None."""
        started = _PARAMETER_FILE.match(line)
        level = _RESOLUTION.match(line)
        iteration = _ITERATION.match(line)
        if started:
            self.map, self.level = min(int(started.group(1)), len(self.iterations) - 1), 0
        elif level:
            self.level = min(int(level.group(1)), len(self.iterations[self.map]) - 1)
        elif not iteration:
            return None
        levels = self.iterations[self.map]
        done = min((int(iteration.group(1)) + 1) / levels[self.level], 1.0) if iteration else 0.0
        fraction = (self.map + (self.level + done) / len(levels)) / len(self.iterations)
        if fraction <= self.fraction:
            return None
        self.fraction = fraction
        return fraction


def _per_level(parameters: ParameterMap, key: str, default: int, levels: int) -> list[int]:
    values = [int(float(v)) for v in parameters.get(key, [str(default)])] or [default]
    return [values[min(level, len(values) - 1)] for level in range(levels)]


def time_limit_seconds(job: ElastixJob) -> float:
    """Seconds after which an elastix run of `job` is stopped."""
    voxels = float(np.prod(job.fixed.GetSize())) + float(np.prod(job.moving.GetSize()))
    seconds = BASE_SECONDS
    for parameters in job.parameter_maps:
        levels = int(parameters.get("NumberOfResolutions", ["1"])[0])
        iterations = _per_level(parameters, "MaximumNumberOfIterations", DEFAULT_ITERATIONS, levels)
        full = parameters.get("ImageSampler", [""])[0] in ("Full", "Grid")
        samples = [voxels] * levels if full else _per_level(parameters, "NumberOfSpatialSamples", DEFAULT_SAMPLES,
                                                            levels)
        factor = BSPLINE_FACTOR if "BSpline" in parameters.get("Transform", [""])[0] else 1.0
        seconds += SECONDS_PER_SAMPLE_ITERATION * factor * sum(i * s for i, s in zip(iterations, samples))
        seconds += SECONDS_PER_VOXEL_PASS * voxels * levels
    return seconds
