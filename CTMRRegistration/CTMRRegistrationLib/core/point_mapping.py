"""Map points by any of the library's fixed->moving transforms: a 4x4 matrix, a SimpleITK transform or a
landmark transform."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .geometry import transform_points


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
