"""Global initialisation: find the pose of the moving image without assuming one.

All 24 axis-aligned rotations, each combined with tilts of +-30 degrees about each axis, are tried
with the translation that maps the fixed mask's centroid onto the moving mask's. Each pose is scored
at coarse resolution by three cues that together discriminate near-symmetric objects: mask overlap
(Dice), normalised mutual information over the union of the masks, and normalised-gradient-field edge
alignment. The best few poses are refined locally (Mattes MI) and re-scored; the best one wins.
The same search on a mirrored moving image tells whether the moving header looks left-right flipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .imaging import index_to_physical_matrix, resample_isotropic
from .masks import foreground_mask

COARSE_SPACING_MM = 4.0
SAMPLE_POINTS = 8000
TILT_DEGREES = 30.0
REFINED_CANDIDATES = 3
DISTINCT_DEGREES = 30.0
SEED = 20261121


@dataclass
class CoarseView:
    """One image at coarse resolution, with what scoring needs precomputed."""

    image: sitk.Image
    mask: sitk.Image
    array: np.ndarray
    mask_array: np.ndarray
    gradient: np.ndarray  # (z, y, x, 3): physical LPS gradient
    index_from_physical: np.ndarray
    centroid: np.ndarray

    @classmethod
    def build(cls, image: sitk.Image, modality: str) -> "CoarseView":
        coarse = resample_isotropic(image, COARSE_SPACING_MM)
        mask = foreground_mask(coarse, modality)
        array = sitk.GetArrayFromImage(coarse)
        mask_array = sitk.GetArrayFromImage(mask).astype(np.float32)
        physical_from_index = index_to_physical_matrix(coarse)
        index_gradient = np.stack(np.gradient(array), axis=-1)[..., ::-1]
        gradient = index_gradient @ np.linalg.inv(physical_from_index[:3, :3])
        voxels = np.argwhere(mask_array > 0)[:, ::-1]
        if len(voxels) == 0:
            voxels = np.argwhere(np.ones_like(mask_array))[:, ::-1]
        centroid = physical_from_index[:3, :3] @ voxels.mean(axis=0) + physical_from_index[:3, 3]
        return cls(coarse, mask, array, mask_array, gradient, np.linalg.inv(physical_from_index), centroid)

    def mirrored(self) -> "CoarseView":
        """The same view with its header reflected left-right through the mask centroid."""
        reflect = np.diag([-1.0, 1.0, 1.0])
        physical_from_index = np.linalg.inv(self.index_from_physical)
        mirrored = np.eye(4)
        mirrored[:3, :3] = reflect @ physical_from_index[:3, :3]
        mirrored[:3, 3] = reflect @ (physical_from_index[:3, 3] - self.centroid) + self.centroid
        image = sitk.Image(self.image)
        spacing = np.asarray(image.GetSpacing())
        image.SetDirection((mirrored[:3, :3] / spacing).ravel().tolist())
        image.SetOrigin(mirrored[:3, 3].tolist())
        mask = sitk.Image(self.mask)
        mask.CopyInformation(image)
        return CoarseView(
            image, mask, self.array, self.mask_array, self.gradient @ reflect,
            np.linalg.inv(mirrored), self.centroid,
        )


def _nmi(a: np.ndarray, b: np.ndarray, bins: int = 24) -> float:
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / max(joint.sum(), 1)

    def entropy(q):
        q = q[q > 0]
        return -(q * np.log(q)).sum()

    joint_entropy = entropy(p)
    return (entropy(p.sum(1)) + entropy(p.sum(0))) / joint_entropy if joint_entropy > 0 else 1.0


def _normalised(gradient: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(gradient, axis=1, keepdims=True)
    epsilon = np.median(norms) + 1e-6
    return gradient / np.sqrt(norms**2 + epsilon**2)


class PoseScorer:
    """Scores a fixed->moving pose by mask Dice, NMI and gradient alignment on fixed sample points."""

    CUES = ("dice", "nmi", "edges")

    def __init__(self, fixed: CoarseView, moving: CoarseView):
        region = ndimage.binary_dilation(fixed.mask_array > 0, iterations=2)
        voxels = np.argwhere(region)
        rng = np.random.default_rng(SEED)
        if len(voxels) > SAMPLE_POINTS:
            voxels = voxels[rng.choice(len(voxels), SAMPLE_POINTS, replace=False)]
        z, y, x = voxels.T
        physical_from_index = np.linalg.inv(fixed.index_from_physical)
        self.points = voxels[:, ::-1] @ physical_from_index[:3, :3].T + physical_from_index[:3, 3]
        self.fixed_values = fixed.array[z, y, x]
        self.fixed_inside = fixed.mask_array[z, y, x] > 0
        self.fixed_edges = _normalised(fixed.gradient[z, y, x])
        self.moving = moving

    def cues(self, matrix: np.ndarray) -> np.ndarray:
        """(dice, nmi, edges) of the pose; higher is better for each."""
        moving = self.moving
        mapped = self.points @ matrix[:3, :3].T + matrix[:3, 3]
        index = (mapped @ moving.index_from_physical[:3, :3].T + moving.index_from_physical[:3, 3])[:, ::-1].T
        inside = ndimage.map_coordinates(moving.mask_array, index, order=1, cval=0.0) > 0.5
        overlap = (inside & self.fixed_inside).sum()
        dice = 2.0 * overlap / max(inside.sum() + self.fixed_inside.sum(), 1)
        union = inside | self.fixed_inside
        values = ndimage.map_coordinates(moving.array, index, order=1, mode="nearest")
        nmi = _nmi(self.fixed_values[union], values[union]) if union.sum() > 100 else 1.0
        gradient = np.stack(
            [ndimage.map_coordinates(moving.gradient[..., c], index, order=1, cval=0.0) for c in range(3)], axis=1
        )
        edges = ((self.fixed_edges * _normalised(gradient @ matrix[:3, :3])).sum(axis=1) ** 2).mean()
        return np.array([dice, nmi, edges])


def candidate_rotations() -> np.ndarray:
    """The 24 axis-aligned rotations, each also tilted by +-TILT_DEGREES about x, y and z."""
    cube = Rotation.create_group("O")
    tilts = [Rotation.identity()] + [
        Rotation.from_rotvec(np.radians(sign * TILT_DEGREES) * axis)
        for axis in np.eye(3) for sign in (-1, 1)
    ]
    return np.concatenate([(tilt * cube).as_matrix() for tilt in tilts])


def _pose(rotation: np.ndarray, fixed_centroid: np.ndarray, moving_centroid: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = moving_centroid - rotation @ fixed_centroid
    return matrix


def _refine(fixed: CoarseView, moving: CoarseView, matrix: np.ndarray, threads: int | None) -> np.ndarray:
    """Local rigid refinement of a pose at coarse resolution (Mattes MI inside the fixed mask)."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed.centroid.tolist())
    transform.SetMatrix(matrix[:3, :3].ravel().tolist(), 1e-4)
    transform.SetTranslation((matrix[:3, 3] + matrix[:3, :3] @ fixed.centroid - fixed.centroid).tolist())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.5, SEED)
    method.SetMetricFixedMask(sitk.BinaryDilate(fixed.mask, [2, 2, 2]))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 0.05, 120, relaxationFactor=0.6)
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


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    cosine = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


@dataclass
class SearchResult:
    """The best fixed->moving pose (4x4 LPS) of one search, its combined score and cue values."""

    matrix: np.ndarray
    score: float
    cues: dict
    candidates_scored: int = 0
    runner_up_score: float | None = None


def search_pose(fixed: CoarseView, moving: CoarseView, threads: int | None = None) -> SearchResult:
    """Score every candidate rotation, refine the best distinct few, return the best refined pose."""
    scorer = PoseScorer(fixed, moving)
    poses = [_pose(r, fixed.centroid, moving.centroid) for r in candidate_rotations()]
    cues = np.array([scorer.cues(p) for p in poses])
    mean, std = cues.mean(axis=0), cues.std(axis=0) + 1e-9

    def combined(values: np.ndarray) -> float:
        return float(((values - mean) / std).sum())

    chosen: list[np.ndarray] = []
    for index in np.argsort([-combined(c) for c in cues]):
        if all(_angle_between(poses[index], other) > DISTINCT_DEGREES for other in chosen):
            chosen.append(poses[index])
        if len(chosen) == REFINED_CANDIDATES:
            break
    refined = [_refine(fixed, moving, pose, threads) for pose in chosen]
    refined_cues = [scorer.cues(pose) for pose in refined]
    scores = [combined(c) for c in refined_cues]
    order = np.argsort(scores)[::-1]
    best = order[0]
    return SearchResult(
        matrix=refined[best],
        score=scores[best],
        cues=dict(zip(PoseScorer.CUES, map(float, refined_cues[best]))),
        candidates_scored=len(poses),
        runner_up_score=float(scores[order[1]]) if len(order) > 1 else None,
    )


@dataclass
class Initialization:
    """Outcome of the initialisation stage."""

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


MIRROR_MARGIN = 1.5


def search_initialization(
    fixed: sitk.Image, moving: sitk.Image, fixed_modality: str, moving_modality: str,
    threads: int | None = None, check_mirror: bool = True,
) -> Initialization:
    """Global pose search; with `check_mirror`, also on the left-right mirrored moving image."""
    fixed_view = CoarseView.build(fixed, fixed_modality)
    moving_view = CoarseView.build(moving, moving_modality)
    proper = search_pose(fixed_view, moving_view, threads)
    details = {"score": proper.score, "cues": proper.cues, "candidates": proper.candidates_scored}
    if check_mirror:
        mirror = search_pose(fixed_view, moving_view.mirrored(), threads)
        details["mirrored_score"] = mirror.score
        if mirror.score > proper.score + MIRROR_MARGIN:
            reflect = np.eye(4)
            reflect[0, 0] = -1.0
            reflect[:3, 3] = moving_view.centroid - reflect[:3, :3] @ moving_view.centroid
            return Initialization(reflect @ mirror.matrix, "search", mirrored=True, details=details)
    return Initialization(proper.matrix, "search", details=details)
