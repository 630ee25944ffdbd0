"""Map points by any of the library's fixed->moving transforms: a 4x4 matrix, a SimpleITK transform or a
landmark transform; distances between points, and their 95th percentile (the library's usual error figure)."""

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


def p95(values) -> float:
    """95th percentile of `values` (distances in mm, seconds, ...), as a float."""
    return float(np.percentile(np.asarray(values, dtype=float), 95))


def p95_distance(a, b, points) -> float:
    """95th percentile of |a(p) - b(p)| over `points` (mm), for two transforms of any kind map_points takes."""
    return p95(np.linalg.norm(map_points(a, points) - map_points(b, points), axis=1))
