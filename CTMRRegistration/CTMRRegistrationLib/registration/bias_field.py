"""MR bias-field correction: N4 estimated on a shrunken copy, applied to the images used for registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.imaging import resample_isotropic, resample_on_grid
from ..core.masks import mr_foreground_mask

ITERATIONS = 20  # at the finest fitting level
# N4's cost grows with the voxels of its copy (0.8 s per iteration on the porcine MR's 2 mm copy, 1.9 million
# voxels): a copy of a larger region is estimated on a coarser grid, so that it has about this many voxels at most
MAX_ESTIMATION_VOXELS = 2_500_000


@dataclass(frozen=True)
class FieldDetail:
    """How finely N4 models a bias field: the grid it is estimated on, and the finest B-spline span of the
    field along the image's shortest side (N4 doubles its mesh at each fitting level, from one span over the
    image) with at most `max_levels` levels. Each level starts from the field of the level before, so the
    levels before the finest may take fewer iterations (`coarse_iterations`)."""

    spacing_mm: float
    min_span_mm: float
    max_levels: int
    coarse_iterations: int = ITERATIONS


# A coil's bias field varies over many centimetres. On a small field of view the finer levels model anatomy
# (fat, muscle) as bias and move the pose: on a thigh MR 88 mm across, three levels (22 mm spans) left rigid
# results 3-10 mm from those without correction, one level within 1 mm. On the porcine MR (235 mm) three levels
# (59 mm spans) give the best landmark error. The pose search and the rigid stage use this field.
POSE_DETAIL = FieldDetail(spacing_mm=8.0, min_span_mm=50.0, max_levels=3)
# The affine and deformable stages compare tissues voxel by voxel and take a finer field. Each chain below is an
# affine stage from one rigid result, then a deformable stage from it, with the intensity window; mean error at the
# porcine phantom's 84 air-pocket pairs over three elastix seeds, affine / deformable (central MR slab in brackets):
# 4 levels on a 4 mm copy 2.81 (2.04) / 1.94 (1.59), 5 levels there 2.79 (1.99) / 1.96 (1.59); 4 levels on a 2 mm
# copy 2.69 (1.83) / 1.96 (1.59); 5 levels on a 2 mm copy 2.68 (1.80) / 1.84 (1.52) in 80 s of N4, the same with
# 5 iterations at the coarse levels 2.69 (1.82) / 1.84 (1.50) in 32 s. A finer copy serves the affine stage, a
# fifth level (11-15 mm spans on the phantom) the deformable one. Through `ctmr-register` (one run each): 4 mm,
# 4 levels 2.05-2.10 (1.60); 2 mm, 5 levels 1.86 (1.48), N4 31 s; 2.5 mm, 5 levels 1.92 (1.51), N4 16 s.
# On the 88 mm thigh MRs this gives four levels (11 mm spans).
TISSUE_DETAIL = FieldDetail(spacing_mm=2.5, min_span_mm=10.0, max_levels=5, coarse_iterations=5)


def fitting_levels(image: sitk.Image, detail: FieldDetail = POSE_DETAIL) -> int:
    """N4 fitting levels for `image`: as many as keep the finest span at least `detail.min_span_mm`."""
    extent = min(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return int(np.clip(1 + np.floor(np.log2(max(extent / detail.min_span_mm, 1.0))), 1, detail.max_levels))


def estimate_log_bias_field(mr: sitk.Image, mask: sitk.Image | None = None,
                            detail: FieldDetail = POSE_DETAIL) -> sitk.Image:
    """N4's smooth log bias field of `mr` on a `detail.spacing_mm` grid (coarser where that would exceed
    MAX_ESTIMATION_VOXELS), fitted inside the MR foreground (or `mask`): a bias field varies over centimetres,
    so the coarse estimate loses nothing."""
    volume = np.prod([n * s for n, s in zip(mr.GetSize(), mr.GetSpacing())])
    shrunk = resample_isotropic(mr, max(detail.spacing_mm, (volume / MAX_ESTIMATION_VOXELS) ** (1 / 3)))
    shrunk = sitk.Maximum(sitk.Cast(shrunk, sitk.sitkFloat32), 0.0) + 1.0
    if mask is None:
        mask = mr_foreground_mask(shrunk)
    else:
        mask = sitk.Resample(mask, shrunk, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([detail.coarse_iterations] * (fitting_levels(mr, detail) - 1)
                                           + [ITERATIONS])
    corrector.Execute(shrunk, mask)
    return corrector.GetLogBiasFieldAsImage(shrunk)


def remove_bias_field(image: sitk.Image, log_field: sitk.Image) -> sitk.Image:
    """`image` (any grid inside the field's box) divided by the field (float32, same grid)."""
    field = resample_on_grid(log_field, image, background=0.0)
    return sitk.Cast(image, sitk.sitkFloat32) / sitk.Exp(field)


def correct_bias_field(mr: sitk.Image, mask: sitk.Image | None = None) -> sitk.Image:
    """`mr` divided by N4's multiplicative bias field (float32, same grid as `mr`)."""
    return remove_bias_field(mr, estimate_log_bias_field(mr, mask))
