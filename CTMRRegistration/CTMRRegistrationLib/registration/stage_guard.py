"""The stage guard: an affine or deformable stage is kept only when it aligns the images' edges better than
the stage before it.

Elastix optimises mutual information of intensities; the guard reads a cue it did not optimise: how well the
edges of the two images line up, as the mean squared dot product of their normalised gradient fields (NGF)
at the fixed image's stronger edges inside its object, with the moving image resampled through the
transform. CT and MR show the same boundaries whatever their contrast, so a stage that moves anatomy away
from its partner lowers this score even when it raises mutual information (e.g. a transform that inflates
the object until the samples near its border fall out of the moving image).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

EDGE_SIGMA_MM = 2.0
NGF_NOISE_FRACTION = 2.0  # NGF epsilon: twice the median gradient magnitude in the object, so that only
# clear edges count fully and a displaced edge scores low (orientation alone barely changes with a shift)
MIN_GAIN = 0.0  # a stage must raise the edge alignment by more than this fraction to be kept
GUARDED_STAGES = ("affine", "deformable")


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
        self.points = region & (strength >= np.median(strength[region])) if region.any() else region
        self.fixed_edges = fixed_edges[self.points]
        self.background = float(sitk.GetArrayViewFromImage(moving).min())

    def score(self, transform: sitk.Transform) -> float:
        """Mean squared NGF dot product over the fixed edge points: 1 for parallel edges everywhere; points
        that the transform maps outside the moving image count as 0."""
        if not self.points.any():
            return 0.0
        resampled = sitk.Resample(self.moving, self.fixed, transform, sitk.sitkLinear, self.background,
                                  sitk.sitkFloat32)
        moving_edges = _normalised_gradients(resampled, self.moving_epsilon)[self.points]
        return float(((self.fixed_edges * moving_edges).sum(axis=1) ** 2).mean())


def guard_stage(stage: str, cue: EdgeCue, previous: sitk.Transform, candidate: sitk.Transform, force: bool,
                metrics: dict, warnings: list) -> sitk.Transform:
    """`candidate` (the stage's result) when it aligns edges better than `previous` or when `force`d, else
    `previous` with a warning. Records both scores in metrics['stage_guard'][stage]."""
    before, after = cue.score(previous), cue.score(candidate)
    kept = force or after > before * (1.0 + MIN_GAIN)
    metrics.setdefault("stage_guard", {})[stage] = {
        "edge_alignment_before": round(before, 4), "edge_alignment_after": round(after, 4), "kept": kept,
        "forced": force,
    }
    if kept:
        return candidate
    warnings.append(f"the {stage} stage was discarded: it aligned the images' edges worse than the stage before "
                    f"it (edge alignment {after:.3f} vs {before:.3f}); force it with force_stages / --force-stages")
    return previous
