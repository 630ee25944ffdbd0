"""One registration interface over the elastix backends: an executable when one is found, else itk-elastix."""

from __future__ import annotations

import os
from collections.abc import Callable

from .elastix_executable import find_elastix_executable, run_elastix_executable
from .elastix_job import ElastixJob
from .elastix_parameters import ParameterMap
from .errors import Cancelled


def run_elastix(
    job: ElastixJob,
    executable: str | os.PathLike | None = None,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ParameterMap]:
    """Run `job`; returns one TransformParameters map per parameter map.

    The elastix executable at `executable`, $CTMR_ELASTIX or on PATH runs when found (it starts in
    milliseconds and reports progress per resolution); otherwise the in-process itk-elastix wheel runs.
    """
    path = find_elastix_executable(executable)
    if path is not None:
        return run_elastix_executable(path, job, progress=progress, cancelled=cancelled)
    if cancelled is not None and cancelled():
        raise Cancelled("registration cancelled")
    from .itk_elastix_backend import run_itk_elastix

    maps = run_itk_elastix(job)
    if progress is not None:
        progress(1.0)
    return maps
