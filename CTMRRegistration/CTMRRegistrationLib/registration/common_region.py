"""Crop a pair of images to the region where both show the object, once a rough pose is known."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.geometry import transform_points
from ..core.imaging import index_to_physical_matrix

MARGIN_MM = 15.0


def _mask_box(mask: sitk.Image) -> np.ndarray:
    """Corners (LPS) of the index bounding box of a binary mask's foreground."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(mask)
    start, size = np.split(np.asarray(statistics.GetBoundingBox(1)), 2)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * (size - 1) + start
    return transform_points(index_to_physical_matrix(mask), corners)


def crop_to_points(image: sitk.Image, points: np.ndarray, margin_mm: float = MARGIN_MM) -> sitk.Image:
    """The sub-grid of `image` (same voxels, exact geometry) whose voxel centres lie in the index box of
    `points` grown by `margin_mm` (at least one voxel)."""
    index = transform_points(np.linalg.inv(index_to_physical_matrix(image)), points)
    margin = margin_mm / np.asarray(image.GetSpacing()) + 1e-6
    size = np.asarray(image.GetSize())
    low = np.clip(np.ceil(index.min(axis=0) - margin), 0, size - 1).astype(int)
    high = np.clip(np.floor(index.max(axis=0) + margin), low, size - 1).astype(int)
    return sitk.RegionOfInterest(image, (high - low + 1).tolist(), low.tolist())


def common_region(
    fixed_mask: sitk.Image, moving_mask: sitk.Image, fixed_to_moving: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (LPS) of the fixed-space and moving-space boxes both objects share under the pose.

    The shared box is the intersection of the fixed object's box with the moving object's box mapped
    into fixed space (axis-aligned in fixed index space); its corners map to moving space by the pose.
    """
    fixed_corners = _mask_box(fixed_mask)
    moving_in_fixed = transform_points(np.linalg.inv(fixed_to_moving), _mask_box(moving_mask))
    to_index = np.linalg.inv(index_to_physical_matrix(fixed_mask))
    fixed_index, moving_index = transform_points(to_index, fixed_corners), transform_points(to_index, moving_in_fixed)
    low = np.maximum(fixed_index.min(axis=0), moving_index.min(axis=0))
    high = np.minimum(fixed_index.max(axis=0), moving_index.max(axis=0))
    if np.any(high < low):
        low, high = fixed_index.min(axis=0), fixed_index.max(axis=0)
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    fixed_points = transform_points(index_to_physical_matrix(fixed_mask), corners)
    return fixed_points, transform_points(fixed_to_moving, fixed_points)


def crop_boxes(fixed_mask: sitk.Image, moving_mask: sitk.Image, fixed_to_moving: np.ndarray,
               region: np.ndarray | None = None,
               region_in_moving: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """The fixed and moving boxes to crop to (corner points, LPS) and the margin to add (mm).

    Without `region`: the common region of the two objects plus MARGIN_MM. With `region` (points a user
    chose, e.g. an ROI's corners, in fixed space or with `region_in_moving` in moving space): that region
    exactly, and its image under the pose on the other side."""
    if region is None:
        return *common_region(fixed_mask, moving_mask, fixed_to_moving), MARGIN_MM
    region = np.asarray(region, dtype=float)
    if region_in_moving:
        return transform_points(np.linalg.inv(fixed_to_moving), region), region, 0.0
    return region, transform_points(fixed_to_moving, region), 0.0
