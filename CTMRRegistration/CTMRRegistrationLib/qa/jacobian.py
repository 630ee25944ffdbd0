"""Jacobian determinant of a transform inside a mask: how a deformable result stretches (> 1), compresses
(< 1) or folds (<= 0) the fixed space. SimpleITK samples the transform's displacement field and
DisplacementFieldJacobianDeterminant differentiates it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.imaging import physical_corners


def _axis_aligned_grid(reference: sitk.Image) -> sitk.Image:
    """`reference` itself when its axes are the LPS axes, else an axis-aligned grid over its box with the
    same spacing (the Jacobian filter differentiates along the grid's index axes)."""
    if np.allclose(reference.GetDirection(), np.eye(3).ravel()):
        return reference
    corners = physical_corners(reference)
    spacing = min(reference.GetSpacing())
    low, high = corners.min(axis=0), corners.max(axis=0)
    grid = sitk.Image([int(np.ceil(e / spacing)) + 1 for e in high - low], sitk.sitkUInt8)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin(low.tolist())
    return grid


def jacobian_statistics(transform: sitk.Transform, reference: sitk.Image, mask: sitk.Image | None = None) -> dict:
    """Min, max, mean of det(J) over `mask` (default: the whole reference grid), and the percentage of
    voxels where the transform folds (det <= 0)."""
    grid = _axis_aligned_grid(reference)
    padded_origin = np.asarray(grid.GetOrigin()) - np.asarray(grid.GetSpacing())  # one voxel more on every side,
    padded_size = [n + 2 for n in grid.GetSize()]  # so that derivatives at the grid's border are central
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, padded_size, padded_origin.tolist(),
                                              grid.GetSpacing(), grid.GetDirection())
    determinant = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))[1:-1, 1:-1, 1:-1]
    if mask is not None:
        on_grid = sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        determinant = determinant[sitk.GetArrayViewFromImage(on_grid) > 0]
    determinant = determinant.ravel()
    if determinant.size == 0:
        return {"jacobian_min": None, "jacobian_max": None, "jacobian_mean": None, "folding_percent": None}
    return {
        "jacobian_min": round(float(determinant.min()), 4),
        "jacobian_max": round(float(determinant.max()), 4),
        "jacobian_mean": round(float(determinant.mean()), 4),
        "folding_percent": round(float(100.0 * np.mean(determinant <= 0)), 3),
    }
