"""The images quality assessment works on: both volumes on isotropic 2 mm grids, their foreground masks,
and points spread over the fixed object (where distances between transforms are measured)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.imaging import check_volume, guess_modality, mask_points, resample_isotropic
from ..core.masks import foreground_mask

QA_SPACING_MM = 2.0
OBJECT_POINTS = 3000
SEED = 20260


@dataclass
class QAImages:
    """Fixed and moving images (float, isotropic QA grid), their masks (uint8) and modalities, and points
    (LPS, N x 3) inside the fixed object with their centroid."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_mask: sitk.Image
    moving_mask: sitk.Image
    fixed_modality: str
    moving_modality: str
    object_points: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return self.object_points.mean(axis=0)


def _mask_on(grid: sitk.Image, mask: sitk.Image | None, modality: str) -> sitk.Image:
    if mask is None:
        return foreground_mask(grid, modality)
    return sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def object_points(mask: sitk.Image, count: int = OBJECT_POINTS) -> np.ndarray:
    """Up to `count` voxel centres (LPS) drawn evenly from a mask, the same ones every call."""
    return mask_points(mask, count, SEED)


def prepare_qa_images(
    fixed: sitk.Image, moving: sitk.Image, fixed_modality: str | None = None, moving_modality: str | None = None,
    fixed_mask: sitk.Image | None = None, moving_mask: sitk.Image | None = None,
) -> QAImages:
    """Resample both images to the QA grid; masks are computed (or the given ones resampled) there."""
    check_volume(fixed, "fixed")
    check_volume(moving, "moving")
    fixed_modality = fixed_modality or guess_modality(fixed)
    moving_modality = moving_modality or guess_modality(moving)
    fixed_grid, moving_grid = resample_isotropic(fixed, QA_SPACING_MM), resample_isotropic(moving, QA_SPACING_MM)
    fixed_mask = _mask_on(fixed_grid, fixed_mask, fixed_modality)
    moving_mask = _mask_on(moving_grid, moving_mask, moving_modality)
    points = object_points(fixed_mask)
    if len(points) == 0:
        points = object_points(sitk.Cast(fixed_grid == fixed_grid, sitk.sitkUInt8))
    return QAImages(fixed_grid, moving_grid, fixed_mask, moving_mask, fixed_modality, moving_modality, points)
