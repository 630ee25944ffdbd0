"""MR bias-field correction: N4 estimated on a shrunken copy, applied to the images used for registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.imaging import resample_isotropic, resample_on_grid
from ..core.masks import mr_foreground_mask

ITERATIONS = 20  # per fitting level


@dataclass(frozen=True)
class FieldDetail:
    """How finely N4 models a bias field: the grid it is estimated on, and the finest B-spline span of the
    field along the image's shortest side (N4 doubles its mesh at each fitting level, from one span over the
    image) with at most `max_levels` levels."""

    spacing_mm: float
    min_span_mm: float
    max_levels: int


# The pose search and the rigid stage: a coil's field varies over centimetres, finer spans model anatomy as bias
POSE_DETAIL = FieldDetail(spacing_mm=8.0, min_span_mm=50.0, max_levels=3)
# The affine and deformable stages compare tissues voxel by voxel and take a finer field (4 mm: N4's time stays low)
TISSUE_DETAIL = FieldDetail(spacing_mm=4.0, min_span_mm=25.0, max_levels=4)


def fitting_levels(image: sitk.Image, detail: FieldDetail = POSE_DETAIL) -> int:
    """N4 fitting levels for `image`: as many as keep the finest span at least `detail.min_span_mm`."""
    extent = min(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return int(np.clip(1 + np.floor(np.log2(max(extent / detail.min_span_mm, 1.0))), 1, detail.max_levels))


def estimate_log_bias_field(mr: sitk.Image, mask: sitk.Image | None = None,
                            detail: FieldDetail = POSE_DETAIL) -> sitk.Image:
    """N4's smooth log bias field of `mr` on a `detail.spacing_mm` grid, fitted inside the MR foreground
    (or `mask`): a bias field varies over centimetres, so the coarse estimate loses nothing."""
    shrunk = resample_isotropic(mr, detail.spacing_mm)
    shrunk = sitk.Maximum(sitk.Cast(shrunk, sitk.sitkFloat32), 0.0) + 1.0
    if mask is None:
        mask = mr_foreground_mask(shrunk)
    else:
        mask = sitk.Resample(mask, shrunk, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([ITERATIONS] * fitting_levels(mr, detail))
    corrector.Execute(shrunk, mask)
    return corrector.GetLogBiasFieldAsImage(shrunk)


def remove_bias_field(image: sitk.Image, log_field: sitk.Image) -> sitk.Image:
    """`image` (any grid inside the field's box) divided by the field (float32, same grid)."""
    field = resample_on_grid(log_field, image, background=0.0)
    return sitk.Cast(image, sitk.sitkFloat32) / sitk.Exp(field)


def correct_bias_field(mr: sitk.Image, mask: sitk.Image | None = None) -> sitk.Image:
    """`mr` divided by N4's multiplicative bias field (float32, same grid as `mr`)."""
    return remove_bias_field(mr, estimate_log_bias_field(mr, mask))
