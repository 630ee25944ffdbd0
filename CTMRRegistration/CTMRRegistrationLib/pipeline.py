"""The registration pipeline on SimpleITK images: checks, initialisation, elastix rigid, overlap check.

Stages run in order and each one starts from the previous stage's fixed->moving transform, so later
stages (cropping, bias correction, affine, deformable) slot in as further entries of `_stages`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import initialization
from .elastix_parameters import read_parameter_file
from .elastix_transforms import compose_linear, linear_transform_map, sitk_from_transform_map
from .errors import InputError, NoOverlapError
from .geometry import matrix_from_sitk, sitk_from_matrix, transform_points
from .imaging import check_volume, guess_modality, physical_corners, shrink_to_spacing
from .itk_elastix_backend import run_elastix
from .masks import foreground_mask
from .resources import parameter_file

ProgressCallback = Callable[[float, str], None]
INITIALIZATIONS = ("search", "center", "none")
WORKING_SPACING_MM = 1.0
MIN_OVERLAP_FRACTION = 0.2


@dataclass
class RegistrationOptions:
    """What the pipeline does; the defaults need no tuning for CT-MR pairs."""

    initialization: str = "search"
    use_masks: bool = True
    accept_mirror: bool = False
    rigid_parameter_file: Path | None = None
    threads: int | None = None
    fixed_modality: str | None = None
    moving_modality: str | None = None


@dataclass
class RegistrationResult:
    """A fixed->moving resampling transform (LPS) with what was measured on the way."""

    transform: sitk.Transform
    initial_transform: sitk.Transform
    fixed_modality: str
    moving_modality: str
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    status: str = "ok"
    transform_node: object = None

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 fixed->moving LPS matrix of `transform`."""
        return matrix_from_sitk(self.transform)

    def as_dict(self) -> dict:
        """The JSON form printed by `ctmr-register --json`."""
        return {
            "status": self.status,
            "transform": self.matrix.round(9).tolist(),
            "transform_convention": "fixed->moving physical points, LPS (ITK resampling transform)",
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "fixed_modality": self.fixed_modality,
            "moving_modality": self.moving_modality,
            "metrics": self.metrics,
            "warnings": self.warnings,
        }


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _check_boxes_overlap(fixed: sitk.Image, moving: sitk.Image, matrix: np.ndarray) -> None:
    """Raise NoOverlapError when the fixed box, mapped by `matrix`, misses the moving box entirely."""
    mapped = transform_points(matrix, physical_corners(fixed))
    corners = physical_corners(moving)
    low, high = corners.min(axis=0), corners.max(axis=0)
    if np.any(mapped.max(axis=0) < low) or np.any(mapped.min(axis=0) > high):
        raise NoOverlapError("the images do not overlap: their fields of view are disjoint at the start pose")


def _mask_overlap_fraction(fixed_mask: sitk.Image, moving_mask: sitk.Image, matrix: np.ndarray) -> float:
    """Fraction of the fixed foreground that lands inside the moving foreground."""
    mapped = sitk.Resample(moving_mask, fixed_mask, sitk_from_matrix(matrix), sitk.sitkNearestNeighbor, 0)
    fixed_voxels = sitk.GetArrayViewFromImage(fixed_mask) > 0
    hits = np.logical_and(fixed_voxels, sitk.GetArrayViewFromImage(mapped) > 0).sum()
    return float(hits / max(fixed_voxels.sum(), 1))


def _initialize(fixed, moving, modalities, options, result) -> np.ndarray:
    if options.initialization == "search":
        init = initialization.search_initialization(fixed, moving, *modalities, threads=options.threads)
        result.metrics["initialization"] = init.details
        if init.mirrored:
            message = "the moving image appears mirrored (left-right flip in its header?)"
            result.warnings.append(message)
            result.metrics["mirrored"] = True
            if not options.accept_mirror:
                result.status = "mirrored"
        return init.matrix
    if options.initialization == "center":
        return initialization.centre_initialization(fixed, moving).matrix
    return np.eye(4)


def register_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    options: RegistrationOptions | None = None,
    progress: ProgressCallback | None = None,
) -> RegistrationResult:
    """Register `moving` to `fixed`; the result maps fixed physical points to moving ones (LPS).

    The metric is evaluated over the CT whenever one image is CT: MR-fixed requests run CT-fixed and
    return the inverse, so swapping fixed and moving gives exactly the inverse transform.
    """
    options = options or RegistrationOptions()
    if options.initialization not in INITIALIZATIONS:
        raise InputError(f"unknown initialisation '{options.initialization}' (use {', '.join(INITIALIZATIONS)})")
    check_volume(fixed, "fixed")
    check_volume(moving, "moving")
    started = time.perf_counter()
    _report(progress, 0.0, "preparing images")
    fixed = shrink_to_spacing(sitk.Cast(fixed, sitk.sitkFloat32), WORKING_SPACING_MM)
    moving = shrink_to_spacing(sitk.Cast(moving, sitk.sitkFloat32), WORKING_SPACING_MM)
    modalities = (options.fixed_modality or guess_modality(fixed), options.moving_modality or guess_modality(moving))
    if modalities == ("MR", "CT"):
        result = _register_prepared(moving, fixed, ("CT", "MR"), options, progress)
        result.transform = sitk_from_matrix(np.linalg.inv(result.matrix))
        result.initial_transform = result.initial_transform.GetInverse()
        result.fixed_modality, result.moving_modality = modalities
    else:
        result = _register_prepared(fixed, moving, modalities, options, progress)
    result.seconds = time.perf_counter() - started
    _report(progress, 1.0, "done")
    return result


def _register_prepared(fixed, moving, modalities, options, progress) -> RegistrationResult:
    """Initialisation and elastix rigid on prepared float images of known modality."""
    stage_seconds: dict[str, float] = {}
    result = RegistrationResult(sitk.Transform(), sitk.Transform(), *modalities, stage_seconds=stage_seconds)

    _report(progress, 0.05, "initialising")
    clock = time.perf_counter()
    initial = _initialize(fixed, moving, modalities, options, result)
    _check_boxes_overlap(fixed, moving, initial)
    stage_seconds["initialization"] = time.perf_counter() - clock
    result.initial_transform = sitk_from_matrix(initial)
    if result.status == "mirrored":
        result.transform = result.initial_transform
        return result

    _report(progress, 0.4, "rigid registration (elastix)")
    clock = time.perf_counter()
    fixed_mask = foreground_mask(fixed, modalities[0])
    moving_mask = foreground_mask(moving, modalities[1])
    maps = run_elastix(
        fixed, moving,
        [read_parameter_file(options.rigid_parameter_file or parameter_file("Rigid"))],
        initial_transform_map=linear_transform_map(initial, fixed),
        fixed_mask=fixed_mask if options.use_masks else None,
        moving_mask=moving_mask if options.use_masks else None,
        threads=options.threads,
    )
    final = compose_linear(result.initial_transform, sitk_from_transform_map(maps[-1]))
    stage_seconds["rigid"] = time.perf_counter() - clock

    overlap = _mask_overlap_fraction(fixed_mask, moving_mask, final)
    result.metrics["foreground_overlap"] = round(overlap, 4)
    if overlap < MIN_OVERLAP_FRACTION:
        raise NoOverlapError(
            f"the images do not overlap after registration (only {overlap:.0%} of the fixed object "
            "lands on the moving object): check that both images show the same anatomy"
        )
    result.transform = sitk_from_matrix(final)
    return result
