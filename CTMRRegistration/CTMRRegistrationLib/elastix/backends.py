"""One registration interface over the elastix backends: an elastix executable, or the itk-elastix wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..core.errors import Cancelled, InputError
from .executable import EXE_SUFFIX, ElastixExecutable, executable_at, run_elastix_executable
from .job import ElastixJob
from .parameters import ParameterMap
from .slicer_elastix import slicer_elastix_executable

BACKENDS = ("auto", "elastix", "itk-elastix")
ELASTIX_ENVIRONMENT_VARIABLE = "CTMR_ELASTIX"
ITK_ELASTIX = "itk-elastix wheel"


def find_elastix_executable(path: str | os.PathLike | None = None) -> ElastixExecutable | None:
    """`path` when given, else $CTMR_ELASTIX, else SlicerElastix's inside Slicer, else `elastix` on PATH."""
    if path:
        return executable_at(path)
    if os.environ.get(ELASTIX_ENVIRONMENT_VARIABLE):
        return executable_at(os.environ[ELASTIX_ENVIRONMENT_VARIABLE], f"${ELASTIX_ENVIRONMENT_VARIABLE}")
    bundled = slicer_elastix_executable()
    if bundled is not None:
        return bundled
    found = shutil.which(f"elastix{EXE_SUFFIX}")
    return ElastixExecutable(Path(found)) if found else None


def choose_backend(backend: str = "auto", executable: str | os.PathLike | None = None) -> ElastixExecutable | str:
    """The elastix executable to run, or ITK_ELASTIX for the in-process wheel.

    'auto' prefers an executable (it starts in milliseconds, reports progress per iteration and can be
    cancelled) and falls back to the wheel; 'elastix' and 'itk-elastix' insist, with a clear error."""
    if backend not in BACKENDS:
        raise InputError(f"unknown elastix backend '{backend}' (use {', '.join(BACKENDS)})")
    if backend != "itk-elastix":
        found = find_elastix_executable(executable)
        if found is not None:
            return found
        if backend == "elastix":
            raise InputError(
                "no elastix executable found: install elastix (Debian/Ubuntu: apt install elastix), "
                f"pass --elastix PATH or set ${ELASTIX_ENVIRONMENT_VARIABLE}"
            )
    if importlib.util.find_spec("itk") is None:
        raise InputError("neither an elastix executable nor the itk-elastix wheel is available "
                         "(apt install elastix, or pip install itk-elastix)")
    return ITK_ELASTIX


def run_elastix(
    job: ElastixJob,
    backend: ElastixExecutable | str = "auto",
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ParameterMap]:
    """Run `job` on `backend` (a name of BACKENDS or what choose_backend returned); one TransformParameters
    map per parameter map. The wheel reports progress only at its end and is cancelled only before it starts."""
    chosen = backend if isinstance(backend, ElastixExecutable) or backend == ITK_ELASTIX else choose_backend(backend)
    if isinstance(chosen, ElastixExecutable):
        return run_elastix_executable(chosen, job, progress=progress, cancelled=cancelled)
    if cancelled is not None and cancelled():
        raise Cancelled("registration cancelled")
    from .wheel import run_itk_elastix

    maps = run_itk_elastix(job)
    if progress is not None:
        progress(1.0)
    return maps
