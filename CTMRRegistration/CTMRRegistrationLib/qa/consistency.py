"""Does the registration come out the same when asked again? Without ground truth, a right answer is
one that
- the opposite registration (moving onto fixed) inverts: the residual of backward(forward(p)) - p over
  the fixed object (`inverse consistency`, mm);
- short rigid elastix runs started from perturbed poses around it return to (`restart drift`: how far
  they end from it; `restart spread`: how far they end from each other, mm).
A wrong pose is seldom an optimum the intensity metric returns to from every side.

The refinement runs elastix's rigid stage (the shipped Rigid preset, shortened: one resolution, fewer
iterations) on the QA grids with both foreground masks, with the CT as elastix's fixed image as the pipeline
does: restarts with the MR fixed scatter around correct results. For the same reason a backward transform found
by refinement (MR fixed when the forward registration had the CT fixed) is a noisy cue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ..core.errors import NoOverlapError
from ..core.geometry import map_points, matrix_from_sitk, p95, p95_distance, sitk_from_matrix
from ..core.imaging import in_view_mask
from ..core.resources import parameter_file
from ..elastix.backends import ElastixBackend
from ..elastix.parameters import ElastixJob, read_parameter_file
from ..elastix.transforms import linear_transform_map, sitk_from_transform_map
from .images import QAImages

REFINEMENT_OVERRIDES = {"NumberOfResolutions": ["1"], "MaximumNumberOfIterations": ["300"],
                        "NumberOfSpatialSamples": ["3000"]}
# 300 iterations: with fewer, restarts around right results do not settle and fail them
PERTURBATION_MM = 4.0
PERTURBATION_DEGREES = 4.0
# Directions of the perturbations, in pairs of opposites so that the starts surround the pose.
_AXES = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]]) / np.sqrt(3.0)
_SHIFTS = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, -1.0, -1.0]]) / np.sqrt(2.0)


@dataclass(frozen=True)
class RigidRefiner:
    """Short rigid elastix registrations on the run's backend, stopped when `cancelled()` turns true."""

    backend: ElastixBackend
    threads: int | None = None
    cancelled: Callable[[], bool] | None = None

    def __call__(self, fixed: sitk.Image, moving: sitk.Image, start: np.ndarray, fixed_mask: sitk.Image | None = None,
                 moving_mask: sitk.Image | None = None) -> np.ndarray:
        """The pose a short rigid registration reaches from the 4x4 fixed->moving pose `start`."""
        parameters = read_parameter_file(parameter_file("Rigid")) | REFINEMENT_OVERRIDES
        job = ElastixJob(fixed, moving, [parameters], initial_transform_map=linear_transform_map(start, fixed),
                         fixed_mask=fixed_mask, moving_mask=moving_mask, threads=self.threads)
        stage = sitk_from_transform_map(self.backend.run(job, cancelled=self.cancelled)[-1])
        return matrix_from_sitk(stage) @ start  # elastix's "Compose": the start applies first


def inverse_consistency(forward, backward, points: np.ndarray) -> dict:
    """Residual |backward(forward(p)) - p| (mm) over fixed points, for any two transforms (matrices or
    SimpleITK transforms): forward maps fixed to moving, backward moving to fixed."""
    residual = np.linalg.norm(map_points(backward, map_points(forward, points)) - points, axis=1)
    return {"inverse_consistency_mean_mm": round(float(residual.mean()), 3),
            "inverse_consistency_p95_mm": round(p95(residual), 3),
            "inverse_consistency_max_mm": round(float(residual.max()), 3)}


def backward_by_refinement(images: QAImages, matrix: np.ndarray, refine: RigidRefiner) -> np.ndarray:
    """The moving->fixed pose found by registering the fixed image onto the moving one from the inverse of
    `matrix` (the moving image is then the fixed one of elastix)."""
    return refine(images.moving, images.fixed, np.linalg.inv(matrix), images.moving_mask, images.fixed_mask)


def perturbed_starts(matrix: np.ndarray, centre: np.ndarray, count: int,
                     millimetres: float = PERTURBATION_MM, degrees: float = PERTURBATION_DEGREES) -> list[np.ndarray]:
    """`count` (at most 4) poses around `matrix`: the fixed space rotated by `degrees` about `centre` and
    shifted by `millimetres`, in opposite directions in turn."""
    starts = []
    for axis, shift in list(zip(_AXES, _SHIFTS))[:count]:
        motion = np.eye(4)
        motion[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()
        motion[:3, 3] = centre - motion[:3, :3] @ centre + millimetres * shift
        starts.append(matrix @ motion)
    return starts


def _ct_fixed(images: QAImages, matrix: np.ndarray) -> tuple[tuple, np.ndarray, np.ndarray, bool]:
    """(fixed, moving, fixed mask, moving mask), pose and object centre for elastix with the CT fixed, and
    whether that swapped the images."""
    if (images.fixed_modality, images.moving_modality) == ("MR", "CT"):
        roles = (images.moving, images.fixed, images.moving_mask, images.fixed_mask)
        return roles, np.linalg.inv(matrix), map_points(matrix, images.centre[None])[0], True
    return (images.fixed, images.moving, images.fixed_mask, images.moving_mask), matrix, images.centre, False


def restart_stability(images: QAImages, matrix: np.ndarray, refine: RigidRefiner, starts: int = 2) -> dict:
    """Drift (p95 distance over the object from `matrix`, worst start) and spread (worst p95 distance
    between two ends) of short rigid registrations from perturbed starts, run with the CT fixed; when a
    restart finds no overlap, how many did instead."""
    (fixed, moving, fixed_mask, moving_mask), pose, centre, swapped = _ct_fixed(images, matrix)
    ends, lost = [], 0
    # only where the moving image has data: a partial moving view would leave most samples outside it
    seen = in_view_mask(fixed, moving, sitk_from_matrix(pose))
    fixed_mask = seen if fixed_mask is None else sitk.And(fixed_mask, seen)
    for start in perturbed_starts(pose, centre, starts):
        try:
            ends.append(refine(fixed, moving, start, fixed_mask, moving_mask))
        except NoOverlapError:  # the images barely overlap near the result: graded as a failure
            lost += 1
    if lost:
        return {"restarts_without_overlap": lost, "restarts": starts}
    ends = [np.linalg.inv(end) for end in ends] if swapped else ends
    points = images.object_points
    drifts = [p95_distance(end, matrix, points) for end in ends]
    spreads = [p95_distance(a, b, points) for i, a in enumerate(ends) for b in ends[i + 1:]]
    return {"restart_drift_mm": round(max(drifts), 3), "restart_spread_mm": round(max(spreads, default=0.0), 3),
            "restarts": len(ends)}
