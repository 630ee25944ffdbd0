"""Global initialisation: find the pose of the moving image without assuming one.

The 24 axis-aligned rotations and about a thousand more spread evenly over all orientations are each
combined with the translation that centres the masks, and scored at coarse resolution (see
`pose_scoring`). The best distinct poses are refined locally (Mattes MI inside the fixed mask) and
re-scored; the best wins. The same search on a mirrored moving image tells whether the moving header
looks left-right flipped. Everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..core.errors import NoOverlapError
from ..core.rotations import angle_between, search_rotations
from .coarse_view import SEED, CoarseView
from .pose_scoring import CUES, PoseScorer

SEARCH_SPACING_MM = 5.0
EVEN_ROTATIONS = 1000
REFINED_CANDIDATES = 6
MIRROR_REFINED_CANDIDATES = 2
DISTINCT_DEGREES = 25.0
MIRROR_MARGIN = 1.5


def _refine(fixed: CoarseView, moving: CoarseView, matrix: np.ndarray, threads: int | None) -> np.ndarray:
    """Local rigid refinement of a pose at coarse resolution and half that (Mattes MI in the fixed mask)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed.centroid.tolist())
    transform.SetMatrix(matrix[:3, :3].ravel().tolist(), 1e-4)
    transform.SetTranslation((matrix[:3, 3] + matrix[:3, :3] @ fixed.centroid - fixed.centroid).tolist())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(24)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.25, SEED)
    method.SetMetricFixedMask(sitk.BinaryDilate(fixed.mask, [2, 2, 2]))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(3.0, 0.05, 150, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SetInitialTransform(transform, inPlace=True)
    if threads:
        method.SetNumberOfThreads(threads)
    try:
        method.Execute(fixed.image, moving.image)
    except RuntimeError:
        return matrix
    refined = np.eye(4)
    refined[:3, :3] = np.asarray(transform.GetMatrix()).reshape(3, 3)
    refined[:3, 3] = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    return refined


@dataclass
class SearchResult:
    """The best fixed->moving pose (4x4 LPS) of one search, its combined score and cue values."""

    matrix: np.ndarray
    score: float
    cues: dict
    candidates_scored: int
    runner_up_score: float | None
    sweep_rank: int  # rank, among the refined candidates, of the one that won


class _ScoreScale:
    """Combines cues into one score: the sum of their z-scores over all candidates of the sweep."""

    def __init__(self, cues: np.ndarray):
        valid = cues[~np.isnan(cues).any(axis=1)]
        self.mean, self.std = valid.mean(axis=0), valid.std(axis=0) + 1e-9

    def __call__(self, cues: np.ndarray) -> float:
        return float(np.sum((cues - self.mean) / self.std)) if not np.isnan(cues).any() else -np.inf


def _distinct_best(poses: list[np.ndarray], scores: np.ndarray, count: int) -> list[np.ndarray]:
    chosen: list[np.ndarray] = []
    for index in np.argsort(-scores):
        if not np.isfinite(scores[index]):
            break
        if all(angle_between(poses[index], other) > DISTINCT_DEGREES for other in chosen):
            chosen.append(poses[index])
            if len(chosen) == count:
                break
    return chosen


def search_pose(fixed: CoarseView, moving: CoarseView, refined_candidates: int = REFINED_CANDIDATES,
                threads: int | None = None) -> SearchResult:
    """Score every candidate rotation, refine the best distinct few, return the best refined pose."""
    scorer = PoseScorer(fixed, moving)
    poses = scorer.poses(search_rotations(EVEN_ROTATIONS))
    cues = scorer.cues(poses)
    if np.isnan(cues).all():
        raise NoOverlapError("no orientation brings the two objects into a common field of view")
    scale = _ScoreScale(cues)
    chosen = _distinct_best(poses, np.array([scale(c) for c in cues]), refined_candidates)
    refined = [_refine(fixed, moving, pose, threads) for pose in chosen]
    refined_cues = scorer.cues(np.array(refined))
    scores = np.array([scale(c) for c in refined_cues])
    order = np.argsort(-scores)
    return SearchResult(
        matrix=refined[order[0]],
        score=float(scores[order[0]]),
        cues=dict(zip(CUES, map(float, refined_cues[order[0]]))),
        candidates_scored=len(poses),
        runner_up_score=float(scores[order[1]]) if len(order) > 1 else None,
        sweep_rank=int(order[0]),
    )


@dataclass
class Initialization:
    """Outcome of the initialisation stage: a fixed->moving 4x4 LPS matrix and how it was found."""

    matrix: np.ndarray
    method: str
    mirrored: bool = False
    details: dict = field(default_factory=dict)


def centre_initialization(fixed: sitk.Image, moving: sitk.Image) -> Initialization:
    """Translation that maps the fixed image's geometric centre onto the moving image's."""
    def centre(image):
        return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))

    matrix = np.eye(4)
    matrix[:3, 3] = centre(moving) - centre(fixed)
    return Initialization(matrix, "center")


def search_initialization(
    fixed: sitk.Image, moving: sitk.Image, fixed_modality: str, moving_modality: str,
    threads: int | None = None, check_mirror: bool = True,
) -> Initialization:
    """Global pose search; with `check_mirror`, also on the left-right mirrored moving image."""
    fixed_view = CoarseView.build(fixed, fixed_modality, SEARCH_SPACING_MM)
    moving_view = CoarseView.build(moving, moving_modality, SEARCH_SPACING_MM)
    proper = search_pose(fixed_view, moving_view, threads=threads)
    details = {"score": proper.score, "runner_up_score": proper.runner_up_score, "cues": proper.cues,
               "candidates": proper.candidates_scored, "sweep_rank": proper.sweep_rank}
    if check_mirror:
        mirrored_view = moving_view.mirrored()
        mirror = search_pose(fixed_view, mirrored_view, MIRROR_REFINED_CANDIDATES, threads)
        details["mirrored_score"] = mirror.score
        if mirror.score > proper.score + MIRROR_MARGIN:
            reflect = mirrored_view.physical_from_index @ moving_view.index_from_physical
            return Initialization(reflect @ mirror.matrix, "search", mirrored=True, details=details)
    return Initialization(proper.matrix, "search", details=details)
