"""Point-based registration from paired landmarks: rigid, similarity, affine and thin-plate spline.

Inputs are (N, 3) arrays of physical points (LPS), row i of the fixed list paired with row i of the moving
list. Every result maps fixed points to moving points, like every transform of this library (the ITK
resampling convention).

- rigid: least-squares rotation and translation (Kabsch/Umeyama with the reflection guard).
- similarity: the same rotation with Horn's symmetric scale sqrt(sum|m - m0|^2 / sum|f - f0|^2), so that
  swapping the lists gives exactly the inverse transform.
- affine: least squares over the 12 parameters.
- tps: the interpolating 3-D thin-plate spline with kernel U(r) = r (VTK's "R" basis) and an affine part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.geometry import sitk_from_matrix, transform_points
from ..core.imaging import index_to_physical_matrix

KINDS = ("rigid", "similarity", "affine", "tps")
NEEDS_VOLUME = ("affine", "tps")  # kinds that need 4 points not all in one plane
DEGENERATE_RATIO = 0.01  # a direction of the point cloud this much thinner than the widest one is missing
TPS_CHUNK = 200_000


def as_points(points, role: str) -> np.ndarray:
    """A float (N, 3) copy of `points`; InputError if it is not one or holds NaN."""
    array = np.array(points, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise InputError(f"the {role} landmarks must be N x 3 coordinates (got shape {array.shape})")
    if not np.isfinite(array).all():
        raise InputError(f"the {role} landmarks contain NaN or infinite coordinates")
    return array


def _spread(points: np.ndarray) -> np.ndarray:
    """Singular values of the centred point cloud: its extent along its three principal axes."""
    return np.linalg.svd(points - points.mean(axis=0), compute_uv=False)


def check_landmarks(fixed_points, moving_points, kind: str = "rigid") -> tuple[np.ndarray, np.ndarray]:
    """Validated copies of two landmark lists for `kind`; InputError with the reason otherwise."""
    if kind not in KINDS:
        raise InputError(f"unknown landmark transform '{kind}' (use {', '.join(KINDS)})")
    fixed, moving = as_points(fixed_points, "fixed"), as_points(moving_points, "moving")
    if len(fixed) != len(moving):
        raise InputError(f"the landmark lists differ in length: {len(fixed)} fixed, {len(moving)} moving points; "
                         "every fixed point needs its moving counterpart")
    minimum = 4 if kind in NEEDS_VOLUME else 3
    if len(fixed) < minimum:
        raise InputError(f"a {kind} transform needs at least {minimum} landmark pairs (got {len(fixed)})")
    for role, points in (("fixed", fixed), ("moving", moving)):
        extent = _spread(points)
        if extent[0] == 0 or extent[1] < DEGENERATE_RATIO * extent[0]:
            raise InputError(f"the {role} landmarks are collinear (all on one line): "
                             "place at least one point off that line")
        if kind in NEEDS_VOLUME and extent[2] < DEGENERATE_RATIO * extent[0]:
            raise InputError(f"the {role} landmarks all lie in one plane: a {kind} transform needs "
                             "at least one point off that plane")
    return fixed, moving


def _rotation(fixed_centred: np.ndarray, moving_centred: np.ndarray) -> np.ndarray:
    """The rotation R minimising sum |R f - m|^2 (no reflection)."""
    u, _, vt = np.linalg.svd(moving_centred.T @ fixed_centred)
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return u @ correction @ vt


def linear_fit(fixed: np.ndarray, moving: np.ndarray, kind: str) -> np.ndarray:
    """The 4x4 rigid, similarity or affine least-squares fit of two (N, 3) arrays, without any check."""
    matrix = np.eye(4)
    if kind == "affine":
        design = np.column_stack([fixed, np.ones(len(fixed))])
        solution, *_ = np.linalg.lstsq(design, moving, rcond=None)
        matrix[:3, :] = solution.T
        return matrix
    fixed_centre, moving_centre = fixed.mean(axis=0), moving.mean(axis=0)
    f, m = fixed - fixed_centre, moving - moving_centre
    linear = _rotation(f, m)
    if kind == "similarity":
        linear = linear * np.sqrt((m**2).sum() / (f**2).sum())
    matrix[:3, :3] = linear
    matrix[:3, 3] = moving_centre - linear @ fixed_centre
    return matrix


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)


@dataclass(frozen=True)
class LandmarkTransform:
    """A fixed->moving (LPS) transform fitted to landmarks: a 4x4 matrix, plus for `tps` the spline's
    centres (the fixed landmarks) and weights."""

    kind: str
    matrix: np.ndarray
    centres: np.ndarray | None = None
    weights: np.ndarray | None = None

    @property
    def is_linear(self) -> bool:
        return self.kind != "tps"

    def transform_points(self, points) -> np.ndarray:
        """Map (N, 3) fixed points to moving points."""
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        mapped = transform_points(self.matrix, points)
        if self.is_linear:
            return mapped
        step = max(1, TPS_CHUNK // len(self.centres))
        for start in range(0, len(points), step):
            chunk = slice(start, start + step)
            mapped[chunk] += _tps_kernel(points[chunk], self.centres) @ self.weights
        return mapped

    def to_sitk(self, reference: sitk.Image | None = None) -> sitk.Transform:
        """A SimpleITK resampling transform: an AffineTransform when linear, else a displacement field
        sampled on `reference`'s grid (exact at its voxel centres, linear in between)."""
        if self.is_linear:
            return sitk_from_matrix(self.matrix)
        if reference is None:
            raise InputError("a thin-plate-spline transform needs a reference image to sample its field on")
        size = reference.GetSize()
        index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
        physical = index_to_physical_matrix(reference)
        points = index @ physical[:3, :3].T + physical[:3, 3]
        displacement = (self.transform_points(points) - points).reshape(*size, 3).transpose(2, 1, 0, 3)
        field = sitk.GetImageFromArray(np.ascontiguousarray(displacement), isVector=True)
        field.CopyInformation(reference)
        return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def _fit_tps(fixed: np.ndarray, moving: np.ndarray) -> LandmarkTransform:
    count = len(fixed)
    system = np.zeros((count + 4, count + 4))
    system[:count, :count] = _tps_kernel(fixed, fixed)
    system[:count, count:] = np.column_stack([np.ones(count), fixed])
    system[count:, :count] = system[:count, count:].T
    right = np.zeros((count + 4, 3))
    right[:count] = moving
    solution = np.linalg.solve(system, right)
    matrix = np.eye(4)
    matrix[:3, 3] = solution[count]
    matrix[:3, :3] = solution[count + 1:].T
    return LandmarkTransform("tps", matrix, fixed.copy(), solution[:count])


def fit_landmark_transform(fixed_points, moving_points, kind: str = "rigid") -> LandmarkTransform:
    """The `kind` transform (rigid, similarity, affine or tps) mapping the fixed landmarks onto the moving
    ones; InputError for too few, collinear (or, for affine and tps, coplanar) points or unequal lists."""
    fixed, moving = check_landmarks(fixed_points, moving_points, kind)
    if kind == "tps":
        return _fit_tps(fixed, moving)
    return LandmarkTransform(kind, linear_fit(fixed, moving, kind))


def landmark_matrix(fixed_points, moving_points, kind: str = "rigid") -> np.ndarray:
    """The 4x4 fixed->moving LPS matrix of a rigid, similarity or affine landmark fit."""
    if kind == "tps":
        raise InputError("a thin-plate spline has no matrix; use fit_landmark_transform")
    return fit_landmark_transform(fixed_points, moving_points, kind).matrix
