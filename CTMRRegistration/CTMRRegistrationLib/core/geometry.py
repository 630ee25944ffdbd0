"""4x4 matrices, SimpleITK linear transforms and points: the library's geometric conventions.

Conventions:
- SimpleITK images and points are in LPS, as ITK and image files are; MRML nodes are in RAS.
- A SimpleITK transform here is a *resampling* transform: it maps fixed physical points to moving
  physical points (LPS), as elastix and ITK transform files do.
- A Slicer transform node that aligns the moving volume to the fixed one has a "to parent" matrix that
  maps moving RAS points to fixed RAS points: the inverse of the resampling transform, in RAS.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def flip_ras_lps(matrix: np.ndarray) -> np.ndarray:
    """Re-express a 4x4 point mapping between RAS and LPS (the same flip goes both ways)."""
    return RAS_FROM_LPS @ matrix @ RAS_FROM_LPS


def matrix_from_sitk(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous matrix (LPS) of any linear SimpleITK transform, composites included."""
    if transform.GetTransformEnum() == sitk.sitkComposite:
        composite = sitk.CompositeTransform(transform)
        total = np.eye(4)
        for index in range(composite.GetNumberOfTransforms()):
            total = total @ matrix_from_sitk(composite.GetNthTransform(index))
        return total
    if transform.GetTransformEnum() == sitk.sitkIdentity:
        return np.eye(4)
    if not transform.IsLinear():
        raise ValueError(f"{transform.GetName()} is not a linear transform")
    dimension = transform.GetDimension()
    origin = np.zeros(dimension)
    translation = np.array(transform.TransformPoint(origin.tolist()))
    columns = [
        np.array(transform.TransformPoint(np.eye(dimension)[axis].tolist())) - translation
        for axis in range(dimension)
    ]
    matrix = np.eye(4)
    matrix[:3, :3] = np.column_stack(columns)
    matrix[:3, 3] = translation
    return matrix


SNAP = 2.0**-24  # the grid `snapped` puts a start pose on: far below any effect (6e-8)


def snapped(matrix: np.ndarray) -> np.ndarray:
    """`matrix` on a grid of SNAP, so that elastix gets the same numbers from starts that differ in the last bits
    (a matrix and the inverse of its inverse, or a search's sums in another order): it amplifies those bits into
    tenths of a mm. A binary grid, because the decimal matrices of JSON files (9 decimals) would sit exactly
    halfway between the steps of a decimal one."""
    return np.round(matrix / SNAP) * SNAP


def sitk_from_matrix(matrix: np.ndarray, center=(0.0, 0.0, 0.0)) -> sitk.AffineTransform:
    """An AffineTransform (LPS) with the given 4x4 matrix, expressed about `center`."""
    matrix = np.asarray(matrix, dtype=float)
    linear = matrix[:3, :3]
    center = np.asarray(center, dtype=float)
    transform = sitk.AffineTransform(3)
    transform.SetCenter(center.tolist())
    transform.SetMatrix(linear.ravel().tolist())
    transform.SetTranslation((matrix[:3, 3] + linear @ center - center).tolist())
    return transform


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to an (N, 3) array of points.

    Computed as (3, 3) @ (3, N): the (N, 3) @ (3, 3) product is up to 20 times slower in a threaded BLAS."""
    points = np.asarray(points, dtype=float)
    return (matrix[:3, :3] @ points.T).T + matrix[:3, 3]


def map_points(transform, points) -> np.ndarray:
    """(N, 3) fixed points (LPS) mapped to moving points by `transform`."""
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    if isinstance(transform, np.ndarray):
        return transform_points(transform, points)
    if isinstance(transform, sitk.Transform):
        return np.array([transform.TransformPoint(p) for p in points.tolist()]).reshape(-1, 3)
    return transform.transform_points(points)


def distances(transform, fixed_points, moving_points) -> np.ndarray:
    """|transform(f_i) - m_i| per pair of points, in mm of the moving space."""
    return np.linalg.norm(map_points(transform, fixed_points) - np.asarray(moving_points, dtype=float), axis=1)


def p95(values) -> float:
    """95th percentile of `values` (distances in mm, seconds, ...), as a float."""
    return float(np.percentile(np.asarray(values, dtype=float), 95))


def p95_distance(a, b, points) -> float:
    """95th percentile of |a(p) - b(p)| over `points` (mm), for two transforms of any kind map_points takes."""
    return p95(np.linalg.norm(map_points(a, points) - map_points(b, points), axis=1))
