"""The registration pipeline on SimpleITK images.

Checks, working resolution, foreground masks, global initialisation (with the mirror check), MR
bias-field correction, common-region crop, elastix rigid with masks, and a final overlap check. Each stage
starts from the previous stage's fixed->moving transform and is timed in `stage_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import initialization
from .bias_field import correct_bias_field
from .common_region import common_region, crop_to_points
from .elastix_job import ElastixJob
from .elastix_parameters import read_parameter_file
from .elastix_runner import run_elastix
from .elastix_transforms import compose_linear, linear_transform_map, sitk_from_transform_map
from .errors import Cancelled, InputError, NoOverlapError
from .geometry import matrix_from_sitk, sitk_from_matrix, transform_points
from .imaging import check_volume, guess_modality, physical_corners, shrink_to_spacing
from .masks import foreground_mask
from .resources import parameter_file

ProgressCallback = Callable[[float, str], None]
INITIALIZATIONS = ("search", "center", "none")
WORKING_SPACING_MM = 2.0
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
    bias_correction: bool | None = None  # None: on for MR images
    elastix_executable: Path | None = None
    cancelled: Callable[[], bool] | None = None


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
    fixed_mask: sitk.Image | None = None  # foreground masks on the working grids, for inspection
    moving_mask: sitk.Image | None = None
    mask_nodes: dict = field(default_factory=dict)

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


def _prepare(image: sitk.Image, role: str, modality: str | None) -> tuple[sitk.Image, str]:
    check_volume(image, role)
    working = sitk.Cast(shrink_to_spacing(image, WORKING_SPACING_MM), sitk.sitkFloat32)
    return working, modality or guess_modality(image)


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
    started = time.perf_counter()
    _report(progress, 0.0, "preparing images")
    fixed, fixed_modality = _prepare(fixed, "fixed", options.fixed_modality)
    moving, moving_modality = _prepare(moving, "moving", options.moving_modality)
    if (fixed_modality, moving_modality) == ("MR", "CT"):
        result = _register_prepared(moving, fixed, ("CT", "MR"), options, progress)
        result.transform = sitk_from_matrix(np.linalg.inv(result.matrix))
        result.initial_transform = result.initial_transform.GetInverse()
        result.fixed_mask, result.moving_mask = result.moving_mask, result.fixed_mask
        result.fixed_modality, result.moving_modality = fixed_modality, moving_modality
    else:
        result = _register_prepared(fixed, moving, (fixed_modality, moving_modality), options, progress)
    result.seconds = time.perf_counter() - started
    _report(progress, 1.0, "done")
    return result


class _StageClock:
    """Times named stages into a dict, reports each start to the progress callback and stops there
    when the user has cancelled."""

    def __init__(self, seconds: dict, progress: ProgressCallback | None, cancelled: Callable[[], bool] | None):
        self.seconds, self.progress, self.cancelled = seconds, progress, cancelled

    def start(self, name: str, fraction: float, message: str) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("registration cancelled")
        self.name, self.clock = name, time.perf_counter()
        _report(self.progress, fraction, message)

    def stop(self) -> None:
        self.seconds[self.name] = time.perf_counter() - self.clock


def _use_bias_correction(options: RegistrationOptions, modality: str) -> bool:
    return modality == "MR" if options.bias_correction is None else options.bias_correction


def _register_prepared(fixed, moving, modalities, options, progress) -> RegistrationResult:
    """Masks, initialisation, bias correction, common-region crop and elastix rigid on prepared images.

    The pose search reads edges, mask overlap and intensity statistics that a bias field barely moves, and
    it was found more decisive on the uncorrected MR; N4 serves the intensity-based elastix stage."""
    result = RegistrationResult(sitk.Transform(), sitk.Transform(), *modalities)
    clock = _StageClock(result.stage_seconds, progress, options.cancelled)

    clock.start("masks", 0.02, "masking CT table, air and MR background")
    fixed_mask, moving_mask = foreground_mask(fixed, modalities[0]), foreground_mask(moving, modalities[1])
    result.fixed_mask, result.moving_mask = fixed_mask, moving_mask
    clock.stop()
    clock.start("initialization", 0.1, "searching all orientations")
    initial = _initialize(fixed, moving, modalities, options, result)
    _check_boxes_overlap(fixed, moving, initial)
    result.initial_transform = sitk_from_matrix(initial)
    clock.stop()
    if result.status == "mirrored":
        result.transform = result.initial_transform
        return result

    for role, modality in zip(("fixed", "moving"), modalities):
        if _use_bias_correction(options, modality):
            clock.start(f"bias_correction_{role}", 0.45, f"correcting the {role} image's MR bias field (N4)")
            mask = fixed_mask if role == "fixed" else moving_mask
            corrected = correct_bias_field(fixed if role == "fixed" else moving, mask)
            fixed, moving = (corrected, moving) if role == "fixed" else (fixed, corrected)
            clock.stop()

    clock.start("crop", 0.5, "cropping to the common region")
    fixed_box, moving_box = common_region(fixed_mask, moving_mask, initial)
    fixed, fixed_mask = (crop_to_points(image, fixed_box) for image in (fixed, fixed_mask))
    moving, moving_mask = (crop_to_points(image, moving_box) for image in (moving, moving_mask))
    result.metrics["cropped_sizes"] = {"fixed": list(fixed.GetSize()), "moving": list(moving.GetSize())}
    clock.stop()

    clock.start("rigid", 0.55, "rigid registration (elastix)")
    job = ElastixJob(
        fixed, moving,
        [read_parameter_file(options.rigid_parameter_file or parameter_file("Rigid"))],
        initial_transform_map=linear_transform_map(initial, fixed),
        fixed_mask=fixed_mask if options.use_masks else None,
        moving_mask=moving_mask if options.use_masks else None,
        threads=options.threads,
    )
    maps = run_elastix(
        job,
        executable=options.elastix_executable,
        progress=lambda fraction: _report(progress, 0.55 + 0.4 * fraction, "rigid registration (elastix)"),
        cancelled=options.cancelled,
    )
    final = compose_linear(result.initial_transform, sitk_from_transform_map(maps[-1]))
    clock.stop()

    overlap = _mask_overlap_fraction(result.fixed_mask, result.moving_mask, final)
    result.metrics["foreground_overlap"] = round(overlap, 4)
    if overlap < MIN_OVERLAP_FRACTION:
        raise NoOverlapError(
            f"the images do not overlap after registration (only {overlap:.0%} of the fixed object "
            "lands on the moving object): check that both images show the same anatomy"
        )
    result.transform = sitk_from_matrix(final)
    return result
