"""Does the registration come out the same when asked again? Without ground truth, a right answer is
one that
- the opposite registration (moving onto fixed) inverts: the residual of backward(forward(p)) - p over the
  fixed object and of forward(backward(q)) - q over the moving object (`inverse consistency`, mm);
- short rigid elastix runs started from perturbed poses around it return to (`restart drift`: how far
  they end from it; `restart spread`: how far they end from each other; `restart offset`: how far the
  mean of their ends is from it, mm).
A wrong pose is seldom an optimum the intensity metric returns to from every side.

The refinement runs elastix's rigid stage (the shipped Rigid preset, shortened: one resolution, fewer
iterations) on the QA grids with both foreground masks, with the CT as elastix's fixed image as the pipeline
does: restarts with the MR fixed scatter around correct results. For the same reason a backward transform found
by refinement (MR fixed when the forward registration had the CT fixed) is a noisy cue.

Every distance is measured the same whichever image is fixed: between two transforms it is taken over the
points of both objects where the other image sees them (`shared_points`), the fixed object's in the moving
space and the moving object's, through the inverses, in the fixed space; the restarts run with the same image
as elastix's fixed one (the CT; of two images of one modality, the larger object) and start around the
centre of those points.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from ..core.errors import NoOverlapError
from ..core.geometry import map_points, matrix_from_sitk, p95, sitk_from_matrix, snapped, transform_points
from ..core.imaging import in_view_mask, index_to_physical_matrix, own_copy
from ..core.resources import parameter_file
from ..elastix.backends import ElastixBackend
from ..elastix.parameters import ElastixJob, read_parameter_file
from ..elastix.transforms import linear_transform_map, sitk_from_transform_map
from .images import QAImages

REFINEMENT_OVERRIDES = {"NumberOfResolutions": ["1"], "MaximumNumberOfIterations": ["300"],
                        "NumberOfSpatialSamples": ["3000"]}
# 300 iterations: with fewer, restarts around right results do not settle and fail them
PERTURBATION_MM = 2.0  # with 4 mm and 4 degrees one restart in two of a right result on a cropped phantom
PERTURBATION_DEGREES = 2.0  # left for another optimum 10-20 mm away; from 2 and 2 they return
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


@dataclass(frozen=True)
class SharedPoints:
    """Points of the fixed object (fixed space) and of the moving object (moving space), LPS, N x 3."""

    fixed: np.ndarray
    moving: np.ndarray


def _inside_box(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return np.zeros(0, dtype=bool)
    index = np.linalg.solve(index_to_physical_matrix(image)[:3, :3], (points - image.GetOrigin()).T).T
    return np.all((index >= -0.5) & (index <= np.asarray(image.GetSize()) - 0.5), axis=1)


def shared_points(images: QAImages, matrix: np.ndarray) -> SharedPoints:
    """The fixed object's points that `matrix` (fixed->moving) maps inside the moving image, and the moving
    object's points that its inverse maps inside the fixed image: where both images show the object. An
    object none of whose points the other image sees keeps all its points."""
    fixed, moving = images.object_points, images.moving_points
    seen = _inside_box(images.moving, transform_points(matrix, fixed))
    moving_seen = _inside_box(images.fixed, transform_points(np.linalg.inv(matrix), moving))
    return SharedPoints(fixed[seen] if seen.any() else fixed, moving[moving_seen] if moving_seen.any() else moving)


def distances_both_ways(a: np.ndarray, b: np.ndarray, points: SharedPoints) -> np.ndarray:
    """|a(p) - b(p)| over the fixed points and |a^-1(q) - b^-1(q)| over the moving points (mm), for two
    fixed->moving matrices: the same distances for their inverses with the points exchanged."""
    forward = np.linalg.norm(transform_points(a, points.fixed) - transform_points(b, points.fixed), axis=1)
    backward = np.linalg.norm(transform_points(np.linalg.inv(a), points.moving)
                              - transform_points(np.linalg.inv(b), points.moving), axis=1)
    return np.concatenate([forward, backward])


def p95_both_ways(a: np.ndarray, b: np.ndarray, points: SharedPoints) -> float:
    return p95(distances_both_ways(a, b, points))


def inverse_consistency(forward, backward, points: np.ndarray, moving_points: np.ndarray | None = None) -> dict:
    """Residual |backward(forward(p)) - p| (mm) over fixed points, and |forward(backward(q)) - q| over
    `moving_points` when given, for any two transforms (matrices or SimpleITK transforms): forward maps fixed to
    moving, backward moving to fixed."""
    residual = np.linalg.norm(map_points(backward, map_points(forward, points)) - points, axis=1)
    if moving_points is not None and len(moving_points):
        back = np.linalg.norm(map_points(forward, map_points(backward, moving_points)) - moving_points, axis=1)
        residual = np.concatenate([residual, back])
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


def _object_volume(mask: sitk.Image) -> float:
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(mask.GetSpacing()))


def elastix_roles_swapped(images: QAImages) -> bool:
    """Whether the restarts run with the moving image as elastix's fixed one: the CT is elastix's fixed image
    (the MR fixed scatters restarts around correct results); between images of one modality, the larger
    object. The choice does not depend on which image the caller made fixed."""
    modalities = (images.fixed_modality, images.moving_modality)
    if modalities == ("MR", "CT"):
        return True
    if modalities == ("CT", "MR"):
        return False
    return _object_volume(images.moving_mask) > _object_volume(images.fixed_mask)


def _mean_end(ends: list[np.ndarray], matrix: np.ndarray, points: SharedPoints) -> float:
    """p95 distance (both ways) between `matrix` and the point-wise mean of the restarts' ends: where the
    restarts, started on opposite sides of the result, agree the optimum is."""
    forward = np.mean([transform_points(end, points.fixed) for end in ends], axis=0)
    backward = np.mean([transform_points(np.linalg.inv(end), points.moving) for end in ends], axis=0)
    return p95(np.concatenate([np.linalg.norm(forward - transform_points(matrix, points.fixed), axis=1),
                               np.linalg.norm(backward - transform_points(np.linalg.inv(matrix), points.moving),
                                              axis=1)]))


def _side_by_side(refine: RigidRefiner, images: tuple[sitk.Image, ...], starts: list[np.ndarray]
                  ) -> tuple[list[np.ndarray], int]:
    """The ends of `refine` from each start, run at once with a share of the threads each (each on its own copy
    of the images: see own_copy), and how many found no overlap (the images barely overlap near the result).
    The itk-elastix wheel runs elastix inside this process, whose log is global: there, one at a time."""
    at_once = 1 if refine.backend.name == "itk-elastix" else max(len(starts), 1)
    share = replace(refine, threads=max(1, (refine.threads or os.cpu_count() or 1) // at_once))

    def run(start: np.ndarray) -> np.ndarray | None:
        fixed, moving, fixed_mask, moving_mask = (own_copy(image) for image in images)
        try:
            return share(fixed, moving, start, fixed_mask, moving_mask)
        except NoOverlapError:
            return None

    with ThreadPoolExecutor(max_workers=at_once) as pool:
        found = list(pool.map(run, starts))
    return [end for end in found if end is not None], sum(end is None for end in found)


def restart_stability(images: QAImages, matrix: np.ndarray, refine: RigidRefiner, starts: int = 2,
                      points: SharedPoints | None = None) -> dict:
    """Drift (p95 distance from `matrix`, worst start), spread (worst p95 distance between two ends) and offset
    (p95 distance from `matrix` to the mean of the ends) of short rigid registrations from perturbed starts,
    distances both ways over `points` (default: `shared_points`); when a restart finds no overlap, how many
    did instead."""
    points = points or shared_points(images, matrix)
    swapped = elastix_roles_swapped(images)
    roles = images.swapped() if swapped else images
    pose = snapped(np.linalg.inv(matrix) if swapped else matrix)
    role_points = SharedPoints(points.moving, points.fixed) if swapped else points
    centre = np.concatenate([role_points.fixed, transform_points(np.linalg.inv(pose), role_points.moving)]).mean(axis=0)
    # only where the moving image has data: a partial moving view would leave most samples outside it
    seen = in_view_mask(roles.fixed, roles.moving, sitk_from_matrix(pose))
    ends, lost = _side_by_side(refine, (roles.fixed, roles.moving, sitk.And(roles.fixed_mask, seen), roles.moving_mask),
                               perturbed_starts(pose, centre, starts))
    if lost:
        return {"restarts_without_overlap": lost, "restarts": starts}
    ends = [np.linalg.inv(end) for end in ends] if swapped else ends
    drifts = [p95_both_ways(end, matrix, points) for end in ends]
    spreads = [p95_both_ways(a, b, points) for i, a in enumerate(ends) for b in ends[i + 1:]]
    return {"restart_drift_mm": round(max(drifts), 3), "restart_spread_mm": round(max(spreads, default=0.0), 3),
            "restart_offset_mm": round(_mean_end(ends, matrix, points), 3), "restarts": len(ends)}
