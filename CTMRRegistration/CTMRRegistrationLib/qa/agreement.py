"""How well the two images agree under a transform, without ground truth: how much of each object the other
image sees, overlap of their foreground masks, and alignment of their edges.

Every cue here is measured from both sides and combined, so that exchanging the fixed and the moving image
(and inverting the transform) gives the same value: once on the fixed grid with the moving image resampled
through the transform, once on the moving grid with the fixed image resampled through its inverse. A
non-linear transform has no inverse at hand: its cues are measured on the fixed side only.

Edges hold across CT and MR because both show the same boundaries whatever their contrast. The measure is
the squared dot product of normalised gradient fields (NGF) at one image's edge points inside its object,
with the other image resampled onto its grid. Each side contributes its own edge points (a CT's strong edges
are bone, an MR's soft tissue): it is reported
- against chance (`edge_alignment`): the same score with the other image's gradients of other points, so 1
  means "no better than two unrelated images";
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
EDGE_POINTS = 20000  # per side
REGION_VOXELS = 12  # 24 mm blocks for the local agreement
REGION_MIN_POINTS = 50
REGION_ALIGNMENT = 1.3  # a block "agrees" when its edge alignment is at least this many times chance
EDGE_CUES = ("edge_alignment", "edge_peak_contrast", "edge_best_shift_mm", "edge_agreeing_regions")


def _on_fixed_grid(images: QAImages, image: sitk.Image, transform: sitk.Transform, interpolator) -> sitk.Image:
    return resample_on_grid(image, images.fixed, transform, interpolator, 0.0, image.GetPixelID())


def _inside_moving_view(images: QAImages, transform: sitk.Transform) -> np.ndarray:
    """Fixed-grid voxels that the transform maps inside the moving image's grid."""
    ones = sitk.Image(images.moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(images.moving)
    return sitk.GetArrayFromImage(_on_fixed_grid(images, ones, transform, sitk.sitkNearestNeighbor)) > 0


def _both_sides(images: QAImages, transform: sitk.Transform, inverse: sitk.Transform | None, one_side) -> list[dict]:
    """`one_side(images, transform)` from the fixed side, and from the moving side when `inverse` is given."""
    sides = [one_side(images, transform)]
    if inverse is not None:
        sides.append(one_side(images.swapped(), inverse))
    return sides


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _overlap_one_side(images: QAImages, transform: sitk.Transform) -> dict:
    """On the fixed grid: the share of the fixed object the moving image sees, the share of the moving object
    (by volume) inside the fixed image, and the Dice of the fixed and the resampled moving foreground over the
    first share."""
    seen = _inside_moving_view(images, transform)
    whole = sitk.GetArrayViewFromImage(images.fixed_mask) > 0
    fixed = whole & seen
    moving = sitk.GetArrayFromImage(_on_fixed_grid(images, images.moving_mask, transform, sitk.sitkNearestNeighbor)) > 0
    moving_volume = np.count_nonzero(sitk.GetArrayViewFromImage(images.moving_mask)) * _voxel_volume(images.moving)
    total = fixed.sum() + moving.sum()
    return {"seen": float(fixed.sum() / max(whole.sum(), 1)),
            "inside": min(1.0, float(moving.sum() * _voxel_volume(images.fixed) / max(moving_volume, 1e-9))),
            "dice": float(2.0 * (fixed & moving).sum() / total) if total else 0.0}


def foreground_overlap(images: QAImages, transform: sitk.Transform, inverse: sitk.Transform | None = None) -> dict:
    """`object_coverage`: the share of the fixed object that the transform maps inside the moving image;
    `moving_object_coverage`: the share of the moving object inside the fixed image; `view_coverage`: the
    larger of the two (whether either image sees most of the other's object); `foreground_overlap`: Dice of
    the two foregrounds where both images see. Each from both sides when `inverse` (moving->fixed) is given."""
    sides = _both_sides(images, transform, inverse, _overlap_one_side)
    forward, backward = sides[0], sides[-1]
    if len(sides) == 2:
        coverage = (forward["seen"] + backward["inside"]) / 2.0
        moving_coverage = (forward["inside"] + backward["seen"]) / 2.0
    else:
        coverage, moving_coverage = forward["seen"], forward["inside"]
    return {"object_coverage": round(coverage, 4), "moving_object_coverage": round(moving_coverage, 4),
            "view_coverage": round(max(coverage, moving_coverage), 4),
            "foreground_overlap": round(_mean(side["dice"] for side in sides), 4)}


def _voxel_volume(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing()))


def _normalised_gradients(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Gradient / sqrt(|gradient|^2 + eps^2), (z, y, x, 3) in LPS components (physical, whatever the grid's
    direction), float32."""
    gradient = sitk.GradientRecursiveGaussian(image, EDGE_SIGMA_MM, useImageDirection=True)
    gradient = sitk.GetArrayFromImage(gradient).astype(np.float32)
    magnitude = np.linalg.norm(gradient, axis=-1)
    inside = magnitude[mask] if mask.any() else magnitude.ravel()
    epsilon = NGF_NOISE_FRACTION * float(np.median(inside)) + 1e-9
    return gradient / np.sqrt(magnitude**2 + np.float32(epsilon) ** 2)[..., None]


def _gradient_field(image: sitk.Image, mask: sitk.Image) -> sitk.Image:
    """The normalised gradients of `image` on its own grid, as a vector image."""
    field = sitk.GetImageFromArray(_normalised_gradients(image, sitk.GetArrayViewFromImage(mask) > 0), isVector=True)
    field.CopyInformation(image)
    return field


def _moving_edges_on_fixed(images: QAImages, moving_field: sitk.Image, transform: sitk.Transform,
                           linear: np.ndarray | None, seen: np.ndarray) -> np.ndarray:
    """The moving image's normalised gradients at the fixed grid's voxels, in fixed-space components. For a
    linear transform x -> Ax + t the moving field is resampled and turned by A^T (the gradient of the moving
    image resampled through it); otherwise the resampled moving image is differentiated on the fixed grid."""
    if linear is not None:
        field = sitk.Resample(moving_field, images.fixed, transform, sitk.sitkLinear, 0.0, moving_field.GetPixelID())
        return sitk.GetArrayViewFromImage(field) @ linear.astype(np.float32)
    moving_on_fixed = _on_fixed_grid(images, images.moving, transform, sitk.sitkLinear)
    moving_mask = sitk.GetArrayFromImage(_on_fixed_grid(images, images.moving_mask, transform,
                                                        sitk.sitkNearestNeighbor)) > 0
    return _normalised_gradients(moving_on_fixed, moving_mask & seen)


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


_SHIFTS = np.array([(a, b, c) for a in range(-SHIFT_STEPS, SHIFT_STEPS + 1)
                    for b in range(-SHIFT_STEPS, SHIFT_STEPS + 1) for c in range(-SHIFT_STEPS, SHIFT_STEPS + 1)])


def _edges_one_side(images: QAImages, transform: sitk.Transform, fields: tuple[sitk.Image, sitk.Image],
                    linear: np.ndarray | None) -> dict | None:
    """The edge cues at the fixed image's edge points, with the moving image's gradients brought onto the fixed
    grid (`fields`: both images' normalised gradients on their own grids; `linear`: the transform's 3x3 linear
    part, None when it is not linear); None when the moving image sees too little of the fixed object."""
    seen = _inside_moving_view(images, transform)
    fixed_mask = sitk.GetArrayViewFromImage(images.fixed_mask) > 0
    fixed_edges = sitk.GetArrayViewFromImage(fields[0])
    moving_edges = _moving_edges_on_fixed(images, fields[1], transform, linear, seen)
    points = _edge_points(fixed_edges, ndimage.binary_dilation(fixed_mask, iterations=2) & seen)
    if len(points) < REGION_MIN_POINTS:
        return None
    fixed_values = fixed_edges[tuple(points.T)]
    shape = moving_edges.shape[:3]
    components = [np.ascontiguousarray(moving_edges[..., axis]).ravel() for axis in range(3)]
    flat_points = np.ravel_multi_index(tuple(points.T), shape)
    offsets = _SHIFTS @ np.array([shape[1] * shape[2], shape[2], 1])
    scores = np.empty((len(_SHIFTS), len(points)), dtype=np.float32)
    for row, offset in enumerate(offsets):  # the points keep SHIFT_STEPS voxels from every border
        index = flat_points + offset
        scores[row] = sum(fixed_values[:, axis] * components[axis].take(index) for axis in range(3)) ** 2
    at_zero = scores[len(_SHIFTS) // 2].astype(float)
    shuffled = moving_edges[tuple(points[np.random.default_rng(SEED).permutation(len(points))].T)]
    chance = float((np.einsum("ij,ij->i", fixed_values, shuffled).astype(float) ** 2).mean())
    landscape = scores.mean(axis=1, dtype=float)
    _, block = np.unique(points // REGION_VOXELS, axis=0, return_inverse=True)
    block = block.ravel()
    counts = np.bincount(block)
    block_scores = np.bincount(block, weights=at_zero) / np.maximum(counts, 1)
    populated = counts >= REGION_MIN_POINTS
    spacing = images.fixed.GetSpacing()[0]
    return {
        "edge_alignment": float(at_zero.mean() / chance),
        "edge_peak_contrast": float((at_zero.mean() - np.median(landscape)) / at_zero.mean()),
        "edge_best_shift_mm": float(np.linalg.norm(_SHIFTS[landscape.argmax()]) * spacing),
        "edge_agreeing_regions": float(np.mean(block_scores[populated] >= REGION_ALIGNMENT * chance))
        if populated.any() else None,
    }


def edge_agreement(images: QAImages, transform: sitk.Transform, inverse: sitk.Transform | None = None,
                   linear: np.ndarray | None = None) -> dict:
    """NGF edge alignment of the images under `transform` (see the module docstring): the mean of the two
    sides' values when `inverse` (moving->fixed) is given; None values when neither image sees enough of the
    other's object. `linear`: the 4x4 matrix of a linear transform (None: not linear)."""
    fields = (_gradient_field(images.fixed, images.fixed_mask), _gradient_field(images.moving, images.moving_mask))
    sides = [_edges_one_side(images, transform, fields, None if linear is None else linear[:3, :3])]
    if inverse is not None and linear is not None:
        sides.append(_edges_one_side(images.swapped(), inverse, fields[::-1], np.linalg.inv(linear)[:3, :3]))
    sides = [side for side in sides if side is not None]
    values = {cue: _mean(side[cue] for side in sides) for cue in EDGE_CUES}
    return {cue: None if value is None else round(value, 2 if cue == "edge_best_shift_mm" else 4)
            for cue, value in values.items()}
