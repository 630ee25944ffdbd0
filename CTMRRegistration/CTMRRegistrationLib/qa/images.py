"""The images quality assessment works on: both volumes on isotropic 2 mm grids, their foreground masks,
and points spread over each object (where distances between transforms are measured).

Every cue is computed so that exchanging the fixed and the moving image (and inverting the transform) gives
the same value: `QAImages.swapped` is the same images with the roles exchanged, and a cue computed from one
side is computed from the other side too and combined."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from ..core.imaging import check_volume, guess_modality, mask_points, own_copy, resample_isotropic, shrink_to_spacing
from ..core.masks import foreground_mask
from ..registration.bias_field import estimate_log_bias_field, remove_bias_field

QA_SPACING_MM = 2.0
OBJECT_POINTS = 3000
SEED = 20260


@dataclass
class QAImages:
    """Fixed and moving images (float, isotropic QA grid), their masks (uint8) and modalities, and points
    (LPS, N x 3) inside the fixed object (with their centroid) and inside the moving object."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_mask: sitk.Image
    moving_mask: sitk.Image
    fixed_modality: str
    moving_modality: str
    object_points: np.ndarray
    moving_points: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return self.object_points.mean(axis=0)

    def copy(self) -> QAImages:
        """The same images in buffers of their own (for another thread)."""
        return replace(self, **{name: own_copy(getattr(self, name))
                                for name in ("fixed", "moving", "fixed_mask", "moving_mask")})

    def swapped(self) -> QAImages:
        """The same images with the fixed and the moving roles exchanged."""
        return QAImages(self.moving, self.fixed, self.moving_mask, self.fixed_mask, self.moving_modality,
                        self.fixed_modality, self.moving_points, self.object_points)


def _mask_on(grid: sitk.Image, mask: sitk.Image | None, modality: str) -> sitk.Image:
    if mask is None:
        return foreground_mask(grid, modality)
    return sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)


def qa_grid(image: sitk.Image) -> sitk.Image:
    """`image` on the isotropic QA grid: whole voxel blocks averaged to about QA_SPACING_MM first (a fine image
    is not smoothed at full size: seconds on a 512x512x400 CT), then smoothed and resampled."""
    return resample_isotropic(shrink_to_spacing(image, QA_SPACING_MM), QA_SPACING_MM)


def object_points(mask: sitk.Image, count: int = OBJECT_POINTS) -> np.ndarray:
    """Up to `count` voxel centres (LPS) drawn evenly from a mask, the same ones every call."""
    return mask_points(mask, count, SEED)


def prepare_qa_images(
    fixed: sitk.Image, moving: sitk.Image, fixed_modality: str | None = None, moving_modality: str | None = None,
    fixed_mask: sitk.Image | None = None, moving_mask: sitk.Image | None = None, bias_correction: str = "auto",
    log_bias_fields: dict[str, sitk.Image] | None = None,
) -> QAImages:
    """Resample both images to the QA grid; masks are computed (or the given ones resampled) there. MR images
    are corrected for their bias field as the pipeline corrects them (`bias_correction`: auto = MR images only,
    on, off): the intensity optimum the restarts find moves by several mm with the correction. A role's field in
    `log_bias_fields` (the registration's, "fixed"/"moving") is divided out instead of estimating one."""
    check_volume(fixed, "fixed")
    check_volume(moving, "moving")
    fixed_modality = fixed_modality or guess_modality(fixed)
    moving_modality = moving_modality or guess_modality(moving)
    fixed_grid, moving_grid = qa_grid(fixed), qa_grid(moving)
    fixed_mask = _mask_on(fixed_grid, fixed_mask, fixed_modality)
    moving_mask = _mask_on(moving_grid, moving_mask, moving_modality)
    fields = log_bias_fields or {}
    if "fixed" in fields or _corrects(bias_correction, fixed_modality):
        fixed_grid = _corrected(fixed_grid, fixed_mask, fields.get("fixed"))
    if "moving" in fields or _corrects(bias_correction, moving_modality):
        moving_grid = _corrected(moving_grid, moving_mask, fields.get("moving"))
    return QAImages(fixed_grid, moving_grid, fixed_mask, moving_mask, fixed_modality, moving_modality,
                    _points_or_grid(fixed_mask, fixed_grid), _points_or_grid(moving_mask, moving_grid))


def _corrected(grid: sitk.Image, mask: sitk.Image, log_field: sitk.Image | None) -> sitk.Image:
    """`grid` divided by the bias field `log_field`, or by one N4 estimates inside `mask`."""
    return remove_bias_field(grid, log_field if log_field is not None else estimate_log_bias_field(grid, mask))


def _corrects(bias_correction: str, modality: str) -> bool:
    return modality == "MR" if bias_correction == "auto" else bias_correction == "on"


def _points_or_grid(mask: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Object points of `mask`, or points of the whole grid when the mask is empty."""
    points = object_points(mask)
    return points if len(points) else object_points(sitk.Cast(grid == grid, sitk.sitkUInt8))
