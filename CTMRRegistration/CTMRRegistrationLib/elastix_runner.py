"""One registration interface over the elastix backends: an executable when one is found, else itk-elastix."""

from __future__ import annotations

import os
from collections.abc import Callable

import SimpleITK as sitk

from .elastix_executable import find_elastix_executable, run_elastix_executable
from .elastix_parameters import ParameterMap
from .errors import Cancelled


def run_elastix(
    fixed: sitk.Image,
    moving: sitk.Image,
    parameter_maps: list[ParameterMap],
    initial_transform_map: ParameterMap | None = None,
    fixed_mask: sitk.Image | None = None,
    moving_mask: sitk.Image | None = None,
    threads: int | None = None,
    executable: str | os.PathLike | None = None,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ParameterMap]:
    """Register `moving` to `fixed` with `parameter_maps` in turn; returns one TransformParameters map each.

    The elastix executable at `executable`, $CTMR_ELASTIX or on PATH runs when found (it starts in
    milliseconds and reports progress per resolution); otherwise the in-process itk-elastix wheel runs.
    """
    arguments = (fixed, moving, parameter_maps, initial_transform_map, fixed_mask, moving_mask, threads)
    path = find_elastix_executable(executable)
    if path is not None:
        return run_elastix_executable(path, *arguments, progress=progress, cancelled=cancelled)
    if cancelled is not None and cancelled():
        raise Cancelled("registration cancelled")
    from .itk_elastix_backend import run_itk_elastix

    maps = run_itk_elastix(*arguments)
    if progress is not None:
        progress(1.0)
    return maps
