"""How well the two images agree under a transform, without ground truth: how much of the fixed object the
moving image sees, overlap of their foreground masks, and alignment of their edges.

Edges hold across CT and MR because both show the same boundaries whatever their contrast. The measure is
the squared dot product of normalised gradient fields (NGF) at the fixed image's edge points inside the
object, with the moving image resampled onto the fixed grid through the transform (any transform,
deformable ones included). It is reported
- against chance (`edge_alignment`): the same score with the moving gradients of other points, so 1 means
  "no better than two unrelated images";
- against small shifts of up to 6 mm (`edge_peak_contrast`, `edge_best_shift_mm`): a correct transform sits
  on a peak of the alignment, a wrong one on a plateau;
- region by region (`edge_agreeing_regions`): the share of 24 mm blocks of the object whose edges align
  clearly better than chance, which exposes results that are right in one part and wrong in another.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.imaging import resample_on_grid
from .images import SEED, QAImages

EDGE_SIGMA_MM = 2.0
NGF_NOISE_FRACTION = 0.5  # NGF epsilon: this fraction of the median gradient magnitude inside the mask
SHIFT_STEPS = 3  # shifts of up to 3 QA voxels (6 mm) along each axis
EDGE_POINTS = 20000
REGION_VOXELS = 12  # 24 mm blocks for the local agreement
REGION_MIN_POINTS = 50
REGION_ALIGNMENT = 1.3  # a block "agrees" when its edge alignment is at least this many times chance


def _on_fixed_grid(images: QAImages, image: sitk.Image, transform: sitk.Transform, interpolator) -> sitk.Image:
    return resample_on_grid(image, images.fixed, transform, interpolator, 0.0, image.GetPixelID())


def _inside_moving_view(images: QAImages, transform: sitk.Transform) -> np.ndarray:
    """Fixed-grid voxels that the transform maps inside the moving image's grid."""
    ones = sitk.Image(images.moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(images.moving)
    return sitk.GetArrayFromImage(_on_fixed_grid(images, ones, transform, sitk.sitkNearestNeighbor)) > 0


def foreground_overlap(images: QAImages, transform: sitk.Transform) -> dict:
    """`object_coverage`: the share of the fixed object that the transform maps inside the moving image;
    `moving_object_coverage`: the share of the moving object (by volume) that falls inside the fixed image;
    `foreground_overlap`: Dice of the fixed and the resampled moving foreground over the first share."""
    seen = _inside_moving_view(images, transform)
    whole = sitk.GetArrayViewFromImage(images.fixed_mask) > 0
    fixed = whole & seen
    moving = sitk.GetArrayFromImage(_on_fixed_grid(images, images.moving_mask, transform, sitk.sitkNearestNeighbor)) > 0
    moving_volume = np.count_nonzero(sitk.GetArrayViewFromImage(images.moving_mask)) * _voxel_volume(images.moving)
    total = fixed.sum() + moving.sum()
    return {"object_coverage": round(float(fixed.sum() / max(whole.sum(), 1)), 4),
            "moving_object_coverage": round(min(1.0, float(moving.sum() * _voxel_volume(images.fixed)
                                                            / max(moving_volume, 1e-9))), 4),
            "foreground_overlap": round(float(2.0 * (fixed & moving).sum() / total) if total else 0.0, 4)}


def _voxel_volume(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing()))


def _normalised_gradients(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Gradient / sqrt(|gradient|^2 + eps^2), (z, y, x, 3) in LPS components."""
    gradient = sitk.GetArrayFromImage(sitk.GradientRecursiveGaussian(image, EDGE_SIGMA_MM))
    magnitude = np.linalg.norm(gradient, axis=-1)
    inside = magnitude[mask] if mask.any() else magnitude.ravel()
    epsilon = NGF_NOISE_FRACTION * float(np.median(inside)) + 1e-9
    return gradient / np.sqrt(magnitude**2 + epsilon**2)[..., None]


def _edge_points(fixed_edges: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Indices (z, y, x) of the stronger half of the fixed edges in `region`, away from the array border."""
    region = region.copy()
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = np.r_[0:SHIFT_STEPS, region.shape[axis] - SHIFT_STEPS:region.shape[axis]]
        region[tuple(index)] = False
    points = np.argwhere(region)
    strength = (fixed_edges[region] ** 2).sum(axis=1)
    points = points[strength >= np.median(strength)] if len(points) else points
    if len(points) > EDGE_POINTS:
        points = points[np.random.default_rng(SEED).choice(len(points), EDGE_POINTS, replace=False)]
    return points


def edge_agreement(images: QAImages, transform: sitk.Transform) -> dict:
    """NGF edge alignment of the images under `transform` (see the module docstring); None values when the
    moving image sees too little of the fixed object."""
    seen = _inside_moving_view(images, transform)
    fixed_mask = sitk.GetArrayViewFromImage(images.fixed_mask) > 0
    moving_on_fixed = _on_fixed_grid(images, images.moving, transform, sitk.sitkLinear)
    moving_mask = sitk.GetArrayFromImage(_on_fixed_grid(images, images.moving_mask, transform,
                                                        sitk.sitkNearestNeighbor)) > 0
    fixed_edges = _normalised_gradients(images.fixed, fixed_mask)
    moving_edges = _normalised_gradients(moving_on_fixed, moving_mask & seen)
    points = _edge_points(fixed_edges, ndimage.binary_dilation(fixed_mask, iterations=2) & seen)
    if len(points) < REGION_MIN_POINTS:
        return {"edge_alignment": None, "edge_peak_contrast": None, "edge_best_shift_mm": None,
                "edge_agreeing_regions": None}
    fixed_values = fixed_edges[tuple(points.T)]
    steps = range(-SHIFT_STEPS, SHIFT_STEPS + 1)
    shifts = np.array([(a, b, c) for a in steps for b in steps for c in steps])
    scores = np.empty((len(shifts), len(points)))
    for row, shift in enumerate(shifts):
        scores[row] = (fixed_values * moving_edges[tuple((points + shift).T)]).sum(axis=1) ** 2
    at_zero = scores[len(shifts) // 2]
    shuffled = moving_edges[tuple(points[np.random.default_rng(SEED).permutation(len(points))].T)]
    chance = float(((fixed_values * shuffled).sum(axis=1) ** 2).mean())
    landscape = scores.mean(axis=1)
    _, block = np.unique(points // REGION_VOXELS, axis=0, return_inverse=True)
    block = block.ravel()
    counts = np.bincount(block)
    block_scores = np.bincount(block, weights=at_zero) / np.maximum(counts, 1)
    populated = counts >= REGION_MIN_POINTS
    spacing = images.fixed.GetSpacing()[0]
    return {
        "edge_alignment": round(float(at_zero.mean() / chance), 4),
        "edge_peak_contrast": round(float((at_zero.mean() - np.median(landscape)) / at_zero.mean()), 4),
        "edge_best_shift_mm": round(float(np.linalg.norm(shifts[landscape.argmax()]) * spacing), 2),
        "edge_agreeing_regions": round(float(np.mean(block_scores[populated] >= REGION_ALIGNMENT * chance)), 4)
        if populated.any() else None,
    }
