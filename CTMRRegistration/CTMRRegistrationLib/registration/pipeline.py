"""The registration pipeline on SimpleITK images.

Checks, working resolution, foreground masks, global initialisation (with the mirror check), MR
bias-field correction, common-region crop, then the elastix stages rigid -> affine -> deformable (each
optional) with masks, and an overlap check. The rigid stage runs on the 2 mm working grid; the affine and
deformable stages, which follow local shape, run on a 1 mm grid of the same region (small structures such as
air pockets vanish at 2 mm and the outline dominates; docs/validation.md). Each stage starts from the
previous stage's fixed->moving transform and is timed in `stage_seconds`; an affine or deformable result is
kept only when the stage guard (stage_guard.py) finds it better than the previous one, or when
`force_stages` is set.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import Cancelled, InputError, NoOverlapError
from ..core.geometry import matrix_from_sitk, sitk_from_matrix, snapped, transform_points
from ..core.imaging import (
    check_volume,
    guess_modality,
    in_view_mask,
    intensity_window,
    own_copy,
    physical_corners,
    resample_on_grid,
    shrink_to_spacing,
)
from ..core.masks import away_from_ct_padding, check_user_masks, combine_masks, foreground_mask, inside_by
from ..core.resources import parameter_file
from ..elastix.backends import ElastixBackend, choose_backend
from ..elastix.parameter_checks import check_parameter_map
from ..elastix.parameters import ElastixJob, ParameterMap, read_parameter_file
from ..elastix.transforms import compose, is_linear, linear_transform_map, sitk_from_transform_map
from . import initialization, input_checks
from .bias_field import TISSUE_DETAIL, estimate_log_bias_field, remove_bias_field
from .common_region import crop_boxes, crop_to_points
from .stage_guard import EdgeCue, guard_stage, skipped_for_partial_views

ProgressCallback = Callable[[float, str], None]
CancelledCallback = Callable[[], bool]
INITIALIZATIONS = ("search", "center", "none")
BIAS_CORRECTIONS = ("auto", "on", "off")  # auto: MR images only
STAGES = ("rigid", "affine", "deformable")
SWAPPED_ROLE = {"fixed": "moving", "moving": "fixed"}
# relative elastix run times of the stages, for the progress bar
STAGE_COST = {"rigid": 1.0, "affine": 10.0, "deformable": 25.0}
WORKING_SPACING_MM = 2.0
FINE_SPACING_MM = 1.0  # affine and deformable stages: small structures (e.g. air pockets) vanish at 2 mm
FINE_STAGES = ("affine", "deformable")
# how far inside the moving image's view the fine stages sample: elastix drops samples leaving a partial view
VIEW_MARGIN_MM = {"affine": 10.0, "deformable": 2.0}
# how far from a CT's padding (outside its reconstruction circle) a stage samples: that jump is no edge of the object
CT_PADDING_MARGIN_MM = {"deformable": 5.0}
# how far inside its sampled region a stage samples: an outline that moved on its own (table, holder, sagging)
# pulls a 12-parameter map away from the interior
INTERIOR_MARGIN_MM = {"affine": 10.0}
# FINE_STAGES see each image clamped to this percentile and its complement, so bone does not take the tissues' bins
INTENSITY_PERCENT = 2.0
MIN_OVERLAP_FRACTION = 0.2
NO_OVERLAP_TRIES = 3  # next candidates of the pose search tried when its winner ends without overlap


@dataclass
class RegistrationOptions:
    """What the pipeline does; the defaults need no tuning for CT-MR pairs."""

    initialization: str = "search"
    initial_matrix: np.ndarray | None = None  # a fixed->moving 4x4 LPS start pose (e.g. landmarks): no search
    use_masks: bool = True
    crop: bool = True  # crop both images to the region their objects share at the start pose
    crop_region: np.ndarray | None = None  # (N, 3) fixed-space LPS points (an ROI's corners) to crop to instead
    accept_mirror: bool = False
    stages: tuple[str, ...] = ("rigid",)  # in order, from rigid, affine, deformable
    presets: Sequence[str | Path] = ()  # elastix parameter files; each replaces the bundled preset of its stage
    backend: str | ElastixBackend = "auto"  # auto, elastix (an executable), itk-elastix (the wheel), or a backend
    elastix_executable: Path | None = None
    threads: int | None = None
    fixed_modality: str | None = None
    moving_modality: str | None = None
    bias_correction: str = "auto"  # N4 bias-field correction: auto (MR images only), on or off
    fixed_mask: sitk.Image | None = None  # user masks (non-zero inside), combined with the automatic ones by mask_mode
    moving_mask: sitk.Image | None = None
    mask_mode: str = "intersect"  # intersect: automatic AND user mask; replace: the user mask alone
    force_stages: bool = False  # keep affine/deformable results that the stage guard finds worse than the stage before
    fine_rigid: bool = False  # the rigid stage on the FINE_SPACING_MM grid too: closer on deformed anatomy, slower


@dataclass
class RegistrationResult:
    """A fixed->moving resampling transform (LPS) with what was measured on the way.

    `transform` is affine for linear stages; with a deformable stage it is a composite transform (the
    linear part first, then a B-spline), and `matrix` is its linear part. `stage_transforms` holds each elastix
    stage's own fixed->moving result, also one the stage guard discarded (compare stages without a rerun)."""

    transform: sitk.Transform
    initial_transform: sitk.Transform
    fixed_modality: str
    moving_modality: str
    linear_transform: sitk.Transform | None = None
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    status: str = "ok"
    backend: str = ""  # the elastix that ran, with its version
    fixed_mask: sitk.Image | None = None  # foreground masks on the working grids, for inspection
    moving_mask: sitk.Image | None = None
    crop_region: np.ndarray | None = None  # corners (LPS, fixed space) of the region registered (voxel faces)
    stage_transforms: dict[str, sitk.Transform] = field(default_factory=dict)
    # "fixed"/"moving": the N4 log bias field divided out of that image (the quality check divides it out too)
    log_bias_fields: dict[str, sitk.Image] = field(default_factory=dict)

    @property
    def deformable(self) -> bool:
        return not is_linear(self.transform)

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 fixed->moving LPS matrix of the linear part of `transform`."""
        return matrix_from_sitk(self.linear_transform if self.deformable else self.transform)

    def as_dict(self) -> dict:
        """The JSON form printed by `ctmr-register --json`."""
        return {
            "status": self.status,
            "transform": self.matrix.round(9).tolist(),
            "transform_convention": "fixed->moving physical points, LPS (ITK resampling transform)",
            "deformable": self.deformable,
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "fixed_modality": self.fixed_modality,
            "moving_modality": self.moving_modality,
            "metrics": self.metrics,
            "warnings": self.warnings,
        }


def scaled_progress(progress: ProgressCallback | None, low: float, high: float) -> ProgressCallback:
    """A callback reporting 0..1 of its own work as `low`..`high` of `progress` (which may be None)."""
    return lambda fraction, message: _report(progress, low + (high - low) * fraction, message)


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


def _initialize(fixed, moving, modalities, options, result, start: np.ndarray | None) -> np.ndarray:
    if start is not None:
        result.metrics.setdefault("initialization", {"method": "given"})
        return start
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
    input_checks.check_geometry(image, role)
    working = sitk.Cast(shrink_to_spacing(image, WORKING_SPACING_MM), sitk.sitkFloat32)
    return working, modality or guess_modality(image)


PRESET_STAGES = {
    "EulerTransform": "rigid", "SimilarityTransform": "rigid", "TranslationTransform": "rigid",
    "AffineTransform": "affine", "BSplineTransform": "deformable", "RecursiveBSplineTransform": "deformable",
}


def preset_stage(path) -> str:
    """The stage an elastix parameter file serves, from the transform it optimises."""
    return _stage_of(read_parameter_file(path), Path(path).name)


def _stage_of(parameters: ParameterMap, name: str) -> str:
    kind = parameters["Transform"][0]
    if kind not in PRESET_STAGES:
        raise InputError(f"{name}: a {kind} preset fits no stage ({', '.join(PRESET_STAGES)})")
    return PRESET_STAGES[kind]


def presets_by_stage(presets: Sequence[str | Path]) -> dict[str, Path]:
    """Preset files keyed by the stage each one's Transform names; InputError for two of one stage."""
    return {stage: path for stage, (path, _) in _read_presets(presets).items()}


def _read_presets(presets: Sequence[str | Path]) -> dict[str, tuple[Path, ParameterMap]]:
    """Each preset file read once, keyed by its stage: (path, parameters)."""
    if isinstance(presets, Mapping):
        warnings.warn("presets as a {stage: file} dict is deprecated: give the files; each file's Transform names "
                      "its stage", DeprecationWarning, stacklevel=4)
        presets = list(presets.values())
    by_stage: dict[str, tuple[Path, ParameterMap]] = {}
    for path in map(Path, presets):
        parameters = read_parameter_file(path)
        stage = _stage_of(parameters, path.name)
        if stage in by_stage:
            raise InputError(f"two presets for the {stage} stage: {by_stage[stage][0].name} and {path.name}")
        by_stage[stage] = (path, parameters)
    return by_stage


def stage_parameters(options: RegistrationOptions, wheel: bool = False) -> dict[str, ParameterMap]:
    """The parameter map of every requested stage, read and checked (for the itk-elastix wheel when `wheel`)
    before any slow work so a bad file fails fast."""
    stages = list(options.stages)
    if not stages or any(s not in STAGES for s in stages) or stages != sorted(set(stages), key=STAGES.index):
        raise InputError(f"stages must be one or more of {', '.join(STAGES)}, in that order (e.g. rigid,affine)")
    presets = _read_presets(options.presets)
    unused = sorted(set(presets) - set(stages))
    if unused:
        raise InputError(f"a preset is given for the {', '.join(unused)} stage, which is not among the stages run "
                         f"({', '.join(stages)})")
    bundled = {s: Path(parameter_file(s.capitalize())) for s in stages if s not in presets}
    given = presets | {s: (path, read_parameter_file(path)) for s, path in bundled.items()}
    return {s: check_parameter_map(given[s][1], given[s][0].name, wheel) for s in stages}


def register_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    options: RegistrationOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancelled: CancelledCallback | None = None,
) -> RegistrationResult:
    """Register `moving` to `fixed`; the result maps fixed physical points to moving ones (LPS).

    `progress(fraction, message)` hears of every step; `cancelled()` is polled between steps and while elastix
    runs (Cancelled is raised).

    The linear stages evaluate the metric over the CT whenever one image is CT: MR-fixed requests run
    CT-fixed and return the inverse, so swapping fixed and moving gives exactly the inverse linear transform.
    A deformable stage then runs in the requested direction, from that linear result.

    When the images no longer overlap after registration from the pose search's winner, registration starts
    again from the search's next (not mirrored) candidates, up to NO_OVERLAP_TRIES of them, and the first
    that overlaps is returned; its metrics["initialization"]["started_from"] says which and why.
    """
    options = options or RegistrationOptions()
    started = time.perf_counter()
    try:
        return _register(fixed, moving, options, progress, cancelled)
    except NoOverlapError as error:
        if not error.search:
            raise
        result = _register_from_other_candidates(fixed, moving, options, error, progress, cancelled)
        result.seconds = time.perf_counter() - started
        return result


def _register_from_other_candidates(fixed, moving, options: RegistrationOptions, error: NoOverlapError,
                                    progress, cancelled) -> RegistrationResult:
    """The registration from the first of `error.search`'s next candidates that overlaps; `error` if none does."""
    tried = initialization.try_candidate_starts(
        error.search, error.swapped, limit=NO_OVERLAP_TRIES, done=lambda result: True,
        attempt=lambda start: _register(fixed, moving, replace(options, initial_matrix=start), progress, cancelled))
    overlapping = [start for start in tried if start.error is None]
    if not overlapping:
        raise error
    chosen = overlapping[0]
    chosen.outcome.metrics["initialization"] = error.search | {
        "alternatives": [c for c in error.search["alternatives"] if c is not chosen.candidate],
        "started_from": {"start": chosen.label, "because": f"from the search winner, {error}"},
    }
    return chosen.outcome


def _register(fixed: sitk.Image, moving: sitk.Image, options: RegistrationOptions,
              progress: ProgressCallback | None, cancelled: CancelledCallback | None) -> RegistrationResult:
    """register_images from one start: the given one, or the pose search's winner."""
    if options.initialization not in INITIALIZATIONS:
        raise InputError(f"unknown initialisation '{options.initialization}' (use {', '.join(INITIALIZATIONS)})")
    if options.bias_correction not in BIAS_CORRECTIONS:
        raise InputError(f"unknown bias correction '{options.bias_correction}' (use {', '.join(BIAS_CORRECTIONS)})")
    if options.initial_matrix is not None:
        start = np.asarray(options.initial_matrix, dtype=float)
        if start.shape != (4, 4) or not np.all(np.isfinite(start)) or abs(np.linalg.det(start[:3, :3])) < 1e-6:
            raise InputError("the initial matrix must be an invertible 4x4 fixed->moving LPS matrix")
    check_user_masks(options.fixed_mask, options.moving_mask, options.mask_mode, options.use_masks)
    backend = choose_backend(options.backend, options.elastix_executable)
    parameters = stage_parameters(options, wheel=backend.name == "itk-elastix")
    started = time.perf_counter()
    _report(progress, 0.0, "preparing images")
    originals = {"fixed": fixed, "moving": moving}
    fixed, fixed_modality = _prepare(fixed, "fixed", options.fixed_modality)
    moving, moving_modality = _prepare(moving, "moving", options.moving_modality)
    swap = (fixed_modality, moving_modality) == ("MR", "CT")
    modalities = ("CT", "MR") if swap else (fixed_modality, moving_modality)
    result = RegistrationResult(sitk.Transform(), sitk.Transform(), *modalities, backend=backend.describe())
    stages = _StageRunner(options, parameters, backend, result.stage_seconds, progress, cancelled)
    pair = (moving, fixed) if swap else (fixed, moving)
    fine_pair = (originals["moving"], originals["fixed"]) if swap else (originals["fixed"], originals["moving"])
    start = options.initial_matrix
    if start is not None and swap:
        start = np.linalg.inv(start)
    user_masks = {"fixed_mask": options.moving_mask, "moving_mask": options.fixed_mask} if swap else {}
    try:
        inputs = _align_linear(*pair, modalities, replace(options, **user_masks), stages, result, start,
                               region_in_moving=swap, fine_pair=fine_pair)
    except NoOverlapError as error:
        if start is None and "alternatives" in result.metrics.get("initialization", {}):
            error.search, error.swapped = result.metrics["initialization"], swap
        raise
    if result.status == "mirrored":
        input_checks.check_mirror_evidence({"fixed": fixed, "moving": moving},
                                           {"fixed": options.fixed_modality, "moving": options.moving_modality})
    if swap:
        result.transform = sitk_from_matrix(np.linalg.inv(result.matrix))
        result.initial_transform = result.initial_transform.GetInverse()
        result.fixed_mask, result.moving_mask = result.moving_mask, result.fixed_mask
        result.log_bias_fields = {SWAPPED_ROLE[role]: log_field for role, log_field in result.log_bias_fields.items()}
        result.fixed_modality, result.moving_modality = fixed_modality, moving_modality
        result.stage_transforms = {stage: sitk_from_matrix(np.linalg.inv(matrix_from_sitk(transform)))
                                   for stage, transform in result.stage_transforms.items()}
        inputs = inputs.swapped() if inputs is not None else None
    if inputs is not None and options.crop:
        result.crop_region = physical_corners(inputs.fixed, faces=True)
    result.linear_transform = result.transform
    if "deformable" in parameters and result.status == "ok":
        result.transform = stages.guarded("deformable", inputs, result.transform, result)
    result.seconds = time.perf_counter() - started
    _report(progress, 1.0, "done")
    return result


@dataclass
class _ElastixInputs:
    """What elastix registers: working-grid images (MR bias-corrected), cropped to the common region, and masks."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_mask: sitk.Image | None
    moving_mask: sitk.Image | None
    modalities: tuple[str, str]
    # builds the same region on the FINE_SPACING_MM grid for FINE_STAGES, once and only if one of them runs
    make_fine: Callable[[], _ElastixInputs] | None = None
    # (low, high) per image that elastix registers it clamped to; None: as it is
    windows: tuple[tuple[float, float], tuple[float, float]] | None = None

    def swapped(self) -> _ElastixInputs:
        make = self.make_fine
        return _ElastixInputs(self.moving, self.fixed, self.moving_mask, self.fixed_mask, self.modalities[::-1],
                              functools.cache(lambda: make().swapped()) if make is not None else None,
                              self.windows[::-1] if self.windows is not None else None)

    def clamped(self, image: sitk.Image, role: str) -> sitk.Image:
        """`image` (this fixed or moving image, or one resampled from it) clamped to that role's window."""
        if self.windows is None:
            return image
        return sitk.Clamp(image, sitk.sitkFloat32, *self.windows[0 if role == "fixed" else 1])

    def for_stage(self, stage: str, fine_stages: tuple[str, ...]) -> _ElastixInputs:
        return self.make_fine() if stage in fine_stages and self.make_fine is not None else self


class _StageRunner:
    """Times named stages, reports each start to the progress callback, stops there when the user has
    cancelled, and runs the elastix stages over their share of the progress bar."""

    ELASTIX_PROGRESS = (0.55, 0.97)

    def __init__(self, options, parameters: dict[str, ParameterMap], backend: ElastixBackend, seconds: dict,
                 progress: ProgressCallback | None, cancelled: CancelledCallback | None):
        self.options, self.parameters, self.backend = options, parameters, backend
        self.seconds, self.progress, self.cancelled = seconds, progress, cancelled
        costs = np.cumsum([0.0] + [STAGE_COST[s] for s in parameters])
        low, high = self.ELASTIX_PROGRESS
        fractions = low + (high - low) * costs / costs[-1]
        self.spans = {s: (fractions[i], fractions[i + 1]) for i, s in enumerate(parameters)}
        self.fine_stages = FINE_STAGES + (("rigid",) if options.fine_rigid else ())

    def start(self, name: str, fraction: float, message: str) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("registration cancelled")
        self.name, self.clock = name, time.perf_counter()
        _report(self.progress, fraction, message)

    def stop(self) -> None:
        self.seconds[self.name] = time.perf_counter() - self.clock

    def elastix(self, stage: str, inputs: _ElastixInputs, initial: sitk.Transform) -> sitk.Transform:
        """Run one elastix stage from the linear transform `initial`; the composed fixed->moving result.

        Linear stages pass `initial` to elastix (composed: initial first). The deformable stage registers
        the fixed image to the moving one resampled through `initial`, so that its B-spline grid lies on
        the fixed object whatever the rotation: the result is initial(bspline(x))."""
        low, high = self.spans[stage]
        message = f"{stage} registration (elastix)"
        # the first fine stage builds the 1 mm images and their tissue bias field (seconds: done once)
        if stage in self.fine_stages:
            self.start(stage, low, f"{stage} registration: preparing the {FINE_SPACING_MM:g} mm images")
            inputs = inputs.for_stage(stage, self.fine_stages)
            _report(self.progress, low, message)
        else:
            self.start(stage, low, message)
        if stage == "deformable":
            job = self._deformable_job(inputs, initial)
        else:
            job = ElastixJob(
                inputs.clamped(inputs.fixed, "fixed"), inputs.clamped(inputs.moving, "moving"),
                [self.parameters[stage]],
                initial_transform_map=linear_transform_map(matrix_from_sitk(initial), inputs.fixed),
                fixed_mask=self._sampled_region(stage, inputs, initial),
                # an affine stage with a moving mask inflates the object (samples that leave the mask are dropped)
                moving_mask=inputs.moving_mask if self.options.use_masks and stage == "rigid" else None,
                threads=self.options.threads,
            )
        maps = self.backend.run(
            job, cancelled=self.cancelled,
            progress=lambda fraction: _report(self.progress, low + (high - low) * fraction, message),
        )
        self.stop()
        found = sitk_from_transform_map(maps[-1])
        return sitk.CompositeTransform([initial, found]) if stage == "deformable" else compose(initial, found)

    def guarded(self, stage: str, inputs: _ElastixInputs, initial: sitk.Transform, result) -> sitk.Transform:
        """Run `stage` from `initial` unless the images share too little of their objects; keep its result only
        if the stage guard finds it better (or forced)."""
        matrix = matrix_from_sitk(initial)
        shared = min(_mask_overlap_fraction(result.fixed_mask, result.moving_mask, matrix),
                     _mask_overlap_fraction(result.moving_mask, result.fixed_mask, np.linalg.inv(matrix)))
        if skipped_for_partial_views(stage, shared, self.options.force_stages, result.metrics, result.warnings):
            return initial
        found = result.stage_transforms[stage] = self.elastix(stage, inputs, initial)
        self.start(f"{stage}_guard", self.spans[stage][1], f"checking the {stage} result")
        cue = EdgeCue(inputs.fixed, inputs.moving, inputs.fixed_mask, inputs.moving_mask)
        chosen = guard_stage(stage, cue, initial, found, self.options.force_stages, result.metrics, result.warnings,
                             inputs.fixed_mask)
        self.stop()
        return chosen

    def _sampled_region(self, stage: str, inputs: _ElastixInputs, initial: sitk.Transform) -> sitk.Image | None:
        """Where elastix samples the fixed image: its mask (when masks are on), and for the stages of
        VIEW_MARGIN_MM where `initial` maps that margin inside the moving image, for those of
        CT_PADDING_MARGIN_MM clear of a CT's padding, for those of INTERIOR_MARGIN_MM that far inside all of
        this. Elastix drops samples that leave a partial moving image,
        which rewards transforms that push them out. The rigid stage keeps the moving mask instead."""
        region = inputs.fixed_mask if self.options.use_masks else None
        if stage in VIEW_MARGIN_MM:
            in_view = in_view_mask(inputs.fixed, inputs.moving, initial, VIEW_MARGIN_MM[stage])
            region = sitk.And(region, in_view) if region is not None else in_view
        if stage in CT_PADDING_MARGIN_MM:
            region = _clear_of_ct_padding(region, inputs, initial, CT_PADDING_MARGIN_MM[stage])
        if stage in INTERIOR_MARGIN_MM and region is not None:
            region = _interior(region, INTERIOR_MARGIN_MM[stage])
        return region

    def _deformable_job(self, inputs: _ElastixInputs, initial: sitk.Transform) -> ElastixJob:
        """The moving image resampled on the fixed grid, sampled in `_sampled_region` (outside the moving
        image's view the resampled background would pull the B-spline). No moving mask: discarding samples
        that leave it rewards deformations that push them out (found to inflate the object)."""
        moving = resample_on_grid(inputs.moving, inputs.fixed, initial, pixel_type=inputs.moving.GetPixelID())
        return ElastixJob(inputs.clamped(inputs.fixed, "fixed"), inputs.clamped(moving, "moving"),
                          [self.parameters["deformable"]],
                          fixed_mask=self._sampled_region("deformable", inputs, initial),
                          threads=self.options.threads)


def _clear_of_ct_padding(region: sitk.Image | None, inputs: _ElastixInputs, initial: sitk.Transform,
                         margin_mm: float) -> sitk.Image | None:
    """`region` without the fixed voxels within `margin_mm` of a CT's padding, in either image (the moving one
    mapped through `initial`); unchanged when that would leave less than half of it."""
    clear = []
    for image, modality, transform in zip((inputs.fixed, inputs.moving), inputs.modalities, (None, initial)):
        away = away_from_ct_padding(image, margin_mm) if modality == "CT" else None
        if away is not None:
            clear.append(away if transform is None else resample_on_grid(
                away, inputs.fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    if not clear:
        return region
    kept = functools.reduce(sitk.And, clear if region is None else [region, *clear])
    before = np.count_nonzero(sitk.GetArrayViewFromImage(region)) if region is not None else np.prod(
        inputs.fixed.GetSize())
    return _unless_under_half(kept, before, region)


def _interior(region: sitk.Image, margin_mm: float) -> sitk.Image:
    """The voxels of `region` at least `margin_mm` inside it; `region` itself when that leaves less than half."""
    return _unless_under_half(inside_by(region, margin_mm), np.count_nonzero(sitk.GetArrayViewFromImage(region)),
                              region)


def _unless_under_half(kept: sitk.Image, before: int, region: sitk.Image | None) -> sitk.Image | None:
    """`kept` when it holds at least half of the `before` voxels it was cut from, else `region` unchanged."""
    return kept if np.count_nonzero(sitk.GetArrayViewFromImage(kept)) >= 0.5 * before else region


def _bias_corrected(image: sitk.Image, mask: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """`image` divided by its N4 bias field, and the log field."""
    log_field = estimate_log_bias_field(image, mask)
    return remove_bias_field(image, log_field), log_field


def _use_bias_correction(options: RegistrationOptions, modality: str) -> bool:
    return modality == "MR" if options.bias_correction == "auto" else options.bias_correction == "on"


def _fine_inputs(coarse: _ElastixInputs, fixed: sitk.Image, moving: sitk.Image, modalities,
                 options: RegistrationOptions, corrected: set[str]) -> _ElastixInputs:
    """The region of `coarse` cut from the input images `fixed` and `moving` on their FINE_SPACING_MM grids,
    with foreground masks found on those grids (a 2 mm mask's blocky outline costs the fine stages accuracy);
    the `corrected` roles divided by a bias field of TISSUE_DETAIL; each image's
    INTENSITY_PERCENT window within its mask."""
    images, masks = [], []
    for role, image, grid, modality in zip(("fixed", "moving"), (fixed, moving), (coarse.fixed, coarse.moving),
                                           modalities):
        region = crop_to_points(image, physical_corners(grid, faces=True), 0.0)
        fine = shrink_to_spacing(sitk.Cast(region, sitk.sitkFloat32), FINE_SPACING_MM)
        user_mask = options.fixed_mask if role == "fixed" else options.moving_mask
        masks.append(combine_masks(foreground_mask(fine, modality), user_mask, options.mask_mode, role))
        if role in corrected:
            fine = remove_bias_field(fine, estimate_log_bias_field(fine, masks[-1], TISSUE_DETAIL))
        images.append(fine)
    windows = tuple(intensity_window(image, mask, INTENSITY_PERCENT) for image, mask in zip(images, masks))
    return _ElastixInputs(*images, *masks, modalities, windows=windows)


def _align_linear(fixed, moving, modalities, options, stages: _StageRunner, result, start,
                  region_in_moving: bool, fine_pair: tuple[sitk.Image, sitk.Image]) -> _ElastixInputs | None:
    """Masks, initialisation, bias correction, common-region crop and the linear elastix stages.

    Sets result.transform; returns the cropped inputs for a later deformable stage (None when mirrored).
    The pose search reads edges, mask overlap and intensity statistics that a bias field barely moves, and
    it was found more decisive on the uncorrected MR; N4 serves the intensity-based elastix stages."""
    stages.start("masks", 0.02, "masking CT table, air and MR background")
    with ThreadPoolExecutor(max_workers=1) as background:  # each image in one thread only
        moving_mask = background.submit(foreground_mask, moving, modalities[1])
        fixed_mask, moving_mask = foreground_mask(fixed, modalities[0]), moving_mask.result()
    fixed_mask = combine_masks(fixed_mask, options.fixed_mask, options.mask_mode, "fixed")
    moving_mask = combine_masks(moving_mask, options.moving_mask, options.mask_mode, "moving")
    result.fixed_mask, result.moving_mask = fixed_mask, moving_mask
    stages.stop()
    corrected_roles = {role for role, modality in zip(("fixed", "moving"), modalities)
                       if _use_bias_correction(options, modality)}
    with ThreadPoolExecutor(max_workers=1) as background:  # N4 needs no pose: it runs while the search does
        corrections = {role: background.submit(_bias_corrected, own_copy(image), own_copy(mask))  # see own_copy
                       for role, image, mask in (("fixed", fixed, fixed_mask), ("moving", moving, moving_mask))
                       if role in corrected_roles}
        try:
            stages.start("initialization", 0.1, "searching all orientations")
            initial = snapped(_initialize(fixed, moving, modalities, options, result, start))
            _check_boxes_overlap(fixed, moving, initial)
            result.initial_transform = result.transform = sitk_from_matrix(initial)
            stages.stop()
            if result.status == "mirrored":
                return None
            for role, correction in corrections.items():
                stages.start(f"bias_correction_{role}", 0.45, f"correcting the {role} image's MR bias field (N4)")
                corrected, result.log_bias_fields[role] = correction.result()
                fixed, moving = (corrected, moving) if role == "fixed" else (fixed, corrected)
                stages.stop()
        finally:
            for correction in corrections.values():
                correction.cancel()

    inputs = _ElastixInputs(fixed, moving, fixed_mask, moving_mask, modalities)
    if options.crop:
        stages.start("crop", 0.5, "cropping to the common region")
        fixed_box, moving_box, margin = crop_boxes(fixed_mask, moving_mask, initial, options.crop_region,
                                                   region_in_moving)
        inputs = _ElastixInputs(
            crop_to_points(fixed, fixed_box, margin), crop_to_points(moving, moving_box, margin),
            crop_to_points(fixed_mask, fixed_box, margin), crop_to_points(moving_mask, moving_box, margin),
            modalities,
        )
        result.metrics["cropped_sizes"] = {"fixed": list(inputs.fixed.GetSize()),
                                           "moving": list(inputs.moving.GetSize())}
        stages.stop()

    coarse = inputs
    inputs.make_fine = functools.cache(lambda: _fine_inputs(coarse, *fine_pair, modalities, options, corrected_roles))
    if "rigid" in stages.parameters:
        result.transform = result.stage_transforms["rigid"] = stages.elastix("rigid", inputs, result.transform)
    if "affine" in stages.parameters:
        result.transform = stages.guarded("affine", inputs, result.transform, result)

    overlap = _mask_overlap_fraction(result.fixed_mask, result.moving_mask, matrix_from_sitk(result.transform))
    result.metrics["foreground_overlap"] = round(overlap, 4)
    if overlap < MIN_OVERLAP_FRACTION:
        raise NoOverlapError(
            f"the images do not overlap after registration (only {overlap:.0%} of the fixed object "
            "lands on the moving object): check that both images show the same anatomy"
        )
    return inputs
