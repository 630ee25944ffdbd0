"""The stage guard: an affine or deformable stage is kept only when it aligns the images' edges better than
the stage before it, and a deformable one only when it neither folds nor changes local volume implausibly.

Elastix optimises mutual information of intensities; the guard reads a cue it did not optimise: how well the
edges of the two images line up, as the mean squared dot product of their normalised gradient fields (NGF)
at the fixed image's stronger edges inside its object, with the moving image resampled through the
transform. CT and MR show the same boundaries whatever their contrast, so a stage that moves anatomy away
from its partner lowers this score even when it raises mutual information (e.g. a transform that inflates
the object until the samples near its border fall out of the moving image). Edges are compared only where
both transforms map inside the moving image, so that pulling a partial moving image over more of the fixed
object earns nothing. Tissue does not halve or double its volume between two scans: a deformable result whose
Jacobian determinant leaves JACOBIAN_RANGE inside the fixed object is discarded whatever its edges, and so is an
affine result that scales the previous one by more than MAX_AFFINE_SCALING along any axis.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.geometry import matrix_from_sitk
from ..core.imaging import physical_corners

EDGE_SIGMA_MM = 2.0
NGF_NOISE_FRACTION = 2.0  # NGF epsilon: twice the median gradient magnitude in the object, so that only
# clear edges count fully and a displaced edge scores low (orientation alone barely changes with a shift)
MIN_GAIN = 0.0  # a stage must raise the edge alignment by more than this fraction to be kept
JACOBIAN_RANGE = (0.5, 2.0)  # plausible local volume change of a deformable result inside the fixed object
MAX_AFFINE_SCALING = 0.1  # anatomy rarely changes size by 10 % between scans
VIEW_MARGIN = 2  # voxels: points mapped this close to the moving image's border are not compared
MIN_SHARED_FRACTION = 0.7  # share of each object the other image must show: a cut view leaves scaling unconstrained


def _normalised_gradients(image: sitk.Image, epsilon: float) -> np.ndarray:
    gradient = sitk.GetArrayFromImage(sitk.GradientRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32),
                                                                     EDGE_SIGMA_MM))
    return gradient / np.sqrt((gradient**2).sum(axis=-1) + epsilon**2)[..., None]


def _noise_level(image: sitk.Image, mask: sitk.Image | None) -> float:
    gradient = sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32),
                                                                              EDGE_SIGMA_MM))
    inside = gradient[sitk.GetArrayViewFromImage(mask) > 0] if mask is not None else gradient.ravel()
    return NGF_NOISE_FRACTION * float(np.median(inside if inside.size else gradient)) + 1e-9


class EdgeCue:
    """NGF edge alignment of a fixed image with a moving one under any fixed->moving transform, at fixed
    points chosen once (the stronger half of the fixed edges inside the fixed mask), so that the scores of
    different transforms compare."""

    def __init__(self, fixed: sitk.Image, moving: sitk.Image, fixed_mask: sitk.Image | None = None,
                 moving_mask: sitk.Image | None = None):
        self.fixed, self.moving = fixed, moving
        self.moving_epsilon = _noise_level(moving, moving_mask)
        fixed_edges = _normalised_gradients(fixed, _noise_level(fixed, fixed_mask))
        region = np.ones(fixed_edges.shape[:3], bool)
        if fixed_mask is not None:
            region = ndimage.binary_dilation(sitk.GetArrayViewFromImage(fixed_mask) > 0, iterations=1)
        strength = (fixed_edges**2).sum(axis=-1)
        self.points = region & (strength >= np.median(strength[region])) if region.any() else region & False
        self.fixed_edges = fixed_edges[self.points]
        self.background = float(sitk.GetArrayViewFromImage(moving).min())

    def _products(self, transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
        """Squared NGF dot product at each fixed edge point, and whether the transform maps the point well
        inside the moving image (VIEW_MARGIN voxels from its border)."""
        resampled = sitk.Resample(self.moving, self.fixed, transform, sitk.sitkLinear, self.background,
                                  sitk.sitkFloat32)
        moving_edges = _normalised_gradients(resampled, self.moving_epsilon)[self.points]
        support = sitk.Image(self.moving.GetSize(), sitk.sitkUInt8) + 1
        support.CopyInformation(self.moving)
        support = sitk.BinaryErode(sitk.ConstantPad(support, [1] * 3, [1] * 3, 0), [VIEW_MARGIN] * 3)
        seen = sitk.Resample(support, self.fixed, transform, sitk.sitkNearestNeighbor, 0)
        return ((self.fixed_edges * moving_edges).sum(axis=1) ** 2,
                sitk.GetArrayViewFromImage(seen)[self.points] > 0)

    def score(self, transform: sitk.Transform) -> float:
        """Mean squared NGF dot product over the fixed edge points the transform maps inside the moving image:
        1 for parallel edges everywhere."""
        return self.compare(transform, transform)[0]

    def compare(self, first: sitk.Transform, second: sitk.Transform) -> tuple[float, float]:
        """The scores of two transforms over the edge points that both map inside the moving image, so that
        a transform gains nothing by pulling more of a partial moving image over the fixed object."""
        (first_values, first_seen), (second_values, second_seen) = self._products(first), self._products(second)
        both = first_seen & second_seen
        if not both.any():
            return 0.0, 0.0
        return float(first_values[both].mean()), float(second_values[both].mean())


def relative_scaling(previous: sitk.Transform, candidate: sitk.Transform) -> tuple[float, float]:
    """Smallest and largest scale factor (singular value) of the linear `candidate` relative to `previous`."""
    relative = np.linalg.solve(matrix_from_sitk(previous), matrix_from_sitk(candidate))[:3, :3]
    values = np.linalg.svd(relative, compute_uv=False)
    return float(values.min()), float(values.max())


def jacobian_range(transform: sitk.Transform, fixed: sitk.Image, mask: sitk.Image | None) -> tuple[float, float]:
    """Smallest and largest Jacobian determinant of `transform` inside `mask` (default: all of `fixed`), on an
    axis-aligned grid over `fixed`'s box with its smallest spacing (the filter differentiates along grid axes)."""
    corners = physical_corners(fixed)
    spacing = min(fixed.GetSpacing())
    low, high = corners.min(axis=0) - spacing, corners.max(axis=0) + spacing
    size = [int(np.ceil(e / spacing)) + 1 for e in high - low]
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, low.tolist(), [spacing] * 3)
    determinant = sitk.DisplacementFieldJacobianDeterminant(field)
    inside = np.zeros(size[::-1], bool)
    inside[1:-1, 1:-1, 1:-1] = True  # the outer layer has one-sided derivatives
    if mask is not None:  # a copy: a view of the temporary resampled mask would read freed memory
        inside &= sitk.GetArrayFromImage(sitk.Resample(mask, determinant, sitk.Transform(),
                                                       sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)) > 0
    values = sitk.GetArrayViewFromImage(determinant)[inside]
    return (float(values.min()), float(values.max())) if values.size else (1.0, 1.0)


def skipped_for_partial_views(stage: str, shared: float, force: bool, metrics: dict, warnings: list) -> bool:
    """Whether `stage` is skipped because the images share only `shared` (0-1) of their objects; recorded in
    metrics['stage_guard'][stage] and `warnings` when it is. A forced stage always runs."""
    if force or shared >= MIN_SHARED_FRACTION:
        metrics.setdefault("stage_guard", {})[stage] = {"shared_object_fraction": round(shared, 4)}
        return False
    metrics.setdefault("stage_guard", {})[stage] = {"shared_object_fraction": round(shared, 4), "kept": False,
                                                    "forced": False, "run": False}
    warnings.append(f"the {stage} stage was not run: the images share only {shared:.0%} of their objects (partial "
                    f"fields of view, at least {MIN_SHARED_FRACTION:.0%} needed), and along a cut view its scaling "
                    "and deformation are unconstrained; force it with force_stages / --force-stages")
    return True


def guard_stage(stage: str, cue: EdgeCue, previous: sitk.Transform, candidate: sitk.Transform, force: bool,
                metrics: dict, warnings: list, fixed_mask: sitk.Image | None = None) -> sitk.Transform:
    """`candidate` (the stage's result) when it aligns edges better than `previous` (and, for a deformable
    result, keeps its Jacobian determinant inside JACOBIAN_RANGE over `fixed_mask`) or when `force`d, else
    `previous` with a warning. Records the values in metrics['stage_guard'][stage]."""
    before, after = cue.compare(previous, candidate)
    record = {"edge_alignment_before": round(before, 4), "edge_alignment_after": round(after, 4)}
    reasons = [] if after > before * (1.0 + MIN_GAIN) else [
        f"it aligned the images' edges worse than the stage before it (edge alignment {after:.3f} vs {before:.3f})"]
    if stage == "affine":
        low, high = relative_scaling(previous, candidate)
        record |= {"scaling_min": round(low, 3), "scaling_max": round(high, 3)}
        if not 1.0 - MAX_AFFINE_SCALING < low <= high < 1.0 + MAX_AFFINE_SCALING:
            reasons.append(f"it scales the previous result by {low:.2f}-{high:.2f}, outside the plausible "
                           f"{1 - MAX_AFFINE_SCALING:.2f}-{1 + MAX_AFFINE_SCALING:.2f}")
    if stage == "deformable":
        low, high = jacobian_range(candidate, cue.fixed, fixed_mask)
        record |= {"jacobian_min": round(low, 3), "jacobian_max": round(high, 3)}
        if not JACOBIAN_RANGE[0] < low <= high < JACOBIAN_RANGE[1]:
            reasons.append(f"its Jacobian determinant spans {low:.2f}-{high:.2f} inside the object, outside "
                           f"the plausible {JACOBIAN_RANGE[0]}-{JACOBIAN_RANGE[1]}")
    kept = force or not reasons
    records = metrics.setdefault("stage_guard", {})
    records[stage] = records.get(stage, {}) | record | {"kept": kept, "forced": force}
    if kept:
        return candidate
    warnings.append(f"the {stage} stage was discarded: {'; '.join(reasons)}; force it with force_stages / "
                    "--force-stages")
    return previous
