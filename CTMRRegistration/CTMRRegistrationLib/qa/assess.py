"""Quality assessment of any fixed->moving transform between two volumes, with or without ground truth.

Without ground truth (these make the verdict, see `verdict`): foreground overlap and edge agreement under
the transform, restart stability of short rigid registrations around it, inverse consistency with a
backward (moving->fixed) transform, and for deformable transforms the Jacobian determinant in the fixed
object. Beside the verdict, `error_bound_mm`: an upper bound on the result's p95 error (mm), calibrated on
bench/qa_calibration.py's labelled set. With ground truth, reported beside: TRE at paired target points and
Dice / Hausdorff / HD95 / mean surface distance of paired segmentations, before and after registration.

For a linear transform every cue, the verdict and the bound are the same whichever image is fixed (with the
inverse transform): each cue is measured from both images' sides (see `images`, `agreement`, `consistency`).

Inverse consistency needs a backward transform: the pipeline's own when it registered both directions, or
one the caller gives. `QAOptions.backward_refinement` finds one for a linear transform by a short rigid
registration of the fixed image onto the moving one from the inverse of the transform; it is off by
default because it is noisy when that puts the MR as elastix's fixed image (see `consistency`). Restarts
and the backward refinement are skipped for non-linear transforms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..core.errors import Cancelled
from ..core.geometry import matrix_from_sitk, sitk_from_matrix
from ..elastix.backends import ElastixBackend, choose_backend
from ..landmarks.fit_errors import target_errors
from . import consistency
from .agreement import edge_agreement, foreground_overlap
from .images import prepare_qa_images
from .jacobian import jacobian_statistics
from .segmentation_metrics import segmentation_metrics
from .verdict import error_bound_mm, grade_cues


@dataclass
class QAOptions:
    """What the assessment runs beyond the cheap image cues (about 1 s each on the 2 mm pair)."""

    restarts: int = 2  # short rigid elastix runs from perturbed starts (0 to skip; at most 4)
    backward_refinement: bool = False  # find a backward transform by refinement when none is given
    threads: int | None = None
    fixed_modality: str | None = None
    moving_modality: str | None = None
    backend: ElastixBackend | None = None  # what runs the restarts: the registration's (default: chosen as 'auto')
    bias_correction: str = "auto"  # MR bias-field correction of the QA images, as the registration's: auto, on, off


@dataclass
class QAResult:
    """The verdict, its reasons in words, every metric computed, and the time taken."""

    verdict: str
    reasons: list[str]
    metrics: dict
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    backend: str = ""  # the elastix that ran the restarts, with its version ("" when none ran)

    def as_dict(self) -> dict:
        """The JSON form printed by `ctmr-qa --json`."""
        return {"verdict": self.verdict, "error_bound_mm": self.metrics.get("error_bound_mm"), "reasons": self.reasons,
                "metrics": self.metrics,
                "seconds": round(self.seconds, 3),
                "stage_seconds": {name: round(value, 3) for name, value in self.stage_seconds.items()}}


class _Clock:
    """Times each step of the assessment, and stops before a step once the user has cancelled."""

    def __init__(self, seconds: dict, cancelled: Callable[[], bool] | None):
        self.seconds, self.cancelled = seconds, cancelled

    def __call__(self, name: str, work):
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("registration cancelled")
        started = time.perf_counter()
        value = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return value


def _as_sitk(transform) -> sitk.Transform:
    return sitk_from_matrix(transform) if isinstance(transform, np.ndarray) else transform


def linear_matrix(transform: sitk.Transform) -> np.ndarray | None:
    """The 4x4 matrix of a linear transform (composites of linear ones included), None when non-linear."""
    try:
        return matrix_from_sitk(transform)
    except ValueError:
        return None


def _ground_truth(metrics: dict, transform, before, targets, segmentations, clock) -> None:
    if targets is not None:
        after = clock("targets", lambda: target_errors(transform, *targets))
        metrics["targets"] = {"after": after.as_dict(), "before": target_errors(before, *targets).as_dict()}
    if segmentations is not None:
        fixed_labels, moving_labels, names = segmentations
        metrics["segmentations"] = clock("segmentations", lambda: {
            "before": segmentation_metrics(fixed_labels, moving_labels, before, names),
            "after": segmentation_metrics(fixed_labels, moving_labels, transform, names),
        })


def assess(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform,
    backward=None,
    fixed_targets=None,
    moving_targets=None,
    fixed_segmentation: sitk.Image | None = None,
    moving_segmentation: sitk.Image | None = None,
    segment_names: dict[int, str] | None = None,
    before=None,
    fixed_mask: sitk.Image | None = None,
    moving_mask: sitk.Image | None = None,
    options: QAOptions | None = None,
    cancelled: Callable[[], bool] | None = None,
    log_bias_fields: dict[str, sitk.Image] | None = None,
) -> QAResult:
    """Assess `transform` (fixed->moving LPS: SimpleITK transform or 4x4 matrix) between two images.

    `backward`: a moving->fixed transform for inverse consistency. Targets: paired (N, 3) LPS points;
    segmentations: labelmaps, compared label by label (`segment_names` name the values). `before` is the
    transform the "before" figures use (default: the headers as they are). Masks, when given (e.g. the
    pipeline's), spare computing them, as do the bias fields the registration divided out (`log_bias_fields`,
    see `prepare_qa_images`). `cancelled()` is polled before each step and inside the restarts."""
    options = options or QAOptions()
    started, seconds = time.perf_counter(), {}
    clock = _Clock(seconds, cancelled)
    transform = _as_sitk(transform)
    images = clock("prepare", lambda: prepare_qa_images(fixed, moving, options.fixed_modality, options.moving_modality,
                                                        fixed_mask, moving_mask, options.bias_correction,
                                                        log_bias_fields))
    metrics = {"fixed_modality": images.fixed_modality, "moving_modality": images.moving_modality,
               "object_centre_lps": [round(float(c), 2) for c in images.centre]}
    matrix, refine = linear_matrix(transform), None
    inverse = None if matrix is None else sitk_from_matrix(np.linalg.inv(matrix))
    points = consistency.SharedPoints(images.object_points, images.moving_points)
    if matrix is not None:
        points = consistency.shared_points(images, matrix)
        if options.restarts > 0 or (backward is None and options.backward_refinement):
            refine = consistency.RigidRefiner(options.backend or choose_backend(), options.threads, cancelled)
    with ThreadPoolExecutor(max_workers=1) as background:  # elastix restarts while numpy measures the images
        restarts = None
        if matrix is not None and options.restarts > 0:
            own = images.copy()  # no SimpleITK image is used by two threads at once
            restarts = background.submit(clock, "restarts", lambda: consistency.restart_stability(
                own, matrix, refine, options.restarts, points))
        metrics |= clock("overlap", lambda: foreground_overlap(images, transform, inverse))
        metrics |= clock("edges", lambda: edge_agreement(images, transform, inverse, matrix))
        if matrix is None:
            metrics |= clock("jacobian", lambda: jacobian_statistics(transform, images.fixed, images.fixed_mask))
        else:
            metrics["jacobian_determinant"] = round(float(np.linalg.det(matrix[:3, :3])), 6)
        if restarts is not None:
            metrics |= restarts.result()
    if matrix is not None:
        if backward is None and options.backward_refinement:
            backward = clock("backward", lambda: consistency.backward_by_refinement(images, matrix, refine))
            metrics["backward"] = "refined from the inverse"
        elif backward is not None:
            metrics["backward"] = "given"
    if backward is not None:
        metrics |= consistency.inverse_consistency(transform, _as_sitk(backward), points.fixed, points.moving)
    targets = None if fixed_targets is None or moving_targets is None else (fixed_targets, moving_targets)
    segmentations = None
    if fixed_segmentation is not None and moving_segmentation is not None:
        segmentations = (fixed_segmentation, moving_segmentation, segment_names)
    _ground_truth(metrics, transform, _as_sitk(before) if before is not None else sitk.Transform(), targets,
                  segmentations, clock)
    verdict = grade_cues(metrics)
    metrics["error_bound_mm"] = error_bound_mm(metrics) if matrix is not None else None
    backend = refine.backend.describe() if refine is not None else ""
    return QAResult(verdict.verdict, verdict.reasons, metrics, time.perf_counter() - started, seconds, backend)
