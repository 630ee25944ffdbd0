"""Run an elastix executable (the Debian `elastix` package, SlicerElastix's, or a path the user gives)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from .elastix_job import ElastixJob
from .elastix_parameters import ParameterMap, read_parameter_file, write_parameter_file
from .errors import Cancelled, InputError, NoOverlapError, RegistrationError

ELASTIX_ENVIRONMENT_VARIABLE = "CTMR_ELASTIX"
NO_OVERLAP_SIGNS = ("Too many samples map outside moving image buffer", "outside the moving image")
_RESOLUTION = re.compile(r"^Resolution: (\d+)")
_PARAMETER_FILE = re.compile(r"^Running elastix with parameter file (\d+)")


def find_elastix_executable(path: str | os.PathLike | None = None) -> Path | None:
    """`path` when given (a file or the folder holding it), else $CTMR_ELASTIX, else `elastix` on PATH."""
    candidate = path or os.environ.get(ELASTIX_ENVIRONMENT_VARIABLE)
    if candidate:
        candidate = Path(candidate)
        if candidate.is_dir():
            candidate = candidate / ("elastix.exe" if os.name == "nt" else "elastix")
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            raise InputError(f"no elastix executable at {candidate}")
        return candidate
    found = shutil.which("elastix")
    return Path(found) if found else None


def log_tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _stage_progress(line: str, maps: int, resolutions: list[int], state: dict) -> float | None:
    """Fraction done when `line` starts a parameter map or a resolution, else None."""
    started = _PARAMETER_FILE.match(line)
    if started:
        state["map"] = int(started.group(1))
        return state["map"] / maps
    level = _RESOLUTION.match(line)
    if level:
        current = state.get("map", 0)
        return (current + int(level.group(1)) / max(resolutions[current], 1)) / maps
    return None


def run_elastix_executable(
    executable: Path,
    job: ElastixJob,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ParameterMap]:
    """Run `job` in one elastix process; returns its TransformParameters maps, one per parameter map."""
    parameter_maps = job.parameter_maps
    with tempfile.TemporaryDirectory(prefix="ctmr-elastix-") as workdir:
        workdir = Path(workdir)
        command = [str(executable), "-out", str(workdir)]
        images = (("-f", job.fixed), ("-m", job.moving), ("-fMask", job.fixed_mask), ("-mMask", job.moving_mask))
        for flag, image in images:
            if image is not None:
                path = workdir / f"{flag[1:]}.mha"
                sitk.WriteImage(image, str(path))
                command += [flag, str(path)]
        for index, parameters in enumerate(parameter_maps):
            command += ["-p", str(write_parameter_file(parameters, workdir / f"Parameters.{index}.txt"))]
        if job.initial_transform_map is not None:
            command += ["-t0", str(write_parameter_file(job.initial_transform_map, workdir / "InitialTransform.txt"))]
        if job.threads:
            command += ["-threads", str(int(job.threads))]
        output = _run(command, parameter_maps, progress, cancelled)
        results = [workdir / f"TransformParameters.{i}.txt" for i in range(len(parameter_maps))]
        if not all(path.exists() for path in results):
            log = workdir / "elastix.log"
            text = log.read_text(errors="replace") if log.exists() else output
            if any(sign in text for sign in NO_OVERLAP_SIGNS):
                raise NoOverlapError("the images do not overlap after initialisation")
            raise RegistrationError(f"elastix failed:\n{log_tail(text)}")
        return [read_parameter_file(path, required=("Transform",)) for path in results]


def _run(command, parameter_maps, progress, cancelled) -> str:
    """Run elastix, reporting progress per resolution and killing it when `cancelled()` turns true."""
    resolutions = [int(p.get("NumberOfResolutions", ["1"])[0]) for p in parameter_maps]
    state: dict = {}
    lines: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        for line in process.stdout:
            lines.append(line)
            if cancelled is not None and cancelled():
                process.kill()
                raise Cancelled("registration cancelled")
            fraction = _stage_progress(line, len(parameter_maps), resolutions, state)
            if fraction is not None and progress is not None and fraction > state.get("reported", -1.0):
                state["reported"] = fraction
                progress(fraction)
    return "".join(lines[-200:])
